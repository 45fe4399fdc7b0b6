//! `keyrot apply [PLANFILE]`: apply a saved plan, or plan the committed store and apply.

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::json;

use crate::apply;
use crate::error::Error;
use crate::plan::Plan;
use crate::store::files::read_user_file;
use crate::time::Time;
use crate::workspace::Workspace;

#[derive(clap::Args)]
pub(super) struct Args {
    /// A plan saved by `keyrot plan --out`
    planfile: Option<PathBuf>,
    /// Evaluation instant (RFC 3339) when planning here; default: now
    #[arg(long, value_parser = super::parse_now, value_name = "TIME", conflicts_with = "planfile")]
    now: Option<Time>,
    /// Apply without asking (required when stdin is not a terminal)
    #[arg(long, short = 'y')]
    yes: bool,
    /// Apply even when the instant (--now, or the saved plan's) is more than 5 minutes
    /// ahead of this machine's clock
    #[arg(long)]
    allow_future: bool,
    #[command(flatten)]
    secrets: super::SecretsArgs,
    /// Remove the store's apply lock held under ID (left by a process that is gone), then exit
    #[arg(long, value_name = "ID", conflicts_with_all = ["planfile", "yes"])]
    force_unlock: Option<String>,
    /// Print the result as JSON
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    remote: super::RemoteArgs,
    #[command(flatten)]
    steps: super::StepArgs,
}

/// Refuses an instant ahead of the clock (unless `--allow-future`), and warns about a
/// saved plan made long ago.
fn check_instant(instant: Time, future_ok: bool, saved: bool) -> Result<(), Error> {
    if let Some(w) = apply::instant::check(instant, Time::now(), future_ok, saved)? {
        super::err_line(&format!("warning: {w}"));
    }
    Ok(())
}

pub(super) fn run(args: &Args, store: &Path) -> Result<ExitCode, Error> {
    let ws = Workspace::open(store)?;
    if let Some(id) = &args.force_unlock {
        let h = apply::lock::force_unlock(ws.repo.path(), id)?;
        super::out(&format!(
            "Removed the lock of pid {} on {} (id {}, since {}).\n",
            h.pid, h.host, h.id, h.started
        ));
        return Ok(ExitCode::SUCCESS);
    }
    if args.planfile.is_none() && !args.yes && args.json {
        return Err(Error::Usage(
            "apply --json needs --yes (or a plan file): the plan and the question would share stdout with the JSON (as terraform apply -json needs -auto-approve)".into(),
        ));
    }
    if args.planfile.is_none() && !args.yes && !std::io::stdin().is_terminal() {
        return Err(Error::Usage(
            "apply without a plan file needs --yes when stdin is not a terminal (as `terraform apply -auto-approve`)".into(),
        ));
    }
    let remote = args.remote.resolve(&ws)?;
    if remote.is_some() {
        crate::remote::check_ci_secrets(&ws, args.secrets.secrets_dir.is_some())?;
    }
    let secrets = args.secrets.open(&ws.root)?;
    // Ctrl-C or SIGTERM before the commit stops the apply with nothing done (and the
    // lease released); once committing, the apply finishes first. At the interactive
    // prompt Ctrl-C keeps its usual meaning, so the handler comes after the answer.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let install = || {
        let on_signal = stop.clone();
        ctrlc::set_handler(move || on_signal.store(true, std::sync::atomic::Ordering::SeqCst))
            .map_err(|e| Error::Usage(format!("cannot install the Ctrl-C/SIGTERM handler: {e}")))
    };
    let prompts = args.planfile.is_none() && !args.yes;
    if !prompts {
        install()?;
    }
    let bars = super::ServiceBars::new(args.json);
    let tx = apply::Transaction::open(&ws, remote.as_ref())?.with_steps(apply::StepOptions {
        parallelism: args.steps.parallelism(),
        progress: Some(&bars),
    });

    let (plan, loaded) = match &args.planfile {
        Some(path) => {
            let bytes = read_user_file(path)?;
            let plan = Plan::from_json(&path.display().to_string(), &bytes)?;
            let loaded = tx.saved(&plan)?;
            check_instant(plan.now, args.allow_future, true)?;
            (plan, loaded)
        }
        None => {
            let now = args.now.unwrap_or_else(Time::now);
            check_instant(now, args.allow_future, false)?;
            let bar = super::PlanBar::new(args.json);
            let tick = |n, total| bar.tick(n, total);
            let (plan, loaded) = tx.plan_head(now, Some(&tick))?;
            bar.finish();
            if !args.yes {
                super::out(&super::render::plan(&plan));
                if !plan.has_changes() {
                    super::out("\nNothing to apply.\n");
                    return Ok(ExitCode::SUCCESS);
                }
                super::out("\nApply these actions? Only 'yes' will be accepted: ");
                let mut answer = String::new();
                let _ = std::io::stdin().lock().read_line(&mut answer);
                if answer.trim() != "yes" {
                    super::out("Apply cancelled; nothing changed.\n");
                    return Ok(ExitCode::from(1));
                }
            }
            (plan, loaded)
        }
    };

    if prompts {
        install()?;
    }
    super::warnings(loaded.policies.warnings());
    crate::failpoint::pause("apply-planned");
    if stop.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(Error::Usage(
            "interrupted before anything was applied; nothing changed".into(),
        ));
    }
    let applied = tx.commit(&loaded, &plan, &secrets);
    bars.clear();
    let applied = applied?;
    super::notes(&applied.notes);
    if args.json {
        super::out(&format!(
            "{}\n",
            json!({"commit": applied.commit, "branch": applied.branch, "secrets": applied.secrets,
                   "notes": applied.notes, "failed": applied.failed, "plan": plan})
        ));
    } else {
        super::out(&super::render::applied(&plan, &applied, secrets.path()));
    }
    for f in &applied.failed {
        super::err_line(&format!(
            "error: key {}: {} not applied: {}",
            f.key,
            f.actions.join(", "),
            f.error
        ));
    }
    for f in crate::notify::after_apply(&ws, &loaded.store, &plan, &applied) {
        super::err_line(&format!("warning: {f}"));
    }
    Ok(if applied.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
