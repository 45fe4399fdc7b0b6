//! Guarantees 4 and 5 of "What keyrot guarantees": hostile policies are stopped within
//! their bounds and reported with policy and key; hostile files get one clear error
//! each, all in one run; nothing is applied and nothing panics.

use std::fs;
use std::os::unix::ffi::OsStrExt;

use crate::common::*;

fn store_with_policy(name: &str, source: &str) -> Store {
    let s = Store::with_keys(&[("k", &key("[\"read\"]", "2025-01-01T00:00:00Z", ""))]);
    s.write(&format!("policies/{name}.rhai"), source);
    s.commit("hostile policy");
    s
}

#[track_caller]
fn assert_nothing_applied(s: &Store) {
    let before = s.commit_count();
    let run = s.apply().fails(1);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    assert_eq!(s.commit_count(), before);
    let secrets: Vec<_> = fs::read_dir(&s.secrets)
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(secrets.is_empty(), "{secrets:?}");
}

#[test]
fn runaway_and_misbehaving_policies_fail_the_run_with_policy_and_key() {
    let cases = [
        ("spin", "fn evaluate(key) { loop { } }", "operations"),
        (
            "strings",
            "fn evaluate(key) { let s = \"ab\"; loop { s += s; } }",
            "string",
        ),
        ("recursion", "fn f(n) { f(n + 1) }\nfn evaluate(key) { f(0) }", ""),
        (
            "array",
            "fn evaluate(key) { let a = []; loop { a.push(1); } }",
            "array",
        ),
        (
            "map",
            "fn evaluate(key) { let m = #{}; let i = 0; loop { m[`k${i}`] = i; i += 1; } }",
            "map",
        ),
        ("throws", "fn evaluate(key) { throw \"refusing\"; }", "refusing"),
        ("returns-int", "fn evaluate(key) { 42 }", "evaluate returned i64"),
        (
            "returns-string",
            "fn evaluate(key) { \"rotate\" }",
            "evaluate returned string",
        ),
        (
            "returns-junk-array",
            "fn evaluate(key) { [warn(\"x\"), 1] }",
            "index 1",
        ),
        (
            "negative-grace",
            "fn evaluate(key) { rotate(\"x\", days(-1)) }",
            "negative",
        ),
        (
            "missing-value",
            "fn evaluate(key) { if key.idle.days > config().idle_days { warn(\"x\") } }",
            "missing value",
        ),
    ];
    for (name, source, expected) in cases {
        let s = store_with_policy(name, source);
        let run = s.keyrot(&["plan", "--now", NOW]).fails(1);
        assert!(
            run.stderr.contains(&format!("policy {name}: key k:")),
            "{name}: {}",
            run.stderr
        );
        assert!(
            run.stderr.contains(&format!("policies/{name}.rhai")),
            "{name}: {}",
            run.stderr
        );
        assert!(
            run.stderr.to_lowercase().contains(expected),
            "{name}: expected `{expected}` in {}",
            run.stderr
        );
        assert!(run.stdout.is_empty());
        assert_nothing_applied(&s);
    }
}

#[test]
fn forbidden_capabilities_are_compile_errors_naming_the_file() {
    let cases = [
        (
            "import-relative",
            "import \"../../outside\" as o;\nfn evaluate(key) { }",
        ),
        (
            "import-absolute",
            "import \"/etc/passwd\" as o;\nfn evaluate(key) { }",
        ),
        ("eval", "fn evaluate(key) { eval(\"warn(1)\") }"),
        (
            "deep",
            &format!("fn evaluate(key) {{ {}1{} }}", "(".repeat(500), ")".repeat(500)),
        ),
    ];
    for (name, source) in cases {
        let s = store_with_policy(name, source);
        let run = s.keyrot(&["check"]).fails(1);
        assert!(
            run.stderr.contains(&format!("policies/{name}.rhai:")),
            "{name}: {}",
            run.stderr
        );
        assert_nothing_applied(&s);
    }
    // The clock is not there at all.
    let s = store_with_policy("clock", "fn evaluate(key) { if timestamp() > 0 { warn(\"x\") } }");
    let run = s.keyrot(&["plan", "--now", NOW]).fails(1);
    run.stderr_has("timestamp");
}

