//! The Vault/OpenBao sink: each key's secret in a KV version 2 secret, one version per
//! rotation (its data: `secret` and `fingerprint`), written with check-and-set on the
//! version keyrot read, then read back. The previous version stays readable during the
//! grace period; `expire` destroys it, `revoke` deletes every version.
//!
//! The token comes only from the environment and is sent only as a request header:
//! it is never in a URL, a message or the store.

use std::time::Duration;

use serde_json::{json, Value};

use crate::error::{DeliveryError, Error, Result};
use crate::provider::StepError;
use crate::secret::Secret;
use crate::store::settings::VaultSettings;

pub(crate) struct Vault {
    agent: ureq::Agent,
    address: String,
    /// Sent as `X-Vault-Namespace` when set.
    namespace: Option<String>,
    /// Where the trusted CAs came from, for a certificate error's message.
    trust: String,
    token: Token,
    mount: String,
    path: String,
}

/// The token; never shown.
struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        let mut bytes = std::mem::take(&mut self.0).into_bytes();
        crate::secret::wipe(&mut bytes);
    }
}

/// A request with the token and, when set, the namespace.
fn with_headers<B>(
    req: ureq::RequestBuilder<B>,
    token: &str,
    namespace: Option<&str>,
) -> ureq::RequestBuilder<B> {
    let req = req.header("X-Vault-Token", token);
    match namespace {
        Some(ns) => req.header("X-Vault-Namespace", ns),
        None => req,
    }
}

/// What one HTTP exchange came to.
struct Reply {
    status: u16,
    body: Value,
}

