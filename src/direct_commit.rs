//! A commit of a few named files, made directly rather than by an apply: `init`'s first
//! commit, `owner depart`, `scan --mark-compromised`, `usage import`. Built on HEAD's tree, so whatever else the index or work tree
//! holds is left alone; signed when git's settings (or `[commit] sign`) say so.

use std::path::Path;

use git2::Repository;

use crate::error::{Error, Result, StoreError};
use crate::store::{repo, Settings};

/// One file's edit for [`commit_edits`]: its path in the store, its text before and
/// after.
pub(crate) struct Edit {
    pub path: String,
    pub before: String,
    pub after: String,
}

impl Edit {
    /// Reads the store file `rel` under `root` and edits it with `f`, in place: a
    /// format-preserving TOML editor keeps everything `f` does not change.
    pub(crate) fn toml(
        root: &Path,
        rel: &str,
        f: impl FnOnce(&mut toml_edit::DocumentMut) -> Result<()>,
    ) -> Result<Edit> {
        let path = root.join(rel);
        let before = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let mut doc: toml_edit::DocumentMut = before.parse().map_err(|e| StoreError::Edit {
            path: rel.to_string(),
            why: format!("cannot edit: {e}"),
        })?;
        f(&mut doc)?;
        Ok(Edit {
            path: rel.to_string(),
            after: doc.to_string(),
            before,
        })
    }
}

/// Writes `edits` to the work tree under `root` and commits exactly them. Refuses
/// files with uncommitted changes (paths under `folder`), so that the commit holds
/// `what` ("the import", "the departure") alone; if no commit can be made (a signature
/// that fails, a branch that moved), every file is put back as it was.
pub(crate) fn commit_edits(
    git_repo: &Repository,
    root: &Path,
    settings: &Settings,
    folder: &str,
    edits: &[Edit],
    what: &str,
    message: &str,
) -> Result<String> {
    let paths: Vec<String> = edits.iter().map(|e| e.path.clone()).collect();
    let dirty = repo::dirty_files(git_repo, folder, &paths)?;
    if !dirty.is_empty() {
        return Err(StoreError::Uncommitted {
            paths: dirty,
            what: what.to_string(),
        }
        .into());
    }
    let write = |text: fn(&Edit) -> &String| -> Result<()> {
        for e in edits {
            let path = root.join(&e.path);
            std::fs::write(&path, text(e)).map_err(|err| Error::io(&path, err))?;
        }
        Ok(())
    };
    write(|e| &e.after)?;
    let files: Vec<(String, String)> = edits.iter().map(|e| (e.path.clone(), e.after.clone())).collect();
    commit_files(git_repo, settings, &files, message).inspect_err(|_| {
        // Best effort: the commit's own error is the one to report.
        let _ = write(|e| &e.before);
    })
}

/// Commits exactly `files` (already written to the work tree) on the current branch,
/// on top of HEAD when there is one, and stages them, so `git status` shows them
/// clean; whatever else the index or work tree holds stays as it was.
pub(crate) fn commit_files(
    git_repo: &Repository,
    settings: &Settings,
    files: &[(String, String)],
    message: &str,
) -> Result<String> {
    let git = |e| Error::git("making the store's commit", e);
    let parent = match git_repo.head() {
        Ok(h) => Some(h.peel_to_commit().map_err(git)?),
        Err(_) => None,
    };
    let base = match &parent {
        Some(p) => Some(p.tree().map_err(git)?),
        None => None,
    };
    let mut changes = Vec::with_capacity(files.len());
    for (rel, text) in files {
        let blob = git_repo.blob(text.as_bytes()).map_err(git)?;
        changes.push((rel.split('/').collect::<Vec<_>>(), blob));
    }
    let tree_id = crate::apply::write_tree(git_repo, base.as_ref(), &changes)?;
    let tree = git_repo.find_tree(tree_id).map_err(git)?;
    let sig = repo::signature(git_repo, settings)?;
    // Signed when git's settings say so (`commit.gpgSign`), like every commit git makes.
    let signer = crate::signing::Signer::from_config(git_repo, settings, &sig)?;
    let parents: Vec<&git2::Commit> = parent.iter().collect();
    let oid = crate::signing::write_commit(git_repo, &sig, message, &tree, &parents, signer.as_ref())?;
    // HEAD names the branch (in a new repository, one that does not exist yet).
    let head = git_repo.find_reference("HEAD").map_err(git)?;
    let branch = head.symbolic_target().unwrap_or("refs/heads/main").to_string();
    let reflog = message.lines().next().unwrap_or_default();
    match &parent {
        Some(p) => git_repo.reference_matching(&branch, oid, true, p.id(), reflog),
        None => git_repo.reference(&branch, oid, false, reflog),
    }
    .map_err(git)?;
    let mut index = git_repo.index().map_err(git)?;
    for (rel, _) in files {
        index.add_path(Path::new(rel)).map_err(git)?;
    }
    index.write().map_err(git)?;
    Ok(oid.to_string())
}
