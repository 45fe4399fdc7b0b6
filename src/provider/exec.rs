//! Exec providers: an executable in the store, started once per step, given one JSON
//! request on stdin, answering one JSON object on stdout.
//!
//! ```text
//! request  {"step": "set", "key": {"id": …, "service": …, …}, "secret": "…", "fingerprint": "sha256:…"}
//! response {"ok": true} | {"ok": true, "secret": "…"} (create) | {"ok": false, "error": "…"}
//!          | {"ok": false, "error": "…", "retry": true} (a passing failure)
//! ```
//!
//! A non-zero exit, a timeout, output that is not one such object, or `"ok": false`
//! fails the step; a timeout or `"retry": true` may be tried again (`[service] retries`).

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::{redact, Provider, Request, Response, StepError};
use crate::secret::{wipe, Secret};

/// Most a provider may print: an answer is a line of JSON.
const MAX_OUTPUT: u64 = 64 * 1024;

pub(crate) struct Exec {
    /// The committed program, written out to run; or why it cannot run.
    pub program: Result<Program, String>,
    /// The program as configured (`providers/binance`), for messages.
    pub display: String,
    pub cwd: PathBuf,
    pub timeout: Duration,
    /// Environment variables the provider must not see (the Vault token).
    pub hide_env: Vec<String>,
    /// What a secret it generates must at least be.
    pub secret_rule: crate::secret::Strength,
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
    /// With `ok: false`: the failure is passing (a rate limit, a busy service), and
    /// the step may be tried again (`[service] retries`).
    #[serde(default)]
    retry: bool,
}

/// A provider's committed content written to a private file (mode 0700 in a 0700
/// folder) to be executed, removed when dropped. Running this copy, not the work
/// tree's file, is what makes apply run exactly what was committed.
pub(crate) struct Program {
    path: PathBuf,
}

impl Program {
    pub(crate) fn write(run_dir: &Path, display: &str, bytes: &[u8]) -> Result<Program, String> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        use std::sync::atomic::{AtomicUsize, Ordering};
        // Two services may name one program; each gets a file of its own.
        static WRITTEN: AtomicUsize = AtomicUsize::new(0);
        let fail = |e: std::io::Error| format!("cannot prepare {display} to run: {e}");
        match std::fs::DirBuilder::new().mode(0o700).create(run_dir) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(fail(e)),
            _ => {}
        }
        if !std::fs::symlink_metadata(run_dir).map_err(fail)?.is_dir() {
            return Err(format!(
                "cannot prepare {display} to run: {} is not a folder",
                run_dir.display()
            ));
        }
        let n = WRITTEN.fetch_add(1, Ordering::Relaxed);
        let path = run_dir.join(format!("{n}-{}", display.replace('/', "_")));
        // Written and closed before it is ever run: a file still open for writing
        // cannot be executed (ETXTBSY).
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o700)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .and_then(|mut f| f.write_all(bytes))
            .map_err(fail)?;
        Ok(Program { path })
    }
}

impl Program {
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Which of the provider's outputs a reader reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stream {
    Out,
    Err,
}

/// Reads one of the provider's outputs on a thread of its own, sending what it read
/// (at most [`MAX_OUTPUT`]) when the stream ends.
fn read_capped(mut r: impl Read + Send + 'static, which: Stream, done: mpsc::Sender<(Stream, Vec<u8>)>) {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = (&mut r).take(MAX_OUTPUT).read_to_end(&mut buf);
        // Drain the rest so the provider never blocks on a full pipe.
        let _ = std::io::copy(&mut r, &mut std::io::sink());
        let _ = done.send((which, buf));
    });
}

/// The name `/proc` gives a pipe (`pipe:[inode]`), to find who else holds it.
fn pipe_name(fd: &impl AsRawFd) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()
}

/// Kills every other process holding one of these pipes: a provider's descendants
/// that left its process group (`setsid`) but kept its output open. Looked up in
/// `/proc`, so only this user's processes are seen, which are the only ones a
/// provider keyrot started could have become.
fn kill_holders(pipes: &[PathBuf]) {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    let me = std::process::id();
    for entry in procs.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let holds = fds
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| pipes.contains(&target)));
        if let Some(pid) = holds
            .then(|| rustix::process::Pid::from_raw(pid as i32))
            .flatten()
        {
            // At worst the process is gone already.
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
}

/// Stops a provider past its deadline: its process group while it runs (once it is
/// reaped, its id may be reused), then whoever else still holds its output pipes.
fn stop(child: &mut std::process::Child, pipes: &[PathBuf]) {
    if matches!(child.try_wait(), Ok(None)) {
        // The provider's process group, which we created and whose leader is not
        // reaped yet.
        let group = rustix::process::Pid::from_child(child);
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
    }
    kill_holders(pipes);
    let _ = child.wait();
}

impl Exec {
    fn fail(&self, step: &str, what: impl std::fmt::Display) -> StepError {
        StepError::new(format!("provider {} ({step}): {what}", self.display))
    }
}

