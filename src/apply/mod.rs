//! Applying a plan, as one transaction around git's one atomic step, the
//! compare-and-swap of the branch ref:
//!
//! 1. [`begin`]: take the store's lock and finish or roll back an interrupted apply.
//! 2. Check the plan is still what the policies decide at the committed state.
//! 3. Write new secrets as pending files (synced), edit the key files, and build the
//!    commit from only the changed blobs and trees. Nothing is visible yet.
//! 4. Write the journal (synced), then move the branch: the commit point.
//! 5. Promote the secrets, update the work tree and index, delete the journal.
//!
//! A crash before 4's ref move leaves only invisible objects and pending files, which
//! the next apply rolls back; a crash after it is finished by the next apply.

mod commit;
mod edit;
pub(crate) mod instant;
pub(crate) mod journal;
pub(crate) mod lock;
pub(crate) mod service;

use std::collections::BTreeMap;
use std::path::PathBuf;

use git2::Oid;

pub(crate) use commit::{
    commit_message, is_apply_commit, previous_apply, trailer, trailers, write_tree, EXCEPTED, FAILED,
    NO_PREVIOUS, TRAILER_FAILED, TRAILER_NOW, TRAILER_PLAN, TRAILER_POLICIES, TRAILER_PREVIOUS,
};
use journal::{Journal, Recovery};
use lock::Lock;

use crate::error::{Error, Result};
use crate::failpoint;
use crate::plan::{Action, Plan, Provenance};
use crate::remote::Session;
use crate::secret::{Secret, SecretsDir};
use crate::store::repo::{self, CommitId};
use crate::time::Time;
use crate::workspace::{Loaded, Workspace};

/// What apply stands in for the new fingerprint in a preview: the secret does not
/// exist until apply generates it.
pub(crate) const NEW_FINGERPRINT: &str = "sha256:<new secret's fingerprint>";

/// The key file as one key's applied actions would leave it (`keyrot explain`).
pub(crate) fn preview(key: &crate::store::Key, text: &str, actions: &[&Action], now: Time) -> Result<String> {
    applied_file(key, text, actions, Some(NEW_FINGERPRINT), now)
}

/// The key file `text` as one key's applied actions leave it, `new_fp` being the new
/// secret's fingerprint when they rotate: what apply writes, byte for byte.
pub(crate) fn applied_file(
    key: &crate::store::Key,
    text: &str,
    actions: &[&Action],
    new_fp: Option<&str>,
    now: Time,
) -> Result<String> {
    edit::edit_key_file(key, text, &edit::merge(actions), new_fp, now)
}

/// Whether one key's applied actions give it a new secret (a rotation that no revoke
/// overrides).
pub(crate) fn rotates(actions: &[&Action]) -> bool {
    edit::merge(actions).gets_new_secret()
}

/// A new secret that an apply delivered.
#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct Delivered {
    pub key: String,
    pub fingerprint: String,
    pub path: PathBuf,
}

/// What an apply did.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Applied {
    /// The new commit, or `None` when the plan changed nothing.
    pub commit: Option<String>,
    pub branch: String,
    pub subject: Option<String>,
    pub secrets: Vec<Delivered>,
    /// Things the user should know: a recovered apply, a taken-over lock, orphans.
    pub notes: Vec<String>,
    /// Keys whose actions failed at their service; their key files are unchanged.
    pub failed: Vec<Failure>,
}

impl Applied {
    /// An apply that made no commit: nothing to change, or every change failed.
    fn no_commit(branch: String, notes: Vec<String>, failed: Vec<Failure>) -> Applied {
        Applied {
            commit: None,
            branch,
            subject: None,
            secrets: Vec::new(),
            notes,
            failed,
        }
    }
}

/// A key whose actions a provider step failed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Failure {
    pub key: String,
    /// The actions that were not applied (`rotate`, `restrict`…), or `finish` when the
    /// commit landed but the service did not confirm it.
    pub actions: Vec<String>,
    pub policies: Vec<String>,
    pub error: String,
    /// It failed after the commit landed (`finish`, a Vault clean-up): the actions are
    /// in the store, and the next apply retries what failed.
    pub after_commit: bool,
}

