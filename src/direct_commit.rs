//! A commit of a few named files, made directly rather than by an apply: `init`'s first
//! commit, `owner depart`. Built on HEAD's tree, so whatever else the index or work tree
//! holds is left alone; signed when git's settings (or `[commit] sign`) say so.

use std::path::Path;

use git2::Repository;

use crate::error::{Error, Result};
use crate::store::{repo, Settings};

/// Refuses `files` (paths under `folder`) when any has uncommitted changes: a direct
/// commit must hold exactly its own change (`what`: "the compromise", "the import").
pub(crate) fn refuse_uncommitted(
    git_repo: &Repository,
    folder: &str,
    files: &[String],
    what: &str,
) -> Result<()> {
    let dirty = repo::dirty_files(git_repo, folder, files)?;
    if dirty.is_empty() {
        return Ok(());
    }
    Err(Error::Usage(format!(
        "{} ha{} uncommitted changes; commit or discard them first, so this commit records {what} alone",
        dirty.join(", "),
        if dirty.len() == 1 { "s" } else { "ve" }
    )))
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
