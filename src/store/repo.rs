//! The git side of a store: opening it, finding HEAD and its branch, and telling
//! whether the work tree differs from HEAD where keyrot cares.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use git2::{Repository, Signature, StatusOptions};

use super::Settings;
use crate::error::{Error, Result, StoreError};

/// A commit's id, as plans carry it: 40 lowercase hex digits, checked when made, so a
/// saved plan with anything else in `store_commit` is refused as it is read.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct CommitId(String);

impl CommitId {
    pub(crate) fn parse(text: &str) -> std::result::Result<CommitId, String> {
        if text.len() == 40
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(CommitId(text.to_string()))
        } else {
            Err(format!("`{text}` is not a commit id (40 lowercase hex digits)"))
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn oid(&self) -> git2::Oid {
        // Checked to be 40 hex digits when made, which `from_str` always accepts.
        git2::Oid::from_str(&self.0).unwrap_or_else(|_| git2::Oid::zero())
    }
}

impl From<git2::Oid> for CommitId {
    fn from(oid: git2::Oid) -> CommitId {
        CommitId(oid.to_string())
    }
}

impl std::fmt::Display for CommitId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for CommitId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for CommitId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<CommitId, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        CommitId::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Opens the store at `dir` or the nearest folder above it that is the root of a git
/// work tree, as git finds its repository (`GIT_CEILING_DIRECTORIES` honoured), so
/// keyrot works from `keys/` or `policies/` too.
pub(crate) fn open(dir: &Path) -> Result<Repository> {
    let ceilings: Vec<std::ffi::OsString> = std::env::var_os("GIT_CEILING_DIRECTORIES")
        .map(|v| std::env::split_paths(&v).map(PathBuf::into_os_string).collect())
        .unwrap_or_default();
    let repo = Repository::open_ext(dir, git2::RepositoryOpenFlags::empty(), &ceilings).map_err(|e| {
        if e.code() == git2::ErrorCode::NotFound {
            Error::NotAStore(dir.to_path_buf())
        } else {
            Error::git(format!("opening {}", dir.display()), e)
        }
    })?;
    if repo.workdir().is_none() {
        return Err(StoreError::Bare {
            dir: dir.to_path_buf(),
        }
        .into());
    }
    Ok(repo)
}

/// The store's work tree root.
pub(crate) fn workdir(repo: &Repository) -> PathBuf {
    repo.workdir().map(Path::to_path_buf).unwrap_or_default()
}

/// The commit HEAD points at, or `None` in a repository without commits.
pub(crate) fn head_commit(repo: &Repository) -> Result<Option<git2::Commit<'_>>> {
    match repo.head() {
        Ok(head) => head
            .peel_to_commit()
            .map(Some)
            .map_err(|e| Error::git("reading HEAD", e)),
        Err(e)
            if matches!(
                e.code(),
                git2::ErrorCode::UnbornBranch | git2::ErrorCode::NotFound
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(Error::git("reading HEAD", e)),
    }
}

/// The full name of the branch HEAD is on (`refs/heads/main`); apply commits there.
pub(crate) fn current_branch(repo: &Repository) -> Result<String> {
    let head = repo
        .find_reference("HEAD")
        .map_err(|e| Error::git("reading HEAD", e))?;
    match head.symbolic_target() {
        Some(target) if target.starts_with("refs/heads/") => Ok(target.to_string()),
        _ => Err(StoreError::DetachedHead.into()),
    }
}

/// Paths under `paths` (files or folders, store-relative) that differ between the
/// work tree and HEAD: modified, staged, deleted or untracked.
/// Which of `files` (paths of files under `folder`) have uncommitted changes: one status
/// walk of the folder, then a set lookup per file (as many pathspecs as files would
/// make libgit2 match every path against every pattern: quadratic at 10,000 files).
pub(crate) fn dirty_files(repo: &Repository, folder: &str, files: &[String]) -> Result<Vec<String>> {
    let wanted: std::collections::HashSet<&str> = files.iter().map(String::as_str).collect();
    Ok(dirty_paths(repo, &[folder.to_string()])?
        .into_iter()
        .filter(|p| wanted.contains(p.as_str()))
        .collect())
}

pub(crate) fn dirty_paths(repo: &Repository, paths: &[String]) -> Result<Vec<String>> {
    let mut opts = StatusOptions::new();
    opts.include_untracked(true)
        .recurse_untracked_dirs(true)
        .include_ignored(false)
        .disable_pathspec_match(false);
    for p in paths {
        opts.pathspec(p);
    }
    let statuses = repo
        .statuses(Some(&mut opts))
        .map_err(|e| Error::git("reading the work tree status", e))?;
    let mut out: Vec<String> = statuses
        .iter()
        .filter(|s| s.status() != git2::Status::CURRENT && !s.status().contains(git2::Status::IGNORED))
        .filter_map(|s| s.path().map(str::to_string))
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

/// Who keyrot's commits are by, as git decides it: `GIT_AUTHOR_NAME` and
/// `GIT_AUTHOR_EMAIL` (what a CI job sets), else git's configured user, else `[commit]`
/// from keyrot.toml.
pub(crate) fn signature(repo: &Repository, settings: &Settings) -> Result<Signature<'static>> {
    let env = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
    let from_env = match (env("GIT_AUTHOR_NAME"), env("GIT_AUTHOR_EMAIL")) {
        (Some(name), Some(email)) => Some(Signature::now(&name, &email)),
        _ => None,
    };
    from_env
        .unwrap_or_else(|| repo.signature())
        .or_else(|_| Signature::now(&settings.commit_name, &settings.commit_email))
        .map_err(|e| Error::git("making the commit signature", e))
}

/// The blob ids of `paths` (store-relative files) in `tree`, loading each folder's tree
/// once. Looking files up one by one from the root re-reads and re-parses a folder's
/// tree per file (libgit2 does not cache large trees), which is quadratic in the
/// number of keys.
/// The settings as committed in `commit` (a full SHA): its `keyrot.toml`, or the
/// defaults when it has none. `Error::Invalid` when the file has problems.
pub(crate) fn settings_at(repo: &Repository, commit: &str) -> Result<Settings> {
    let tree = git2::Oid::from_str(commit)
        .and_then(|id| repo.find_commit(id))
        .and_then(|c| c.tree())
        .map_err(|e| Error::git(format!("reading commit {commit}"), e))?;
    let text = match tree.get_path(Path::new(super::files::SETTINGS_FILE)) {
        Ok(entry) => {
            let blob = repo
                .find_blob(entry.id())
                .map_err(|e| Error::git(format!("reading {} at {commit}", super::files::SETTINGS_FILE), e))?;
            String::from_utf8_lossy(blob.content()).into_owned()
        }
        Err(_) => String::new(),
    };
    let (settings, problems) = Settings::parse(super::files::SETTINGS_FILE, &text);
    if problems.is_empty() {
        Ok(settings)
    } else {
        Err(Error::Invalid(problems))
    }
}

/// The `fingerprint` a key file in `tree` records, if it has one and parses.
pub(crate) fn fingerprint_at(repo: &Repository, tree: &git2::Tree, path: &str) -> Option<String> {
    let blob = repo.find_blob(tree.get_path(Path::new(path)).ok()?.id()).ok()?;
    let table: toml::Table = std::str::from_utf8(blob.content()).ok()?.parse().ok()?;
    table.get("fingerprint")?.as_str().map(str::to_string)
}

/// The bytes of the file at `path` in `commit`, which must be committed as a regular
/// executable file (git's mode 100755): what `check` vetted in the work tree, as the
/// commit holds it. An error, safe to show, says what is there instead.
pub(crate) fn committed_executable(
    repo: &Repository,
    commit: &str,
    path: &str,
) -> std::result::Result<Vec<u8>, String> {
    let tree = git2::Oid::from_str(commit)
        .and_then(|id| repo.find_commit(id))
        .and_then(|c| c.tree())
        .map_err(|e| format!("cannot read commit {commit}: {}", e.message()))?;
    let entry = tree
        .get_path(Path::new(path))
        .map_err(|_| format!("{path} is not committed"))?;
    match entry.filemode() {
        0o100755 => {}
        0o120000 => {
            return Err(format!(
                "{path} is committed as a symbolic link; keyrot runs only regular executable files committed in the store"
            ))
        }
        0o100644 => return Err(format!("{path} is not committed as executable (git add --chmod=+x {path})")),
        _ => return Err(format!("{path} is not committed as a regular executable file")),
    }
    let blob = repo
        .find_blob(entry.id())
        .map_err(|e| format!("cannot read {path}: {}", e.message()))?;
    Ok(blob.content().to_vec())
}

pub(crate) fn blob_ids(
    repo: &Repository,
    tree: &git2::Tree,
    paths: &[&str],
) -> Result<HashMap<String, git2::Oid>> {
    let mut folders: HashMap<&str, Option<git2::Tree>> = HashMap::new();
    let mut out = HashMap::with_capacity(paths.len());
    for path in paths {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        if !folders.contains_key(dir) {
            let sub = if dir.is_empty() {
                Some(tree.clone())
            } else {
                match tree.get_path(Path::new(dir)) {
                    Ok(e) => Some(
                        repo.find_tree(e.id())
                            .map_err(|e| Error::git(format!("reading {dir}"), e))?,
                    ),
                    Err(_) => None,
                }
            };
            folders.insert(dir, sub);
        }
        if let Some(Some(sub)) = folders.get(dir) {
            if let Some(entry) = sub.get_name(name) {
                out.insert(path.to_string(), entry.id());
            }
        }
    }
    Ok(out)
}

/// HEAD's files (blob id and mode by path), read once per HEAD, so that whether one
/// file is uncommitted is answered without `git status`: that lists the file's whole
/// folder to answer for one path (60-90 ms for one key file among 100,000).
pub(crate) struct HeadFiles {
    /// The tree these are the files of (`None`: no commit yet).
    tree: Option<git2::Oid>,
    files: HashMap<String, (git2::Oid, i32)>,
}

fn head_tree(repo: &Repository) -> Result<Option<git2::Tree<'_>>> {
    head_commit(repo)?
        .map(|c| c.tree())
        .transpose()
        .map_err(|e| Error::git("reading HEAD's tree", e))
}

