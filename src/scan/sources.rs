//! What `scan` reads: files under folders, the index's changes, or every blob
//! reachable from any ref. Each source reads its files on all cores and returns
//! findings in a stable order (path, then line; history oldest commit first).

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use git2::{Oid, Repository};

use super::finder::{Finder, Hit};
use super::{Location, Scanned};
use crate::error::{Error, InputError, Result};

/// Scans every file under `roots` (files or folders, recursively). `.git` folders are
/// skipped and symbolic links inside folders not followed (a link out of the tree would
/// scan what the user did not name). Paths are shown as given, joined with what was found.
pub(crate) fn scan_files(finder: &Finder, roots: &[PathBuf]) -> Result<Scanned> {
    let mut files = Vec::new();
    for root in roots {
        // What the user named is followed (a symbolic link they typed is what they
        // mean); what a folder holds is not.
        let meta = fs::metadata(root).map_err(|e| Error::io(root, e))?;
        if meta.is_dir() {
            walk(root, &mut files)?;
        } else if meta.is_file() {
            files.push(root.clone());
        } else {
            return Err(InputError::NotFileOrFolder(root.to_path_buf()).into());
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
    if repo.is_bare() {
        return Err(InputError::NoIndex.into());
    }
    let mut blobs = Vec::new();
    crate::store::repo::staged_raw(repo, |path, id| {
        blobs.push((None, String::from_utf8_lossy(path).into_owned(), id));
    })?;
    scan_blobs(finder, repo, blobs)
}

/// Scans every blob reachable from any ref (and HEAD), once each, reported at the
/// first commit (oldest first) and path that brought it in. The blobs come from `git
/// log --all --raw` (each commit against each parent; root commits against nothing):
/// git's tree diff skips unchanged folders and files by id and is several times faster
/// than walking every commit's whole tree with libgit2 on a flat folder of 10,000
/// files. Each blob is then read once, through libgit2, on all cores.
pub(crate) fn scan_history(finder: &Finder, repo: &Repository) -> Result<Scanned> {
    let mut blobs = Vec::new();
    let mut seen = HashSet::new();
    crate::store::repo::log_raw(repo, &["--all", "--reverse"], None, |commit, path, id| {
        if seen.insert(id) {
            blobs.push((
                Some(commit.to_string()),
                String::from_utf8_lossy(path).into_owned(),
                id,
            ));
        }
        true
    })?;
    scan_blobs(finder, repo, blobs)
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
