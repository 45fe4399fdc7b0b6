//! Reading the store's raw files, either from the work tree (`plan`, `check`) or from a
//! committed tree (`apply`), through one [`Source`], with the limits every read obeys
//! (size, depth, no symbolic links). [`super::snapshot`] gathers what is read into one
//! in-memory snapshot with its digests.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::cache::Cache;
use crate::error::{Error, Result, StoreError};

/// How many folders deep keys may sit below the keys folder (`keys/a/b/…`): any
/// layout a team would choose, and a bound on what a hostile tree can make keyrot walk.
pub(crate) const MAX_DEPTH: usize = 32;

/// Largest key or policy file keyrot reads. Key files are a few hundred bytes; anything
/// near this is a mistake or an attack, and reading it whole would be a memory hazard.
pub(crate) const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Largest root file (`keyrot.toml`, `owners.toml`, `exceptions.toml`): an organisation
/// with a million keys has some 50,000 owners, 4 MB of `owners.toml`.
pub(crate) const MAX_ROOT_FILE_BYTES: u64 = 64 * MAX_FILE_BYTES;

/// The size limit for the store-relative file `rel`.
fn limit_of(rel: &str) -> u64 {
    match ROOT_FILES.contains(&rel) {
        true => MAX_ROOT_FILE_BYTES,
        false => MAX_FILE_BYTES,
    }
}

pub(crate) const SETTINGS_FILE: &str = "keyrot.toml";
pub(crate) const OWNERS_FILE: &str = "owners.toml";
pub(crate) const EXCEPTIONS_FILE: &str = "exceptions.toml";

/// The files at the store root that keyrot reads.
pub(crate) const ROOT_FILES: [&str; 3] = [SETTINGS_FILE, OWNERS_FILE, EXCEPTIONS_FILE];

/// A file's bytes, or `None` when it does not exist, or why it cannot be read.
pub(crate) type Bytes = Result<Option<Arc<[u8]>>, String>;

/// [`Bytes`] of a work-tree file, with whether it is executable.
pub(crate) type ModeBytes = Result<Option<(Arc<[u8]>, bool)>, String>;

/// One file, by its path relative to the store root (always `/`-separated).
#[derive(Clone, Debug)]
pub struct FileEntry {
    pub path: String,
    /// Shared with `watch`'s cache, so a re-plan copies no file it did not re-read.
    pub bytes: Arc<[u8]>,
}

/// Where to read a store from.
pub enum Source<'r> {
    WorkTree(PathBuf),
    /// The work tree, through a cache that re-reads only files invalidated since the
    /// last read (`watch`); folder listings are always fresh.
    Cached {
        root: PathBuf,
        cache: &'r Cache,
    },
    /// A commit's tree, optionally through a cache that keeps blobs by id and parsed
    /// keys (`audit verify` reads a thousand commits that differ in a few files).
    Commit {
        repo: &'r git2::Repository,
        tree: git2::Tree<'r>,
        cache: Option<&'r Cache>,
    },
}

pub(super) enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

/// One entry of a listed folder: its name (or why it has none keyrot can use).
pub(super) struct Listed {
    pub(super) name: Result<String, String>,
    pub(super) kind: Kind,
}

impl Source<'_> {
    /// The cache reads go through, if any.
    pub fn cache(&self) -> Option<&Cache> {
        match self {
            Source::Cached { cache, .. } => Some(cache),
            Source::Commit { cache, .. } => *cache,
            Source::WorkTree(_) => None,
        }
    }

    /// Reads one file. `Ok(None)` when it does not exist; `Err` is a problem with it.
    pub(super) fn read(&self, rel: &str) -> Bytes {
        match self {
            Source::WorkTree(root) => read_worktree(root, rel),
            Source::Cached { root, cache } => {
                without_mode(cache.read(root, rel, || read_worktree_checked(root, rel)))
            }
            Source::Commit { repo, tree, .. } => {
                let entry = match tree.get_path(Path::new(rel)) {
                    Ok(e) => e,
                    Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(None),
                    Err(e) => return Err(format!("cannot read from the commit: {}", e.message())),
                };
                match entry.filemode() {
                    0o100644 | 0o100755 => {}
                    0o120000 => return Err(SYMLINK.into()),
                    _ => return Err("is not a regular file".into()),
                }
                read_blob(repo, entry.id(), limit_of(rel))
            }
        }
    }

    /// Lists a folder. `Ok(None)` when it does not exist (git does not keep empty folders).
    pub(super) fn list(&self, rel: &str) -> Result<Option<Vec<Listed>>, String> {
        match self {
            Source::WorkTree(root) | Source::Cached { root, .. } => list_worktree(root, rel),
            Source::Commit { repo, tree, .. } => {
                let sub = match tree.get_path(Path::new(rel)) {
                    Ok(e) => e,
                    Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(None),
                    Err(e) => return Err(format!("cannot read from the commit: {}", e.message())),
                };
                if sub.kind() != Some(git2::ObjectType::Tree) {
                    return Err("is not a folder".into());
                }
                let sub = repo
                    .find_tree(sub.id())
                    .map_err(|e| format!("cannot read from the commit: {}", e.message()))?;
                Ok(Some(
                    sub.iter()
                        .map(|e| Listed {
                            name: std::str::from_utf8(e.name_bytes())
                                .map(str::to_string)
                                .map_err(|_| String::from_utf8_lossy(e.name_bytes()).into_owned()),
                            kind: match e.filemode() {
                                0o100644 | 0o100755 => Kind::File,
                                0o040000 => Kind::Dir,
                                0o120000 => Kind::Symlink,
                                _ => Kind::Other,
                            },
                        })
                        .collect(),
                ))
            }
        }
    }
}

