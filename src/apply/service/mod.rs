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
//!
//! Different keys' steps run on apply's workers at once (`[apply] parallelism`), each
//! step within its service's limits ([`gate`]); one key's steps stay in order. The
//! journal is appended under a lock, an intent made durable before its step.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};

use super::journal::{remove_durable, write_durable};
use crate::error::{ApplyError, Error, Result};
use crate::failpoint;
use crate::provider::{self, KeyInfo, Provider, Request, Step, StepError};
use crate::secret::{Secret, SecretsDir};
use crate::store::settings::Sink;
use crate::store::{Key, Settings};
use crate::workspace::Workspace;

mod gate;
mod journal;
mod recover;

pub(crate) use journal::{Cleanup, Intent, Stage};
use journal::{Journal, Record, FILE};
pub(crate) use recover::{recover, unsettled};

/// One apply's provider calls. Shared by apply's workers: what they change is behind
/// locks, held only while it is changed (never during a service call).
pub(crate) struct Services<'a> {
    git_dir: PathBuf,
    secrets: &'a SecretsDir,
    txid: String,
    log: Mutex<Log>,
    /// Per service of the plan's keys: its provider, if it has one (made up front, so
    /// the workers only read them).
    providers: BTreeMap<String, Option<Box<dyn Provider>>>,
    gate: gate::Gate,
    /// The new secrets of rotations that reached their service, for `finish`.
    rotated: Mutex<BTreeMap<String, Secret>>,
    sink: Box<dyn crate::sink::Sink>,
    /// Where each key's new secret was delivered in Vault, and as which version.
    delivered: Mutex<BTreeMap<String, (String, u64)>>,
    /// Told of each step done (a progress bar).
    progress: Option<&'a dyn crate::progress::ServiceSteps>,
    /// How many workers run service steps.
    parallelism: usize,
}

