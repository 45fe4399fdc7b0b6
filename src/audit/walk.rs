//! The walk along the history that `audit verify` checks: for each commit that changes
//! the store, whether it is an apply commit exactly as keyrot would make it (the plan
//! derived again from its parent at `Keyrot-Now`, applied field by field) or a manual
//! change; keys, blobs and compiled policies carried from commit to commit.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use git2::{Commit, Oid, Repository};

use crate::apply::{self, Failure};
use crate::error::{Error, Result};
use crate::plan::{Action, Provenance};
use crate::policy::AstCache;
use crate::signing::Status;
use crate::store::{files, repo, Settings, Source};
use crate::time::Time;
use crate::trailers::{
    self, FAILED, NO_PREVIOUS, TRAILER_FAILED, TRAILER_NOW, TRAILER_PLAN, TRAILER_POLICIES, TRAILER_PREVIOUS,
};
use crate::workspace::Loaded;

use super::verify::Checked;
use super::verify::{find, message, person};
/// How far an apply's instant may be ahead of its commit: apply itself refuses more.
const CLOCK_SKEW: i64 = 5 * 60;

/// The state carried along the history.
pub(super) struct Walk<'r> {
    repo: &'r Repository,
    /// Policies compiled once per distinct file content.
    asts: AstCache,
    /// Blobs read and keys parsed once across the history: consecutive commits share
    /// all but a few key files.
    files: crate::store::cache::Cache,
    /// Every fingerprint the history has shown so far: a rotation must bring a new one.
    seen: HashSet<String>,
    /// The last apply commit passed.
    previous: Option<Oid>,
    /// Whether an apply commit so far carried `Keyrot-Previous` (older keyrot versions
    /// did not write it; once one does, every later one must).
    chained: bool,
    /// The last commit's store folders: the next commit's parent's.
    last_layout: Option<(Oid, [String; 2])>,
}

impl<'r> Walk<'r> {
    pub(super) fn new(repo: &'r Repository) -> Walk<'r> {
        Walk {
            repo,
            asts: AstCache::default(),
            files: crate::store::cache::Cache::default(),
            seen: HashSet::new(),
            previous: None,
            chained: false,
            last_layout: None,
        }
    }

    /// Starts the walk after `since`, as if it had walked there: the apply chain and
    /// every fingerprint seen up to it are carried over.
    pub(super) fn start_after(&mut self, since: Oid) -> Result<()> {
        self.previous = apply::previous_apply(self.repo, since)?;
        if let Some(p) = self.previous {
            let message = message(&find(self.repo, p)?);
            self.chained = trailers::trailer(&message, TRAILER_PREVIOUS).is_some();
        }
        self.remember_all(since)
    }
}

/// The store folders as a commit's settings lay them out.
fn store_paths(settings: &Settings) -> [String; 2] {
    [
        format!("{}/", settings.keys_dir),
        format!("{}/", settings.policies_dir),
    ]
}

fn is_store_path(path: &str, layouts: &[[String; 2]]) -> bool {
    files::ROOT_FILES.contains(&path) || layouts.iter().flatten().any(|dir| path.starts_with(dir.as_str()))
}

/// The settings a commit holds, or the defaults when its keyrot.toml does not parse
/// (only used to find the store's folders).
fn layout_at(repo: &Repository, id: Oid) -> Settings {
    repo::settings_at(repo, &id.to_string()).unwrap_or_default()
}

impl Walk<'_> {
    /// Checks one commit; `None` when it neither changes the store nor claims to be an
    /// apply commit.
    pub(super) fn commit(&mut self, commit: &Commit) -> Result<Option<Checked>> {
        let message = message(commit);
        let changed = changed_paths(self.repo, commit)?;
        let is_apply = trailers::is_apply_commit(&message);
        let mut layouts = vec![store_paths(&layout_at(self.repo, commit.id()))];
        if let Some(parent) = commit.parent_ids().next() {
            layouts.push(match self.last_layout.take() {
                Some((id, layout)) if id == parent => layout,
                _ => store_paths(&layout_at(self.repo, parent)),
            });
        }
        self.last_layout = Some((commit.id(), layouts[0].clone()));
        let touches_store = changed.keys().any(|p| is_store_path(p, &layouts));
        if !is_apply && !touches_store {
            return Ok(None);
        }
        let mut checked = Checked {
            commit: commit.id().to_string(),
            kind: if is_apply { "apply" } else { "manual" },
            subject: message.lines().next().unwrap_or_default().to_string(),
            author: person(&commit.author()),
            committer: person(&commit.committer()),
            signed: false,
            signature: Status::None.word(),
            signer: None,
            verdict: if is_apply { "ok" } else { "manual" },
            problems: Vec::new(),
        };
        if is_apply {
            checked.problems = self.apply_commit(commit, &message, &changed)?;
            self.previous = Some(commit.id());
        }
        self.remember(&changed);
        Ok(Some(checked))
    }

