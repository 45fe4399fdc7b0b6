//! Providers rotate a key at the service that honours it, in the steps of AWS Secrets
//! Manager's rotation: `create` (the service may generate the secret), `set` (the
//! service accepts it beside the old one), `test` (it works), `finish` (it is the
//! current one); plus `expire` (an old secret's grace ended), `revoke` and `restrict`.
//!
//! Each step is one call that succeeds or fails with a message. A step's message never
//! holds a secret: providers' own output is redacted before it is shown.

pub(crate) mod exec;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::secret::Secret;
use crate::store::settings::Provider as ProviderSettings;
use crate::store::{Key, Settings};
use crate::time::Dur;

/// One step of the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Step {
    Create,
    Set,
    Test,
    Finish,
    Expire,
    Revoke,
    Restrict,
}

impl Step {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Step::Create => "create",
            Step::Set => "set",
            Step::Test => "test",
            Step::Finish => "finish",
            Step::Expire => "expire",
            Step::Revoke => "revoke",
            Step::Restrict => "restrict",
        }
    }
}

/// What a provider is told about the key: its own metadata, never another key's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub(crate) struct KeyInfo {
    pub id: String,
    pub service: String,
    pub owner: String,
    pub environment: String,
    pub permissions: Vec<String>,
    pub ip_allowlist: Vec<String>,
    pub tags: Vec<String>,
    pub status: String,
    pub fingerprint: Option<String>,
}

impl From<&Key> for KeyInfo {
    fn from(k: &Key) -> KeyInfo {
        KeyInfo {
            id: k.id.clone(),
            service: k.service.clone(),
            owner: k.owner.clone(),
            environment: k.environment.clone(),
            permissions: k.permissions.clone(),
            ip_allowlist: k.ip_allowlist.clone(),
            tags: k.tags.clone(),
            status: k.status.as_str().to_string(),
            fingerprint: k.fingerprint.clone(),
        }
    }
}

/// One step's request.
pub(crate) struct Request<'a> {
    pub step: Step,
    pub key: &'a KeyInfo,
    /// The new secret (`set`, `test`, `finish`), or the one to revoke when rolling back.
    pub secret: Option<&'a Secret>,
    /// `expire`: the old secret's fingerprint; with `secret`: the secret's.
    pub fingerprint: Option<&'a str>,
    /// `restrict`: the permissions to remove.
    pub remove: Option<&'a [String]>,
    /// `create`, `set`, `test`: how long the old secret stays valid after the rotation.
    pub grace: Option<Dur>,
}

impl<'a> Request<'a> {
    /// A request of `step` for `key`, with nothing else; the builders below add the
    /// fields a step carries.
    pub(crate) fn new(step: Step, key: &'a KeyInfo) -> Request<'a> {
        Request {
            step,
            key,
            secret: None,
            fingerprint: None,
            remove: None,
            grace: None,
        }
    }

    pub(crate) fn secret(mut self, secret: Option<&'a Secret>) -> Request<'a> {
        self.secret = secret;
        self
    }

    pub(crate) fn fingerprint(mut self, fingerprint: Option<&'a str>) -> Request<'a> {
        self.fingerprint = fingerprint;
        self
    }

    pub(crate) fn remove(mut self, remove: Option<&'a [String]>) -> Request<'a> {
        self.remove = remove;
        self
    }

    pub(crate) fn grace(mut self, grace: Dur) -> Request<'a> {
        self.grace = Some(grace);
        self
    }
}

/// What a step answered.
#[derive(Debug, Default)]
pub(crate) struct Response {
    /// `create` only: a secret the service generated.
    pub secret: Option<Secret>,
}

/// Why a step failed, safe to show (no secret in it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StepError {
    pub message: String,
    /// The step may succeed if tried again (it timed out, or the provider said so):
    /// `[service] retries` applies.
    pub retry: bool,
}

impl StepError {
    pub(crate) fn new(message: String) -> StepError {
        StepError {
            message,
            retry: false,
        }
    }
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Called from several apply workers at once, so shared between threads.
pub(crate) trait Provider: Send + Sync {
    fn call(&self, req: &Request) -> Result<Response, StepError>;
}

/// Reads a program's committed bytes by its path in the store, or says why not.
pub(crate) type CommittedProgram<'a> = Box<dyn Fn(&str) -> Result<Vec<u8>, String> + 'a>;

/// Where and how exec providers run.
pub(crate) struct ExecEnv<'a> {
    /// Their working directory: the store's root.
    pub root: &'a Path,
    /// A private folder the committed programs are written to, to be run from there.
    pub run_dir: PathBuf,
    /// The committed bytes of a program path (see `store::repo::committed_executable`).
    pub committed: CommittedProgram<'a>,
    /// Environment variables no provider may see (the Vault token).
    pub hide_env: Vec<String>,
}

/// The provider configured for a service, ready to call; `None` when keyrot alone
/// rotates the service's keys. An exec provider runs the program as committed, never
/// the work tree's file: apply acts on committed state, and a work-tree file can be a
/// symbolic link out of the store or hidden from `git status` (`--skip-worktree`).
pub(crate) fn for_service(settings: &Settings, name: &str, env: &ExecEnv) -> Option<Box<dyn Provider>> {
    let service = settings.services.get(name)?;
    match service.provider.as_ref()? {
        ProviderSettings::Exec { program } => Some(Box::new(exec::Exec {
            program: (env.committed)(program)
                .and_then(|bytes| exec::Program::write(&env.run_dir, program, &bytes)),
            display: program.clone(),
            cwd: env.root.to_path_buf(),
            timeout: std::time::Duration::from_secs(service.timeout.secs().max(1) as u64),
            hide_env: env.hide_env.clone(),
            secret_rule: service.secret_rule,
        })),
        #[cfg(feature = "postgres")]
        ProviderSettings::Postgres { dsn_env, role } => Some(Box::new(postgres::Pg {
            dsn_env: dsn_env.clone(),
            role: role.clone(),
            secret_prefix: settings.secret_prefix.clone(),
            secret_bytes: settings.secret_bytes,
            timeout: std::time::Duration::from_secs(service.timeout.secs().max(1) as u64),
        })),
        #[cfg(not(feature = "postgres"))]
        ProviderSettings::Postgres { .. } => {
            unreachable!("keyrot.toml naming the postgres provider is refused when it is read")
        }
    }
}

/// Replaces every occurrence of the secrets in `text` with `<redacted>`.
pub(crate) fn redact(text: &str, secrets: &[&Secret]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        let plain = s.expose();
        if !plain.is_empty() {
            out = out.replace(plain, "<redacted>");
        }
    }
    out
}
