//! Guarantees 1-3 of "What keyrot guarantees": an apply killed (SIGKILL) at any step
//! leaves the branch at the old or the new commit with `git fsck --strict` clean, and
//! the next apply converges; concurrent applies land exactly once; locks left by dead
//! processes never wedge the store; no secret is recorded without its synced file.

use std::fs;
use std::process::Command;

use crate::common::*;
use crate::plan::every_action_store;

/// Every step of an apply a test can stop it at, in order. The first three come
/// before the branch moves, the rest after.
const POINTS: [&str; 7] = [
    "apply-after-secrets",
    "apply-after-objects",
    "apply-before-commit",
    "apply-after-commit",
    "apply-after-promote",
    "apply-worktree-staged",
    "apply-after-worktree",
];

/// The state every finished apply of `every_action_store` must leave.
#[track_caller]
fn assert_applied_once(s: &Store, base: &str) {
    assert_eq!(
        s.git(&["rev-parse", "HEAD^"]).trim(),
        base,
        "exactly one apply commit on the base"
    );
    assert!(s
        .git(&["log", "-1", "--format=%s"])
        .starts_with("keyrot apply: 1 rotate, 1 revoke, 1 restrict, 1 expire"));
    assert_eq!(
        s.git(&["status", "--porcelain"]),
        "",
        "work tree and index match HEAD"
    );
    s.assert_fsck_clean();
    let journal = s.root.join(".git/keyrot/journal");
    assert!(!journal.exists(), "journal left behind");
    assert!(!s.root.join(".git/keyrot/lock").exists(), "lock left behind");
    // The recorded fingerprint is the delivered secret's.
    let secret = fs::read_to_string(s.secret_file("old")).expect("the rotated key's secret file");
    let committed = s.git(&["show", "HEAD:keys/old.toml"]);
    assert!(
        committed.contains(&sha256_hex(secret.trim_end().as_bytes())),
        "fingerprint/secret mismatch"
    );
    assert!(!s.secret_file("leaked").exists());
}

#[test]
fn sigkill_at_every_step_leaves_old_or_new_and_the_next_apply_converges() {
    for point in POINTS {
        let s = every_action_store();
        let base = s.head();
        s.kill_apply_at(point);

        // Right after the crash: old or new commit, nothing in between.
        s.assert_fsck_clean();
        let head = s.head();
        let landed = head != base;
        if landed {
            assert_eq!(s.git(&["rev-parse", "HEAD^"]).trim(), base, "{point}");
        }
        assert_eq!(
            landed,
            POINTS.iter().position(|p| *p == point).unwrap() >= 3,
            "{point}"
        );

        if point == "apply-after-commit" {
            // The work tree lags behind the commit until then, and plan says why.
            let plan = s.keyrot(&["plan", "--now", NOW]).ok();
            plan.stderr_has("an apply was interrupted");
        }
        // The next apply recovers (or rolls back) and converges.
        let next = s.apply().ok();
        assert_applied_once(&s, &base);
        assert!(
            next.stderr.contains("took over a stale lock"),
            "{point}: {}",
            next.stderr
        );
        if landed {
            assert!(
                next.stderr.contains("finished an interrupted apply"),
                "{point}: {}",
                next.stderr
            );
        } else if point == "apply-before-commit" {
            assert!(
                next.stderr.contains("rolled back an interrupted apply"),
                "{point}: {}",
                next.stderr
            );
        } else {
            // Killed before the journal: the dead apply's pending secret is deleted, never live.
            assert!(
                next.stderr.contains("pending secret file(s) of that dead apply"),
                "{point}: {}",
                next.stderr
            );
        }
        let pending: Vec<_> = fs::read_dir(&s.secrets)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".pending"))
            .collect();
        assert!(pending.is_empty(), "{point}: {pending:?}");
        // And it stays converged.
        let again = s.apply().ok();
        assert!(
            again.stdout.contains("No commit made"),
            "{point}: {}",
            again.stdout
        );
    }
}

#[test]
fn concurrent_applies_land_exactly_once() {
    let s = every_action_store();
    let base = s.head();
    // A short pause inside each apply makes them overlap on a busy machine too.
    let mut racers: Vec<Live> = (0..4)
        .map(|_| s.spawn_apply(&[("KEYROT_TEST_PAUSE", "apply-after-secrets:300")]))
        .collect();
    let codes: Vec<i32> = racers.iter_mut().map(|r| r.finish()).collect();
    assert!(codes.contains(&0), "{codes:?}");
    // The losers saw the lock (or, arriving after the winner, found nothing to do).
    for (r, code) in racers.iter().zip(&codes) {
        if *code != 0 {
            r.assert_stderr_has("locked by pid", "a racer that lost");
        }
    }
    for r in &racers {
        let err: Vec<&String> = r.seen.iter().filter(|(e, _)| *e).map(|(_, l)| l).collect();
        assert!(!err.iter().any(|l| l.contains("panicked")), "{err:?}");
    }
    assert_applied_once(&s, &base);
}

