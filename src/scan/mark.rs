//! `scan --mark-compromised`: sets `compromised = true` in the key files of the keys
//! whose live secret (current or previous) was found, in one commit of its own, so the
//! next plan (and any runner of a shared store) revokes them, and the history says
//! where each leak was found.

use std::collections::BTreeMap;

use super::Finding;
use crate::error::{Error, Result};
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
        let path = ws.root.join(&key.path);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let mut doc: toml_edit::DocumentMut = text
            .parse()
            .map_err(|e| Error::Usage(format!("{}: cannot edit: {e}", key.path)))?;
        crate::key_edit::set(doc.as_table_mut(), "compromised", true);
        edits.push((key.path.clone(), text, doc.to_string()));
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
    let paths: Vec<String> = edits.iter().map(|(p, _, _)| p.clone()).collect();
    crate::direct_commit::refuse_uncommitted(&ws.repo, &store.settings.keys_dir, &paths, "the compromise")?;
    for (rel, _, edited) in &edits {
        let path = ws.root.join(rel);
        std::fs::write(&path, edited).map_err(|e| Error::io(&path, e))?;
    }
    let n = marked.keys.len();
    let message = format!(
        "keyrot scan: {n} key{} marked compromised\n\n{body}",
        if n == 1 { "" } else { "s" }
    );
    let files: Vec<(String, String)> = edits.iter().map(|(p, _, e)| (p.clone(), e.clone())).collect();
    match crate::direct_commit::commit_files(&ws.repo, &store.settings, &files, &message) {
        Ok(commit) => {
            marked.commit = Some(commit);
            Ok(marked)
        }
        Err(e) => {
            for (rel, original, _) in &edits {
                let path = ws.root.join(rel);
                std::fs::write(&path, original).map_err(|e| Error::io(&path, e))?;
            }
            Err(e)
        }
    }
}
