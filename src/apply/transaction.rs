//! The apply transaction: the store's lock, the settling of an interrupted apply
//! (both journals), the plan it applies (the committed HEAD, or a saved plan checked
//! against it), and the publisher that makes its commit real (a local ref move, or an
//! atomic push to the shared remote).

use git2::Oid;

use super::journal::{Journal, Recovery};
use super::lock::Lock;

use crate::error::{ApplyError, Error, RemoteError, Result, StoreError};
use crate::plan::{Plan, Provenance};
use crate::remote::Session;
use crate::secret::SecretsDir;
use crate::store::repo::CommitId;
use crate::time::Time;
use crate::workspace::{Loaded, Workspace};

use super::execute::execute;
use super::Applied;
use super::{describe, journal, service, txid};

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
pub(super) enum Publisher<'s, 'w> {
    Local,
    Shared(&'s mut Session<'w>),
}

impl Publisher<'_, '_> {
    /// What publishing is called in a progress display.
    pub(super) fn moving(&self) -> &'static str {
        match self {
            Publisher::Local => "moving the branch",
            Publisher::Shared(_) => "pushing to the remote",
        }
    }

    pub(super) fn remote(&self) -> Option<String> {
        match self {
            Publisher::Local => None,
            Publisher::Shared(s) => Some(s.git.remote.clone()),
        }
    }

    /// Makes `commit`, a child of `base`, the branch tip; the local branch is at
    /// `local`. `Some(tip)`: the shared branch moved to `tip` meanwhile, nothing done.
    pub(super) fn publish(
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
                    Error::from(ApplyError::BranchMoved {
                        branch: branch.to_string(),
                        why: e.message().to_string(),
                    })
                }),
            Publisher::Shared(session) => session.publish(local, base, commit),
        }
    }
}

/// Proof that this process holds the store's apply lock and that no interrupted apply
/// is pending. Held from before reading the committed store until the apply ends.
pub(super) struct Guard {
    _lock: Lock,
    pub(super) txid: String,
    /// The id of a dead apply whose lock this one took over.
    pub(super) stale_txid: Option<String>,
    pub(super) notes: Vec<String>,
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
                return Err(RemoteError::PushingElsewhere {
                    remote: remote.to_string(),
                }
                .into())
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
    let head = ws.head_id()?.ok_or(StoreError::NoCommits)?;
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
    let head = ws.head_id()?.ok_or(StoreError::NoCommits)?;
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
