//! `keyrot init [DIR] [--example]`

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::error::Error;
use crate::time::Time;

#[derive(clap::Args)]
pub(super) struct Args {
    /// Folder to create the store in (default: --store, else the current directory)
    dir: Option<PathBuf>,
    /// Also add the example keys and owners, dated so the first plan shows every action
    #[arg(long)]
    example: bool,
}

pub(super) fn run(args: &Args, store: Option<&Path>) -> Result<ExitCode, Error> {
    let dir = args
        .dir
        .clone()
        .or_else(|| store.map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."));
    let created = crate::init::init(&dir, args.example, Time::now())?;
    super::out(&format!(
        "Initialized keyrot store in {} ({} keys, {} policies), commit {}\nNext: add keys/<id>.toml, commit, then `keyrot plan`.\n",
        created.root.display(),
        created.keys,
        crate::init::SHIPPED_POLICIES
            .iter()
            .filter(|(name, _)| !crate::store::layout::is_policy_test(name))
            .count(),
        &created.commit[..12]
    ));
    Ok(ExitCode::SUCCESS)
}