impl Failure {
    /// A key whose service refused its `actions` before the commit: it is left out.
    pub(crate) fn before_commit(key: &str, actions: &[&Action], error: String) -> Failure {
        Failure {
            key: key.to_string(),
            actions: actions.iter().map(|a| a.action.to_string()).collect(),
            policies: actions.iter().map(|a| a.policy.to_string()).collect(),
            error,
            after_commit: false,
        }
    }
}

/// One apply as a transaction. [`Transaction::begin`] takes the store's lock and
/// settles any interrupted apply; then the committed store is planned
/// ([`Transaction::plan_head`]) or a saved plan is checked against it
/// ([`Transaction::saved`]); [`Transaction::commit`] applies it as one commit. The lock
/// is released when the transaction ends, committed or dropped; nothing before the
/// commit has a lasting effect. `apply`, `run --apply` and `demo` all go through it.
pub(crate) struct Transaction<'w> {
    ws: &'w Workspace,
    guard: Guard,
    /// The shared remote, when the store has one: the lease is held, and the commit
    /// becomes real by an atomic push.
    shared: Option<Session<'w>>,
    steps: StepOptions<'w>,
}

/// How an apply runs its service steps: how many at once (default: `[apply]
/// parallelism`), and who is told of their progress.
#[derive(Clone, Copy, Default)]
pub(crate) struct StepOptions<'a> {
    pub parallelism: Option<usize>,
    pub progress: Option<&'a dyn crate::progress::ServiceSteps>,
}