#[test]
fn hostile_key_files_are_each_reported_once_in_one_run() {
    let s = Store::new();
    let good = key("[\"read\"]", "2025-01-01T00:00:00Z", "");
    s.write("keys/good.toml", &good);
    s.write("keys/truncated.toml", &good[..good.len() / 2]);
    fs::write(s.path("keys/binary.toml"), [0u8, 159, 146, 150, 0, 1, 2]).unwrap();
    s.write("keys/huge.toml", &format!("{good}# {}\n", "x".repeat(1_100_000)));
    s.write(
        "keys/nested.toml",
        &format!("tags = {}{}\n", "[".repeat(5000), "]".repeat(5000)),
    );
    s.write("keys/unknown.toml", &format!("{good}secret = \"oops\"\n"));
    for bad_id in ["UPPER", ".", "", "a b", "-dash"] {
        s.write(&format!("keys/{bad_id}.toml"), &good);
    }
    let raw_name = std::ffi::OsStr::from_bytes(b"caf\xe9.toml");
    fs::write(s.path("keys").join(raw_name), &good).unwrap();
    let outside = s.root.parent().unwrap().join("elsewhere.toml");
    fs::write(&outside, &good).unwrap();
    std::os::unix::fs::symlink(&outside, s.path("keys/link.toml")).unwrap();
    std::os::unix::fs::symlink(&outside, s.path("policies/link.rhai")).unwrap();
    fs::create_dir_all(s.path("keys/sub.toml")).unwrap();

    let run = s.keyrot(&["check"]).fails(1);
    let err = &run.stderr;
    for file in [
        "keys/truncated.toml:",
        "keys/binary.toml:",
        "keys/huge.toml:",
        "keys/nested.toml:",
        "keys/unknown.toml:",
        "keys/UPPER.toml:",
        "keys/..toml:",
        "keys/.toml:",
        "keys/a b.toml:",
        "keys/-dash.toml:",
        "keys/caf\u{fffd}.toml: file name is not valid UTF-8",
        "keys/link.toml: is a symbolic link",
        "policies/link.rhai: is a symbolic link",
        "keys/sub.toml: is a folder",
    ] {
        assert_eq!(
            err.matches(file).count(),
            1,
            "`{file}` should be reported once in:\n{err}"
        );
    }
    assert!(!err.contains("keys/good.toml"), "{err}");
    assert!(err.contains("error: 14 problems"), "{err}");
    assert!(!err.contains("panicked"));
    s.commit("hostile files");
    assert_nothing_applied(&s);
}

#[test]
fn fifos_in_place_of_files_are_refused_without_waiting_on_them() {
    let s = Store::with_keys(&[("k", &key("[\"read\"]", "2025-01-01T00:00:00Z", ""))]);
    for rel in ["keys/pipe.toml", "exceptions.toml"] {
        let made = std::process::Command::new("mkfifo")
            .arg(s.path(rel))
            .status()
            .unwrap();
        assert!(made.success(), "mkfifo {rel}");
    }
    // Opening a FIFO for reading blocks until a writer comes: a hang here is the bug.
    for command in [&["check"][..], &["plan", "--now", NOW][..]] {
        let run = s.keyrot(command).fails(1);
        run.stderr_has("keys/pipe.toml: is not a regular file");
        run.stderr_has("exceptions.toml: is not a regular file");
    }
}

#[test]
fn a_keys_folder_that_is_a_symlink_out_of_the_store_is_refused() {
    let s = Store::new();
    let outside = s.root.parent().unwrap().join("elsewhere");
    fs::create_dir_all(&outside).unwrap();
    fs::write(
        outside.join("k.toml"),
        key("[\"read\"]", "2025-01-01T00:00:00Z", ""),
    )
    .unwrap();
    fs::remove_file(s.path("keys/.gitkeep")).unwrap();
    fs::remove_dir(s.path("keys")).unwrap();
    std::os::unix::fs::symlink(&outside, s.path("keys")).unwrap();
    let run = s.keyrot(&["check"]).fails(1);
    run.stderr_has("keys/: is a symbolic link");
}

#[test]
fn hostile_settings_and_owners_are_reported_not_applied() {
    let s = Store::with_keys(&[("k", &key("[\"read\"]", "2025-01-01T00:00:00Z", ""))]);
    s.write(
        "keyrot.toml",
        "[store]\nkeys = \"../../etc\"\n[secrets]\nbytes = 1\n[surprise]\nx = 1\n",
    );
    s.write("owners.toml", "[alice]\nstatus = \"retired\"\n");
    let run = s.keyrot(&["check"]).fails(1);
    run.stderr_has("keyrot.toml:");
    run.stderr_has("surprise");
    run.stderr_has("owners.toml:2:10:");
    s.commit("hostile settings");
    assert_nothing_applied(&s);
}

