//! Team operation: a store shared through one git remote. Git hosting already gives
//! atomic ref updates, so keyrot builds on them instead of a server of its own:
//! [`lease`] is a compare-and-swap lock on the remote, and an apply's commit becomes
//! real by one atomic push of the branch (from the tip it was planned on) together
//! with the lease's release. See [`Session`].

pub(crate) mod git;
pub(crate) mod lease;

use git2::Oid;

use crate::error::{DeliveryError, Error, RemoteError, Result, StoreError};
use crate::store::Remote;
use crate::workspace::Workspace;
use git::{Git, Pushed};
use lease::Lease;

/// Where keyrot records the remote tip it last fetched, to tell a rewritten history.
fn fetched_ref(remote: &str, branch: &str) -> String {
    format!("refs/keyrot/fetched/{remote}/{branch}")
}

/// Secrets must outlive the runner: on CI (`$CI` set), a shared apply whose new
/// secrets would go to the runner's own secrets folder is refused unless that folder
/// was named explicitly (`explicit_dir`).
pub(crate) fn check_ci_secrets(ws: &Workspace, explicit_dir: bool) -> Result<()> {
    if explicit_dir || std::env::var_os("CI").is_none() {
        return Ok(());
    }
    let sink = match ws.head_id()? {
        Some(head) => crate::store::repo::settings_at(&ws.repo, head.as_str())?.sink,
        None => crate::store::settings::Sink::Dir,
    };
    if sink == crate::store::settings::Sink::Dir {
        return Err(DeliveryError::SecretsWouldBeLost.into());
    }
    Ok(())
}

/// How the local branch stands against the remote's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Standing {
    UpToDate,
    Behind(usize),
    Ahead(usize),
    Diverged { ahead: usize, behind: usize },
}

impl Standing {
    /// `main is 2 behind origin/main`, and so on.
    pub(crate) fn describe(self, branch: &str, remote: &str) -> String {
        match self {
            Standing::UpToDate => format!("{branch} is up to date with {remote}/{branch}"),
            Standing::Behind(n) => format!("{branch} is {n} commit(s) behind {remote}/{branch}"),
            Standing::Ahead(n) => format!("{branch} is {n} commit(s) ahead of {remote}/{branch} (not pushed)"),
            Standing::Diverged { ahead, behind } => format!(
                "{branch} and {remote}/{branch} have diverged ({ahead} commit(s) not pushed, {behind} not pulled)"
            ),
        }
    }
}

/// One command's dealings with the shared remote: fetched once, the lease held (for an
/// apply) until the session ends, on every path out.
pub(crate) struct Session<'w> {
    ws: &'w Workspace,
    pub git: Git,
    /// The short branch name (`main`).
    pub branch: String,
    lease_for: crate::time::Dur,
    lease: Option<Lease>,
    /// The remote's tip as last fetched.
    pub remote_tip: Oid,
}

