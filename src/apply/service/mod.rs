//! Rotations that reach the service: the provider steps around apply's commit, and the
//! journal of intents that makes them crash-safe.
//!
//! Before a rotation touches a service, its intent (key, step, new fingerprint) is
//! written durably to `.git/keyrot/services`, and the new secret to a pending file. The
//! service then holds a secret the store does not know yet; the commit makes the store
//! know it. So after a crash the next apply reads the intents and, key by key:
//! - the commit landed (the key file at the branch tip has the new fingerprint): it
//!   runs `finish`;
//! - it did not, and `set` may have reached the service: it runs `revoke` of the
//!   pending secret, so no secret lives at the service that the store does not know.
//!
//! `revoke`, `restrict` and `expire` need no intent: they only take away, and a plan
//! made after a crash asks for them again (providers must accept a repeat).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::journal::{remove_durable, write_durable};
use crate::error::{Error, Result};
use crate::failpoint;
use crate::provider::{self, KeyInfo, Provider, Request, Step, StepError};
use crate::secret::{Secret, SecretsDir};
use crate::store::settings::Sink;
use crate::store::{Key, Settings};
use crate::workspace::Workspace;

mod journal;
mod recover;

pub(crate) use journal::{Cleanup, Intent, Stage};
use journal::{Journal, Record, FILE};
pub(crate) use recover::{recover, unsettled};

/// One apply's provider calls.
pub(crate) struct Services<'a> {
    git_dir: PathBuf,
    exec: provider::ExecEnv<'a>,
    settings: &'a Settings,
    secrets: &'a SecretsDir,
    journal: Journal,
    providers: BTreeMap<String, Option<Box<dyn Provider>>>,
    /// The new secrets of rotations that reached their service, for `finish`.
    rotated: BTreeMap<String, Secret>,
    sink: Box<dyn crate::sink::Sink>,
    /// Where each key's new secret was delivered in Vault, and as which version.
    pub delivered: BTreeMap<String, (String, u64)>,
    /// The journal file, once this apply started it.
    file: Option<std::fs::File>,
}

/// Environment variables no provider may see.
pub(crate) fn hidden_env(settings: &Settings) -> Vec<&str> {
    match &settings.sink {
        Sink::Vault(v) => vec![v.token_env.as_str()],
        Sink::Dir => Vec::new(),
    }
}

/// How this store's exec providers run: from their content in commit `base`, written
/// to a private folder in `.git/keyrot` (the caller holds the lock, so no other apply
/// uses it; it is emptied here), in the store's root.
fn exec_env<'a>(ws: &'a Workspace, base: &str, settings: &Settings) -> provider::ExecEnv<'a> {
    let base = base.to_string();
    let run_dir = super::lock::keyrot_dir(ws.repo.path()).join("providers");
    // What is there was left by an apply that died (the lock is ours): nothing runs it.
    let _ = std::fs::remove_dir_all(&run_dir);
    provider::ExecEnv {
        root: &ws.root,
        run_dir,
        committed: Box::new(move |path| crate::store::repo::committed_executable(&ws.repo, &base, path)),
        hide_env: hidden_env(settings).into_iter().map(str::to_string).collect(),
    }
}

