//! `keyrot scan`: leaked secrets found in files, the index and the history, named by
//! their key and which of its secrets they are, never printed; `--mark-compromised`
//! leads to a revocation; the shipped scanner rules match keyrot secrets only.

use std::fs;
use std::path::Path;

use crate::common::*;

/// A store with one key due for rotation, applied at NOW: `bot` has a secret.
fn applied_store() -> Store {
    let s = Store::with_keys(&[("bot", &key("[\"read\"]", "2026-01-01T00:00:00Z", ""))]);
    s.apply().ok();
    s
}

fn secret_of(s: &Store, id: &str) -> String {
    fs::read_to_string(s.secret_file(id))
        .unwrap()
        .trim_end()
        .to_string()
}

/// A copy of `secret` with its last character changed: the right shape, a wrong checksum.
fn forged(secret: &str) -> String {
    let mut b = secret.as_bytes().to_vec();
    let last = b.len() - 1;
    b[last] = if b[last] == b'a' { b'b' } else { b'a' };
    String::from_utf8(b).unwrap()
}

#[track_caller]
fn never_shows(run: &Run, secret: &str) {
    assert!(
        !run.stdout.contains(secret) && !run.stderr.contains(secret),
        "the secret itself was printed:\n{}\n{}",
        run.stdout,
        run.stderr
    );
}

#[test]
fn a_leaked_secret_is_found_with_its_key_and_a_clean_store_holds_none() {
    let s = applied_store();
    let secret = secret_of(&s, "bot");
    // The store itself holds fingerprints, never a secret: nothing found, exit 0.
    s.keyrot_in(&s.root, &["scan"])
        .ok()
        .stdout_has("No keyrot secrets in");

    let app = s.root.parent().unwrap().join("app");
    fs::create_dir_all(app.join("config")).unwrap();
    fs::write(
        app.join("config/.env"),
        format!(
            "# settings\nDB=postgres://x\nBOT_KEY={secret}\nOLD={}\n",
            forged(&secret)
        ),
    )
    .unwrap();
    fs::write(
        app.join("notes.md"),
        "kr_binance_notasecret and kr_ at the end kr_",
    )
    .unwrap();
    let run = s.keyrot(&["scan", app.to_str().unwrap()]).fails(1);
    never_shows(&run, &secret);
    run.stdout_has("config/.env:3: sha256:")
        .stdout_has("bot (current secret)")
        .stdout_has("Found 1 keyrot secret in 2 files.");

    let run = s.keyrot(&["scan", app.to_str().unwrap(), "--json"]).fails(1);
    never_shows(&run, &secret);
    let json = run.json();
    let findings = json["findings"].as_array().unwrap();
    assert_eq!(
        findings.len(),
        1,
        "the forged look-alike is not reported: {json:#}"
    );
    let f = &findings[0];
    assert_eq!(f["line"], 3);
    assert_eq!(f["key"], "bot");
    assert_eq!(f["secret"], "current");
    assert_eq!(f["key_status"], "active");
    assert_eq!(f["service"], "binance");
    assert_eq!(
        f["fingerprint"],
        format!("sha256:{}", sha256_hex(secret.as_bytes()))
    );
    assert_eq!(json["files"], 2);

    // A symbolic link named on the command line is followed; one inside a folder is not.
    let link = s.root.parent().unwrap().join("link.env");
    std::os::unix::fs::symlink(app.join("config/.env"), &link).unwrap();
    std::os::unix::fs::symlink(app.join("config/.env"), app.join("notes-link")).unwrap();
    s.keyrot(&["scan", link.to_str().unwrap()])
        .fails(1)
        .stdout_has("link.env:3:");
    s.keyrot(&["scan", app.to_str().unwrap()])
        .fails(1)
        .stdout_has("Found 1 keyrot secret in 2 files.");
    s.keyrot(&["scan", "/dev/null"])
        .fails(1)
        .stderr_has("/dev/null: not a file or a folder");

    // Outside any store the secret is still found, by its checksum alone.
    s.keyrot_in(&app, &["scan"])
        .fails(1)
        .stdout_has("config/.env:3:")
        .stdout_has("not a key of this store (service binance)");
}

#[test]
fn current_previous_and_older_secrets_are_told_apart() {
    let s = applied_store();
    let first = secret_of(&s, "bot");
    s.rotate_again_in_use();
    let second = secret_of(&s, "bot");
    let leak = s.root.parent().unwrap().join("leak.txt");
    fs::write(&leak, format!("{first}\n{second}\n")).unwrap();
    let json = s
        .keyrot(&["scan", leak.to_str().unwrap(), "--json"])
        .fails(1)
        .json();
    let ages: Vec<&str> = json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["secret"].as_str().unwrap())
        .collect();
    assert_eq!(ages, ["previous", "current"]);

    // Two days on, the grace period has ended: the first secret is expired and only
    // the history knows it was `bot`'s.
    s.apply_at("2027-03-04T20:00:00Z", &[]).ok();
    assert!(!s.read("keys/bot.toml").contains("[[previous]]"));
    let json = s
        .keyrot(&["scan", leak.to_str().unwrap(), "--json"])
        .fails(1)
        .json();
    let f = &json["findings"][0];
    assert_eq!(
        (f["key"].as_str(), f["secret"].as_str()),
        (Some("bot"), Some("older"))
    );
}

