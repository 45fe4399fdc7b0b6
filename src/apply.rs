//! Applying a plan: check it is still what the policies decide at the committed state,
//! write new secrets (pending until the commit lands), edit the key files in place,
//! build one commit from only the changed blobs and trees, move the branch with a
//! compare-and-swap, then bring the secrets folder, work tree and index along.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use git2::{Oid, Repository, Tree};
use rand::rngs::OsRng;
use rand::TryRngCore;
use toml_edit::{ArrayOfTables, DocumentMut, Item, Table, Value};

use crate::error::{Error, Result};
use crate::plan::{Action, ActionKind, Plan};
use crate::secret::{Secret, SecretsDir};
use crate::store::{files, repo, Key};
use crate::time::{Dur, Time};
use crate::workspace::{Loaded, Workspace};

/// A new secret that an apply delivered.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Delivered {
    pub key: String,
    pub fingerprint: String,
    pub path: PathBuf,
}

/// What an apply did.
#[derive(Debug, serde::Serialize)]
pub struct Applied {
    /// The new commit, or `None` when the plan changed nothing.
    pub commit: Option<String>,
    pub branch: String,
    pub subject: Option<String>,
    pub secrets: Vec<Delivered>,
}

/// Loads the committed store at HEAD for applying, refusing while the work tree has
/// uncommitted changes to the files keyrot reads.
pub fn load_head(ws: &Workspace, now: Time) -> Result<(String, Loaded)> {
    let head = ws
        .head_id()?
        .ok_or_else(|| Error::Usage("the store has no commits yet; commit its files first".into()))?;
    let loaded = ws.load_commit(&head, now)?;
    let dirty = ws.dirty_paths(&loaded.store)?;
    if !dirty.is_empty() {
        return Err(Error::Dirty(dirty));
    }
    Ok((head, loaded))
}

/// Checks a saved plan against the store: made on a clean tree, for this very commit
/// and these very files, and identical to what the policies decide there at its `now`.
/// Returns the loaded committed store to apply it to.
pub fn verify_saved(ws: &Workspace, plan: &Plan) -> Result<Loaded> {
    if plan.dirty {
        return Err(Error::ForgedPlan(
            "it was made on a work tree with uncommitted changes; commit them and plan again".into(),
        ));
    }
    let now = plan.now()?;
    let head = ws
        .head_id()?
        .ok_or_else(|| Error::Usage("the store has no commits yet".into()))?;
    let planned = plan.store_commit.as_deref().unwrap_or("(none)");
    if planned != head {
        let known = git2::Oid::from_str(planned)
            .ok()
            .is_some_and(|oid| ws.repo.find_commit(oid).is_ok());
        return Err(Error::StalePlan(if known {
            format!("it was made at commit {planned}, but the store is now at {head} (already applied, or changed since)")
        } else {
            format!(
                "it was made at commit {planned}, which is not in this store (a plan from another store?)"
            )
        }));
    }
    let (_, loaded) = load_head(ws, now)?;
    if loaded.store.policies_digest != plan.policies_digest {
        return Err(Error::StalePlan(
            "policies_digest does not match the policies, keyrot.toml and owners.toml at HEAD".into(),
        ));
    }
    if loaded.store.keys_digest != plan.keys_digest {
        return Err(Error::StalePlan(
            "keys_digest does not match the key files at HEAD".into(),
        ));
    }
    let derived = loaded.plan(now, Some(head), false)?;
    if derived != *plan {
        let detail = match derived
            .actions
            .iter()
            .zip(&plan.actions)
            .position(|(a, b)| a != b)
        {
            Some(i) => format!(
                "action {} differs: the policies decide {:?}",
                i + 1,
                describe(&derived.actions[i])
            ),
            None => format!(
                "the policies decide {} actions, the file lists {}",
                derived.actions.len(),
                plan.actions.len()
            ),
        };
        return Err(Error::ForgedPlan(format!(
            "its actions are not what the policies decide at {} for {} (edited or forged?): {detail}",
            plan.store_commit.as_deref().unwrap_or("?"),
            plan.now
        )));
    }
    Ok(loaded)
}

fn describe(a: &Action) -> String {
    format!("{} {} [{}]", a.action, a.key, a.policy)
}

