//! `keyrot check` and store loading: every bad file reported in one run.

use crate::common::*;

#[test]
fn check_on_a_fresh_store_lists_the_policies() {
    let s = Store::new();
    let out = s.keyrot(&["check"]).ok().stdout;
    assert!(out.starts_with("ok: 0 keys, 0 owners, 7 policies"), "{out}");
    for p in [
        "compromised",
        "departed-owner",
        "idle",
        "key-cap",
        "least-privilege",
        "max-age",
        "unexpected-source",
    ] {
        assert!(out.contains(p), "{p} missing from {out}");
    }
    let json = s.keyrot(&["check", "--json"]).ok().json();
    assert_eq!(json["ok"], true);
    assert!(json["policies"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["description"].is_string()));
}

#[test]
fn every_bad_file_is_reported_in_one_run() {
    let s = Store::new();
    s.write("keys/good.toml", &key("[\"read\"]", "2026-11-01T00:00:00Z", ""));
    s.write(
        "keys/unknown-field.toml",
        &key("[\"read\"]", "2026-11-01T00:00:00Z", "colour = \"red\"\n"),
    );
    s.write("keys/Bad_ID.toml", &key("[\"read\"]", "2026-11-01T00:00:00Z", ""));
    s.write(
        "keys/cidr.toml",
        &key("[\"read\"]", "2026-11-01T00:00:00Z", "").replace("203.0.113.7/32", "203.0.113.7/40"),
    );
    s.write("keys/broken.toml", "service = \"x\"\nowner = \n");
    s.write("keys/notes.txt", "hello");
    s.write("policies/README.md", "notes beside the policies are fine");
    s.write("policies/deny.rhai.off", "fn evaluate(key) { revoke(\"x\") }");
    s.write("policies/syntax.rhai", "fn evaluate(key) {\n  let = 1;\n}\n");
    s.write(
        "keyrot.toml",
        "[rotation]\ngrace_period = \"1 day\"\n[policy.nope]\nx = 1\n",
    );
    let run = s.keyrot(&["check"]).fails(1);
    let err = run.stderr;
    for expected in [
        "keyrot.toml:2:16: rotation.grace_period",
        "keyrot.toml:3:1: [policy.nope] configures a policy that does not exist",
        "keys/Bad_ID.toml: `Bad_ID` is not a valid key id",
        "keys/broken.toml:2:",
        "keys/cidr.toml:4:",
        "keys/notes.txt: is not a key file",
        "policies/deny.rhai.off: looks like a policy but is not named *.rhai",
        "keys/unknown-field.toml:8:1:",
        "policies/syntax.rhai:2:",
    ] {
        assert!(err.contains(expected), "missing `{expected}` in:\n{err}");
    }
    assert!(err.contains("colour"), "{err}");
    assert!(err.contains("error: 9 problems"), "{err}");
    assert!(!err.contains("README"), "{err}");
    assert!(!err.contains("keys/good.toml"), "{err}");

    // plan refuses the same store with the same report, and prints no plan.
    let plan = s.keyrot(&["plan", "--now", NOW]).fails(1);
    assert!(plan.stdout.is_empty());
    assert!(plan.stderr.contains("error: 9 problems"));

    let json = s.keyrot(&["check", "--json"]).fails(1).json();
    assert_eq!(json["ok"], false);
    assert_eq!(json["problems"].as_array().unwrap().len(), 9);
}

#[test]
fn symlinks_in_the_keys_folder_are_refused() {
    let s = Store::new();
    let outside = s.root.parent().unwrap().join("outside.toml");
    std::fs::write(&outside, key("[\"read\"]", "2026-11-01T00:00:00Z", "")).unwrap();
    std::os::unix::fs::symlink(&outside, s.path("keys/link.toml")).unwrap();
    let run = s.keyrot(&["check"]).fails(1);
    run.stderr_has("keys/link.toml: is a symbolic link");
}

#[test]
fn binary_and_oversized_files_are_errors_not_panics() {
    let s = Store::new();
    s.write("keys/bin.toml", "");
    std::fs::write(s.path("keys/bin.toml"), [0xff, 0xfe, 0x00, 0x41]).unwrap();
    s.write("keys/huge.toml", &"# x\n".repeat(300_000));
    let run = s.keyrot(&["check"]).fails(1);
    run.stderr_has("keys/bin.toml:1:1: file is not valid UTF-8");
    run.stderr_has("keys/huge.toml: is 1200000 bytes, over the");
    assert!(!run.stderr.contains("panicked"));
}

#[test]
fn owners_toml_may_be_large_for_a_large_organisation_but_not_unbounded() {
    // 40,000 owners: 1.9 MB, past a key file's limit, as a million-key store has more.
    let s = Store::new();
    let owners: String = (0..40_000)
        .map(|i| format!("[owner{i:05}]\nstatus = \"active\"\nteam = \"team{}\"\n", i % 100))
        .collect();
    assert!(owners.len() > 1_800_000, "{}", owners.len());
    s.write("owners.toml", &owners);
    s.write(
        "keys/a.toml",
        &key("[\"read\"]", "2026-11-01T00:00:00Z", "").replace("alice", "owner00042"),
    );
    s.keyrot(&["check"]).ok();
    s.commit("many owners");
    s.apply().ok();
    // Past 64 MiB it is refused unread (a sparse file: its length alone).
    std::fs::File::create(s.path("owners.toml"))
        .unwrap()
        .set_len(65 * 1024 * 1024)
        .unwrap();
    s.keyrot(&["check"])
        .fails(1)
        .stderr_has("owners.toml: is 68157440 bytes, over the 67108864-byte limit");
}

