//! What `scan` reads: files under folders, the index's changes, or every blob
//! reachable from any ref. Each source reads its files on all cores and returns
//! findings in a stable order (path, then line; history oldest commit first).

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use git2::{ObjectType, Oid, Repository, Sort};

use super::finder::{Finder, Hit};
use super::{Location, Scanned};
use crate::error::{Error, Result};

/// Scans every file under `roots` (files or folders, recursively). `.git` folders are
/// skipped and symbolic links not followed (a link out of the tree would scan what
/// the user did not name). Paths are shown as given, joined with what was found.
pub(crate) fn scan_files(finder: &Finder, roots: &[PathBuf]) -> Result<Scanned> {
    let mut files = Vec::new();
    for root in roots {
        let meta = fs::symlink_metadata(root).map_err(|e| Error::io(root, e))?;
        if meta.is_dir() {
            walk(root, &mut files)?;
        } else if meta.is_file() {
            files.push(root.clone());
        }
    }
    let results = crate::parallel::map(&files, |path| -> Result<(Vec<Hit>, u64)> {
        let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
        Ok((finder.find(&bytes), bytes.len() as u64))
    });
    let mut out = Scanned::default();
    for (path, result) in files.iter().zip(results) {
        let (hits, len) = result?;
        out.files += 1;
        out.bytes += len;
        for hit in hits {
            let location = Location {
                commit: None,
                path: shown(path),
                line: hit.line,
            };
            out.push(location, hit);
        }
    }
    Ok(out)
}

/// `path` as a person typed it, without a leading `./`.
fn shown(path: &Path) -> String {
    let text = path.to_string_lossy();
    text.strip_prefix("./").unwrap_or(&text).to_string()
}

/// Every regular file under `dir`, sorted, skipping `.git` and symbolic links.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .collect::<std::io::Result<_>>()
        .map_err(|e| Error::io(dir, e))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let kind = entry.file_type().map_err(|e| Error::io(entry.path(), e))?;
        if kind.is_dir() {
            if entry.file_name() != ".git" {
                walk(&entry.path(), out)?;
            }
        } else if kind.is_file() {
            out.push(entry.path());
        }
    }
    Ok(())
}

/// Scans what the index would commit: every staged file whose content differs from
/// HEAD's (every staged file before the first commit). For a pre-commit hook, so a
/// secret already committed does not block every later commit; `--git` finds those.
pub(crate) fn scan_staged(finder: &Finder, repo: &Repository) -> Result<Scanned> {
    let git = |e| Error::git("reading the index", e);
    let index = repo.index().map_err(git)?;
    let head = match repo.head() {
        Ok(h) => Some(h.peel_to_tree().map_err(git)?),
        Err(_) => None,
    };
    let mut blobs = Vec::new();
    for entry in index.iter() {
        let path = String::from_utf8_lossy(&entry.path).into_owned();
        let unchanged = head
            .as_ref()
            .and_then(|t| t.get_path(Path::new(&path)).ok())
            .is_some_and(|e| e.id() == entry.id);
        if !unchanged && entry.mode & 0o170000 != 0o160000 {
            blobs.push((None, path, entry.id));
        }
    }
    scan_blobs(finder, repo, blobs)
}

/// Scans every blob reachable from any ref (and HEAD), once each: the commits are
/// walked oldest first and a tree already seen is not walked again, so a blob is
/// reported at the first commit and path that held it (where it came in).
pub(crate) fn scan_history(finder: &Finder, repo: &Repository) -> Result<Scanned> {
    let git = |e| Error::git("walking the history", e);
    let mut walk = repo.revwalk().map_err(git)?;
    walk.set_sorting(Sort::TOPOLOGICAL | Sort::REVERSE).map_err(git)?;
    let mut tips = 0;
    for reference in repo.references().map_err(git)? {
        let reference = reference.map_err(git)?;
        if let Ok(commit) = reference.peel_to_commit() {
            walk.push(commit.id()).map_err(git)?;
            tips += 1;
        }
    }
    if let Ok(head) = repo.head().and_then(|h| h.peel_to_commit()) {
        walk.push(head.id()).map_err(git)?;
        tips += 1;
    }
    if tips == 0 {
        return Ok(Scanned::default());
    }
    let mut seen_trees = HashSet::new();
    let mut seen_blobs = HashSet::new();
    let mut blobs = Vec::new();
    for oid in walk {
        let commit = repo.find_commit(oid.map_err(git)?).map_err(git)?;
        let tree = commit.tree().map_err(git)?;
        if !seen_trees.insert(tree.id()) {
            continue;
        }
        let commit_id = commit.id().to_string();
        new_blobs(
            repo,
            &tree,
            "",
            &mut seen_trees,
            &mut seen_blobs,
            &mut |path, id| {
                blobs.push((Some(commit_id.clone()), path, id));
            },
        )?;
    }
    scan_blobs(finder, repo, blobs)
}

/// Calls `found` for each blob under `tree` not seen before, skipping subtrees seen
/// before (an unchanged folder of an unchanged commit costs one set lookup).
fn new_blobs(
    repo: &Repository,
    tree: &git2::Tree,
    prefix: &str,
    seen_trees: &mut HashSet<Oid>,
    seen_blobs: &mut HashSet<Oid>,
    found: &mut impl FnMut(String, Oid),
) -> Result<()> {
    let git = |e| Error::git("reading a tree", e);
    let mut subtrees = Vec::new();
    for entry in tree.iter() {
        let name = String::from_utf8_lossy(entry.name_bytes()).into_owned();
        let path = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        match entry.kind() {
            Some(ObjectType::Tree) if seen_trees.insert(entry.id()) => subtrees.push((entry.id(), path)),
            Some(ObjectType::Blob) if seen_blobs.insert(entry.id()) => found(path, entry.id()),
            _ => {}
        }
    }
    for (id, path) in subtrees {
        let sub = repo.find_tree(id).map_err(git)?;
        new_blobs(repo, &sub, &path, seen_trees, seen_blobs, found)?;
    }
    Ok(())
}

/// Reads and scans blobs on all cores (each thread with its own handle on the object
/// database: a libgit2 repository is not shared between threads).
fn scan_blobs(
    finder: &Finder,
    repo: &Repository,
    blobs: Vec<(Option<String>, String, Oid)>,
) -> Result<Scanned> {
    let git_dir = repo.path().to_path_buf();
    let chunks = crate::parallel::map_chunks(&blobs, |chunk| -> Result<Vec<(Vec<Hit>, u64)>> {
        let repo = Repository::open(&git_dir).map_err(|e| Error::git("opening the repository", e))?;
        let odb = repo
            .odb()
            .map_err(|e| Error::git("opening the object database", e))?;
        chunk
            .iter()
            .map(|(_, path, id)| {
                let object = odb
                    .read(*id)
                    .map_err(|e| Error::git(format!("reading {path} ({id})"), e))?;
                Ok((finder.find(object.data()), object.data().len() as u64))
            })
            .collect()
    });
    let mut out = Scanned::default();
    let mut results = Vec::with_capacity(blobs.len());
    for chunk in chunks {
        results.extend(chunk?);
    }
    for ((commit, path, _), (hits, len)) in blobs.into_iter().zip(results) {
        out.files += 1;
        out.bytes += len;
        for hit in hits {
            let location = Location {
                commit: commit.clone(),
                path: path.clone(),
                line: hit.line,
            };
            out.push(location, hit);
        }
    }
    Ok(out)
}
