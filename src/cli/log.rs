//! `keyrot log [KEY]`: the audit trail from git history.

use std::path::Path;
use std::process::ExitCode;

use crate::audit;
use crate::error::Error;
use crate::time::Time;
use crate::workspace::Workspace;

#[derive(clap::Args)]
pub struct Args {
    /// Only this key's entries
    key: Option<String>,
    /// Print the entries as JSON
    #[arg(long)]
    json: bool,
}

pub fn run(args: &Args, store: &Path) -> Result<ExitCode, Error> {
    let ws = Workspace::open(store)?;
    if let Some(k) = &args.key {
        if !crate::store::key::is_valid_id(k) {
            return Err(Error::Usage(format!("`{k}` is not a valid key id")));
        }
    }
    // The folder layout comes from the committed settings, as history is committed state.
    let settings = match ws.head_id()? {
        Some(head) => match ws.load_commit(&head, Time::now()) {
            Ok(loaded) => loaded.store.settings,
            Err(_) => crate::store::Settings::default(),
        },
        None => crate::store::Settings::default(),
    };
    let entries = audit::log(&ws.repo, &settings, args.key.as_deref())?;
    if args.json {
        super::out(&format!(
            "{}\n",
            serde_json::to_string_pretty(&entries).unwrap_or_default()
        ));
    } else {
        super::out(&super::render::log(&entries));
    }
    Ok(ExitCode::SUCCESS)
}