/// The journal, and its file once this apply started it.
struct Log {
    journal: Journal,
    file: Option<std::fs::File>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The service steps one key's changes need before the commit, as planned (for a
/// progress bar's totals): a rotation's `create`, `set`, `test` and `finish`, a
/// revoke, a restrict, an expire each.
pub(in crate::apply) fn planned_steps(changes: &crate::apply::edit::KeyChanges) -> u64 {
    if !changes.revoke.is_empty() {
        return 1;
    }
    changes.expire.len() as u64
        + u64::from(!changes.remove.is_empty())
        + if changes.rotate_grace.is_some() { 4 } else { 0 }
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
    /// The services of this apply's keys, `services`, ready to call.
    pub(crate) fn new<'s>(
        ws: &'a Workspace,
        settings: &'a Settings,
        secrets: &'a SecretsDir,
        txid: &str,
        base: &str,
        services: impl IntoIterator<Item = &'s str>,
    ) -> Result<Services<'a>> {
        let exec = exec_env(ws, base, settings);
        let providers = services
            .into_iter()
            .map(|name| (name.to_string(), provider::for_service(settings, name, &exec)))
            .collect();
        Ok(Services {
            git_dir: ws.repo.path().to_path_buf(),
            secrets,
            txid: txid.to_string(),
            log: Mutex::new(Log {
                journal: Journal {
                    txid: txid.to_string(),
                    base: base.to_string(),
                    secrets_dir: secrets.path().to_path_buf(),
                    intents: Vec::new(),
                    cleanup: Vec::new(),
                },
                file: None,
            }),
            providers,
            gate: gate::Gate::new(settings),
            rotated: Mutex::new(BTreeMap::new()),
            sink: crate::sink::from_settings(settings, &ws.root)?,
            delivered: Mutex::new(BTreeMap::new()),
            progress: None,
            parallelism: settings.parallelism,
        })
    }

    /// Runs service steps on `n` workers (`--parallelism`) instead of the settings'.
    pub(crate) fn with_parallelism(mut self, n: Option<usize>) -> Services<'a> {
        if let Some(n) = n {
            self.parallelism = n.max(1);
        }
        self
    }

    /// Tells `progress` of every step done.
    pub(crate) fn with_progress(
        mut self,
        progress: Option<&'a dyn crate::progress::ServiceSteps>,
    ) -> Services<'a> {
        self.progress = progress;
        self
    }

    /// `f` of each item on this apply's workers; results in item order.
    pub(crate) fn each<T: Sync, R: Send>(&self, items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
        crate::parallel::map_workers(items, self.parallelism, f)
    }

    /// Whether a key of this service involves more than the secrets folder: a provider
    /// at its service, or delivery to Vault.
    pub(crate) fn involves(&self, service: &str) -> bool {
        self.sink.is_remote() || self.provider(service).is_some()
    }

    /// Whether new secrets stay in the secrets folder (no Vault sink).
    pub(crate) fn keeps_local_copies(&self) -> bool {
        !self.sink.is_remote()
    }

    /// Where a key's new secret was delivered in Vault, and as which version.
    pub(crate) fn delivered(&self, key: &str) -> Option<(String, u64)> {
        lock(&self.delivered).get(key).cloned()
    }

    /// Registers the Vault clean-up of a revoke (`fingerprint` `None`) or an expire, to
    /// run after the commit.
    pub(crate) fn clean_up_later(&self, key: &Key, fingerprint: Option<&str>) -> Result<()> {
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
        let cleanup = std::mem::take(&mut lock(&self.log).journal.cleanup);
        let results = self.each(&cleanup, |c| {
            self.sink.clean_up(&c.vault_path, c.fingerprint.as_deref())
        });
        let mut failed = Vec::new();
        let mut left = Vec::new();
        for (c, result) in cleanup.into_iter().zip(results) {
            if let Err(e) = result {
                failed.push((c.key.clone(), e));
                left.push(c);
            }
        }
        lock(&self.log).journal.cleanup = left;
        self.settle()?;
        Ok(failed)
    }

    fn provider(&self, service: &str) -> Option<&dyn Provider> {
        self.providers.get(service)?.as_deref()
    }

    /// One step at the service, within its limits; counted for the progress bar.
    fn call(&self, p: &dyn Provider, service: &str, req: &Request) -> Result<provider::Response, StepError> {
        self.gate.step(service, || {
            let result = p.call(req);
            if let Some(progress) = self.progress {
                progress.done(service);
            }
            result
        })
    }

    /// Folds a record into the journal and appends it to the file (started with its
    /// header on first use). `sync`: durable before returning, for a record that must
    /// be on disk before the step it announces; the others are made durable by the
    /// file-system sync before the commit point.
    fn record(&self, r: Record, sync: bool) -> Result<()> {
        use std::io::Write;
        let mut log = lock(&self.log);
        log.journal.fold(r.clone());
        let path = super::lock::keyrot_dir(&self.git_dir).join(FILE);
        if log.file.is_none() {
            let mut header = log.journal.clone();
            header.intents.clear();
            header.cleanup.clear();
            write_durable(&self.git_dir, FILE, &header.compacted()?)?;
            let f = crate::state_file::open_append(&path).map_err(|e| Error::io(&path, e))?;
            log.file = Some(f);
        }
        let mut line = serde_json::to_vec(&r).map_err(|e| ApplyError::Encode {
            what: "the journal of provider steps",
            why: e.to_string(),
        })?;
        line.push(b'\n');
        let f = log.file.as_mut().expect("opened above");
        f.write_all(&line).map_err(|e| Error::io(&path, e))?;
        if sync {
            f.sync_data().map_err(|e| Error::io(&path, e))?;
        }
        Ok(())
    }

    /// At the end: the file goes when nothing is left to settle, else it is rewritten
    /// with just what is left, for the next apply.
    fn settle(&mut self) -> Result<()> {
        let log = self.log.get_mut().unwrap_or_else(PoisonError::into_inner);
        if log.file.take().is_none() {
            return Ok(());
        }
        if log.journal.is_empty() {
            remove_durable(&self.git_dir, FILE)
        } else {
            write_durable(&self.git_dir, FILE, &log.journal.compacted()?)
        }
    }

    /// A step that only takes away (`revoke`, `restrict`, `expire`).
    pub(crate) fn take_away(
        &self,
        key: &Key,
        step: Step,
        fingerprint: Option<&str>,
        remove: Option<&[String]>,
    ) -> Result<(), StepError> {
        let info = KeyInfo::from(key);
        let Some(p) = self.provider(&key.service) else {
            return Ok(());
        };
        let req = Request::new(step, &info).fingerprint(fingerprint).remove(remove);
        self.call(p, &key.service, &req).map(drop)
    }

    /// `create`, `set` and `test` of a rotation, with the intent journaled and the new
    /// secret written as a pending file before the service can hold it. On failure the
    /// service's copy is revoked and nothing of the rotation is left. Returns the new
    /// secret's fingerprint.
    pub(crate) fn rotate(
        &self,
        key: &Key,
        grace: crate::time::Dur,
        make: impl FnOnce() -> Result<Secret>,
    ) -> Result<Result<String, StepError>> {
        let info = KeyInfo::from(key);
        let txid = self.txid.as_str();
        let mut intent = Intent {
            key: key.id.clone(),
            path: key.path.clone(),
            stage: Stage::Create,
            fingerprint: None,
            info: info.clone(),
            vault_version: None,
        };
        self.record(Record::Intent(Box::new(intent.clone())), true)?;
        let provider = self.provider(&key.service);
        let created = match provider {
            Some(p) => self
                .call(p, &key.service, &Request::new(Step::Create, &info).grace(grace))
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
        self.secrets.write_pending(&key.id, txid, &secret)?;
        self.secrets.sync()?;
        intent.stage = Stage::Set;
        intent.fingerprint = Some(fp.clone());
        self.record(Record::Intent(Box::new(intent.clone())), true)?;
        failpoint::pause("apply-before-set");
        let mut failure = None;
        if let Some(p) = provider {
            for step in [Step::Set, Step::Test] {
                let req = Request::new(step, &info)
                    .secret(Some(&secret))
                    .fingerprint(Some(&fp))
                    .grace(grace);
                if let Err(e) = self.call(p, &key.service, &req) {
                    failure = Some(e);
                    break;
                }
            }
        }
        if failure.is_none() {
            match self.sink.deliver(&key.service, &key.id, &secret) {
                Ok(Some(d)) => {
                    lock(&self.delivered).insert(key.id.clone(), (d.location, d.version));
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
            lock(&self.delivered).remove(&key.id);
            return match self.undo(&intent, Some(&secret)) {
                Ok(()) => {
                    self.secrets.discard(&key.id, txid);
                    self.forget(&key.id)?;
                    Ok(Err(e))
                }
                // The pending file stays: the retry needs the secret to take it back.
                Err(u) => Ok(Err(StepError::new(format!(
                    "{e}; rolling back also failed ({u}); the next keyrot apply retries the rollback first"
                )))),
            };
        }
        failpoint::pause("apply-after-set");
        lock(&self.rotated).insert(key.id.clone(), secret);
        Ok(Ok(fp))
    }

    /// Takes back a rotation that will not be committed: the provider's `revoke` of
    /// the new secret, and its Vault version destroyed.
    fn undo(&self, intent: &Intent, secret: Option<&Secret>) -> Result<(), StepError> {
        if let Some(p) = self.provider(&intent.info.service) {
            let req = Request::new(Step::Revoke, &intent.info)
                .secret(secret)
                .fingerprint(intent.fingerprint.as_deref());
            self.call(p, &intent.info.service, &req)?;
        }
        if let Some(version) = intent.vault_version {
            self.sink.take_back(&intent.info.service, &intent.key, version)?;
        }
        Ok(())
    }

    fn forget(&self, id: &str) -> Result<()> {
        // Losing this record in a crash only makes the next apply repeat a rollback,
        // which providers accept.
        self.record(Record::Done(id.to_string()), false)
    }

    /// After the commit landed: `finish` each rotation, on the workers. A failure
    /// leaves its intent, so the next apply finishes it; the returned messages (in key
    /// order) say which.
    pub(crate) fn finish_all(&mut self) -> Result<Vec<(String, StepError)>> {
        let intents = std::mem::take(&mut lock(&self.log).journal.intents);
        let rotated = std::mem::take(&mut *lock(&self.rotated));
        let results = self.each(&intents, |intent| {
            let secret = rotated.get(&intent.key)?;
            let service = &intent.info.service;
            Some(match self.provider(service) {
                Some(p) => {
                    let req = Request::new(Step::Finish, &intent.info)
                        .secret(Some(secret))
                        .fingerprint(intent.fingerprint.as_deref());
                    self.call(p, service, &req).map(drop)
                }
                None => Ok(()),
            })
        });
        let mut failed = Vec::new();
        let mut left = Vec::new();
        for (intent, result) in intents.into_iter().zip(results) {
            match result {
                // Not rotated by this apply (its rollback failed): left for the next.
                None => left.push(intent),
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    failed.push((intent.key.clone(), e));
                    left.push(intent);
                }
            }
        }
        failed.sort_by(|a, b| a.0.cmp(&b.0));
        lock(&self.log).journal.intents = left;
        Ok(failed)
    }

    /// The commit did not land: revoke every secret a service may hold.
    pub(crate) fn rollback_all(&mut self) -> Result<()> {
        let intents = std::mem::take(&mut lock(&self.log).journal.intents);
        let mut rotated = std::mem::take(&mut *lock(&self.rotated));
        lock(&self.delivered).clear();
        let secrets: Vec<Option<Secret>> = intents.iter().map(|i| rotated.remove(&i.key)).collect();
        let undone = self.each(
            &intents.iter().zip(&secrets).collect::<Vec<_>>(),
            |(intent, secret)| intent.stage == Stage::Create || self.undo(intent, secret.as_ref()).is_ok(),
        );
        let left: Vec<Intent> = intents
            .into_iter()
            .zip(undone)
            .filter_map(|(intent, ok)| (!ok).then_some(intent))
            .collect();
        let keys: Vec<String> = left.iter().map(|i| i.key.clone()).collect();
        lock(&self.log).journal.intents = left;
        self.settle()?;
        if !keys.is_empty() {
            return Err(ApplyError::NotTakenBack { keys }.into());
        }
        Ok(())
    }
}
