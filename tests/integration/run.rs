//! `keyrot run`: the scheduled runner, once and every DURATION.

use std::fs;

use crate::common::*;

#[test]
fn once_exits_with_the_detailed_exit_code() {
    let s = Store::with_keys(&[("k", &key("[\"read\"]", "2026-11-01T00:00:00Z", ""))]);
    let run = s.keyrot(&["run", "--once"]).ok();
    run.stdout_has("Plan: 0 rotate");
    assert!(run.stdout.trim_end().ends_with("planned"), "{}", run.stdout);

    s.write("keys/old.toml", &key("[\"read\"]", "2025-01-01T00:00:00Z", ""));
    s.commit("old key");
    let run = s.keyrot(&["run", "--once", "--json"]).fails(2);
    assert_eq!(run.json()["plan"]["summary"]["rotate"], 1);

    s.write("policies/bad.rhai", "fn evaluate(key) {");
    let run = s.keyrot(&["run", "--once"]).fails(1);
    run.stderr_has("policies/bad.rhai:");
}

#[test]
fn once_with_apply_commits_and_never_applies_a_broken_policy_set() {
    let s = Store::with_keys(&[("old", &key("[\"read\"]", "2025-01-01T00:00:00Z", ""))]);
    let secrets = s.secrets.to_str().unwrap().to_string();
    s.write("policies/bad.rhai", "fn evaluate(key) {");
    s.commit("a broken policy");
    let run = s
        .keyrot(&["run", "--once", "--apply", "--secrets-dir", &secrets])
        .fails(1);
    run.stderr_has("policies/bad.rhai");
    assert_eq!(s.commit_count(), 3);

    s.remove("policies/bad.rhai");
    s.commit("fix");
    let run = s
        .keyrot(&["run", "--once", "--apply", "--secrets-dir", &secrets])
        .fails(2);
    run.stdout_has(&format!("applied, commit {}", s.head()));
    // Every count, zeros included, in one fixed shape.
    assert_eq!(
        s.git(&["log", "-1", "--format=%s"]).trim(),
        "keyrot apply: 1 rotate, 0 revoke, 0 restrict, 0 expire"
    );
    assert!(s.secret_file("old").exists());
    let run = s
        .keyrot(&["run", "--once", "--apply", "--secrets-dir", &secrets])
        .ok();
    run.stdout_has("nothing to apply");
}

#[test]
fn every_reloads_policies_between_cycles_and_survives_a_failing_cycle() {
    let s = Store::with_keys(&[("k", &key("[\"read\"]", "2026-11-01T00:00:00Z", ""))]);
    let mut live = s.spawn(&["run", "--every", "1s", "--json"], &[]);
    let first = live.next_event("cycle");
    assert_eq!(first["plan"]["summary"]["warn"], 0);

    s.write("policies/bad.rhai", "fn evaluate(key) {");
    let err = live.next_event("error");
    assert!(
        err["error"].as_str().unwrap().contains("policies/bad.rhai"),
        "{err}"
    );

    s.write("policies/bad.rhai", "fn evaluate(key) { warn(\"now fine\") }");
    live.wait_for(false, "a cycle with the new policy", |l| {
        serde_json::from_str::<serde_json::Value>(l)
            .is_ok_and(|v| v["event"] == "cycle" && v["plan"]["summary"]["warn"] == 1)
    });
    live.signal("TERM");
    assert_eq!(live.wait_exit(), 0);
}

#[test]
fn sigterm_during_an_apply_lets_the_apply_finish() {
    let s = Store::with_keys(&[("old", &key("[\"read\"]", "2025-01-01T00:00:00Z", ""))]);
    let secrets = s.secrets.to_str().unwrap().to_string();
    let before = s.commit_count();
    let mut live = s.spawn(
        &["run", "--every", "1h", "--apply", "--secrets-dir", &secrets],
        &[("KEYROT_TEST_PAUSE", "apply-before-commit:1500")],
    );
    live.wait_for(true, "the apply to reach its commit step", |l| {
        l.starts_with("failpoint apply-before-commit")
    });
    live.signal("TERM");
    assert_eq!(live.wait_exit(), 0);
    assert_eq!(
        s.commit_count(),
        before + 1,
        "the apply finished: {:#?}",
        live.seen
    );
    assert_eq!(s.git(&["status", "--porcelain"]), "");
    let secret = fs::read_to_string(s.secret_file("old")).unwrap();
    assert!(s
        .read("keys/old.toml")
        .contains(&sha256_hex(secret.trim_end().as_bytes())));
}

#[test]
fn every_needs_a_valid_duration() {
    let s = Store::new();
    let run = s.keyrot(&["run", "--every", "soon"]).fails(1);
    run.stderr_has("not a duration");
    assert!(s.keyrot(&["run"]).fails(1).stderr.contains("--every"));
}

#[test]
fn the_example_crontab_line_applies_and_pushes() {
    let crontab =
        fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/schedule/crontab")).unwrap();
    let nightly = crontab
        .lines()
        .find(|l| l.starts_with("15 2 * * *"))
        .expect("the nightly line")
        .trim_start_matches("15 2 * * *")
        .trim();

    // A store with a remote it pulls from and pushes to, as on a real server.
    let s = Store::with_keys(&[("old", &key("[\"read\"]", "2025-01-01T00:00:00Z", ""))]);
    let remote = s.root.parent().unwrap().join("remote.git");
    let ok = std::process::Command::new("git")
        .args(["init", "-q", "--bare"])
        .arg(&remote)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    s.git(&["remote", "add", "origin", remote.to_str().unwrap()]);
    s.git(&["push", "-q", "-u", "origin", "main"]);

    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_keyrot"))
        .parent()
        .unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap());
    let env = |path: &str| {
        [
            ("PATH", path.to_string()),
            ("KEYROT_STORE", s.root.to_str().unwrap().to_string()),
            ("KEYROT_SECRETS_DIR", s.secrets.to_str().unwrap().to_string()),
        ]
    };
    // Without keyrot on PATH (exit 127) the line prints, so cron mails it.
    let missing = env("/usr/bin:/bin");
    let missing: Vec<(&str, &str)> = missing.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let run = s.shell(nightly, &missing);
    assert!(
        run.stdout.contains("keyrot apply failed (exit 127)"),
        "{}",
        run.stdout
    );
    // With it, the line applies through the remote and prints nothing.
    let found = env(&path);
    let found: Vec<(&str, &str)> = found.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let run = s.shell(nightly, &found);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.stdout, "", "{}", run.stderr);
    let pushed = s.git(&["log", "-1", "--format=%s", "origin/main"]);
    assert!(pushed.starts_with("keyrot apply: 1 rotate"), "{pushed}");
}
