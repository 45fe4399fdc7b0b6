//! `keyrot check`: compile every policy, load every key and owner.

use std::path::Path;
use std::process::ExitCode;

use serde_json::json;

use crate::error::Error;
use crate::time::Time;
use crate::workspace::Workspace;

#[derive(clap::Args)]
pub struct Args {
    /// Print the result as JSON
    #[arg(long)]
    json: bool,
}

pub fn run(args: &Args, store: &Path) -> Result<ExitCode, Error> {
    let ws = Workspace::open(store)?;
    match ws.load_worktree(Time::now()) {
        Ok(loaded) => {
            let policies = loaded.policies.policies();
            if args.json {
                let list: Vec<_> = policies
                    .iter()
                    .map(|p| json!({"name": p.name, "path": p.path, "description": p.description}))
                    .collect();
                super::out(&format!(
                    "{}\n",
                    json!({"ok": true, "problems": [], "policies": list,
                           "keys": loaded.store.keys.len(), "owners": loaded.store.owners.len()})
                ));
            } else {
                let mut text = format!(
                    "ok: {} keys, {} owners, {} policies\n",
                    loaded.store.keys.len(),
                    loaded.store.owners.len(),
                    policies.len()
                );
                for p in policies {
                    text.push_str(&format!(
                        "  {:<20} {}\n",
                        p.name,
                        p.description.as_deref().unwrap_or("")
                    ));
                }
                super::out(&text);
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(Error::Invalid(problems)) if args.json => {
            let list: Vec<_> = problems
                .iter()
                .map(|p| json!({"path": p.path, "line": p.pos.map(|x| x.0), "column": p.pos.map(|x| x.1), "message": p.message}))
                .collect();
            super::out(&format!("{}\n", json!({"ok": false, "problems": list})));
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e),
    }
}
