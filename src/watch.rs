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

use crate::error::{Error, Result};
use crate::plan::{Memo, Plan, PlanDiff};
use crate::policy::AstCache;
use crate::store::files::{is_editor_artifact, ROOT_FILES, SETTINGS_FILE};
use crate::store::{Cache, Source};
use crate::time::Time;
use crate::workspace::{Loaded, Workspace};

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
    keys_dir: String,
    policies_dir: String,
    /// The last plan's decisions, reused when the instant is fixed (`--now`).
    memo: Memo,
    /// The uncommitted paths, with the HEAD they were compared against: kept up to date
    /// from the paths each batch names, instead of a `git status` over the whole store
    /// per save. `None`: compute them all (at the start, after a wide change).
    dirty: Option<(Option<String>, BTreeSet<String>)>,
}

impl Planner {
    pub fn new(ws: Workspace, fixed_now: Option<Time>) -> Planner {
        Planner {
            ws,
            fixed_now,
            cache: Cache::default(),
            asts: AstCache::default(),
            last_good: None,
            keys_dir: "keys".into(),
            policies_dir: "policies".into(),
            memo: Memo::default(),
            dirty: None,
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
                .is_some_and(|n| n.contains(".rhai") && !n.ends_with(crate::policy::testing::TEST_SUFFIX))
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
            Some(paths) => paths.iter().for_each(|p| self.cache.invalidate(p)),
            None => {
                self.cache.invalidate_all();
                self.dirty = None;
            }
        }
    }

    /// The store's uncommitted paths: all of them the first time, after a wide change,
    /// or when HEAD moved; otherwise only the `changed` ones are asked about again.
    fn dirty_paths(&mut self, store: &crate::store::Store, changed: &[String]) -> Result<Vec<String>> {
        let head = self.ws.head_id()?;
        match &mut self.dirty {
            Some((seen, set)) if *seen == head => {
                if !changed.is_empty() {
                    let now = crate::store::repo::dirty_paths(&self.ws.repo, changed)?;
                    for c in changed {
                        set.remove(c);
                    }
                    set.extend(now);
                }
                Ok(set.iter().cloned().collect())
            }
            _ => {
                let all = self.ws.dirty_paths(store)?;
                self.dirty = Some((head, all.iter().cloned().collect()));
                Ok(all)
            }
        }
    }

    /// Plans the work tree now; remembers the plan if it is good.
    pub fn replan(&mut self, changed: Vec<String>) -> Outcome {
        let now = self.fixed_now.unwrap_or_else(Time::now);
        let loaded = {
            let source = Source::Cached {
                root: self.ws.root.clone(),
                cache: &self.cache,
            };
            Loaded::from_source_cached(&source, now, Some(&self.asts))
        };
        let result = loaded.and_then(|loaded| {
            self.keys_dir = loaded.store.settings.keys_dir.clone();
            self.policies_dir = loaded.store.settings.policies_dir.clone();
            let dirty = self.dirty_paths(&loaded.store, &changed)?;
            let head = self.ws.head_id()?;
            // With a moving clock every decision may change: no memo to keep.
            match self.fixed_now {
                Some(_) => loaded.plan_memo(now, head, !dirty.is_empty(), &mut self.memo),
                None => loaded.plan(now, head, !dirty.is_empty(), None),
            }
        });
        match result {
            Ok(plan) => {
                let plan = Arc::new(plan);
                let diff = self.last_good.as_ref().map(|old| PlanDiff::between(old, &plan));
                if let Some(old) = self.last_good.replace(plan.clone()) {
                    // Freeing a large plan takes a while; the new one need not wait.
                    std::thread::spawn(move || drop(old));
                }
                Outcome::Plan { plan, diff, changed }
            }
            Err(error) => Outcome::Failed { error, changed },
        }
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
        assert_eq!(diff.added[0].key, "k07");
        assert_eq!(p.evaluations(), (6, 19 * 6), "only the edited key re-evaluated");

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
                .0
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