#[test]
fn a_lock_left_by_a_dead_process_is_taken_over() {
    let s = every_action_store();
    let base = s.head();
    // A pid that surely is not running: a child that has exited.
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let host = fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    fs::create_dir_all(s.root.join(".git/keyrot")).unwrap();
    fs::write(
        s.root.join(".git/keyrot/lock"),
        format!(
            "{{\"id\":\"deadbeef\",\"pid\":{dead},\"host\":\"{host}\",\"started\":\"2026-11-22T00:00:00Z\"}}"
        ),
    )
    .unwrap();
    let run = s.apply().ok();
    run.stderr_has("took over a stale lock");
    assert_applied_once(&s, &base);
}

#[test]
fn a_live_lock_is_refused_until_force_unlocked_by_id() {
    let s = every_action_store();
    let base = s.head();
    let host = fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    fs::create_dir_all(s.root.join(".git/keyrot")).unwrap();
    let me = std::process::id();
    fs::write(
        s.root.join(".git/keyrot/lock"),
        format!(
            "{{\"id\":\"cafe01\",\"pid\":{me},\"host\":\"{host}\",\"started\":\"2026-11-22T00:00:00Z\"}}"
        ),
    )
    .unwrap();
    let run = s.apply().fails(1);
    run.stderr_has(&format!("locked by pid {me}"));
    run.stderr_has("--force-unlock cafe01");
    assert_eq!(s.head(), base);
    assert!(s
        .keyrot(&["apply", "--force-unlock", "wrong"])
        .fails(1)
        .stderr
        .contains("not wrong"));
    s.keyrot(&["apply", "--force-unlock", "cafe01"]).ok();
    s.apply().ok();
    assert_applied_once(&s, &base);
}

#[test]
fn a_failed_commit_or_branch_move_applies_nothing_and_leaves_no_secret() {
    for point in ["apply-write-commit", "apply-move-branch"] {
        let s = every_action_store();
        let base = s.head();
        let mut live = s.spawn_apply(&[("KEYROT_TEST_FAIL", point)]);
        assert_eq!(live.finish(), 1, "{point}");
        live.assert_stderr_has("injected failure", point);
        assert_eq!(s.head(), base, "{point}: no change without its commit");
        assert_eq!(s.git(&["status", "--porcelain"]), "", "{point}");
        let files: Vec<_> = fs::read_dir(&s.secrets)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(
            files.is_empty(),
            "{point}: no secret file from a failed apply: {files:?}"
        );
        assert!(!s.root.join(".git/keyrot/journal").exists(), "{point}");
        // Nothing is wedged: the next apply works.
        s.apply().ok();
        assert_applied_once(&s, &base);
    }
}

/// The new key files are written beside the old ones, then renamed over them: a file
/// someone saves in between keeps their edit, and the apply says so.
#[test]
fn a_key_file_saved_while_apply_updates_the_work_tree_keeps_the_edit() {
    let s = every_action_store();
    let base = s.head();
    let mut live = s.spawn_apply(&[("KEYROT_TEST_PAUSE", "apply-worktree-staged:3000")]);
    live.wait_for(true, "the pause before the renames", |l| {
        l.starts_with("failpoint apply-worktree-staged")
    });
    let mine = s.read("keys/old.toml").replace("owner =", "# my edit\nowner =");
    s.write("keys/old.toml", &mine);
    assert_eq!(live.finish(), 1);
    live.assert_stderr_has(
        "keys/old.toml changed since the apply began",
        "a save between writes and renames",
    );
    assert_eq!(s.read("keys/old.toml"), mine, "the edit is kept");
    assert_ne!(s.head(), base, "the commit landed");
    let leftovers: Vec<_> = fs::read_dir(s.path("keys"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".keyrot-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // Every other key file is the committed version; this one's index entry waits,
    // with the journal, for the apply to be finished once the edit is dealt with.
    let status = s.git(&["status", "--porcelain"]);
    assert_eq!(status.trim(), "MM keys/old.toml", "{status}");
    assert!(s.root.join(".git/keyrot/journal").exists());
    s.git(&["checkout", "--", "keys/old.toml"]);
    let next = s.apply().ok();
    next.stderr_has("finished an interrupted apply");
    assert_applied_once(&s, &base);
}

/// A journal keyrot cannot read (a truncated write by hand, a disk error) stops the
/// next apply before it does anything, naming the file and, as its hint, what to do:
/// each of the two journals has its own advice.
#[test]
fn an_unreadable_journal_stops_apply_with_what_to_do() {
    let s = Store::with_keys(&[("old", &key("[\"read\"]", "2026-08-01T00:00:00Z", ""))]);
    let commits = s.commit_count();
    let dir = s.root.join(".git/keyrot");
    std::fs::create_dir_all(&dir).unwrap();
    for (file, hint) in [
        (
            "journal",
            "hint: inspect it; if no apply is running and the store is as it should be, delete it",
        ),
        (
            "services",
            "hint: check the keys it names at their services, then delete it",
        ),
    ] {
        std::fs::write(dir.join(file), "{not json").unwrap();
        s.apply()
            .fails(1)
            .stderr_has(&format!("keyrot/{file}: unreadable "))
            .stderr_has(hint);
        std::fs::remove_file(dir.join(file)).unwrap();
    }
    assert_eq!(s.commit_count(), commits);
    s.apply().ok();
    assert_eq!(s.commit_count(), commits + 1);
}
