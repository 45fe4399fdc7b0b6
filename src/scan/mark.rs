//! `scan --mark-compromised`: sets `compromised = true` in the key files of the keys
//! whose live secret (current or previous) was found, in one commit of its own, so the
//! next plan (and any runner of a shared store) revokes them, and the history says
//! where each leak was found.

use std::collections::BTreeMap;

use super::Finding;
use crate::direct_commit::Edit;
use crate::error::Result;
use crate::store::{KeyStatus, Store};
use crate::workspace::Workspace;

/// What `mark_compromised` did.
#[derive(Debug, Default)]
pub(crate) struct Marked {
    /// Keys marked compromised by this commit.
    pub keys: Vec<String>,
    /// Keys found that were already marked compromised or revoked: nothing to do.
    pub already: Vec<String>,
    pub commit: Option<String>,
}

/// Marks the keys of `findings` whose secret still works. Refuses key files with
/// uncommitted changes (the commit must hold exactly this change); on any failure the
/// files are left as HEAD has them.
pub(crate) fn mark_compromised(ws: &Workspace, store: &Store, findings: &[Finding]) -> Result<Marked> {
    let mut first_seen: BTreeMap<&str, &Finding> = BTreeMap::new();
    for f in findings.iter().filter(|f| f.secret.is_live()) {
        if let Some(id) = &f.key {
            first_seen.entry(id).or_insert(f);
        }
    }
    let mut marked = Marked::default();
    let mut edits = Vec::new();
    let mut body = String::new();
    for (id, finding) in first_seen {
        let Some(key) = store.key(id) else { continue };
        if key.compromised || key.status == KeyStatus::Revoked {
            marked.already.push(id.to_string());
            continue;
        }
        edits.push(Edit::toml(&ws.root, &key.path, |doc| {
            crate::key_edit::set(doc.as_table_mut(), "compromised", true);
            Ok(())
        })?);
        body.push_str(&format!(
            "compromised {id}: its {} secret ({}) was found at {}\n",
            finding.secret.as_str(),
            finding.fingerprint,
            finding.location
        ));
        marked.keys.push(id.to_string());
    }
    if edits.is_empty() {
        return Ok(marked);
    }
    let n = marked.keys.len();
    let message = format!(
        "keyrot scan: {n} key{} marked compromised\n\n{body}",
        if n == 1 { "" } else { "s" }
    );
    marked.commit = Some(crate::direct_commit::commit_edits(
        &ws.repo,
        &ws.root,
        &store.settings,
        &store.settings.keys_dir,
        &edits,
        "the compromise",
        &message,
    )?);
    Ok(marked)
}
