//! Delivering one event to one target: a committed command (event on stdin, exit 0 is
//! success) or a webhook (POST, any 2xx is success, `X-Keyrot-Signature: sha256=<hex
//! HMAC-SHA256 of the body>` when a secret is configured, as GitHub signs its webhooks).

use std::path::PathBuf;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::provider::exec::{self, RunError};
use crate::store::notify::{Event, Notify, Target};
use crate::store::Settings;
use crate::workspace::Workspace;

/// Tries per target, and the pause before each retry.
const TRIES: u32 = 3;
const BACKOFF: [Duration; 2] = [Duration::from_millis(500), Duration::from_millis(1500)];

/// What every delivery of one event shares.
pub(super) struct Context<'a> {
    ws: &'a Workspace,
    /// The commit whose committed commands run (HEAD: after an apply, its commit).
    head: Option<String>,
    /// A private folder the commands are written to, removed when done.
    run_dir: PathBuf,
    /// Variables no command may see: every secret keyrot knows the name of.
    hide_env: Vec<String>,
}

impl Drop for Context<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

impl<'a> Context<'a> {
    pub(super) fn new(ws: &'a Workspace, settings: &Settings) -> Context<'a> {
        let head = ws.head_id().ok().flatten().map(|c| c.as_str().to_string());
        let id = crate::secret::random_hex(8).unwrap_or_else(|_| std::process::id().to_string());
        let run_dir = crate::apply::lock::keyrot_dir(ws.repo.path()).join(format!("notify-{id}"));
        let mut hide_env: Vec<String> = crate::apply::service::hidden_env(settings)
            .into_iter()
            .map(str::to_string)
            .collect();
        for n in &settings.notify {
            if let Target::Webhook { url_env, secret_env } = &n.target {
                hide_env.push(url_env.clone());
                hide_env.extend(secret_env.clone());
            }
        }
        for s in settings.services.values() {
            if let Some(crate::store::settings::Provider::Postgres { dsn_env, .. }) = &s.provider {
                hide_env.push(dsn_env.clone());
            }
        }
        Context {
            ws,
            head,
            run_dir,
            hide_env,
        }
    }

    /// Delivers `body`, trying up to [`TRIES`] times with a pause between; returns how
    /// many tries were made and the last error, if none succeeded.
    pub(super) fn deliver_with_retries(
        &self,
        n: &Notify,
        event: Event,
        body: &[u8],
    ) -> (u32, Option<String>) {
        let mut last = None;
        for attempt in 0..TRIES {
            if attempt > 0 {
                std::thread::sleep(BACKOFF[(attempt - 1) as usize]);
            }
            match self.deliver(n, event, body) {
                Ok(()) => return (attempt + 1, None),
                Err(e) => last = Some(e),
            }
        }
        (TRIES, last)
    }

    fn deliver(&self, n: &Notify, event: Event, body: &[u8]) -> Result<(), String> {
        let timeout = Duration::from_secs(n.timeout.secs().max(1) as u64);
        match &n.target {
            Target::Command(path) => self.command(path, body, timeout),
            Target::Webhook { url_env, secret_env } => {
                webhook(url_env, secret_env.as_deref(), event, body, timeout)
            }
        }
    }

    /// Runs the committed command with the event and a newline on stdin.
    fn command(&self, path: &str, body: &[u8], timeout: Duration) -> Result<(), String> {
        let head = self.head.as_deref().ok_or("the store has no commit")?;
        let bytes = crate::store::repo::committed_executable(&self.ws.repo, head, path)?;
        let program = exec::Program::write(&self.run_dir, path, &bytes)?;
        let mut input = Vec::with_capacity(body.len() + 1);
        input.extend_from_slice(body);
        input.push(b'\n');
        match exec::run(program.path(), &self.ws.root, &mut input, timeout, &self.hide_env) {
            Ok(ran) if ran.status.success() => Ok(()),
            Ok(ran) => Err(exec::failure(ran.status, &ran.err, str::to_string)),
            Err(RunError::Start(why)) => Err(why),
            Err(RunError::Timeout { .. }) => {
                Err(format!("timed out after {}s and was stopped", timeout.as_secs()))
            }
        }
    }
}

/// `sha256=<hex HMAC-SHA256 of body keyed with secret>`.
pub(crate) fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts a key of any length.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    mac.update(body);
    format!("sha256={}", crate::digest::hex(&mac.finalize().into_bytes()))
}

/// POSTs the event to the URL in `$url_env`. Errors never hold the URL (a Slack or
/// Teams webhook URL is itself a secret) nor the signing secret.
fn webhook(
    url_env: &str,
    secret_env: Option<&str>,
    event: Event,
    body: &[u8],
    timeout: Duration,
) -> Result<(), String> {
    let url = std::env::var(url_env).unwrap_or_default();
    if url.trim().is_empty() {
        return Err(format!("${url_env} is not set: it must hold the webhook's URL"));
    }
    let secret = match secret_env {
        Some(name) => {
            let s = std::env::var(name).unwrap_or_default();
            if s.is_empty() {
                return Err(format!(
                    "${name} is not set: it must hold the webhook's signing secret"
                ));
            }
            Some(s)
        }
        None => None,
    };
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::PlatformVerifier)
        .build();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .tls_config(tls)
        .build()
        .into();
    let mut req = agent
        .post(url.trim())
        .header("Content-Type", "application/json")
        .header("User-Agent", concat!("keyrot/", env!("CARGO_PKG_VERSION")))
        .header("X-Keyrot-Event", event.as_str());
    if let Some(secret) = &secret {
        req = req.header("X-Keyrot-Signature", signature(secret.as_bytes(), body));
    }
    let redact = |e: String| e.replace(url.trim(), &format!("${url_env}"));
    match req.send(body) {
        Ok(resp) if resp.status().is_success() => Ok(()),
        Ok(resp) => Err(format!("the webhook answered HTTP {}", resp.status().as_u16())),
        Err(e) => Err(redact(format!("cannot reach the webhook: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_rfc_4231_hmac_sha256() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
