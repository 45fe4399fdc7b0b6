//! The benchmark's tools, run small in CI so they cannot rot: the store generator and
//! `examples/bench.sh` (with the test build's binaries and tiny sizes).

use std::path::PathBuf;
use std::process::Command;

use crate::common::*;

/// `target/<profile>/examples`, where a plain `cargo test` builds the examples (a
/// filtered `cargo test --test integration` may not: run `cargo build --examples`).
fn examples_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join("examples")
}

fn gen_store(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new(examples_dir().join("gen_store"))
        .args(args)
        .arg(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("run gen_store (built by cargo test)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_generator_makes_a_valid_realistic_deterministic_store() {
    let s = Store::bare();
    gen_store(&s.root, &["--keys", "400"]);
    s.keyrot(&["check"]).ok();
    assert_eq!(s.git(&["status", "--porcelain"]), "");
    let plan = s
        .keyrot(&["plan", "--json", "--now", "2026-11-22T00:00:00Z"])
        .ok()
        .json();
    for kind in ["rotate", "revoke", "restrict", "expire", "warn"] {
        assert!(
            plan["summary"][kind].as_u64().unwrap() > 0,
            "no {kind}: {}",
            plan["summary"]
        );
    }
    let other = Store::bare();
    gen_store(&other.root, &["--keys", "400"]);
    assert_eq!(
        s.git(&["rev-parse", "HEAD^{tree}"]),
        other.git(&["rev-parse", "HEAD^{tree}"]),
        "same arguments, same store"
    );
}

#[test]
fn the_bench_script_runs_end_to_end() {
    let s = Store::bare();
    let work = s.root.parent().unwrap().join("bench");
    let out = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/bench.sh"))
        .env("QUICK", "1")
        .env("BENCH_DIR", &work)
        .env("KEYROT_BIN", env!("CARGO_BIN_EXE_keyrot"))
        .env("EXAMPLES_BIN", examples_dir())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for row in [
        "| plan --json, 200 keys |",
        "| plan --json with [rollout], 200 keys |",
        "| 20 revokes at a provider answering in 0.01s, parallelism 10 |",
        "| 20 rotations delivered to OpenBao",
        "| apply, 50 rotations",
        "| log KEY, 5 apply commits |",
        "| check, empty store |",
        "| report, 200 keys (page ",
        "| scan, work tree of ",
        "| scan --git, ",
        "| scan --staged, one staged file in ",
        "| usage import, 2000 records ",
        "watch key edit -> plan (--json):",
        "watch policy edit -> plan (text):",
    ] {
        assert!(stdout.contains(row), "missing `{row}` in\n{stdout}");
    }
}

#[test]
fn long_runs_draw_no_progress_bar_off_a_terminal() {
    let s = Store::bare();
    gen_store(&s.root, &["--keys", "3000"]);
    let plan = s.keyrot(&["plan", "--now", "2026-11-22T00:00:00Z"]).ok();
    assert!(plan.stderr.is_empty(), "{}", plan.stderr);
    assert!(plan.stdout.contains("Plan: "));
}

#[test]
fn a_large_apply_writes_one_pack_and_leaves_a_consistent_store() {
    let s = Store::bare();
    gen_store(&s.root, &["--keys", "150", "--stale"]);
    let packs = |s: &Store| {
        std::fs::read_dir(s.root.join(".git/objects/pack")).map_or(0, |d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".pack"))
                .count()
        })
    };
    let before = packs(&s);
    let run = s
        .keyrot(&[
            "apply",
            "--yes",
            "--now",
            "2026-11-22T00:00:00Z",
            "--secrets-dir",
            s.secrets.to_str().unwrap(),
        ])
        .ok();
    run.stdout_has("Apply complete");
    assert_eq!(packs(&s), before + 1, "the apply's objects are one pack");
    s.assert_fsck_clean();
    assert_eq!(s.git(&["status", "--porcelain"]), "");
    // Every delivered secret matches the fingerprint its key file records.
    for entry in std::fs::read_dir(&s.secrets).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let id = name.strip_suffix(".secret").expect("only final secret files");
        let secret = std::fs::read_to_string(entry.path()).unwrap();
        let key = s.read(&format!("keys/{id}.toml"));
        assert!(key.contains(&sha256_hex(secret.trim_end().as_bytes())), "{id}");
    }
}

#[test]
fn on_a_terminal_planning_and_applying_show_each_phase() {
    let s = Store::bare();
    gen_store(&s.root, &["--keys", "3000", "--stale"]);
    // What a person sees on stderr (stdout goes elsewhere), on a pseudo-terminal.
    let on_terminal = |args: &str| {
        let line = format!(
            "script -qec '{} --store {} {args} >/dev/null' /dev/null",
            env!("CARGO_BIN_EXE_keyrot"),
            s.root.display()
        );
        s.shell(&line, &[("TERM", "xterm")]).ok().stdout
    };
    let shown = on_terminal("plan --now 2026-11-22T00:00:00Z");
    assert!(
        shown.contains("evaluating") && shown.contains("/3000 keys"),
        "{shown:?}"
    );
    // No count before there is one to show.
    assert!(!shown.contains("0/0 keys"), "{shown:?}");
    let secrets = s.secrets.display().to_string();
    let shown = on_terminal(&format!(
        "apply --yes --now 2026-11-22T00:00:00Z --secrets-dir {secrets}"
    ));
    assert!(
        shown.contains("writing key files") && shown.contains(" files"),
        "{shown:?}"
    );
}
