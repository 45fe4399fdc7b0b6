//! Whether the work tree differs from HEAD where keyrot reads, answered from what a
//! work-tree load has just read instead of from `git status`.
//!
//! libgit2's status walks and `lstat`s the whole work tree on one thread whatever the
//! pathspec (0.4 s of a 100,000-key plan, measured), while the load has already
//! listed the folders and read every file in them. Hashing those bytes as git blobs
//! and comparing them with the index, and the index with HEAD, gives the same answer.
//! Where that comparison could disagree with git (a conflict, sparse or assume-valid
//! entries, attributes or `core.autocrlf` that filter content, a folder the load did
//! not list, such as one inside the policies folder or a keys sub-folder removed from
//! the work tree), or would be slower than it (hundreds of untracked files,
//! each needing its own ignore lookup), [`uncommitted`] answers `None` and the caller
//! asks `git status` as before.

use std::collections::HashSet;
use std::path::Path;

use git2::{Index, Oid, Repository};

use super::repo;
use super::snapshot::Listing;
use crate::error::{Error, Result};

/// What a work-tree load saw: each file it read with its git blob id, and what else
/// the folders it read held.
#[derive(Debug, Default)]
pub struct Seen {
    /// Store-relative paths of the files read from the folders, with their blob ids.
    pub files: Vec<(String, Oid)>,
    pub folders: Vec<Listing>,
    /// Those of `files` that are executable, sorted.
    pub executable: Vec<String>,
}

/// The git blob id of `bytes`, as `git add` would record the file (no filters).
pub(crate) fn blob_id(bytes: &[u8]) -> Oid {
    // Only fails if libgit2 cannot allocate; a zero id then reads as "changed".
    Oid::hash_object(git2::ObjectType::Blob, bytes).unwrap_or_else(|_| Oid::zero())
}

/// The paths among `seen`'s folders and the single files `files` (store-relative)
/// that differ between HEAD, the index and the work tree, as `git status` lists them
/// (modified, staged, deleted, or untracked and not ignored), sorted. `None` when only
/// `git status` can tell (see the module's documentation).
pub(crate) fn uncommitted(repo: &Repository, seen: &Seen, files: &[String]) -> Result<Option<Vec<String>>> {
    let git = |what: &'static str| move |e| Error::git(what, e);
    if filters_may_apply(repo, seen) {
        return Ok(None);
    }
    let mut index = repo.index().map_err(git("reading the index"))?;
    // Another process (`git add`) may have written it since the handle was opened.
    index.read(false).map_err(git("reading the index"))?;
    if index.has_conflicts() {
        return Ok(None);
    }
    let head = match repo::head_commit(repo)? {
        Some(c) => Some(c.tree().map_err(git("reading HEAD's tree"))?),
        None => None,
    };
    let trust_exec = trusts_executable_bit(repo);
    let listed: HashSet<&str> = seen
        .folders
        .iter()
        .filter(|f| f.exists)
        .map(|f| f.dir.as_str())
        .collect();
    let mut out = Vec::new();
    for folder in &seen.folders {
        let Some(found) = folder_changes(repo, &index, head.as_ref(), folder, seen, &listed, trust_exec)?
        else {
            return Ok(None);
        };
        out.extend(found);
    }
    for rel in files {
        let in_head = match &head {
            Some(tree) => match tree.get_path(Path::new(rel)) {
                Ok(e) => Some((e.id(), e.filemode())),
                Err(e) if e.code() == git2::ErrorCode::NotFound => None,
                Err(e) => return Err(Error::git("reading HEAD's tree", e)),
            },
            None => None,
        };
        match file_changed(repo, &index, in_head, rel, trust_exec)? {
            Some(true) => out.push(rel.clone()),
            Some(false) => {}
            None => return Ok(None),
        }
    }
    out.sort();
    out.dedup();
    Ok(Some(out))
}

