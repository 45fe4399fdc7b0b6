//! `keyrot owner depart NAME`: record that an owner has left.

use std::path::Path;
use std::process::ExitCode;

use crate::error::Error;
use crate::owner::Departure;
use crate::workspace::Workspace;

#[derive(clap::Args)]
pub(super) struct Args {
    #[command(subcommand)]
    command: OwnerCommand,
}

#[derive(clap::Subcommand)]
enum OwnerCommand {
    /// Mark NAME departed in owners.toml (status and departed_at), in a commit of its own
    Depart(DepartArgs),
}

#[derive(clap::Args)]
struct DepartArgs {
    /// The owner, as named in owners.toml
    name: String,
    /// When they left (RFC 3339); default: now
    #[arg(long, value_parser = super::parse_now, value_name = "TIME")]
    at: Option<crate::time::Time>,
    #[command(flatten)]
    remote: super::RemoteArgs,
}

pub(super) fn run(args: &Args, store: &Path) -> Result<ExitCode, Error> {
    let OwnerCommand::Depart(d) = &args.command;
    let ws = Workspace::open(store)?;
    let mut shared = super::share_direct(&ws, &d.remote)?;
    let at = d.at.unwrap_or_else(crate::time::Time::now);
    match crate::owner::depart(&ws, &d.name, at)? {
        Departure::Recorded { commit } => {
            super::out(&format!(
                "{} departed at {}: recorded in owners.toml\ncommit {commit}\n",
                super::safe(&d.name),
                at.to_rfc3339()
            ));
            super::push_direct(shared.as_mut(), Some(&commit))?;
        }
        Departure::AlreadyRecorded { at } => super::out(&format!(
            "{} is already recorded as departed at {}; nothing changed\n",
            super::safe(&d.name),
            at.to_rfc3339()
        )),
    }
    Ok(ExitCode::SUCCESS)
}
