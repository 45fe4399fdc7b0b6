//! The apply journal: what an apply is about to make true, written (and synced) before
//! the branch moves, deleted when everything after the move is done. Finding one means
//! an apply was interrupted; [`recover`] finishes it (the branch moved) or rolls it back
//! (it did not), so a crash never leaves a committed fingerprint without its secret
//! file, nor a store that looks dirty forever.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use git2::Oid;
use serde::{Deserialize, Serialize};

use super::lock::keyrot_dir;
use super::Delivered;
use crate::error::{ApplyError, Error, Interrupted, Result};
use crate::failpoint;
use crate::secret::SecretsDir;
use crate::workspace::Workspace;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Journal {
    pub txid: String,
    /// `refs/heads/…`
    pub branch: String,
    /// The commit the apply started from, and the one it makes.
    pub base: String,
    pub commit: String,
    pub secrets_dir: PathBuf,
    /// Keys with a pending secret `<id>.secret.<txid>.pending`, with its fingerprint.
    pub pending: Vec<(String, String)>,
    /// Keys revoked by this apply, whose secret files are removed.
    pub revoked: Vec<String>,
    /// Store-relative key files the commit changes.
    pub edited: Vec<String>,
    /// Whether new secrets stay in the secrets folder (`false`: they were delivered to
    /// Vault, and the pending files are deleted instead of promoted).
    #[serde(default = "yes")]
    pub keep_local: bool,
    /// The shared remote the commit is pushed to: it has landed when the remote holds
    /// it, not before.
    #[serde(default)]
    pub remote: Option<String>,
}

fn yes() -> bool {
    true
}

fn path(git_dir: &Path) -> PathBuf {
    keyrot_dir(git_dir).join("journal")
}

/// Writes `<git dir>/keyrot/<name>` durably: a temp file, synced, renamed into place,
/// folder synced. A crash leaves the old file or the new one, never a torn one.
pub(super) fn write_durable(git_dir: &Path, name: &str, body: &[u8]) -> Result<()> {
    let dir = keyrot_dir(git_dir);
    fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let tmp = dir.join(format!("{name}.tmp"));
    crate::state_file::create(&tmp)
        .and_then(|mut f| f.write_all(body).and_then(|()| f.sync_all()))
        .map_err(|e| Error::io(&tmp, e))?;
    fs::rename(&tmp, dir.join(name)).map_err(|e| Error::io(&tmp, e))?;
    sync_dir(&dir)
}

/// Removes `<git dir>/keyrot/<name>` durably, if it exists.
pub(super) fn remove_durable(git_dir: &Path, name: &str) -> Result<()> {
    let p = keyrot_dir(git_dir).join(name);
    match fs::remove_file(&p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(p, e)),
        _ => sync_dir(&keyrot_dir(git_dir)),
    }
}

pub(super) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

impl Journal {
    /// Writes the journal durably.
    pub(crate) fn write(&self, git_dir: &Path) -> Result<()> {
        // Never a default in place of what failed to encode: an empty journal would
        // make a crash after the commit unrecoverable.
        let body = serde_json::to_vec_pretty(self).map_err(|e| ApplyError::Encode {
            what: "the apply journal",
            why: e.to_string(),
        })?;
        write_durable(git_dir, "journal", &body)
    }

    pub(crate) fn read(git_dir: &Path) -> Result<Option<Journal>> {
        let p = path(git_dir);
        match crate::state_file::read(&p) {
            Ok(None) => Ok(None),
            Ok(Some(bytes)) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                Error::from(ApplyError::JournalUnreadable {
                    path: p.clone(),
                    journal: crate::error::Journal::Apply,
                    why: e.to_string(),
                })
            }),
            Err(e) => Err(Error::io(p, e)),
        }
    }

    pub(crate) fn remove(git_dir: &Path) -> Result<()> {
        let p = path(git_dir);
        match fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(p, e)),
            _ => sync_dir(&keyrot_dir(git_dir)),
        }
    }
}

/// What [`recover`] did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Recovery {
    /// The interrupted apply had landed; its secrets and work tree are now in place.
    Finished { commit: String },
    /// It had not landed; its pending secrets are deleted.
    RolledBack { base: String },
}

