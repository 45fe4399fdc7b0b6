//! `keyrot scan`: finds keyrot secrets in files, in a repository's index or in every
//! blob of its history ([`sources`]), checksum-validated ([`finder`]), and, run in a
//! store, says whose key each one is and whether it is that key's current, previous or
//! an older secret ([`attribute`]). `--mark-compromised` marks those keys ([`mark`]).

mod attribute;
mod finder;
mod mark;
mod sources;

use serde::Serialize;

pub(crate) use attribute::{attribute, keys_in_history};
pub(crate) use finder::Finder;
pub(crate) use mark::{mark_compromised, Marked};
pub(crate) use sources::{scan_files, scan_history, scan_staged};

/// Where a secret was found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Location {
    /// The commit whose tree first held the blob (`--git` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// The file: relative to the scanned folder, or to the repository for `--git`
    /// and `--staged`.
    pub path: String,
    pub line: usize,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(c) = &self.commit {
            write!(f, "{}:", &c[..c.len().min(12)])?;
        }
        write!(f, "{}:{}", self.path, self.line)
    }
}

/// Which of a key's secrets a found secret is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Age {
    /// The key's `fingerprint`: the secret in use.
    Current,
    /// One of its `[[previous]]` secrets, still honoured during a grace period.
    Previous,
    /// A secret the key had before, found in the store's history: no longer honoured.
    Older,
    /// Not a secret of this store (or no store to ask).
    Unknown,
}

impl Age {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Age::Current => "current",
            Age::Previous => "previous",
            Age::Older => "older",
            Age::Unknown => "unknown",
        }
    }

    /// Whether the secret still works at the service, so a leak of it is a compromise.
    pub(crate) fn is_live(self) -> bool {
        matches!(self, Age::Current | Age::Previous)
    }
}

/// One secret found.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Finding {
    #[serde(flatten)]
    pub location: Location,
    /// `sha256:<hex>` of the secret: never the secret.
    pub fingerprint: String,
    /// The service named inside the secret.
    pub service: String,
    /// The key it belongs to, when scanned in a store that knows it.
    pub key: Option<String>,
    pub secret: Age,
    /// The key's status (`active` or `revoked`), when known.
    pub key_status: Option<&'static str>,
}

/// What a scan looked at and found.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Scanned {
    pub findings: Vec<Finding>,
    /// Files (or blobs) read.
    pub files: usize,
    /// Bytes read.
    pub bytes: u64,
}

impl Scanned {
    fn push(&mut self, location: Location, hit: finder::Hit) {
        self.findings.push(Finding {
            location,
            fingerprint: hit.fingerprint,
            service: hit.service,
            key: None,
            secret: Age::Unknown,
            key_status: None,
        });
    }
}