impl HeadFiles {
    pub(crate) fn read(repo: &Repository) -> Result<HeadFiles> {
        let mut files = HashMap::new();
        let tree = head_tree(repo)?;
        if let Some(tree) = &tree {
            tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
                if entry.kind() == Some(git2::ObjectType::Blob) {
                    if let Ok(name) = std::str::from_utf8(entry.name_bytes()) {
                        files.insert(format!("{dir}{name}"), (entry.id(), entry.filemode()));
                    }
                }
                git2::TreeWalkResult::Ok
            })
            .map_err(|e| Error::git("reading HEAD's tree", e))?;
        }
        Ok(HeadFiles {
            tree: tree.map(|t| t.id()),
            files,
        })
    }

    /// Moves these files to HEAD's tree as it is now, and returns the paths whose blob
    /// id or mode changed, appeared or went: what a commit, checkout or reset moved.
    /// (A tree-to-tree diff: 70-85 ms after a commit at 100,000 keys, about what
    /// reading all of HEAD's files again costs, but it names the moved paths.)
    pub(crate) fn advance(&mut self, repo: &Repository) -> Result<Vec<String>> {
        let git = |e| Error::git("comparing HEAD's trees", e);
        let new = head_tree(repo)?;
        if new.as_ref().map(|t| t.id()) == self.tree {
            return Ok(Vec::new());
        }
        let old = self.tree.map(|id| repo.find_tree(id)).transpose().map_err(git)?;
        let diff = repo
            .diff_tree_to_tree(old.as_ref(), new.as_ref(), None)
            .map_err(git)?;
        let mut moved = Vec::new();
        for delta in diff.deltas() {
            for side in [delta.old_file(), delta.new_file()] {
                moved.extend(side.path().and_then(Path::to_str).map(str::to_string));
            }
            if let Some(path) = delta.old_file().path().and_then(Path::to_str) {
                self.files.remove(path);
            }
            let added = delta.new_file();
            let mode = i32::from(added.mode());
            if added.exists() && matches!(mode, 0o100644 | 0o100755 | 0o120000) {
                if let Some(path) = added.path().and_then(Path::to_str) {
                    self.files.insert(path.to_string(), (added.id(), mode));
                }
            }
        }
        self.tree = new.map(|t| t.id());
        moved.sort();
        moved.dedup();
        Ok(moved)
    }

    /// Whether the file at `rel` differs between HEAD, the index and the work tree,
    /// as `git status` would say (an ignored untracked file is no change). `None` when
    /// only `git status` can tell: a folder, or an index with conflicts. See
    /// [`super::status::file_changed`] for git filters.
    pub(crate) fn file_changed(&self, repo: &Repository, rel: &str) -> Result<Option<bool>> {
        let git = |e| Error::git("reading the index", e);
        let mut index = repo.index().map_err(git)?;
        // Another process (`git add`) may have written it since.
        index.read(false).map_err(git)?;
        if index.has_conflicts() {
            return Ok(None);
        }
        let trust_exec = super::status::trusts_executable_bit(repo);
        super::status::file_changed(repo, &index, self.files.get(rel).copied(), rel, trust_exec)
    }
}

