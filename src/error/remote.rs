//! Errors of working with the shared remote: fetching, pushing, the lease.

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The system `git` could not be run, or a fetch or push failed (git's own words).
    #[error("{what}: {why}")]
    Git { what: String, why: String },

    /// `[remote] branch` is not the branch the store has checked out.
    #[error("[remote] branch is {configured}, but the store has {current} checked out")]
    WrongBranch { configured: String, current: String },

    /// The remote lacks the store's branch.
    #[error("{remote} has no branch {branch}")]
    NoBranch { remote: String, branch: String },

    /// The local branch holds commits the remote lacks (other than an unpushed apply).
    #[error("the local {branch} has {count} commit(s) that {remote} lacks")]
    LocalAhead {
        branch: String,
        remote: String,
        count: usize,
    },

    /// An earlier apply's commit is unpushed, and the remote moved meanwhile.
    #[error("apply commit {commit} is not pushed, and {remote} moved meanwhile")]
    UnpushedAndMoved {
        commit: String,
        remote: String,
        branch: String,
    },

    /// A commit that is not an apply (an import, a departure, a compromise mark) was
    /// made locally but the remote did not take it.
    #[error("{remote} did not take commit {commit} ({why}): it is recorded in this store but not shared")]
    NotShared {
        commit: String,
        remote: String,
        branch: String,
        why: String,
    },

    /// The remote refused a push of an earlier apply's commit.
    #[error("{remote} refused apply commit {commit}: {why}")]
    CommitRefused {
        remote: String,
        commit: String,
        why: String,
    },

    /// The local branch could not be fast-forwarded to the remote's.
    #[error("cannot fast-forward {branch} to {to}: {why}")]
    FastForward { branch: String, to: String, why: String },

    /// The shared branch moved at every try to push this apply.
    #[error("{branch} kept moving on the remote while this apply tried to push; nothing was applied")]
    KeptMoving { branch: String },

    /// The shared branch moved, and the policies decide differently there.
    #[error("someone pushed to the shared branch while this apply ran ({tip}), and {why}; the apply was rolled back: nothing was pushed, and nothing changed at any service")]
    MovedAndRolledBack { tip: String, why: String },

    /// An interrupted apply was pushing to a remote that this run does not use.
    #[error("an interrupted apply was pushing to {remote}")]
    PushingElsewhere { remote: String },

    /// `refs/keyrot/lease` holds something keyrot did not write.
    #[error("{reference} on {remote} is not a keyrot lease (commit {commit})")]
    NotALease {
        reference: String,
        remote: String,
        commit: String,
    },

    /// The remote refused a push of the lease (a hook, a protected ref).
    #[error("cannot {what}: {why}")]
    LeaseRefused { what: String, why: String },

    /// The lease changed hands at every try to take it.
    #[error("the lease kept changing while keyrot tried to take it")]
    LeaseContended,

    /// This run's lease expired and was taken over, or was unlocked.
    #[error("lease {id} was lost (it expired and was taken over, or was unlocked){}", if *.nothing_pushed { "; nothing was pushed" } else { "" })]
    LeaseLost { id: String, nothing_pushed: bool },

    /// Publishing was asked of a session that holds no lease (a bug, never a user's doing).
    #[error("publishing without holding the lease")]
    NotLeased,

    /// An unlock of a lease that is not the one held.
    #[error("the lease on {remote} is {held} (held by {holder}), not {given}; nothing was removed")]
    LeaseIdDiffers {
        remote: String,
        held: String,
        holder: String,
        given: String,
    },

    /// An unlock with no lease on the remote.
    #[error("there is no lease on {remote}; nothing was removed")]
    NoLease { remote: String },
}

impl RemoteError {
    /// The system `git` could not be started at all.
    pub(crate) fn cannot_run_git(e: &std::io::Error) -> RemoteError {
        RemoteError::Git {
            what: "cannot run git".into(),
            why: e.to_string(),
        }
    }

    pub fn hint(&self) -> Option<String> {
        Some(match self {
            RemoteError::WrongBranch { configured, .. } => format!("check out {configured} first"),
            RemoteError::NoBranch { .. } => "push the store there first".into(),
            RemoteError::LocalAhead { .. } => {
                "push them (or drop them) first, so that every commit keyrot makes starts from the shared history".into()
            }
            RemoteError::NotShared { remote, branch, .. } => format!(
                "share it with `git pull --rebase {remote} {branch} && git push {remote} {branch}`; until then an apply through {remote} refuses to start"
            ),
            RemoteError::UnpushedAndMoved { remote, branch, .. } => format!(
                "re-plan on the new tip: `git reset --hard {remote}/{branch}` drops it (its secrets stay in the secrets folder), then apply again"
            ),
            RemoteError::PushingElsewhere { .. } => "run `keyrot apply` with that remote to settle it".into(),
            RemoteError::LeaseContended => "try again".into(),
            _ => return None,
        })
    }
}
