//! The apply commit: its message, and its tree built from the base tree by replacing
//! only the changed blobs and the trees on their paths.

use std::collections::BTreeMap;

use git2::{Oid, Repository, Tree};

use crate::error::{Error, Result};
use crate::plan::{ActionKind, Plan};

/// The apply commit's message: subject, one line per applied action (and warning),
/// then the trailers that tie it to its plan.
pub fn commit_message(plan: &Plan) -> String {
    let s = &plan.summary;
    let counts: Vec<String> = [
        (s.rotate, "rotate"),
        (s.revoke, "revoke"),
        (s.restrict, "restrict"),
        (s.expire, "expire"),
    ]
    .iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{n} {what}"))
    .collect();
    let mut msg = format!("{SUBJECT_PREFIX} {}\n\n", counts.join(", "));
    for a in &plan.actions {
        if a.superseded_by.is_some() || !(a.action.changes_store() || a.action == ActionKind::Warn) {
            continue;
        }
        let mut reason = a.reason.clone();
        if let Some(fp) = &a.fingerprint {
            reason = format!("{reason} ({fp})");
        }
        if let Some(remove) = &a.remove {
            reason = format!("{reason} (remove {})", remove.join(", "));
        }
        msg.push_str(&format!("{} {} [{}] {}\n", a.action, a.key, a.policy, reason));
    }
    msg.push_str(&format!(
        "\n{TRAILER_PLAN}: {}\n{TRAILER_POLICIES}: {}\n{TRAILER_NOW}: {}\n",
        plan.digest(),
        plan.policies_digest,
        plan.now
    ));
    msg
}

pub const SUBJECT_PREFIX: &str = "keyrot apply:";
pub const TRAILER_PLAN: &str = "Keyrot-Plan";
pub const TRAILER_POLICIES: &str = "Keyrot-Policies";
pub const TRAILER_NOW: &str = "Keyrot-Now";

/// A new tree: `base` with each `(path, blob)` written in, touching only the trees on
/// those paths.
pub(super) fn write_tree(
    repo: &Repository,
    base: Option<&Tree>,
    changes: &[(Vec<&str>, Oid)],
) -> Result<Oid> {
    let git = |e| Error::git("building the commit tree", e);
    let mut builder = repo.treebuilder(base).map_err(git)?;
    let mut sub: BTreeMap<&str, Vec<(Vec<&str>, Oid)>> = BTreeMap::new();
    for (parts, oid) in changes {
        match parts.as_slice() {
            [name] => {
                let mode = base
                    .and_then(|t| t.get_name(name))
                    .map_or(0o100644, |e| e.filemode());
                builder.insert(name, *oid, mode).map_err(git)?;
            }
            [dir, rest @ ..] => sub.entry(dir).or_default().push((rest.to_vec(), *oid)),
            [] => {}
        }
    }
    for (dir, changes) in sub {
        let subtree = base
            .and_then(|t| t.get_name(dir))
            .and_then(|e| repo.find_tree(e.id()).ok());
        let oid = write_tree(repo, subtree.as_ref(), &changes)?;
        builder.insert(dir, oid, 0o040000).map_err(git)?;
    }
    builder.write().map_err(git)
}