/// The changes one key gets, merged from all its applied actions.
#[derive(Default)]
struct KeyChanges {
    revoke: Vec<String>,
    /// The shortest grace period asked for, when any policy asked for a rotation.
    rotate_grace: Option<Dur>,
    remove: Vec<String>,
    expire: Vec<String>,
}

fn merge(actions: &[&Action]) -> Result<KeyChanges> {
    let mut c = KeyChanges::default();
    for a in actions {
        match a.action {
            ActionKind::Revoke => c.revoke.push(a.reason.clone()),
            ActionKind::Rotate => {
                let grace = a
                    .grace_period
                    .as_deref()
                    .map(Dur::parse)
                    .transpose()
                    .map_err(|e| Error::ForgedPlan(format!("grace_period of {}: {e}", a.key)))?
                    .unwrap_or_default();
                c.rotate_grace = Some(c.rotate_grace.map_or(grace, |g| g.min(grace)));
            }
            ActionKind::Restrict => {
                for p in a.remove.iter().flatten() {
                    if !c.remove.contains(p) {
                        c.remove.push(p.clone());
                    }
                }
            }
            ActionKind::Expire => c.expire.extend(a.fingerprint.clone()),
            ActionKind::Deferred | ActionKind::Warn => {}
        }
    }
    Ok(c)
}

fn toml_time(t: Time) -> Value {
    Value::from(t.to_toml())
}

/// Sets a top-level value, keeping the decoration (comments, spacing) of the one it
/// replaces so the diff shows only the value.
fn set(table: &mut Table, key: &str, v: impl Into<Value>) {
    let mut v = v.into();
    match table.get_mut(key).and_then(Item::as_value_mut) {
        Some(old) => {
            *v.decor_mut() = old.decor().clone();
            *old = v;
        }
        None => {
            table.insert(key, Item::Value(v));
        }
    }
}

/// Edits one key file's text for its changes. Everything not changed keeps its bytes.
fn edit_key_file(key: &Key, text: &str, c: &KeyChanges, new_fp: Option<&str>, now: Time) -> Result<String> {
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e| Error::Usage(format!("{}: cannot edit: {e}", key.path)))?;
    let root = doc.as_table_mut();
    if !c.revoke.is_empty() {
        set(root, "status", "revoked");
        set(root, "revoked_at", toml_time(now));
        set(root, "revoke_reason", c.revoke.join("; "));
        root.remove("previous");
        return Ok(doc.to_string());
    }
    if !c.expire.is_empty() {
        if let Some(prev) = root.get_mut("previous").and_then(Item::as_array_of_tables_mut) {
            prev.retain(|t| {
                let fp = t.get("fingerprint").and_then(Item::as_str).unwrap_or_default();
                !c.expire.iter().any(|e| e == fp)
            });
            if prev.is_empty() {
                root.remove("previous");
            }
        }
    }
    if !c.remove.is_empty() {
        if let Some(perms) = root.get_mut("permissions").and_then(Item::as_array_mut) {
            perms.retain(|v| !v.as_str().is_some_and(|p| c.remove.iter().any(|r| r == p)));
        }
    }
    if let (Some(grace), Some(new_fp)) = (c.rotate_grace, new_fp) {
        if let Some(old) = key.fingerprint.as_deref() {
            if grace > Dur::ZERO {
                let until = now.checked_add(grace).unwrap_or(now);
                let mut entry = Table::new();
                entry.insert("fingerprint", Item::Value(old.into()));
                entry.insert("valid_until", Item::Value(toml_time(until)));
                if !root.contains_key("previous") {
                    root.insert("previous", Item::ArrayOfTables(ArrayOfTables::new()));
                }
                if let Some(prev) = root.get_mut("previous").and_then(Item::as_array_of_tables_mut) {
                    prev.push(entry);
                }
            }
        }
        set(root, "fingerprint", new_fp);
        set(root, "rotated_at", toml_time(now));
    }
    Ok(doc.to_string())
}

