//! Errors of an apply, its lock, its two journals and the recovery of an interrupted one.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The branch moved between the plan and the commit's compare-and-swap.
    #[error(
        "{branch} moved while applying (another apply or commit won the race): {why}; nothing was applied"
    )]
    BranchMoved { branch: String, why: String },

    /// The lock file exists but is not a lock keyrot can read.
    #[error("the store is locked ({} exists but cannot be read: {why})", .path.display())]
    LockUnreadable { path: PathBuf, why: String },

    /// The lock kept changing hands while keyrot tried to take it.
    #[error("could not take the lock {}", .path.display())]
    LockContended { path: PathBuf },

    /// An unlock named a lock id that is not the one held.
    #[error("the lock's id is {held}, not {given}; nothing was removed")]
    LockIdDiffers { held: String, given: String },

    /// An unlock with no lock to remove.
    #[error("the store is not locked")]
    NotLocked,

    /// An unlock that could not read the lock.
    #[error("{}: {why}; nothing was removed", .path.display())]
    LockNotRemoved { path: PathBuf, why: String },

    /// A journal (the apply's, or its provider steps') that is not one keyrot wrote.
    #[error("{}: unreadable {journal} ({why})", .path.display())]
    JournalUnreadable {
        path: PathBuf,
        journal: Journal,
        why: String,
    },

    /// The branch is at neither end of an interrupted apply: somebody moved it.
    #[error("an interrupted apply (journal {}) expected {} at {} or {}, but it is at {}", .0.journal.display(), .0.branch, .0.base, .0.commit, .0.tip)]
    JournalBranchMoved(Box<Interrupted>),

    /// The secrets folder an interrupted apply wrote to no longer exists.
    #[error("the secrets folder {} of the interrupted apply is gone", .0.display())]
    SecretsFolderGone(PathBuf),

    /// Key files edited by hand while an apply was between its commit and its work tree.
    #[error(
        "the work tree's {files} changed since the apply began; keyrot left {them} as {they} {are} (commit {commit} has the applied version)",
        files = .files.join(" "),
        them = if .files.len() == 1 { "it" } else { "them" },
        they = if .files.len() == 1 { "it" } else { "they" },
        are = if .files.len() == 1 { "is" } else { "are" },
    )]
    WorkTreeChanged { files: Vec<String>, commit: String },

    /// The committed settings an interrupted apply ran with no longer load.
    #[error("the interrupted apply's settings: {0}")]
    InterruptedSettings(String),

    /// Provider steps of an interrupted apply that cannot be finished or undone yet.
    #[error("an interrupted apply left provider steps that cannot be completed yet; nothing else is done until they are:\n  {}", .notes.join("\n  "))]
    StepsPending { notes: Vec<String> },

    /// New secrets already set at a service that could not be taken back.
    #[error("could not take back the new secrets of {} at their service; the next keyrot apply retries before anything else", .keys.join(", "))]
    NotTakenBack { keys: Vec<String> },

    /// A time the apply would write is beyond what TOML dates hold.
    #[error("{path}: cannot write a time: {why}")]
    Time { path: String, why: String },

    /// State keyrot writes for itself (a journal, the lock's holder) could not be encoded.
    #[error("cannot write {what}: {why}")]
    Encode { what: &'static str, why: String },
}

impl ApplyError {
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            ApplyError::BranchMoved { .. } => "run `keyrot plan` again".into(),
            ApplyError::LockUnreadable { .. } => "if no keyrot is running, remove it".into(),
            ApplyError::JournalUnreadable {
                journal: Journal::Apply,
                ..
            } => "inspect it; if no apply is running and the store is as it should be, delete it".into(),
            ApplyError::JournalUnreadable {
                journal: Journal::ProviderSteps,
                ..
            } => "check the keys it names at their services, then delete it".into(),
            ApplyError::JournalBranchMoved(at) => format!(
                "someone moved the branch since; check that the key files and the secrets in {} agree, then delete {}",
                at.secrets_dir.display(),
                at.journal.display()
            ),
            ApplyError::WorkTreeChanged { files, .. } => format!(
                "keep your edit with `git stash`, or drop it with `git checkout -- {}`; then run `keyrot apply` again to finish",
                files.join(" ")
            ),
            _ => return None,
        })
    }
}

/// Where an interrupted apply stood, and where its branch is now.
#[derive(Debug)]
pub struct Interrupted {
    pub journal: PathBuf,
    pub branch: String,
    /// The commit the apply started from, and the one it made.
    pub base: String,
    pub commit: String,
    /// Where the branch is now.
    pub tip: String,
    pub secrets_dir: PathBuf,
}

/// Which of an apply's two journals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Journal {
    /// The apply's own: its commit, base and pending secrets.
    Apply,
    /// The provider and Vault steps it took at services.
    ProviderSteps,
}

impl std::fmt::Display for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Journal::Apply => "apply journal",
            Journal::ProviderSteps => "journal of provider steps",
        })
    }
}
