//! The audit trail, read back from git history: each apply commit's action lines, and
//! every other commit that touched the store as `manual` ([`log`]); and the proof
//! that each apply commit is exactly what the committed policies decided ([`verify`]).

pub(crate) mod verify;
mod walk;

use std::collections::{BTreeSet, HashMap};

use git2::{DiffOptions, Repository, Sort};
use serde::Serialize;

use crate::error::{Error, InputError, Result};
use crate::plan::ActionKind;
use crate::signing::{Checker, Status};
use crate::store::{files, Settings};
use crate::time::Time;
use crate::trailers::{is_apply_commit, EXCEPTED, FAILED};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Entry {
    pub time: String,
    pub commit: String,
    /// The key, or `-` for a manual change to policies or settings.
    pub key: String,
    /// The key's folder under the keys folder (where it is now, else where the
    /// commit had it); absent for a key at the top of the keys folder.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub folder: Option<String>,
    /// An action of the plan, or `manual`.
    pub action: String,
    pub policy: String,
    pub reason: String,
    /// Who made the commit: `Name <email>` of its author.
    pub author: String,
    /// Who signed it (an allowed signer, or the key when not allowed); `None` unsigned.
    pub signer: Option<String>,
    /// Whether the commit is signed.
    pub signed: bool,
    /// What the signature is worth: `none`, `good`, `untrusted` or `bad`.
    pub signature: &'static str,
}

/// Parses one `<action> <key> [<policy>] <reason>` body line of an apply commit
/// (`<action>` is `excepted` for a decision an exception held back).
fn parse_action_line(line: &str) -> Option<(&str, &str, &str, &str)> {
    let (action, rest) = line.split_once(' ')?;
    if ActionKind::parse(action).is_none() && action != EXCEPTED && action != FAILED {
        return None;
    }
    let (key, rest) = rest.split_once(' ')?;
    let rest = rest.strip_prefix('[')?;
    let (policy, reason) = rest.split_once("] ")?;
    Some((action, key, policy, reason))
}

/// Calls `f(instant, action)` for every action line of every apply commit on HEAD's
/// first-parent history (the trail as `log` reads it, without the manual commits); the
/// instant is the plan's (`Keyrot-Now`), else the commit's time.
pub(crate) fn applied_actions(repo: &Repository, mut f: impl FnMut(Time, &str)) -> Result<()> {
    let Some(head) = crate::store::repo::head_commit(repo)? else {
        return Ok(());
    };
    let git = |e| Error::git("walking the history", e);
    let mut walk = repo.revwalk().map_err(git)?;
    walk.simplify_first_parent().map_err(git)?;
    walk.push(head.id()).map_err(git)?;
    for oid in walk {
        let commit = repo.find_commit(oid.map_err(git)?).map_err(git)?;
        let message = commit.message().unwrap_or_default();
        if !is_apply_commit(message) {
            continue;
        }
        let time = crate::trailers::trailer(message, crate::trailers::TRAILER_NOW)
            .and_then(|t| Time::parse_rfc3339(t).ok())
            .unwrap_or_else(|| Time::from_unix(commit.time().seconds()));
        for line in message.lines().skip(1) {
            if let Some((action, ..)) = parse_action_line(line) {
                f(time, action);
            }
        }
    }
    Ok(())
}

/// Store files a commit changed against its first parent (all files for a root commit).
/// Literal paths are looked up in both trees rather than diffed: a commit that adds
/// 100,000 key files would have every one of them matched against the paths.
fn touched_paths(repo: &Repository, commit: &git2::Commit, pathspecs: &[String]) -> Result<Vec<String>> {
    let tree = commit
        .tree()
        .map_err(|e| Error::git("reading a commit's tree", e))?;
    let parent_tree = match commit.parent(0) {
        Ok(p) => Some(p.tree().map_err(|e| Error::git("reading a parent tree", e))?),
        Err(_) => None,
    };
    if pathspecs.iter().all(|p| !p.contains('*') && p.ends_with(".toml")) {
        let at = |t: Option<&git2::Tree>, p: &str| {
            t.and_then(|t| t.get_path(std::path::Path::new(p)).ok())
                .map(|e| (e.id(), e.filemode()))
        };
        return Ok(pathspecs
            .iter()
            .filter(|p| at(Some(&tree), p) != at(parent_tree.as_ref(), p))
            .cloned()
            .collect());
    }
    diffed_paths(repo, &tree, parent_tree.as_ref(), pathspecs)
}

