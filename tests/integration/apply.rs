//! `keyrot apply`: the commit, the secrets, the key-file edits, and the refusals.

use std::fs;
use std::process::Command;

use crate::common::*;
use crate::plan::every_action_store;

#[test]
fn apply_makes_one_commit_with_subject_body_and_trailers() {
    let s = every_action_store();
    let before = s.head();
    let plan = s.plan();
    let run = s.apply().ok();
    assert_eq!(s.commit_count(), 3, "init, keys, apply");
    let head = s.head();
    run.stdout_has(&format!("commit {head}"));
    assert_eq!(s.git(&["rev-parse", "HEAD^"]).trim(), before);

    let msg = s.git(&["log", "-1", "--format=%B"]);
    let mut lines = msg.lines();
    assert_eq!(
        lines.next().unwrap(),
        "keyrot apply: 1 rotate, 1 revoke, 1 restrict, 1 expire"
    );
    for expected in [
        "rotate old [max-age] secret is 144 days old (limit 90)",
        "revoke leaked [compromised] key is marked compromised",
        "restrict withdrawer [least-privilege] withdraw permission without an IP allowlist (remove withdraw)",
        &format!("expire graced [keyrot] grace period ended ({})", fp('b')),
        "warn fresh [departed-owner] owner dave has left; assign the key a new owner",
    ] {
        assert!(
            msg.lines().any(|l| l == expected),
            "missing `{expected}` in\n{msg}"
        );
    }
    assert!(!msg.contains("deferred"), "deferred is not applied:\n{msg}");
    assert!(
        !msg.contains("rotate leaked"),
        "superseded actions are not applied:\n{msg}"
    );
    let trailers = s.git(&["log", "-1", "--format=%(trailers:only,unfold)"]);
    assert!(trailers.contains("Keyrot-Plan: sha256:"), "{trailers}");
    assert!(trailers.contains(&format!(
        "Keyrot-Policies: {}",
        plan["policies_digest"].as_str().unwrap()
    )));
    assert!(trailers.contains(&format!("Keyrot-Now: {NOW}")));

    // Only the changed key files are in the commit; the work tree and index follow it.
    let changed = s.git(&["diff", "--name-only", "HEAD^", "HEAD"]);
    assert_eq!(
        changed.lines().collect::<Vec<_>>(),
        [
            "keys/graced.toml",
            "keys/leaked.toml",
            "keys/old.toml",
            "keys/withdrawer.toml"
        ]
    );
    assert_eq!(s.git(&["status", "--porcelain"]), "");
    s.assert_fsck_clean();
}

#[test]
fn new_secret_is_written_0600_and_its_fingerprint_recorded() {
    let s = Store::with_keys(&[(
        "old",
        &key(
            "[\"read\"]",
            "2026-07-01T00:00:00Z",
            &format!("fingerprint = \"{}\"\n", fp('c')),
        ),
    )]);
    s.apply().ok();
    let file = s.secret_file("old");
    assert_eq!(Store::mode(&file), 0o600);
    assert_eq!(Store::mode(&s.secrets), 0o700);
    let content = fs::read_to_string(&file).unwrap();
    assert!(content.ends_with('\n') && content.matches('\n').count() == 1);
    let secret = content.trim_end();
    let body = secret.strip_prefix("kr_binance_").expect("kr_<service>_ prefix");
    assert_eq!(body.len(), 43 + 6, "{secret}");
    assert!(body.bytes().all(|b| b.is_ascii_alphanumeric()));

    let key_file = s.read("keys/old.toml");
    let expected = format!("fingerprint = \"sha256:{}\"", sha256_hex(secret.as_bytes()));
    assert!(key_file.contains(&expected), "{key_file}");
    assert!(key_file.contains(&format!("rotated_at = {NOW}")));
    // The old secret stays valid for the default grace period.
    assert!(
        key_file.contains(&format!(
            "[[previous]]\nfingerprint = \"{}\"\nvalid_until = 2026-11-23T20:00:00Z",
            fp('c')
        )),
        "{key_file}"
    );

    // A second rotation replaces the file.
    s.write(
        "keys/old.toml",
        &key_file.replace(
            &format!("rotated_at = {NOW}"),
            "rotated_at = 2026-01-01T00:00:00Z",
        ),
    );
    s.commit("age it");
    s.apply().ok();
    let again = fs::read_to_string(&file).unwrap();
    assert_ne!(again, content);
    assert_eq!(
        fs::read_dir(&s.secrets).unwrap().count(),
        1,
        "no pending files left behind"
    );
}

