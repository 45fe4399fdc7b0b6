//! `keyrot watch`: print the plan, then what changes in it at every save.

use std::path::Path;
use std::process::ExitCode;

use serde_json::json;

use crate::error::Error;
use crate::plan_line::PlanLine;
use crate::watch::{self, Outcome, Planner};
use crate::workspace::Workspace;

#[derive(clap::Args)]
#[command(
    mut_arg("now", |a| a.help("Evaluation instant (RFC 3339) for every plan; default: the time of each re-plan")),
    mut_arg("json", |a| a.help("Write one JSON object per line: {\"event\":\"plan\",\"plan\":…} or {\"event\":\"error\",\"error\":…}")),
)]
pub(super) struct Args {
    #[command(flatten)]
    eval: super::EvalArgs,
}

pub(super) fn run(args: &Args, store: &Path) -> Result<ExitCode, Error> {
    let ws = Workspace::open(store)?;
    let root = ws.root.clone();
    let (tx, rx) = super::stop_channel()?;
    let json = args.eval.json;
    if !json {
        super::out(&format!(
            "Watching {} (policies, keys, owners.toml, keyrot.toml). Ctrl-C to stop.\n\n",
            root.display()
        ));
    }
    let mut line = PlanLine::default();
    watch::run(Planner::new(ws, args.eval.now), tx, rx, |outcome| {
        if let Outcome::Plan { warnings, .. } = outcome {
            super::warnings(warnings);
        }
        if json {
            match outcome {
                // Streamed: a 100k-key plan is megabytes, not worth a JSON tree first;
                // and only the keys that changed are serialized again.
                Outcome::Plan { plan, diff, .. } => {
                    use std::io::Write;
                    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
                    // A closed pipe ends the output, not the watcher.
                    let _ = out
                        .write_all(b"{\"event\":\"plan\",\"plan\":")
                        .and_then(|()| line.write(plan, diff.as_ref(), &mut out))
                        .and_then(|()| out.write_all(b"}\n"))
                        .and_then(|()| out.flush());
                }
                Outcome::Failed { error, .. } => super::out(&format!(
                    "{}\n",
                    json!({"event": "error", "error": error.to_string()})
                )),
            }
            return;
        }
        match outcome {
            Outcome::Plan { plan, diff: None, .. } => super::out(&format!("{}\n", super::render::plan(plan))),
            Outcome::Plan {
                plan,
                diff: Some(diff),
                changed,
                ..
            } => super::out(&super::render::plan_change(
                plan,
                &diff.beyond_elapsed_time(),
                changed,
            )),
            Outcome::Failed { error, changed } => {
                super::report(error);
                super::err_line(&format!(
                    "({}; keeping the last good plan)\n",
                    if changed.is_empty() {
                        "after a change".to_string()
                    } else {
                        format!("after a change to {}", changed.join(", "))
                    }
                ));
            }
        }
    })?;
    if !json {
        super::out("Stopped watching.\n");
    }
    Ok(ExitCode::SUCCESS)
}
