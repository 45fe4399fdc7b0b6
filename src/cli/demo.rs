//! `keyrot demo [DIR]`: the quick start. Makes (or reuses) an example store, then
//! runs plan, apply and log on it.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::apply;
use crate::error::Error;
use crate::init;
use crate::time::Time;
use crate::workspace::Workspace;

#[derive(clap::Args)]
pub(super) struct Args {
    /// Folder of the demo store (reused if it exists)
    #[arg(default_value = "keyrot-demo")]
    dir: PathBuf,
    #[command(flatten)]
    secrets: super::SecretsArgs,
}

pub(super) fn run(args: &Args) -> Result<ExitCode, Error> {
    let now = Time::now();
    if init::is_store(&args.dir) {
        super::out(&format!(
            "== Reusing the demo store in {}\n\n",
            args.dir.display()
        ));
    } else {
        let created = init::init(&args.dir, true, now)?;
        super::out(&format!(
            "== keyrot init --example {}\nCreated a store with {} example keys and the 6 shipped policies.\n\n",
            args.dir.display(),
            created.keys
        ));
    }
    let ws = Workspace::open(&args.dir)?;

    super::out(&format!("== keyrot plan --now {now}\n"));
    let tx = apply::Transaction::begin(&ws)?;
    let (plan, loaded) = tx.plan_head(now, None)?;
    super::out(&super::render::plan(&plan));

    let secrets = args.secrets.open(&ws.root)?;
    super::out("\n== keyrot apply --yes\n");
    let applied = tx.commit(&loaded, &plan, &secrets)?;
    super::notes(&applied.notes);
    super::out(&super::render::applied(&plan, &applied, secrets.path()));

    super::out("\n== keyrot log\n");
    let entries = crate::audit::log(&ws.repo, &loaded.store.settings, None)?;
    super::out(&super::render::log(&entries));
    super::out(&format!(
        "\nThe store is a git repository: try `git -C {} log -p` to see the audit trail as diffs.\n",
        args.dir.display()
    ));
    Ok(ExitCode::SUCCESS)
}
