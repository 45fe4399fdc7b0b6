//! Live re-planning for `keyrot watch`: watch the store's folders (not files: editors
//! save by renaming a temp file over the original), batch events over a short window,
//! re-read only the files named by the events, and re-plan. A bad edit is reported and
//! the last good plan stays; the next good save recovers.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use notify::{RecommendedWatcher, RecursiveMode, Watcher};

use crate::error::{Error, Problem, Result};
use crate::plan::{Memo, Plan, PlanDiff, Provenance};
use crate::policy::AstCache;
use crate::store::files::{ROOT_FILES, SETTINGS_FILE};
use crate::store::layout::{is_editor_artifact, is_in_keys_folder, policy_folder_file, PolicyFolderFile};
use crate::store::live::Delta;
use crate::store::status::Seen;
use crate::store::{Cache, LiveStore, Source};
use crate::time::Time;
use crate::workspace::{compile_policies, Workspace};

mod events;
mod planner;

use events::{is_read_only, watch_error, Watches};
pub(crate) use planner::Planner;

/// Events closer together than this are one batch (an editor's save is several).
pub(crate) const DEBOUNCE: Duration = Duration::from_millis(50);
/// A steady stream of events still yields a plan this often.
pub(crate) const MAX_BATCH: Duration = Duration::from_millis(500);

/// What the watcher's channel carries.
pub(crate) enum Signal {
    Fs(notify::Result<notify::Event>),
    /// Ctrl-C or SIGTERM: finish and return.
    Stop,
}

/// One re-plan's result.
pub(crate) enum Outcome {
    Plan {
        plan: Arc<Plan>,
        /// Against the last good plan; `None` for the first.
        diff: Option<PlanDiff>,
        /// Store-relative paths whose change triggered this plan.
        changed: Vec<String>,
        /// The policies' warnings, when they differ from those shown last.
        warnings: Vec<Problem>,
    },
    /// The store failed to load or a policy failed; the last good plan stands.
    Failed { error: Error, changed: Vec<String> },
}

/// Runs the watch loop until a [`Signal::Stop`] arrives: reports the first plan, then
/// one [`Outcome`] per batch of relevant changes. `tx` is the sending side of `rx`,
/// handed to the file watcher.
pub(crate) fn run(
    mut planner: Planner,
    tx: Sender<Signal>,
    rx: Receiver<Signal>,
    mut report: impl FnMut(&Outcome),
) -> Result<()> {
    let watcher = notify::recommended_watcher(move |ev| {
        let _ = tx.send(Signal::Fs(ev));
    })
    .map_err(|e| watch_error(e, planner.root()))?;
    let mut watches = Watches {
        watcher,
        watched: BTreeSet::new(),
    };
    // Plan first, then watch: reading every file once the watches exist would raise
    // an `open` event per file (100,000 of them at 100k keys). A save in between is
    // caught by comparing what was read with a `stat` of it after the watches start.
    report(&planner.replan(Vec::new()));
    watches.sync(&planner.folders(), &BTreeSet::new())?;
    let missed = planner.changed_since_load();
    if !missed.is_empty() {
        planner.invalidate(Some(&missed));
        report(&planner.replan(missed));
    }

    let root = planner.root().to_path_buf();
    loop {
        let mut batch = match rx.recv() {
            Ok(Signal::Stop) | Err(_) => return Ok(()),
            Ok(Signal::Fs(ev)) => vec![ev],
        };
        let started = Instant::now();
        loop {
            match rx.recv_timeout(DEBOUNCE) {
                Ok(Signal::Stop) => return Ok(()),
                Ok(Signal::Fs(ev)) => batch.push(ev),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
            if started.elapsed() > MAX_BATCH {
                break;
            }
        }

        let mut changed = BTreeSet::new();
        let mut touched = BTreeSet::new();
        let mut everything = false;
        for ev in batch {
            match ev {
                // Reading a file is not changing it: keyrot's own reads (and git's)
                // raise open/access events, which must not trigger a re-plan.
                Ok(ev) if is_read_only(&ev.kind) => {}
                Ok(ev) if ev.need_rescan() || ev.paths.is_empty() => everything = true,
                Ok(ev) => {
                    for path in ev.paths {
                        let Ok(rel) = path.strip_prefix(&root) else {
                            continue;
                        };
                        let Some(rel) = rel.to_str() else { continue };
                        if rel == ".git" || rel.starts_with(".git/") {
                            continue;
                        }
                        if planner.is_relevant(rel) {
                            changed.insert(rel.to_string());
                            touched.insert(path.clone());
                        }
                    }
                }
                Err(e) => {
                    report(&Outcome::Failed {
                        error: watch_error(e, &root),
                        changed: Vec::new(),
                    });
                    everything = true;
                }
            }
        }
        if changed.is_empty() && !everything {
            continue;
        }
        // A file that came and went within the batch and was never the store's (an
        // editor's or `sed -i`'s temporary file) changed nothing worth naming.
        changed.retain(|rel| root.join(rel).exists() || planner.knows(rel));
        if changed.is_empty() && !everything {
            continue;
        }
        let changed: Vec<String> = changed.into_iter().collect();
        // A changed folder or settings file can change what every path means.
        let wide = everything
            || changed
                .iter()
                .any(|c| c == SETTINGS_FILE || (!c.contains('/') && !ROOT_FILES.contains(&c.as_str())));
        planner.invalidate(if wide { None } else { Some(&changed) });
        let outcome = planner.replan(changed);
        report(&outcome);
        watches.sync(&planner.folders(), &touched)?;
    }
}

#[cfg(test)]
mod tests;
