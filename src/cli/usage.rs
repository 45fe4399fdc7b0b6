//! `keyrot usage import FILE`: access records into the key files' `last_used_at` and
//! `last_used_from`, in one commit.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::error::Error;
use crate::usage::{self, Format, Imported};
use crate::workspace::Workspace;

#[derive(clap::Args)]
pub(super) struct Args {
    #[command(subcommand)]
    command: UsageCommand,
}

#[derive(clap::Subcommand)]
enum UsageCommand {
    /// Record when and from where each key was used, from access records (JSON lines or CSV)
    Import(ImportArgs),
}

#[derive(clap::Args)]
struct ImportArgs {
    /// The records: a file, or - for standard input
    file: PathBuf,
    /// The records' format (default: csv for a .csv file, else jsonl)
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// The import's instant (RFC 3339): records later than it are refused; default: now
    #[arg(long, value_parser = super::parse_now, value_name = "TIME")]
    now: Option<crate::time::Time>,
    /// Print the result as JSON
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    remote: super::RemoteArgs,
}

pub(super) fn run(args: &Args, store: &Path) -> Result<ExitCode, Error> {
    let UsageCommand::Import(a) = &args.command;
    let ws = Workspace::open(store)?;
    let mut shared = super::share_direct(&ws, &a.remote)?;
    let format = a.format.unwrap_or_else(|| {
        if a.file.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv")) {
            Format::Csv
        } else {
            Format::Jsonl
        }
    });
    let now = a.now.unwrap_or_else(crate::time::Time::now);
    let imported = if a.file.as_os_str() == "-" {
        usage::import(&ws, std::io::stdin().lock(), "stdin", format, now)?
    } else {
        let file = std::fs::File::open(&a.file).map_err(|e| Error::io(&a.file, e))?;
        usage::import(&ws, file, &a.file.display().to_string(), format, now)?
    };
    if a.json {
        super::out(&format!(
            "{}\n",
            serde_json::to_string_pretty(&imported).unwrap_or_default()
        ));
    } else {
        super::out(&text(&imported));
    }
    super::push_direct(shared.as_mut(), imported.commit.as_deref())?;
    Ok(ExitCode::SUCCESS)
}

fn text(i: &Imported) -> String {
    let mut out = format!("{}\n", usage::summary(i));
    if !i.stale.is_empty() {
        out.push_str("\nRecords of secrets that no longer work (a client that never switched, or someone who should not hold them):\n");
        for s in &i.stale {
            out.push_str(&format!("  {}\n", usage::stale_line(s)));
        }
    }
    if !i.unknown.is_empty() {
        out.push_str("\nRecords of keys or fingerprints this store does not know:\n");
        for u in &i.unknown {
            out.push_str(&format!("  {}\n", usage::unknown_line(u)));
        }
    }
    let changed = i.keys.iter().filter(|k| k.changed).count();
    match &i.commit {
        Some(c) => out.push_str(&format!(
            "\nRecorded the use of {changed} key{} (last_used_at, last_used_from)\ncommit {c}\n",
            if changed == 1 { "" } else { "s" }
        )),
        None => out.push_str("\nNo key file changed: nothing to commit.\n"),
    }
    out
}
