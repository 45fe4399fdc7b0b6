//! Exec providers: an executable in the store, started once per step, given one JSON
//! request on stdin, answering one JSON object on stdout.
//!
//! ```text
//! request  {"step": "set", "key": {"id": …, "service": …, …}, "secret": "…", "fingerprint": "sha256:…"}
//! response {"ok": true} | {"ok": true, "secret": "…"} (create) | {"ok": false, "error": "…"}
//! ```
//!
//! A non-zero exit, a timeout, output that is not one such object, or `"ok": false`
//! fails the step.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::{redact, Provider, Request, Response, StepError};
use crate::secret::{wipe, Secret};

/// Most a provider may print: an answer is a line of JSON.
const MAX_OUTPUT: u64 = 64 * 1024;

pub struct Exec {
    pub program: PathBuf,
    /// The program as configured (`providers/binance`), for messages.
    pub display: String,
    pub cwd: PathBuf,
    pub timeout: Duration,
    /// Environment variables the provider must not see (the Vault token).
    pub hide_env: Vec<String>,
}

/// The request, fields in name order (tools may rely on `{"fingerprint": …` first).
#[derive(serde::Serialize)]
struct Wire<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    fingerprint: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    grace_period: Option<String>,
    key: &'a super::KeyInfo,
    #[serde(skip_serializing_if = "Option::is_none")]
    remove: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<&'a str>,
    step: &'a str,
}

#[derive(Deserialize)]
struct Answer {
    ok: bool,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

fn read_capped(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = (&mut r).take(MAX_OUTPUT).read_to_end(&mut buf);
        // Drain the rest so the provider never blocks on a full pipe.
        let _ = std::io::copy(&mut r, &mut std::io::sink());
        buf
    })
}

impl Exec {
    fn fail(&self, step: &str, what: impl std::fmt::Display) -> StepError {
        StepError(format!("provider {} ({step}): {what}", self.display))
    }
}

impl Provider for Exec {
    fn call(&self, req: &Request) -> Result<Response, StepError> {
        let step = req.step.as_str();
        let wire = Wire {
            fingerprint: req.fingerprint,
            grace_period: req.grace.map(|g| g.compact()),
            key: req.key,
            remove: req.remove,
            secret: req.secret.map(Secret::expose),
            step,
        };
        // One buffer, large enough never to grow (growing would leave copies of the
        // secret in freed memory), wiped after the write.
        let mut line = Vec::with_capacity(64 * 1024 + wire.secret.map_or(0, str::len) * 2);
        serde_json::to_writer(&mut line, &wire)
            .map_err(|e| self.fail(step, format!("cannot encode the request: {e}")))?;
        line.push(b'\n');

        let mut cmd = Command::new(&self.program);
        cmd.current_dir(&self.cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so a timeout can stop everything it started.
            .process_group(0);
        for name in &self.hide_env {
            cmd.env_remove(name);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| self.fail(step, format!("cannot start: {e}")))?;
        let stdout = read_capped(child.stdout.take().expect("piped"));
        let stderr = read_capped(child.stderr.take().expect("piped"));
        if let Some(mut stdin) = child.stdin.take() {
            // A provider that exits without reading its request is judged by its answer.
            let _ = stdin.write_all(&line);
        }
        wipe(&mut line);

        let started = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if started.elapsed() >= self.timeout => {
                    // SAFETY: kill(2) on the provider's process group, which we created.
                    unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
                    let _ = child.wait();
                    return Err(self.fail(
                        step,
                        format!("timed out after {}s and was stopped", self.timeout.as_secs()),
                    ));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => return Err(self.fail(step, format!("cannot wait for it: {e}"))),
            }
        };
        let mut out = stdout.join().unwrap_or_default();
        let err = stderr.join().unwrap_or_default();
        let secrets: Vec<&Secret> = req.secret.into_iter().collect();
        let last_err_line = || {
            let text = String::from_utf8_lossy(&err);
            let line = text
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim();
            let line: String = line.chars().take(300).collect();
            redact(&line, &secrets)
        };
        if !status.success() {
            wipe(&mut out);
            let why = match status.code() {
                Some(code) => format!("exited with status {code}"),
                None => "was killed by a signal".to_string(),
            };
            let detail = last_err_line();
            return Err(self.fail(
                step,
                if detail.is_empty() {
                    why
                } else {
                    format!("{why}: {detail}")
                },
            ));
        }
        let parsed: Result<Answer, _> = serde_json::from_slice(&out);
        wipe(&mut out);
        let answer = parsed.map_err(|_| {
            self.fail(
                step,
                "did not answer one JSON object such as {\"ok\": true} on stdout",
            )
        })?;
        if !answer.ok {
            let why = answer.error.as_deref().unwrap_or("no reason given");
            return Err(self.fail(step, format!("refused: {}", redact(why, &secrets))));
        }
        let secret = match answer.secret {
            Some(s) if req.step == super::Step::Create => Some(
                Secret::from_service(s)
                    .map_err(|why| self.fail(step, format!("returned an unusable secret: {why}")))?,
            ),
            Some(s) => {
                drop(Secret::from_service(s).ok());
                return Err(self.fail(step, "returned a secret, which only create may"));
            }
            None => None,
        };
        Ok(Response { secret })
    }
}