impl<'w> Transaction<'w> {
    pub(crate) fn begin(ws: &'w Workspace) -> Result<Transaction<'w>> {
        Ok(Transaction {
            ws,
            guard: begin(ws, None)?,
            shared: None,
            steps: StepOptions::default(),
        })
    }

    /// [`Transaction::begin_shared`] with a session opened on `remote`, or
    /// [`Transaction::begin`] when there is none.
    pub(crate) fn open(ws: &'w Workspace, remote: Option<&crate::store::Remote>) -> Result<Transaction<'w>> {
        match remote {
            Some(r) => Transaction::begin_shared(ws, Session::open(ws, r)?),
            None => Transaction::begin(ws),
        }
    }

    /// [`Transaction::begin`] for a store shared through a remote (`session`, just
    /// fetched): takes the remote's lease, settles an interrupted apply by what the
    /// remote holds, and brings the local branch up to the remote's.
    pub(crate) fn begin_shared(ws: &'w Workspace, mut session: Session<'w>) -> Result<Transaction<'w>> {
        session.take_lease()?;
        let mut guard = begin(ws, Some(&mut session))?;
        guard.notes.extend(session.catch_up()?);
        Ok(Transaction {
            ws,
            guard,
            shared: Some(session),
            steps: StepOptions::default(),
        })
    }

    /// Runs the service steps so (`--parallelism`, a progress bar).
    pub(crate) fn with_steps(mut self, steps: StepOptions<'w>) -> Transaction<'w> {
        self.steps = steps;
        self
    }

    /// The committed store at HEAD, refused while the work tree has uncommitted
    /// changes to the files keyrot reads, and its plan at `now`.
    pub(crate) fn plan_head(&self, now: Time, progress: crate::progress::Progress) -> Result<(Plan, Loaded)> {
        let (head, loaded) = load_head(self.ws, now)?;
        let plan = loaded.plan(now, Provenance::committed(head), progress)?;
        Ok((plan, loaded))
    }

    /// Checks a saved plan against the store (see [`verify_saved`]) and returns the
    /// committed store to apply it to.
    pub(crate) fn saved(&self, plan: &Plan) -> Result<Loaded> {
        verify_saved(self.ws, plan)
    }

    /// Applies `plan` to `loaded` (from [`Transaction::plan_head`] or
    /// [`Transaction::saved`]) and ends the transaction.
    pub(crate) fn commit(mut self, loaded: &Loaded, plan: &Plan, secrets: &SecretsDir) -> Result<Applied> {
        let mut publisher = match self.shared.as_mut() {
            Some(session) => Publisher::Shared(session),
            None => Publisher::Local,
        };
        execute(
            self.ws,
            &self.guard,
            loaded,
            plan,
            secrets,
            &mut publisher,
            self.steps,
        )
    }
}

/// Where an apply's commit becomes real: the local branch's compare-and-swap, or,
/// for a shared store, the atomic push to the remote (then the local branch).
enum Publisher<'s, 'w> {
    Local,
    Shared(&'s mut Session<'w>),
}

impl Publisher<'_, '_> {
    /// What publishing is called in a progress display.
    fn moving(&self) -> &'static str {
        match self {
            Publisher::Local => "moving the branch",
            Publisher::Shared(_) => "pushing to the remote",
        }
    }

    fn remote(&self) -> Option<String> {
        match self {
            Publisher::Local => None,
            Publisher::Shared(s) => Some(s.git.remote.clone()),
        }
    }

    /// Makes `commit`, a child of `base`, the branch tip; the local branch is at
    /// `local`. `Some(tip)`: the shared branch moved to `tip` meanwhile, nothing done.
    fn publish(
        &mut self,
        ws: &Workspace,
        branch: &str,
        local: Oid,
        base: Oid,
        commit: Oid,
    ) -> Result<Option<Oid>> {
        match self {
            Publisher::Local => ws
                .repo
                .reference_matching(branch, commit, true, base, "keyrot apply")
                .map(|_| None)
                .map_err(|e| {
                    Error::Usage(format!(
                        "{branch} moved while applying (another apply or commit won the race): {}; nothing was applied\n  hint: run `keyrot plan` again",
                        e.message()
                    ))
                }),
            Publisher::Shared(session) => session.publish(local, base, commit),
        }
    }
}

/// Proof that this process holds the store's apply lock and that no interrupted apply
/// is pending. Held from before reading the committed store until the apply ends.
struct Guard {
    _lock: Lock,
    txid: String,
    /// The id of a dead apply whose lock this one took over.
    stale_txid: Option<String>,
    notes: Vec<String>,
}

/// Takes the store's lock and recovers from an interrupted apply, if any. With a
/// shared remote (`shared`), an apply interrupted around its push counts as landed
/// exactly when the remote holds its commit.
fn begin(ws: &Workspace, shared: Option<&mut Session>) -> Result<Guard> {
    let txid = txid()?;
    let lock = Lock::acquire(ws.repo.path(), &txid)?;
    if let Some(j) = Journal::read(ws.repo.path())? {
        match (&j.remote, shared) {
            (Some(remote), None) => {
                return Err(Error::Remote(format!(
                    "an interrupted apply was pushing to {remote}; run `keyrot apply` with that remote to settle it"
                )))
            }
            (Some(_), Some(session)) => settle_pushed(ws, session, j)?,
            (None, _) => {}
        }
    }
    let mut notes = Vec::new();
    if let Some(old) = &lock.took_over {
        notes.push(format!(
            "took over a stale lock of pid {} (id {}, since {}): that process is gone",
            old.pid, old.id, old.started
        ));
    }
    notes.extend(recover(ws)?);
    Ok(Guard {
        stale_txid: lock.took_over.as_ref().map(|h| h.id.clone()),
        _lock: lock,
        txid,
        notes,
    })
}

/// Prepares an interrupted shared apply for [`recover`]: if the remote holds its
/// commit, the local branch is brought to it (so recovery finishes it); if not, the
/// journal is pointed at where the local branch is (so recovery rolls it back).
fn settle_pushed(ws: &Workspace, session: &mut Session, mut j: Journal) -> Result<()> {
    let commit = Oid::from_str(&j.commit).map_err(|e| Error::git("reading the apply journal", e))?;
    let base = Oid::from_str(&j.base).map_err(|e| Error::git("reading the apply journal", e))?;
    if session.has(commit) {
        return session.adopt(base, commit);
    }
    let local = ws.head_id()?.map(|c| c.oid());
    // Prepared but never pushed (a refused push, or a crash before it): push it now,
    // if the remote is still where it was planned on.
    if local == Some(base) && session.remote_tip == base && session.push_pending(base, commit)? {
        return Ok(());
    }
    if let Some(local) = local.filter(|l| *l != base && *l != commit) {
        j.base = local.to_string();
        j.write(ws.repo.path())?;
    }
    Ok(())
}

/// Settles what an interrupted apply left, both journals: first the steps it sent to
/// services (or Vault), then the commit itself. The caller holds the lock. Returns
/// what was done, as notes.
fn recover(ws: &Workspace) -> Result<Vec<String>> {
    let mut notes = service::recover(ws)?;
    match journal::recover(ws)? {
        Some(Recovery::Finished { commit }) => notes.push(format!(
            "finished an interrupted apply: commit {commit} had landed; its secrets and work tree are now in place"
        )),
        Some(Recovery::RolledBack { base }) => notes.push(format!(
            "rolled back an interrupted apply that never landed (the store stayed at {base}); its pending secrets were deleted"
        )),
        None => {}
    }
    Ok(notes)
}

/// What an interrupted apply left for the next one to settle, as notes for `plan`
/// (which takes no lock and changes nothing).
pub(crate) fn interrupted(ws: &Workspace) -> Vec<String> {
    let mut notes = Vec::new();
    if let Ok(Some(j)) = Journal::read(ws.repo.path()) {
        if let Some(remote) = &j.remote {
            notes.push(format!(
                "1 apply commit not pushed ({}); the next `keyrot apply` pushes it to {remote}, or rolls it back if {remote} moved",
                j.commit
            ));
            return notes;
        }
        notes.push(format!(
            "an apply was interrupted (commit {}); the next `keyrot apply` finishes or rolls it back, and brings the work tree along",
            j.commit
        ));
    }
    if service::unsettled(ws.repo.path()) {
        notes.push("an apply was interrupted while it was changing keys at their services (or in Vault); the next `keyrot apply` settles that first".into());
    }
    notes
}

/// Loads the committed store at HEAD for applying, refusing while the work tree has
/// uncommitted changes to the files keyrot reads.
fn load_head(ws: &Workspace, now: Time) -> Result<(CommitId, Loaded)> {
    let head = ws
        .head_id()?
        .ok_or_else(|| Error::Usage("the store has no commits yet; commit its files first".into()))?;
    let loaded = ws.load_commit(head.as_str(), now)?;
    let dirty = ws.dirty_paths(&loaded.store)?;
    if !dirty.is_empty() {
        return Err(Error::Dirty(dirty));
    }
    Ok((head, loaded))
}

/// Checks a saved plan against the store: made on a clean tree, for this very commit
/// and these very files, and identical to what the policies decide there at its `now`.
/// Returns the loaded committed store to apply it to.
fn verify_saved(ws: &Workspace, plan: &Plan) -> Result<Loaded> {
    if plan.dirty {
        return Err(Error::ForgedPlan(
            "it was made on a work tree with uncommitted changes; commit them and plan again".into(),
        ));
    }
    let now = plan.now;
    let head = ws
        .head_id()?
        .ok_or_else(|| Error::Usage("the store has no commits yet".into()))?;
    if plan.store_commit.as_ref() != Some(&head) {
        let planned = plan.store_commit.as_ref().map_or("(none)", CommitId::as_str);
        let known = plan
            .store_commit
            .as_ref()
            .is_some_and(|c| ws.repo.find_commit(c.oid()).is_ok());
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
    let mut derived = loaded.plan(now, Provenance::committed(head), None)?;
    // Which keyrot saved the plan is not part of what it decides.
    derived.keyrot_version.clone_from(&plan.keyrot_version);
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
            plan.store_commit.as_ref().map_or("?", CommitId::as_str),
            plan.now
        )));
    }
    Ok(loaded)
}

fn describe(a: &Action) -> String {
    format!("{} {} [{}]", a.action, a.key, a.policy)
}

/// A random id for this apply: names its lock and its pending files.
fn txid() -> Result<String> {
    crate::secret::random_hex(8)
}

/// Applies `plan` to the committed store `loaded` (which must be the plan's commit).
fn execute(
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
            .map_err(|_| Error::Usage(format!("{}: not UTF-8", key.path)))?
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
                return Err(Error::Remote(format!(
                    "{branch} kept moving on the remote while this apply tried to push; nothing was applied"
                )));
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
        Error::Remote(format!(
            "someone pushed to the shared branch while this apply ran ({tip}), and {why}; the apply was rolled back: nothing was pushed, and nothing changed at any service"
        ))
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