/// Reads one work-tree file that no folder listing has vetted (a root file, or one a
/// `watch` event names): it is looked at before it is opened, so that a device or FIFO
/// put there is refused unopened.
fn read_worktree(root: &Path, rel: &str) -> Bytes {
    without_mode(read_worktree_checked(root, rel))
}

/// [`read_worktree`], with whether the file is executable.
fn read_worktree_checked(root: &Path, rel: &str) -> ModeBytes {
    match fs::symlink_metadata(root.join(rel)) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read: {e}")),
        Ok(m) if m.file_type().is_symlink() => return Err(SYMLINK.into()),
        Ok(m) if !m.is_file() => return Err("is not a regular file".into()),
        Ok(_) => {}
    }
    read_worktree_file(root, rel)
}

pub(super) fn without_mode(read: ModeBytes) -> Bytes {
    read.map(|read| read.map(|(bytes, _)| bytes))
}

/// Reads a work-tree file its folder's listing showed as a regular file, and whether it
/// is executable (git records that bit).
pub(super) fn read_worktree_file(root: &Path, rel: &str) -> ModeBytes {
    let limit = limit_of(rel);
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let path = root.join(rel);
    // One path lookup per file: open without following a symbolic link (nor waiting on
    // a FIFO swapped in since the listing), then ask the open file what it is. An
    // `lstat` before the `open` walked the path twice, a measurable part of loading
    // 100,000 keys.
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(&path);
    let mut file = match file {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(SYMLINK.into()),
        Err(e) => return Err(format!("cannot read: {e}")),
    };
    let meta = file.metadata().map_err(|e| format!("cannot read: {e}"))?;
    if !meta.is_file() {
        return Err("is not a regular file".into());
    }
    if meta.len() > limit {
        return Err(format!("is {} bytes, over the {limit}-byte limit", meta.len()));
    }
    let executable = meta.permissions().mode() & 0o100 != 0;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    (&mut file)
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > limit {
        return Err(format!("is over the {limit}-byte limit"));
    }
    Ok(Some((bytes.into(), executable)))
}

fn list_worktree(root: &Path, rel: &str) -> Result<Option<Vec<Listed>>, String> {
    let path = root.join(rel);
    match fs::symlink_metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read folder: {e}")),
        Ok(m) if m.file_type().is_symlink() => {
            return Err("is a symbolic link; the folder must be inside the store".into())
        }
        Ok(m) if !m.is_dir() => return Err("is not a folder".into()),
        Ok(_) => {}
    }
    let mut out = Vec::new();
    for entry in fs::read_dir(&path).map_err(|e| format!("cannot read folder: {e}"))? {
        let entry = entry.map_err(|e| format!("cannot read folder: {e}"))?;
        let ft = entry
            .file_type()
            .map_err(|e| format!("cannot read folder: {e}"))?;
        let kind = if ft.is_symlink() {
            Kind::Symlink
        } else if ft.is_dir() {
            Kind::Dir
        } else if ft.is_file() {
            Kind::File
        } else {
            Kind::Other
        };
        let name = entry
            .file_name()
            .into_string()
            .map_err(|raw| raw.to_string_lossy().into_owned());
        out.push(Listed { name, kind });
    }
    Ok(Some(out))
}

pub(super) const SYMLINK: &str = "is a symbolic link; keyrot reads only regular files in the store";
pub(super) const SYMLINK_FOLDER: &str =
    "is a symbolic link; keyrot reads only regular files and folders inside the store";

/// Reads one committed file's bytes, within the size limit.
fn read_blob(repo: &git2::Repository, id: git2::Oid, limit: u64) -> Bytes {
    let blob = repo
        .find_blob(id)
        .map_err(|e| format!("cannot read from the commit: {}", e.message()))?;
    if blob.size() as u64 > limit {
        return Err(format!("is {} bytes, over the {limit}-byte limit", blob.size()));
    }
    Ok(Some(blob.content().into()))
}

/// Reads many files of one commit, looking each folder's tree up once.
pub(super) fn read_commit_files(
    repo: &git2::Repository,
    tree: &git2::Tree,
    paths: &[String],
    cache: Option<&Cache>,
) -> Vec<Bytes> {
    let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
    let ids = match super::repo::blob_ids(repo, tree, &refs) {
        Ok(ids) => ids,
        Err(e) => return paths.iter().map(|_| Err(e.to_string())).collect(),
    };
    paths
        .iter()
        .map(|p| match (ids.get(p), cache) {
            (Some(id), Some(cache)) => cache.blob(*id, || read_blob(repo, *id, MAX_FILE_BYTES)),
            (Some(id), None) => read_blob(repo, *id, MAX_FILE_BYTES),
            (None, _) => Ok(None),
        })
        .collect()
}

/// Reads a file from disk for a command-line argument (plan files and the like).
pub(crate) fn read_user_file(path: &Path) -> Result<Vec<u8>> {
    let meta = fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.len() > MAX_FILE_BYTES * 64 {
        return Err(StoreError::TooLarge {
            path: path.to_path_buf(),
            bytes: meta.len(),
        }
        .into());
    }
    fs::read(path).map_err(|e| Error::io(path, e))
}
