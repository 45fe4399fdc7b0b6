//! One cycle of the scheduled runner (`keyrot run`): reload the store and its policies
//! from disk, plan, and, when asked, apply the committed state.

use crate::apply::{self, Applied};
use crate::error::Result;
use crate::plan::Plan;
use crate::secret::SecretsDir;
use crate::time::Time;
use crate::workspace::Workspace;

pub(crate) struct Cycle {
    pub plan: Plan,
    /// Set when the cycle applied (even when there was nothing to change).
    pub applied: Option<Applied>,
    /// See [`crate::policy::PolicySet::warnings`].
    pub warnings: Vec<crate::error::Problem>,
    /// Notifications of the apply that could not be delivered (`[[notify]]`).
    pub notify_failures: Vec<String>,
}

/// Runs one cycle at `now`. Without `secrets` it only plans the work tree, as
/// `keyrot plan` does; with it, it plans the committed state and applies it, as
/// `keyrot apply --yes` does. Everything is re-read from disk, so edited policies take
/// effect at the next cycle, and a store that fails to load applies nothing.
/// With `remote`, every cycle fetches first (and an apply goes through the lease and
/// the atomic push); `parallelism` overrides `[apply] parallelism`.
pub(crate) fn cycle(
    ws: &Workspace,
    now: Time,
    secrets: Option<&SecretsDir>,
    remote: Option<&crate::store::Remote>,
    parallelism: Option<usize>,
) -> Result<Cycle> {
    match secrets {
        None => {
            if let Some(r) = remote {
                crate::remote::Session::open(ws, r)?;
            }
            let planned = ws.plan_worktree(now, None)?;
            Ok(Cycle {
                plan: planned.plan,
                applied: None,
                warnings: planned.warnings,
                notify_failures: Vec::new(),
            })
        }
        Some(secrets) => {
            let tx = apply::Transaction::open(ws, remote)?.with_steps(apply::StepOptions {
                parallelism,
                progress: None,
            });
            let (plan, loaded) = tx.plan_head(now, None)?;
            let mut applied = tx.commit(&loaded, &plan, secrets)?;
            if applied.commit.is_some() {
                // A runner applies for months: its store is kept small as it goes.
                let settings = &loaded.store.settings;
                applied
                    .notes
                    .extend(crate::maintenance::note_after_commit(&ws.repo, settings));
            }
            // `commit` took the transaction and released its lock (and a remote's
            // lease) before anyone is told: a slow webhook holds up no other apply.
            let notify_failures = crate::notify::after_apply(ws, &loaded.store, &plan, &applied);
            Ok(Cycle {
                plan,
                applied: Some(applied),
                warnings: loaded.policies.warnings().to_vec(),
                notify_failures,
            })
        }
    }
}
