//! `keyrot.toml`: the store's settings as keyrot uses them (this file), and how they
//! are read and checked (`read.rs`). Every field is optional, every unknown field is
//! an error (a typo must never silently weaken a policy).

use std::collections::BTreeMap;

use crate::time::Dur;

mod read;
#[cfg(test)]
mod tests;

pub(crate) use read::vault_address;
pub(crate) use read::{check_folder, is_env_name, SECRET_BYTES};

#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub keys_dir: String,
    pub policies_dir: String,
    /// `[store] maintenance`: pack the repository's loose objects after a commit
    /// once they pass a threshold (see [`crate::maintenance`]).
    pub maintenance: bool,
    pub grace_period: Dur,
    pub min_interval: Dur,
    pub secret_bytes: usize,
    pub secret_prefix: String,
    pub commit_name: String,
    pub commit_email: String,
    /// `[commit] sign`: every apply commit must be signed with git's signing settings.
    pub commit_sign: bool,
    /// `[policy.<name>]` tables, handed to each policy as `config()`.
    pub policy_config: BTreeMap<String, toml::Table>,
    /// Where each `[policy.<name>]` table starts, for errors about it.
    pub policy_config_pos: BTreeMap<String, (usize, usize)>,
    /// `[exceptions].max_days`: how far ahead an exception may expire.
    pub exceptions_max_days: i64,
    /// `[service.<name>]` tables.
    pub services: BTreeMap<String, Service>,
    /// `[delivery]`: where new secrets go.
    pub sink: Sink,
    /// `[remote]`: the git remote the store is shared through; `None`: local only.
    pub remote: Option<Remote>,
    /// `[rollout]`: rotations environment by environment, and at most so many per plan.
    pub rollout: Rollout,
    /// `[apply] parallelism`: service steps in flight at once, across all services.
    pub parallelism: usize,
    /// `[[notify]]` tables, in file order.
    pub notify: Vec<super::notify::Notify>,
}

/// Default `[apply] parallelism` (Terraform's `-parallelism` default).
pub(crate) const DEFAULT_PARALLELISM: usize = 10;

/// Most service steps keyrot runs at once.
pub(crate) const MAX_PARALLELISM: usize = 256;

/// `[service.<name>] rate_limit`: at most `steps` steps in any window of `per`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub steps: u32,
    pub per: Dur,
}

impl Rate {
    /// `"10/s"`, `"600/m"`, `"1000/h"`.
    pub fn parse(text: &str) -> Result<Rate, String> {
        let bad = || format!("`{text}` is not a rate such as \"10/s\", \"600/m\" or \"1000/h\"");
        let (n, unit) = text.trim().split_once('/').ok_or_else(bad)?;
        let steps: u32 = n.trim().parse().map_err(|_| bad())?;
        let per = match unit.trim() {
            "s" => Dur::from_secs(1),
            "m" => Dur::from_secs(60),
            "h" => Dur::from_secs(3600),
            _ => return Err(bad()),
        };
        if !(1..=1_000_000).contains(&steps) {
            return Err(format!(
                "`{text}`: the number of steps must be between 1 and 1000000"
            ));
        }
        Ok(Rate { steps, per })
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = match self.per.secs() {
            1 => "s",
            60 => "m",
            _ => "h",
        };
        write!(f, "{}/{unit}", self.steps)
    }
}

/// `[rollout]`: how rotations are spread over environments and runs (SPEC §10).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rollout {
    /// Environments, earliest first; keys of other environments are not held back.
    pub order: Vec<String>,
    /// How long an earlier environment's rotations must have held before the next's.
    pub soak: Dur,
    /// At most this many rotations per plan; `None`: no limit.
    pub max_per_run: Option<usize>,
}

impl Default for Rollout {
    fn default() -> Rollout {
        Rollout {
            order: Vec::new(),
            soak: Dur::hours_n(24).unwrap_or_default(),
            max_per_run: None,
        }
    }
}

impl Rollout {
    /// Whether any rotation can be held back: without an order of two environments or
    /// a budget, the rule changes nothing.
    pub fn is_active(&self) -> bool {
        self.order.len() > 1 || self.max_per_run.is_some()
    }
}

/// `[remote]`: the shared remote, its branch, and how long an apply's lease lasts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Remote {
    pub name: String,
    /// `None`: the store's current branch.
    pub branch: Option<String>,
    pub lease: Dur,
}

/// Default `[remote] lease`.
pub(crate) const DEFAULT_LEASE_SECS: i64 = 15 * 60;

