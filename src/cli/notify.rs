//! `keyrot notify upcoming --within 7d`: tells each owner what a plan that far ahead
//! would rotate or revoke, through the store's `[[notify]]` targets.

use std::path::Path;
use std::process::ExitCode;

use crate::error::Error;
use crate::plan::Provenance;
use crate::time::{Dur, Time};
use crate::workspace::Workspace;

#[derive(clap::Args)]
pub(super) struct Args {
    #[command(subcommand)]
    command: NotifyCommand,
}

#[derive(clap::Subcommand)]
enum NotifyCommand {
    /// Tell each owner what a plan WITHIN from now would rotate or revoke
    Upcoming(UpcomingArgs),
}

#[derive(clap::Args)]
struct UpcomingArgs {
    /// How far ahead to look ("7d", "48h")
    #[arg(long, value_parser = parse_within, value_name = "DURATION", default_value = "7d")]
    within: Dur,
    /// Print the events without sending them
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    eval: super::EvalArgs,
}

fn parse_within(s: &str) -> Result<Dur, String> {
    match Dur::parse(s)? {
        d if d.secs() > 0 && d <= Dur::from_secs(366 * 86_400) => Ok(d),
        _ => Err("the window must be between 1s and 366d".into()),
    }
}

pub(super) fn run(args: &Args, store: &Path) -> Result<ExitCode, Error> {
    let NotifyCommand::Upcoming(a) = &args.command;
    let ws = Workspace::open(store)?;
    let now: Time = a.eval.now();
    let ahead = now
        .checked_add(a.within)
        .ok_or_else(|| Error::BeyondYear9999(format!("{now} + {}", a.within)))?;
    // What the committed store will do: what runners apply.
    let head = ws.head_id()?.ok_or(crate::error::StoreError::NoCommits)?;
    let loaded = ws.load_commit(head.as_str(), ahead)?;
    let plan = loaded.plan(ahead, Provenance::committed(head.clone()), None)?;
    let events = crate::notify::upcoming_events(
        &ws.root,
        &loaded.store,
        &plan,
        Some(head.as_str().to_string()),
        a.within,
        now,
    );
    let mut sent = Vec::new();
    if !a.dry_run {
        for e in &events {
            sent.extend(crate::notify::send(&ws, &loaded.store, e));
        }
    }
    let failed = sent.iter().filter(|s| s.error.is_some()).count();
    if a.eval.json {
        super::out(&format!(
            "{}\n",
            serde_json::to_string_pretty(&serde_json::json!({
                "within": a.within.compact(),
                "events": events,
                "sent": sent,
            }))
            .unwrap_or_default()
        ));
    } else {
        let mut out = String::new();
        for e in &events {
            let owner = e.owner.as_deref().unwrap_or("-");
            let email = e
                .owner_email
                .as_deref()
                .map(|m| format!(" <{m}>"))
                .unwrap_or_default();
            let what: Vec<String> = e
                .actions
                .iter()
                .map(|a| format!("{} {}", a.action, a.key))
                .collect();
            out.push_str(&format!("{owner}{email}: {}\n", what.join(", ")));
        }
        if events.is_empty() {
            out.push_str(&format!("Nothing to rotate or revoke within {}.\n", a.within));
        } else if a.dry_run {
            out.push_str(&format!(
                "{} owner(s) to tell; --dry-run: nothing sent.\n",
                events.len()
            ));
        } else if loaded
            .store
            .settings
            .notify
            .iter()
            .all(|n| !n.on.contains(&crate::store::notify::Event::Upcoming))
        {
            out.push_str("No [[notify]] target in keyrot.toml listens for `upcoming`: nothing sent.\n");
        } else {
            out.push_str(&format!(
                "Sent {} notification(s) for {} owner(s){}.\n",
                sent.len() - failed,
                events.len(),
                if failed > 0 {
                    format!("; {failed} failed")
                } else {
                    String::new()
                }
            ));
        }
        super::out(&out);
    }
    for s in sent.iter().filter(|s| s.error.is_some()) {
        super::err_line(&format!(
            "error: notification {} for {} failed after {} tries: {}",
            s.target,
            s.owner.as_deref().unwrap_or("-"),
            s.tries,
            s.error.as_deref().unwrap_or_default()
        ));
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
