//! `keyrot plan`: the table, JSON, ordering, precedence, exit codes, dirty detection.

use crate::common::*;

/// One key per kind of action, at NOW.
pub fn every_action_store() -> Store {
    Store::with_keys(&[
        ("old", &key("[\"read\"]", "2026-07-01T00:00:00Z", "")),
        ("leaked", &key("[\"read\"]", "2026-07-01T00:00:00Z", "compromised = true\n")),
        (
            "withdrawer",
            "service = \"coinbase\"\nowner = \"alice\"\npermissions = [\"read\", \"withdraw\"]\ncreated_at = 2026-11-01T00:00:00Z\nlast_used_at = 2026-11-22T00:00:00Z\n",
        ),
        (
            "graced",
            &key(
                "[\"read\"]",
                "2026-11-19T00:00:00Z",
                &format!("fingerprint = \"{}\"\n\n[[previous]]\nfingerprint = \"{}\"\nvalid_until = 2026-11-21T00:00:00Z\n", fp('a'), fp('b')),
            ),
        ),
        (
            "fresh",
            &key("[\"read\"]", "2026-11-22T18:00:00Z", "").replace("owner = \"alice\"", "owner = \"dave\""),
        ),
    ])
}

#[test]
fn plan_lists_every_action_kind_in_spec_order() {
    let s = every_action_store();
    let plan = s.plan();
    assert_eq!(
        actions(&plan),
        [
            ("fresh", "deferred", "departed-owner"),
            ("fresh", "warn", "departed-owner"),
            ("graced", "expire", "keyrot"),
            ("leaked", "revoke", "compromised"),
            ("leaked", "rotate", "max-age"),
            ("old", "rotate", "max-age"),
            ("withdrawer", "restrict", "least-privilege"),
        ]
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    );
    let a = &plan["actions"];
    assert_eq!(
        a[0]["reason"],
        "owner dave has left; the secret they knew must stop working; rotated 2h ago, cooldown 1d"
    );
    assert_eq!(a[2]["fingerprint"], fp('b'));
    assert_eq!(a[4]["superseded_by"], "revoke");
    assert!(a[3].get("superseded_by").is_none());
    assert_eq!(a[5]["grace_period"], "1d");
    assert_eq!(a[5]["reason"], "secret is 144 days old (limit 90)");
    assert_eq!(a[6]["remove"], serde_json::json!(["withdraw"]));
    assert_eq!(
        plan["summary"],
        serde_json::json!({"rotate": 1, "revoke": 1, "restrict": 1, "expire": 1, "deferred": 1, "warn": 1})
    );
    assert_eq!(plan["format"], 1);
    assert_eq!(plan["now"], NOW);
    assert_eq!(plan["dirty"], false);
    assert_eq!(plan["store_commit"], s.head());
    for digest in ["policies_digest", "keys_digest"] {
        let d = plan[digest].as_str().unwrap();
        assert!(d.starts_with("sha256:") && d.len() == 71, "{digest}: {d}");
    }
}

#[test]
fn table_output_ends_with_the_summary_line() {
    let s = every_action_store();
    let out = s.keyrot(&["plan", "--now", NOW]).ok().stdout;
    assert!(out.contains("rotate (superseded by revoke)"), "{out}");
    assert!(out.contains("withdrawer"), "{out}");
    assert_eq!(
        out.lines().last().unwrap(),
        "Plan: 1 rotate, 1 revoke, 1 restrict, 1 expire, 1 deferred, 1 warn."
    );
}

#[test]
fn plans_are_deterministic_byte_for_byte() {
    let s = every_action_store();
    let a = s.keyrot(&["plan", "--json", "--now", NOW]).ok().stdout;
    let b = s.keyrot(&["plan", "--json", "--now", NOW]).ok().stdout;
    assert_eq!(a, b);
}