impl<'a> Services<'a> {
    pub(crate) fn new(
        ws: &'a Workspace,
        settings: &'a Settings,
        secrets: &'a SecretsDir,
        txid: &str,
        base: &str,
    ) -> Result<Services<'a>> {
        Ok(Services {
            git_dir: ws.repo.path().to_path_buf(),
            exec: exec_env(ws, base, settings),
            settings,
            secrets,
            journal: Journal {
                txid: txid.to_string(),
                base: base.to_string(),
                secrets_dir: secrets.path().to_path_buf(),
                intents: Vec::new(),
                cleanup: Vec::new(),
            },
            providers: BTreeMap::new(),
            rotated: BTreeMap::new(),
            sink: crate::sink::from_settings(settings, &ws.root)?,
            delivered: BTreeMap::new(),
            file: None,
        })
    }

    /// Whether a key of this service involves more than the secrets folder: a provider
    /// at its service, or delivery to Vault.
    pub(crate) fn involves(&mut self, service: &str) -> bool {
        self.sink.is_remote() || self.provider(service).is_some()
    }

    /// Whether new secrets stay in the secrets folder (no Vault sink).
    pub(crate) fn keeps_local_copies(&self) -> bool {
        !self.sink.is_remote()
    }

    /// Registers the Vault clean-up of a revoke (`fingerprint` `None`) or an expire, to
    /// run after the commit.
    pub(crate) fn clean_up_later(&mut self, key: &Key, fingerprint: Option<&str>) -> Result<()> {
        let Some(path) = self.sink.clean_up_path(&key.service, &key.id) else {
            return Ok(());
        };
        let c = Cleanup {
            key: key.id.clone(),
            vault_path: path,
            fingerprint: fingerprint.map(str::to_string),
        };
        self.record(Record::Cleanup(c), false)
    }

    /// After the commit and [`Services::finish_all`]: destroys what
    /// [`Services::clean_up_later`] registered, then leaves the journal holding only
    /// what failed, for the next apply to retry.
    pub(crate) fn clean_up(&mut self) -> Result<Vec<(String, StepError)>> {
        let mut failed = Vec::new();
        let mut left = Vec::new();
        for c in std::mem::take(&mut self.journal.cleanup) {
            if let Err(e) = self.sink.clean_up(&c.vault_path, c.fingerprint.as_deref()) {
                failed.push((c.key.clone(), e));
                left.push(c);
            }
        }
        self.journal.cleanup = left;
        self.settle()?;
        Ok(failed)
    }

    fn provider(&mut self, service: &str) -> Option<&dyn Provider> {
        if !self.providers.contains_key(service) {
            let p = provider::for_service(self.settings, service, &self.exec);
            self.providers.insert(service.to_string(), p);
        }
        self.providers.get(service)?.as_deref()
    }

    /// Folds a record into the journal and appends it to the file (started with its
    /// header on first use). `sync`: durable before returning, for a record that must
    /// be on disk before the step it announces; the others are made durable by the
    /// file-system sync before the commit point.
    fn record(&mut self, r: Record, sync: bool) -> Result<()> {
        use std::io::Write;
        self.journal.fold(r.clone());
        if self.file.is_none() {
            let mut header = self.journal.clone();
            header.intents.clear();
            header.cleanup.clear();
            write_durable(&self.git_dir, FILE, &header.compacted()?)?;
            let path = super::lock::keyrot_dir(&self.git_dir).join(FILE);
            let f = crate::state_file::open_append(&path).map_err(|e| Error::io(&path, e))?;
            self.file = Some(f);
        }
        let path = super::lock::keyrot_dir(&self.git_dir).join(FILE);
        let mut line = serde_json::to_vec(&r)
            .map_err(|e| Error::Usage(format!("cannot write the journal of provider steps: {e}")))?;
        line.push(b'\n');
        let f = self.file.as_mut().expect("opened above");
        f.write_all(&line).map_err(|e| Error::io(&path, e))?;
        if sync {
            f.sync_data().map_err(|e| Error::io(&path, e))?;
        }
        Ok(())
    }

    /// At the end: the file goes when nothing is left to settle, else it is rewritten
    /// with just what is left, for the next apply.
    fn settle(&mut self) -> Result<()> {
        if self.file.is_none() {
            return Ok(());
        }
        self.file = None;
        if self.journal.is_empty() {
            remove_durable(&self.git_dir, FILE)
        } else {
            write_durable(&self.git_dir, FILE, &self.journal.compacted()?)
        }
    }

    /// A step that only takes away (`revoke`, `restrict`, `expire`).
    pub(crate) fn take_away(
        &mut self,
        key: &Key,
        step: Step,
        fingerprint: Option<&str>,
        remove: Option<&[String]>,
    ) -> Result<(), StepError> {
        let info = KeyInfo::from(key);
        let Some(p) = self.provider(&key.service) else {
            return Ok(());
        };
        p.call(&Request::new(step, &info).fingerprint(fingerprint).remove(remove))
            .map(drop)
    }

    /// `create`, `set` and `test` of a rotation, with the intent journaled and the new
    /// secret written as a pending file before the service can hold it. On failure the
    /// service's copy is revoked and nothing of the rotation is left. Returns the new
    /// secret's fingerprint.
    pub(crate) fn rotate(
        &mut self,
        key: &Key,
        grace: crate::time::Dur,
        make: impl FnOnce() -> Result<Secret>,
    ) -> Result<Result<String, StepError>> {
        let info = KeyInfo::from(key);
        let txid = self.journal.txid.clone();
        let mut intent = Intent {
            key: key.id.clone(),
            path: key.path.clone(),
            stage: Stage::Create,
            fingerprint: None,
            info: info.clone(),
            vault_version: None,
        };
        self.record(Record::Intent(Box::new(intent.clone())), true)?;
        let created = match self.provider(&key.service) {
            Some(p) => p
                .call(&Request::new(Step::Create, &info).grace(grace))
                .map(|r| r.secret),
            None => Ok(None),
        };
        let secret = match created {
            Ok(Some(s)) => s,
            Ok(None) => make()?,
            Err(e) => {
                self.forget(&key.id)?;
                return Ok(Err(e));
            }
        };
        let fp = secret.fingerprint();
        self.secrets.write_pending(&key.id, &txid, &secret)?;
        self.secrets.sync()?;
        intent.stage = Stage::Set;
        intent.fingerprint = Some(fp.clone());
        self.record(Record::Intent(Box::new(intent.clone())), true)?;
        failpoint::pause("apply-before-set");
        let mut failure = None;
        if let Some(p) = self.provider(&key.service) {
            for step in [Step::Set, Step::Test] {
                let result = p.call(
                    &Request::new(step, &info)
                        .secret(Some(&secret))
                        .fingerprint(Some(&fp))
                        .grace(grace),
                );
                if let Err(e) = result {
                    failure = Some(e);
                    break;
                }
            }
        }
        if failure.is_none() {
            match self.sink.deliver(&key.service, &key.id, &secret) {
                Ok(Some(d)) => {
                    self.delivered.insert(key.id.clone(), (d.location, d.version));
                    intent.vault_version = Some(d.version);
                    self.record(Record::Intent(Box::new(intent.clone())), true)?;
                }
                Ok(None) => {}
                Err(e) => failure = Some(e),
            }
        }
        if let Some(e) = failure {
            // Take back what the service and Vault may hold; if even that fails, keep
            // the intent so the next apply tries again before anything else.
            let intent = self.journal.intents.iter().find(|i| i.key == key.id).cloned();
            self.delivered.remove(&key.id);
            let undo = match intent {
                Some(i) => self.undo(&i, Some(&secret)),
                None => Ok(()),
            };
            return match undo {
                Ok(()) => {
                    self.secrets.discard(&key.id, &txid);
                    self.forget(&key.id)?;
                    Ok(Err(e))
                }
                // The pending file stays: the retry needs the secret to take it back.
                Err(u) => Ok(Err(StepError(format!(
                    "{e}; rolling back also failed ({u}); the next keyrot apply retries the rollback first"
                )))),
            };
        }
        failpoint::pause("apply-after-set");
        self.rotated.insert(key.id.clone(), secret);
        Ok(Ok(fp))
    }

    /// Takes back a rotation that will not be committed: the provider's `revoke` of
    /// the new secret, and its Vault version destroyed.
    fn undo(&mut self, intent: &Intent, secret: Option<&Secret>) -> Result<(), StepError> {
        if let Some(p) = self.provider(&intent.info.service) {
            p.call(
                &Request::new(Step::Revoke, &intent.info)
                    .secret(secret)
                    .fingerprint(intent.fingerprint.as_deref()),
            )?;
        }
        if let Some(version) = intent.vault_version {
            self.sink.take_back(&intent.info.service, &intent.key, version)?;
        }
        Ok(())
    }

    fn forget(&mut self, id: &str) -> Result<()> {
        // Losing this record in a crash only makes the next apply repeat a rollback,
        // which providers accept.
        self.record(Record::Done(id.to_string()), false)
    }

    /// After the commit landed: `finish` each rotation. A failure leaves its intent, so
    /// the next apply finishes it; the returned messages say which.
    pub(crate) fn finish_all(&mut self) -> Result<Vec<(String, StepError)>> {
        let mut failed = Vec::new();
        let intents = std::mem::take(&mut self.journal.intents);
        let mut left = Vec::new();
        for intent in intents {
            let Some(secret) = self.rotated.remove(&intent.key) else {
                left.push(intent);
                continue;
            };
            let service = intent.info.service.clone();
            let result = match self.provider(&service) {
                Some(p) => p
                    .call(
                        &Request::new(Step::Finish, &intent.info)
                            .secret(Some(&secret))
                            .fingerprint(intent.fingerprint.as_deref()),
                    )
                    .map(drop),
                None => Ok(()),
            };
            if let Err(e) = result {
                failed.push((intent.key.clone(), e));
                left.push(intent);
            }
        }
        self.journal.intents = left;
        Ok(failed)
    }

    /// The commit did not land: revoke every secret a service may hold.
    pub(crate) fn rollback_all(&mut self) -> Result<()> {
        let intents = std::mem::take(&mut self.journal.intents);
        let mut left = Vec::new();
        for intent in intents {
            let secret = self.rotated.remove(&intent.key);
            self.delivered.remove(&intent.key);
            if intent.stage == Stage::Create {
                continue;
            }
            if self.undo(&intent, secret.as_ref()).is_err() {
                left.push(intent);
            }
        }
        self.journal.intents = left;
        self.settle()?;
        if !self.journal.intents.is_empty() {
            let keys: Vec<&str> = self.journal.intents.iter().map(|i| i.key.as_str()).collect();
            return Err(Error::Usage(format!(
                "could not take back the new secrets of {} at their service; the next keyrot apply retries before anything else",
                keys.join(", ")
            )));
        }
        Ok(())
    }
}
