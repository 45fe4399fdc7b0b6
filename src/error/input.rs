//! Errors in what a command was pointed at: files to scan or import, commits to
//! verify and the keys to trust for them, folders to watch.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// One bad record of an imported file, by line.
    #[error("{file}:{line}: {why}")]
    Record { file: String, line: usize, why: String },

    /// A path to scan that is neither a file nor a folder (a device, a socket).
    #[error("{}: not a file or a folder", .0.display())]
    NotFileOrFolder(PathBuf),

    /// The index of a bare repository was asked for: it has none.
    #[error("a bare repository has no index to scan")]
    NoIndex,

    /// A commit named to start from that does not resolve.
    #[error("no commit {rev}: {why}")]
    UnknownCommit { rev: String, why: String },

    /// A commit named to start from that is not on the branch's first-parent line.
    #[error("{rev} is not on the branch's first-parent history")]
    NotOnFirstParent { rev: String },

    /// git's signing settings (the allowed signers) could not be read.
    #[error("{0}")]
    Signers(String),

    /// Signatures are required, but no keys to trust were named.
    #[error("signed commits are required, but there are no keys to trust")]
    NoTrustedSigners,

    /// A folder could not be watched.
    #[error("cannot watch {}: {why}", .path.display())]
    Watch {
        path: PathBuf,
        why: String,
        /// The operating system's limit on watches was reached.
        limit: bool,
    },
}

impl InputError {
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            InputError::NotFileOrFolder(_) => "name files or folders to scan".into(),
            InputError::Watch { limit: true, .. } => "raise it, e.g. `sudo sysctl fs.inotify.max_user_watches=524288` (persist it in /etc/sysctl.d/)".into(),
            _ => return None,
        })
    }
}