fn oid(s: &str) -> Result<Oid> {
    Oid::from_str(s).map_err(|e| Error::git("reading the apply journal", e))
}

/// Finishes or rolls back an interrupted apply, if the journal names one. The caller
/// holds the store's lock.
pub(crate) fn recover(ws: &Workspace) -> Result<Option<Recovery>> {
    let git_dir = ws.repo.path().to_path_buf();
    let Some(j) = Journal::read(&git_dir)? else {
        return Ok(None);
    };
    let tip = ws
        .repo
        .refname_to_id(&j.branch)
        .map_err(|e| Error::git(format!("reading {}", j.branch), e))?;
    let secrets = SecretsDir::existing(&j.secrets_dir);
    if tip == oid(&j.commit)? {
        complete(ws, &j, &[])?;
        Ok(Some(Recovery::Finished { commit: j.commit }))
    } else if tip == oid(&j.base)? {
        if let Some(secrets) = secrets {
            for (id, _) in &j.pending {
                secrets.discard(id, &j.txid);
            }
        }
        Journal::remove(&git_dir)?;
        Ok(Some(Recovery::RolledBack { base: j.base }))
    } else {
        Err(ApplyError::JournalBranchMoved(Box::new(Interrupted {
            journal: path(&git_dir),
            branch: j.branch,
            base: j.base,
            commit: j.commit,
            tip: tip.to_string(),
            secrets_dir: j.secrets_dir,
        }))
        .into())
    }
}

/// Everything after the commit point, each step idempotent so that recovery can redo
/// it: deliver the pending secrets, remove revoked keys' secrets, bring the work tree
/// and index to the commit, and delete the journal. `written` holds the new key files'
/// contents when the caller has them (a live apply); recovery reads them from the commit.
pub(crate) fn complete(ws: &Workspace, j: &Journal, written: &[(String, String)]) -> Result<Vec<Delivered>> {
    let git_dir = ws.repo.path().to_path_buf();
    let mut delivered = Vec::new();
    if !j.pending.is_empty() || !j.revoked.is_empty() {
        let secrets = SecretsDir::existing(&j.secrets_dir)
            .ok_or_else(|| Error::from(ApplyError::SecretsFolderGone(j.secrets_dir.clone())))?;
        for (id, fingerprint) in &j.pending {
            let path = if j.keep_local {
                secrets.promote_if_pending(id, &j.txid, fingerprint)?
            } else {
                secrets.discard(id, &j.txid);
                secrets.remove(id)?;
                PathBuf::new()
            };
            delivered.push(Delivered {
                key: id.clone(),
                fingerprint: fingerprint.clone(),
                path,
            });
        }
        failpoint::pause("apply-after-promote");
        for id in &j.revoked {
            secrets.remove(id)?;
        }
        secrets.sync()?;
    }
    update_worktree(ws, j, written)?;
    failpoint::pause("apply-after-worktree");
    Journal::remove(&git_dir)?;
    Ok(delivered)
}

