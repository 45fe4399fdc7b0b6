//! Providers: rotations that reach the service, through the example exec provider
//! `examples/providers/ledger` (a stand-in service keeping, per key, the fingerprints it
//! honours in a folder the test reads).

use std::fs;
use std::path::PathBuf;

use crate::common::*;

struct Ledger {
    s: Store,
    dir: PathBuf,
}

const OLD_FP: char = 'a';

impl Ledger {
    /// `k1` (service ledger: rotate and restrict) and `k2` (another service: rotate).
    fn new() -> Ledger {
        let s = Store::new();
        s.install_ledger("1s", "");
        s.write("owners.toml", OWNERS);
        s.write(
            "keys/k1.toml",
            &key(
                "[\"read\", \"withdraw\"]",
                "2026-07-01T00:00:00Z",
                &format!("fingerprint = \"{}\"\n", fp(OLD_FP)),
            )
            .replace("binance", "ledger")
            .replace("ip_allowlist = [\"203.0.113.7/32\"]\n", ""),
        );
        s.write("keys/k2.toml", &key("[\"read\"]", "2026-07-01T00:00:00Z", ""));
        s.commit("keys and the ledger provider");
        let dir = s.root.parent().unwrap().join("ledger");
        Ledger { s, dir }
    }

    fn apply(&self, env: &[(&str, &str)]) -> Run {
        let secrets = self.s.secrets.to_str().unwrap().to_string();
        let dir = self.dir.to_str().unwrap().to_string();
        let mut all = vec![("LEDGER_DIR", dir.as_str())];
        all.extend_from_slice(env);
        self.s
            .keyrot_env(&["apply", "--yes", "--now", NOW, "--secrets-dir", &secrets], &all)
    }

    /// Starts an apply, pauses it at `point` and kills it there (SIGKILL).
    fn kill_at(&self, point: &str) {
        let dir = self.dir.to_str().unwrap().to_string();
        let pause = format!("{point}:60000");
        let mut live = self
            .s
            .spawn_apply(&[("LEDGER_DIR", &dir), ("KEYROT_TEST_PAUSE", &pause)]);
        live.wait_for(true, point, |line| {
            line.starts_with(&format!("failpoint {point}"))
        });
        live.signal("KILL");
        assert_ne!(live.wait_exit(), 0);
    }

    fn table(&self, id: &str) -> String {
        fs::read_to_string(self.dir.join(id)).unwrap_or_default()
    }

