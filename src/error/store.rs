//! Errors of the store's repository and files as keyrot reads, edits and commits them.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The folder is a bare repository: there is no work tree to read keys from.
    #[error("{} is a bare git repository; a keyrot store needs a work tree", .dir.display())]
    Bare { dir: PathBuf },

    /// HEAD is not a branch, so there is nothing for an apply commit to move.
    #[error("HEAD is detached; check out a branch before applying (keyrot commits to the current branch)")]
    DetachedHead,

    /// The store has no commit to plan, apply or report on.
    #[error("the store has no commits yet")]
    NoCommits,

    /// A file far larger than any keyrot file, refused before it is read.
    #[error("{}: file is {bytes} bytes, too large to be a keyrot file", .path.display())]
    TooLarge { path: PathBuf, bytes: u64 },

    /// A committed store file that is not UTF-8 text.
    #[error("{path}: not UTF-8")]
    NotUtf8 { path: String },

    /// A store file keyrot edits in place could not be edited as asked.
    #[error("{path}: {why}")]
    Edit { path: String, why: String },

    /// `owner depart` names somebody who is not in `owners.toml`.
    #[error("{path}: no owner `{name}`")]
    UnknownOwner { path: String, name: String },

    /// No key of that id (or folder/id) is in the store's work tree.
    #[error("no key `{id}` in the store (no {keys_dir}/{id}.toml)")]
    NoSuchKey { id: String, keys_dir: String },

    /// Files a direct commit (an import, a departure) would write have uncommitted
    /// changes of somebody else's.
    #[error("{} ha{} uncommitted changes", .paths.join(", "), if .paths.len() == 1 { "s" } else { "ve" })]
    Uncommitted {
        paths: Vec<String>,
        /// What the commit records ("the import", "the departure").
        what: String,
    },

    /// `init` was pointed at a folder it must not turn into a store.
    #[error("{} {why}", .dir.display())]
    NotForInit { dir: PathBuf, why: String },

    /// The system `git` could not be run or failed.
    #[error("git {command}: {why}")]
    GitCommand { command: String, why: String },
}

impl StoreError {
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            StoreError::NoCommits => "commit the store's files first (git add … && git commit)".into(),
            StoreError::UnknownOwner { name, .. } => format!("add a [{name}] table first"),
            StoreError::Uncommitted { what, .. } => {
                format!("commit or discard them first, so this commit records {what} alone")
            }
            _ => return None,
        })
    }
}
