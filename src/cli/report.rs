//! `keyrot report [--out FILE] [--now TIME] [--json]`: one self-contained HTML page (or
//! JSON) showing where the committed store's keys stand.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::error::Error;
use crate::workspace::Workspace;

#[derive(clap::Args)]
pub(super) struct Args {
    /// Write the page (or the JSON) to FILE instead of stdout
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    #[command(flatten)]
    eval: super::EvalArgs,
}

pub(super) fn run(args: &Args, store: &Path) -> Result<ExitCode, Error> {
    let ws = Workspace::open(store)?;
    let report = crate::report::make(&ws, args.eval.now())?;
    let text = if args.eval.json {
        format!("{}\n", serde_json::to_string_pretty(&report).unwrap_or_default())
    } else {
        crate::report::render(&report)
    };
    match &args.out {
        Some(path) => {
            std::fs::write(path, text.as_bytes()).map_err(|e| Error::io(path, e))?;
            super::err_line(&format!(
                "wrote {} ({} keys, {} KB)",
                path.display(),
                report.keys,
                text.len().div_ceil(1024)
            ));
        }
        // The page is HTML and the JSON is data: neither is terminal text to escape.
        None => {
            use std::io::Write;
            let mut o = std::io::stdout().lock();
            let _ = o.write_all(text.as_bytes());
        }
    }
    Ok(ExitCode::SUCCESS)
}
