//! Reading the store's raw files, either from the work tree (`plan`, `check`) or from a
//! committed tree (`apply`), into one in-memory snapshot with its digests.
//!
//! Everything downstream parses this snapshot, so "what did keyrot read" is always one
//! value, and the digests in a plan describe exactly the bytes that produced it.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::cache::Cache;
use super::layout::{self, PolicyFolderFile};
use crate::digest::hex;
use crate::error::StoreError;
use crate::error::{Error, Problem, Result};

/// How many folders deep keys may sit below the keys folder (`keys/a/b/…`): any
/// layout a team would choose, and a bound on what a hostile tree can make keyrot walk.
pub const MAX_DEPTH: usize = 32;

/// Largest key or policy file keyrot reads. Key files are a few hundred bytes; anything
/// near this is a mistake or an attack, and reading it whole would be a memory hazard.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Largest root file (`keyrot.toml`, `owners.toml`, `exceptions.toml`): an organisation
/// with a million keys has some 50,000 owners, 4 MB of `owners.toml`.
pub const MAX_ROOT_FILE_BYTES: u64 = 64 * MAX_FILE_BYTES;

/// The size limit for the store-relative file `rel`.
fn limit_of(rel: &str) -> u64 {
    match ROOT_FILES.contains(&rel) {
        true => MAX_ROOT_FILE_BYTES,
        false => MAX_FILE_BYTES,
    }
}

pub const SETTINGS_FILE: &str = "keyrot.toml";
pub const OWNERS_FILE: &str = "owners.toml";
pub const EXCEPTIONS_FILE: &str = "exceptions.toml";

/// The files at the store root that keyrot reads.
pub const ROOT_FILES: [&str; 3] = [SETTINGS_FILE, OWNERS_FILE, EXCEPTIONS_FILE];

/// A file's bytes, or `None` when it does not exist, or why it cannot be read.
pub type Bytes = Result<Option<Arc<[u8]>>, String>;

/// [`Bytes`] of a work-tree file, with whether it is executable.
pub type ModeBytes = Result<Option<(Arc<[u8]>, bool)>, String>;

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

enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

