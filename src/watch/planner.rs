//! The planner behind `watch`: keeps the store, the compiled policies, the uncommitted
//! paths and the last plan, and re-plans through them with each batch of changed
//! files, so a save re-reads and re-evaluates only what it can have changed.

use super::*;

/// Plans the work tree again and again, through caches.
pub(crate) struct Planner {
    ws: Workspace,
    pub(super) fixed_now: Option<Time>,
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
    dirty: crate::store::dirty::Tracker,
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

impl Planner {
    pub(crate) fn new(ws: Workspace, fixed_now: Option<Time>) -> Planner {
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
            dirty: crate::store::dirty::Tracker::default(),
            live: None,
            pending: BTreeSet::new(),
            unasked: BTreeSet::new(),
            warned: Vec::new(),
            fresh_warnings: Vec::new(),
        }
    }

    pub(crate) fn root(&self) -> &Path {
        &self.ws.root
    }

    #[cfg(test)]
    pub(crate) fn cache(&self) -> &Cache {
        &self.cache
    }

    #[cfg(test)]
    pub(crate) fn asts(&self) -> &AstCache {
        &self.asts
    }

    /// (key, policy) evaluations run and reused by the last re-plan.
    #[cfg(test)]
    pub(crate) fn evaluations(&self) -> (usize, usize) {
        self.memo.last_counts
    }

    /// The folders to watch: the store root (settings, owners), the keys folder with
    /// its team folders at any depth, and the policies folder.
    pub(crate) fn folders(&self) -> [(PathBuf, RecursiveMode); 3] {
        [
            (self.ws.root.clone(), RecursiveMode::NonRecursive),
            (self.ws.root.join(&self.keys_dir), RecursiveMode::Recursive),
            (self.ws.root.join(&self.policies_dir), RecursiveMode::NonRecursive),
        ]
    }

    /// Whether the last load read this store-relative path (or, for a folder, a file
    /// in it).
    pub(crate) fn knows(&self, rel: &str) -> bool {
        self.cache.contains(rel) || self.cache.contains_under(rel)
    }

    /// Whether a change at this store-relative path can change the plan.
    pub(crate) fn is_relevant(&self, rel: &str) -> bool {
        if ROOT_FILES.contains(&rel) || rel == self.keys_dir || rel == self.policies_dir {
            return true;
        }
        let in_dir = |dir: &str| rel.strip_prefix(dir).and_then(|r| r.strip_prefix('/'));
        in_dir(&self.keys_dir).is_some_and(is_in_keys_folder)
            || in_dir(&self.policies_dir)
                .filter(|name| !name.contains('/') && !is_editor_artifact(name))
                .is_some_and(|n| {
                    matches!(
                        policy_folder_file(n),
                        PolicyFolderFile::Policy | PolicyFolderFile::Misnamed
                    )
                })
    }

    /// After the watches are in place: the files that changed since the first load
    /// (by `stat`, which raises no event) and the new ones in the store's folders.
    pub(crate) fn changed_since_load(&self) -> Vec<String> {
        let mut changed = self.cache.revalidate(&self.ws.root);
        let known: std::collections::HashSet<String> = changed.iter().cloned().collect();
        // The keys folder's team folders too (as a load lists them: no symbolic links).
        let mut dirs = vec![self.keys_dir.clone(), self.policies_dir.clone()];
        while let Some(dir) = dirs.pop() {
            let Ok(entries) = std::fs::read_dir(self.ws.root.join(&dir)) else {
                continue;
            };
            for entry in entries.flatten() {
                let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                let rel = format!("{dir}/{name}");
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    if self.is_relevant(&rel) && rel.starts_with(&format!("{}/", self.keys_dir)) {
                        dirs.push(rel);
                    }
                    continue;
                }
                // Only what a load reads: key files and policies (not policy tests).
                let read_by_load =
                    name.ends_with(".toml") || policy_folder_file(&name) == PolicyFolderFile::Policy;
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
    pub(crate) fn invalidate(&mut self, paths: Option<&[String]>) {
        match paths {
            Some(paths) => {
                paths.iter().for_each(|p| self.cache.invalidate(p));
                self.pending.extend(paths.iter().cloned());
            }
            None => {
                self.cache.invalidate_all();
                self.dirty.forget();
                self.live = None;
            }
        }
    }

    /// Plans the work tree now; remembers the plan if it is good.
    pub(crate) fn replan(&mut self, changed: Vec<String>) -> Outcome {
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
        let see = !self.dirty.knows();
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
            .paths(&self.ws.repo, store, &asked, seen.as_ref())?
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
        let from = Provenance { commit: head, dirty };
        let plan = Arc::new(Plan::make_memo(store, &policies, now, from, None, memo)?);
        let diff = self.last_good.as_ref().map(|old| PlanDiff::between(old, &plan));
        if let Some(old) = self.last_good.replace(plan.clone()) {
            // Freeing a large plan takes a while; the new one need not wait.
            std::thread::spawn(move || drop(old));
        }
        Ok((plan, diff))
    }
}
