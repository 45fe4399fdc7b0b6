//! `keyrot completions SHELL` and `keyrot man [DIR]`: shell completions and man pages,
//! generated from the same clap definitions the commands parse with, so they cannot
//! drift from the real flags.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::CommandFactory;

use crate::error::Error;

#[derive(clap::Args)]
pub(super) struct CompletionsArgs {
    /// The shell to complete for
    shell: clap_complete::Shell,
}

#[derive(clap::Args)]
pub(super) struct ManArgs {
    /// Write keyrot.1 and one page per command (keyrot-plan.1, …) into DIR; without
    /// it, print keyrot.1
    dir: Option<PathBuf>,
}

pub(super) fn completions(args: &CompletionsArgs) -> Result<ExitCode, Error> {
    let mut cmd = super::Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "keyrot", &mut out);
    raw_out(&out);
    Ok(ExitCode::SUCCESS)
}

pub(super) fn man(args: &ManArgs) -> Result<ExitCode, Error> {
    let cmd = super::Cli::command();
    match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            clap_mangen::generate_to(cmd, dir).map_err(|e| Error::io(dir, e))?;
            super::out(&format!("Wrote the man pages to {}.\n", dir.display()));
        }
        None => {
            let mut out = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut out)
                .map_err(|e| Error::io("stdout", e))?;
            raw_out(&out);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes generated text as it is (no escaping: it is keyrot's own, not store content),
/// ignoring a closed pipe.
fn raw_out(bytes: &[u8]) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(bytes);
    let _ = o.flush();
}