/// The apply commit's message: subject, one line per applied action (and warning),
/// then the trailers that tie it to its plan.
pub fn commit_message(plan: &Plan) -> String {
    let s = &plan.summary;
    let counts: Vec<String> = [
        (s.rotate, "rotate"),
        (s.revoke, "revoke"),
        (s.restrict, "restrict"),
        (s.expire, "expire"),
    ]
    .iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{n} {what}"))
    .collect();
    let mut msg = format!("{SUBJECT_PREFIX} {}\n\n", counts.join(", "));
    for a in &plan.actions {
        if a.superseded_by.is_some() || !(a.action.changes_store() || a.action == ActionKind::Warn) {
            continue;
        }
        let mut reason = a.reason.clone();
        if let Some(fp) = &a.fingerprint {
            reason = format!("{reason} ({fp})");
        }
        if let Some(remove) = &a.remove {
            reason = format!("{reason} (remove {})", remove.join(", "));
        }
        msg.push_str(&format!("{} {} [{}] {}\n", a.action, a.key, a.policy, reason));
    }
    msg.push_str(&format!(
        "\n{TRAILER_PLAN}: {}\n{TRAILER_POLICIES}: {}\n{TRAILER_NOW}: {}\n",
        plan.digest(),
        plan.policies_digest,
        plan.now
    ));
    msg
}

pub const SUBJECT_PREFIX: &str = "keyrot apply:";
pub const TRAILER_PLAN: &str = "Keyrot-Plan";
pub const TRAILER_POLICIES: &str = "Keyrot-Policies";
pub const TRAILER_NOW: &str = "Keyrot-Now";

/// A new tree: `base` with each `(path, blob)` written in, touching only the trees on
/// those paths.
fn write_tree(repo: &Repository, base: Option<&Tree>, changes: &[(Vec<&str>, Oid)]) -> Result<Oid> {
    let git = |e| Error::git("building the commit tree", e);
    let mut builder = repo.treebuilder(base).map_err(git)?;
    let mut sub: BTreeMap<&str, Vec<(Vec<&str>, Oid)>> = BTreeMap::new();
    for (parts, oid) in changes {
        match parts.as_slice() {
            [name] => {
                let mode = base
                    .and_then(|t| t.get_name(name))
                    .map_or(0o100644, |e| e.filemode());
                builder.insert(name, *oid, mode).map_err(git)?;
            }
            [dir, rest @ ..] => sub.entry(dir).or_default().push((rest.to_vec(), *oid)),
            [] => {}
        }
    }
    for (dir, changes) in sub {
        let subtree = base
            .and_then(|t| t.get_name(dir))
            .and_then(|e| repo.find_tree(e.id()).ok());
        let oid = write_tree(repo, subtree.as_ref(), &changes)?;
        builder.insert(dir, oid, 0o040000).map_err(git)?;
    }
    builder.write().map_err(git)
}

/// A random id for this apply's pending files.
fn txid() -> Result<String> {
    let mut b = [0u8; 8];
    OsRng
        .try_fill_bytes(&mut b)
        .map_err(|e| Error::Usage(format!("the operating system's random generator failed: {e}")))?;
    Ok(files::hex(&b))
}