/// Runs `git log -m --root --raw` over `revs` (limited to `path` when given) and calls
/// `found(commit, path, blob)` for each file version a commit brings in (added or
/// modified, against each parent), in git's order; `found` returns `false` to stop
/// early. Git's tree diff skips unchanged folders and files by id, which on a flat
/// folder of 10,000 files is about four times faster than libgit2's.
pub(crate) fn log_raw(
    repo: &Repository,
    revs: &[&str],
    path: Option<&str>,
    found: impl FnMut(&str, &[u8], git2::Oid) -> bool,
) -> Result<()> {
    let mut args = vec![
        "log",
        "-m",
        "--root",
        "--raw",
        "-z",
        "--no-abbrev",
        "--no-renames",
        "--format=commit %H",
    ];
    args.extend_from_slice(revs);
    args.push("--");
    args.extend(path);
    git_raw(repo, &args, found)
}

/// The file versions the index holds that HEAD does not (`git diff --cached --raw`):
/// what the next commit would add. `found(path, blob)` as in [`log_raw`]. Git compares
/// a 10,000-entry index with HEAD several times faster than libgit2's diff.
pub(crate) fn staged_raw(repo: &Repository, mut found: impl FnMut(&[u8], git2::Oid)) -> Result<()> {
    let args = [
        "diff",
        "--cached",
        "--raw",
        "-z",
        "--no-abbrev",
        "--no-renames",
        "--ignore-submodules",
    ];
    git_raw(repo, &args, |_, path, id| {
        found(path, id);
        true
    })
}

