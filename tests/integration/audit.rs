//! The verifiable audit trail: signed apply commits checked by real git (`git
//! verify-commit` with ssh-keygen and gpg keys made here), `keyrot audit verify`
//! against honest histories and against forgeries made with git by hand, and `keyrot
//! log` saying who.

use std::path::PathBuf;
use std::process::Command;

use crate::common::*;
use crate::plan::every_action_store;

/// An SSH signing key made with `ssh-keygen` in the store's temp folder, set as git's
/// signing key for the store, with an allowed-signers file naming it for `principal`.
/// Returns the allowed-signers file.
fn ssh_signing(s: &Store, principal: &str, name: &str) -> PathBuf {
    let dir = s.root.parent().unwrap().join(format!("ssh-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("id");
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let public = std::fs::read_to_string(dir.join("id.pub")).unwrap();
    let allowed = dir.join("allowed_signers");
    std::fs::write(&allowed, format!("{principal} {public}")).unwrap();
    s.git(&["config", "gpg.format", "ssh"]);
    s.git(&["config", "user.signingKey", key.to_str().unwrap()]);
    allowed
}

fn verify(s: &Store, extra: &[&str]) -> Run {
    let mut args = vec!["audit", "verify"];
    args.extend_from_slice(extra);
    s.keyrot(&args)
}

fn verify_json(s: &Store, extra: &[&str]) -> (i32, serde_json::Value) {
    let mut args = vec!["--json"];
    args.extend_from_slice(extra);
    let run = verify(s, &args);
    let json = run.json();
    (run.code, json)
}

/// `audit verify --json --require-signed` of the commits after `since`, trusting the
/// keys in `allowed`.
fn verify_signed_since(s: &Store, since: &str, allowed: &str) -> (i32, serde_json::Value) {
    verify_json(
        s,
        &["--since", since, "--require-signed", "--allowed-signers", allowed],
    )
}

/// The verdicts of the checked commits, oldest first, as (kind, verdict).
fn verdicts(report: &serde_json::Value) -> Vec<(String, String)> {
    report["commits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["kind"].as_str().unwrap().to_string(),
                c["verdict"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The problems of the newest checked commit.
fn last_problems(report: &serde_json::Value) -> Vec<String> {
    report["commits"].as_array().unwrap().last().unwrap()["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect()
}

fn message(s: &Store, rev: &str) -> String {
    s.git(&["log", "-1", "--format=%B", rev])
}

/// A hand-made commit of the work tree with `msg` (a copied apply message, say).
fn commit_with_message(s: &Store, msg: &str) {
    s.git(&["add", "-A"]);
    s.git(&["commit", "-q", "--allow-empty", "-m", msg]);
}

#[test]
fn honest_applies_verify_and_each_names_the_one_before() {
    let s = Store::with_keys(&[
        ("a", &key("[\"read\"]", "2026-08-01T00:00:00Z", "")),
        ("b", &key("[\"read\"]", "2026-08-30T00:00:00Z", "")),
    ]);
    s.apply().ok();
    let first = s.head();
    assert!(message(&s, "HEAD").contains("\nKeyrot-Previous: none\n"));
    // A manual edit, then a later apply that rotates `b`, which has come due.
    s.write("keys/a.toml", &format!("{}# reviewed\n", s.read("keys/a.toml")));
    s.commit("note on a");
    s.apply_at("2026-12-01T00:00:00Z", &[]).ok();
    assert!(message(&s, "HEAD").contains(&format!("\nKeyrot-Previous: {first}\n")));

    let (code, report) = verify_json(&s, &[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(
        verdicts(&report),
        [
            ("manual", "manual"), // keyrot init
            ("manual", "manual"), // add keys
            ("apply", "ok"),
            ("manual", "manual"),
            ("apply", "ok"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
    );
    let manual = &report["commits"][3];
    assert_eq!(manual["author"], "Test Engineer <eng@example.com>");
    assert_eq!(manual["signed"], false);
    assert_eq!(manual["signature"], "none");
    assert_eq!(report["summary"]["failed"], 0);
    assert_eq!(report["summary"]["apply"], 2);
    // The verified tip is remembered, so a rewrite is noticed later.
    assert_eq!(s.git(&["rev-parse", "refs/keyrot/verified"]).trim(), s.head());
    // Text for a reviewer: one line per commit, then the summary.
    let text = verify(&s, &[]).ok().stdout;
    assert!(
        text.lines()
            .any(|l| l.starts_with("ok ") && l.contains(&first[..10])),
        "{text}"
    );
    assert!(text.contains("manual "), "{text}");
    assert!(
        text.trim_end()
            .ends_with("2 apply ok, 3 manual, 0 failed; 0 signed."),
        "{text}"
    );
    // --since checks only what came after.
    let (code, report) = verify_json(&s, &["--since", &first]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(verdicts(&report).len(), 2);
}

#[test]
fn apply_commits_signed_with_ssh_pass_git_verify_commit() {
    let s = every_action_store();
    let allowed = ssh_signing(&s, "eng@example.com", "eng");
    s.git(&["config", "commit.gpgSign", "true"]);
    let before = s.head();
    s.apply().ok();
    // Real git accepts the signature keyrot made.
    s.git(&[
        "-c",
        &format!("gpg.ssh.allowedSignersFile={}", allowed.display()),
        "verify-commit",
        "HEAD",
    ]);
    let shown = s.git(&[
        "-c",
        &format!("gpg.ssh.allowedSignersFile={}", allowed.display()),
        "log",
        "-1",
        "--show-signature",
    ]);
    assert!(
        shown.contains("Good \"git\" signature for eng@example.com"),
        "{shown}"
    );

    // audit verify checks it, and --require-signed accepts it (the hand-made commits
    // before it are left out with --since).
    let allowed = allowed.to_str().unwrap();
    let (code, report) = verify_signed_since(&s, &before, allowed);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["commits"][0]["signed"], true);
    assert_eq!(report["commits"][0]["signature"], "good");
    assert_eq!(report["commits"][0]["signer"], "eng@example.com");
    // Without --since the unsigned manual commits fail --require-signed, named.
    let (code, report) = verify_json(&s, &["--require-signed", "--allowed-signers", allowed]);
    assert_eq!(code, 1);
    assert_eq!(report["commits"][0]["verdict"], "fail");
    assert_eq!(report["commits"][0]["problems"][0], "not signed");
    // keyrot log says who made and who signed each entry.
    s.git(&["config", "gpg.ssh.allowedSignersFile", allowed]);
    let log = s.keyrot(&["log", "old", "--json"]).ok().json();
    assert_eq!(log[0]["action"], "rotate");
    assert_eq!(log[0]["author"], "Test Engineer <eng@example.com>");
    assert_eq!(log[0]["signer"], "eng@example.com");
    let table = s.keyrot(&["log", "old"]).ok().stdout;
    assert!(
        table.contains("Test Engineer (signed by eng@example.com)"),
        "{table}"
    );
    // A configured allowed-signers file that went missing does not break the log; the
    // signature then shows with its key, trusted by nobody.
    s.git(&[
        "config",
        "gpg.ssh.allowedSignersFile",
        "/nonexistent/allowed_signers",
    ]);
    let log = s.keyrot(&["log", "old", "--json"]).ok().json();
    assert_eq!(log[0]["signature"], "untrusted");
    assert!(log[0]["signer"].as_str().unwrap().starts_with("ssh key SHA256:"));
    // audit verify, which must not pass a check that trusts nobody, refuses.
    verify(&s, &[])
        .fails(1)
        .stderr_has("the allowed-signers file /nonexistent/allowed_signers does not exist");
}

#[test]
fn a_signature_by_a_key_nobody_allowed_fails_require_signed() {
    let s = every_action_store();
    let allowed = ssh_signing(&s, "eng@example.com", "eng");
    // Mallory signs with her own key, which the allowed-signers file does not name.
    ssh_signing(&s, "mallory@example.com", "mallory");
    s.git(&["config", "commit.gpgSign", "true"]);
    let before = s.head();
    s.apply().ok();
    let (code, report) = verify_signed_since(&s, &before, allowed.to_str().unwrap());
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["commits"][0]["signature"], "untrusted");
    let problem = report["commits"][0]["problems"][0].as_str().unwrap();
    assert!(problem.contains("who is not an allowed signer"), "{problem}");
    // The apply itself is still exactly its plan: only the signature fails.
    assert_eq!(report["commits"][0]["problems"].as_array().unwrap().len(), 1);
}

#[test]
fn apply_commits_signed_with_openpgp_pass_git_verify_commit() {
    let s = every_action_store();
    let gnupg = s.root.parent().unwrap().join("gnupg");
    std::fs::create_dir_all(&gnupg).unwrap();
    std::fs::set_permissions(&gnupg, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let gnupg = gnupg.to_str().unwrap();
    let out = Command::new("gpg")
        .env("GNUPGHOME", gnupg)
        .args([
            "--batch",
            "--quiet",
            "--passphrase",
            "",
            "--quick-gen-key",
            "Test Engineer <eng@example.com>",
            "ed25519",
            "sign",
            "never",
        ])
        .output()
        .expect("gpg is installed (.ci/run installs gnupg)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    s.git(&["config", "commit.gpgSign", "true"]);
    let before = s.head();
    // No user.signingKey: the committer's identity picks the key, as in git.
    s.apply_at(NOW, &[("GNUPGHOME", gnupg)]).ok();
    let verified = Command::new("git")
        .env("GNUPGHOME", gnupg)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .args(["-C", s.root.to_str().unwrap(), "verify-commit", "HEAD"])
        .output()
        .unwrap();
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );
    assert!(String::from_utf8_lossy(&verified.stderr)
        .contains("Good signature from \"Test Engineer <eng@example.com>\""));
    let run = s.keyrot_env(
        &["audit", "verify", "--json", "--since", &before],
        &[("GNUPGHOME", gnupg)],
    );
    let report = run.json();
    assert_eq!(run.code, 0, "{report}");
    // The key made here is ultimately trusted in its own keyring.
    assert_eq!(report["commits"][0]["signed"], true);
    assert_eq!(report["commits"][0]["signature"], "good");
    assert_eq!(report["commits"][0]["signer"], "Test Engineer <eng@example.com>");
    // The agent gpg started goes with the test's keyring.
    let _ = Command::new("gpgconf")
        .env("GNUPGHOME", gnupg)
        .args(["--kill", "gpg-agent"])
        .status();
}

#[test]
fn mandatory_signing_fails_closed_when_no_signature_can_be_made() {
    let s = every_action_store();
    s.write(
        "keyrot.toml",
        &s.read("keyrot.toml").replace("sign = false", "sign = true"),
    );
    s.commit("sign every apply");
    let base = s.head();
    // gpg.format ssh without a key: refused before anything happens.
    s.git(&["config", "gpg.format", "ssh"]);
    let run = s.apply().fails(1);
    run.stderr_has("cannot sign the apply commit: gpg.format is ssh but user.signingKey is not set");
    run.stderr_has("nothing was applied");
    // A key, but a signing program that fails: stopped at the commit, rolled back.
    ssh_signing(&s, "eng@example.com", "eng");
    s.git(&["config", "gpg.ssh.program", "false"]);
    let run = s.apply().fails(1);
    run.stderr_has("cannot sign the apply commit: false (ssh)");
    assert_eq!(s.head(), base);
    assert_eq!(s.git(&["status", "--porcelain"]), "");
    assert!(!s.secrets.exists() || std::fs::read_dir(&s.secrets).unwrap().next().is_none());
    // With the real program it signs, though commit.gpgSign is not set.
    s.git(&["config", "--unset", "gpg.ssh.program"]);
    s.apply().ok();
    assert_ne!(s.head(), base);
    assert!(s
        .git(&["cat-file", "commit", "HEAD"])
        .contains("-----BEGIN SSH SIGNATURE-----"));
}

/// A store after one honest apply, the apply's message, and the commit before it.
fn applied() -> (Store, String) {
    let s = every_action_store();
    s.apply().ok();
    let msg = message(&s, "HEAD");
    (s, msg)
}

#[test]
fn a_forged_apply_commit_that_regrants_a_permission_is_named() {
    let (s, msg) = applied();
    // The attacker's commit: the apply's own message copied, withdraw granted back to
    // the key the apply restricted.
    s.write(
        "keys/withdrawer.toml",
        &s.read("keys/withdrawer.toml").replace(
            "permissions = [\"read\"]",
            "permissions = [\"read\", \"withdraw\"]",
        ),
    );
    commit_with_message(&s, &msg);
    // keyrot log alone cannot tell; audit verify can.
    let run = verify(&s, &[]).fails(1);
    let text = run.stdout;
    assert!(text.lines().any(|l| l.starts_with("FAIL ")), "{text}");
    assert!(
        text.contains("keys/withdrawer.toml changed (`permissions`), but the plan does not touch it"),
        "{text}"
    );
    assert!(text.contains("NOT verified"), "{text}");
    assert!(
        text.contains("Keyrot-Previous names none, but the previous apply commit"),
        "{text}"
    );
    // Failing runs do not move the verified tip.
    assert!(s.git(&["for-each-ref", "refs/keyrot/verified"]).is_empty());
}

#[test]
fn forged_deletions_additions_status_changes_and_outside_files_are_named() {
    type Forgery = (&'static str, fn(&Store), &'static str);
    let cases: [Forgery; 4] = [
        (
            "deleted key",
            |s| s.remove("keys/fresh.toml"),
            "keys/fresh.toml deleted, but the plan does not touch it",
        ),
        (
            "added key",
            |s| s.write("keys/extra.toml", &key("[\"read\"]", "2026-11-01T00:00:00Z", "")),
            "keys/extra.toml added, but the plan does not touch it",
        ),
        (
            "status",
            |s| {
                s.write(
                    "keys/leaked.toml",
                    &s.read("keys/leaked.toml")
                        .replace("status = \"revoked\"", "status = \"active\""),
                )
            },
            "keys/leaked.toml: `status` not what its actions",
        ),
        (
            "outside the store",
            |s| s.write("README.md", "hello\n"),
            "README.md added, but the plan does not touch it",
        ),
    ];
    for (what, forge, named) in cases {
        let s = every_action_store();
        let base = s.head();
        s.apply().ok();
        // The forgery rides inside the apply commit itself (amended, same message).
        forge(&s);
        s.git(&["add", "-A"]);
        s.git(&["commit", "-q", "--amend", "--no-edit"]);
        assert_eq!(s.git(&["rev-parse", "HEAD^"]).trim(), base);
        let (code, report) = verify_json(&s, &[]);
        assert_eq!(code, 1, "{what}: {report}");
        let problems = last_problems(&report);
        assert!(problems.iter().any(|p| p.contains(named)), "{what}: {problems:?}");
    }
}

#[test]
fn a_changed_keyrot_now_is_named() {
    let (s, msg) = applied();
    let forged = msg.replace(&format!("Keyrot-Now: {NOW}"), "Keyrot-Now: 2026-11-23T20:00:00Z");
    s.git(&["commit", "-q", "--amend", "-m", &forged]);
    let (code, report) = verify_json(&s, &[]);
    assert_eq!(code, 1);
    let problems = last_problems(&report);
    assert!(
        problems.iter().any(|p| p.starts_with(
            "Keyrot-Plan is not the digest of what the policies decide at its parent at 2026-11-23T20:00:00Z"
        )),
        "{problems:?}"
    );
    // Dated after the commit itself: refused on its own.
    let future = msg.replace(&format!("Keyrot-Now: {NOW}"), "Keyrot-Now: 2099-01-01T00:00:00Z");
    s.git(&["commit", "-q", "--amend", "-m", &future]);
    let (_, report) = verify_json(&s, &[]);
    assert!(last_problems(&report)
        .iter()
        .any(|p| p.contains("an apply is never dated in the future")));
}

#[test]
fn a_rotation_to_a_fingerprint_seen_before_is_named() {
    let (s, _) = applied();
    // `old` was rotated; put back a fingerprint the history already holds (graced's
    // expired one, which the root commit of the keys recorded).
    let text = s.read("keys/old.toml");
    let new_fp = text
        .lines()
        .find(|l| l.starts_with("fingerprint = "))
        .unwrap()
        .to_string();
    s.write(
        "keys/old.toml",
        &text.replace(&new_fp, &format!("fingerprint = \"{}\"", fp('b'))),
    );
    s.git(&["add", "-A"]);
    s.git(&["commit", "-q", "--amend", "--no-edit"]);
    let (code, report) = verify_json(&s, &[]);
    assert_eq!(code, 1);
    let problems = last_problems(&report);
    assert!(
        problems.iter().any(|p| p
            == &format!(
                "keys/old.toml: rotated to {}, a fingerprint seen before (not a new secret)",
                fp('b')
            )),
        "{problems:?}"
    );
}

#[test]
fn edited_action_lines_are_named() {
    let (s, msg) = applied();
    // The diff and trailers are honest; the body that `keyrot log` shows lies.
    let forged = msg.replace("rotate old [max-age]", "rotate old [manual-review]");
    assert_ne!(forged, msg);
    s.git(&["commit", "-q", "--amend", "-m", &forged]);
    let (code, report) = verify_json(&s, &[]);
    assert_eq!(code, 1);
    assert!(last_problems(&report)[0].starts_with("its message is not what keyrot writes"));
}

/// Two keys due 15 days apart: the first apply rotates `a`, the second (15 days on)
/// rotates `b` alone, so either can be dropped without conflicts.
fn two_applies() -> (Store, String, String) {
    let s = Store::with_keys(&[
        ("a", &key("[\"read\"]", "2026-08-01T00:00:00Z", "")),
        ("b", &key("[\"read\"]", "2026-08-30T00:00:00Z", "")),
    ]);
    s.apply().ok();
    let first = s.head();
    s.apply_at("2026-12-01T00:00:00Z", &[]).ok();
    let second = s.head();
    let changed = s.git(&["show", "--name-only", "--format=", "HEAD"]);
    assert_eq!(changed.trim(), "keys/b.toml");
    (s, first, second)
}

#[test]
fn a_dropped_apply_commit_breaks_the_chain_and_a_rewrite_is_refused() {
    let (s, first, second) = two_applies();
    verify(&s, &[]).ok();
    assert_eq!(s.git(&["rev-parse", "refs/keyrot/verified"]).trim(), second);
    // Drop the first apply from history: the second lands on its grandparent.
    s.git(&["rebase", "-q", "--onto", &format!("{first}^"), &first]);
    let run = verify(&s, &[]).fails(1);
    run.stderr_has(&format!("error: history rewritten since {second}"));
    run.stderr_has("`git update-ref -d refs/keyrot/verified`");
    // Without the remembered tip, the chain still names the gap.
    s.git(&["update-ref", "-d", "refs/keyrot/verified"]);
    let (code, report) = verify_json(&s, &[]);
    assert_eq!(code, 1);
    let problems = last_problems(&report);
    assert!(
        problems.iter().any(|p| p.starts_with(&format!(
            "Keyrot-Previous names {first}, but the previous apply commit on the branch is none"
        ))),
        "{problems:?}"
    );
}

#[test]
fn an_amended_and_force_pushed_history_is_refused() {
    let (s, _, _) = two_applies();
    let remote = s.root.parent().unwrap().join("remote.git");
    let remote = remote.to_str().unwrap();
    s.git(&["clone", "-q", "--bare", s.root.to_str().unwrap(), remote]);
    s.git(&["remote", "add", "origin", remote]);
    s.git(&["fetch", "-q", "origin"]);
    verify(&s, &[]).ok();
    // Someone else amends the last apply commit and force-pushes it.
    let other = s.root.parent().unwrap().join("other");
    let other = other.to_str().unwrap();
    s.git(&["clone", "-q", remote, other]);
    let mut amend = Command::new("git");
    amend
        .args([
            "-C",
            other,
            "-c",
            "user.name=Mallory",
            "-c",
            "user.email=m@example.com",
        ])
        .args(["commit", "-q", "--amend", "-m", "keyrot apply: nothing to see"]);
    assert!(amend.status().unwrap().success());
    assert!(Command::new("git")
        .args(["-C", other, "push", "-q", "--force", "origin", "HEAD:main"])
        .status()
        .unwrap()
        .success());
    // The reviewer's clone takes the remote's word for it.
    s.git(&["fetch", "-q", "origin"]);
    s.git(&["reset", "-q", "--hard", "origin/main"]);
    verify(&s, &[]).fails(1).stderr_has("history rewritten since");
}

#[test]
fn log_says_who_and_refuses_a_key_that_never_existed() {
    let (s, _) = applied();
    let log = s.keyrot(&["log", "--json"]).ok().json();
    assert!(log
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["author"] == "Test Engineer <eng@example.com>"
            && e["signed"] == false
            && e["signature"] == "none"));
    let run = s.keyrot(&["log", "olld"]).fails(1);
    run.stderr_has("error: no key `olld` in the store or its history");
    assert_eq!(run.stdout, "");
    // A key deleted since still has its history.
    s.remove("keys/old.toml");
    s.commit("retire old");
    let entries = s.keyrot(&["log", "old", "--json"]).ok().json();
    assert_eq!(entries[0]["reason"], "retire old");
}
