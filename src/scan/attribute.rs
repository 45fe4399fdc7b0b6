//! Whose secret a finding is: the store's keys name their current and previous
//! fingerprints; a fingerprint neither names is looked for in every version of every
//! key file in the store's history (an older secret, or one of a key since deleted).

use std::collections::{HashMap, HashSet};

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
/// fingerprint is placed. The versions come from `git log --raw` (see
/// [`crate::store::repo::log_raw`]); each is read once, through libgit2.
pub(crate) fn keys_in_history(
    repo: &Repository,
    keys_dir: &str,
    mut wanted: HashSet<String>,
) -> Result<HashMap<String, String>> {
    let mut found = HashMap::new();
    if repo.head().and_then(|h| h.peel_to_commit()).is_err() {
        return Ok(found);
    }
    let mut seen: HashSet<Oid> = HashSet::new();
    let mut failed = None;
    repo::log_raw(repo, &["HEAD"], Some(keys_dir), |_, path, id| {
        if !path.ends_with(b".toml") || !seen.insert(id) {
            return true;
        }
        let blob = match repo.find_blob(id) {
            Ok(b) => b,
            Err(e) => {
                failed = Some(Error::git("searching the store's history", e));
                return false;
            }
        };
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
        !wanted.is_empty()
    })?;
    match failed {
        Some(e) => Err(e),
        None => Ok(found),
    }
}