/// [`touched_paths`] by a diff of the two trees, limited by `pathspecs`.
fn diffed_paths(
    repo: &Repository,
    tree: &git2::Tree,
    parent_tree: Option<&git2::Tree>,
    pathspecs: &[String],
) -> Result<Vec<String>> {
    let mut opts = DiffOptions::new();
    for p in pathspecs {
        opts.pathspec(p);
    }
    let diff = repo
        .diff_tree_to_tree(parent_tree, Some(tree), Some(&mut opts))
        .map_err(|e| Error::git("diffing a commit", e))?;
    let mut out = BTreeSet::new();
    for d in diff.deltas() {
        for f in [d.old_file(), d.new_file()] {
            if let Some(p) = f.path().and_then(|p| p.to_str()) {
                out.insert(p.to_string());
            }
        }
    }
    Ok(out.into_iter().collect())
}

/// Who made and who signed a commit, as log entries carry it.
struct Who {
    author: String,
    signer: Option<String>,
    signature: Status,
}

impl Who {
    fn of(repo: &Repository, commit: &git2::Commit, checker: &Checker) -> Who {
        let status = checker.check(repo, commit);
        Who {
            author: verify::person(&commit.author()),
            signer: status.signer().map(str::to_string),
            signature: status,
        }
    }

    fn entry(&self, time: &str, commit: &str, key: &str, action: &str, policy: &str, reason: &str) -> Entry {
        Entry {
            time: time.to_string(),
            commit: commit.to_string(),
            key: key.to_string(),
            folder: None,
            action: action.to_string(),
            policy: policy.to_string(),
            reason: reason.to_string(),
            author: self.author.clone(),
            signer: self.signer.clone(),
            signed: self.signature != Status::None,
            signature: self.signature.word(),
        }
    }
}

/// The trail from HEAD back, newest first; only entries for `key` (an id, or
/// `folder/id`) when given, and then an error when that key is not in the store and
/// never was.
pub(crate) fn log(repo: &Repository, settings: &Settings, key: Option<&str>) -> Result<Vec<Entry>> {
    let checker = Checker::for_display(repo).map_err(InputError::Signers)?;
    let head = match crate::store::repo::head_commit(repo)? {
        Some(c) => c,
        None => return Ok(Vec::new()),
    };
    let named = key;
    let key = key.map(|k| k.rsplit('/').next().unwrap_or(k));
    let keys_prefix = format!("{}/", settings.keys_dir);
    // A key at the top of the keys folder needs no search of its folders (a walk of
    // every entry: 56 ms at 100,000 keys).
    let at_top = key.is_some_and(|id| head_has(&head, &format!("{keys_prefix}{id}.toml")));
    let folders = match at_top {
        true => HashMap::new(),
        false => nested_keys(repo, &head, &settings.keys_dir, key)?,
    };
    // `folder/id` names where the key is now: a wrong folder is a mistake to report,
    // not to ignore (as `explain` does).
    if let (Some(named), Some(id)) = (named, key) {
        if let Some((folder, _)) = named.rsplit_once('/') {
            let now_in = folders.get(id).map(String::as_str).or(at_top.then_some(""));
            if now_in.is_some_and(|now_in| now_in != folder) {
                return Err(Error::UnknownKey(named.to_string()));
            }
        }
    }
    let pathspecs: Vec<String> = match key {
        Some(id) => {
            let top = format!("{keys_prefix}{id}.toml");
            match folders.get(id) {
                // Where it is now, and at the top, where a key lived before teams
                // had folders: literal paths, which git's tree diff matches cheaply.
                Some(folder) => vec![top, format!("{keys_prefix}{folder}/{id}.toml")],
                None if at_top => vec![top],
                // Gone from HEAD: wherever it was (a pathspec's `*` also matches `/`).
                None => vec![top, format!("{keys_prefix}*/{id}.toml")],
            }
        }
        None => files::ROOT_FILES
            .iter()
            .map(|f| f.to_string())
            .chain([settings.keys_dir.clone(), settings.policies_dir.clone()])
            .collect(),
    };
    let git = |e| Error::git("walking the history", e);
    let mut walk = repo.revwalk().map_err(git)?;
    walk.set_sorting(Sort::TOPOLOGICAL | Sort::TIME).map_err(git)?;
    walk.push(head.id()).map_err(git)?;

    let mut out = Vec::new();
    let mut push = |mut entry: Entry, was_in: Option<&str>| {
        entry.folder = folders
            .get(&entry.key)
            .cloned()
            .or_else(|| was_in.filter(|f| !f.is_empty()).map(str::to_string));
        out.push(entry);
    };
    for oid in walk {
        let oid = oid.map_err(git)?;
        let commit = repo.find_commit(oid).map_err(git)?;
        let message = commit.message().unwrap_or_default().to_string();
        let time = Time::from_unix(commit.time().seconds()).to_rfc3339();
        let id = oid.to_string();
        if is_apply_commit(&message) {
            // Who signed is asked (a process per signed commit) only for commits
            // with an entry to show.
            let mut who = None;
            for line in message.lines().skip(1) {
                if let Some((action, k, policy, reason)) = parse_action_line(line) {
                    if key.is_none_or(|want| want == k) {
                        let who = who.get_or_insert_with(|| Who::of(repo, &commit, &checker));
                        push(who.entry(&time, &id, k, action, policy, reason), None);
                    }
                }
            }
            continue;
        }
        let touched = touched_paths(repo, &commit, &pathspecs)?;
        if touched.is_empty() {
            continue;
        }
        let subject = message.lines().next().unwrap_or_default().to_string();
        // (id, folder) of each key file touched, at any depth.
        fn key_file<'p>(p: &'p str, keys_prefix: &str) -> Option<&'p str> {
            p.strip_prefix(keys_prefix).and_then(|p| p.strip_suffix(".toml"))
        }
        let mut keys: Vec<(&str, &str)> = touched
            .iter()
            .filter_map(|p| key_file(p, &keys_prefix))
            .map(|p| match p.rsplit_once('/') {
                Some((folder, id)) => (id, folder),
                None => (p, ""),
            })
            .collect();
        keys.sort();
        keys.dedup_by(|a, b| a.0 == b.0);
        let who = Who::of(repo, &commit, &checker);
        if touched.iter().any(|p| key_file(p, &keys_prefix).is_none()) && key.is_none() {
            // Policies, owners or settings changed.
            push(who.entry(&time, &id, "-", "manual", "-", &subject), None);
        }
        for (k, folder) in keys {
            push(who.entry(&time, &id, k, "manual", "-", &subject), Some(folder));
        }
    }
    if let Some(id) = key {
        // Every commit that added the key's file is in the trail as `manual`, so an
        // empty trail means the key never existed (a typo, most likely).
        if out.is_empty() {
            return Err(Error::UnknownKey(id.to_string()));
        }
    }
    Ok(out)
}

