//! `keyrot run`: the scheduled runner. Plans (and with `--apply`, applies) at start and
//! then every DURATION; `--once` runs one cycle for cron and CI.

use std::path::Path;
use std::process::ExitCode;
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use serde_json::json;

use crate::error::Error;
use crate::runner;
use crate::time::{Dur, Time};
use crate::watch::Signal;
use crate::workspace::Workspace;

#[derive(clap::Args)]
pub(super) struct Args {
    /// Time between cycles, e.g. "1h", "30m", "1d"
    #[arg(long, value_parser = parse_every, value_name = "DURATION", required_unless_present = "once")]
    every: Option<Dur>,
    /// Run one cycle and exit with the plan's detailed exit code (0, or 2 when it held changes; 1 on error)
    #[arg(long, conflicts_with = "every")]
    once: bool,
    /// Apply each cycle's plan of the committed store and commit it (otherwise only report)
    #[arg(long)]
    apply: bool,
    #[command(flatten)]
    secrets: super::SecretsArgs,
    /// Write one JSON object per cycle
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    remote: super::RemoteArgs,
    #[command(flatten)]
    steps: super::StepArgs,
}

fn parse_every(s: &str) -> Result<Dur, String> {
    let d = Dur::parse(s)?;
    if d.secs() < 1 {
        return Err("the interval must be at least 1s".into());
    }
    Ok(d)
}

pub(super) fn run(args: &Args, store: &Path) -> Result<ExitCode, Error> {
    let ws = Workspace::open(store)?;
    let remote = args.remote.resolve(&ws)?;
    if remote.is_some() && args.apply {
        crate::remote::check_ci_secrets(&ws, args.secrets.secrets_dir.is_some())?;
    }
    let secrets = if args.apply {
        Some(args.secrets.open(&ws.root)?)
    } else {
        None
    };
    let (_tx, rx) = super::stop_channel()?;
    loop {
        let now = Time::now();
        let code = match runner::cycle(
            &ws,
            now,
            secrets.as_ref(),
            remote.as_ref(),
            args.steps.parallelism(),
        ) {
            Ok(cycle) => {
                super::warnings(&cycle.warnings);
                for f in &cycle.notify_failures {
                    super::err_line(&format!("warning: {f}"));
                }
                let commit = cycle.applied.as_ref().and_then(|a| a.commit.clone());
                let failed = cycle
                    .applied
                    .as_ref()
                    .map(|a| a.failed.clone())
                    .unwrap_or_default();
                if args.json {
                    super::out(&format!(
                        "{}\n",
                        json!({"event": "cycle", "time": now.to_rfc3339(), "applied": args.apply, "commit": commit,
                               "failed": failed, "plan": cycle.plan})
                    ));
                } else {
                    let action = match (&cycle.applied, &commit) {
                        (None, _) => "planned".to_string(),
                        (Some(_), Some(c)) => format!("applied, commit {c}"),
                        (Some(_), None) => "nothing to apply".to_string(),
                    };
                    super::out(&format!("{now} {} {action}\n", cycle.plan.summary));
                    for f in &failed {
                        super::err_line(&format!(
                            "{now} error: key {}: {} not applied: {}",
                            f.key,
                            f.actions.join(", "),
                            f.error
                        ));
                    }
                }
                // A change that failed at its service is an error for cron and CI.
                if !failed.is_empty() {
                    1
                } else if cycle.plan.has_changes() {
                    2
                } else {
                    0
                }
            }
            Err(e) => {
                if args.json {
                    super::out(&format!(
                        "{}\n",
                        json!({"event": "error", "time": now.to_rfc3339(), "error": e.to_string(), "hint": super::hint(&e)})
                    ));
                } else {
                    super::err_line(&format!("{now} cycle failed:"));
                    super::report(&e);
                }
                1
            }
        };
        let Some(every) = args.every.filter(|_| !args.once) else {
            return Ok(ExitCode::from(code));
        };
        // Sleep until the next cycle, waking at once for Ctrl-C or SIGTERM. A signal
        // that arrives during a cycle is seen here, after the cycle (and its apply) ends.
        match rx.recv_timeout(Duration::from_secs(every.secs() as u64)) {
            Ok(Signal::Stop) | Err(RecvTimeoutError::Disconnected) => return Ok(ExitCode::SUCCESS),
            Ok(Signal::Fs(_)) | Err(RecvTimeoutError::Timeout) => {}
        }
    }
}
