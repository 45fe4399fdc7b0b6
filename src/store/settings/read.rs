//! Reading `keyrot.toml`: its raw TOML shape, then every field checked, with each
//! problem reported where it is and the defaults kept for what cannot be read.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::*;
use crate::error::Problem;
use crate::store::parse::{span_problem, toml_problem};
use crate::time::Dur;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    rotation: RawRotation,
    #[serde(default)]
    secrets: RawSecrets,
    #[serde(default)]
    commit: RawCommit,
    #[serde(default)]
    policy: BTreeMap<String, Spanned<toml::Table>>,
    #[serde(default)]
    exceptions: RawExceptions,
    #[serde(default)]
    service: BTreeMap<String, RawService>,
    #[serde(default)]
    delivery: RawDelivery,
    remote: Option<RawRemote>,
    #[serde(default)]
    rollout: RawRollout,
    #[serde(default)]
    apply: RawApply,
    #[serde(default)]
    notify: Vec<Spanned<crate::store::notify::RawNotify>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawApply {
    parallelism: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRollout {
    order: Option<Spanned<Vec<Spanned<String>>>>,
    soak: Option<Spanned<String>>,
    max_per_run: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRemote {
    name: Option<Spanned<String>>,
    branch: Option<Spanned<String>>,
    lease: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDelivery {
    sink: Option<Spanned<String>>,
    vault: Option<Spanned<RawVault>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVault {
    address: Option<String>,
    namespace: Option<String>,
    ca_cert: Option<String>,
    token_env: Option<String>,
    mount: Option<String>,
    path: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPostgres {
    dsn_env: Spanned<String>,
    role: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawExceptions {
    max_days: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawService {
    permissions: Option<Vec<String>>,
    provider: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    min_secret_length: Option<Spanned<i64>>,
    min_secret_bits: Option<Spanned<i64>>,
    postgres: Option<Spanned<RawPostgres>>,
    max_concurrency: Option<Spanned<i64>>,
    rate_limit: Option<Spanned<String>>,
    retries: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStore {
    keys: Option<Spanned<String>>,
    policies: Option<Spanned<String>>,
    maintenance: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRotation {
    grace_period: Option<Spanned<String>>,
    min_interval: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSecrets {
    bytes: Option<Spanned<i64>>,
    prefix: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCommit {
    name: Option<Spanned<String>>,
    email: Option<Spanned<String>>,
    sign: Option<bool>,
}

/// Smallest and largest secret sizes keyrot will generate: below 16 bytes (128 bits) a
/// secret is guessable; above 1 KiB it is a configuration mistake.
pub(crate) const SECRET_BYTES: std::ops::RangeInclusive<i64> = 16..=1024;

/// An accepted risk is looked at again at least once a year.
const EXCEPTION_DAYS: std::ops::RangeInclusive<i64> = 1..=365;

impl Settings {
    /// Parses `keyrot.toml`. On problems, returns the defaults for what could not be
    /// read so that the rest of the store can still be checked in the same run.
    pub fn parse(path: &str, text: &str) -> (Settings, Vec<Problem>) {
        let mut problems = Vec::new();
        let mut s = Settings::default();
        let raw: Raw = match toml::from_str(text) {
            Ok(raw) => raw,
            Err(e) => {
                problems.push(toml_problem(path, text, &e));
                return (s, problems);
            }
        };
        for (field, value, target) in [
            ("store.keys", raw.store.keys, &mut s.keys_dir),
            ("store.policies", raw.store.policies, &mut s.policies_dir),
        ] {
            if let Some(v) = value {
                match check_folder(v.get_ref()) {
                    Ok(()) => *target = v.get_ref().clone(),
                    Err(why) => problems.push(span_problem(path, text, v.span(), format!("{field}: {why}"))),
                }
            }
        }
        if s.keys_dir == s.policies_dir {
            problems.push(Problem::new(
                path,
                "store.keys and store.policies must be different folders",
            ));
        } else if s.policies_dir.starts_with(&format!("{}/", s.keys_dir)) {
            // Every folder of the keys folder holds keys.
            problems.push(Problem::new(
                path,
                "store.policies must not be inside store.keys: its folders hold keys",
            ));
        }
        s.maintenance = raw.store.maintenance.unwrap_or(true);
        let unbounded: fn(Dur) -> Result<(), String> = |_| Ok(());
        for (field, value, target, bound) in [
            (
                "rotation.grace_period",
                raw.rotation.grace_period,
                &mut s.grace_period,
                crate::time::check_grace as fn(Dur) -> Result<(), String>,
            ),
            (
                "rotation.min_interval",
                raw.rotation.min_interval,
                &mut s.min_interval,
                unbounded,
            ),
        ] {
            if let Some(v) = value {
                match Dur::parse(v.get_ref()).and_then(|d| bound(d).map(|()| d)) {
                    Ok(d) => *target = d,
                    Err(why) => problems.push(span_problem(path, text, v.span(), format!("{field}: {why}"))),
                }
            }
        }
        if let Some(r) = raw.remote {
            let mut remote = Remote {
                name: "origin".into(),
                branch: None,
                lease: Dur::from_secs(DEFAULT_LEASE_SECS),
            };
            if let Some(n) = r.name {
                match check_remote_name(n.get_ref()) {
                    Ok(()) => remote.name = n.get_ref().clone(),
                    Err(why) => {
                        problems.push(span_problem(path, text, n.span(), format!("remote.name: {why}")))
                    }
                }
            }
            if let Some(b) = r.branch {
                match check_branch_name(b.get_ref()) {
                    Ok(()) => remote.branch = Some(b.get_ref().clone()),
                    Err(why) => problems.push(span_problem(
                        path,
                        text,
                        b.span(),
                        format!("remote.branch: {why}"),
                    )),
                }
            }
            if let Some(l) = r.lease {
                let bounded = |d: Dur| {
                    if (60..=24 * 3600).contains(&d.secs()) {
                        Ok(d)
                    } else {
                        Err("must be between 1m and 24h".to_string())
                    }
                };
                match Dur::parse(l.get_ref()).and_then(bounded) {
                    Ok(d) => remote.lease = d,
                    Err(why) => {
                        problems.push(span_problem(path, text, l.span(), format!("remote.lease: {why}")))
                    }
                }
            }
            s.remote = Some(remote);
        }
        if let Some(p) = raw.apply.parallelism {
            match usize::try_from(*p.get_ref()) {
                Ok(n) if (1..=MAX_PARALLELISM).contains(&n) => s.parallelism = n,
                _ => problems.push(span_problem(
                    path,
                    text,
                    p.span(),
                    format!("apply.parallelism must be between 1 and {MAX_PARALLELISM}"),
                )),
            }
        }
        for table in raw.notify {
            let span = table.span();
            let parsed = crate::store::notify::notify(table.into_inner(), span, &mut |span, why| {
                problems.push(span_problem(path, text, span, why))
            });
            s.notify.extend(parsed);
        }
        s.rollout = rollout(raw.rollout, &mut |span, why| {
            problems.push(span_problem(path, text, span, format!("rollout.{why}")))
        });
        if let Some(b) = raw.secrets.bytes {
            if SECRET_BYTES.contains(b.get_ref()) {
                s.secret_bytes = *b.get_ref() as usize;
            } else {
                problems.push(span_problem(
                    path,
                    text,
                    b.span(),
                    format!(
                        "secrets.bytes must be between {} and {}",
                        SECRET_BYTES.start(),
                        SECRET_BYTES.end()
                    ),
                ));
            }
        }
        if let Some(p) = raw.secrets.prefix {
            let v = p.get_ref();
            if !v.is_empty()
                && v.len() <= 16
                && v.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            {
                s.secret_prefix = v.clone();
            } else {
                problems.push(span_problem(
                    path,
                    text,
                    p.span(),
                    "secrets.prefix must be 1 to 16 lowercase letters or digits".into(),
                ));
            }
        }
        if let Some(n) = raw.commit.name {
            s.commit_name = n.into_inner();
        }
        if let Some(e) = raw.commit.email {
            s.commit_email = e.into_inner();
        }
        s.commit_sign = raw.commit.sign.unwrap_or(false);
        if let Some(d) = raw.exceptions.max_days {
            if EXCEPTION_DAYS.contains(d.get_ref()) {
                s.exceptions_max_days = *d.get_ref();
            } else {
                problems.push(span_problem(
                    path,
                    text,
                    d.span(),
                    format!(
                        "exceptions.max_days must be between {} and {}",
                        EXCEPTION_DAYS.start(),
                        EXCEPTION_DAYS.end()
                    ),
                ));
            }
        }
        for (name, raw) in raw.service {
            for p in raw.permissions.iter().flatten() {
                if let Err(why) = crate::store::key::check_permission(p) {
                    problems.push(Problem::new(path, format!("[service.{name}] permissions: {why}")));
                }
            }
            let mut service = Service {
                permissions: raw.permissions,
                ..Service::default()
            };
            if let Some(t) = raw.timeout {
                match Dur::parse(t.get_ref()) {
                    Ok(d) if d > Dur::ZERO => service.timeout = d,
                    Ok(_) => problems.push(span_problem(
                        path,
                        text,
                        t.span(),
                        format!("service.{name}.timeout must be more than 0s"),
                    )),
                    Err(why) => problems.push(span_problem(
                        path,
                        text,
                        t.span(),
                        format!("service.{name}.timeout: {why}"),
                    )),
                }
            }
            if let Some(r) = raw.rate_limit {
                match Rate::parse(r.get_ref()) {
                    Ok(rate) => service.rate_limit = Some(rate),
                    Err(why) => problems.push(span_problem(
                        path,
                        text,
                        r.span(),
                        format!("service.{name}.rate_limit: {why}"),
                    )),
                }
            }
            let (mut max_concurrency, mut retries) = (0, 0);
            for (field, value, range, target) in [
                (
                    "max_concurrency",
                    raw.max_concurrency,
                    1..=MAX_PARALLELISM as i64,
                    &mut max_concurrency,
                ),
                ("retries", raw.retries, 0..=10, &mut retries),
                (
                    "min_secret_length",
                    raw.min_secret_length,
                    1..=4096,
                    &mut service.secret_rule.min_length,
                ),
                (
                    "min_secret_bits",
                    raw.min_secret_bits,
                    0..=1024,
                    &mut service.secret_rule.min_bits,
                ),
            ] {
                let Some(v) = value else { continue };
                if range.contains(v.get_ref()) {
                    *target = *v.get_ref() as usize;
                } else {
                    problems.push(span_problem(
                        path,
                        text,
                        v.span(),
                        format!(
                            "service.{name}.{field} must be between {} and {}",
                            range.start(),
                            range.end()
                        ),
                    ));
                }
            }
            service.max_concurrency = (max_concurrency > 0).then_some(max_concurrency);
            service.retries = retries as u32;
            match (raw.provider, raw.postgres) {
                (None, None) => {}
                (None, Some(pg)) => problems.push(span_problem(
                    path,
                    text,
                    pg.span(),
                    format!("[service.{name}.postgres] needs provider = \"postgres\" in [service.{name}]"),
                )),
                (Some(p), pg) => match provider(&name, p.get_ref(), pg.map(Spanned::into_inner)) {
                    Ok(provider) => service.provider = Some(provider),
                    Err(why) => problems.push(span_problem(path, text, p.span(), why)),
                },
            }
            s.services.insert(name, service);
        }
        if let Some(sink) = raw.delivery.sink {
            match (sink.get_ref().as_str(), raw.delivery.vault) {
                ("dir", None) => {}
                ("vault", Some(v)) => match vault(v.get_ref()) {
                    Ok(v) => s.sink = Sink::Vault(v),
                    Err(why) => problems.push(span_problem(path, text, v.span(), why)),
                },
                ("vault", None) => problems.push(span_problem(
                    path,
                    text,
                    sink.span(),
                    "sink = \"vault\" needs a [delivery.vault] table (address, token_env, mount, path)"
                        .into(),
                )),
                ("dir", Some(v)) => problems.push(span_problem(
                    path,
                    text,
                    v.span(),
                    "[delivery.vault] is set but sink is \"dir\"; set sink = \"vault\" or remove it".into(),
                )),
                (other, _) => problems.push(span_problem(
                    path,
                    text,
                    sink.span(),
                    format!("delivery.sink must be \"dir\" or \"vault\", not {other:?}"),
                )),
            }
        } else if let Some(v) = raw.delivery.vault {
            problems.push(span_problem(
                path,
                text,
                v.span(),
                "[delivery.vault] is set but [delivery] sink is not \"vault\"".into(),
            ));
        }
        for (name, table) in raw.policy {
            s.policy_config_pos
                .insert(name.clone(), crate::error::line_col(text, table.span().start));
            s.policy_config.insert(name, table.into_inner());
        }
        (s, problems)
    }
}

/// `[rollout]`, telling `bad` (with where) what is wrong with it.
fn rollout(raw: RawRollout, bad: &mut dyn FnMut(std::ops::Range<usize>, String)) -> Rollout {
    let mut r = Rollout::default();
    if let Some(order) = raw.order {
        for env in order.into_inner() {
            let name = env.get_ref();
            if name.is_empty() {
                bad(env.span(), "order: an environment name must not be empty".into());
            } else if r.order.contains(name) {
                bad(env.span(), format!("order: `{name}` is listed twice"));
            } else {
                r.order.push(name.clone());
            }
        }
    }
    if let Some(soak) = raw.soak {
        match Dur::parse(soak.get_ref()) {
            Ok(d) if d >= Dur::ZERO => r.soak = d,
            Ok(_) => bad(soak.span(), "soak must not be negative".into()),
            Err(why) => bad(soak.span(), format!("soak: {why}")),
        }
    }
    if let Some(max) = raw.max_per_run {
        match usize::try_from(*max.get_ref()) {
            Ok(n) if n >= 1 => r.max_per_run = Some(n),
            _ => bad(
                max.span(),
                "max_per_run must be at least 1 (leave it out for no limit)".into(),
            ),
        }
    }
    r
}

/// `[service.<name>] provider = …` with its `[service.<name>.postgres]` table.
fn provider(name: &str, spec: &str, pg: Option<RawPostgres>) -> Result<Provider, String> {
    if let Some(program) = spec.strip_prefix("exec:") {
        if pg.is_some() {
            return Err(format!(
                "[service.{name}.postgres] is only for provider = \"postgres\""
            ));
        }
        check_folder(program).map_err(|_| {
            format!("exec provider `{program}` must be a relative path to an executable inside the store, such as \"providers/binance\"")
        })?;
        return Ok(Provider::Exec {
            program: program.to_string(),
        });
    }
    if spec == "postgres" {
        if !cfg!(feature = "postgres") {
            return Err(
                "this keyrot was built without the postgres provider (cargo feature `postgres`, on by default)"
                    .into(),
            );
        }
        let pg = pg.ok_or_else(|| {
            format!("provider = \"postgres\" needs a [service.{name}.postgres] table with dsn_env")
        })?;
        let dsn_env = pg.dsn_env.into_inner();
        if !is_env_name(&dsn_env) {
            return Err(format!("dsn_env `{dsn_env}` is not an environment variable name"));
        }
        return Ok(Provider::Postgres {
            dsn_env,
            role: pg.role.map_or_else(|| "{id}".to_string(), Spanned::into_inner),
        });
    }
    Err(format!(
        "provider must be \"postgres\" or \"exec:<path in the store>\", not {spec:?}"
    ))
}

pub(crate) fn is_env_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A Vault address as given (in keyrot.toml or `$VAULT_ADDR`), without a trailing `/`.
pub(crate) fn vault_address(given: &str, from: &str) -> Result<String, String> {
    let address = given.trim().trim_end_matches('/').to_string();
    if !(address.starts_with("http://") || address.starts_with("https://")) {
        return Err(format!(
            "{from} must start with http:// or https://, not {address:?}"
        ));
    }
    Ok(address)
}

fn vault(v: &RawVault) -> Result<VaultSettings, String> {
    let address = match &v.address {
        Some(a) => Some(vault_address(a, "delivery.vault.address")?),
        None => None,
    };
    if v.ca_cert.as_deref().is_some_and(|c| c.trim().is_empty()) {
        return Err("delivery.vault.ca_cert must name a PEM file".into());
    }
    let token_env = v.token_env.clone().unwrap_or_else(|| "VAULT_TOKEN".into());
    if !is_env_name(&token_env) {
        return Err(format!(
            "delivery.vault.token_env `{token_env}` is not an environment variable name"
        ));
    }
    let mount = v.mount.clone().unwrap_or_else(|| "secret".into());
    let path = v.path.clone().unwrap_or_else(|| "keyrot/{service}/{id}".into());
    for (field, value) in [("mount", &mount), ("path", &path)] {
        if value.is_empty()
            || value.starts_with('/')
            || value.split('/').any(|p| p.is_empty() || p == "." || p == "..")
        {
            return Err(format!(
                "delivery.vault.{field} must be a relative path such as \"secret\", not {value:?}"
            ));
        }
    }
    Ok(VaultSettings {
        address,
        namespace: v.namespace.clone().filter(|n| !n.trim().is_empty()),
        ca_cert: v.ca_cert.clone(),
        token_env,
        mount,
        path,
    })
}

/// A store folder is a plain relative path inside the store, never `.git`.
pub(crate) fn check_folder(dir: &str) -> Result<(), String> {
    let ok_part =
        |p: &str| !p.is_empty() && p != "." && p != ".." && !p.starts_with(".git") && !p.contains('\\');
    if dir.starts_with('/') || !dir.split('/').all(ok_part) {
        return Err(format!(
            "`{dir}` must be a relative folder inside the store, such as \"keys\""
        ));
    }
    Ok(())
}
