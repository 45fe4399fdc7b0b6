//! Settling what an interrupted apply left at the services: `finish` where its commit
//! landed, `revoke` of the pending secret where it did not, and the Vault clean-ups.

use super::*;
use crate::error::ApplyError;

/// Whether an interrupted apply left provider steps or Vault clean-ups to settle.
pub(crate) fn unsettled(git_dir: &Path) -> bool {
    crate::apply::lock::keyrot_dir(git_dir).join(FILE).exists()
}

/// What [`recover`] did, one line per key.
pub(crate) fn recover(ws: &Workspace) -> Result<Vec<String>> {
    let git_dir = ws.repo.path().to_path_buf();
    let file = crate::apply::lock::keyrot_dir(&git_dir).join(FILE);
    let bytes = match crate::state_file::read(&file) {
        Ok(Some(b)) => b,
        Ok(None) => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(file, e)),
    };
    let mut j = Journal::parse(&bytes).map_err(|e| {
        Error::from(ApplyError::JournalUnreadable {
            path: file.clone(),
            journal: crate::error::Journal::ProviderSteps,
            why: e.to_string(),
        })
    })?;
    let settings = crate::store::repo::settings_at(&ws.repo, &j.base).map_err(|e| match e {
        Error::Invalid(problems) => Error::from(ApplyError::InterruptedSettings(
            problems.first().map(ToString::to_string).unwrap_or_default(),
        )),
        e => e,
    })?;
    let secrets = SecretsDir::existing(&j.secrets_dir);
    let branch = crate::store::repo::current_branch(&ws.repo)?;
    let tip = ws
        .repo
        .refname_to_id(&branch)
        .and_then(|id| ws.repo.find_commit(id))
        .and_then(|c| c.tree())
        .map_err(|e| Error::git("reading the branch tip", e))?;
    let exec = exec_env(ws, &j.base, &settings);
    let sink = crate::sink::from_settings(&settings, &ws.root)?;
    let mut notes = Vec::new();
    let mut left = Vec::new();
    for intent in std::mem::take(&mut j.intents) {
        let landed = intent.fingerprint.is_some()
            && crate::store::repo::fingerprint_at(&ws.repo, &tip, &intent.path) == intent.fingerprint;
        let secret = secrets.as_ref().and_then(|s| {
            s.read_pending(&intent.key, &j.txid)
                .or_else(|| landed.then(|| s.read_final(&intent.key)).flatten())
        });
        let step = match (landed, &intent.stage) {
            (true, _) => Step::Finish,
            (false, Stage::Set) => Step::Revoke,
            (false, Stage::Create) => continue,
        };
        let p = provider::for_service(&settings, &intent.info.service, &exec);
        let mut result = match &p {
            Some(p) => p
                .call(
                    &Request::new(step, &intent.info)
                        .secret(secret.as_ref())
                        .fingerprint(intent.fingerprint.as_deref()),
                )
                .map(drop),
            None => Ok(()),
        };
        if let (Ok(()), Step::Revoke, Some(version)) = (&result, step, intent.vault_version) {
            result = sink.take_back(&intent.info.service, &intent.key, version);
        }
        match result {
            Ok(()) if step == Step::Finish => notes.push(format!(
                "finished the interrupted rotation of {} at its service",
                intent.key
            )),
            Ok(()) => {
                if let Some(s) = &secrets {
                    s.discard(&intent.key, &j.txid);
                }
                notes.push(format!(
                    "took back the new secret of {} at its service: the interrupted apply never committed it",
                    intent.key
                ))
            }
            Err(e) => {
                notes.push(format!("could not {} {}: {e}", step.as_str(), intent.key));
                left.push(intent);
            }
        }
    }
    let mut undone = Vec::new();
    for c in std::mem::take(&mut j.cleanup) {
        if let Err(e) = sink.clean_up(&c.vault_path, c.fingerprint.as_deref()) {
            notes.push(format!("could not clean up {} in Vault: {e}", c.key));
            undone.push(c);
        }
    }
    j.cleanup = undone;
    j.intents = left;
    if j.intents.is_empty() && j.cleanup.is_empty() {
        remove_durable(&git_dir, FILE)?;
        Ok(notes)
    } else {
        write_durable(&git_dir, FILE, &j.compacted()?)?;
        Err(ApplyError::StepsPending { notes }.into())
    }
}
