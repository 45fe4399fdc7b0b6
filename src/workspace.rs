//! Loading a store and its policies as one unit, from the work tree or a commit, and
//! planning it. Every command goes through here, so "what keyrot read" is one value.

use std::path::{Path, PathBuf};

use git2::Repository;

use crate::error::{Error, Problem, Result};
use crate::plan::{Plan, Provenance};
use crate::policy::{AstCache, PolicySet};
use crate::progress::Progress;
use crate::store::{repo, Source, Store};
use crate::time::Time;

/// A store and its compiled policies, loaded without a single problem.
pub(crate) struct Loaded {
    pub store: Store,
    pub policies: PolicySet,
}

impl Loaded {
    /// Loads and compiles everything; every problem in every file is reported at once.
    pub(crate) fn from_source(source: &Source, now: Time) -> Result<Loaded> {
        Loaded::from_source_cached(source, now, None)
    }

    /// [`Loaded::from_source`], reusing compiled policies from `asts`.
    pub(crate) fn from_source_cached(source: &Source, now: Time, asts: Option<&AstCache>) -> Result<Loaded> {
        let (store, problems) = Store::load(source);
        let policies = compile_policies(&store, problems, now, asts)?;
        Ok(Loaded { store, policies })
    }

    /// The plan of this store at `now`; `from` says where it was read.
    pub(crate) fn plan(&self, now: Time, from: Provenance, progress: Progress) -> Result<Plan> {
        Plan::make(&self.store, &self.policies, now, from, progress)
    }
}

/// [`Workspace::plan_worktree`]'s answer.
pub(crate) struct WorktreePlan {
    pub plan: Plan,
    /// Uncommitted paths among the files keyrot reads.
    pub dirty: Vec<String>,
    /// See [`crate::policy::PolicySet::warnings`].
    pub warnings: Vec<Problem>,
}

/// Compiles a loaded store's policies (reusing `asts`), after checking its exceptions'
/// dates. `Err` with every problem, the store's own (`problems`) first.
pub(crate) fn compile_policies(
    store: &Store,
    mut problems: Vec<Problem>,
    now: Time,
    asts: Option<&AstCache>,
) -> Result<PolicySet> {
    problems.extend(crate::store::exceptions::beyond_horizon(
        crate::store::files::EXCEPTIONS_FILE,
        &store.exceptions,
        now,
        store.settings.exceptions_max_days,
    ));
    let (policies, policy_problems) =
        PolicySet::compile_cached(&store.policy_files, &store.settings, now, asts);
    problems.extend(policy_problems);
    if !problems.is_empty() {
        return Err(Error::Invalid(problems));
    }
    Ok(policies)
}

/// The store's folder as events and reports name it: its path without the trailing `/`
/// git's work-tree path carries.
pub(crate) fn root_name(root: &Path) -> String {
    let text = root.display().to_string();
    match text.trim_end_matches('/') {
        "" => "/".into(),
        t => t.to_string(),
    }
}

/// An opened store: its git repository and work tree.
pub(crate) struct Workspace {
    pub repo: Repository,
    pub root: PathBuf,
}

impl Workspace {
    pub(crate) fn open(dir: &Path) -> Result<Workspace> {
        let repo = repo::open(dir)?;
        let root = repo::workdir(&repo);
        Ok(Workspace { repo, root })
    }

    pub(crate) fn head_id(&self) -> Result<Option<repo::CommitId>> {
        Ok(repo::head_commit(&self.repo)?.map(|c| c.id().into()))
    }

    /// Loads the work tree as it is on disk.
    pub(crate) fn load_worktree(&self, now: Time) -> Result<Loaded> {
        Loaded::from_source(&Source::WorkTree(self.root.clone()), now)
    }

    /// Loads the store as committed at `commit` (a full SHA).
    pub(crate) fn load_commit(&self, commit: &str, now: Time) -> Result<Loaded> {
        let oid = git2::Oid::from_str(commit).map_err(|e| Error::git("reading a commit id", e))?;
        let commit = self
            .repo
            .find_commit(oid)
            .map_err(|e| Error::git(format!("finding commit {oid}"), e))?;
        let tree = commit
            .tree()
            .map_err(|e| Error::git("reading the commit's tree", e))?;
        Loaded::from_source(
            &Source::Commit {
                repo: &self.repo,
                tree,
                cache: None,
            },
            now,
        )
    }

    /// Uncommitted changes (against HEAD) in the files keyrot reads.
    pub(crate) fn dirty_paths(&self, store: &Store) -> Result<Vec<String>> {
        repo::dirty_paths(&self.repo, &store.tracked_paths())
    }

    /// The plan of the work tree: what `plan` and `watch` show.
    pub(crate) fn plan_worktree(&self, now: Time, progress: Progress) -> Result<WorktreePlan> {
        let (store, problems, seen) = Store::load_seen(&Source::WorkTree(self.root.clone()));
        let policies = compile_policies(&store, problems, now, None)?;
        let loaded = Loaded { store, policies };
        let dirty = crate::store::dirty::uncommitted(&self.repo, &loaded.store, seen.as_ref())?;
        let from = Provenance {
            commit: self.head_id()?,
            dirty: !dirty.is_empty(),
        };
        let plan = loaded.plan(now, from, progress)?;
        Ok(WorktreePlan {
            plan,
            dirty,
            warnings: loaded.policies.warnings().to_vec(),
        })
    }
}
