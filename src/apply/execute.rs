//! Carrying a plan out, between the transaction's start and its commit point:
//! secrets made and held pending, service steps run, key files edited, the commit
//! built and published, then everything after the commit point finished.

use std::collections::BTreeMap;
use std::path::PathBuf;

use git2::Oid;

use super::commit::{commit_message, previous_apply};
use super::journal::Journal;
use crate::error::{Error, RemoteError, Result, StoreError};
use crate::failpoint;
use crate::plan::{Action, Plan, Provenance};
use crate::secret::{Secret, SecretsDir};
use crate::store::repo::{self, CommitId};
use crate::workspace::{Loaded, Workspace};

use super::transaction::{Guard, Publisher};
use super::{commit, edit, journal, service, StepOptions};
use super::{Applied, Failure};

/// Applies `plan` to the committed store `loaded` (which must be the plan's commit).
pub(super) fn execute(
    ws: &Workspace,
    guard: &Guard,
    loaded: &Loaded,
    plan: &Plan,
    secrets: &SecretsDir,
    publisher: &mut Publisher,
    steps: StepOptions,
) -> Result<Applied> {
    let branch = repo::current_branch(&ws.repo)?;
    let now = plan.now;
    let mut notes = guard.notes.clone();
    let mut orphans = secrets.orphans(&guard.txid);
    // Pending files of the dead apply whose stale lock we took over are surely dead.
    if let Some(dead) = &guard.stale_txid {
        let suffix = format!(".{dead}.pending");
        let (theirs, others): (Vec<_>, Vec<_>) = orphans
            .into_iter()
            .partition(|p| p.to_string_lossy().ends_with(&suffix));
        for p in &theirs {
            let _ = std::fs::remove_file(p);
        }
        if !theirs.is_empty() {
            notes.push(format!(
                "deleted {} pending secret file(s) of that dead apply; they were never live",
                theirs.len()
            ));
        }
        orphans = others;
    }
    if !orphans.is_empty() {
        let names: Vec<String> = orphans.iter().map(|p| p.display().to_string()).collect();
        notes.push(format!(
            "{} pending secret file(s) left by an apply that never committed; they are not live and can be deleted: {}",
            names.len(),
            names.join(", ")
        ));
    }
    let mut by_key: BTreeMap<&str, Vec<&Action>> = BTreeMap::new();
    for a in plan.actions.iter().filter(|a| a.is_applied()) {
        by_key.entry(&*a.key).or_default().push(a);
    }
    if by_key.is_empty() {
        return Ok(Applied::no_commit(branch, notes, Vec::new()));
    }
    let base_id = plan
        .store_commit
        .as_ref()
        .map(CommitId::oid)
        .ok_or_else(|| Error::ForgedPlan("the plan names no store commit".into()))?;
    let base = ws
        .repo
        .find_commit(base_id)
        .map_err(|e| Error::git("reading the base commit", e))?;
    let base_tree = base.tree().map_err(|e| Error::git("reading the base tree", e))?;
    let txid = guard.txid.as_str();
    let store = &loaded.store;
    // Resolved before any service is touched: a signature that cannot be made must
    // stop the apply while nothing has happened yet.
    let author = repo::signature(&ws.repo, &store.settings)?;
    let signer = crate::signing::Signer::from_config(&ws.repo, &store.settings, &author)?;
    let previous = previous_apply(&ws.repo, base_id)?;
    let mut j = Journal {
        txid: txid.to_string(),
        branch: branch.clone(),
        base: base_id.to_string(),
        commit: String::new(),
        secrets_dir: secrets.path().to_path_buf(),
        pending: Vec::new(),
        revoked: Vec::new(),
        edited: Vec::new(),
        keep_local: true,
        remote: publisher.remote(),
    };

    // Steps before the commit point; on any failure, delete what they wrote.
    let paths: Vec<&str> = by_key
        .keys()
        .filter_map(|id| store.key(id))
        .map(|k| k.path.as_str())
        .collect();
    let base_blobs = repo::blob_ids(&ws.repo, &base_tree, &paths)?;
    let mut edited_text: Vec<(String, String)> = Vec::new();
    let mut failed: Vec<Failure> = Vec::new();
    // What each key's file holds and what changes in it, in key order.
    let mut keys = Vec::with_capacity(by_key.len());
    for (id, actions) in &by_key {
        let key = store
            .key(id)
            .ok_or_else(|| Error::ForgedPlan(format!("key `{id}` is not in the store")))?;
        let blob_id = base_blobs
            .get(&key.path)
            .ok_or_else(|| Error::ForgedPlan(format!("{} is not in the base commit", key.path)))?;
        let blob = ws
            .repo
            .find_blob(*blob_id)
            .map_err(|e| Error::git(format!("reading {}", key.path), e))?;
        let text = std::str::from_utf8(blob.content())
            .map_err(|_| StoreError::NotUtf8 {
                path: key.path.clone(),
            })?
            .to_string();
        keys.push((*id, actions, key, edit::merge(actions), text));
    }
    let services: std::collections::BTreeSet<&str> = keys.iter().map(|k| k.2.service.as_str()).collect();
    let mut svc = service::Services::new(ws, &store.settings, secrets, txid, &base_id.to_string(), services)?
        .with_parallelism(steps.parallelism)
        .with_progress(steps.progress);
    // With a Vault sink the plaintext lives in Vault alone: pending files are only for
    // crash safety, and go once the commit landed.
    j.keep_local = svc.keeps_local_copies();
    let s = &store.settings;
    let prepared = (|| -> Result<Option<Oid>> {
        // At the services first, different keys' steps at once; a failed step leaves
        // its key's file unchanged and the other keys go on.
        let at_services: Vec<usize> = (0..keys.len())
            .filter(|&i| svc.involves(&keys[i].2.service))
            .collect();
        if let Some(progress) = steps.progress {
            let mut totals: BTreeMap<String, u64> = BTreeMap::new();
            for &i in &at_services {
                *totals.entry(keys[i].2.service.clone()).or_default() += service::planned_steps(&keys[i].3);
            }
            progress.planned(&totals.into_iter().collect::<Vec<_>>());
        }
        let outcomes = svc.each(&at_services, |&i| {
            let (_, _, key, changes, _) = &keys[i];
            let make = || Secret::generate(&s.secret_prefix, &key.service, s.secret_bytes);
            at_service(&svc, key, changes, make)
        });
        let mut outcomes: BTreeMap<usize, _> = at_services.into_iter().zip(outcomes).collect();
        let phase = |name, total| {
            if let Some(p) = steps.progress {
                p.phase(name, total);
            }
        };
        // Then every key in order, as if one after another.
        phase("writing key files", Some(keys.len() as u64));
        for (i, (id, actions, key, changes, text)) in keys.iter().enumerate() {
            if let Some(p) = steps.progress {
                p.tick();
            }
            let new_fp = match outcomes.remove(&i) {
                Some(outcome) => match outcome? {
                    Ok(fp) => fp,
                    Err(e) => {
                        failed.push(Failure::before_commit(id, actions, e.message));
                        continue;
                    }
                },
                None if changes.gets_new_secret() => {
                    let secret = Secret::generate(&s.secret_prefix, &key.service, s.secret_bytes)?;
                    secrets.write_pending(id, txid, &secret)?;
                    Some(secret.fingerprint())
                }
                None => None,
            };
            if !changes.revoke.is_empty() {
                j.revoked.push(id.to_string());
            } else if let Some(fp) = &new_fp {
                j.pending.push((id.to_string(), fp.clone()));
            }
            edited_text.push((
                key.path.clone(),
                edit::edit_key_file(key, text, changes, new_fp.as_deref(), now)?,
            ));
        }
        if edited_text.is_empty() {
            return Ok(None);
        }
        secrets.sync()?;
        failpoint::pause("apply-after-secrets");

        phase("writing the commit", None);
        let new = commit::write_objects(
            &ws.repo,
            base_id,
            &edited_text,
            &author,
            &commit_message(plan, &failed, previous),
            signer.as_ref(),
        )?;
        // The objects must be on disk before any ref can point at them.
        crate::durable::sync_filesystem(ws.repo.path())?;
        failpoint::pause("apply-after-objects");
        j.commit = new.to_string();
        j.edited = edited_text.iter().map(|(p, _)| p.clone()).collect();
        j.write(ws.repo.path())?;
        failpoint::pause("apply-before-commit");
        // The commit point: move the branch only if it still points at the base (with
        // a remote: push it so). If a shared branch moved meanwhile, the same commit is
        // made again on its new tip when the policies still decide exactly the same
        // there; otherwise the apply is rolled back.
        let (mut new, mut base) = (new, base_id);
        phase(publisher.moving(), None);
        for attempt in 1.. {
            failpoint::fail("apply-move-branch")?;
            let Some(tip) = publisher.publish(ws, &branch, base_id, base, new)? else {
                break;
            };
            if attempt > 3 {
                return Err(RemoteError::KeptMoving {
                    branch: branch.to_string(),
                }
                .into());
            }
            let derived = still_decided(ws, tip, base, plan, &edited_text)?;
            new = commit::write_objects(
                &ws.repo,
                tip,
                &edited_text,
                &author,
                &commit_message(&derived, &failed, previous_apply(&ws.repo, tip)?),
                signer.as_ref(),
            )?;
            crate::durable::sync_filesystem(ws.repo.path())?;
            base = tip;
            j.base = tip.to_string();
            j.commit = new.to_string();
            j.write(ws.repo.path())?;
        }
        // Durable before secrets are promoted, so a power cut cannot undo the ref move
        // after the secret files changed.
        crate::durable::sync_filesystem(ws.repo.path())?;
        Ok(Some(new))
    })();
    let commit = match prepared {
        Ok(Some(c)) => c,
        Ok(None) => {
            // Every key failed at its service: nothing to commit.
            svc.rollback_all()?;
            return Ok(Applied::no_commit(branch, notes, failed));
        }
        // Pushed to the shared remote, but the local side could not follow (the
        // commit has landed, so nothing is rolled back); or the remote refused the
        // push (the commit is kept to push again). Either way the journals stay for
        // the next apply, which finishes it.
        Err(e @ (Error::AfterCommit { .. } | Error::NotPushed { .. })) => return Err(e),
        Err(e) => {
            // Take back what services hold before the pending secrets go.
            let undone = svc.rollback_all();
            for (id, _) in &j.pending {
                secrets.discard(id, txid);
            }
            let _ = Journal::remove(ws.repo.path());
            undone?;
            return Err(e);
        }
    };
    failpoint::pause("apply-after-commit");
    // The store knows the new secrets now: the services may make them current, and
    // Vault may drop what was revoked or expired. Failures here are retried by the
    // next apply, which finds them journaled.
    let after_commit = |e| Error::AfterCommit {
        commit: commit.to_string(),
        source: Box::new(e),
    };
    let finished = svc.finish_all().map_err(after_commit)?;
    let cleaned = svc.clean_up().map_err(after_commit)?;
    for (key, e) in finished.into_iter().chain(cleaned) {
        failed.push(Failure {
            key,
            actions: vec!["finish".into()],
            policies: Vec::new(),
            error: format!("{e} (the commit landed; the next keyrot apply retries this)"),
            after_commit: true,
        });
    }

    let mut delivered = journal::complete(ws, &j, &edited_text).map_err(after_commit)?;
    for d in &mut delivered {
        if let Some((location, version)) = svc.delivered(&d.key) {
            d.path = PathBuf::from(format!("{location} (version {version})"));
        }
    }
    Ok(Applied {
        commit: Some(commit.to_string()),
        branch,
        subject: commit_message(plan, &failed, previous)
            .lines()
            .next()
            .map(str::to_string),
        secrets: delivered,
        notes,
        failed,
    })
}