/// A plain git repository beside the store, with one commit.
fn app_repo(s: &Store) -> std::path::PathBuf {
    let app = s.root.parent().unwrap().join("app");
    fs::create_dir_all(&app).unwrap();
    s.git_in(&app, &["init", "-q", "-b", "main"], &[]);
    fs::write(app.join("README"), "an app\n").unwrap();
    s.git_in(&app, &["add", "."], &[]);
    s.git_in(&app, &["commit", "-qm", "start"], &[]);
    app
}

#[test]
fn history_scan_finds_a_secret_removed_long_ago_at_the_commit_that_added_it() {
    let s = applied_store();
    let secret = secret_of(&s, "bot");
    let app = app_repo(&s);
    fs::create_dir_all(app.join("deploy")).unwrap();
    fs::write(
        app.join("deploy/values.yaml"),
        format!("a: 1\nkey: \"{secret}\"\n"),
    )
    .unwrap();
    s.git_in(&app, &["add", "."], &[]);
    s.git_in(&app, &["commit", "-qm", "oops"], &[]);
    let leak_commit = s.git_in(&app, &["rev-parse", "HEAD"], &[]).trim().to_string();
    s.git_in(&app, &["rm", "-q", "deploy/values.yaml"], &[]);
    s.git_in(&app, &["commit", "-qm", "remove the key"], &[]);
    // On another branch too, and on a tag: still one blob, reported once.
    s.git_in(&app, &["branch", "old", &leak_commit], &[]);
    s.git_in(&app, &["tag", "v1", &leak_commit], &[]);

    s.keyrot(&["scan", app.to_str().unwrap()])
        .ok()
        .stdout_has("No keyrot secrets");
    let run = s
        .keyrot(&["scan", "--git", app.to_str().unwrap(), "--json"])
        .fails(1);
    never_shows(&run, &secret);
    let json = run.json();
    let findings = json["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 1, "{json:#}");
    assert_eq!(findings[0]["commit"], leak_commit.as_str());
    assert_eq!(findings[0]["path"], "deploy/values.yaml");
    assert_eq!(findings[0]["line"], 2);
    assert_eq!(findings[0]["key"], "bot");
    s.keyrot(&["scan", "--git", app.to_str().unwrap()])
        .fails(1)
        .stdout_has(&format!("{}:deploy/values.yaml:2:", &leak_commit[..12]));
}

#[test]
fn staged_scan_sees_what_the_next_commit_would_add_and_the_shipped_hook_blocks_it() {
    let s = applied_store();
    let secret = secret_of(&s, "bot");
    let app = app_repo(&s);
    let hook = app.join(".git/hooks/pre-commit");
    fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/scanners/pre-commit"),
        &hook,
    )
    .unwrap();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_keyrot")).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap());

    fs::write(app.join("config.env"), format!("KEY={secret}\n")).unwrap();
    s.git_in(&app, &["add", "config.env"], &[]);
    s.keyrot(&["scan", "--staged", app.to_str().unwrap()])
        .fails(1)
        .stdout_has("config.env:1:")
        .stdout_has("bot (current secret)");
    let commit = s.git_run(&app, &["commit", "-qm", "add config"], &[("PATH", &path)]);
    assert!(!commit.status.success(), "the hook must refuse the commit");
    assert!(!String::from_utf8_lossy(&commit.stdout).contains(&secret));
    assert_eq!(s.git_in(&app, &["rev-list", "--count", "HEAD"], &[]).trim(), "1");

    // Without the secret the same commit goes through; a committed file that did not
    // change is not re-scanned by --staged.
    fs::write(app.join("config.env"), "KEY=from-the-vault\n").unwrap();
    s.git_in(&app, &["add", "config.env"], &[]);
    let commit = s.git_run(&app, &["commit", "-qm", "add config"], &[("PATH", &path)]);
    assert!(
        commit.status.success(),
        "{}",
        String::from_utf8_lossy(&commit.stderr)
    );
    s.keyrot(&["scan", "--staged", app.to_str().unwrap()])
        .ok()
        .stdout_has("No keyrot secrets in 0 files.");
}

#[test]
fn mark_compromised_commits_the_mark_and_the_next_apply_revokes() {
    let s = applied_store();
    let secret = secret_of(&s, "bot");
    s.write(
        "keys/bot.toml",
        &s.read("keys/bot.toml")
            .replace("owner = \"alice\"", "owner = \"alice\"  # on call"),
    );
    s.commit("comment");
    let before = s.read("keys/bot.toml");
    let leak = s.root.parent().unwrap().join("paste.txt");
    fs::write(&leak, format!("here you go: {secret}\n")).unwrap();

    // A key file with uncommitted changes is refused, and nothing changes.
    s.write("keys/bot.toml", &format!("{before}# draft\n"));
    s.keyrot(&["scan", leak.to_str().unwrap(), "--mark-compromised"])
        .fails(1)
        .stderr_has("keys/bot.toml has uncommitted changes");
    s.write("keys/bot.toml", &before);
    let commits = s.commit_count();

    let run = s
        .keyrot(&["scan", leak.to_str().unwrap(), "--mark-compromised"])
        .fails(1);
    never_shows(&run, &secret);
    run.stdout_has("Marked 1 key compromised: bot");
    assert_eq!(s.commit_count(), commits + 1);
    assert_eq!(s.read("keys/bot.toml"), format!("{before}compromised = true\n"));
    let message = s.git(&["log", "-1", "--format=%B"]);
    assert!(
        message.starts_with("keyrot scan: 1 key marked compromised"),
        "{message}"
    );
    assert!(
        message.contains("compromised bot: its current secret (sha256:"),
        "{message}"
    );
    assert!(message.contains("paste.txt:1"), "{message}");
    assert!(
        s.git(&["status", "--porcelain"]).is_empty(),
        "the mark is committed"
    );

    assert!(actions(&s.plan()).contains(&("bot".into(), "revoke".into(), "compromised".into())));
    s.apply().ok();
    assert!(s.read("keys/bot.toml").contains("status = \"revoked\""));
    s.keyrot(&["audit", "verify"]).ok();

    // Scanning again finds the revoked key's secret and marks nothing more.
    s.keyrot(&["scan", leak.to_str().unwrap(), "--mark-compromised"])
        .fails(1)
        .stdout_has("bot (current secret, key revoked)")
        .stdout_has("Already compromised or revoked: bot");
    assert_eq!(s.commit_count(), commits + 2);
}

#[test]
fn mark_compromised_needs_a_store() {
    let s = Store::bare();
    let dir = s.root.parent().unwrap();
    s.keyrot_in(dir, &["scan", "--mark-compromised"])
        .fails(1)
        .stderr_has("needs the store");
}

/// The regex of the shipped gitleaks rule and truffleHog detector.
fn shipped_regexes() -> Vec<(String, regex::Regex)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/scanners");
    let gitleaks: toml::Table = fs::read_to_string(dir.join("gitleaks.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let rule = gitleaks["rules"].as_array().unwrap()[0]["regex"]
        .as_str()
        .unwrap()
        .to_string();
    let hog = fs::read_to_string(dir.join("trufflehog.yaml")).unwrap();
    let line = hog
        .lines()
        .find(|l| l.trim_start().starts_with("secret:"))
        .unwrap();
    let pattern = line.trim_start()["secret:".len()..]
        .trim()
        .trim_matches('\'')
        .to_string();
    vec![
        ("gitleaks".into(), regex::Regex::new(&rule).unwrap()),
        ("trufflehog".into(), regex::Regex::new(&pattern).unwrap()),
    ]
}

#[test]
fn shipped_scanner_rules_match_secrets_and_no_fingerprint() {
    let s = Store::bare();
    s.keyrot_in(s.root.parent().unwrap(), &["init", "--example", "store"])
        .ok();
    s.apply().ok();
    let mut secrets = Vec::new();
    for entry in fs::read_dir(&s.secrets).unwrap() {
        secrets.push(
            fs::read_to_string(entry.unwrap().path())
                .unwrap()
                .trim_end()
                .to_string(),
        );
    }
    assert!(!secrets.is_empty());
    // Every file of the store (the example keys are in team folders).
    let store_text: String = s
        .git(&["ls-files"])
        .lines()
        .map(|p| fs::read_to_string(s.path(p)).unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(store_text.contains("sha256:"), "the store holds fingerprints");
    let log = s.git(&["log", "-p"]);
    for (name, re) in shipped_regexes() {
        for secret in &secrets {
            let text = format!("export API_KEY=\"{secret}\"\n");
            let m = re.find(&text).unwrap_or_else(|| panic!("{name} misses a secret"));
            assert_eq!(
                m.as_str().trim_matches('"'),
                secret,
                "{name} matches the whole secret"
            );
        }
        assert!(!re.is_match(&store_text), "{name} flags a store file");
        assert!(!re.is_match(&log), "{name} flags the store's history");
    }
}
