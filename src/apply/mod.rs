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
mod execute;
pub(crate) mod instant;
pub(crate) mod journal;
pub(crate) mod lock;
pub(crate) mod service;
mod transaction;

use std::path::PathBuf;

pub(crate) use commit::{commit_message, previous_apply, write_tree};

use crate::error::Result;
use crate::plan::Action;
use crate::time::Time;

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

pub(super) fn describe(a: &Action) -> String {
    format!("{} {} [{}]", a.action, a.key, a.policy)
}

/// A random id for this apply: names its lock and its pending files.
pub(super) fn txid() -> Result<String> {
    crate::secret::random_hex(8)
}

pub(crate) use transaction::{interrupted, StepOptions, Transaction};