#[test]
fn detailed_exitcode_is_2_only_when_the_store_would_change() {
    let s = every_action_store();
    s.keyrot(&["plan", "--detailed-exitcode", "--now", NOW]).fails(2);
    s.keyrot(&["plan", "--now", NOW]).ok();

    // Only a deferred rotation and a warning: nothing to change.
    let quiet = Store::with_keys(&[(
        "fresh",
        &key("[\"read\"]", "2026-11-22T18:00:00Z", "").replace("owner = \"alice\"", "owner = \"dave\""),
    )]);
    let run = quiet
        .keyrot(&["plan", "--detailed-exitcode", "--json", "--now", NOW])
        .ok();
    assert_eq!(run.json()["summary"]["deferred"], 1);

    let empty = Store::new();
    empty.keyrot(&["plan", "--detailed-exitcode", "--now", NOW]).ok();
}

#[test]
fn out_saves_the_same_plan_as_json_prints() {
    let s = every_action_store();
    let file = s.root.parent().unwrap().join("plan.json");
    let run = s
        .keyrot(&["plan", "--out", file.to_str().unwrap(), "--now", NOW])
        .ok();
    assert!(run.stdout.contains("Saved plan to"));
    let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(saved, s.plan());
}

#[test]
fn plan_reads_the_work_tree_and_says_when_it_differs_from_head() {
    let s = Store::with_keys(&[("k", &key("[\"read\"]", "2026-11-01T00:00:00Z", ""))]);
    assert_eq!(s.plan()["dirty"], false);
    assert!(s.plan()["actions"].as_array().unwrap().is_empty());

    s.write("keys/k.toml", &key("[\"read\"]", "2026-01-01T00:00:00Z", ""));
    let plan = s.plan();
    assert_eq!(plan["dirty"], true);
    assert_eq!(actions(&plan)[0].1, "rotate");
    let out = s.keyrot(&["plan", "--now", NOW]).ok().stdout;
    assert!(out.contains("differs from HEAD (keys/k.toml)"), "{out}");

    // An untracked policy counts too.
    s.git(&["checkout", "--", "keys/k.toml"]);
    assert_eq!(s.plan()["dirty"], false);
    s.write("policies/extra.rhai", "fn evaluate(key) { warn(\"hello\") }");
    let plan = s.plan();
    assert_eq!(plan["dirty"], true);
    assert_eq!(actions(&plan), [("k".into(), "warn".into(), "extra".into())]);
}

/// The paths `plan` names as uncommitted, from its text note.
fn noted_paths(s: &Store) -> Vec<String> {
    let out = s.keyrot(&["plan", "--now", NOW]).ok().stdout;
    match out.split_once("differs from HEAD (") {
        Some((_, rest)) => rest
            .split_once(')')
            .unwrap()
            .0
            .split(", ")
            .map(str::to_string)
            .collect(),
        None => Vec::new(),
    }
}

/// What `git status` lists as changed where keyrot reads.
fn git_changed(s: &Store) -> Vec<String> {
    let out = s.git(&[
        "status",
        "--porcelain",
        "--untracked-files=all",
        "--",
        "keys",
        "policies",
        "keyrot.toml",
        "owners.toml",
        "exceptions.toml",
    ]);
    let mut paths: Vec<String> = out.lines().map(|l| l[3..].to_string()).collect();
    paths.sort();
    // A file deleted from the index and still in the work tree is listed twice.
    paths.dedup();
    paths
}