/// Whether the file at `rel` differs between HEAD (`head`: its blob id and mode
/// there), the index and the work tree. `None` when only `git status` can tell: a
/// folder, or an index entry git does not compare with the work tree. The raw bytes
/// are hashed: the caller rules out filters, or accepts that a filtered file reads
/// as changed when git calls it clean (never the reverse).
pub(crate) fn file_changed(
    repo: &Repository,
    index: &Index,
    head: Option<(Oid, i32)>,
    rel: &str,
    trust_exec: bool,
) -> Result<Option<bool>> {
    use std::os::unix::fs::PermissionsExt;
    let staged = index.get_path(Path::new(rel), 0);
    if staged.as_ref().is_some_and(|e| !compared_by_status(e)) {
        return Ok(None);
    }
    if head.map(|h| (h.0, h.1 as u32)) != staged.as_ref().map(|e| (e.id, e.mode)) {
        return Ok(Some(true));
    }
    let path = repo::workdir(repo).join(rel);
    let meta = match std::fs::symlink_metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Some(staged.is_some())),
        Err(e) => return Err(Error::io(&path, e)),
        Ok(m) if !m.is_file() => return Ok(None),
        Ok(m) => m,
    };
    let Some(staged) = staged else {
        return Ok(Some(!ignored(repo, rel)?));
    };
    let executable = meta.permissions().mode() & 0o100 != 0;
    if trust_exec && executable != (staged.mode == 0o100755) {
        return Ok(Some(true));
    }
    let id = Oid::hash_file(git2::ObjectType::Blob, &path).map_err(|e| Error::git("hashing a file", e))?;
    Ok(Some(id != staged.id))
}

/// Whether git compares executable bits (`core.fileMode`, true unless set false).
pub(crate) fn trusts_executable_bit(repo: &Repository) -> bool {
    repo.config()
        .and_then(|c| c.get_bool("core.filemode"))
        .unwrap_or(true)
}

/// Whether `git status` compares this index entry with the work tree the plain way:
/// not a conflict stage, not assume-valid, skip-worktree or intent-to-add.
fn compared_by_status(e: &git2::IndexEntry) -> bool {
    let flags = git2::IndexEntryFlag::from_bits_truncate(e.flags);
    let extended = git2::IndexEntryExtendedFlag::from_bits_truncate(e.flags_extended);
    let stage = (e.flags >> 12) & 0x3;
    stage == 0 && !flags.is_valid() && !extended.is_skip_worktree() && !extended.is_intent_to_add()
}

fn ignored(repo: &Repository, rel: &str) -> Result<bool> {
    repo.status_should_ignore(Path::new(rel))
        .map_err(|e| Error::git("reading .gitignore", e))
}

/// Untracked files asked about one by one (ignore rules are looked up per path);
/// beyond this many in a folder (a keys folder never committed), `git status`, which
/// reads each folder's ignore rules once, is faster.
const MAX_UNTRACKED: usize = 256;

/// A folder's entry in the work tree: a file the load read (its blob id), or one it
/// skipped (whether that is a regular file).
enum Worktree<'a> {
    Read(&'a Oid),
    Skipped(bool),
}