/// Applies `plan` to the committed store `loaded` (which must be the plan's commit).
pub fn execute(ws: &Workspace, loaded: &Loaded, plan: &Plan, secrets: &SecretsDir) -> Result<Applied> {
    let branch = repo::current_branch(&ws.repo)?;
    let now = plan.now()?;
    let mut by_key: BTreeMap<&str, Vec<&Action>> = BTreeMap::new();
    for a in plan.actions.iter().filter(|a| a.is_applied()) {
        by_key.entry(a.key.as_str()).or_default().push(a);
    }
    if by_key.is_empty() {
        return Ok(Applied {
            commit: None,
            branch,
            subject: None,
            secrets: Vec::new(),
        });
    }
    let base_id = plan
        .store_commit
        .as_deref()
        .and_then(|s| Oid::from_str(s).ok())
        .ok_or_else(|| Error::ForgedPlan("the plan names no store commit".into()))?;
    let base = ws
        .repo
        .find_commit(base_id)
        .map_err(|e| Error::git("reading the base commit", e))?;
    let base_tree = base.tree().map_err(|e| Error::git("reading the base tree", e))?;
    let txid = txid()?;
    let store = &loaded.store;

    // 1. New key files and pending secrets. Nothing here is visible until the ref moves.
    let mut edited: Vec<(String, String)> = Vec::new();
    let mut pending: Vec<(String, String)> = Vec::new(); // (key id, fingerprint)
    let mut revoked: Vec<String> = Vec::new();
    let staged = (|| -> Result<()> {
        for (id, actions) in &by_key {
            let key = store
                .key(id)
                .ok_or_else(|| Error::ForgedPlan(format!("key `{id}` is not in the store")))?;
            let changes = merge(actions)?;
            let entry = base_tree
                .get_path(Path::new(&key.path))
                .map_err(|e| Error::git(format!("reading {}", key.path), e))?;
            let blob = ws
                .repo
                .find_blob(entry.id())
                .map_err(|e| Error::git(format!("reading {}", key.path), e))?;
            let text = std::str::from_utf8(blob.content())
                .map_err(|_| Error::Usage(format!("{}: not UTF-8", key.path)))?;
            let mut new_fp = None;
            if changes.rotate_grace.is_some() && changes.revoke.is_empty() {
                let s = &store.settings;
                let secret = Secret::generate(&s.secret_prefix, &key.service, s.secret_bytes)?;
                secrets.write_pending(id, &txid, &secret)?;
                pending.push((id.to_string(), secret.fingerprint()));
                new_fp = Some(secret.fingerprint());
            }
            if !changes.revoke.is_empty() {
                revoked.push(id.to_string());
            }
            let new_text = edit_key_file(key, text, &changes, new_fp.as_deref(), now)?;
            edited.push((key.path.clone(), new_text));
        }
        Ok(())
    })();
    let discard = |pending: &[(String, String)]| {
        for (id, _) in pending {
            secrets.discard(id, &txid);
        }
    };
    if let Err(e) = staged {
        discard(&pending);
        return Err(e);
    }

    // 2. Objects: blobs for the changed files, trees along their paths, the commit.
    let committed = (|| -> Result<Oid> {
        let mut changes = Vec::with_capacity(edited.len());
        for (path, text) in &edited {
            let oid = ws
                .repo
                .blob(text.as_bytes())
                .map_err(|e| Error::git("writing a key file blob", e))?;
            changes.push((path.split('/').collect::<Vec<_>>(), oid));
        }
        let tree_id = write_tree(&ws.repo, Some(&base_tree), &changes)?;
        let tree = ws
            .repo
            .find_tree(tree_id)
            .map_err(|e| Error::git("reading the new tree", e))?;
        let sig = repo::signature(&ws.repo, &store.settings)?;
        let message = commit_message(plan);
        let commit = ws
            .repo
            .commit(None, &sig, &sig, &message, &tree, &[&base])
            .map_err(|e| Error::git("writing the commit", e))?;
        crate::failpoint::pause("apply-before-commit");
        // 3. The commit point: move the branch only if it still points at the base.
        ws.repo
            .reference_matching(&branch, commit, true, base_id, "keyrot apply")
            .map_err(|e| {
                Error::Usage(format!(
                    "{branch} moved while applying (another apply or commit won the race): {}; nothing was applied\n  hint: run `keyrot plan` again",
                    e.message()
                ))
            })?;
        Ok(commit)
    })();
    let commit = match committed {
        Ok(c) => c,
        Err(e) => {
            discard(&pending);
            return Err(e);
        }
    };

    // 4. After the commit point: deliver secrets, then bring the work tree along.
    let delivered =
        finish(ws, secrets, &txid, &pending, &revoked, &edited).map_err(|e| Error::AfterCommit {
            commit: commit.to_string(),
            source: Box::new(e),
        })?;

    let subject = commit_message(plan).lines().next().map(str::to_string);
    Ok(Applied {
        commit: Some(commit.to_string()),
        branch,
        subject,
        secrets: delivered,
    })
}

/// The steps after the commit point: promote pending secrets, remove revoked keys'
/// secrets, and update the work tree.
fn finish(
    ws: &Workspace,
    secrets: &SecretsDir,
    txid: &str,
    pending: &[(String, String)],
    revoked: &[String],
    edited: &[(String, String)],
) -> Result<Vec<Delivered>> {
    let mut delivered = Vec::new();
    for (id, fingerprint) in pending {
        let path = secrets.promote(id, txid)?;
        delivered.push(Delivered {
            key: id.clone(),
            fingerprint: fingerprint.clone(),
            path,
        });
    }
    for id in revoked {
        secrets.remove(id)?;
    }
    secrets.sync()?;
    update_worktree(ws, edited)?;
    Ok(delivered)
}