/// Writes the commit's version of each edited key file into the work tree (atomically,
/// by rename) and its index entry, so `git status` is clean. A file that differs from
/// both the base and the new commit was edited by someone since: it is left alone and
/// reported rather than overwritten.
fn update_worktree(ws: &Workspace, j: &Journal, written: &[(String, String)]) -> Result<()> {
    let repo = &ws.repo;
    let tree_of = |id: &str| -> Result<git2::Tree<'_>> {
        repo.find_commit(oid(id)?)
            .and_then(|c| c.tree())
            .map_err(|e| Error::git("reading a commit's tree", e))
    };
    let new_tree = tree_of(&j.commit)?;
    let base_tree = tree_of(&j.base)?;
    let edited: Vec<&str> = j.edited.iter().map(String::as_str).collect();
    let new_ids = crate::store::repo::blob_ids(repo, &new_tree, &edited)?;
    let base_ids = crate::store::repo::blob_ids(repo, &base_tree, &edited)?;
    let blob = |ids: &std::collections::HashMap<String, Oid>, rel: &str| -> Option<Vec<u8>> {
        Some(repo.find_blob(*ids.get(rel)?).ok()?.content().to_vec())
    };
    let written: std::collections::HashMap<&str, &str> =
        written.iter().map(|(p, t)| (p.as_str(), t.as_str())).collect();
    let mut index = repo.index().map_err(|e| Error::git("reading the index", e))?;
    // The handle may hold the index as it was when first read; a shared apply's
    // fast-forward (`git merge --ff-only`) has changed it on disk since.
    index
        .read(false)
        .map_err(|e| Error::git("reading the index", e))?;
    let mut conflicts = Vec::new();
    // Files already at the new version, and new versions written beside their files.
    let mut in_place: Vec<&String> = Vec::new();
    let mut staged: Vec<(&String, PathBuf, PathBuf, Option<Vec<u8>>)> = Vec::new();
    for rel in &j.edited {
        let new = match written.get(rel.as_str()) {
            Some(text) => text.as_bytes().to_vec(),
            None => match blob(&new_ids, rel) {
                Some(b) => b,
                None => continue,
            },
        };
        let path = ws.root.join(rel);
        let current = fs::read(&path).ok();
        if current.as_deref() == Some(&new[..]) {
            in_place.push(rel);
            continue;
        }
        if current.is_some() && current != blob(&base_ids, rel) {
            conflicts.push(rel.clone());
            continue;
        }
        let tmp = path.with_extension("toml.keyrot-tmp");
        File::create(&tmp)
            .and_then(|mut f| f.write_all(&new))
            .map_err(|e| Error::io(&tmp, e))?;
        staged.push((rel, path, tmp, current));
    }
    // All their bytes on disk at once, then the renames: renaming a file just written
    // over another makes ext4 write it out first, one file at a time (2.3 s of a
    // 10,000-key apply, `perf`: `rename` and the disk).
    if !staged.is_empty() {
        crate::durable::sync_filesystem(&ws.root)?;
    }
    failpoint::pause("apply-worktree-staged");
    for (rel, path, tmp, seen) in staged {
        // Someone saved the file since it was read above: their edit stays.
        if fs::read(&path).ok() != seen {
            let _ = fs::remove_file(&tmp);
            conflicts.push(rel.clone());
            continue;
        }
        fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
        in_place.push(rel);
    }
    for rel in in_place {
        // The index entry is built from the file's metadata and the blob id already
        // known from the commit: `add_path` would re-read, re-hash and look up
        // attributes for every file, dozens of system calls each.
        let path = ws.root.join(rel);
        let meta = fs::metadata(&path).map_err(|e| Error::io(&path, e))?;
        index
            .add(&index_entry(rel, &meta, new_ids[rel.as_str()]))
            .map_err(|e| Error::git(format!("updating the index for {rel}"), e))?;
    }
    index.write().map_err(|e| Error::git("writing the index", e))?;
    // Durable before the journal goes: after a power cut the work tree is whole.
    crate::durable::sync_filesystem(&ws.root)?;
    if !conflicts.is_empty() {
        return Err(ApplyError::WorkTreeChanged {
            files: conflicts,
            commit: j.commit.clone(),
        }
        .into());
    }
    Ok(())
}

fn index_entry(rel: &str, meta: &fs::Metadata, id: Oid) -> git2::IndexEntry {
    use std::os::unix::fs::MetadataExt;
    // The index stores 32-bit fields; git truncates the same way.
    let time = |secs: i64, nanos: i64| git2::IndexTime::new(secs as i32, nanos as u32);
    git2::IndexEntry {
        ctime: time(meta.ctime(), meta.ctime_nsec()),
        mtime: time(meta.mtime(), meta.mtime_nsec()),
        dev: meta.dev() as u32,
        ino: meta.ino() as u32,
        mode: if meta.mode() & 0o111 != 0 {
            0o100755
        } else {
            0o100644
        },
        uid: meta.uid(),
        gid: meta.gid(),
        file_size: meta.len() as u32,
        id,
        flags: rel.len().min(0xfff) as u16,
        flags_extended: 0,
        path: rel.as_bytes().to_vec(),
    }
}