/// One folder's changes: `None` when only `git status` can tell.
///
/// HEAD's entries, the index's and the work tree's are each sorted by name, so the
/// three are walked side by side, holding no list of names: at 100,000 keys such
/// lists cost 10 MB more peak memory (measured).
fn folder_changes(
    repo: &Repository,
    index: &Index,
    head: Option<&git2::Tree>,
    folder: &Listing,
    seen: &Seen,
    listed: &HashSet<&str>,
    trust_exec: bool,
) -> Result<Option<Vec<String>>> {
    let prefix = format!("{}/", folder.dir);

    let committed = match head.map(|tree| tree.get_path(Path::new(&folder.dir))) {
        None => None,
        Some(Ok(entry)) if entry.kind() == Some(git2::ObjectType::Tree) => Some(
            repo.find_tree(entry.id())
                .map_err(|e| Error::git(format!("reading {}", folder.dir), e))?,
        ),
        Some(Ok(_)) => return Ok(None),
        Some(Err(e)) if e.code() == git2::ErrorCode::NotFound => None,
        Some(Err(e)) => return Err(Error::git("reading HEAD's tree", e)),
    };
    // A sub-folder's entries are its own listing's to compare (the keys folder's team
    // folders); one the work tree does not hold any more only `git status` can tell.
    let unlisted = std::cell::Cell::new(false);
    let sub_folder = |name: &[u8]| {
        let listed =
            std::str::from_utf8(name).is_ok_and(|name| listed.contains(format!("{prefix}{name}").as_str()));
        unlisted.set(unlisted.get() || !listed);
    };
    let mut committed = committed
        .iter()
        .flat_map(|t| t.iter())
        .filter(|e| {
            let folder = e.kind() == Some(git2::ObjectType::Tree);
            if folder {
                sub_folder(e.name_bytes());
            }
            !folder
        })
        .peekable();

    let first = index.find_prefix(prefix.as_str()).unwrap_or(index.len());
    let mut staged = (first..index.len())
        .map_while(|i| index.get(i))
        .take_while(|e| e.path.starts_with(prefix.as_bytes()))
        .filter(|e| match e.path[prefix.len()..].iter().position(|&b| b == b'/') {
            Some(slash) => {
                sub_folder(&e.path[prefix.len()..prefix.len() + slash]);
                false
            }
            None => true,
        })
        .peekable();

    let read = &seen.files;
    let start = read.partition_point(|(p, _)| p.as_str() < prefix.as_str());
    let read = read[start..]
        .iter()
        .take_while(|(p, _)| p.starts_with(&prefix))
        .filter(|(p, _)| !p[prefix.len()..].contains('/'))
        .map(|(p, id)| (p.as_str(), Worktree::Read(id)));
    let mut skipped: Vec<(&str, Worktree)> = folder
        .skipped
        .iter()
        .map(|(p, is_file)| (p.as_str(), Worktree::Skipped(*is_file)))
        .collect();
    skipped.sort_by(|a, b| a.0.cmp(b.0));
    let mut worktree = merge_sorted(read, skipped.into_iter()).peekable();
    if !folder.exists && worktree.peek().is_some() {
        return Ok(None);
    }

    let mut out = Vec::new();
    let mut untracked = 0;
    loop {
        let c_name = committed.peek().map(|e| e.name_bytes().to_vec());
        let s_name = staged.peek().map(|e| e.path[prefix.len()..].to_vec());
        let w_name = worktree
            .peek()
            .map(|(p, _)| p.as_bytes()[prefix.len()..].to_vec());
        if unlisted.get() {
            return Ok(None);
        }
        let Some(name) = [&c_name, &s_name, &w_name].into_iter().flatten().min().cloned() else {
            break;
        };
        let c = committed.next_if(|_| c_name.as_ref() == Some(&name));
        let s = staged.next_if(|_| s_name.as_ref() == Some(&name));
        let w = worktree.next_if(|_| w_name.as_ref() == Some(&name));
        let Ok(name) = String::from_utf8(name) else {
            return Ok(None);
        };
        let path = format!("{prefix}{name}");
        if name.contains('/')
            || c.as_ref()
                .is_some_and(|c| c.kind() != Some(git2::ObjectType::Blob))
        {
            return Ok(None);
        }
        if s.as_ref().is_some_and(|s| !compared_by_status(s)) {
            return Ok(None);
        }
        // HEAD against the index: a staged change.
        let in_head = c.map(|c| (c.id(), c.filemode() as u32));
        let in_index = s.as_ref().map(|s| (s.id, s.mode));
        let mut changed = in_head != in_index;
        // The index against the work tree.
        changed |= match (&s, w) {
            (None, None) => false,
            // Deleted.
            (Some(_), None) => true,
            // Untracked: git lists a folder's files, and a link as itself.
            (None, Some((_, Worktree::Skipped(false)))) => return Ok(None),
            (None, Some(_)) => {
                untracked += 1;
                if untracked > MAX_UNTRACKED {
                    return Ok(None);
                }
                !ignored(repo, &path)?
            }
            (Some(s), Some((_, Worktree::Read(id)))) => {
                let executable = seen.executable.binary_search(&path).is_ok();
                let mode_differs = match s.mode {
                    0o100644 | 0o100755 => trust_exec && executable != (s.mode == 0o100755),
                    _ => true,
                };
                s.id != *id || mode_differs
            }
            (Some(s), Some((_, Worktree::Skipped(true)))) => {
                // HEAD and the index were compared above: give the index as HEAD.
                match file_changed(repo, index, Some((s.id, s.mode as i32)), &path, trust_exec)? {
                    Some(changed) => changed,
                    None => return Ok(None),
                }
            }
            (Some(_), Some((_, Worktree::Skipped(false)))) => return Ok(None),
        };
        if changed {
            out.push(path);
        }
    }
    Ok((!unlisted.get()).then_some(out))
}

