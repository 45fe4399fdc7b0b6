//! `keyrot init`, `init --example` and `demo`.

use std::fs;

use crate::common::*;

#[test]
fn init_creates_a_clean_committed_store() {
    let s = Store::new();
    assert_eq!(s.commit_count(), 1);
    assert_eq!(s.git(&["status", "--porcelain"]), "");
    let files = s.git(&["ls-files"]);
    for f in [
        "keyrot.toml",
        "owners.toml",
        "keys/.gitkeep",
        "policies/max-age.rhai",
        "policies/key-cap.rhai",
    ] {
        assert!(files.lines().any(|l| l == f), "{f} not in {files}");
    }
    s.keyrot(&["check"]).ok();
}

#[test]
fn init_refuses_a_non_empty_folder() {
    let s = Store::bare();
    fs::create_dir_all(&s.root).unwrap();
    fs::write(s.root.join("notes.txt"), "mine").unwrap();
    let run = s.keyrot_in(s.root.parent().unwrap(), &["init", "store"]).fails(1);
    run.stderr_has("not empty");
    assert!(!s.root.join(".git").exists());
    let s = Store::new();
    let run = s.keyrot_in(s.root.parent().unwrap(), &["init", "store"]).fails(1);
    run.stderr_has("already a keyrot store");
}

#[test]
fn init_adds_a_store_to_an_existing_repository_and_commits_only_its_files() {
    // An empty `git init`.
    let s = Store::bare();
    fs::create_dir_all(&s.root).unwrap();
    s.git(&["init", "-q", "-b", "trunk"]);
    s.keyrot_in(s.root.parent().unwrap(), &["init", "store"]).ok();
    assert_eq!(s.git(&["status", "--porcelain"]), "");
    assert_eq!(s.git(&["rev-parse", "--abbrev-ref", "HEAD"]).trim(), "trunk");
    s.keyrot(&["check"]).ok();

    // A repository with history, a staged change and an untracked file of its own.
    let s = Store::bare();
    fs::create_dir_all(&s.root).unwrap();
    s.git(&["init", "-q", "-b", "main"]);
    s.write("README.md", "infra\n");
    s.write(".gitignore", "target/");
    s.write(".github/CODEOWNERS", "* @infra\n");
    s.commit("infra repo");
    let before = s.head();
    s.write("deploy.sh", "echo hi\n");
    s.git(&["add", "deploy.sh"]);
    s.write("scratch.txt", "mine\n");
    s.keyrot_in(s.root.parent().unwrap(), &["init", "--example", "store"])
        .ok();
    assert_eq!(s.git(&["rev-parse", "HEAD^"]).trim(), before);
    let committed = s.git(&["show", "--name-only", "--format=", "HEAD"]);
    assert!(committed.contains("keyrot.toml") && committed.contains("keys/trading/binance-bot.toml"));
    assert!(
        !committed.contains("deploy.sh") && !committed.contains("scratch.txt"),
        "{committed}"
    );
    // Their own CODEOWNERS stays theirs: the example's is not added beside it.
    assert!(!committed.contains("CODEOWNERS"), "{committed}");
    // Their staged and untracked files are as they were; .gitignore keeps its lines.
    let status = s.git(&["status", "--porcelain"]);
    assert_eq!(status, "A  deploy.sh\n?? scratch.txt\n", "{status}");
    let ignore = s.read(".gitignore");
    assert!(
        ignore.starts_with("target/\n") && ignore.contains("*.secret"),
        "{ignore}"
    );
    s.keyrot(&["plan", "--now", NOW]).ok();

    // A repository that already has one of the store's paths is refused, untouched.
    let s = Store::bare();
    fs::create_dir_all(s.root.join("keys")).unwrap();
    s.git(&["init", "-q"]);
    s.write("keys/x.txt", "not ours");
    let run = s.keyrot_in(s.root.parent().unwrap(), &["init", "store"]).fails(1);
    run.stderr_has("already has keys");
    assert!(!s.root.join("keyrot.toml").exists());
}

