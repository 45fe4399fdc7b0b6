//! `keyrot init`: a new store with the shipped policies, optionally seeded with the
//! example keys (dates shifted so the first plan shows every kind of action).

use std::fs;
use std::path::{Path, PathBuf};

use git2::{Repository, RepositoryInitOptions};
use toml_edit::{DocumentMut, Item, Value};

use crate::error::{Error, Result, StoreError};
use crate::store::{files, Settings};
use crate::time::{Dur, Time};

/// The policies keyrot ships and their tests, as `(file name, source)`.
pub const SHIPPED_POLICIES: &[(&str, &str)] = &[
    ("compromised.rhai", include_str!("../policies/compromised.rhai")),
    (
        "compromised_test.rhai",
        include_str!("../policies/compromised_test.rhai"),
    ),
    (
        "departed-owner.rhai",
        include_str!("../policies/departed-owner.rhai"),
    ),
    (
        "departed-owner_test.rhai",
        include_str!("../policies/departed-owner_test.rhai"),
    ),
    ("idle.rhai", include_str!("../policies/idle.rhai")),
    ("idle_test.rhai", include_str!("../policies/idle_test.rhai")),
    ("key-cap.rhai", include_str!("../policies/key-cap.rhai")),
    ("key-cap_test.rhai", include_str!("../policies/key-cap_test.rhai")),
    (
        "least-privilege.rhai",
        include_str!("../policies/least-privilege.rhai"),
    ),
    (
        "least-privilege_test.rhai",
        include_str!("../policies/least-privilege_test.rhai"),
    ),
    ("max-age.rhai", include_str!("../policies/max-age.rhai")),
    ("max-age_test.rhai", include_str!("../policies/max-age_test.rhai")),
    (
        "unexpected-source.rhai",
        include_str!("../policies/unexpected-source.rhai"),
    ),
    (
        "unexpected-source_test.rhai",
        include_str!("../policies/unexpected-source_test.rhai"),
    ),
];

const EXAMPLE_OWNERS: &str = include_str!("../examples/store/owners.toml");

/// Who reviews changes to which team's keys, on a forge that reads CODEOWNERS.
const EXAMPLE_CODEOWNERS: &str = include_str!("../examples/store/CODEOWNERS");

/// The example keys, in their teams' folders (see `examples/store/CODEOWNERS`).
const EXAMPLE_KEYS: &[(&str, &str)] = &[
    (
        "trading/binance-bot.toml",
        include_str!("../examples/store/keys/trading/binance-bot.toml"),
    ),
    (
        "treasury/coinbase-withdraw.toml",
        include_str!("../examples/store/keys/treasury/coinbase-withdraw.toml"),
    ),
    (
        "trading/fresh-bot.toml",
        include_str!("../examples/store/keys/trading/fresh-bot.toml"),
    ),
    (
        "payments/legacy-admin.toml",
        include_str!("../examples/store/keys/payments/legacy-admin.toml"),
    ),
    (
        "trading/old-bot.toml",
        include_str!("../examples/store/keys/trading/old-bot.toml"),
    ),
    (
        "payments/payments.toml",
        include_str!("../examples/store/keys/payments/payments.toml"),
    ),
    (
        "treasury/stale-report.toml",
        include_str!("../examples/store/keys/treasury/stale-report.toml"),
    ),
];

/// The instant the example files' dates are written relative to.
pub const EXAMPLE_ANCHOR: &str = "2026-11-22T12:00:00Z";

const SETTINGS: &str = r#"# keyrot settings. Every field is optional; the values shown are the defaults.
# Unknown fields are errors, so a typo can never silently weaken a policy.

[store]
keys = "keys"
policies = "policies"
maintenance = true     # pack the repository's loose objects once they pile up (git repack)

[rotation]
grace_period = "24h"   # how long a rotated-out secret stays valid
min_interval = "24h"   # cooldown between rotations of one key (revoke is exempt)