/// Runs git with `args` (whose output is `--raw -z`, with `commit <id>` lines for
/// `log`) against `repo`, calling `found(commit, path, new blob)` per added or modified
/// file; submodules and deletions are skipped.
fn git_failed(command: &str, why: String) -> Error {
    StoreError::GitCommand {
        command: command.to_string(),
        why,
    }
    .into()
}

fn git_raw(
    repo: &Repository,
    args: &[&str],
    mut found: impl FnMut(&str, &[u8], git2::Oid) -> bool,
) -> Result<()> {
    use std::io::{BufRead, BufReader, Read};
    use std::process::{Command, Stdio};
    let mut cmd = Command::new("git");
    cmd.arg("--git-dir").arg(repo.path());
    if let Some(dir) = repo.workdir() {
        cmd.arg("--work-tree").arg(dir);
    }
    cmd.args(args);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| git_failed(args[0], format!("cannot run it: {e}")))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| git_failed(args[0], "no output".into()))?;
    let mut commit = String::new();
    let mut meta: Option<Vec<u8>> = None;
    let mut stopped = false;
    // `commit <id>\0`, then per file `\n:<modes> <old> <new> <status>\0<path>\0`.
    for token in BufReader::new(stdout).split(0) {
        let token = token.map_err(|e| git_failed(args[0], format!("reading its output: {e}")))?;
        let token = token.strip_prefix(b"\n").unwrap_or(&token);
        if let Some(m) = meta.take() {
            let fields: Vec<&[u8]> = m.split(|&b| b == b' ').collect();
            let submodule = fields.get(1) == Some(&&b"160000"[..]);
            let new = fields
                .get(3)
                .map(|f| String::from_utf8_lossy(f).into_owned())
                .unwrap_or_default();
            if let Ok(id) = git2::Oid::from_str(&new) {
                if !id.is_zero() && !submodule && !found(&commit, token, id) {
                    stopped = true;
                    break;
                }
            }
        } else if let Some(id) = token.strip_prefix(b"commit ") {
            // `-m` adds ` (from <parent>)` to a merge's line.
            commit = String::from_utf8_lossy(id)
                .split(' ')
                .next()
                .unwrap_or_default()
                .to_string();
        } else if token.starts_with(b":") {
            meta = Some(token.to_vec());
        }
    }
    if stopped {
        let _ = child.kill();
    }
    let status = child.wait().map_err(|e| git_failed(args[0], e.to_string()))?;
    if !stopped && !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        return Err(git_failed(args[0], format!("failed: {}", err.trim())));
    }
    Ok(())
}

/// Git chores for tests.
#[cfg(test)]
pub(crate) mod testing {
    use git2::Repository;

    /// `git add -A && git commit`: stages every change, deletions included, and commits
    /// on HEAD's branch (the first commit too).
    pub(crate) fn commit_all(repo: &Repository) {
        let mut index = repo.index().unwrap();
        index.add_all(["*"], git2::IndexAddOption::DEFAULT, None).unwrap();
        index.update_all(["*"], None).unwrap();
        index.write().unwrap();
        let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
        let sig = git2::Signature::now("t", "t@example.com").unwrap();
        let parents: Vec<git2::Commit> = super::head_commit(repo).unwrap().into_iter().collect();
        let parents: Vec<&git2::Commit> = parents.iter().collect();
        repo.commit(Some("HEAD"), &sig, &sig, "c", &tree, &parents)
            .unwrap();
    }
}