#[test]
fn uncommitted_changes_are_the_ones_git_status_lists() {
    let s = Store::with_keys(&[
        ("a", &key("[\"read\"]", "2026-11-01T00:00:00Z", "")),
        ("b", &key("[\"read\"]", "2026-11-01T00:00:00Z", "")),
    ]);
    let check = |what: &str, expected: &[&str]| {
        let noted = noted_paths(&s);
        assert_eq!(noted, expected, "{what}");
        assert_eq!(noted, git_changed(&s), "{what}: git status differs");
        assert_eq!(s.plan()["dirty"], !expected.is_empty(), "{what}");
    };
    check("a clean store", &[]);

    s.write("keys/.a.toml.swp", "an editor's swap file");
    check("an untracked swap file", &["keys/.a.toml.swp"]);
    s.write(".gitignore", "*.swp\n");
    s.commit("ignore swap files");
    check("an ignored swap file", &[]);

    let committed = s.read("keys/b.toml");
    s.write("keys/b.toml", &key("[\"read\"]", "2026-01-01T00:00:00Z", ""));
    s.git(&["add", "keys/b.toml"]);
    s.write("keys/b.toml", &committed);
    check(
        "a change staged, then undone in the work tree only",
        &["keys/b.toml"],
    );
    s.git(&["reset", "-q", "keys/b.toml"]);
    check("unstaged again", &[]);

    std::fs::set_permissions(
        s.path("keys/a.toml"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    check("an executable bit", &["keys/a.toml"]);
    s.git(&["config", "core.fileMode", "false"]);
    check("an executable bit git is told to ignore", &[]);
    s.git(&["config", "core.fileMode", "true"]);
    std::fs::set_permissions(
        s.path("keys/a.toml"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();

    s.git(&["rm", "-q", "--cached", "keys/b.toml"]);
    check("removed from the index only", &["keys/b.toml"]);
    s.git(&["reset", "-q", "keys/b.toml"]);
    s.remove("policies/idle_test.rhai");
    check("a deleted policy test", &["policies/idle_test.rhai"]);
    s.git(&["checkout", "--", "policies/idle_test.rhai"]);

    // With attributes git may filter what it stores: plan asks git itself.
    s.write(".gitattributes", "*.toml text eol=lf\n");
    s.commit("attributes");
    check("attributes, clean", &[]);
    s.write("owners.toml", &format!("{}\n# a note\n", s.read("owners.toml")));
    check("attributes, an edited root file", &["owners.toml"]);
}

#[test]
fn a_failing_policy_fails_the_run_naming_policy_key_and_position() {
    let s = Store::with_keys(&[("k", &key("[\"read\"]", "2026-11-01T00:00:00Z", ""))]);
    s.write(
        "policies/typo.rhai",
        "fn evaluate(key) {\n    if key.idle > days(config().idle_dayz) { return warn(\"x\"); }\n}\n",
    );
    let run = s.keyrot(&["plan", "--now", NOW]).fails(1);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    run.stderr_has("policies/typo.rhai:2:");
    run.stderr_has("policy typo: key k:");
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
}

#[test]
fn a_missing_config_value_in_an_ordering_comparison_is_an_error() {
    let s = Store::with_keys(&[("k", &key("[\"read\"]", "2026-11-01T00:00:00Z", ""))]);
    s.write(
        "policies/cmp.rhai",
        "fn evaluate(key) {\n  if key.age.days > config().max_days { return rotate(\"x\"); }\n}\n",
    );
    let run = s.keyrot(&["plan", "--now", NOW]).fails(1);
    run.stderr_has("policy cmp: key k:");
    run.stderr_has("missing value");
}

#[test]
fn revoked_keys_are_not_evaluated() {
    let s = Store::with_keys(&[(
        "gone",
        &key(
            "[\"read\"]",
            "2026-01-01T00:00:00Z",
            "compromised = true\nstatus = \"revoked\"\n",
        ),
    )]);
    assert!(s.plan()["actions"].as_array().unwrap().is_empty());
}

#[test]
fn now_must_be_rfc3339() {
    let s = Store::new();
    let run = s.keyrot(&["plan", "--now", "yesterday"]).fails(1);
    run.stderr_has("RFC 3339");
}

#[test]
fn the_store_is_found_from_a_folder_inside_it_and_with_dash_c() {
    let s = every_action_store();
    let expected = s.plan();
    // From keys/ (no --store): the store above it, as git finds its repository.
    let run = s
        .keyrot_in(&s.root.join("keys"), &["plan", "--json", "--now", NOW])
        .ok();
    assert_eq!(run.json(), expected);
    // -C DIR runs as if started there, before anything else (here: policies/).
    let outside = s.root.parent().unwrap();
    let policies = s.root.join("policies");
    let run = s
        .keyrot_in(
            outside,
            &["-C", policies.to_str().unwrap(), "plan", "--json", "--now", NOW],
        )
        .ok();
    assert_eq!(run.json(), expected);
    // A relative --store after -C is relative to DIR, as git's paths are.
    let run = s
        .keyrot_in(
            outside,
            &["-C", outside.to_str().unwrap(), "--store", "store/keys", "check"],
        )
        .ok();
    assert_eq!(run.code, 0);
    s.keyrot_in(outside, &["-C", "/nonexistent", "plan"])
        .fails(1)
        .stderr_has("/nonexistent");
}