#[test]
fn no_secret_reaches_git_objects_output_or_the_plan() {
    let s = every_action_store();
    let plan_file = s.root.parent().unwrap().join("p.json");
    let plan_out = s
        .keyrot(&["plan", "--out", plan_file.to_str().unwrap(), "--now", NOW])
        .ok();
    let apply = s.apply().ok();
    let log = s.keyrot(&["log"]).ok();
    let log_json = s.keyrot(&["log", "--json"]).ok();
    let secret = fs::read_to_string(s.secret_file("old")).unwrap();
    let secret = secret.trim_end();
    assert!(secret.len() > 40);

    let objects = Command::new("git")
        .arg("-C")
        .arg(&s.root)
        .args(["cat-file", "--batch-all-objects", "--batch"])
        .output()
        .unwrap();
    let all_objects = String::from_utf8_lossy(&objects.stdout);
    assert!(
        all_objects.contains("keyrot apply:"),
        "the sweep must see the apply commit"
    );
    let body = &secret[secret.len() - 20..];
    for (what, text) in [
        ("git objects", all_objects.as_ref()),
        ("plan stdout", &plan_out.stdout),
        ("plan file", &fs::read_to_string(&plan_file).unwrap()),
        ("apply stdout", &apply.stdout),
        ("apply stderr", &apply.stderr),
        ("log", &log.stdout),
        ("log json", &log_json.stdout),
    ] {
        assert!(!text.contains(body), "secret found in {what}");
    }
    // Nor does any other command's output or error.
    let mut more = vec![
        s.keyrot(&["check"]),
        s.keyrot(&["check", "--json"]),
        s.keyrot(&["plan", "--json", "--now", NOW]),
        s.keyrot(&["run", "--once", "--json"]),
        s.keyrot(&["log", "old"]),
        s.keyrot(&[
            "apply",
            "--yes",
            "--now",
            NOW,
            "--secrets-dir",
            s.secrets.to_str().unwrap(),
        ]),
    ];
    s.write("policies/broken.rhai", "fn evaluate(key) { throw key.id }");
    more.push(s.keyrot(&["plan", "--now", NOW]));
    s.remove("policies/broken.rhai");
    for run in &more {
        assert!(
            !run.stdout.contains(body) && !run.stderr.contains(body),
            "secret in command output"
        );
    }
    // Nor any file of the store: the work tree, the index, reflogs, keyrot's own files.
    let grep = Command::new("grep")
        .args(["-r", "-a", "-l", body])
        .arg(&s.root)
        .output()
        .unwrap();
    assert!(
        grep.stdout.is_empty(),
        "secret in {}",
        String::from_utf8_lossy(&grep.stdout)
    );
}

#[test]
fn revoke_restrict_and_expire_edit_the_files_in_place() {
    let s = every_action_store();
    s.write(
        "keys/withdrawer.toml",
        "# Treasury sweeps\nservice = \"coinbase\"\nowner = \"alice\"   # on call\npermissions = [\"read\", \"withdraw\"]\ncreated_at = 2026-11-01T00:00:00Z\nlast_used_at = 2026-11-22T00:00:00Z\n",
    );
    s.commit("comment");
    s.apply().ok();
    let w = s.read("keys/withdrawer.toml");
    assert_eq!(
        w,
        "# Treasury sweeps\nservice = \"coinbase\"\nowner = \"alice\"   # on call\npermissions = [\"read\"]\ncreated_at = 2026-11-01T00:00:00Z\nlast_used_at = 2026-11-22T00:00:00Z\n"
    );
    let leaked = s.read("keys/leaked.toml");
    assert!(leaked.contains("status = \"revoked\""), "{leaked}");
    assert!(leaked.contains(&format!("revoked_at = {NOW}")), "{leaked}");
    assert!(
        leaked.contains("revoke_reason = \"key is marked compromised\""),
        "{leaked}"
    );
    let graced = s.read("keys/graced.toml");
    assert!(!graced.contains("[[previous]]"), "{graced}");
    assert!(graced.contains(&fp('a')));

    // The applied store settles: a new plan at the same instant changes nothing.
    let plan = s.plan();
    assert_eq!(plan["summary"]["rotate"], 0);
    assert_eq!(plan["summary"]["revoke"], 0);
    assert_eq!(plan["summary"]["restrict"], 0);
    assert_eq!(plan["summary"]["expire"], 0);
}

