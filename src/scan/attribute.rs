//! Whose secret a finding is: the store's keys name their current and previous
//! fingerprints; a fingerprint neither names is looked for in every version of every
//! key file in the store's history (an older secret, or one of a key since deleted).

use std::collections::{HashMap, HashSet};

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use git2::{Oid, Repository};
use memchr::memmem;

use super::{Age, Finding};
use crate::error::{Error, Result};
use crate::store::{repo, Store};

/// Fills in `key`, `secret` and `key_status` of each finding from `store` (loaded from
/// the work tree) and the history of `repo`'s HEAD.
pub(crate) fn attribute(findings: &mut [Finding], store: &Store, repo: &Repository) -> Result<()> {
    let mut known: HashMap<&str, (&str, Age, &'static str)> = HashMap::new();
    for key in &store.keys {
        let status = key.status.as_str();
        for p in &key.previous {
            known.insert(&p.fingerprint, (&key.id, Age::Previous, status));
        }
        if let Some(fp) = &key.fingerprint {
            known.insert(fp, (&key.id, Age::Current, status));
        }
    }
    let mut wanted = HashSet::new();
    for f in findings.iter_mut() {
        match known.get(f.fingerprint.as_str()) {
            Some((id, age, status)) => {
                f.key = Some(id.to_string());
                f.secret = *age;
                f.key_status = Some(status);
            }
            None => {
                wanted.insert(f.fingerprint.clone());
            }
        }
    }
    if wanted.is_empty() {
        return Ok(());
    }
    let older = keys_in_history(repo, &store.settings.keys_dir, wanted)?;
    for f in findings.iter_mut().filter(|f| f.key.is_none()) {
        if let Some(id) = older.get(&f.fingerprint) {
            f.key_status = store.key(id).map(|k| k.status.as_str());
            f.key = Some(id.clone());
            f.secret = Age::Older;
        }
    }
    Ok(())
}

/// The key (file stem) each of `wanted` appears in, in any version of a key file under
/// `keys_dir` reachable from HEAD, newest first; the walk stops as soon as every
/// fingerprint is placed. The versions come from `git log --raw` (git's tree diff is
/// about four times faster than libgit2's on a flat folder of 10,000 keys changed by
/// 1,000 commits); each is read once, through libgit2.
pub(crate) fn keys_in_history(
    repo: &Repository,
    keys_dir: &str,
    mut wanted: HashSet<String>,
) -> Result<HashMap<String, String>> {
    let mut found = HashMap::new();
    if repo.head().and_then(|h| h.peel_to_commit()).is_err() {
        return Ok(found);
    }
    let workdir = repo::workdir(repo);
    let mut child = Command::new("git")
        .arg("-C")
        .arg(&workdir)
        .args([
            "log",
            "-m",
            "--format=",
            "--raw",
            "--no-abbrev",
            "--no-renames",
            "HEAD",
            "--",
        ])
        .arg(keys_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Usage(format!("cannot run git to search the store's history: {e}")))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| Error::Usage("git log: no output".into()))?;
    let mut seen: HashSet<Oid> = HashSet::new();
    for line in BufReader::new(stdout).split(b'\n') {
        let line = line.map_err(|e| Error::Usage(format!("reading git log: {e}")))?;
        // `:100644 100644 <old> <new> M\tkeys/bot.toml`
        let Some((meta, path)) = split_tab(&line) else {
            continue;
        };
        let Some(new) = meta.split(|&b| b == b' ').nth(3) else {
            continue;
        };
        let Ok(id) = Oid::from_str(&String::from_utf8_lossy(new)) else {
            continue;
        };
        if id.is_zero() || !path.ends_with(b".toml") || !seen.insert(id) {
            continue;
        }
        let blob = repo
            .find_blob(id)
            .map_err(|e| Error::git("searching the store's history", e))?;
        let name = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
        let stem = String::from_utf8_lossy(name)
            .trim_end_matches(".toml")
            .to_string();
        wanted.retain(|fp| {
            let hit = memmem::find(blob.content(), fp.as_bytes()).is_some();
            if hit {
                found.insert(fp.clone(), stem.clone());
            }
            !hit
        });
        if wanted.is_empty() {
            break;
        }
    }
    // Done early or at the end: git is not needed any more.
    let _ = child.kill();
    let status = child.wait().map_err(|e| Error::Usage(format!("git log: {e}")))?;
    if !wanted.is_empty() && !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        return Err(Error::Usage(format!(
            "git log failed while searching the store's history: {}",
            err.trim()
        )));
    }
    Ok(found)
}

fn split_tab(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let tab = line.iter().position(|&b| b == b'\t')?;
    Some((&line[..tab], &line[tab + 1..]))
}
