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

/// The JSON Schemas of keyrot's JSON output, as shipped in `schemas/` (a schema names
/// another by its file name, `plan.schema.json`, relative to its own `$id`).
const SCHEMAS: &[(&str, &str)] = &[
    ("plan", include_str!("../../schemas/plan.schema.json")),
    ("apply", include_str!("../../schemas/apply.schema.json")),
    (
        "watch-event",
        include_str!("../../schemas/watch-event.schema.json"),
    ),
    ("run-event", include_str!("../../schemas/run-event.schema.json")),
    ("check", include_str!("../../schemas/check.schema.json")),
    ("test", include_str!("../../schemas/test.schema.json")),
    ("explain", include_str!("../../schemas/explain.schema.json")),
    ("log", include_str!("../../schemas/log.schema.json")),
    (
        "audit-verify",
        include_str!("../../schemas/audit-verify.schema.json"),
    ),
    ("lease", include_str!("../../schemas/lease.schema.json")),
    ("scan", include_str!("../../schemas/scan.schema.json")),
    ("report", include_str!("../../schemas/report.schema.json")),
    (
        "notify-event",
        include_str!("../../schemas/notify-event.schema.json"),
    ),
    (
        "notify-upcoming",
        include_str!("../../schemas/notify-upcoming.schema.json"),
    ),
    (
        "usage-import",
        include_str!("../../schemas/usage-import.schema.json"),
    ),
    ("error", include_str!("../../schemas/error.schema.json")),
];

#[derive(clap::Args)]
pub(super) struct SchemaArgs {
    /// The output whose schema to print (without it: the list): plan, apply,
    /// watch-event, run-event, check, test, explain, log, audit-verify, lease, scan, report, usage-import, notify-event, notify-upcoming, error
    name: Option<String>,
}

pub(super) fn schema(args: &SchemaArgs) -> Result<ExitCode, Error> {
    let names: Vec<&str> = SCHEMAS.iter().map(|(n, _)| *n).collect();
    match &args.name {
        None => super::out(&format!("{}\n", names.join("\n"))),
        Some(name) => {
            let (_, text) = SCHEMAS.iter().find(|(n, _)| n == name).ok_or_else(|| {
                Error::Usage(format!("no schema `{name}`; there are: {}", names.join(", ")))
            })?;
            super::out(text);
        }
    }
    Ok(ExitCode::SUCCESS)
}