#[test]
fn apply_without_yes_off_a_terminal_is_refused() {
    let s = every_action_store();
    let run = s
        .keyrot(&[
            "apply",
            "--now",
            NOW,
            "--secrets-dir",
            s.secrets.to_str().unwrap(),
        ])
        .fails(1);
    run.stderr_has("--yes");
    assert_eq!(s.commit_count(), 2);
}

#[test]
fn apply_refuses_uncommitted_changes() {
    let s = every_action_store();
    s.write("keys/old.toml", &key("[\"read\"]", "2026-11-01T00:00:00Z", ""));
    let run = s.apply().fails(1);
    run.stderr_has("uncommitted changes: keys/old.toml");
    s.git(&["checkout", "--", "keys/old.toml"]);
    s.write("policies/new.rhai", "fn evaluate(key) { }");
    let run = s.apply().fails(1);
    run.stderr_has("policies/new.rhai");
    s.remove("policies/new.rhai");
    s.write("owners.toml", "[alice]\n");
    assert!(s.apply().fails(1).stderr.contains("owners.toml"));
    assert_eq!(s.commit_count(), 2);
    assert!(!s.secrets.exists() || fs::read_dir(&s.secrets).unwrap().count() == 0);
    // Changes outside the store's files do not block an apply.
    s.git(&["checkout", "--", "owners.toml"]);
    s.write("README.md", "notes");
    s.apply().ok();
}

#[test]
fn nothing_to_do_makes_no_commit() {
    let s = Store::with_keys(&[("k", &key("[\"read\"]", "2026-11-01T00:00:00Z", ""))]);
    let run = s.apply().ok();
    run.stdout_has("No commit made");
    assert_eq!(s.commit_count(), 2);
    let json = s.apply_with(&["--json"]).ok().json();
    assert_eq!(json["commit"], serde_json::Value::Null);
}

#[test]
fn a_secrets_folder_inside_the_store_is_refused() {
    let s = every_action_store();
    let inside = s.root.join("secrets");
    let inside = inside.to_str().unwrap();
    let run = s
        .keyrot(&["apply", "--yes", "--now", NOW, "--secrets-dir", inside])
        .fails(1);
    run.stderr_has("inside the store");
    assert_eq!(s.commit_count(), 2);
}

#[test]
fn apply_json_reports_commit_and_fingerprints() {
    let s = every_action_store();
    let json = s.apply_with(&["--json"]).ok().json();
    assert_eq!(json["commit"], s.head());
    let secrets = json["secrets"].as_array().unwrap();
    assert_eq!(secrets.len(), 1);
    assert_eq!(secrets[0]["key"], "old");
    let content = fs::read_to_string(s.secret_file("old")).unwrap();
    assert_eq!(
        secrets[0]["fingerprint"],
        format!("sha256:{}", sha256_hex(content.trim_end().as_bytes()))
    );
}

#[test]
fn zero_grace_rotation_leaves_no_previous_secret() {
    let s = Store::with_keys(&[(
        "old",
        &key(
            "[\"read\"]",
            "2026-07-01T00:00:00Z",
            &format!("fingerprint = \"{}\"\n", fp('c')),
        ),
    )]);
    s.write("keyrot.toml", "[rotation]\ngrace_period = \"0s\"\n");
    s.commit("no grace");
    s.apply().ok();
    assert!(!s.read("keys/old.toml").contains("[[previous]]"));
}