[secrets]
bytes = 32             # random bytes per secret, from the OS CSPRNG
prefix = "kr"          # secrets look like kr_<service>_<body><checksum>

[commit]
name = "keyrot"        # used only when git has no user configured
email = "keyrot@localhost"
sign = false           # true: every apply commit must be signed with git's signing key, or not made

# Each [policy.<name>] table is that policy's config().
[policy.max-age]
max_days = 90
withdraw_max_days = 30

[policy.departed-owner]
personal_tag = "personal"

[policy.idle]
max_idle_days = 60

[policy.key-cap]
max_keys = 5

[policy.least-privilege]
restrict = ["withdraw"]   # removed from keys without an IP allowlist
warn = ["admin"]          # reported on keys without an IP allowlist

# Rollouts: rotate environment by environment, and spread mass rotations over runs.
# A rotation waits while the same service's keys in an earlier environment are rotated
# by the plan or were rotated less than `soak` ago; compromised keys never wait.
# [rollout]
# order = ["development", "staging", "production"]   # earliest first; others are not held
# soak = "24h"
# max_per_run = 500                                  # default: no limit
"#;

const OWNERS: &str = r#"# People who own keys. status = "active" | "departed".
#
# [alice]
# status = "active"
# team = "trading"
# email = "alice@example.com"
"#;

const GITIGNORE: &str =
    "# Secrets never belong in the store; keyrot writes them elsewhere.\n*.secret\n*.pending\n";

#[derive(Debug)]
pub struct Created {
    pub root: PathBuf,
    pub commit: String,
    pub keys: usize,
}

/// Whether `dir` already holds a keyrot store (a git repository with `keyrot.toml`).
pub fn is_store(dir: &Path) -> bool {
    dir.join(".git").exists() && dir.join(files::SETTINGS_FILE).is_file()
}

/// Creates a store in `dir` and commits it: a new or empty folder gets `git init`; the
/// root of an existing git work tree (an empty `git init`, or a repository holding
/// other things) gets the store's files added and committed on its current branch,
/// nothing else of it touched. Any other non-empty folder is refused.
pub fn init(dir: &Path, example: bool, now: Time) -> Result<Created> {
    let existing = existing_repository(dir)?;
    let git_repo = match existing {
        Some(repo) => repo,
        None => {
            fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            let mut opts = RepositoryInitOptions::new();
            opts.initial_head("main");
            Repository::init_opts(dir, &opts).map_err(|e| Error::git("git init", e))?
        }
    };

    // The store's files, as (path, contents); written, then committed alone.
    let mut files: Vec<(String, String)> = vec![(files::SETTINGS_FILE.into(), SETTINGS.into())];
    let gitignore = match fs::read_to_string(dir.join(".gitignore")) {
        Ok(old) if old.contains("*.secret") => old,
        Ok(old) if old.is_empty() || old.ends_with('\n') => format!("{old}{GITIGNORE}"),
        Ok(old) => format!("{old}\n{GITIGNORE}"),
        Err(_) => GITIGNORE.to_string(),
    };
    files.push((".gitignore".into(), gitignore));
    for (name, text) in SHIPPED_POLICIES {
        files.push((format!("policies/{name}"), text.to_string()));
    }
    let mut keys = 0;
    if example {
        let shift = now.since(Time::parse_rfc3339(EXAMPLE_ANCHOR).map_err(Error::Internal)?);
        files.push((files::OWNERS_FILE.into(), EXAMPLE_OWNERS.into()));
        // A repository's own CODEOWNERS (where forges look for one) is left alone.
        let has_codeowners = [
            "CODEOWNERS",
            ".github/CODEOWNERS",
            ".gitlab/CODEOWNERS",
            "docs/CODEOWNERS",
        ]
        .iter()
        .any(|p| dir.join(p).exists());
        if !has_codeowners {
            files.push(("CODEOWNERS".into(), EXAMPLE_CODEOWNERS.into()));
        }
        for (name, text) in EXAMPLE_KEYS {
            files.push((format!("keys/{name}"), shift_dates(text, shift.secs())?));
            keys += 1;
        }
    } else {
        files.push((files::OWNERS_FILE.into(), OWNERS.into()));
        files.push(("keys/.gitkeep".into(), String::new()));
    }
    for (rel, text) in &files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
    }

    let commit = crate::direct_commit::commit_files(&git_repo, &Settings::default(), &files, "keyrot init")?;
    Ok(Created {
        root: dir.to_path_buf(),
        commit,
        keys,
    })
}

