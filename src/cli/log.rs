//! `keyrot log [KEY]`: the audit trail from git history.

use std::path::Path;
use std::process::ExitCode;

use crate::audit;
use crate::error::Error;
use crate::workspace::Workspace;

#[derive(clap::Args)]
pub(super) struct Args {
    /// Only this key's entries (its id, or folder/id)
    key: Option<String>,
    /// Print the entries as JSON
    #[arg(long)]
    json: bool,
}

pub(super) fn run(args: &Args, store: &Path) -> Result<ExitCode, Error> {
    let ws = Workspace::open(store)?;
    if let Some(k) = &args.key {
        // An id, or `folder/id` as plan tables show a key in a team folder.
        if !k.split('/').all(crate::store::key::is_valid_id) {
            return Err(Error::Usage(format!("`{k}` is not a valid key id")));
        }
    }
    // The folder layout comes from the committed settings, as history is committed
    // state: only keyrot.toml is read, so a broken key file does not hide the history,
    // and a broken keyrot.toml is reported, not replaced by the defaults.
    let settings = match ws.head_id()? {
        Some(head) => crate::store::repo::settings_at(&ws.repo, head.as_str())?,
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