#[test]
fn not_a_store_says_how_to_make_one() {
    let s = Store::bare();
    std::fs::create_dir_all(&s.root).unwrap();
    let run = s.keyrot(&["plan"]).fails(1);
    run.stderr_has("is not a keyrot store");
    run.stderr_has("keyrot init");
}

#[test]
fn check_finds_what_loads_but_is_still_wrong() {
    let s = Store::new();
    // A misspelt setting (an error: it has no effect), a setting no longer given (a
    // warning: the policy's default applies), a test file for no policy, a policy
    // without tests.
    let settings = s
        .read("keyrot.toml")
        .replace("max_idle_days = 60", "max_idel_days = 30");
    s.write("keyrot.toml", &settings);
    s.write("policies/ghost_test.rhai", "fn test_nothing() {}\n");
    s.remove("policies/key-cap_test.rhai");
    let run = s.keyrot(&["check"]).fails(1);
    let err = &run.stderr;
    for expected in [
        "keyrot.toml:30:1: [policy.idle] sets `max_idel_days`, which policy idle never reads",
        "policies/ghost_test.rhai: tests policy ghost, which does not exist (no policies/ghost.rhai)",
        "policies/idle.rhai:11:31: warning: reads config().max_idle_days, which keyrot.toml does not set",
        "policies/key-cap.rhai: warning: policy key-cap has no tests",
        "error: 2 problems in the store",
    ] {
        assert!(err.contains(expected), "missing `{expected}` in:\n{err}");
    }
    let json = s.keyrot(&["check", "--json"]).fails(1).json();
    let severities: Vec<&str> = json["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["severity"].as_str().unwrap())
        .collect();
    assert_eq!(severities, ["error", "error", "warning", "warning"]);

    // Warnings alone do not fail the check.
    s.write("keyrot.toml", &settings.replace("max_idel_days = 30\n", ""));
    s.remove("policies/ghost_test.rhai");
    let run = s.keyrot(&["check"]).ok();
    assert!(run.stdout.starts_with("ok: "), "{}", run.stdout);
    run.stderr_has("warning: policy key-cap has no tests");
}

#[test]
fn a_policy_reading_config_dynamically_is_not_accused_of_unread_settings() {
    let s = Store::new();
    s.write(
        "policies/tiers.rhai",
        "fn evaluate(key) {\n    let name = key.environment;\n    if key.age > days(config()[name] ?? 90) { rotate(\"old\") }\n}\n",
    );
    s.write(
        "policies/tiers_test.rhai",
        "fn test_x() { assert_none(evaluate(key())); }\n",
    );
    s.write(
        "keyrot.toml",
        &(s.read("keyrot.toml") + "\n[policy.tiers]\nproduction = 30\nstaging = 120\n"),
    );
    let run = s.keyrot(&["check"]).ok();
    assert!(!run.stderr.contains("tiers"), "{}", run.stderr);
}

#[test]
fn declared_service_permissions_catch_misspelt_ones() {
    let s = Store::new();
    s.write(
        "keyrot.toml",
        &(s.read("keyrot.toml") + "\n[service.binance]\npermissions = [\"read\", \"trade\", \"withdraw\"]\n"),
    );
    s.write(
        "keys/ok.toml",
        &key("[\"read\", \"withdraw\"]", "2026-11-01T00:00:00Z", ""),
    );
    s.write(
        "keys/typo.toml",
        &key("[\"read\", \"withdarw\"]", "2026-11-01T00:00:00Z", ""),
    );
    let run = s.keyrot(&["check"]).fails(1);
    run.stderr_has("keys/typo.toml:3:24: permission `withdarw` is not one of service binance's permissions (read, trade, withdraw)");
    assert!(!run.stderr.contains("keys/ok.toml"), "{}", run.stderr);
    // Keys of services without a declaration may hold anything.
    s.write(
        "keys/typo.toml",
        &key("[\"withdarw\"]", "2026-11-01T00:00:00Z", "").replace("binance", "kraken"),
    );
    s.keyrot(&["check"]).ok();
}

#[test]
fn exceptions_that_match_nothing_are_warnings() {
    let s = Store::with_keys(&[("old", &key("[\"read\"]", "2026-07-01T00:00:00Z", ""))]);
    let entry = |key: &str, policy: &str, expires: &str| {
        format!("[[exception]]\nkey = \"{key}\"\npolicy = \"{policy}\"\nreason = \"r\"\napproved_by = \"carol\"\nexpires = {expires}\n")
    };
    s.write(
        "exceptions.toml",
        &[
            entry("old", "max-age", "2026-12-31"),
            entry("old", "idle", "2026-12-31"),
            entry("gone", "max-age", "2026-12-31"),
            entry("old", "compromised", "2026-11-01"),
        ]
        .join("\n"),
    );
    let run = s.keyrot(&["check", "--now", NOW]).ok();
    let err = &run.stderr;
    for expected in [
        "exceptions.toml:8:1: warning: exception for key old and policy idle matches nothing: the policy makes no decision on the key at 2026-11-22T20:00:00Z",
        "exceptions.toml:15:1: warning: exception names key gone, which does not exist",
        "exceptions.toml:22:1: warning: exception for key old and policy compromised expired 2026-11-01; remove it",
    ] {
        assert!(err.contains(expected), "missing `{expected}` in:\n{err}");
    }
    assert!(!err.contains("exceptions.toml:1:1"), "{err}");
    s.write("exceptions.toml", &entry("old", "ip-allowlist", "2026-12-31"));
    let run = s.keyrot(&["check", "--now", NOW]).fails(1);
    assert!(
        run.stderr
            .contains("exceptions.toml:1:1: exception names policy ip-allowlist, which does not exist"),
        "{}",
        run.stderr
    );
}