    fn calls(&self) -> Vec<String> {
        fs::read_to_string(self.dir.join("calls"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn committed_fp(&self, id: &str) -> Option<String> {
        let text = self.s.git(&["show", &format!("HEAD:keys/{id}.toml")]);
        let v: toml::Table = text.parse().unwrap();
        v.get("fingerprint").and_then(|f| f.as_str()).map(str::to_string)
    }
}

#[test]
fn a_rotation_goes_create_set_test_finish_and_the_service_honours_the_new_secret() {
    let l = Ledger::new();
    l.apply(&[]).ok();
    assert_eq!(
        l.calls(),
        ["k1 restrict", "k1 create", "k1 set", "k1 test", "k1 finish"]
    );
    let new = l.committed_fp("k1").unwrap();
    assert_ne!(new, fp(OLD_FP));
    assert_eq!(l.table("k1"), format!("restricted withdraw\n{new} current\n"));
    // The fingerprint is the delivered secret's.
    let secret = fs::read_to_string(l.s.secret_file("k1")).unwrap();
    assert_eq!(
        format!("sha256:{}", sha256_hex(secret.trim_end().as_bytes())),
        new
    );
    assert!(l.s.read("keys/k1.toml").contains("permissions = [\"read\"]"));
    // The provider never saw another key.
    assert!(l.calls().iter().all(|c| c.starts_with("k1 ")));
}

#[test]
fn a_failed_step_rolls_the_key_back_and_the_others_go_on() {
    for (env, why) in [
        ("LEDGER_FAIL", "refused: the ledger refuses"),
        ("LEDGER_EXIT", "exited with status 3: ledger: crashed during"),
        ("LEDGER_GARBAGE", "did not answer one JSON object"),
        ("LEDGER_HANG", "timed out after 1s and was stopped"),
    ] {
        for step in ["create", "set", "test"] {
            let l = Ledger::new();
            let base = l.s.head();
            let run = l.apply(&[(env, step)]).fails(1);
            let what = format!("{env}={step}");
            assert!(
                run.stderr.contains(&format!(
                    "error: key k1: rotate, restrict not applied: provider providers/ledger ({step}): {why}"
                )),
                "{what}: {}",
                run.stderr
            );
            // k1's file is unchanged; k2 (no provider) was rotated in the one commit.
            assert_eq!(l.s.git(&["rev-parse", "HEAD^"]).trim(), base, "{what}");
            assert_eq!(l.committed_fp("k1"), Some(fp(OLD_FP)), "{what}");
            assert!(l.committed_fp("k2").is_some(), "{what}");
            let msg = l.s.git(&["log", "-1", "--format=%B"]);
            assert!(
                msg.starts_with("keyrot apply: 1 rotate, 0 revoke, 0 restrict, 0 expire"),
                "{what}: {msg}"
            );
            assert!(msg.contains("\nfailed k1 [max-age,least-privilege] rotate, restrict not applied: provider providers/ledger"), "{what}: {msg}");
            assert!(msg.trim_end().ends_with("Keyrot-Failed: k1"), "{what}: {msg}");
            // Whatever reached the service was taken back: it honours no new secret.
            assert!(!l.table("k1").contains(" pending"), "{what}: {}", l.table("k1"));
            if step != "create" {
                assert_eq!(l.calls().last().unwrap(), "k1 revoke", "{what}");
            }
            assert!(!l.s.secret_file("k1").exists(), "{what}");
            assert!(!l.s.root.join(".git/keyrot/services").exists(), "{what}");
            assert_eq!(l.s.git(&["status", "--porcelain"]), "", "{what}");
            let log = l.s.keyrot(&["log", "k1", "--json"]).ok().json();
            assert_eq!(log[0]["action"], "failed", "{what}");
        }
    }
}

#[test]
fn when_every_change_fails_there_is_no_commit() {
    let l = Ledger::new();
    l.s.remove("keys/k2.toml");
    l.s.commit("only k1");
    let base = l.s.head();
    let run = l.apply(&[("LEDGER_FAIL", "restrict")]).fails(1);
    run.stdout_has("Nothing applied");
    assert_eq!(l.s.head(), base);
    assert_eq!(l.calls(), ["k1 restrict"]);
}

#[test]
fn a_failed_finish_is_reported_and_finished_by_the_next_apply() {
    let l = Ledger::new();
    let run = l.apply(&[("LEDGER_FAIL", "finish")]).fails(1);
    run.stderr_has("error: key k1: finish not applied");
    run.stderr_has("the next keyrot apply retries this");
    let new = l.committed_fp("k1").unwrap();
    assert_eq!(l.table("k1"), format!("restricted withdraw\n{new} pending\n"));
    let next = l.apply(&[]).ok();
    assert!(
        next.stderr
            .contains("finished the interrupted rotation of k1 at its service"),
        "{}",
        next.stderr
    );
    assert_eq!(l.table("k1"), format!("restricted withdraw\n{new} current\n"));
}

#[test]
fn sigkill_between_set_and_the_commit_is_rolled_back_at_the_service() {
    let l = Ledger::new();
    let base = l.s.head();
    l.kill_at("apply-after-set");
    assert_eq!(l.s.head(), base);
    let orphan = l.table("k1");
    assert!(
        orphan.contains(" pending"),
        "the service holds a secret the store does not know: {orphan}"
    );
    let pending_fp = orphan
        .lines()
        .last()
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_string();

    let next = l.apply(&[]).ok();
    assert!(
        next.stderr.contains(
            "took back the new secret of k1 at its service: the interrupted apply never committed it"
        ),
        "{}",
        next.stderr
    );
    let new = l.committed_fp("k1").unwrap();
    assert_ne!(new, pending_fp);
    // The restrict, asked again by the second apply, is recorded once: the example
    // provider's steps are safe to repeat.
    assert_eq!(l.table("k1"), format!("restricted withdraw\n{new} current\n"));
    assert!(!l.s.root.join(".git/keyrot/services").exists());
    l.s.assert_fsck_clean();
}

#[test]
fn sigkill_after_the_commit_is_finished_by_the_next_apply() {
    let l = Ledger::new();
    l.kill_at("apply-after-commit");
    let new = l.committed_fp("k1").unwrap();
    assert_eq!(l.table("k1"), format!("restricted withdraw\n{new} pending\n"));
    let next = l.apply(&[]).ok();
    next.stderr_has("finished the interrupted rotation of k1");
    assert_eq!(l.table("k1"), format!("restricted withdraw\n{new} current\n"));
    let secret = fs::read_to_string(l.s.secret_file("k1")).unwrap();
    assert_eq!(
        format!("sha256:{}", sha256_hex(secret.trim_end().as_bytes())),
        new
    );
}

#[test]
fn revoke_and_expire_reach_the_service() {
    let l = Ledger::new();
    l.apply(&[]).ok();
    let first = l.committed_fp("k1").unwrap();
    // A day and more later the old secret's grace has ended; then the key leaks.
    let later = "2026-11-24T20:00:00Z";
    let secrets = l.s.secrets.to_str().unwrap().to_string();
    let dir = l.dir.to_str().unwrap().to_string();
    let env = [("LEDGER_DIR", dir.as_str())];
    l.s.write(
        "keys/k2.toml",
        &l.s.read("keys/k2.toml").replace("binance", "ledger"),
    );
    l.s.commit("k2 moves to the ledger");
    l.s.keyrot_env(
        &["apply", "--yes", "--now", later, "--secrets-dir", &secrets],
        &env,
    )
    .ok();
    assert!(l.calls().contains(&"k1 expire".to_string()), "{:?}", l.calls());
    assert!(!l.table("k1").contains(&fp(OLD_FP)));
    l.s.write(
        "keys/k1.toml",
        &(l.s.read("keys/k1.toml") + "compromised = true\n"),
    );
    l.s.commit("k1 leaked");
    l.s.keyrot_env(
        &["apply", "--yes", "--now", later, "--secrets-dir", &secrets],
        &env,
    )
    .ok();
    assert_eq!(l.calls().last().unwrap(), "k1 revoke");
    assert!(l.table("k1").ends_with("revoked\n"), "{}", l.table("k1"));
    assert!(!l.table("k1").contains(&first));
}

#[test]
fn an_uncommitted_provider_is_never_run() {
    let l = Ledger::new();
    l.s.write("providers/ledger", "#!/bin/sh\necho '{\"ok\": true}'\n");
    let run = l.apply(&[]).fails(1);
    run.stderr_has("uncommitted changes: providers/ledger");
    assert!(l.calls().is_empty());
}

#[test]
fn bad_provider_settings_name_the_line() {
    let s = Store::new();
    let shipped = s.read("keyrot.toml");
    // The first line appended after the shipped template's.
    let at = shipped.lines().count() + 1;
    s.write(
        "keyrot.toml",
        &(shipped
            + "\n[service.a]\nprovider = \"exec:/usr/bin/env\"\n[service.b]\nprovider = \"vault\"\n[service.c]\nprovider = \"postgres\"\n[service.d]\ntimeout = \"never\"\n"),
    );
    let err = s.keyrot(&["check"]).fails(1).stderr;
    for expected in [
        format!(
            "keyrot.toml:{}:12: exec provider `/usr/bin/env` must be a relative path",
            at + 2
        ),
        format!(
            "keyrot.toml:{}:12: provider must be \"postgres\" or \"exec:<path in the store>\"",
            at + 4
        ),
        format!(
            "keyrot.toml:{}:12: provider = \"postgres\" needs a [service.c.postgres] table",
            at + 6
        ),
        format!("keyrot.toml:{}:11: service.d.timeout", at + 8),
    ] {
        assert!(err.contains(&expected), "missing `{expected}` in:\n{err}");
    }
}

#[test]
fn a_failed_revoke_or_expire_leaves_the_key_as_it_was() {
    let l = Ledger::new();
    l.apply(&[]).ok();
    let later = "2026-11-24T20:00:00Z";
    let secrets = l.s.secrets.to_str().unwrap().to_string();
    let dir = l.dir.to_str().unwrap().to_string();
    let before = l.s.read("keys/k1.toml");
    assert!(before.contains("[[previous]]"));
    let run = l.s.keyrot_env(
        &["apply", "--yes", "--now", later, "--secrets-dir", &secrets],
        &[("LEDGER_DIR", &dir), ("LEDGER_FAIL", "expire")],
    );
    let run = run.fails(1);
    assert!(
        run.stderr
            .contains("error: key k1: expire not applied: provider providers/ledger (expire): refused"),
        "{}",
        run.stderr
    );
    assert_eq!(
        l.s.read("keys/k1.toml"),
        before,
        "the grace entry stays until the service expires it"
    );

    l.s.write("keys/k1.toml", &format!("compromised = true\n{before}"));
    l.s.commit("k1 leaked");
    let run = l.s.keyrot_env(
        &["apply", "--yes", "--now", later, "--secrets-dir", &secrets],
        &[("LEDGER_DIR", &dir), ("LEDGER_FAIL", "revoke")],
    );
    let run = run.fails(1);
    run.stderr_has("error: key k1: revoke");
    assert!(
        !l.s.read("keys/k1.toml").contains("status = \"revoked\""),
        "the store must not claim a revoke the service refused"
    );
    // Once the service answers, the next apply revokes.
    l.s.keyrot_env(
        &["apply", "--yes", "--now", later, "--secrets-dir", &secrets],
        &[("LEDGER_DIR", &dir)],
    )
    .ok();
    assert!(l.s.read("keys/k1.toml").contains("status = \"revoked\""));
    assert!(l.table("k1").ends_with("revoked\n"));
}

#[test]
fn check_reports_a_provider_that_is_not_an_executable_in_the_store() {
    let l = Ledger::new();
    l.s.keyrot(&["check"]).ok();
    std::fs::remove_file(l.s.path("providers/ledger")).unwrap();
    l.s.write("providers/ledger", "not executable");
    let run = l.s.keyrot(&["check"]).fails(1);
    assert!(
        run.stderr.contains(
            "keyrot.toml: service ledger: provider providers/ledger is not an executable file in the store"
        ),
        "{}",
        run.stderr
    );
}

#[test]
fn the_runner_exits_1_when_a_change_failed_at_its_service() {
    let l = Ledger::new();
    let secrets = l.s.secrets.to_str().unwrap().to_string();
    let dir = l.dir.to_str().unwrap().to_string();
    let run = l.s.keyrot_env(
        &["run", "--once", "--apply", "--secrets-dir", &secrets],
        &[("LEDGER_DIR", &dir), ("LEDGER_FAIL", "set")],
    );
    let run = run.fails(1);
    run.stderr_has("error: key k1: rotate, restrict not applied");
    assert!(
        run.stdout.contains("applied, commit"),
        "k2 was applied: {}",
        run.stdout
    );
}

#[test]
fn a_rollback_that_fails_is_retried_by_the_next_apply_before_anything_else() {
    let l = Ledger::new();
    let run = l.apply(&[("LEDGER_FAIL", "test,revoke")]).fails(1);
    run.stderr_has("rolling back also failed");
    assert!(
        l.s.root.join(".git/keyrot/services").exists(),
        "the intent stays journaled"
    );
    let orphan = l.table("k1");
    let orphan_fp = orphan
        .lines()
        .last()
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    assert!(orphan.ends_with(" pending\n"), "{orphan}");
    // While the service still refuses, nothing else happens.
    let stuck = l.apply(&[("LEDGER_FAIL", "revoke")]).fails(1);
    stuck.stderr_has("cannot be completed yet");
    let next = l.apply(&[]).ok();
    next.stderr_has("took back the new secret of k1");
    assert!(!l.table("k1").contains(&orphan_fp));
    assert!(
        !next.stderr.contains("pending secret file(s) left"),
        "{}",
        next.stderr
    );
    assert!(!l.s.root.join(".git/keyrot/services").exists());
}

/// Commits `script` as the ledger service's provider, executable.
fn with_provider(l: &Ledger, script: &str) {
    l.s.write("providers/ledger", script);
    let path = l.s.path("providers/ledger");
    let mut perms = fs::metadata(&path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    fs::set_permissions(&path, perms).unwrap();
    l.s.commit("another provider");
}

#[test]
fn a_provider_committed_as_a_symlink_out_of_the_store_is_never_run() {
    let l = Ledger::new();
    let outside = l.s.root.parent().unwrap().join("outside-provider");
    let marker = l.s.root.parent().unwrap().join("outside-ran");
    fs::write(
        &outside,
        format!(
            "#!/bin/sh\ntouch '{}'\necho '{{\"ok\": true}}'\n",
            marker.display()
        ),
    )
    .unwrap();
    fs::remove_file(l.s.path("providers/ledger")).unwrap();
    std::os::unix::fs::symlink(&outside, l.s.path("providers/ledger")).unwrap();
    fs::set_permissions(&outside, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    l.s.commit("a provider that points out of the store");
    let check = l.s.keyrot(&["check"]).fails(1);
    check.stderr_has("provider providers/ledger");
    let run = l.apply(&[]).fails(1);
    assert!(
        run.stderr
            .contains("providers/ledger is committed as a symbolic link"),
        "{}",
        run.stderr
    );
    assert!(!marker.exists(), "apply ran what check refused");
}

#[test]
fn a_provider_hidden_from_git_status_runs_as_committed() {
    for hide in ["--skip-worktree", "--assume-unchanged"] {
        let l = Ledger::new();
        let marker = l.s.root.parent().unwrap().join("edited-ran");
        let edited = format!(
            "#!/bin/sh\ntouch '{}'\necho '{{\"ok\": true}}'\n",
            marker.display()
        );
        l.s.git(&["update-index", hide, "providers/ledger"]);
        fs::write(l.s.path("providers/ledger"), edited).unwrap();
        assert_eq!(l.s.git(&["status", "--porcelain"]), "", "{hide}");
        l.apply(&[]).ok();
        assert!(!marker.exists(), "{hide}: the uncommitted provider ran");
        // The committed ledger did the rotation.
        assert_eq!(
            l.calls(),
            ["k1 restrict", "k1 create", "k1 set", "k1 test", "k1 finish"],
            "{hide}"
        );
    }
}

#[test]
fn a_providers_detached_descendants_do_not_outlast_its_timeout() {
    // One hangs; one answers at once but leaves a process in a session of its own
    // holding its output. Each grandchild writes its pid so the test can see it gone.
    for (name, tail) in [("hangs", "sleep 300\n"), ("answers", "echo '{\"ok\": true}'\n")] {
        let l = Ledger::new();
        let pidfile = l.s.root.parent().unwrap().join("grandchild.pid");
        with_provider(
            &l,
            &format!(
                "#!/bin/sh\nsetsid sh -c 'echo $$ > \"{}\"; exec sleep 300' &\nsleep 0.2\n{tail}",
                pidfile.display()
            ),
        );
        let started = std::time::Instant::now();
        let run = l.apply(&[]).fails(1);
        // Not a speed target: without the fix this apply takes the grandchild's 300 s.
        assert!(
            started.elapsed().as_secs() < 60,
            "{name}: {:?}",
            started.elapsed()
        );
        assert!(
            run.stderr.contains("timed out after 1s"),
            "{name}: {}",
            run.stderr
        );
        let pid = fs::read_to_string(&pidfile).unwrap();
        let proc_dir = PathBuf::from(format!("/proc/{}", pid.trim()));
        // A killed process lingers until its parent (init) reaps it.
        let gone = (0..100).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(50));
            fs::read_to_string(proc_dir.join("stat")).map_or(true, |s| s.contains(") Z "))
        });
        assert!(gone, "{name}: the detached grandchild {} still runs", pid.trim());
    }
}

/// Runs the example ledger once, as keyrot would, with a request of `step`.
fn ledger_step(dir: &std::path::Path, step: &str, fingerprint: Option<&str>, extra: &str) -> String {
    use std::io::Write;
    let fp_field = fingerprint.map_or(String::new(), |f| format!("\"fingerprint\":\"{f}\","));
    let req = format!(
        "{{{fp_field}\"key\":{{\"id\":\"k1\",\"service\":\"ledger\"}},{extra}\"step\":\"{step}\"}}\n"
    );
    let mut child =
        std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/providers/ledger"))
            .env("LEDGER_DIR", dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
    child.stdin.take().unwrap().write_all(req.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{step}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn every_step_of_the_example_provider_is_safe_to_repeat() {
    let tmp = tempfile::TempDir::new().unwrap();
    let dir = tmp.path();
    let table = || fs::read_to_string(dir.join("k1")).unwrap_or_default();
    let (old, new) = (fp('a'), fp('b'));
    // The key's first secret, then a rotation to `new`; each step twice, as keyrot
    // may ask after a crash: the second call must change nothing.
    let steps: [(&str, Option<&str>, &str); 9] = [
        ("set", Some(&old), ""),
        ("finish", Some(&old), ""),
        ("create", None, ""),
        ("set", Some(&new), ""),
        ("test", Some(&new), ""),
        ("finish", Some(&new), ""),
        ("restrict", None, "\"remove\":[\"withdraw\"],"),
        ("expire", Some(&old), ""),
        ("revoke", None, ""),
    ];
    let mut after_each = Vec::new();
    for (step, fingerprint, extra) in steps {
        assert!(
            ledger_step(dir, step, fingerprint, extra).contains("\"ok\": true"),
            "{step}"
        );
        let once = table();
        assert!(
            ledger_step(dir, step, fingerprint, extra).contains("\"ok\": true"),
            "{step} again"
        );
        assert_eq!(table(), once, "repeating {step} changed the ledger");
        after_each.push(once);
    }
    assert_eq!(after_each[5], format!("{old} previous\n{new} current\n"));
    assert_eq!(after_each[8], "restricted withdraw\nrevoked\n");
    // Taking back one secret (a rotation rolled back) is as safe to repeat.
    let tmp = tempfile::TempDir::new().unwrap();
    ledger_step(tmp.path(), "set", Some(&new), "");
    ledger_step(tmp.path(), "revoke", Some(&new), "");
    ledger_step(tmp.path(), "revoke", Some(&new), "");
    assert_eq!(fs::read_to_string(tmp.path().join("k1")).unwrap(), "");
    // finish of a secret never set is refused, not recorded.
    assert!(ledger_step(tmp.path(), "finish", Some(&old), "").contains("\"ok\": false"));
}

/// A provider whose `create` answers `secret`, and every other step `ok`.
fn creates(secret: &str) -> String {
    format!(
        "#!/bin/sh\ncase \"$(cat)\" in\n  *'\"step\":\"create\"'*) echo '{{\"ok\": true, \"secret\": \"{secret}\"}}' ;;\n  *) echo '{{\"ok\": true}}' ;;\nesac\n"
    )
}

#[test]
fn a_weak_secret_from_a_provider_is_refused_naming_the_provider() {
    for (answer, why) in [
        (
            "password",
            "8 characters long, shorter than the service's minimum of 16",
        ),
        (
            "aaaaaaaaaaaaaaaaaaaaaaaa",
            "less than the service's minimum of 48",
        ),
    ] {
        let l = Ledger::new();
        with_provider(&l, &creates(answer));
        let base = l.s.head();
        let run = l.apply(&[]).fails(1);
        assert!(
            run.stderr
                .contains("provider providers/ledger (create): returned an unusable secret")
                && run.stderr.contains(why),
            "{answer}: {}",
            run.stderr
        );
        assert!(
            !run.stderr.contains(answer) && !run.stdout.contains(answer),
            "{answer} was shown"
        );
        // k1 failed alone; k2 (another service) was rotated.
        assert!(!l
            .s
            .git(&["diff", &base, "HEAD", "--", "keys/k1.toml"])
            .contains("fingerprint"));
    }
    // A service that says its secrets are short.
    let l = Ledger::new();
    l.s.write(
        "keyrot.toml",
        &l.s.read("keyrot.toml").replace(
            "timeout = \"1s\"\n",
            "timeout = \"1s\"\nmin_secret_length = 8\nmin_secret_bits = 0\n",
        ),
    );
    with_provider(&l, &creates("password"));
    l.apply(&[]).ok();
    let secret = fs::read_to_string(l.s.secret_file("k1")).unwrap();
    assert_eq!(secret, "password\n");
    let run = l.s.keyrot(&["check"]);
    assert!(!run.stderr.contains("min_secret"), "{}", run.stderr);
}

#[test]
fn look_alike_permissions_are_refused_wherever_they_are_written() {
    let s = Store::with_keys(&[(
        "k",
        &key("[\"read\", \"withdr\u{430}w\"]", "2025-01-01T00:00:00Z", ""),
    )]);
    let run = s.keyrot(&["check"]).fails(1);
    run.stderr_has("keys/k.toml:3:");
    run.stderr_has("not a valid permission name");
    s.write("keys/k.toml", &key("[\"read\"]", "2025-01-01T00:00:00Z", ""));
    s.write(
        "keyrot.toml",
        "[service.binance]\npermissions = [\"read\", \"Trade\"]\n",
    );
    let run = s.keyrot(&["check"]).fails(1);
    run.stderr_has("[service.binance] permissions: `Trade`");
    s.write("keyrot.toml", "");
    s.write(
        "policies/cut.rhai",
        "fn evaluate(key) {\n    restrict(\"withdr\u{430}w\", \"x\")\n}\n",
    );
    let run = s.keyrot(&["plan", "--now", NOW]).fails(1);
    run.stderr_has("policies/cut.rhai:2:");
    assert!(
        run.stderr
            .contains("restrict: `withdr\\u{430}w` is not a valid permission name"),
        "{}",
        run.stderr
    );
}

#[test]
fn an_apply_commit_with_a_failed_key_verifies_and_an_unfailed_claim_does_not() {
    let l = Ledger::new();
    l.apply(&[("LEDGER_FAIL", "create")]).fails(1);
    let msg = l.s.git(&["log", "-1", "--format=%B"]);
    assert!(msg.contains("Keyrot-Failed: k1"), "{msg}");
    // Re-derived: k2 rotated, k1 unchanged as Keyrot-Failed says.
    l.s.keyrot(&["audit", "verify"]).ok();
    // Claiming k1 failed while changing it anyway is named.
    l.s.write(
        "keys/k1.toml",
        &l.s.read("keys/k1.toml")
            .replace("\"read\", \"withdraw\"", "\"read\""),
    );
    l.s.git(&["add", "-A"]);
    l.s.git(&["commit", "-q", "--amend", "--no-edit"]);
    // (The amend is itself a rewrite of the verified history; forget that to see the
    // commit's own problem.)
    l.s.git(&["update-ref", "-d", "refs/keyrot/verified"]);
    let run = l.s.keyrot(&["audit", "verify"]).fails(1);
    assert!(
        run.stdout
            .contains("keys/k1.toml changed, but Keyrot-Failed says its actions failed"),
        "{}{}",
        run.stdout,
        run.stderr
    );
}

#[test]
fn a_signature_that_cannot_be_made_rolls_back_at_the_service() {
    let l = Ledger::new();
    l.s.write(
        "keyrot.toml",
        &l.s.read("keyrot.toml").replace("sign = false", "sign = true"),
    );
    l.s.commit("every apply signed");
    let base = l.s.head();
    // A signing key that exists, and a signing program that fails: the apply gets as
    // far as its commit, after the ledger was asked to rotate.
    let key = l.s.root.parent().unwrap().join("signing-key");
    fs::write(&key, "not really a key\n").unwrap();
    l.s.git(&["config", "gpg.format", "ssh"]);
    l.s.git(&["config", "user.signingKey", key.to_str().unwrap()]);
    l.s.git(&["config", "gpg.ssh.program", "false"]);
    let run = l.apply(&[]).fails(1);
    run.stderr_has("cannot sign the apply commit");
    assert_eq!(l.s.head(), base);
    assert!(l.calls().contains(&"k1 create".to_string()), "{:?}", l.calls());
    assert_eq!(l.calls().last().unwrap(), "k1 revoke");
    assert!(!l.table("k1").contains(" pending"), "{}", l.table("k1"));
    assert!(!l.s.secret_file("k1").exists());
    assert!(!l.s.secret_file("k2").exists());
    assert_eq!(l.s.git(&["status", "--porcelain"]), "");
}

#[test]
fn a_shared_apply_killed_before_its_push_leaves_nothing_orphaned_at_the_service() {
    let l = Ledger::new();
    // The store shared through a bare remote; a runner clones it.
    l.s.write(
        "keyrot.toml",
        &format!("{}\n[remote]\nname = \"origin\"\n", l.s.read("keyrot.toml")),
    );
    l.s.commit("shared");
    let remote = l.s.root.parent().unwrap().join("remote.git");
    l.s.git(&["clone", "-q", "--bare", ".", remote.to_str().unwrap()]);
    l.s.git(&["remote", "add", "origin", remote.to_str().unwrap()]);
    let runner = Store::bare();
    l.s.git(&[
        "clone",
        "-q",
        remote.to_str().unwrap(),
        runner.root.to_str().unwrap(),
    ]);
    let dir = l.dir.to_str().unwrap().to_string();
    // Killed after the ledger was given k1's new secret, before the push.
    let mut live = runner.spawn_apply(&[
        ("LEDGER_DIR", &dir),
        ("KEYROT_TEST_PAUSE", "apply-before-commit:60000"),
    ]);
    live.wait_for(true, "the pause", |line| {
        line.starts_with("failpoint apply-before-commit")
    });
    live.signal("KILL");
    live.wait_exit();
    assert!(l.table("k1").contains(" pending"), "{}", l.table("k1"));
    // Meanwhile k1 is marked compromised and pushed: the prepared commit cannot land.
    l.s.git(&["pull", "-q", "origin", "main"]);
    l.s.write(
        "keys/k1.toml",
        &format!("{}compromised = true\n", l.s.read("keys/k1.toml")),
    );
    l.s.commit("k1 leaked");
    l.s.git(&["push", "-q", "origin", "main"]);
    let lease = runner.keyrot(&["lease", "--json"]).ok().json();
    runner.keyrot(&["unlock", lease["id"].as_str().unwrap()]).ok();
    // The next run takes the new secret back at the service, then applies the revoke.
    let run = runner.keyrot_env(
        &[
            "apply",
            "--yes",
            "--now",
            NOW,
            "--secrets-dir",
            runner.secrets.to_str().unwrap(),
        ],
        &[("LEDGER_DIR", &dir)],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    run.stderr_has("took back the new secret of k1 at its service");
    assert!(!l.table("k1").contains(" pending"), "{}", l.table("k1"));
    assert!(l.calls().contains(&"k1 revoke".to_string()), "{:?}", l.calls());
    assert_eq!(
        runner.git(&["rev-parse", "HEAD"]).trim(),
        l.s.git(&["ls-remote", "origin", "main"])
            .split_whitespace()
            .next()
            .unwrap()
    );
    let head = runner.git(&["log", "-1", "--format=%B"]);
    assert!(head.contains("revoke k1 [compromised]"), "{head}");
}
