//! `keyrot audit verify`: proves every apply commit on the branch is exactly what the
//! committed policies decided, and lists every manual change with who made it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::audit::verify::{self, Options};
use crate::error::Error;
use crate::workspace::Workspace;

#[derive(clap::Args)]
pub(super) struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Re-derive every apply commit from its parent and Keyrot-Now, list manual changes
    Verify(VerifyArgs),
}

#[derive(clap::Args)]
struct VerifyArgs {
    /// Check only the commits after this one
    #[arg(long, value_name = "COMMIT")]
    since: Option<String>,
    /// The keys to trust (ssh-keygen's allowed-signers format); default: git's
    /// gpg.ssh.allowedSignersFile
    #[arg(long, value_name = "FILE")]
    allowed_signers: Option<PathBuf>,
    /// Fail every store-changing commit without a good signature by an allowed signer
    #[arg(long)]
    require_signed: bool,
    /// Print the result as JSON
    #[arg(long)]
    json: bool,
}

pub(super) fn run(args: &Args, store: &Path) -> Result<ExitCode, Error> {
    let Command::Verify(args) = &args.command;
    let ws = Workspace::open(store)?;
    let report = verify::verify(
        &ws,
        &Options {
            since: args.since.clone(),
            allowed_signers: args.allowed_signers.clone(),
            require_signed: args.require_signed,
        },
    )?;
    if args.json {
        super::out(&format!(
            "{}\n",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        ));
    } else {
        super::out(&super::render::audit(&report));
    }
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