/// Two iterators sorted by their `&str` keys, merged into one sorted sequence.
fn merge_sorted<'a, T>(
    a: impl Iterator<Item = (&'a str, T)>,
    b: impl Iterator<Item = (&'a str, T)>,
) -> impl Iterator<Item = (&'a str, T)> {
    let (mut a, mut b) = (a.peekable(), b.peekable());
    std::iter::from_fn(move || match (a.peek(), b.peek()) {
        (Some(x), Some(y)) if y.0 < x.0 => b.next(),
        (Some(_), _) => a.next(),
        (None, _) => b.next(),
    })
}

/// Whether git's own attributes file (used when `core.attributesFile` is unset)
/// exists: `$XDG_CONFIG_HOME/git/attributes`, else `~/.config/git/attributes`.
fn global_attributes_in_use() -> bool {
    std::env::var_os("XDG_CONFIG_HOME")
        .map(std::path::PathBuf::from)
        .filter(|d| d.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".config")))
        .is_some_and(|d| d.join("git/attributes").exists())
}

/// Whether git could filter what it stores (line endings, `filter=` drivers): then
/// raw bytes do not hash to the stored blob, and only `git status` can compare.
fn filters_may_apply(repo: &Repository, seen: &Seen) -> bool {
    // A configuration that cannot be read could say anything.
    let Ok(config) = repo.config() else {
        return true;
    };
    let autocrlf = config.get_string("core.autocrlf").unwrap_or_default();
    if !matches!(
        autocrlf.to_ascii_lowercase().as_str(),
        "" | "false" | "no" | "off" | "0"
    ) {
        return true;
    }
    if config.get_string("core.attributesfile").is_ok() {
        return true;
    }
    if global_attributes_in_use() {
        return true;
    }
    // A linked work tree's `info/` is in the common folder.
    if [repo.path(), repo.commondir()]
        .iter()
        .any(|d| d.join("info/attributes").exists())
    {
        return true;
    }
    let root = repo::workdir(repo);
    // `.gitattributes` at the root or in any folder on the way to a folder read.
    let mut dirs = vec![String::new()];
    for f in &seen.folders {
        let mut at = String::new();
        for part in f.dir.split('/') {
            at = if at.is_empty() {
                part.to_string()
            } else {
                format!("{at}/{part}")
            };
            dirs.push(at.clone());
        }
    }
    dirs.iter().any(|d| root.join(d).join(".gitattributes").exists())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::repo::testing::commit_all as commit;
    use crate::store::{Source, Store};
    use proptest::prelude::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    /// Something a user or a tool does to a store's work tree or index.
    #[derive(Clone, Debug)]
    enum Op {
        Edit(u8),
        Stage(u8),
        Unstage(u8),
        Delete(u8),
        Chmod(u8),
        Untracked(u8),
        Ignored(u8),
        SwapFile(u8),
        EditGitkeep,
        EditRootFile,
        EditPolicy,
        NewPolicy,
        StrayFolder,
        /// Removes a team folder (`keys/team/` or `keys/team/bots/`) with its keys.
        RemoveFolder(u8),
        Commit,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..6).prop_map(Op::Edit),
            3 => (0u8..8).prop_map(Op::Stage),
            2 => (0u8..8).prop_map(Op::Unstage),
            2 => (0u8..6).prop_map(Op::Delete),
            1 => (0u8..6).prop_map(Op::Chmod),
            2 => (0u8..3).prop_map(Op::Untracked),
            1 => (0u8..3).prop_map(Op::Ignored),
            1 => (0u8..3).prop_map(Op::SwapFile),
            1 => Just(Op::EditGitkeep),
            1 => Just(Op::EditRootFile),
            1 => Just(Op::EditPolicy),
            1 => Just(Op::NewPolicy),
            1 => Just(Op::StrayFolder),
            1 => (0u8..2).prop_map(Op::RemoveFolder),
            2 => Just(Op::Commit),
        ]
    }

    /// Store-relative paths an op may touch, by number: the six committed key
    /// files (two in team folders), then the two untracked ones `Untracked` makes
    /// (one in a folder no commit has).
    fn key_path(n: u8) -> String {
        match n {
            0..=3 => format!("keys/k{n}.toml"),
            4 => "keys/team/k4.toml".into(),
            5 => "keys/team/bots/k5.toml".into(),
            6 => "keys/new0.toml".into(),
            _ => "keys/fresh/new1.toml".into(),
        }
    }

    fn key_text(n: u64) -> String {
        format!(
            "service = \"x\"\nowner = \"a\"\npermissions = []\ncreated_at = 2026-01-01T00:00:00Z\n# {n}\n"
        )
    }

    fn apply(root: &Path, op: &Op, step: u64) -> bool {
        let repo = Repository::open(root).unwrap();
        let write = |rel: &str, text: String| {
            fs::create_dir_all(root.join(rel).parent().unwrap()).unwrap();
            fs::write(root.join(rel), text).unwrap()
        };
        match op {
            Op::Edit(n) => write(&key_path(*n), key_text(step)),
            Op::Stage(n) => {
                let mut index = repo.index().unwrap();
                let rel = key_path(*n);
                if root.join(&rel).exists() {
                    index.add_path(Path::new(&rel)).unwrap();
                } else {
                    let _ = index.remove_path(Path::new(&rel));
                }
                index.write().unwrap();
            }
            Op::Unstage(n) => {
                let head = repo::head_commit(&repo).unwrap().unwrap();
                repo.reset_default(Some(head.as_object()), [key_path(*n)])
                    .unwrap();
            }
            Op::Delete(n) => {
                let _ = fs::remove_file(root.join(key_path(*n)));
            }
            Op::Chmod(n) => {
                let path = root.join(key_path(*n));
                if let Ok(meta) = fs::metadata(&path) {
                    let mode = meta.permissions().mode() ^ 0o111;
                    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
                }
            }
            Op::Untracked(n) => write(&key_path(6 + n % 2), key_text(step)),
            Op::Ignored(n) => write(&format!("keys/ignored{n}.toml"), key_text(step)),
            Op::SwapFile(n) => write(&format!("keys/.k{n}.toml.swp"), "swap".into()),
            Op::EditGitkeep => write("keys/.gitkeep", format!("{step}")),
            Op::EditRootFile => write("owners.toml", format!("# {step}\n")),
            Op::EditPolicy => write("policies/p.rhai", format!("fn evaluate(key) {{ }} // {step}\n")),
            Op::NewPolicy => write("policies/q.rhai", "fn evaluate(key) { }\n".into()),
            Op::StrayFolder => {
                fs::create_dir_all(root.join("keys/.cache")).unwrap();
                write("keys/.cache/x", "x".into());
                return false;
            }
            Op::RemoveFolder(n) => {
                let dir = if *n == 0 { "keys/team" } else { "keys/team/bots" };
                let _ = fs::remove_dir_all(root.join(dir));
                // Only `git status` can tell what a folder gone from the work tree held.
                return false;
            }
            Op::Commit => commit(&repo),
        }
        true
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

        /// After any sequence of edits, stagings, deletions, chmods and commits, the
        /// changes told from a load's bytes are the ones `git status` lists, and the
        /// check answers by itself unless a hidden folder appeared inside the keys folder
        /// or a team folder was removed. Two of the keys are in team folders.
        #[test]
        fn uncommitted_paths_are_what_git_status_lists(ops in proptest::collection::vec(op(), 1..24)) {
            let tmp = tempfile::TempDir::new().unwrap();
            let root = tmp.path().to_path_buf();
            let repo = Repository::init(&root).unwrap();
            fs::create_dir_all(root.join("keys")).unwrap();
            fs::create_dir_all(root.join("policies")).unwrap();
            for n in 0..6 {
                fs::create_dir_all(root.join(key_path(n)).parent().unwrap()).unwrap();
                fs::write(root.join(key_path(n)), key_text(u64::from(n) + 1000)).unwrap();
            }
            fs::write(root.join("keys/.gitkeep"), "").unwrap();
            fs::write(root.join(".gitignore"), "keys/ignored*\n").unwrap();
            fs::write(root.join("policies/p.rhai"), "fn evaluate(key) { }\n").unwrap();
            fs::write(root.join("owners.toml"), "").unwrap();
            commit(&repo);

            let mut plain = true;
            for (step, op) in ops.iter().enumerate() {
                plain &= apply(&root, op, step as u64);
                let (store, _, seen) = Store::load_seen(&Source::WorkTree(root.clone()));
                let repo = Repository::open(&root).unwrap();
                let fast = uncommitted(&repo, &seen.unwrap(), &store.tracked_files()).unwrap();
                let git = repo::dirty_paths(&Repository::open(&root).unwrap(), &store.tracked_paths()).unwrap();
                match fast {
                    Some(fast) => prop_assert_eq!(fast, git, "after {:?}", &ops[..=step]),
                    None => prop_assert!(!plain || global_attributes_in_use(), "no answer after {:?}", &ops[..=step]),
                }
            }
        }
    }

    /// The check's answer for the work tree at `root`, as `plan` computes it.
    fn answer(root: &Path) -> Option<Vec<String>> {
        let (store, _, seen) = Store::load_seen(&Source::WorkTree(root.to_path_buf()));
        let repo = Repository::open(root).unwrap();
        uncommitted(&repo, &seen.unwrap(), &store.tracked_files()).unwrap()
    }

    /// The answer expected when the check can answer: on a machine with a global git
    /// attributes file it never can (`None`).
    fn answered(paths: Vec<String>) -> Option<Vec<String>> {
        (!global_attributes_in_use()).then_some(paths)
    }

    /// A repository with one key file, committed.
    fn one_key() -> (tempfile::TempDir, std::path::PathBuf, Repository) {
        let tmp = tempfile::TempDir::new().unwrap();
        let root = tmp.path().to_path_buf();
        let repo = Repository::init(&root).unwrap();
        fs::create_dir_all(root.join("keys")).unwrap();
        fs::write(root.join("keys/a.toml"), key_text(0)).unwrap();
        commit(&repo);
        (tmp, root, repo)
    }

    #[test]
    fn many_untracked_files_leave_the_answer_to_git() {
        let (_tmp, root, _repo) = one_key();
        let check = || answer(&root);
        for n in 1..=MAX_UNTRACKED as u64 {
            fs::write(root.join(format!("keys/n{n:04}.toml")), key_text(n)).unwrap();
        }
        let listed = check().map(|l| l.len());
        assert_eq!(
            listed,
            answered(vec![]).map(|_| MAX_UNTRACKED),
            "up to the limit, answered here"
        );
        fs::write(root.join("keys/one-more.toml"), key_text(0)).unwrap();
        assert_eq!(check(), None);
    }

    #[test]
    fn attributes_leave_the_answer_to_git() {
        let (_tmp, root, repo) = one_key();
        let check = || answer(&root);
        assert_eq!(check(), answered(vec![]));
        fs::write(root.join(".gitattributes"), "*.toml text eol=crlf\n").unwrap();
        assert_eq!(check(), None);
        fs::remove_file(root.join(".gitattributes")).unwrap();
        repo.config().unwrap().set_str("core.autocrlf", "input").unwrap();
        assert_eq!(check(), None);
        repo.config().unwrap().set_bool("core.autocrlf", false).unwrap();
        assert_eq!(check(), answered(vec![]));
        // In `info/attributes` of the repository (a linked work tree's common folder).
        fs::write(repo.commondir().join("info/attributes"), "*.toml text\n").unwrap();
        assert_eq!(check(), None);
    }
}