struct Listed {
    name: Result<String, String>,
    kind: Kind,
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
    fn read(&self, rel: &str) -> Bytes {
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
    fn list(&self, rel: &str) -> Result<Option<Vec<Listed>>, String> {
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

fn without_mode(read: ModeBytes) -> Bytes {
    read.map(|read| read.map(|(bytes, _)| bytes))
}

/// Reads a work-tree file its folder's listing showed as a regular file, and whether it
/// is executable (git records that bit).
fn read_worktree_file(root: &Path, rel: &str) -> ModeBytes {
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

const SYMLINK: &str = "is a symbolic link; keyrot reads only regular files in the store";
const SYMLINK_FOLDER: &str =
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
fn read_commit_files(
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

/// The raw bytes of a store, as read from one source.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub settings: Option<FileEntry>,
    pub owners: Option<FileEntry>,
    pub exceptions: Option<FileEntry>,
    pub keys: Vec<FileEntry>,
    pub policies: Vec<FileEntry>,
    /// The policy tests (`<dir>/<policy>_test.rhai`), never loaded as policies.
    pub policy_tests: Vec<FileEntry>,
    /// Files that could not be read, or should not be there.
    pub problems: Vec<Problem>,
    /// What each folder read held besides the files taken from it.
    pub folders: Vec<Listing>,
    /// The files read from the work tree's folders that are executable (sorted).
    pub executable: Vec<String>,
}

/// A folder as listed when the store was read: whether it was there, and the entries
/// not read from it (editors' artifacts, a `.gitkeep`). With the files read, that is
/// everything `git status` would look at in it.
#[derive(Debug)]
pub struct Listing {
    /// Store-relative, without a trailing `/`.
    pub dir: String,
    /// `false` when the folder does not exist.
    pub exists: bool,
    /// Store-relative paths of the entries skipped, each with whether it is a regular
    /// file (else a folder, a symbolic link or something stranger).
    pub skipped: Vec<(String, bool)>,
}

impl Snapshot {
    /// Reads `keyrot.toml`, `owners.toml` and `exceptions.toml`.
    pub fn read_root(source: &Source) -> Snapshot {
        let mut snap = Snapshot::default();
        for name in ROOT_FILES {
            match source.read(name) {
                Ok(Some(bytes)) => {
                    let entry = Some(FileEntry {
                        path: name.to_string(),
                        bytes,
                    });
                    match name {
                        SETTINGS_FILE => snap.settings = entry,
                        OWNERS_FILE => snap.owners = entry,
                        _ => snap.exceptions = entry,
                    }
                }
                Ok(None) => {}
                Err(msg) => snap.problems.push(Problem::new(name, msg)),
            }
        }
        snap
    }

    /// Reads the key files (`<dir>/*.toml`), policy files (`<dir>/*.rhai`) and, apart,
    /// the policy tests (`*_test.rhai`). Anything else in the keys folder is a problem,
    /// as a key file with a wrong extension would otherwise be silently ignored.
    pub fn read_folders(&mut self, source: &Source, keys_dir: &str, policies_dir: &str) {
        self.keys = self.read_folder(source, keys_dir, pick_key_file);
        self.read_policies(source, policies_dir);
    }

    /// Reads the policy files and, apart, the policy tests.
    pub fn read_policies(&mut self, source: &Source, policies_dir: &str) {
        let policies = self.read_folder(source, policies_dir, |name, _| {
            match layout::policy_folder_file(name) {
                PolicyFolderFile::Policy | PolicyFolderFile::Test => Pick::Take,
                // `deny.rhai.bak`, `deny.rhai.off`: a rule someone may believe is in force.
                PolicyFolderFile::Misnamed => Pick::Refuse(
                    "looks like a policy but is not named *.rhai, so it is not in force; rename or remove it",
                ),
                PolicyFolderFile::Other => Pick::Skip,
            }
        });
        (self.policy_tests, self.policies) = policies
            .into_iter()
            .partition(|f| super::layout::is_policy_test(&f.path));
    }

    fn read_folder(
        &mut self,
        source: &Source,
        dir: &str,
        pick: impl Fn(&str, bool) -> Pick,
    ) -> Vec<FileEntry> {
        let mut wanted = Vec::new();
        self.list_folder(source, dir, &pick, &mut wanted);
        self.read_files(source, wanted)
    }

    /// Lists a folder into `wanted` (the paths to read) and [`Snapshot::folders`]; a
    /// folder `pick` admits is listed in turn (the keys folder's team folders), down to
    /// [`MAX_DEPTH`] folders below `dir`.
    fn list_folder(
        &mut self,
        source: &Source,
        dir: &str,
        pick: &impl Fn(&str, bool) -> Pick,
        wanted: &mut Vec<String>,
    ) {
        // A work list, not recursion: a committed tree can nest as deep as its author
        // likes, and must not exhaust the stack.
        let mut todo = vec![(dir.to_string(), 0)];
        while let Some((dir, depth)) = todo.pop() {
            for folder in self.list_one(source, &dir, pick, wanted) {
                if depth == MAX_DEPTH {
                    self.problems.push(Problem::new(
                        folder,
                        format!("folders nest more than {MAX_DEPTH} deep in the keys folder"),
                    ));
                } else {
                    todo.push((folder, depth + 1));
                }
            }
        }
    }

    /// Lists one folder: its files to read go into `wanted`, its folders to list are
    /// returned.
    fn list_one(
        &mut self,
        source: &Source,
        dir: &str,
        pick: &impl Fn(&str, bool) -> Pick,
        wanted: &mut Vec<String>,
    ) -> Vec<String> {
        let listed = match source.list(dir) {
            Ok(Some(listed)) => listed,
            Ok(None) => {
                self.folders.push(Listing {
                    dir: dir.to_string(),
                    exists: false,
                    skipped: Vec::new(),
                });
                return Vec::new();
            }
            Err(msg) => {
                self.problems.push(Problem::new(format!("{dir}/"), msg));
                return Vec::new();
            }
        };
        let mut skipped = Vec::new();
        let mut folders = Vec::new();
        for item in listed {
            let name = match item.name {
                Ok(name) => name,
                Err(lossy) => {
                    self.problems.push(Problem::new(
                        format!("{dir}/{lossy}"),
                        "file name is not valid UTF-8",
                    ));
                    continue;
                }
            };
            match admit(format!("{dir}/{name}"), &name, &item.kind, pick) {
                Ok(Admit::Read(path)) => wanted.push(path),
                Ok(Admit::Descend(path)) => folders.push(path),
                Ok(Admit::Skip) => skipped.push((format!("{dir}/{name}"), matches!(item.kind, Kind::File))),
                Err(problem) => {
                    // Still part of what `git status` looks at in this folder.
                    skipped.push((problem.path.clone(), matches!(item.kind, Kind::File)));
                    self.problems.push(problem);
                }
            }
        }
        self.folders.push(Listing {
            dir: dir.to_string(),
            exists: true,
            skipped,
        });
        folders
    }

    /// Reads the files at `wanted` (store-relative paths), in path order.
    fn read_files(&mut self, source: &Source, mut wanted: Vec<String>) -> Vec<FileEntry> {
        wanted.sort();
        // Reading is most of loading a large store: read work-tree files in parallel.
        // (git's repository handle is single-threaded.)
        let read: Vec<Bytes> = match source {
            Source::WorkTree(root) | Source::Cached { root, .. } => {
                let cache = source.cache();
                let read = crate::parallel::map(&wanted, |path| match cache {
                    Some(cache) => cache.read(root, path, || read_worktree_file(root, path)),
                    None => read_worktree_file(root, path),
                });
                let mut bytes = Vec::with_capacity(read.len());
                for (path, result) in wanted.iter().zip(read) {
                    if let Ok(Some((_, true))) = &result {
                        self.executable.push(path.clone());
                    }
                    bytes.push(without_mode(result));
                }
                self.executable.sort();
                bytes
            }
            Source::Commit { repo, tree, cache } => read_commit_files(repo, tree, &wanted, *cache),
        };
        let mut out = Vec::with_capacity(wanted.len());
        for (path, result) in wanted.into_iter().zip(read) {
            match result {
                Ok(Some(bytes)) => out.push(FileEntry { path, bytes }),
                Ok(None) => self.problems.push(Problem::new(path, "vanished while reading")),
                Err(msg) => self.problems.push(Problem::new(path, msg)),
            }
        }
        out
    }

    /// `sha256:` over the policy files, `keyrot.toml`, `owners.toml` and
    /// `exceptions.toml`: everything that decides what happens to a key but the key.
    pub fn policies_digest(&self) -> String {
        digest(
            self.settings
                .iter()
                .chain(self.owners.iter())
                .chain(self.exceptions.iter())
                .chain(self.policies.iter()),
        )
    }

    /// `sha256:` over the key files (see [`keys_digest_of`]), and each file's digest
    /// when `keep_leaves` (else none: a plan of 100k keys need not hold 3 MB more).
    pub fn keys_digest(&self, keep_leaves: bool) -> (String, Vec<Leaf>) {
        let paths = self.keys.iter().map(|f| f.path.as_str());
        if !keep_leaves {
            // In one pass, holding no digest per file: measured, a list of them raised
            // the peak memory of a 100k-key plan by 7 MB.
            let leaves: Vec<Leaf> = Vec::new();
            let digest = keys_digest_of(paths.zip(self.keys.iter().map(|f| leaf(&f.bytes))));
            return (digest, leaves);
        }
        let mut leaves = vec![[0; 32]; self.keys.len()];
        crate::parallel::fill(&mut leaves, &self.keys, |f| leaf(&f.bytes));
        (keys_digest_of(paths.zip(&leaves)), leaves)
    }
}

/// Reads one entry of the keys folder as reading the whole folder would: the file,
/// `Ok(None)` when it is not there (or is an editor's artifact), or its problem.
/// `watch` re-reads only the key files a save touched.
pub fn read_key_entry(source: &Source, rel: &str) -> Result<Option<FileEntry>, Problem> {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    let kind = match source {
        Source::WorkTree(root) | Source::Cached { root, .. } => match fs::symlink_metadata(root.join(rel)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Problem::new(rel, format!("cannot read: {e}"))),
            Ok(m) if m.file_type().is_symlink() => Kind::Symlink,
            Ok(m) if m.is_dir() => Kind::Dir,
            Ok(m) if m.is_file() => Kind::File,
            Ok(_) => Kind::Other,
        },
        // A commit is read whole, never entry by entry.
        Source::Commit { .. } => Kind::File,
    };
    let path = match admit(rel.to_string(), name, &kind, &pick_key_file)? {
        Admit::Read(path) => path,
        Admit::Skip => return Ok(None),
        // A folder is listed by a whole load, not read as one entry.
        Admit::Descend(path) => return Err(Problem::new(path, "is a folder")),
    };
    match source.read(&path) {
        Ok(Some(bytes)) => Ok(Some(FileEntry { path, bytes })),
        Ok(None) => Ok(None),
        Err(msg) => Err(Problem::new(path, msg)),
    }
}

/// What the keys folder may hold: key files, folders of them (at any depth, not
/// named `*.toml`), and editors' artifacts (skipped).
fn pick_key_file(name: &str, is_dir: bool) -> Pick {
    if is_dir && name.starts_with('.') {
        // Editors make hidden files, not hidden folders: keys put in one would
        // silently not be read.
        Pick::Refuse(layout::FOLDER_NAME_RULE)
    } else if layout::is_editor_artifact(name) {
        Pick::Skip
    } else if name.ends_with(".toml") {
        Pick::Take
    } else {
        Pick::Descend
    }
}

/// What becomes of a folder entry.
enum Admit {
    /// A file to read.
    Read(String),
    /// A folder to list in turn.
    Descend(String),
    Skip,
}

/// What becomes of a folder entry, or the problem with it.
fn admit(
    path: String,
    name: &str,
    kind: &Kind,
    pick: &impl Fn(&str, bool) -> Pick,
) -> Result<Admit, Problem> {
    let descend = match pick(name, matches!(kind, Kind::Dir)) {
        Pick::Skip => return Ok(Admit::Skip),
        Pick::Refuse(why) => return Err(Problem::new(path, why)),
        Pick::Take => false,
        Pick::Descend => match kind {
            Kind::Dir => true,
            Kind::Symlink => return Err(Problem::new(path, SYMLINK_FOLDER)),
            _ => {
                return Err(Problem::new(
                    path,
                    "is not a key file (key files are named <id>.toml)",
                ))
            }
        },
    };
    match kind {
        Kind::File => Ok(Admit::Read(path)),
        Kind::Dir if descend => match layout::is_valid_folder_name(name) {
            true => Ok(Admit::Descend(path)),
            false => Err(Problem::new(path, layout::FOLDER_NAME_RULE)),
        },
        Kind::Symlink if descend => Err(Problem::new(path, SYMLINK_FOLDER)),
        Kind::Symlink => Err(Problem::new(path, SYMLINK)),
        Kind::Other => Err(Problem::new(path, "is not a regular file")),
        Kind::Dir => Err(Problem::new(path, "is a folder, not a file")),
    }
}

/// A key file's SHA-256.
pub type Leaf = [u8; 32];

pub fn leaf(bytes: &[u8]) -> Leaf {
    Sha256::digest(bytes).into()
}

/// `sha256:` over (path, SHA-256 of the bytes) of each key file, in path order: a
/// renamed file or a changed byte changes it, and `watch` keeps each file's digest so
/// that a save re-hashes one file, not 100,000.
pub fn keys_digest_of<'a>(files: impl Iterator<Item = (&'a str, impl AsRef<[u8]>)>) -> String {
    let mut h = Sha256::new();
    for (path, leaf) in files {
        h.update((path.len() as u64).to_be_bytes());
        h.update(path.as_bytes());
        h.update(leaf.as_ref());
    }
    format!("sha256:{}", hex(&h.finalize()))
}

enum Pick {
    /// A file to read.
    Take,
    /// A folder to list; a file of this name is a problem.
    Descend,
    Skip,
    Refuse(&'static str),
}

/// Digest over (path, length, bytes) of each file, in path order, so that moving
/// bytes between files or renaming a file changes it.
fn digest<'a>(files: impl Iterator<Item = &'a FileEntry>) -> String {
    let mut files: Vec<&FileEntry> = files.collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let mut h = Sha256::new();
    for f in files {
        h.update((f.path.len() as u64).to_be_bytes());
        h.update(f.path.as_bytes());
        h.update((f.bytes.len() as u64).to_be_bytes());
        h.update(&f.bytes);
    }
    format!("sha256:{}", hex(&h.finalize()))
}

/// Reads a file from disk for a command-line argument (plan files and the like).
pub fn read_user_file(path: &Path) -> Result<Vec<u8>> {
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
