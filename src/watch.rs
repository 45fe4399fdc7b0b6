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
use crate::plan::{Memo, Plan, PlanDiff};
use crate::policy::AstCache;
use crate::store::files::{is_editor_artifact, ROOT_FILES, SETTINGS_FILE};
use crate::store::live::Delta;
use crate::store::repo::HeadFiles;
use crate::store::status::{self, Seen};
use crate::store::{Cache, LiveStore, Source, Store};
use crate::time::Time;
use crate::workspace::{compile_policies, Workspace};

/// Events closer together than this are one batch (an editor's save is several).
pub const DEBOUNCE: Duration = Duration::from_millis(50);
/// A steady stream of events still yields a plan this often.
pub const MAX_BATCH: Duration = Duration::from_millis(500);

/// What the watcher's channel carries.
pub enum Signal {
    Fs(notify::Result<notify::Event>),
    /// Ctrl-C or SIGTERM: finish and return.
    Stop,
}

/// One re-plan's result.
pub enum Outcome {
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

/// Plans the work tree again and again, through caches.
pub struct Planner {
    ws: Workspace,
    fixed_now: Option<Time>,
    cache: Cache,
    asts: AstCache,
    /// Shared with the last outcome: a 100k-key plan is not worth copying per save.
    last_good: Option<Arc<Plan>>,
    /// Whether `last_good` is the plan of `live` as it stands (no re-plan failed since).
    synced: bool,
    keys_dir: String,
    policies_dir: String,
    /// The last plan's decisions, reused when the instant is fixed (`--now`).
    memo: Memo,
    dirty: Dirty,
    /// The store as last loaded without a problem, patched with the files each batch
    /// names; `None` after a problem or a change that can change every file's meaning.
    live: Option<LiveStore>,
    /// Paths invalidated since the last re-plan: what the live store must re-read.
    pending: BTreeSet<String>,
    /// Changed paths not yet asked about for the dirty flag (a failed re-plan stops
    /// before asking).
    unasked: BTreeSet<String>,
    /// The policies' warnings as last shown, and those to show with the next plan
    /// (shown again only when they change, not at every save).
    warned: Vec<Problem>,
    fresh_warnings: Vec<Problem>,
}

/// What bringing the live store up to date found besides the store itself.
#[derive(Default)]
struct Loading {
    /// What a refresh changed; `None` after a whole load.
    delta: Option<Delta>,
    problems: Vec<crate::error::Problem>,
    /// What a whole load saw in the work tree, when asked for.
    seen: Option<Seen>,
}

/// The uncommitted paths, with the HEAD they were compared against (and its files,
/// read when first needed): kept up to date from the paths each batch names, instead
/// of a `git status` over the whole store per save. `None`: compute them all (at the
/// start, after a wide change).
#[derive(Default)]
struct Dirty(Option<(Option<String>, BTreeSet<String>, Option<HeadFiles>)>);

impl Dirty {
    /// The store's uncommitted paths: all of them the first time or after a wide change;
    /// otherwise only the `changed` ones are asked about again, and when HEAD moved
    /// (a commit, a checkout), also the paths HEAD's files changed at and the ones
    /// that were uncommitted.
    fn paths(
        &mut self,
        ws: &Workspace,
        store: &Store,
        changed: &[String],
        worktree: Option<&Seen>,
    ) -> Result<Vec<String>> {
        let head = ws.head_id()?;
        let Some((seen, set, files)) = &mut self.0 else {
            return self.all(ws, store, head, worktree);
        };
        let mut ask: BTreeSet<String> = changed.iter().cloned().collect();
        if *seen != head {
            // Only HEAD's files as last read can tell what moved; and a changed ignore
            // or attributes file can change any path's status.
            let Some(head_files) = files else {
                return self.all(ws, store, head, None);
            };
            let moved = head_files.advance(&ws.repo)?;
            if moved
                .iter()
                .any(|p| p.ends_with(".gitignore") || p.ends_with(".gitattributes"))
            {
                return self.all(ws, store, head, None);
            }
            let tracked = store.tracked_paths();
            let is_tracked = |p: &str| {
                tracked.iter().any(|t| {
                    p == t
                        || p.strip_prefix(t.as_str())
                            .is_some_and(|rest| rest.starts_with('/'))
                })
            };
            ask.extend(moved.into_iter().filter(|p| is_tracked(p)));
            ask.append(set);
            *seen = head;
        }
        if !ask.is_empty() {
            let files = match files {
                Some(f) => f,
                None => files.insert(HeadFiles::read(&ws.repo)?),
            };
            let mut ask_git = Vec::new();
            for c in ask {
                set.remove(&c);
                match files.file_changed(&ws.repo, &c)? {
                    Some(true) => {
                        set.insert(c);
                    }
                    Some(false) => {}
                    None => ask_git.push(c),
                }
            }
            if !ask_git.is_empty() {
                set.extend(crate::store::repo::dirty_paths(&ws.repo, &ask_git)?);
            }
        }
        Ok(set.iter().cloned().collect())
    }