impl Provider for Exec {
    fn call(&self, req: &Request) -> Result<Response, StepError> {
        let step = req.step.as_str();
        let program = self.program.as_ref().map_err(|why| self.fail(step, why))?;
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

        let ran = run(&program.path, &self.cwd, &mut line, self.timeout, &self.hide_env);
        let Ran { status, mut out, err } = match ran {
            Ok(ran) => ran,
            Err(RunError::Start(why)) => return Err(self.fail(step, why)),
            Err(RunError::Timeout { detached }) => {
                let why = if detached {
                    " (a process it started kept its output open)"
                } else {
                    ""
                };
                return Err(StepError {
                    retry: true,
                    ..self.fail(
                        step,
                        format!("timed out after {}s{why} and was stopped", self.timeout.as_secs()),
                    )
                });
            }
        };
        let secrets: Vec<&Secret> = req.secret.into_iter().collect();
        if !status.success() {
            wipe(&mut out);
            return Err(self.fail(step, failure(status, &err, |line| redact(line, &secrets))));
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
            let failure = self.fail(step, format!("refused: {}", redact(why, &secrets)));
            return Err(StepError {
                retry: answer.retry,
                ..failure
            });
        }
        let secret = match answer.secret {
            Some(s) if req.step == super::Step::Create => Some(
                Secret::from_service_checked(s, &self.secret_rule)
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

/// Why a program that ran to its end failed: its exit status and the last non-empty
/// line of its stderr (at most 300 characters), passed through `clean` (which redacts
/// what must not be shown).
pub(crate) fn failure(
    status: std::process::ExitStatus,
    err: &[u8],
    clean: impl Fn(&str) -> String,
) -> String {
    let why = match status.code() {
        Some(code) => format!("exited with status {code}"),
        None => "was killed by a signal".to_string(),
    };
    let text = String::from_utf8_lossy(err);
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    let line: String = line.chars().take(300).collect();
    let detail = clean(&line);
    if detail.is_empty() {
        why
    } else {
        format!("{why}: {detail}")
    }
}

/// What a program run to its end left behind.
pub(crate) struct Ran {
    pub status: std::process::ExitStatus,
    /// Its stdout, at most [`MAX_OUTPUT`]: the caller wipes it once read.
    pub out: Vec<u8>,
    /// Its stderr, at most [`MAX_OUTPUT`].
    pub err: Vec<u8>,
}

/// Why a program gave no result.
pub(crate) enum RunError {
    /// It could not be started or watched (the message says why).
    Start(String),
    /// It ran past its deadline and was stopped, with everything it started;
    /// `detached` when it had exited but a process it started kept its output open.
    Timeout { detached: bool },
}

/// Runs `program` in `cwd` in a process group of its own, writes `input` (then wipes
/// it: it may hold a secret) to its stdin, and waits for it to exit and close its
/// output, at most `timeout`; past it, the program and everything it started are
/// killed. Variables named in `hide_env` are removed from its environment. Used by exec
/// providers and notification commands.
pub(crate) fn run(
    program: &Path,
    cwd: &Path,
    input: &mut [u8],
    timeout: Duration,
    hide_env: &[String],
) -> Result<Ran, RunError> {
    let mut cmd = Command::new(program);
    cmd.current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout can stop everything it started.
        .process_group(0);
    for name in hide_env {
        cmd.env_remove(name);
    }
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            wipe(input);
            return Err(RunError::Start(format!("cannot start: {e}")));
        }
    };
    let deadline = Instant::now() + timeout;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        wipe(input);
        stop(&mut child, &[]);
        return Err(RunError::Start("cannot read its output".into()));
    };
    let pipes: Vec<PathBuf> = [pipe_name(&stdout), pipe_name(&stderr)]
        .into_iter()
        .flatten()
        .collect();
    let (done, outputs) = mpsc::channel();
    read_capped(stdout, Stream::Out, done.clone());
    read_capped(stderr, Stream::Err, done);
    if let Some(mut stdin) = child.stdin.take() {
        // A program that exits without reading its input is judged by what it did.
        let _ = stdin.write_all(input);
    }
    wipe(input);

    // Its output ends when every process holding it has closed it, which for a
    // program is when it exits (waited for without polling, so a quick answer is not
    // kept waiting); a detached descendant may keep it open, so the deadline bounds
    // this wait too.
    let (mut out, mut err) = (None, None);
    while out.is_none() || err.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        match outputs.recv_timeout(left) {
            Ok((Stream::Out, bytes)) => out = Some(bytes),
            Ok((Stream::Err, bytes)) => err = Some(bytes),
            Err(_) => {
                if let Some(mut bytes) = out {
                    wipe(&mut bytes);
                }
                let detached = matches!(child.try_wait(), Ok(Some(_)));
                stop(&mut child, &pipes);
                return Err(RunError::Timeout { detached });
            }
        }
    }
    // Closed its output: it has exited, or is about to (or closed it early and goes
    // on, which the deadline bounds).
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                if let Some(mut bytes) = out.take() {
                    wipe(&mut bytes);
                }
                stop(&mut child, &pipes);
                return Err(RunError::Timeout { detached: false });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => {
                stop(&mut child, &pipes);
                if let Some(mut bytes) = out.take() {
                    wipe(&mut bytes);
                }
                return Err(RunError::Start(format!("cannot wait for it: {e}")));
            }
        }
    };
    Ok(Ran {
        status,
        out: out.unwrap_or_default(),
        err: err.unwrap_or_default(),
    })
}