impl Remote {
    /// A remote named on the command line, with the other fields at their defaults.
    pub fn named(name: &str) -> Result<Remote, String> {
        check_remote_name(name)?;
        Ok(Remote {
            name: name.to_string(),
            branch: None,
            lease: Dur::from_secs(DEFAULT_LEASE_SECS),
        })
    }
}

/// A remote's name as git allows it, and never one that `git` would read as an option.
pub(crate) fn check_remote_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && !name.starts_with('-')
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b))
        && git2::Remote::is_valid_name(name);
    if ok {
        Ok(())
    } else {
        Err(format!("`{name}` is not a git remote name"))
    }
}

/// A branch name git accepts under `refs/heads/`, not read as an option.
pub(crate) fn check_branch_name(name: &str) -> Result<(), String> {
    if !name.starts_with('-') && git2::Reference::is_valid_name(&format!("refs/heads/{name}")) {
        Ok(())
    } else {
        Err(format!("`{name}` is not a branch name"))
    }
}

/// What `keyrot.toml` declares about one service.
#[derive(Clone, Debug, PartialEq)]
pub struct Service {
    /// When declared, the only permissions a key of this service may hold.
    pub permissions: Option<Vec<String>>,
    /// Who rotates this service's keys at the service; `None`: keyrot alone.
    pub provider: Option<Provider>,
    /// How long one provider step may take.
    pub timeout: Dur,
    /// What a secret the provider generates (its `create` answer) must at least be.
    pub secret_rule: crate::secret::Strength,
    /// At most this many of this service's steps at once; `None`: only `parallelism`.
    pub max_concurrency: Option<usize>,
    /// At most so many steps per window, never exceeded.
    pub rate_limit: Option<Rate>,
    /// Tries again, with exponential backoff, a step that timed out or that the
    /// provider marked `"retry": true`.
    pub retries: u32,
}

/// Default for `[service.<name>] timeout`.
pub(crate) const DEFAULT_PROVIDER_TIMEOUT_SECS: i64 = 30;

impl Default for Service {
    fn default() -> Service {
        Service {
            permissions: None,
            provider: None,
            timeout: Dur::from_secs(DEFAULT_PROVIDER_TIMEOUT_SECS),
            secret_rule: crate::secret::Strength::default(),
            max_concurrency: None,
            rate_limit: None,
            retries: 0,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Provider {
    /// `exec:<path>`: an executable in the store, relative to its root.
    Exec { program: String },
    /// The built-in PostgreSQL provider.
    Postgres {
        /// The environment variable holding the admin connection string.
        dsn_env: String,
        /// The role whose password is the key's secret; `{id}` and `{service}` expand.
        role: String,
    },
}

/// Where new secrets go.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Sink {
    /// The secrets folder (`--secrets-dir`).
    #[default]
    Dir,
    /// A KV version 2 mount of HashiCorp Vault or OpenBao.
    Vault(VaultSettings),
}

#[derive(Clone, Debug, PartialEq)]
pub struct VaultSettings {
    /// `None`: `$VAULT_ADDR` (read when the sink is opened).
    pub address: Option<String>,
    /// Vault Enterprise / OpenBao namespace; `None`: `$VAULT_NAMESPACE`, if set.
    pub namespace: Option<String>,
    /// A PEM file of the CAs to trust (relative to the store root, or absolute);
    /// `None`: `$VAULT_CACERT`, `$VAULT_CAPATH`, else the system's trust store.
    pub ca_cert: Option<String>,
    pub token_env: String,
    pub mount: String,
    /// Where a key's secret lives under the mount; `{id}` and `{service}` expand.
    pub path: String,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            keys_dir: "keys".into(),
            policies_dir: "policies".into(),
            maintenance: true,
            grace_period: Dur::hours_n(24).unwrap_or_default(),
            min_interval: Dur::hours_n(24).unwrap_or_default(),
            secret_bytes: 32,
            secret_prefix: "kr".into(),
            commit_name: "keyrot".into(),
            commit_email: "keyrot@localhost".into(),
            commit_sign: false,
            policy_config: BTreeMap::new(),
            policy_config_pos: BTreeMap::new(),
            exceptions_max_days: super::exceptions::DEFAULT_MAX_DAYS,
            services: BTreeMap::new(),
            sink: Sink::Dir,
            remote: None,
            rollout: Rollout::default(),
            parallelism: DEFAULT_PARALLELISM,
            notify: Vec::new(),
        }
    }
}