    /// Everything wrong with an apply commit; empty when it is exactly its plan applied.
    fn apply_commit(
        &mut self,
        commit: &Commit,
        message: &str,
        changed: &BTreeMap<String, Change>,
    ) -> Result<Vec<String>> {
        let mut problems = Vec::new();
        // The chain first: it holds whatever else is wrong.
        match trailers::trailer(message, TRAILER_PREVIOUS) {
            Some(named) => {
                self.chained = true;
                let expected = self
                    .previous
                    .map_or_else(|| NO_PREVIOUS.to_string(), |p| p.to_string());
                if named != expected {
                    problems.push(format!(
                        "{TRAILER_PREVIOUS} names {named}, but the previous apply commit on the branch is {expected} (an apply commit was dropped or the history reordered)"
                    ));
                }
            }
            None if self.chained => problems.push(format!(
                "no {TRAILER_PREVIOUS} trailer, though earlier apply commits are chained"
            )),
            None => {}
        }
        let Some(parent) = commit.parent_ids().next() else {
            problems.push("an apply commit without a parent".into());
            return Ok(problems);
        };
        let now = match trailers::trailer(message, TRAILER_NOW).map(Time::parse_rfc3339) {
            Some(Ok(now)) => now,
            Some(Err(e)) => {
                problems.push(format!("{TRAILER_NOW}: {e}"));
                return Ok(problems);
            }
            None => {
                problems.push(format!("no {TRAILER_NOW} trailer"));
                return Ok(problems);
            }
        };
        let committed = commit.committer().when().seconds();
        if now.unix() > committed + CLOCK_SKEW {
            problems.push(format!(
                "{TRAILER_NOW} {now} is after the commit was made ({}): an apply is never dated in the future",
                Time::from_unix(committed)
            ));
        }
        let parent_commit = find(self.repo, parent)?;
        let parent_tree = parent_commit
            .tree()
            .map_err(|e| Error::git("reading the parent tree", e))?;
        let loaded = match Loaded::from_source_cached(
            &Source::Commit {
                repo: self.repo,
                tree: parent_tree.clone(),
                cache: Some(&self.files),
            },
            now,
            Some(&self.asts),
        ) {
            Ok(l) => l,
            Err(e) => {
                problems.push(format!(
                    "the store at its parent {parent} does not load, so no apply could have been planned there: {}",
                    first_line(&e.to_string())
                ));
                return Ok(problems);
            }
        };
        let plan = match loaded.plan(now, Provenance::committed(parent.into()), None) {
            Ok(p) => p,
            Err(e) => {
                problems.push(format!(
                    "the policies fail at its parent: {}",
                    first_line(&e.to_string())
                ));
                return Ok(problems);
            }
        };
        if trailers::trailer(message, TRAILER_POLICIES) != Some(plan.policies_digest.as_str()) {
            problems.push(format!(
                "{TRAILER_POLICIES} does not match the policies, keyrot.toml and owners.toml of its parent ({})",
                plan.policies_digest
            ));
        }
        if trailers::trailer(message, TRAILER_PLAN) != Some(plan.digest().as_str()) {
            problems.push(format!(
                "{TRAILER_PLAN} is not the digest of what the policies decide at its parent at {now} ({}: {})",
                plan.digest(),
                plan.summary
            ));
        }
        let failed: BTreeSet<&str> = trailers::trailers(message, TRAILER_FAILED).collect();
        let mut by_key: BTreeMap<&str, Vec<&Action>> = BTreeMap::new();
        for a in plan.actions.iter().filter(|a| a.is_applied()) {
            by_key.entry(&*a.key).or_default().push(a);
        }
        for key in &failed {
            if !by_key.contains_key(key) {
                problems.push(format!(
                    "{TRAILER_FAILED} names {key}, which the plan does not change"
                ));
            }
        }
        // Each key the plan changes, as applying its actions leaves the file.
        let mut expected: BTreeSet<String> = BTreeSet::new();
        let mut failures = Vec::new();
        for (id, actions) in &by_key {
            let Some(key) = loaded.store.key(id) else {
                continue;
            };
            if failed.contains(id) {
                failures.push(Failure::before_commit(
                    id,
                    actions,
                    failure_error(message, id, actions),
                ));
                if changed.contains_key(&key.path) {
                    problems.push(format!(
                        "{} changed, but {TRAILER_FAILED} says its actions failed",
                        key.path
                    ));
                }
                continue;
            }
            expected.insert(key.path.clone());
            problems.extend(self.key_file(commit, key, actions, changed, now)?);
        }
        for (path, change) in changed.iter().filter(|(p, _)| !expected.contains(*p)) {
            problems.push(format!(
                "{path} {}, but the plan does not touch it",
                self.what_changed(path, change)
            ));
        }
        let previous = trailers::trailer(message, TRAILER_PREVIOUS).and_then(|p| Oid::from_str(p).ok());
        let written = apply::commit_message(&plan, &failures, previous);
        if problems.is_empty() && message.trim_end() != written.trim_end() {
            problems.push(
                "its message is not what keyrot writes for this plan (edited action lines or trailers)"
                    .into(),
            );
        }
        Ok(problems)
    }