impl Vault {
    /// A client for `settings`, with the token from its environment variable; the
    /// address, namespace and CAs from `VAULT_ADDR`, `VAULT_NAMESPACE`, `VAULT_CACERT` and
    /// `VAULT_CAPATH` where keyrot.toml does not set them (as the Vault CLI reads them).
    /// `root` is the store's root, which a relative `ca_cert` is read from.
    pub(crate) fn new(settings: &VaultSettings, root: &std::path::Path) -> Result<Vault> {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let address = match &settings.address {
            Some(a) => a.clone(),
            None => {
                let given = env("VAULT_ADDR").ok_or_else(|| Error::from(DeliveryError::NoVaultAddress))?;
                crate::store::settings::vault_address(&given, "VAULT_ADDR")
                    .map_err(DeliveryError::VaultAddress)?
            }
        };
        let namespace = settings.namespace.clone().or_else(|| env("VAULT_NAMESPACE"));
        let (roots, trust) = super::trust::roots(settings, root, env)?;
        let token = std::env::var(&settings.token_env).unwrap_or_default();
        if token.trim().is_empty() {
            return Err(DeliveryError::NoVaultToken {
                env: settings.token_env.clone(),
            }
            .into());
        }
        let tls = ureq::tls::TlsConfig::builder().root_certs(roots).build();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(15)))
            .http_status_as_error(false)
            .tls_config(tls)
            .build()
            .into();
        Ok(Vault {
            agent,
            address,
            namespace,
            trust,
            token: Token(token),
            mount: settings.mount.clone(),
            path: settings.path.clone(),
        })
    }

    /// The secret's path under the mount for one key.
    pub(crate) fn path_for(&self, service: &str, id: &str) -> String {
        self.path.replace("{service}", service).replace("{id}", id)
    }

    /// `vault:<mount>/<path>`, for messages and `apply --json`.
    pub(crate) fn location(&self, path: &str) -> String {
        format!("vault:{}/{path}", self.mount)
    }

    fn url(&self, kind: &str, path: &str) -> String {
        format!("{}/v1/{}/{kind}/{path}", self.address, self.mount)
    }

    fn fail(&self, what: &str, why: impl std::fmt::Display) -> StepError {
        StepError::new(format!("vault at {} ({what}): {why}", self.address))
    }

    fn exchange(
        &self,
        what: &str,
        method: &str,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Reply, StepError> {
        let token = self.token.0.as_str();
        let namespace = self.namespace.as_deref();
        let result = match (method, body) {
            ("GET", _) => with_headers(self.agent.get(url), token, namespace).call(),
            ("DELETE", _) => with_headers(self.agent.delete(url), token, namespace).call(),
            (_, Some(b)) => with_headers(self.agent.post(url), token, namespace).send_json(b),
            (_, None) => with_headers(self.agent.post(url), token, namespace).send_empty(),
        };
        let mut resp = result.map_err(|e| {
            let why = format!("cannot reach it: {e}");
            // A private CA is the usual cause: say what was trusted and how to add it.
            if why.contains("certificate") || why.contains("UnknownIssuer") {
                self.fail(
                    what,
                    format!(
                        "{why} (trusted: {}; for a private CA set VAULT_CACERT or [delivery.vault] ca_cert)",
                        self.trust
                    ),
                )
            } else {
                self.fail(what, why)
            }
        })?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_json::<Value>()
            .unwrap_or(Value::Null);
        if status == 403 {
            return Err(self.fail(what, "permission denied: the token was refused (403)"));
        }
        Ok(Reply { status, body })
    }

    fn errors(body: &Value) -> String {
        body["errors"]
            .as_array()
            .map(|e| e.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("; "))
            .unwrap_or_default()
    }

    /// The secret's current version, 0 when it has none.
    fn current_version(&self, path: &str) -> Result<u64, StepError> {
        let r = self.exchange("read metadata", "GET", &self.url("metadata", path), None)?;
        match r.status {
            404 => Ok(0),
            200 => Ok(r.body["data"]["current_version"].as_u64().unwrap_or(0)),
            s => Err(self.fail("read metadata", format!("status {s}: {}", Self::errors(&r.body)))),
        }
    }

    /// Writes a new version holding the secret, with check-and-set on the version read
    /// just before, then reads it back. Returns the version.
    pub(crate) fn deliver(&self, path: &str, secret: &Secret) -> Result<u64, StepError> {
        let seen = self.current_version(path)?;
        crate::failpoint::pause("vault-before-write");
        let body = json!({"options": {"cas": seen}, "data": {"secret": secret.expose(), "fingerprint": secret.fingerprint()}});
        let r = self.exchange("write", "POST", &self.url("data", path), Some(&body))?;
        drop(body);
        let version = match r.status {
            200 | 204 => r.body["data"]["version"].as_u64().unwrap_or(0),
            400 if Self::errors(&r.body).contains("check-and-set") => {
                return Err(self.fail(
                    "write",
                    format!("check-and-set conflict: {path} changed after keyrot read version {seen}; someone else writes there"),
                ))
            }
            s => return Err(self.fail("write", format!("status {s}: {}", Self::errors(&r.body)))),
        };
        let r = self.exchange(
            "read back",
            "GET",
            &format!("{}?version={version}", self.url("data", path)),
            None,
        )?;
        let data = &r.body["data"]["data"];
        let matches = r.status == 200
            && data["fingerprint"].as_str() == Some(secret.fingerprint().as_str())
            && data["secret"].as_str() == Some(secret.expose());
        if !matches {
            return Err(self.fail(
                "read back",
                format!("version {version} of {path} does not hold the secret just written"),
            ));
        }
        Ok(version)
    }

    /// Destroys the versions of `path` whose fingerprint is `fingerprint` (an expired
    /// secret), or `version` when given (a rotation rolled back).
    pub(crate) fn destroy(
        &self,
        path: &str,
        fingerprint: Option<&str>,
        version: Option<u64>,
    ) -> Result<(), StepError> {
        let versions: Vec<u64> = match version {
            Some(v) => vec![v],
            None => {
                let r = self.exchange("read metadata", "GET", &self.url("metadata", path), None)?;
                if r.status == 404 {
                    return Ok(());
                }
                let mut found = Vec::new();
                let listed = r.body["data"]["versions"]
                    .as_object()
                    .cloned()
                    .unwrap_or_default();
                for (v, meta) in listed {
                    let Ok(v) = v.parse::<u64>() else { continue };
                    if meta["destroyed"].as_bool() == Some(true) {
                        continue;
                    }
                    let r = self.exchange(
                        "read",
                        "GET",
                        &format!("{}?version={v}", self.url("data", path)),
                        None,
                    )?;
                    if r.body["data"]["data"]["fingerprint"].as_str() == fingerprint {
                        found.push(v);
                    }
                }
                found
            }
        };
        if versions.is_empty() {
            return Ok(());
        }
        let r = self.exchange(
            "destroy",
            "POST",
            &self.url("destroy", path),
            Some(&json!({"versions": versions})),
        )?;
        match r.status {
            200 | 204 | 404 => Ok(()),
            s => Err(self.fail("destroy", format!("status {s}: {}", Self::errors(&r.body)))),
        }
    }

    /// Deletes the secret and every version of it (a revoked key).
    pub(crate) fn delete_all(&self, path: &str) -> Result<(), StepError> {
        let r = self.exchange("delete", "DELETE", &self.url("metadata", path), None)?;
        match r.status {
            200 | 204 | 404 => Ok(()),
            s => Err(self.fail("delete", format!("status {s}: {}", Self::errors(&r.body)))),
        }
    }
}