/// Whether `head`'s tree has a file at `path`.
fn head_has(head: &git2::Commit, path: &str) -> bool {
    head.tree()
        .is_ok_and(|t| t.get_path(std::path::Path::new(path)).is_ok())
}

/// The folder of each key in a folder of the keys folder at `head` (only `only` when
/// given), by id. Keys at the top of the keys folder have none and are not listed.
fn nested_keys(
    repo: &Repository,
    head: &git2::Commit,
    keys_dir: &str,
    only: Option<&str>,
) -> Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    let tree = head.tree().map_err(|e| Error::git("reading HEAD's tree", e))?;
    let Ok(entry) = tree.get_path(std::path::Path::new(keys_dir)) else {
        return Ok(out);
    };
    let Ok(keys) = repo.find_tree(entry.id()) else {
        return Ok(out);
    };
    let wanted = only.map(|id| format!("{id}.toml"));
    // Folder by folder (no deeper than a load reads): one key is looked up by name in
    // each, stopping where it is found; all keys are listed otherwise.
    let mut todo: Vec<(git2::Tree, String, usize)> = vec![(keys, String::new(), 0)];
    while let Some((folder_tree, folder, depth)) = todo.pop() {
        if !folder.is_empty() {
            if let Some(name) = &wanted {
                if folder_tree
                    .get_name(name)
                    .is_some_and(|e| e.kind() == Some(git2::ObjectType::Blob))
                {
                    out.insert(only.unwrap_or_default().to_string(), folder);
                    return Ok(out);
                }
            }
        }
        for e in folder_tree.iter() {
            let Some(name) = e.name() else { continue };
            match e.kind() {
                Some(git2::ObjectType::Tree) if depth < files::MAX_DEPTH => {
                    if let Ok(sub) = repo.find_tree(e.id()) {
                        let path = match folder.as_str() {
                            "" => name.to_string(),
                            f => format!("{f}/{name}"),
                        };
                        todo.push((sub, path, depth + 1));
                    }
                }
                Some(git2::ObjectType::Blob) if wanted.is_none() && !folder.is_empty() => {
                    if let Some(id) = name.strip_suffix(".toml") {
                        out.insert(id.to_string(), folder.clone());
                    }
                }
                _ => {}
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_apply_body_lines() {
        assert_eq!(
            parse_action_line("rotate binance-bot [max-age] secret is 120 days old (limit 90)"),
            Some((
                "rotate",
                "binance-bot",
                "max-age",
                "secret is 120 days old (limit 90)"
            ))
        );
        assert_eq!(parse_action_line("Keyrot-Now: 2026-11-22T20:00:00Z"), None);
        assert_eq!(parse_action_line("manual edit of things"), None);
        assert_eq!(
            parse_action_line(
                "excepted a [p] rotate not applied: old (accepted until 2026-12-31 by carol: x)"
            ),
            Some((
                "excepted",
                "a",
                "p",
                "rotate not applied: old (accepted until 2026-12-31 by carol: x)"
            ))
        );
    }
}
