//! Errors: one type for the library, [`Error`], whose variants carry what a user needs
//! to find and fix the cause as data: the file, line and column where there are ones
//! ([`Error::location`]), and what to do ([`Error::hint`]). Each concern has its own
//! enum ([`StoreError`], [`ApplyError`], [`DeliveryError`], [`RemoteError`],
//! [`InputError`]); load problems are [`Problem`]s and policy failures
//! [`Error::Policy`]. The library's messages and hints never name a command-line flag:
//! the CLI adds those.

mod apply;
mod delivery;
mod input;
mod remote;
mod store;

use std::fmt;
use std::path::PathBuf;

pub use apply::{ApplyError, Interrupted, Journal};
pub use delivery::DeliveryError;
pub use input::InputError;
pub use remote::RemoteError;
pub use store::StoreError;

/// One problem in one input file, printed as `path:line:col: message`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Path relative to the store root (`keys/binance-bot.toml`).
    pub path: String,
    /// 1-based line and column, when the parser knows them.
    pub pos: Option<(usize, usize)>,
    pub message: String,
}

impl Problem {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            path: path.into(),
            pos: None,
            message: message.into(),
        }
    }

    pub fn at(path: impl Into<String>, pos: Option<(usize, usize)>, message: impl Into<String>) -> Problem {
        Problem {
            path: path.into(),
            pos,
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pos {
            Some((line, col)) => write!(f, "{}:{line}:{col}: {}", self.path, self.message),
            None => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

/// Converts a byte offset in `text` to a 1-based (line, column), counting columns in
/// characters as editors do.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

/// Where an error is, for a reader or an editor to jump to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub path: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store's files failed to load; every bad file is listed.
    #[error("{}", render_problems(.0))]
    Invalid(Vec<Problem>),

    /// A policy threw, broke a sandbox bound, or returned something that is not a decision.
    #[error("{}policy {policy}: key {key}: {message}", Problem::at(.path.clone(), *.pos, ""))]
    Policy {
        policy: String,
        key: String,
        /// The policy's file, relative to the store root.
        path: String,
        /// Line and column in it, where Rhai knows them.
        pos: Option<(usize, usize)>,
        message: String,
    },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("git: {context}: {message}")]
    Git { context: String, message: String },

    /// The store has uncommitted changes that `apply` would not be able to trace.
    #[error("the store has uncommitted changes: {}", .0.join(", "))]
    Dirty(Vec<String>),

    /// A saved plan no longer matches the store.
    #[error("stale plan: {0}")]
    StalePlan(String),

    /// A saved plan's actions are not what the policies decide.
    #[error("plan file rejected: {0}")]
    ForgedPlan(String),

    /// The folder is not the root of a git work tree.
    #[error("{} is not a keyrot store (no git repository at its root)", .0.display())]
    NotAStore(PathBuf),

    /// Another apply holds the store's lock.
    #[error("the store is locked by pid {pid} on {host} since {since} (id {id})")]
    Locked {
        pid: u32,
        host: String,
        since: String,
        id: String,
    },

    /// The secrets folder asked for is inside the store's work tree.
    #[error("the secrets folder {} is inside the store {}; secrets must never be where git can commit them", .dir.display(), .store.display())]
    SecretsInStore { dir: PathBuf, store: PathBuf },

    /// No secrets folder was given and there is no per-user state folder for one.
    #[error("cannot find a per-user state folder ($XDG_STATE_HOME and $HOME are unset)")]
    NoStateFolder,

    /// The apply commit landed, but a step after it (delivering secrets, updating the
    /// work tree) failed. The store's history is correct; the local copies lag.
    #[error("the apply landed as commit {commit}, but a step after it failed: {source}")]
    AfterCommit {
        commit: String,
        #[source]
        source: Box<Error>,
    },

    /// An apply's instant is ahead of this machine's clock by more than clocks differ.
    #[error("the apply's instant {instant} is {ahead} ahead of this machine's clock ({clock}); keyrot applies at most {max} ahead, so that no key is revoked or rotated before it is due and the audit trail is never dated in the future")]
    FutureInstant {
        instant: crate::time::Time,
        clock: crate::time::Time,
        ahead: crate::time::Dur,
        max: crate::time::Dur,
    },

    /// An apply commit could not be signed as git's settings or `[commit] sign` ask;
    /// nothing was applied.
    #[error("cannot sign the apply commit: {0}; nothing was applied")]
    Signing(String),

    /// The branch no longer contains a commit keyrot verified or fetched before: someone
    /// rewrote the history (amend, rebase, force push).
    #[error("history rewritten since {since}: that commit is no longer in the branch's history")]
    HistoryRewritten {
        since: String,
        /// The ref that remembers `since` (deleting it accepts the new history).
        reference: String,
    },

    /// Talking to the shared remote failed (fetch, push), or it is not as keyrot needs it.
    #[error("remote: {0}")]
    Remote(#[from] RemoteError),

    /// The shared remote refused an apply's push (a hook, a protected branch). The
    /// commit is kept, unpublished, with its journal: nothing is live, and the next
    /// apply pushes it.
    #[error("{remote} refused the push of apply commit {commit}: {why}; nothing is live yet: the commit is kept, and the next `keyrot apply` pushes it (or rolls it back if {remote} moved)")]
    NotPushed {
        commit: String,
        remote: String,
        why: String,
    },

    /// Another runner holds the shared remote's lease.
    #[error("locked by {holder} until {until} (lease {id})")]
    Leased {
        holder: String,
        until: crate::time::Time,
        id: String,
    },

    /// A key id that is not in the store and never was.
    #[error("no key `{0}` in the store or its history")]
    UnknownKey(String),

    #[error(transparent)]
    Store(#[from] StoreError),

    #[error(transparent)]
    Apply(#[from] ApplyError),

    #[error(transparent)]
    Delivery(#[from] DeliveryError),

    #[error(transparent)]
    Input(#[from] InputError),

    /// A date keyrot would compute or write is past what it keeps (the year 9999).
    #[error("{0} is past the year 9999")]
    BeyondYear9999(String),

    /// A failure a test injected on purpose (`KEYROT_TEST_FAIL`).
    #[error("failpoint {0}: injected failure")]
    Injected(String),

    /// Something that cannot happen unless keyrot itself is wrong (a file shipped in
    /// the binary that does not parse, a value serde cannot encode).
    #[error("internal error: {0}")]
    Internal(String),

    /// A command line that cannot be carried out as given. Only the CLI layer makes
    /// these; the library's errors are the typed variants above.
    #[error("{0}")]
    Usage(String),
}

fn render_problems(problems: &[Problem]) -> String {
    let mut out = String::new();
    for (i, p) in problems.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&p.to_string());
    }
    out
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub fn git(context: impl Into<String>, err: git2::Error) -> Error {
        Error::Git {
            context: context.into(),
            message: err.message().to_string(),
        }
    }

    /// What to do about the error, where the library knows it. The CLI may say more
    /// (which flag helps); the library never names one.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::Dirty(_) => Some(
                "commit them (git add … && git commit) and plan again; apply acts only on committed state".into(),
            ),
            Error::AfterCommit { .. } => Some(
                "the commit is the source of truth; bring the work tree to it with `git checkout -- .` after checking the secrets folder".into(),
            ),
            Error::Store(e) => e.hint(),
            Error::Apply(e) => e.hint(),
            Error::Delivery(e) => e.hint(),
            Error::Remote(e) => e.hint(),
            Error::Input(e) => e.hint(),
            _ => None,
        }
    }

    /// The file the error is about (relative to the store root when it is in the
    /// store), with the line and column where known; the first one for load problems.
    pub fn location(&self) -> Option<Location> {
        let at = |path: String, pos: Option<(usize, usize)>| Location {
            path,
            line: pos.map(|p| p.0),
            column: pos.map(|p| p.1),
        };
        Some(match self {
            Error::Invalid(problems) => problems.first().map(|p| at(p.path.clone(), p.pos))?,
            Error::Policy { path, pos, .. } => at(path.clone(), *pos),
            Error::Io { path, .. } => at(path.display().to_string(), None),
            Error::Input(InputError::Record { file, line, .. }) => Location {
                path: file.clone(),
                line: Some(*line),
                column: None,
            },
            Error::Store(StoreError::TooLarge { path, .. })
            | Error::Apply(ApplyError::JournalUnreadable { path, .. }) => {
                at(path.display().to_string(), None)
            }
            Error::Store(StoreError::Edit { path, .. } | StoreError::NotUtf8 { path }) => {
                at(path.clone(), None)
            }
            _ => return None,
        })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        let text = "a = 1\nbé = x\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        assert_eq!(line_col(text, text.find('x').unwrap()), (2, 6));
    }

    #[test]
    fn problems_render_with_and_without_position() {
        assert_eq!(
            Problem::at("keys/a.toml", Some((3, 7)), "bad").to_string(),
            "keys/a.toml:3:7: bad"
        );
        assert_eq!(Problem::new("keys/a.toml", "bad").to_string(), "keys/a.toml: bad");
    }
}