/// The repository whose work tree `dir` is the root of, to add a store to; `None` for
/// a folder that is new or empty. Refuses a store, a folder inside a repository, a
/// non-repository with files in it, and a repository that already has any of the
/// store's paths.
fn existing_repository(dir: &Path) -> Result<Option<Repository>> {
    if !dir.exists() {
        return Ok(None);
    }
    let mut entries = fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    if entries.next().is_none() {
        return Ok(None);
    }
    let refuse = |why: String| {
        Err(StoreError::NotForInit {
            dir: dir.to_path_buf(),
            why,
        }
        .into())
    };
    if is_store(dir) {
        return refuse("is already a keyrot store".into());
    }
    let repo = match Repository::open(dir) {
        Ok(r) if r.workdir().and_then(|w| w.canonicalize().ok()) == dir.canonicalize().ok() => r,
        _ => {
            return refuse(
                "is not empty and is not the root of a git repository; keyrot init needs a new or empty folder, or a repository to add a store to".into(),
            )
        }
    };
    let taken: Vec<&str> = [files::SETTINGS_FILE, files::OWNERS_FILE, "keys", "policies"]
        .into_iter()
        .filter(|p| dir.join(p).exists())
        .collect();
    if !taken.is_empty() {
        return refuse(format!(
            "already has {}; keyrot init adds a store only where none of its files are",
            taken.join(", ")
        ));
    }
    Ok(Some(repo))
}

/// Moves every offset date-time in a TOML document by `secs`, keeping its formatting.
fn shift_dates(text: &str, secs: i64) -> Result<String> {
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e| Error::Internal(format!("example file: {e}")))?;
    shift_table(doc.as_table_mut(), secs);
    Ok(doc.to_string())
}

fn shift_table(table: &mut toml_edit::Table, secs: i64) {
    for (_, item) in table.iter_mut() {
        match item {
            Item::Value(v) => shift_value(v, secs),
            Item::Table(t) => shift_table(t, secs),
            Item::ArrayOfTables(a) => a.iter_mut().for_each(|t| shift_table(t, secs)),
            Item::None => {}
        }
    }
}

fn shift_value(v: &mut Value, secs: i64) {
    match v {
        Value::Datetime(dt) => {
            // The example's dates are a few years around today: a shift that leaves
            // the years TOML can write keeps the date as it was.
            let shifted = Time::parse_rfc3339(&dt.value().to_string())
                .ok()
                .and_then(|t| t.checked_add(Dur::from_secs(secs)))
                .and_then(|t| t.to_toml().ok());
            if let Some(shifted) = shifted {
                let decor = dt.decor().clone();
                *v = Value::from(shifted);
                *v.decor_mut() = decor;
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| shift_value(x, secs)),
        Value::InlineTable(t) => t.iter_mut().for_each(|(_, x)| shift_value(x, secs)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shifting_moves_dates_and_keeps_comments() {
        let text = "# c\ncreated_at = 2026-11-22T12:00:00Z # here\n[[previous]]\nvalid_until = 2026-11-21T12:00:00Z\n";
        let out = shift_dates(text, 3600).unwrap();
        assert_eq!(
            out,
            "# c\ncreated_at = 2026-11-22T13:00:00Z # here\n[[previous]]\nvalid_until = 2026-11-21T13:00:00Z\n"
        );
    }

    #[test]
    fn shipped_settings_parse_cleanly() {
        let (s, problems) = Settings::parse("keyrot.toml", SETTINGS);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(s.policy_config.len(), 5);
    }
}
