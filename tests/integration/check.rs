//! `keyrot check` and store loading: every bad file reported in one run.

use crate::common::*;

#[test]
fn check_on_a_fresh_store_lists_the_policies() {
    let s = Store::new();
    let out = s.keyrot(&["check"]).ok().stdout;
    assert!(out.starts_with("ok: 0 keys, 0 owners, 6 policies"), "{out}");
    for p in [
        "compromised",
        "departed-owner",
        "idle",
        "key-cap",
        "least-privilege",
        "max-age",
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
    assert!(
        run.stderr.contains("keys/link.toml: is a symbolic link"),
        "{}",
        run.stderr
    );
}

#[test]
fn binary_and_oversized_files_are_errors_not_panics() {
    let s = Store::new();
    s.write("keys/bin.toml", "");
    std::fs::write(s.path("keys/bin.toml"), [0xff, 0xfe, 0x00, 0x41]).unwrap();
    s.write("keys/huge.toml", &"# x\n".repeat(300_000));
    let run = s.keyrot(&["check"]).fails(1);
    assert!(
        run.stderr.contains("keys/bin.toml:1:1: file is not valid UTF-8"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("keys/huge.toml: is 1200000 bytes, over the"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("panicked"));
}

#[test]
fn not_a_store_says_how_to_make_one() {
    let s = Store::bare();
    std::fs::create_dir_all(&s.root).unwrap();
    let run = s.keyrot(&["plan"]).fails(1);
    assert!(run.stderr.contains("is not a keyrot store"), "{}", run.stderr);
    assert!(run.stderr.contains("keyrot init"), "{}", run.stderr);
}