/// The plan at `tip`, when it decides exactly what `plan` (made at `base`) does and the
/// key files the apply edits are the same there: then the apply's commit can be made
/// again on `tip`. Otherwise an error that says why the apply must be rolled back.
fn still_decided(
    ws: &Workspace,
    tip: Oid,
    base: Oid,
    plan: &Plan,
    edited: &[(String, String)],
) -> Result<Plan> {
    let moved = |why: String| {
        Error::from(RemoteError::MovedAndRolledBack {
            tip: tip.to_string(),
            why,
        })
    };
    let derived = ws
        .load_commit(&tip.to_string(), plan.now)
        .and_then(|l| l.plan(plan.now, Provenance::committed(tip.into()), None))
        .map_err(|e| moved(format!("the store there does not plan: {e}")))?;
    if derived.actions != plan.actions {
        return Err(moved(format!(
            "the policies decide differently there ({})",
            derived.summary
        )));
    }
    let tree = |id: Oid| {
        ws.repo
            .find_commit(id)
            .and_then(|c| c.tree())
            .map_err(|e| Error::git("reading a tree", e))
    };
    let paths: Vec<&str> = edited.iter().map(|(p, _)| p.as_str()).collect();
    let (at_base, at_tip) = (
        repo::blob_ids(&ws.repo, &tree(base)?, &paths)?,
        repo::blob_ids(&ws.repo, &tree(tip)?, &paths)?,
    );
    if let Some(p) = paths.iter().find(|p| at_base.get(**p) != at_tip.get(**p)) {
        return Err(moved(format!("{p} changed there")));
    }
    Ok(derived)
}