/// Writes the edited key files into the work tree (each atomically, by rename) and
/// points their index entries at the new blobs, so `git status` is clean afterwards.
fn update_worktree(ws: &Workspace, edited: &[(String, String)]) -> Result<()> {
    let mut index = ws.repo.index().map_err(|e| Error::git("reading the index", e))?;
    for (rel, text) in edited {
        let path = ws.root.join(rel);
        let tmp = path.with_extension("toml.keyrot-tmp");
        let write = || -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, &path)
        };
        write().map_err(|e| Error::io(&path, e))?;
        index
            .add_path(Path::new(rel))
            .map_err(|e| Error::git(format!("updating the index for {rel}"), e))?;
    }
    index.write().map_err(|e| Error::git("writing the index", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::key;

    const TEXT: &str = r#"# Binance trading bot
service = "binance"
owner = "alice"   # on-call: alice
permissions = ["read", "trade", "withdraw"]
created_at = 2026-03-01T00:00:00Z
fingerprint = "sha256:1111111111111111111111111111111111111111111111111111111111111111" # current

[[previous]]
fingerprint = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
valid_until = 2026-04-01T00:00:00Z
"#;

    fn now() -> Time {
        Time::parse_rfc3339("2026-11-22T20:00:00Z").unwrap()
    }

    #[test]
    fn rotate_keeps_comments_and_moves_the_old_secret_to_previous() {
        let k = key::parse("keys/b.toml", TEXT).unwrap();
        let c = KeyChanges {
            rotate_grace: Some(Dur::parse("1d").unwrap()),
            expire: vec![k.previous[0].fingerprint.clone()],
            remove: vec!["withdraw".into()],
            ..KeyChanges::default()
        };
        let fp = format!("sha256:{}", "3".repeat(64));
        let out = edit_key_file(&k, TEXT, &c, Some(&fp), now()).unwrap();
        assert!(out.starts_with("# Binance trading bot\n"));
        assert!(out.contains("owner = \"alice\"   # on-call: alice"));
        assert!(
            out.contains(&format!("fingerprint = \"{fp}\" # current")),
            "{out}"
        );
        assert!(out.contains("permissions = [\"read\", \"trade\"]"), "{out}");
        assert!(!out.contains(&"2".repeat(64)), "expired entry must go: {out}");
        let back = key::parse("keys/b.toml", &out).unwrap();
        assert_eq!(back.previous.len(), 1);
        assert_eq!(back.previous[0].fingerprint, k.fingerprint.clone().unwrap());
        assert_eq!(
            back.previous[0].valid_until,
            Time::parse_rfc3339("2026-11-23T20:00:00Z").unwrap()
        );
        assert_eq!(back.rotated_at, now());
    }

    #[test]
    fn revoke_drops_every_previous_secret() {
        let k = key::parse("keys/b.toml", TEXT).unwrap();
        let c = KeyChanges {
            revoke: vec!["leaked".into()],
            ..KeyChanges::default()
        };
        let out = edit_key_file(&k, TEXT, &c, None, now()).unwrap();
        let back = key::parse("keys/b.toml", &out).unwrap();
        assert_eq!(back.status, crate::store::KeyStatus::Revoked);
        assert!(back.previous.is_empty());
        assert_eq!(back.revoke_reason.as_deref(), Some("leaked"));
        assert_eq!(back.revoked_at, Some(now()));
    }

    #[test]
    fn zero_grace_keeps_no_previous_entry() {
        let text = "service = \"x\"\nowner = \"a\"\npermissions = []\ncreated_at = 2026-03-01T00:00:00Z\nfingerprint = \"sha256:1111111111111111111111111111111111111111111111111111111111111111\"\n";
        let k = key::parse("keys/b.toml", text).unwrap();
        let c = KeyChanges {
            rotate_grace: Some(Dur::ZERO),
            ..KeyChanges::default()
        };
        let fp = format!("sha256:{}", "3".repeat(64));
        let out = edit_key_file(&k, text, &c, Some(&fp), now()).unwrap();
        assert!(key::parse("keys/b.toml", &out).unwrap().previous.is_empty());
    }
}