#[test]
fn a_policy_grace_period_wins_when_shorter() {
    let s = Store::with_keys(&[(
        "old",
        &key(
            "[\"read\"]",
            "2026-07-01T00:00:00Z",
            &format!("fingerprint = \"{}\"\n", fp('c')),
        ),
    )]);
    s.write(
        "policies/quick.rhai",
        "fn evaluate(key) { if key.age > days(90) { rotate(\"quick\", hours(2)) } }",
    );
    s.commit("quick");
    let plan = s.plan();
    let graces: Vec<_> = plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["grace_period"].clone())
        .collect();
    assert_eq!(graces, [serde_json::json!("1d"), serde_json::json!("2h")]);
    assert_eq!(plan["summary"]["rotate"], 1, "one key, one rotate");
    s.apply().ok();
    assert!(s
        .read("keys/old.toml")
        .contains("valid_until = 2026-11-22T22:00:00Z"));
}

#[test]
fn an_instant_ahead_of_the_clock_is_refused_unless_meant_and_an_old_saved_plan_is_warned_about() {
    let s = Store::with_keys(&[("k", &key("[\"read\"]", "2025-01-01T00:00:00Z", ""))]);
    let before = s.commit_count();
    let secrets = s.secrets.to_str().unwrap().to_string();
    let future = "2099-01-01T00:00:00Z";
    let run = s
        .keyrot(&["apply", "--yes", "--now", future, "--secrets-dir", &secrets])
        .fails(1);
    run.stderr_has("ahead of this machine's clock");
    run.stderr_has("--allow-future");
    assert_eq!(s.commit_count(), before);

    // A saved plan made for the future is refused the same way.
    let file = s.root.parent().unwrap().join("future.json");
    s.keyrot(&["plan", "--now", future, "--out", file.to_str().unwrap()])
        .ok();
    let run = s
        .keyrot(&["apply", file.to_str().unwrap(), "--secrets-dir", &secrets])
        .fails(1);
    run.stderr_has("ahead of this machine's clock");
    assert_eq!(s.commit_count(), before);

    // A saved plan from the past applies, with a warning that it is old.
    let file = s.root.parent().unwrap().join("old.json");
    s.keyrot(&["plan", "--now", NOW, "--out", file.to_str().unwrap()])
        .ok();
    let run = s
        .keyrot(&["apply", file.to_str().unwrap(), "--secrets-dir", &secrets])
        .ok();
    assert!(
        run.stderr
            .contains("warning: this plan was made for 2026-11-22T20:00:00Z"),
        "{}",
        run.stderr
    );
    assert_eq!(s.commit_count(), before + 1);

    // Meant: the future instant is written as asked.
    s.write("keys/k.toml", &(s.read("keys/k.toml") + "compromised = true\n"));
    s.commit("k leaked");
    s.keyrot(&[
        "apply",
        "--yes",
        "--allow-future",
        "--now",
        future,
        "--secrets-dir",
        &secrets,
    ])
    .ok();
    assert!(s
        .read("keys/k.toml")
        .contains("revoked_at = 2099-01-01T00:00:00Z"));
}

#[test]
fn errors_end_with_a_hint_naming_the_flag_or_command_that_helps() {
    let s = every_action_store();
    let inside = s.root.join("secrets");
    s.keyrot(&[
        "apply",
        "--yes",
        "--now",
        NOW,
        "--secrets-dir",
        inside.to_str().unwrap(),
    ])
    .fails(1)
    .stderr_has("\n  hint: pass --secrets-dir with a folder outside the store");

    let not_a_store = s.root.parent().unwrap().join("empty");
    std::fs::create_dir_all(&not_a_store).unwrap();
    s.keyrot_in(&not_a_store, &["plan"])
        .fails(1)
        .stderr_has("is not a keyrot store")
        .stderr_has("hint: create one with `keyrot init .`, or pass --store DIR");

    let file = s.root.parent().unwrap().join("plan.json");
    s.keyrot(&["plan", "--now", NOW, "--out", file.to_str().unwrap()])
        .ok();
    s.write("keys/old.toml", &format!("{}# edited\n", s.read("keys/old.toml")));
    s.commit("an edit after the plan");
    let secrets = s.secrets.to_str().unwrap().to_string();
    s.keyrot(&["apply", file.to_str().unwrap(), "--secrets-dir", &secrets])
        .fails(1)
        .stderr_has("stale plan")
        .stderr_has("\n  hint: run `keyrot plan --out FILE` again");
}