/// One key's actions at its service, before the commit: revoke; or expire, restrict
/// and rotate. The outer error stops the apply (a journal could not be written); the
/// inner one fails this key alone. Returns the new fingerprint of a rotation.
fn at_service(
    svc: &service::Services,
    key: &crate::store::Key,
    changes: &edit::KeyChanges,
    make: impl FnOnce() -> Result<Secret>,
) -> Result<Result<Option<String>, crate::provider::StepError>> {
    use crate::provider::Step;
    if !changes.revoke.is_empty() {
        if let Err(e) = svc.take_away(key, Step::Revoke, None, None) {
            return Ok(Err(e));
        }
        svc.clean_up_later(key, None)?;
        return Ok(Ok(None));
    }
    for fp in &changes.expire {
        if let Err(e) = svc.take_away(key, Step::Expire, Some(fp), None) {
            return Ok(Err(e));
        }
        svc.clean_up_later(key, Some(fp))?;
    }
    if !changes.remove.is_empty() {
        if let Err(e) = svc.take_away(key, Step::Restrict, None, Some(&changes.remove)) {
            return Ok(Err(e));
        }
    }
    let Some(grace) = changes.rotate_grace else {
        return Ok(Ok(None));
    };
    Ok(svc.rotate(key, grace, make)?.map(Some))
}
