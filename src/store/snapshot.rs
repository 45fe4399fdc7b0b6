//! One in-memory snapshot of the store's raw files, read from the work tree or a
//! commit through a [`Source`]: which files were taken, which problems and stray
//! entries each folder held, and the digests that name exactly those bytes.

use std::fs;

use sha2::{Digest, Sha256};

use super::files::{
    read_commit_files, read_worktree_file, without_mode, Bytes, FileEntry, Kind, Source, MAX_DEPTH,
    OWNERS_FILE, ROOT_FILES, SETTINGS_FILE, SYMLINK, SYMLINK_FOLDER,
};
use super::layout::{self, PolicyFolderFile};
use crate::digest::hex;
use crate::error::{Problem, Result};

/// The raw bytes of a store, as read from one source.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
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
    pub(crate) fn read_root(source: &Source) -> Snapshot {
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
    pub(crate) fn read_folders(&mut self, source: &Source, keys_dir: &str, policies_dir: &str) {
        self.keys = self.read_folder(source, keys_dir, pick_key_file);
        self.read_policies(source, policies_dir);
    }

    /// Reads the policy files and, apart, the policy tests.
    pub(crate) fn read_policies(&mut self, source: &Source, policies_dir: &str) {
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
    pub(crate) fn policies_digest(&self) -> String {
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
    pub(crate) fn keys_digest(&self, keep_leaves: bool) -> (String, Vec<Leaf>) {
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
pub(crate) fn read_key_entry(source: &Source, rel: &str) -> Result<Option<FileEntry>, Problem> {
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
pub(crate) type Leaf = [u8; 32];

pub(crate) fn leaf(bytes: &[u8]) -> Leaf {
    Sha256::digest(bytes).into()
}

/// `sha256:` over (path, SHA-256 of the bytes) of each key file, in path order: a
/// renamed file or a changed byte changes it, and `watch` keeps each file's digest so
/// that a save re-hashes one file, not 100,000.
pub(crate) fn keys_digest_of<'a>(files: impl Iterator<Item = (&'a str, impl AsRef<[u8]>)>) -> String {
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