#[test]
fn init_example_plans_one_of_every_action_today() {
    let s = Store::bare();
    s.keyrot_in(s.root.parent().unwrap(), &["init", "--example", "store"])
        .ok();
    // The example keys sit in their teams' folders, with a CODEOWNERS for them.
    let files = s.git(&["ls-files", "keys", "CODEOWNERS"]);
    assert!(files.contains("keys/trading/binance-bot.toml") && files.contains("keys/payments/payments.toml"));
    assert!(s.read("CODEOWNERS").contains("/keys/trading/"));
    let plan = s.keyrot(&["plan", "--json"]).ok().json();
    let summary = &plan["summary"];
    for kind in ["rotate", "revoke", "restrict", "expire", "deferred", "warn"] {
        assert!(summary[kind].as_u64().unwrap() >= 1, "no {kind} in {summary}");
    }
}

#[test]
fn demo_runs_plan_apply_and_log_and_reuses_its_store() {
    let s = Store::bare();
    let parent = s.root.parent().unwrap();
    let run = s
        .keyrot_in(
            parent,
            &["demo", "store", "--secrets-dir", s.secrets.to_str().unwrap()],
        )
        .ok();
    for part in [
        "== keyrot plan",
        "== keyrot apply --yes",
        "== keyrot log",
        "Plan: 1 rotate, 2 revoke, 1 restrict, 1 expire, 1 deferred, 2 warn.",
    ] {
        assert!(run.stdout.contains(part), "missing {part}:\n{}", run.stdout);
    }
    assert_eq!(s.commit_count(), 2);
    assert_eq!(s.git(&["status", "--porcelain"]), "");
    let again = s
        .keyrot_in(
            parent,
            &["demo", "store", "--secrets-dir", s.secrets.to_str().unwrap()],
        )
        .ok();
    again.stdout_has("Reusing the demo store");
}

#[test]
fn help_and_version_work() {
    let s = Store::bare();
    let help = s.keyrot_in(s.root.parent().unwrap(), &["--help"]).ok().stdout;
    for cmd in ["init", "check", "plan", "apply", "log", "demo"] {
        assert!(help.contains(cmd), "{help}");
    }
    assert!(s
        .keyrot_in(s.root.parent().unwrap(), &["--version"])
        .ok()
        .stdout
        .starts_with("keyrot "));
    let bad = s.keyrot_in(s.root.parent().unwrap(), &["frobnicate"]).fails(1);
    assert!(!bad.stderr.contains("panicked"));
}

#[test]
fn completions_and_man_pages_come_from_the_real_flags() {
    let s = Store::new();
    // The bash completion script loads in a real bash and completes keyrot.
    let script = s.keyrot(&["completions", "bash"]).ok().stdout;
    let file = s.root.parent().unwrap().join("keyrot.bash");
    std::fs::write(&file, &script).unwrap();
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("source {} && complete -p keyrot", file.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("keyrot"));
    assert!(script.contains("--detailed-exitcode") && script.contains("--remote"));
    for shell in ["zsh", "fish", "powershell"] {
        assert!(
            !s.keyrot(&["completions", shell]).ok().stdout.is_empty(),
            "{shell}"
        );
    }
    s.keyrot(&["completions", "tcsh"]).fails(1);
    // Man pages: the main one on stdout, and one per command into a folder.
    let page = s.keyrot(&["man"]).ok().stdout;
    assert!(page.contains(".TH keyrot 1"), "{page}");
    let dir = s.root.parent().unwrap().join("man");
    s.keyrot(&["man", dir.to_str().unwrap()]).ok();
    let plan = std::fs::read_to_string(dir.join("keyrot-plan.1")).unwrap();
    assert!(plan.contains("detailed\\-exitcode"), "{plan}");
    for page in [
        "keyrot.1",
        "keyrot-apply.1",
        "keyrot-audit-verify.1",
        "keyrot-lease.1",
    ] {
        assert!(dir.join(page).exists(), "{page}");
    }
}