#[test]
fn a_bound_broken_inside_evaluate_names_line_and_column() {
    let cases = [
        (
            "spin",
            "fn evaluate(key) {\n    let x = 1;\n    loop { x += 1; }\n}\n",
            ":3:",
        ),
        (
            "recursion",
            "fn f(n) {\n    f(n + 1)\n}\nfn evaluate(key) {\n    f(0)\n}\n",
            ":2:",
        ),
        (
            "strings",
            "fn evaluate(key) {\n    let s = \"ab\";\n    loop { s += s; }\n}\n",
            ":3:",
        ),
        (
            "array",
            "fn evaluate(key) {\n    let a = [1];\n    loop { a += a; }\n}\n",
            ":3:",
        ),
    ];
    for (name, source, line) in cases {
        let s = store_with_policy(name, source);
        let run = s.keyrot(&["plan", "--now", NOW]).fails(1);
        assert!(
            run.stderr.contains(&format!("policies/{name}.rhai{line}")),
            "{name}: expected `policies/{name}.rhai{line}` in {}",
            run.stderr
        );
    }
}

#[test]
fn policies_cannot_sleep_and_a_slow_policy_is_stopped_by_its_time_budget() {
    let s = store_with_policy("nap", "fn evaluate(key) {\n    sleep(100);\n}\n");
    let started = std::time::Instant::now();
    let run = s.keyrot(&["plan", "--now", NOW]).fails(1);
    run.stderr_has("policies/nap.rhai:2:5");
    run.stderr_has("Function not found: sleep");
    // Not a speed target: a policy that slept would hold this test for 100 s.
    assert!(started.elapsed().as_secs() < 60);
    assert_nothing_applied(&s);

    // Legal but slow: each `contains` compares 500 values, so the operations bound
    // (200,000) is hours away; the time budget stops the evaluation first.
    let slow = "fn evaluate(key) {\n    let a = [];\n    a.pad(500, 0);\n    loop { a.contains(-1); }\n}\n";
    let s = store_with_policy("slow", slow);
    let run = s.keyrot(&["plan", "--now", NOW]).fails(1);
    run.stderr_has("policy slow: key k:");
    run.stderr_has("time budget of 500 ms");
    assert_nothing_applied(&s);
}

#[test]
fn grace_periods_are_bounded_where_they_are_set() {
    let s = store_with_policy(
        "long-grace",
        "fn evaluate(key) {\n    rotate(\"x\", days(100000000))\n}\n",
    );
    let run = s.keyrot(&["plan", "--now", NOW]).fails(1);
    run.stderr_has("policies/long-grace.rhai:2:");
    run.stderr_has("longer than the limit of 366d");
    assert_nothing_applied(&s);

    let s = Store::with_keys(&[("k", &key("[\"read\"]", "2025-01-01T00:00:00Z", ""))]);
    s.write("keyrot.toml", "[rotation]\ngrace_period = \"100000000d\"\n");
    let run = s.keyrot(&["check"]).fails(1);
    run.stderr_has("keyrot.toml:2:");
    run.stderr_has("longer than the limit of 366d");
    s.commit("a century of grace");
    assert_nothing_applied(&s);

    // The longest allowed grace is written as the date it ends, not clamped or wrapped.
    let s = Store::with_keys(&[(
        "k",
        &key(
            "[\"read\"]",
            "2025-01-01T00:00:00Z",
            &format!("fingerprint = \"{}\"\n", fp('a')),
        ),
    )]);
    s.write("keyrot.toml", "[rotation]\ngrace_period = \"366d\"\n");
    s.commit("a year of grace");
    s.apply().ok();
    assert!(
        s.read("keys/k.toml")
            .contains("valid_until = 2027-11-23T20:00:00Z"),
        "{}",
        s.read("keys/k.toml")
    );
}

#[test]
fn fifos_at_the_lock_or_a_journal_are_refused_without_waiting_on_them() {
    for name in ["lock", "journal", "services"] {
        let s = Store::with_keys(&[("k", &key("[\"read\"]", "2025-01-01T00:00:00Z", ""))]);
        let dir = s.root.join(".git/keyrot");
        fs::create_dir_all(&dir).unwrap();
        let made = std::process::Command::new("mkfifo")
            .arg(dir.join(name))
            .status()
            .unwrap();
        assert!(made.success());
        // Opening a FIFO for reading blocks until a writer comes: a hang here is the bug.
        let run = s.apply().fails(1);
        assert!(
            run.stderr.contains(&format!(".git/keyrot/{name}")) && run.stderr.contains("not a regular file"),
            "{name}: {}",
            run.stderr
        );
        assert_nothing_applied(&s);
    }
}

