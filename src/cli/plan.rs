//! `keyrot plan`: evaluate the work tree and print (or save) the plan.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::error::Error;
use crate::workspace::Workspace;

#[derive(clap::Args)]
#[command(
    mut_arg("now", |a| a.help("Evaluation instant (RFC 3339), for reproducible plans; default: now")),
    mut_arg("json", |a| a.help("Print the plan as JSON")),
)]
pub(super) struct Args {
    #[command(flatten)]
    eval: super::EvalArgs,
    /// Save the plan to FILE, for `keyrot apply FILE`
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Exit 2 when the plan would change the store (rotate, revoke, restrict or expire)
    #[arg(long)]
    detailed_exitcode: bool,
    #[command(flatten)]
    remote: super::RemoteArgs,
}

pub(super) fn run(args: &Args, store: &Path) -> Result<ExitCode, Error> {
    let ws = Workspace::open(store)?;
    // With a shared remote: fetch, refuse a rewritten history, and say where the local
    // branch stands. The plan is still the work tree's.
    // An unreachable remote does not stop a plan (an engineer offline still sees what
    // the work tree decides); a rewritten one does.
    if let Some(remote) = args.remote.resolve(&ws)? {
        match crate::remote::Session::open(&ws, &remote) {
            Ok(session) => {
                let mut notes = vec![session.standing()?.describe(&session.branch, &remote.name)];
                if session.unpushed_apply()?.is_some() {
                    notes.push("1 apply commit not pushed; the next `keyrot apply` pushes it".into());
                }
                super::notes(&notes);
            }
            Err(Error::Remote(why)) => super::err_line(&format!(
                "warning: {why}; planning without comparing with {}",
                remote.name
            )),
            Err(e) => return Err(e),
        }
    }
    let now = args.eval.now();
    let bar = super::PlanBar::new(args.eval.json);
    let tick = |n, total| bar.tick(n, total);
    let crate::workspace::WorktreePlan {
        plan,
        dirty,
        warnings,
    } = ws.plan_worktree(now, Some(&tick))?;
    bar.finish();
    super::warnings(&warnings);
    super::notes(&crate::apply::interrupted(&ws));
    if let Some(path) = &args.out {
        std::fs::File::create(path)
            .and_then(|f| plan.write_json(f))
            .map_err(|e| Error::io(path, e))?;
    }
    if args.eval.json {
        // A closed pipe (`keyrot plan --json | head`) is not an error.
        let _ = plan.write_json(std::io::stdout().lock());
    } else {
        let mut text = String::new();
        if !dirty.is_empty() {
            text.push_str(&format!(
                "Note: the work tree differs from HEAD ({}); this plan shows uncommitted changes, and apply acts only on committed state.\n\n",
                dirty.join(", ")
            ));
        }
        text.push_str(&super::render::plan(&plan));
        if let Some(path) = &args.out {
            text.push_str(&format!(
                "\nSaved plan to {}. Apply it with: keyrot apply {}\n",
                path.display(),
                path.display()
            ));
        }
        super::out(&text);
    }
    Ok(if args.detailed_exitcode && plan.has_changes() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}