    /// Every uncommitted path: from what the load saw in the work tree when it can
    /// tell (as `plan` does), else from `git status`.
    fn all(
        &mut self,
        ws: &Workspace,
        store: &Store,
        head: Option<String>,
        worktree: Option<&Seen>,
    ) -> Result<Vec<String>> {
        let fast = match worktree {
            Some(seen) => status::uncommitted(&ws.repo, seen, &store.tracked_files())?,
            None => None,
        };
        let all = match fast {
            Some(all) => all,
            None => ws.dirty_paths(store)?,
        };
        self.0 = Some((head, all.iter().cloned().collect(), None));
        Ok(all)
    }
}

impl Planner {
    pub fn new(ws: Workspace, fixed_now: Option<Time>) -> Planner {
        Planner {
            ws,
            fixed_now,
            cache: Cache::default(),
            asts: AstCache::default(),
            last_good: None,
            synced: false,
            keys_dir: "keys".into(),
            policies_dir: "policies".into(),
            memo: Memo::default(),
            dirty: Dirty::default(),
            live: None,
            pending: BTreeSet::new(),
            unasked: BTreeSet::new(),
            warned: Vec::new(),
            fresh_warnings: Vec::new(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.ws.root
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    pub fn asts(&self) -> &AstCache {
        &self.asts
    }

    /// (key, policy) evaluations run and reused by the last re-plan.
    pub fn evaluations(&self) -> (usize, usize) {
        self.memo.last_counts
    }

    /// The folders to watch: the store root (settings, owners), keys and policies.
    pub fn folders(&self) -> [PathBuf; 3] {
        [
            self.ws.root.clone(),
            self.ws.root.join(&self.keys_dir),
            self.ws.root.join(&self.policies_dir),
        ]
    }

    /// Whether a change at this store-relative path can change the plan.
    pub fn is_relevant(&self, rel: &str) -> bool {
        if ROOT_FILES.contains(&rel) || rel == self.keys_dir || rel == self.policies_dir {
            return true;
        }
        let in_dir = |dir: &str| {
            rel.strip_prefix(dir)
                .and_then(|r| r.strip_prefix('/'))
                .filter(|name| !name.contains('/') && !is_editor_artifact(name))
        };
        in_dir(&self.keys_dir).is_some()
            || in_dir(&self.policies_dir)
                .is_some_and(|n| n.contains(".rhai") && !crate::store::layout::is_policy_test(n))
    }

    /// After the watches are in place: the files that changed since the first load
    /// (by `stat`, which raises no event) and the new ones in the store's folders.
    pub fn changed_since_load(&self) -> Vec<String> {
        let mut changed = self.cache.revalidate(&self.ws.root);
        let known: std::collections::HashSet<String> = changed.iter().cloned().collect();
        for dir in [&self.keys_dir, &self.policies_dir] {
            let Ok(entries) = std::fs::read_dir(self.ws.root.join(dir)) else {
                continue;
            };
            for entry in entries.flatten() {
                let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                let rel = format!("{dir}/{name}");
                // Only what a load reads: key files and policies (not policy tests).
                let read_by_load =
                    name.ends_with(".toml") || (name.ends_with(".rhai") && !name.ends_with("_test.rhai"));
                if read_by_load
                    && self.is_relevant(&rel)
                    && !self.cache.contains(&rel)
                    && !known.contains(&rel)
                {
                    changed.push(rel);
                }
            }
        }
        changed
    }

    /// Forgets the cached reads of these paths (`None`: of everything).
    pub fn invalidate(&mut self, paths: Option<&[String]>) {
        match paths {
            Some(paths) => {
                paths.iter().for_each(|p| self.cache.invalidate(p));
                self.pending.extend(paths.iter().cloned());
            }
            None => {
                self.cache.invalidate_all();
                self.dirty = Dirty::default();
                self.live = None;
            }
        }
    }

    /// Plans the work tree now; remembers the plan if it is good.
    pub fn replan(&mut self, changed: Vec<String>) -> Outcome {
        let now = self.fixed_now.unwrap_or_else(Time::now);
        let result = self.plan(now, &changed);
        self.synced = result.is_ok();
        match result {
            Ok((plan, diff)) => Outcome::Plan {
                plan,
                diff,
                changed,
                warnings: std::mem::take(&mut self.fresh_warnings),
            },
            Err(error) => Outcome::Failed { error, changed },
        }
    }

    fn plan(&mut self, now: Time, changed: &[String]) -> Result<(Arc<Plan>, Option<PlanDiff>)> {
        let pending: Vec<String> = std::mem::take(&mut self.pending).into_iter().collect();
        // The store: the live one patched with the files that changed when it can take
        // them all, else loaded whole (which reports every problem, as `plan` would).
        // What the work tree held is needed only when every uncommitted path is to be
        // found (the first plan, after a wide change): then it spares a `git status`.
        let see = self.dirty.0.is_none();
        let (live, read) = {
            let source = Source::Cached {
                root: self.ws.root.clone(),
                cache: &self.cache,
            };
            let refreshed = self.live.take().and_then(|mut live| {
                if !pending.iter().all(|p| live.can_refresh(p)) {
                    return None;
                }
                let delta = live.refresh(&source, &pending).ok()?;
                Some((live, delta))
            });
            match refreshed {
                Some((live, delta)) => (
                    live,
                    Loading {
                        delta: Some(delta),
                        ..Loading::default()
                    },
                ),
                None => {
                    let (live, problems, seen) = LiveStore::load(&source, see);
                    (
                        live,
                        Loading {
                            delta: None,
                            problems,
                            seen,
                        },
                    )
                }
            }
        };
        let store_ok = read.problems.is_empty();
        let result = self.plan_store(&live, read, now, changed, &pending);
        if store_ok {
            self.live = Some(live);
        } else {
            // Freeing 100,000 keys takes a while; the report need not wait for it.
            std::thread::spawn(move || drop(live));
        }
        result
    }

    fn plan_store(
        &mut self,
        live: &LiveStore,
        read: Loading,
        now: Time,
        changed: &[String],
        pending: &[String],
    ) -> Result<(Arc<Plan>, Option<PlanDiff>)> {
        let Loading {
            delta,
            problems,
            seen,
        } = read;
        let store = live.store();
        // Asked about at the first re-plan that gets that far, even if this one fails.
        self.unasked.extend(changed.iter().chain(pending).cloned());
        let policies = compile_policies(store, problems, now, Some(&self.asts))?;
        if policies.warnings() != self.warned.as_slice() {
            self.warned = policies.warnings().to_vec();
            self.fresh_warnings = self.warned.clone();
        }
        self.keys_dir = store.settings.keys_dir.clone();
        self.policies_dir = store.settings.policies_dir.clone();
        let asked: Vec<String> = self.unasked.iter().cloned().collect();
        let dirty = !self
            .dirty
            .paths(&self.ws, store, &asked, seen.as_ref())?
            .is_empty();
        // A path and blob id per file: not needed for planning.
        drop(seen);
        self.unasked.clear();
        let head = self.ws.head_id()?;
        // The instant is fixed and the last plan is this store's before the batch:
        // update it in place. After key files changed, re-plan those keys (and their
        // owners' other keys); after policies changed, re-evaluate every key by those
        // policies only, and re-plan the keys whose decisions changed.
        let base = (self.fixed_now.is_some() && self.synced)
            .then_some(delta.as_ref())
            .flatten();
        if let (Some(delta), Some(last)) = (base, self.last_good.as_mut()) {
            let plan = Arc::make_mut(last);
            let diff = if !delta.rest {
                let keys = live.affected(delta);
                let count = |owner: &str| live.active_keys_of(owner);
                self.memo.replan_keys(plan, store, &policies, now, &keys, count)?
            } else if !delta.roots && delta.keys.is_empty() {
                self.memo.replan_policies(plan, store, &policies, now)?
            } else {
                None
            };
            if let Some(diff) = diff {
                plan.store_commit = head;
                plan.dirty = dirty;
                plan.keys_digest = store.keys_digest.clone();
                plan.policies_digest = store.policies_digest.clone();
                return Ok((last.clone(), Some(diff)));
            }
        }
        // With a moving clock every decision may change: no memo to keep.
        let memo = self.fixed_now.map(|_| &mut self.memo);
        let plan = Arc::new(Plan::make_memo(store, &policies, now, head, dirty, None, memo)?);
        let diff = self.last_good.as_ref().map(|old| PlanDiff::between(old, &plan));
        if let Some(old) = self.last_good.replace(plan.clone()) {
            // Freeing a large plan takes a while; the new one need not wait.
            std::thread::spawn(move || drop(old));
        }
        Ok((plan, diff))
    }
}

fn watch_error(e: notify::Error, path: &Path) -> Error {
    if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) {
        return Error::Usage(format!(
            "cannot watch {}: the operating system's limit on file watches is reached\n  hint: raise it, e.g. `sudo sysctl fs.inotify.max_user_watches=524288` (persist it in /etc/sysctl.d/)",
            path.display()
        ));
    }
    Error::Usage(format!("cannot watch {}: {e}", path.display()))
}

/// Open, read and close-without-writing events: nothing changed on disk.
fn is_read_only(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind};
    matches!(kind, EventKind::Access(a) if !matches!(a, AccessKind::Close(AccessMode::Write)))
}

/// Keeps a watch on each existing store folder; re-adds one that was re-created.
struct Watches {
    watcher: RecommendedWatcher,
    watched: BTreeSet<PathBuf>,
}

impl Watches {
    fn sync(&mut self, folders: &[PathBuf], touched: &BTreeSet<PathBuf>) -> Result<()> {
        for dir in folders {
            let exists = dir.is_dir();
            let known = self.watched.contains(dir);
            if known && (!exists || touched.contains(dir)) {
                let _ = self.watcher.unwatch(dir);
                self.watched.remove(dir);
            }
            if exists && !self.watched.contains(dir) {
                self.watcher
                    .watch(dir, RecursiveMode::NonRecursive)
                    .map_err(|e| watch_error(e, dir))?;
                self.watched.insert(dir.clone());
            }
        }
        Ok(())
    }
}

/// Runs the watch loop until a [`Signal::Stop`] arrives: reports the first plan, then
/// one [`Outcome`] per batch of relevant changes. `tx` is the sending side of `rx`,
/// handed to the file watcher.
pub fn run(
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
mod tests {
    use super::*;
    use std::fs;

    fn store() -> (tempfile::TempDir, Planner) {
        let tmp = tempfile::TempDir::new().unwrap();
        let root = tmp.path().join("s");
        crate::init::init(&root, false, Time::now()).unwrap();
        let ws = Workspace::open(&root).unwrap();
        (
            tmp,
            Planner::new(ws, Some(Time::parse_rfc3339("2026-11-22T20:00:00Z").unwrap())),
        )
    }

    fn write_key(p: &Planner, id: &str, rotated: &str) {
        fs::write(
            p.root().join(format!("keys/{id}.toml")),
            format!("service = \"x\"\nowner = \"a\"\npermissions = []\nip_allowlist = [\"10.0.0.1/32\"]\ncreated_at = {rotated}\nlast_used_at = 2026-11-22T00:00:00Z\n"),
        )
        .unwrap();
    }

    #[test]
    fn the_watch_limit_error_says_how_to_raise_it() {
        let e = watch_error(
            notify::Error::new(notify::ErrorKind::MaxFilesWatch),
            Path::new("/s/keys"),
        );
        let msg = e.to_string();
        assert!(msg.contains("limit on file watches"), "{msg}");
        assert!(msg.contains("fs.inotify.max_user_watches"), "{msg}");
    }

    #[test]
    fn relevance_follows_the_store_layout() {
        let (_tmp, p) = store();
        for yes in [
            "keyrot.toml",
            "owners.toml",
            "keys/a.toml",
            "keys/notes.txt",
            "exceptions.toml",
            "policies/x.rhai",
            "keys",
        ] {
            assert!(p.is_relevant(yes), "{yes}");
        }
        for no in [
            "README.md",
            "keys/.a.toml.swp",
            "keys/a.toml~",
            "keys/#a.toml#",
            "keys/4913",
            "keys/a.toml.keyrot-tmp",
            "policies/notes.md",
            "policies/x_test.rhai",
            "keys/sub/a.toml",
        ] {
            assert!(!p.is_relevant(no), "{no}");
        }
    }

    #[test]
    fn a_replan_rereads_and_reparses_only_invalidated_files() {
        let (_tmp, mut p) = store();
        for i in 0..20 {
            write_key(&p, &format!("k{i:02}"), "2026-11-01T00:00:00Z");
        }
        assert!(matches!(p.replan(vec![]), Outcome::Plan { .. }));
        let first = p.cache().stats();
        let compiles = p.asts().compiles();
        assert_eq!(first.key_parses, 20);
        assert_eq!(compiles, 6);

        write_key(&p, "k07", "2026-01-01T00:00:00Z");
        p.invalidate(Some(&["keys/k07.toml".to_string()]));
        let Outcome::Plan { diff, .. } = p.replan(vec!["keys/k07.toml".into()]) else {
            panic!("plan failed")
        };
        let stats = p.cache().stats();
        assert_eq!(stats.reads - first.reads, 1, "one file re-read");
        assert_eq!(stats.key_parses - first.key_parses, 1, "one file re-parsed");
        assert_eq!(p.asts().compiles(), compiles, "no policy recompiled");
        let diff = diff.unwrap();
        assert_eq!(diff.added.len(), 1);
        assert_eq!(&*diff.added[0].key, "k07");
        // Its owner's key count is unchanged: no other key is even looked at.
        assert_eq!(p.evaluations(), (6, 0), "only the edited key re-evaluated");

        fs::write(p.root().join("policies/max-age.rhai"), "fn evaluate(key) { }").unwrap();
        p.invalidate(Some(&["policies/max-age.rhai".to_string()]));
        assert!(matches!(p.replan(vec![]), Outcome::Plan { .. }));
        assert_eq!(
            p.asts().compiles(),
            compiles + 1,
            "only the edited policy recompiled"
        );
        assert_eq!(
            p.evaluations(),
            (20, 20 * 5),
            "only the edited policy re-evaluated"
        );
    }

    /// The dirty flag, kept from the paths each batch names, matches a full status.
    #[test]
    fn the_dirty_flag_follows_edits_reverts_and_commits() {
        let (_tmp, mut p) = store();
        let replan = |p: &mut Planner, path: &str| -> bool {
            let changed = [path.to_string()];
            p.invalidate(Some(&changed));
            match p.replan(changed.to_vec()) {
                Outcome::Plan { plan, .. } => plan.dirty,
                Outcome::Failed { error, .. } => panic!("{error}"),
            }
        };
        let Outcome::Plan { plan, .. } = p.replan(vec![]) else {
            panic!()
        };
        assert!(!plan.dirty);
        write_key(&p, "a", "2026-11-01T00:00:00Z");
        assert!(replan(&mut p, "keys/a.toml"), "a new key file is uncommitted");
        let policy = p.root().join("policies/idle.rhai");
        let original = fs::read(&policy).unwrap();
        fs::write(&policy, "fn evaluate(key) { }").unwrap();
        assert!(replan(&mut p, "policies/idle.rhai"));
        fs::remove_file(p.root().join("keys/a.toml")).unwrap();
        assert!(replan(&mut p, "keys/a.toml"), "the policy is still edited");
        fs::write(&policy, &original).unwrap();
        assert!(!replan(&mut p, "policies/idle.rhai"), "back to HEAD");
        // A commit moves HEAD: the next re-plan compares everything again, not just
        // the paths it names.
        fs::write(&policy, "fn evaluate(key) { }").unwrap();
        assert!(replan(&mut p, "policies/idle.rhai"));
        let git = |args: &[&str]| {
            let ok = std::process::Command::new("git")
                .current_dir(p.root())
                .args(["-c", "user.name=t", "-c", "user.email=t@t"])
                .args(args)
                .status()
                .unwrap()
                .success();
            assert!(ok, "git {args:?}");
        };
        git(&["add", "-A"]);
        git(&["commit", "-qm", "b"]);
        assert!(!replan(&mut p, "keys/b.toml"));
    }

    /// Plans through the memo are the plans a full evaluation gives, edit after edit.
    #[test]
    fn memoised_replans_equal_full_plans() {
        let (_tmp, mut p) = store();
        let now = Time::parse_rfc3339("2026-11-22T20:00:00Z").unwrap();
        let full = |p: &Planner| {
            Workspace::open(p.root())
                .unwrap()
                .plan_worktree(now, None)
                .unwrap()
                .plan
        };
        for i in 0..8 {
            write_key(&p, &format!("k{i}"), "2026-11-01T00:00:00Z");
        }
        let edits: [(&str, &str); 6] = [
            ("keys/k3.toml", "service = \"x\"\nowner = \"a\"\npermissions = [\"withdraw\"]\ncreated_at = 2026-01-01T00:00:00Z\n"),
            ("owners.toml", "[a]\nstatus = \"departed\"\n"),
            ("keys/k9.toml", "service = \"x\"\nowner = \"a\"\npermissions = []\ncreated_at = 2026-11-01T00:00:00Z\nlast_used_at = 2026-11-20T00:00:00Z\n"),
            ("policies/key-cap.rhai", "fn evaluate(key) { if key.owner_key_count > 8 { warn(\"many\") } }"),
            ("keyrot.toml", "[policy.idle]\nmax_idle_days = 5\n"),
            ("keys/k1.toml", "service = \"x\"\nowner = \"b\"\npermissions = []\ncreated_at = 2026-11-01T00:00:00Z\nlast_used_at = 2026-11-22T00:00:00Z\n"),
        ];
        let Outcome::Plan { plan, .. } = p.replan(vec![]) else {
            panic!()
        };
        assert_eq!(plan.actions, full(&p).actions);
        for (path, text) in edits {
            fs::write(p.root().join(path), text).unwrap();
            let changed = [path.to_string()];
            p.invalidate(if path.contains('/') { Some(&changed) } else { None });
            let Outcome::Plan { plan, .. } = p.replan(vec![path.to_string()]) else {
                panic!("{path}: plan failed")
            };
            assert_eq!(plan.actions, full(&p).actions, "after editing {path}");
        }
    }

    /// A small seeded generator: the edit sequences must be the same on every run.
    struct XorShift(u64);

    impl rand::RngCore for XorShift {
        fn next_u64(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn next_u32(&mut self) -> u32 {
            (self.next_u64() >> 32) as u32
        }
        fn fill_bytes(&mut self, dst: &mut [u8]) {
            dst.iter_mut().for_each(|b| *b = self.next_u32() as u8);
        }
    }

    /// A policy whose findings name the owner's key count, so that every change of a
    /// count changes the plan of each of the owner's keys.
    fn count_policy(limit: i64) -> String {
        format!(
            "fn evaluate(key) {{ let out = []; if key.owner_key_count > {limit} {{ out.push(warn(`${{key.owner_key_count}} keys`)) }} if key.age > days({limit}) {{ out.push(rotate(\"old\")) }} out }}"
        )
    }

    /// A seeded random edit of a small store: keys (every field that matters, added,
    /// removed, broken, renamed), owners, exceptions, policies and stray files.
    fn random_edit(rng: &mut impl rand::Rng, root: &Path) -> Vec<String> {
        let pick =
            |rng: &mut dyn rand::RngCore, list: &[&'static str]| list[rng.next_u32() as usize % list.len()];
        let write = |rel: &str, text: String| fs::write(root.join(rel), text).unwrap();
        // Broken files are mended soon, as people do: most plans should succeed.
        if rng.random_bool(0.5) {
            if root.join("keys/notes.txt").exists() {
                fs::remove_file(root.join("keys/notes.txt")).unwrap();
                return vec!["keys/notes.txt".into()];
            }
            for i in 0..12 {
                let rel = format!("keys/k{i}.toml");
                if fs::read(root.join(&rel)).is_ok_and(|b| b.ends_with(b"owner = ")) {
                    fs::remove_file(root.join(&rel)).unwrap();
                    return vec![rel];
                }
            }
        }
        let id = format!("k{}", rng.random_range(0..12));
        let path = format!("keys/{id}.toml");
        match rng.random_range(0..14) {
            0..=4 => {
                let owner = pick(rng, &["a", "b", "c", "gone"]);
                let status = pick(rng, &["active", "active", "active", "revoked"]);
                let perms = pick(
                    rng,
                    &["[]", "[\"read\"]", "[\"withdraw\"]", "[\"read\", \"withdraw\"]"],
                );
                let allow = pick(rng, &["[]", "[\"10.0.0.1/32\"]"]);
                let rotated = pick(
                    rng,
                    &[
                        "2026-11-21T00:00:00Z",
                        "2026-10-01T00:00:00Z",
                        "2026-01-01T00:00:00Z",
                    ],
                );
                let used = pick(
                    rng,
                    &[
                        "",
                        "last_used_at = 2026-11-22T00:00:00Z\n",
                        "last_used_at = 2026-06-01T00:00:00Z\n",
                    ],
                );
                let compromised = pick(rng, &["false", "false", "false", "true"]);
                let revoked = if status == "revoked" {
                    "revoked_at = 2026-11-01T00:00:00Z\n"
                } else {
                    ""
                };
                write(&path, format!(
                    "service = \"x\"\nowner = \"{owner}\"\nstatus = \"{status}\"\npermissions = {perms}\nip_allowlist = {allow}\ncreated_at = 2025-01-01T00:00:00Z\nrotated_at = {rotated}\n{used}compromised = {compromised}\n{revoked}"
                ));
                vec![path]
            }
            5 => {
                let _ = fs::remove_file(root.join(&path));
                vec![path]
            }
            6 => {
                write(&path, "service = \"x\"\nowner = ".into());
                vec![path]
            }
            7 => {
                let to = format!("keys/k{}.toml", rng.random_range(0..12));
                let _ = fs::rename(root.join(&path), root.join(&to));
                vec![path, to]
            }
            8 => {
                let team = pick(rng, &["red", "blue"]);
                let b = pick(rng, &["active", "departed"]);
                write(
                    "owners.toml",
                    format!("[a]\nteam = \"{team}\"\n[b]\nstatus = \"{b}\"\n[c]\n"),
                );
                vec!["owners.toml".into()]
            }
            9 => {
                let policy = pick(rng, &["idle", "least-privilege", "max-age"]);
                write(
                    "exceptions.toml",
                    format!("[[exception]]\nkey = \"{id}\"\npolicy = \"{policy}\"\nreason = \"r\"\napproved_by = \"x\"\nexpires = 2026-12-01\n"),
                );
                vec!["exceptions.toml".into()]
            }
            10 => {
                let limit = rng.random_range(1..4);
                let policy = pick(rng, &["policies/key-cap.rhai", "policies/extra.rhai"]);
                write(policy, count_policy(limit));
                vec![policy.into()]
            }
            11 => {
                // A commit of everything: HEAD moves, no file changes.
                commit_all(root);
                vec![]
            }
            12 => {
                // `git reset --soft HEAD~`: HEAD moves back, index and files stay, so what
                // the last commit held is uncommitted again.
                let repo = git2::Repository::open(root).unwrap();
                let head = repo.head().unwrap().peel_to_commit().unwrap();
                if let Ok(parent) = head.parent(0) {
                    repo.reset(parent.as_object(), git2::ResetType::Soft, None)
                        .unwrap();
                }
                vec![]
            }
            _ => {
                write("keys/notes.txt", "hello".into());
                vec!["keys/notes.txt".into()]
            }
        }
    }

    fn commit_all(root: &Path) {
        crate::store::repo::testing::commit_all(&git2::Repository::open(root).unwrap());
    }

    /// Plans patched in place, edit after edit, are the plans `keyrot plan` makes of
    /// the same files: actions, summary, digests, dirty flag; each diff is the
    /// difference between the two full plans; and the JSON line patched with each diff
    /// is the full plan's JSON.
    #[test]
    fn live_replans_equal_full_plans_edit_after_edit() {
        for seed in 1..5u64 {
            let (_tmp, mut p) = store();
            let now = p.fixed_now.unwrap();
            let full = |p: &Planner| {
                Workspace::open(p.root())
                    .unwrap()
                    .plan_worktree(now, None)
                    .map(|w| (w.plan, w.dirty))
            };
            let mut rng = XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            fs::write(p.root().join("policies/key-cap.rhai"), count_policy(1)).unwrap();
            let Outcome::Plan { plan, .. } = p.replan(vec![]) else {
                panic!("first plan failed")
            };
            let mut last_good = (*plan).clone();
            // What `watch --json` prints, patched key by key.
            let mut line = crate::plan_line::PlanLine::default();
            let print = |line: &mut crate::plan_line::PlanLine, plan: &Plan, diff: Option<&PlanDiff>| {
                let mut out = Vec::new();
                line.write(plan, diff, &mut out).unwrap();
                String::from_utf8(out).unwrap()
            };
            print(&mut line, &plan, None);
            let (mut plans, mut failures) = (0, 0);
            for step in 0..60 {
                let changed = random_edit(&mut rng, p.root());
                p.invalidate(Some(&changed));
                let outcome = p.replan(changed.clone());
                let expected = full(&p);
                match (outcome, expected) {
                    (Outcome::Plan { plan, diff, .. }, Ok((want, _))) => {
                        assert_eq!(*plan, want, "seed {seed}, step {step}: after {changed:?}");
                        let diff = diff.unwrap();
                        let json = print(&mut line, &plan, Some(&diff));
                        assert_eq!(
                            json,
                            serde_json::to_string(&want).unwrap(),
                            "seed {seed}, step {step}"
                        );
                        let want_diff = PlanDiff::between(&last_good, &want);
                        let sorted = |mut v: Vec<crate::plan::Action>| {
                            v.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
                            v
                        };
                        assert_eq!(
                            sorted(diff.added),
                            sorted(want_diff.added),
                            "seed {seed}, step {step}"
                        );
                        assert_eq!(
                            sorted(diff.removed),
                            sorted(want_diff.removed),
                            "seed {seed}, step {step}"
                        );
                        last_good = want;
                        plans += 1;
                    }
                    (Outcome::Failed { error, .. }, Err(want)) => {
                        assert_eq!(error.to_string(), want.to_string(), "seed {seed}, step {step}");
                        failures += 1;
                    }
                    (Outcome::Plan { .. }, Err(e)) => {
                        panic!("seed {seed}, step {step}: planned, but plan fails: {e}")
                    }
                    (Outcome::Failed { error, .. }, Ok(_)) => {
                        panic!("seed {seed}, step {step}: failed, but plan works: {error}")
                    }
                }
            }
            assert!(
                plans > 20 && failures > 3,
                "seed {seed}: {plans} plans, {failures} failures"
            );
        }
    }

    #[test]
    fn saves_between_the_first_load_and_the_watches_are_found_by_stat() {
        let (_tmp, mut p) = store();
        write_key(&p, "a", "2026-11-01T00:00:00Z");
        write_key(&p, "b", "2026-11-01T00:00:00Z");
        assert!(matches!(p.replan(vec![]), Outcome::Plan { .. }));
        assert!(p.changed_since_load().is_empty(), "nothing changed yet");
        // An edit (different size), a deletion, a new key and a new policy.
        fs::write(p.root().join("keys/a.toml"), "# edited\n").unwrap();
        fs::remove_file(p.root().join("keys/b.toml")).unwrap();
        write_key(&p, "c", "2026-11-01T00:00:00Z");
        fs::write(p.root().join("policies/new.rhai"), "fn evaluate(key) { }").unwrap();
        fs::write(p.root().join("policies/new_test.rhai"), "fn test_x() { }").unwrap();
        let mut got = p.changed_since_load();
        got.sort();
        assert_eq!(
            got,
            ["keys/a.toml", "keys/b.toml", "keys/c.toml", "policies/new.rhai"]
        );
    }

    #[test]
    fn a_bad_edit_fails_and_the_next_good_one_diffs_against_the_last_good_plan() {
        let (_tmp, mut p) = store();
        write_key(&p, "a", "2026-11-01T00:00:00Z");
        assert!(matches!(p.replan(vec![]), Outcome::Plan { .. }));
        fs::write(p.root().join("policies/bad.rhai"), "fn evaluate(key) {").unwrap();
        p.invalidate(None);
        assert!(matches!(p.replan(vec![]), Outcome::Failed { .. }));
        fs::write(
            p.root().join("policies/bad.rhai"),
            "fn evaluate(key) { warn(\"hi\") }",
        )
        .unwrap();
        p.invalidate(None);
        let Outcome::Plan { diff, .. } = p.replan(vec![]) else {
            panic!()
        };
        assert_eq!(diff.unwrap().added.len(), 1);
    }
}