impl<'w> Session<'w> {
    /// Fetches from `remote` and refuses a rewritten remote history. The branch is the
    /// store's current one, which must be the one `[remote] branch` names.
    pub(crate) fn open(ws: &'w Workspace, remote: &Remote) -> Result<Session<'w>> {
        let current = crate::store::repo::current_branch(&ws.repo)?;
        let current = current
            .strip_prefix("refs/heads/")
            .unwrap_or(&current)
            .to_string();
        if let Some(b) = &remote.branch {
            if *b != current {
                return Err(RemoteError::WrongBranch {
                    configured: b.clone(),
                    current,
                }
                .into());
            }
        }
        let git = Git::new(&ws.root, &remote.name);
        git.fetch(&current)?;
        let remote_tip = ws.repo.refname_to_id(&git.tracking(&current)).map_err(|_| {
            Error::from(RemoteError::NoBranch {
                remote: remote.name.clone(),
                branch: current.clone(),
            })
        })?;
        let session = Session {
            ws,
            git,
            branch: current,
            lease_for: remote.lease,
            lease: None,
            remote_tip,
        };
        session.check_not_rewritten()?;
        Ok(session)
    }

    /// Refuses when the remote's new tip does not descend from the one fetched last
    /// time (amend, rebase, force push), then remembers the new tip.
    fn check_not_rewritten(&self) -> Result<()> {
        let repo = &self.ws.repo;
        let name = fetched_ref(&self.git.remote, &self.branch);
        if let Ok(before) = repo.refname_to_id(&name) {
            let kept = before == self.remote_tip
                || repo
                    .graph_descendant_of(self.remote_tip, before)
                    .map_err(|e| Error::git("comparing the remote with what was fetched before", e))?;
            if !kept {
                return Err(Error::HistoryRewritten {
                    since: before.to_string(),
                    reference: name,
                });
            }
        }
        repo.reference(&name, self.remote_tip, true, "keyrot fetch")
            .map(drop)
            .map_err(|e| Error::git(format!("recording {name}"), e))
    }

    /// After a push of `commit` to the branch landed: it is the remote's tip, recorded
    /// as fetched when a fetch succeeds. Nothing here may fail the caller: the push
    /// has landed, and the next fetch records the tip anyway.
    fn landed(&mut self, commit: Oid) {
        self.remote_tip = commit;
        if self.git.fetch(&self.branch).is_ok() {
            let _ = self.check_not_rewritten();
        }
    }

    /// The local branch against the remote's, as fetched.
    pub(crate) fn standing(&self) -> Result<Standing> {
        let Some(local) = self.ws.head_id()? else {
            return Ok(Standing::Behind(0));
        };
        let (ahead, behind) = self
            .ws
            .repo
            .graph_ahead_behind(local.oid(), self.remote_tip)
            .map_err(|e| Error::git("comparing the branch with the remote's", e))?;
        Ok(match (ahead, behind) {
            (0, 0) => Standing::UpToDate,
            (0, b) => Standing::Behind(b),
            (a, 0) => Standing::Ahead(a),
            (a, b) => Standing::Diverged { ahead: a, behind: b },
        })
    }

    /// Takes the remote's lease for this session.
    pub(crate) fn take_lease(&mut self) -> Result<&Lease> {
        let lease = lease::take(&self.ws.repo, &self.git, self.lease_for)?;
        Ok(self.lease.insert(lease))
    }

    /// The local apply commit the remote lacks, when that is all the local branch has
    /// beyond the remote's (an apply made with `--no-remote`, say).
    pub(crate) fn unpushed_apply(&self) -> Result<Option<Oid>> {
        if self.standing()? != Standing::Ahead(1) {
            return Ok(None);
        }
        let Some(head) = crate::store::repo::head_commit(&self.ws.repo)? else {
            return Ok(None);
        };
        let is_apply = crate::trailers::is_apply_commit(&String::from_utf8_lossy(head.message_bytes()));
        Ok((is_apply && head.parent_id(0).ok() == Some(self.remote_tip)).then(|| head.id()))
    }

    /// Brings a local branch that is behind the remote up to it (fast-forward, work
    /// tree included), and pushes keyrot's own unpushed apply commit (the caller holds
    /// the lease); refuses any other local commits the remote lacks. Returns a note
    /// when it pushed.
    pub(crate) fn catch_up(&mut self) -> Result<Option<String>> {
        if let Some(commit) = self.unpushed_apply()? {
            let branch_ref = format!("refs/heads/{}", self.branch);
            let (c, b) = (commit.to_string(), self.remote_tip.to_string());
            return match self.git.push(&[(Some(&c), &branch_ref, Some(&b))])? {
                Pushed::Done => {
                    self.git.fetch(&self.branch)?;
                    self.remote_tip = commit;
                    self.check_not_rewritten()?;
                    Ok(Some(format!(
                        "pushed apply commit {commit}, which an earlier run left unpushed"
                    )))
                }
                Pushed::Stale(_) => Err(RemoteError::UnpushedAndMoved {
                    commit: commit.to_string(),
                    remote: self.git.remote.clone(),
                    branch: self.branch.clone(),
                }
                .into()),
                Pushed::Refused(why) => Err(RemoteError::CommitRefused {
                    remote: self.git.remote.clone(),
                    commit: commit.to_string(),
                    why,
                }
                .into()),
            };
        }
        match self.standing()? {
            Standing::UpToDate => Ok(None),
            Standing::Behind(_) => self.fast_forward(self.remote_tip).map(|()| None),
            Standing::Ahead(n) | Standing::Diverged { ahead: n, .. } => Err(RemoteError::LocalAhead {
                branch: self.branch.clone(),
                remote: self.git.remote.clone(),
                count: n,
            }
            .into()),
        }
    }

    /// `git merge --ff-only`: the branch, index and work tree to `to`, refusing to
    /// overwrite local changes.
    fn fast_forward(&self, to: Oid) -> Result<()> {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(&self.ws.root)
            .args(["merge", "--ff-only", "--quiet", &to.to_string()])
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| RemoteError::cannot_run_git(&e))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(RemoteError::FastForward {
                branch: self.branch.clone(),
                to: to.to_string(),
                why: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            }
            .into())
        }
    }

    /// Before a commit that is not an apply (`owner depart`, `scan --mark-compromised`,
    /// `usage import`): brings a local branch that is behind the remote's up to it, so
    /// the commit is made on the shared history; refuses local commits the remote
    /// lacks (an unpushed apply commit included: `keyrot apply` publishes that).
    pub(crate) fn prepare_direct(&self) -> Result<()> {
        match self.standing()? {
            Standing::UpToDate => Ok(()),
            Standing::Behind(_) => self.fast_forward(self.remote_tip),
            Standing::Ahead(n) | Standing::Diverged { ahead: n, .. } => Err(RemoteError::LocalAhead {
                branch: self.branch.clone(),
                remote: self.git.remote.clone(),
                count: n,
            }
            .into()),
        }
    }

    /// Pushes a direct commit made after [`Session::prepare_direct`] (a child of the
    /// remote's tip), by a compare-and-swap on the remote's branch: it lands only if
    /// nobody pushed meanwhile. No lease: a direct commit does nothing at any service,
    /// and an apply racing it re-plans on top of it (or it on top of the apply: then
    /// this push is refused and the commit stays local, said so).
    pub(crate) fn push_direct(&mut self, commit: Oid) -> Result<()> {
        let branch_ref = format!("refs/heads/{}", self.branch);
        let (c, b) = (commit.to_string(), self.remote_tip.to_string());
        let not_pushed = |why: String| RemoteError::NotShared {
            commit: c.clone(),
            remote: self.git.remote.clone(),
            branch: self.branch.clone(),
            why,
        };
        match self.git.push(&[(Some(&c), &branch_ref, Some(&b))])? {
            Pushed::Done => {
                self.landed(commit);
                Ok(())
            }
            Pushed::Stale(_) => Err(not_pushed("its branch moved meanwhile".into()).into()),
            Pushed::Refused(why) => Err(not_pushed(why).into()),
        }
    }

    /// The remote and branch this session shares, as `origin/main`.
    pub(crate) fn shared_branch(&self) -> String {
        format!("{}/{}", self.git.remote, self.branch)
    }

    /// Makes `commit` (a child of `base`) the remote's branch tip and releases the
    /// lease, in one atomic push; then moves the local branch from `local` to it.
    /// `Ok(Some(tip))` when the remote's branch had moved to `tip` meanwhile (nothing
    /// was pushed).
    pub(crate) fn publish(&mut self, local: Oid, base: Oid, commit: Oid) -> Result<Option<Oid>> {
        let Some(mut lease) = self.lease.clone() else {
            return Err(RemoteError::NotLeased.into());
        };
        // A long apply renews its lease before the push, while it still holds it, so
        // that nobody takes it over between here and the push.
        let left = lease.expires.unix() - crate::time::Time::now().unix();
        if left < self.lease_for.secs() / 2 {
            lease = lease::renew(&self.ws.repo, &self.git, &lease, self.lease_for)?;
            self.lease = Some(lease.clone());
        }
        let branch_ref = format!("refs/heads/{}", self.branch);
        let (c, b, l) = (commit.to_string(), base.to_string(), lease.commit.to_string());
        match self.git.push(&[
            (Some(&c), &branch_ref, Some(&b)),
            (None, lease::LEASE_REF, Some(&l)),
        ])? {
            Pushed::Done => {
                // The commit point has passed: from here nothing may roll the apply
                // back. A failure to bring the local branch along is reported as
                // landed, and the journal left for the next run, which finishes it.
                self.lease = None;
                crate::failpoint::pause("remote-after-push");
                self.landed(commit);
                let landed = |e: Error| Error::AfterCommit {
                    commit: commit.to_string(),
                    source: Box::new(e),
                };
                crate::failpoint::fail("remote-move-local").map_err(landed)?;
                if local != base {
                    // The commit was re-made on a tip that others moved; bring the
                    // local branch (and work tree) there first.
                    self.fast_forward(base).map_err(landed)?;
                }
                self.ws
                    .repo
                    .reference_matching(&branch_ref, commit, true, base, "keyrot apply (pushed)")
                    .map_err(|e| {
                        landed(Error::git(
                            format!("moving the local {} to the pushed commit", self.branch),
                            e,
                        ))
                    })?;
                Ok(None)
            }
            Pushed::Stale(refs) if refs.iter().any(|r| r == lease::LEASE_REF) => {
                self.lease = None;
                Err(RemoteError::LeaseLost {
                    id: lease.id.clone(),
                    nothing_pushed: true,
                }
                .into())
            }
            Pushed::Stale(_) => {
                self.git.fetch(&self.branch)?;
                let tip = self
                    .ws
                    .repo
                    .refname_to_id(&self.git.tracking(&self.branch))
                    .map_err(|e| Error::git("reading the fetched branch", e))?;
                self.remote_tip = tip;
                self.check_not_rewritten()?;
                Ok(Some(tip))
            }
            Pushed::Refused(why) => Err(Error::NotPushed {
                commit: commit.to_string(),
                remote: self.git.remote.clone(),
                why,
            }),
        }
    }

    /// Pushes an apply commit an earlier run prepared but could not push (its journal
    /// names it; the local branch is still at `base`), then brings the local branch to
    /// it. `Ok(false)`: the remote moved past `base` meanwhile, so the commit cannot
    /// land as it is and must be rolled back.
    pub(crate) fn push_pending(&mut self, base: Oid, commit: Oid) -> Result<bool> {
        let branch_ref = format!("refs/heads/{}", self.branch);
        let (c, b) = (commit.to_string(), base.to_string());
        match self.git.push(&[(Some(&c), &branch_ref, Some(&b))])? {
            Pushed::Done => {
                self.landed(commit);
                self.adopt(base, commit)?;
                Ok(true)
            }
            Pushed::Stale(_) => Ok(false),
            Pushed::Refused(why) => Err(Error::NotPushed {
                commit: c,
                remote: self.git.remote.clone(),
                why,
            }),
        }
    }

    /// Whether the remote's branch, as fetched, holds `commit`.
    pub(crate) fn has(&self, commit: Oid) -> bool {
        commit == self.remote_tip
            || self
                .ws
                .repo
                .graph_descendant_of(self.remote_tip, commit)
                .unwrap_or(false)
    }

    /// Brings the local branch to a commit an interrupted apply had pushed: fast-
    /// forward to its parent (if others' commits came between), then the commit.
    pub(crate) fn adopt(&self, base: Oid, commit: Oid) -> Result<()> {
        let local = self.ws.head_id()?.map(|c| c.oid()).ok_or(StoreError::NoCommits)?;
        if local == commit {
            return Ok(());
        }
        if local != base {
            self.fast_forward(base)?;
        }
        self.ws
            .repo
            .reference_matching(
                &format!("refs/heads/{}", self.branch),
                commit,
                true,
                base,
                "keyrot apply (pushed)",
            )
            .map(drop)
            .map_err(|e| Error::git("moving the local branch to the pushed commit", e))
    }
}

impl Drop for Session<'_> {
    /// The lease is released on every way out; a runner killed outright leaves it to
    /// expire.
    fn drop(&mut self) {
        if let Some(l) = self.lease.take() {
            let _ = lease::release(&self.ws.repo, &self.git, &l);
        }
    }
}