    /// Problems with one key file the plan changes: it must be exactly the parent's
    /// file with the actions applied, a rotation bringing a fingerprint never seen.
    fn key_file(
        &self,
        commit: &Commit,
        key: &crate::store::Key,
        actions: &[&Action],
        changed: &BTreeMap<String, Change>,
        now: Time,
    ) -> Result<Vec<String>> {
        let path = &key.path;
        let Some(change) = changed.get(path) else {
            return Ok(vec![format!(
                "{path}: the plan changes it, but the commit does not"
            )]);
        };
        let Some(new_blob) = change.new else {
            return Ok(vec![format!("{path}: deleted, but the plan only edits it")]);
        };
        let Some(old) = change.old.map(|id| blob_text(self.repo, id, path)).transpose()? else {
            return Ok(vec![format!("{path}: added, but the plan only edits it")]);
        };
        let new = match self.repo.find_blob(new_blob) {
            Ok(b) => String::from_utf8_lossy(b.content()).into_owned(),
            Err(e) => return Err(Error::git(format!("reading {path} in {}", commit.id()), e)),
        };
        let mut problems = Vec::new();
        let mut new_fp = None;
        if apply::rotates(actions) {
            let fp = fingerprint_of(&new);
            match &fp {
                None => problems.push(format!(
                    "{path}: rotated, but it holds no well-formed fingerprint"
                )),
                Some(fp) if self.seen.contains(fp) || key.fingerprint.as_deref() == Some(fp.as_str()) => {
                    problems.push(format!(
                        "{path}: rotated to {fp}, a fingerprint seen before (not a new secret)"
                    ));
                }
                Some(_) => {}
            }
            new_fp = fp;
        }
        let expected = apply::applied_file(key, &old, actions, new_fp.as_deref(), now)?;
        if expected != new {
            let fields = differing_fields(&expected, &new);
            problems.push(if fields.is_empty() {
                format!("{path}: not byte for byte what its actions write (comments or layout changed)")
            } else {
                format!(
                    "{path}: {} not what its actions ({}) write",
                    fields.join(", "),
                    actions
                        .iter()
                        .map(|a| format!("{} [{}]", a.action, a.policy))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            });
        }
        Ok(problems)
    }

    /// `added`, `deleted`, or which fields changed (`changed (\`permissions\`)`).
    fn what_changed(&self, path: &str, change: &Change) -> String {
        let Some(new) = change.new.and_then(|id| self.repo.find_blob(id).ok()) else {
            return "deleted".into();
        };
        let Some(Ok(old)) = change.old.map(|id| blob_text(self.repo, id, path)) else {
            return "added".into();
        };
        if !path.ends_with(".toml") {
            return "changed".into();
        }
        let fields = differing_fields(&old, &String::from_utf8_lossy(new.content()));
        if fields.is_empty() {
            "changed".into()
        } else {
            format!("changed ({})", fields.join(", "))
        }
    }

    /// Adds the fingerprints of every changed key file to what was seen.
    fn remember(&mut self, changed: &BTreeMap<String, Change>) {
        let key_files = changed.iter().filter(|(path, _)| path.ends_with(".toml"));
        for blob in key_files.filter_map(|(_, change)| change.new) {
            if let Ok(b) = self.repo.find_blob(blob) {
                self.seen
                    .extend(all_fingerprints(&String::from_utf8_lossy(b.content())));
            }
        }
    }

    /// Adds the fingerprints of every key file in `commit` (the starting point of a
    /// `--since` run).
    fn remember_all(&mut self, commit: Oid) -> Result<()> {
        let settings = layout_at(self.repo, commit);
        let tree = find(self.repo, commit)?
            .tree()
            .map_err(|e| Error::git("reading a tree", e))?;
        let Ok(entry) = tree.get_path(std::path::Path::new(&settings.keys_dir)) else {
            return Ok(());
        };
        let Ok(keys) = self.repo.find_tree(entry.id()) else {
            return Ok(());
        };
        // Key files at any depth of the keys folder.
        let repo = self.repo;
        let seen = &mut self.seen;
        keys.walk(git2::TreeWalkMode::PreOrder, |dir, e| {
            // No deeper than a load reads (a hostile tree must not run the walk on).
            if dir.matches('/').count() >= files::MAX_DEPTH {
                return git2::TreeWalkResult::Skip;
            }
            if e.kind() == Some(git2::ObjectType::Blob) {
                if let Ok(b) = repo.find_blob(e.id()) {
                    seen.extend(all_fingerprints(&String::from_utf8_lossy(b.content())));
                }
            }
            git2::TreeWalkResult::Ok
        })
        .map_err(|e| Error::git("reading the keys of a commit", e))?;
        Ok(())
    }
}

/// One changed path: its blob before and after the commit (`None`: absent).
struct Change {
    old: Option<Oid>,
    new: Option<Oid>,
}

/// Every path a commit changed against its first parent (every path, for a root).
fn changed_paths(repo: &Repository, commit: &Commit) -> Result<BTreeMap<String, Change>> {
    let git = |e| Error::git(format!("diffing commit {}", commit.id()), e);
    let tree = commit.tree().map_err(git)?;
    let parent_tree = match commit.parent(0) {
        Ok(p) => Some(p.tree().map_err(git)?),
        Err(_) => None,
    };
    let diff = repo
        .diff_tree_to_tree(parent_tree.as_ref(), Some(&tree), None)
        .map_err(git)?;
    let mut out = BTreeMap::new();
    for d in diff.deltas() {
        let new = (d.status() != git2::Delta::Deleted).then(|| d.new_file().id());
        let old = (d.status() != git2::Delta::Added).then(|| d.old_file().id());
        for f in [d.old_file(), d.new_file()] {
            if let Some(p) = f.path().and_then(|p| p.to_str()) {
                out.entry(p.to_string()).or_insert(Change { old, new });
            }
        }
    }
    Ok(out)
}

/// The text of blob `id`, which is `path` in some commit.
fn blob_text(repo: &Repository, id: Oid, path: &str) -> Result<String> {
    let blob = repo
        .find_blob(id)
        .map_err(|e| Error::git(format!("reading {path}"), e))?;
    Ok(String::from_utf8_lossy(blob.content()).into_owned())
}

/// A `sha256:<64 lowercase hex>` fingerprint, as apply writes it.
fn is_fingerprint(text: &str) -> bool {
    text.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The current `fingerprint` of a key file, when well-formed: the first
/// `fingerprint = "…"` line before any table. A line scan, not a parse: the file is
/// then compared byte for byte with what apply writes, so a misread cannot pass.
fn fingerprint_of(text: &str) -> Option<String> {
    text.lines()
        .take_while(|l| !l.trim_start().starts_with('['))
        .find_map(fingerprint_line)
        .filter(|fp| is_fingerprint(fp))
}

/// The value of a `fingerprint = "…"` line.
fn fingerprint_line(line: &str) -> Option<String> {
    let rest = line
        .trim()
        .strip_prefix("fingerprint")?
        .trim_start()
        .strip_prefix('=')?;
    let value = rest.trim().strip_prefix('"')?;
    Some(value[..value.find('"')?].to_string())
}

/// Every fingerprint a key file mentions (current and previous), by a line scan: what
/// the history has shown, so a later rotation cannot bring one back.
fn all_fingerprints(text: &str) -> Vec<String> {
    text.lines().filter_map(fingerprint_line).collect()
}

/// The top-level fields whose values differ between two key files.
fn differing_fields(expected: &str, actual: &str) -> Vec<String> {
    let (Ok(a), Ok(b)) = (expected.parse::<toml::Table>(), actual.parse::<toml::Table>()) else {
        return vec!["the file".into()];
    };
    let names: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    names
        .into_iter()
        .filter(|n| a.get(*n) != b.get(*n))
        .map(|n| format!("`{n}`"))
        .collect()
}

/// The error an apply commit recorded for a key its service refused: the text after
/// `not applied: ` on its `failed` line.
fn failure_error(message: &str, key: &str, actions: &[&Action]) -> String {
    let policies: Vec<&str> = actions.iter().map(|a| &*a.policy).collect();
    let names: Vec<String> = actions.iter().map(|a| a.action.to_string()).collect();
    let prefix = format!(
        "{FAILED} {key} [{}] {} not applied: ",
        policies.join(","),
        names.join(", ")
    );
    message
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_default()
        .to_string()
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_sha256_and_64_lowercase_hex() {
        let good = format!("sha256:{}", "0123456789abcdef".repeat(4));
        assert!(is_fingerprint(&good));
        assert!(!is_fingerprint(&good.to_uppercase()));
        assert!(!is_fingerprint(&good[..good.len() - 1]));
        assert!(!is_fingerprint(&good.replace("sha256:", "sha1:")));
        assert!(!is_fingerprint(&format!("{good}0")));
        let file = format!(
            "service = \"x\"\nfingerprint = \"{good}\"\n\n[[previous]]\nfingerprint = \"sha256:old\"\nvalid_until = 2026-01-01T00:00:00Z\n"
        );
        assert_eq!(fingerprint_of(&file), Some(good.clone()));
        assert_eq!(all_fingerprints(&file), [good.clone(), "sha256:old".to_string()]);
        assert_eq!(fingerprint_of("fingerprint = \"sha256:short\"\n"), None);
        assert!(all_fingerprints("not toml [").is_empty());
        // A fingerprint under a table is not the key's current one.
        assert_eq!(
            fingerprint_of(&format!(
                "service = \"x\"\n[[previous]]\nfingerprint = \"{good}\"\n"
            )),
            None
        );
    }

    #[test]
    fn differing_fields_names_each_changed_top_level_field() {
        let a = "a = 1\nb = [\"x\"]\n# comment\n";
        assert!(differing_fields(a, "a = 1\nb = [\"x\"]\n").is_empty());
        assert_eq!(
            differing_fields(a, "a = 2\nb = [\"x\", \"y\"]\nc = 3\n"),
            ["`a`", "`b`", "`c`"]
        );
        assert_eq!(differing_fields(a, "a = ["), ["the file"]);
    }

    #[test]
    fn a_failed_keys_error_is_read_back_from_its_line() {
        let message = "keyrot apply: 0 rotate, 0 revoke, 0 restrict, 0 expire\n\nfailed k1 [max-age,least-privilege] rotate, restrict not applied: provider p (create): refused\n\nKeyrot-Failed: k1\n";
        let rotate = Action::new(
            &"k1".into(),
            crate::plan::ActionKind::Rotate,
            &"max-age".into(),
            "old".into(),
        );
        let restrict = Action::new(
            &"k1".into(),
            crate::plan::ActionKind::Restrict,
            &"least-privilege".into(),
            "w".into(),
        );
        assert_eq!(
            failure_error(message, "k1", &[&rotate, &restrict]),
            "provider p (create): refused"
        );
        assert_eq!(failure_error(message, "k1", &[&rotate]), "");
        assert_eq!(failure_error(message, "k2", &[&rotate, &restrict]), "");
    }

    #[test]
    fn store_paths_are_the_root_files_and_both_layouts_folders() {
        let moved = Settings {
            keys_dir: "inventory".into(),
            ..Settings::default()
        };
        let layouts = [store_paths(&Settings::default()), store_paths(&moved)];
        for path in [
            "keyrot.toml",
            "owners.toml",
            "exceptions.toml",
            "keys/a.toml",
            "inventory/a.toml",
            "policies/x.rhai",
        ] {
            assert!(is_store_path(path, &layouts), "{path}");
        }
        for path in ["README.md", "keysx/a.toml", "providers/ledger", "sub/keyrot.toml"] {
            assert!(!is_store_path(path, &layouts), "{path}");
        }
    }
}