#[test]
fn a_secrets_folder_whose_path_is_not_utf8_is_refused_before_anything_happens() {
    let s = Store::with_keys(&[("k", &key("[\"read\"]", "2025-01-01T00:00:00Z", ""))]);
    let before = s.commit_count();
    let dir = s
        .root
        .parent()
        .unwrap()
        .join(std::ffi::OsStr::from_bytes(b"secrets-\xff"));
    let args: [&std::ffi::OsStr; 6] = [
        "apply".as_ref(),
        "--yes".as_ref(),
        "--now".as_ref(),
        NOW.as_ref(),
        "--secrets-dir".as_ref(),
        dir.as_os_str(),
    ];
    let run = s.keyrot_os(&args).fails(1);
    run.stderr_has("not valid UTF-8");
    assert_eq!(s.commit_count(), before);
    assert!(!s.root.join(".git/keyrot/journal").exists());
}

#[test]
fn store_content_never_reaches_the_terminal_as_control_sequences() {
    let evil = "service = \"binance\"\nowner = \"mal\\u001b[31mlory\\u202eevil\"\npermissions = [\"read\"]\ntags = [\"t\\u001b]0;pwned\\u0007\"]\nenvironment = \"prod\\u009b2J\"\ncreated_at = 2020-01-01T00:00:00Z\n";
    let s = Store::with_keys(&[("evil", evil)]);
    let check_bad = "service = \"binance\"\nowner = \"x\"\npermissions = []\nip_allowlist = [\"10.0.0.1\\u001b[2J\\u202e\"]\ncreated_at = 2020-01-01T00:00:00Z\n";
    let seen = |run: &Run, what: &str| {
        for text in [&run.stdout, &run.stderr] {
            assert!(
                !text.contains('\u{1b}')
                    && !text.contains('\u{202e}')
                    && !text.contains('\u{9b}')
                    && !text.contains('\u{7}'),
                "{what} printed a raw control or bidi character:\n{text}"
            );
        }
    };
    let explain = s.keyrot(&["explain", "evil", "--now", NOW]).ok();
    seen(&explain, "explain");
    explain.stdout_has("mal\\u001b[31mlory\\u202eevil");
    seen(&s.keyrot(&["plan", "--now", NOW]), "plan");
    seen(&s.keyrot(&["check"]), "check");
    s.apply().ok();
    seen(&s.keyrot(&["log"]), "log");

    s.write("keys/bad.toml", check_bad);
    let check = s.keyrot(&["check"]).fails(1);
    seen(&check, "check (error)");
    check.stderr_has("keys/bad.toml");
    seen(&s.keyrot(&["plan", "--now", NOW]).fails(1), "plan (error)");
}

#[test]
fn a_config_entry_a_policy_reads_but_nobody_set_is_warned_about_by_every_command() {
    let s = store_with_policy(
        "typo",
        "fn evaluate(key) {\n    let cfg = config();\n    if key.age > days(cfg.max_dayz ?? 30) { warn(\"old\") }\n}\n",
    );
    let warning = "policies/typo.rhai:3:";
    let says = "warning: reads config().max_dayz, which keyrot.toml does not set";
    let check = s.keyrot(&["check"]).ok();
    assert!(
        check.stderr.contains(warning) && check.stderr.contains(says),
        "{}",
        check.stderr
    );
    let secrets = s.secrets.to_str().unwrap().to_string();
    for args in [
        &["plan", "--now", NOW][..],
        &["plan", "--json", "--now", NOW][..],
        &["apply", "--yes", "--now", NOW, "--secrets-dir", &secrets][..],
        &["run", "--once"][..],
        &["run", "--once", "--apply", "--secrets-dir", &secrets][..],
    ] {
        let run = s.keyrot(args);
        assert!(
            run.stderr.contains(warning) && run.stderr.contains(says),
            "{args:?}: {}",
            run.stderr
        );
    }
    // stdout and stderr are read on two threads, so the first plan and the warning
    // arrive in either order: wait for the warning alone.
    let mut live = s.spawn(&["watch", "--json", "--now", NOW], &[]);
    live.wait_for(true, "the config warning", |line| line.contains(says));
}
