//! Whose secret a finding is: the store's keys name their current and previous
//! fingerprints; a fingerprint neither names is looked for in every version of every
//! key file in the store's history (an older secret, or one of a key since deleted).

use std::collections::{HashMap, HashSet};

use git2::{ObjectType, Oid, Repository};
use memchr::memmem;

use super::{Age, Finding};
use crate::error::{Error, Result};
use crate::store::Store;

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
    let older = in_history(repo, &store.settings.keys_dir, wanted)?;
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
/// `keys_dir` reachable from HEAD. Each distinct file version is read once; the walk
/// stops as soon as every fingerprint is placed.
fn in_history(
    repo: &Repository,
    keys_dir: &str,
    mut wanted: HashSet<String>,
) -> Result<HashMap<String, String>> {
    let git = |e| Error::git("searching the store's history", e);
    let mut found = HashMap::new();
    let Ok(head) = repo.head().and_then(|h| h.peel_to_commit()) else {
        return Ok(found);
    };
    let mut walk = repo.revwalk().map_err(git)?;
    walk.push(head.id()).map_err(git)?;
    let mut seen_trees: HashSet<Oid> = HashSet::new();
    let mut seen_blobs: HashSet<Oid> = HashSet::new();
    for oid in walk {
        let tree = repo
            .find_commit(oid.map_err(git)?)
            .map_err(git)?
            .tree()
            .map_err(git)?;
        let Ok(entry) = tree.get_path(std::path::Path::new(keys_dir)) else {
            continue;
        };
        let mut stack = vec![entry.id()];
        while let Some(id) = stack.pop() {
            if !seen_trees.insert(id) {
                continue;
            }
            for e in repo.find_tree(id).map_err(git)?.iter() {
                let name = String::from_utf8_lossy(e.name_bytes()).into_owned();
                match e.kind() {
                    Some(ObjectType::Tree) => stack.push(e.id()),
                    Some(ObjectType::Blob) if name.ends_with(".toml") && seen_blobs.insert(e.id()) => {
                        let blob = repo.find_blob(e.id()).map_err(git)?;
                        wanted.retain(|fp| {
                            let hit = memmem::find(blob.content(), fp.as_bytes()).is_some();
                            if hit {
                                found.insert(fp.clone(), name.trim_end_matches(".toml").to_string());
                            }
                            !hit
                        });
                        if wanted.is_empty() {
                            return Ok(found);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(found)
}
