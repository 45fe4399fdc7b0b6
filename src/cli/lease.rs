//! `keyrot lease` and `keyrot unlock LEASE_ID`: the shared remote's lease.

use std::path::Path;
use std::process::ExitCode;

use crate::error::Error;
use crate::remote::{lease, Session};
use crate::time::Time;
use crate::workspace::Workspace;

#[derive(clap::Args)]
pub(super) struct Args {
    #[command(flatten)]
    remote: super::RemoteArgs,
    /// Print the lease as JSON (`null` when there is none)
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub(super) struct UnlockArgs {
    /// The lease's id, as `keyrot lease` or the locked error shows it
    lease_id: String,
    #[command(flatten)]
    remote: super::RemoteArgs,
}

fn session<'w>(ws: &'w Workspace, remote: &super::RemoteArgs) -> Result<Session<'w>, Error> {
    let r = remote.resolve(ws)?.ok_or_else(|| {
        Error::Usage("the store has no [remote] in keyrot.toml; name one with --remote NAME".into())
    })?;
    Session::open(ws, &r)
}

pub(super) fn run(args: &Args, store: &Path) -> Result<ExitCode, Error> {
    let ws = Workspace::open(store)?;
    let s = session(&ws, &args.remote)?;
    let current = lease::current(&ws.repo, &s.git)?;
    if args.json {
        let value = current.as_ref().map(|l| {
            serde_json::json!({"id": l.id, "holder": l.holder, "expires": l.expires, "live": l.live(Time::now())})
        });
        super::out(&format!(
            "{}\n",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        ));
        return Ok(ExitCode::SUCCESS);
    }
    super::out(&match current {
        None => format!("No lease on {}: nobody is applying.\n", s.git.remote),
        Some(l) if l.live(Time::now()) => format!(
            "Lease {} on {}: held by {} until {}.\n",
            l.id, s.git.remote, l.holder, l.expires
        ),
        Some(l) => format!(
            "Lease {} on {}: held by {}, expired at {} (the next apply takes it over).\n",
            l.id, s.git.remote, l.holder, l.expires
        ),
    });
    Ok(ExitCode::SUCCESS)
}

pub(super) fn unlock(args: &UnlockArgs, store: &Path) -> Result<ExitCode, Error> {
    let ws = Workspace::open(store)?;
    let s = session(&ws, &args.remote)?;
    let l = lease::unlock(&ws.repo, &s.git, &args.lease_id)?;
    super::out(&format!(
        "Removed lease {} on {} (held by {}, until {}).\n",
        l.id, s.git.remote, l.holder, l.expires
    ));
    Ok(ExitCode::SUCCESS)
}
