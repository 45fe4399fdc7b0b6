//! The key store: settings, owners and keys, read from the work tree or a commit.

pub(crate) mod cache;
pub(crate) mod dirty;
pub(crate) mod exceptions;
pub(crate) mod files;
pub mod key;
pub mod layout;
pub(crate) mod live;
pub(crate) mod notify;
pub(crate) mod owners;
mod parse;
pub(crate) mod repo;
pub(crate) mod settings;
pub(crate) mod snapshot;
pub(crate) mod status;

use std::collections::BTreeMap;
use std::sync::Arc;

pub(crate) use cache::Cache;
pub(crate) use exceptions::Exception;
pub use files::{FileEntry, Source};
pub use key::{Key, KeyStatus, Previous};
pub(crate) use live::LiveStore;
pub use owners::{Owner, OwnerStatus};
pub use settings::{Remote, Rollout, Settings};
pub(crate) use snapshot::{Leaf, Snapshot};

use crate::error::Problem;

/// A parsed store. Trust it only when [`Store::load`] reported no problems.
#[derive(Debug)]
pub struct Store {
    pub settings: Settings,
    pub owners: BTreeMap<String, Owner>,
    /// `exceptions.toml`, in file order.
    pub exceptions: Vec<Exception>,
    /// Sorted by id.
    pub keys: Vec<Arc<Key>>,
    /// The policy sources (`policies/*.rhai`), compiled by [`crate::policy`].
    pub policy_files: Vec<FileEntry>,
    /// The policy tests (`policies/*_test.rhai`), run by [`crate::policy::testing`].
    pub policy_tests: Vec<FileEntry>,
    pub policies_digest: String,
    pub keys_digest: String,
}

impl Store {
    /// Reads and parses a whole store. Returns every problem found, in file order,
    /// rather than stopping at the first.
    pub fn load(source: &Source) -> (Store, Vec<Problem>) {
        let read = Store::load_inner(source, Extras::default());
        (read.store, read.problems)
    }

    /// [`Store::load`] of the work tree, with what it saw there: the git blob id of each
    /// file read from the keys and policies folders, and what else those held, so that
    /// [`status::uncommitted`] can tell uncommitted changes without `git status`.
    /// (From a commit there is nothing to see: `None`.)
    pub fn load_seen(source: &Source) -> (Store, Vec<Problem>, Option<status::Seen>) {
        let read = Store::load_inner(
            source,
            Extras {
                leaves: false,
                seen: true,
            },
        );
        (read.store, read.problems, read.seen)
    }

    /// [`Store::load`], with the `extras` asked for.
    fn load_inner(source: &Source, extras: Extras) -> StoreRead {
        let keep_leaves = extras.leaves;
        let mut snap = Snapshot::read_root(source);
        let mut problems = std::mem::take(&mut snap.problems);

        let settings = parse_root(&snap.settings, &mut problems, Settings::parse);
        let owners = parse_root(&snap.owners, &mut problems, owners::parse);
        let exceptions = parse_root(&snap.exceptions, &mut problems, exceptions::parse);

        snap.read_folders(source, &settings.keys_dir, &settings.policies_dir);
        problems.append(&mut snap.problems);

        let cache = source.cache();
        let see = extras.seen && matches!(source, Source::WorkTree(_) | Source::Cached { .. });
        // Each key file's blob id is hashed while its bytes are at hand.
        let parsed = crate::parallel::map(&snap.keys, |f| {
            (
                parse_entry(cache, &settings.keys_dir, f),
                see.then(|| status::blob_id(&f.bytes)),
            )
        });
        let mut keys = Vec::with_capacity(parsed.len());
        let mut key_blobs = Vec::with_capacity(if see { parsed.len() } else { 0 });
        for (p, blob) in parsed {
            key_blobs.extend(blob);
            match p {
                Ok(k) => keys.push(k),
                Err(p) => problems.extend(p),
            }
        }
        keys.sort_by(|a, b| a.id.cmp(&b.id).then_with(|| a.path.cmp(&b.path)));
        problems.extend(duplicate_ids(&keys));
        problems.extend(undeclared_permissions(&settings, &keys, &snap.keys));

        let policies_digest = snap.policies_digest();
        let (keys_digest, leaves) = snap.keys_digest(keep_leaves);
        let leaves = snap.keys.iter().map(|f| f.path.clone()).zip(leaves).collect();
        let seen = see.then(|| {
            // The key files' paths are moved, not copied, and their bytes freed.
            let keys = std::mem::take(&mut snap.keys).into_iter().map(|f| f.path);
            let policies = snap.policies.iter().chain(&snap.policy_tests);
            let mut files: Vec<(String, git2::Oid)> = keys
                .zip(key_blobs)
                .chain(policies.map(|f| (f.path.clone(), status::blob_id(&f.bytes))))
                .collect();
            files.sort_by(|a, b| a.0.cmp(&b.0));
            status::Seen {
                files,
                folders: std::mem::take(&mut snap.folders),
                executable: std::mem::take(&mut snap.executable),
            }
        });
        let store = Store {
            settings,
            owners,
            exceptions,
            keys,
            policy_files: snap.policies,
            policy_tests: snap.policy_tests,
            policies_digest,
            keys_digest,
        };
        StoreRead {
            store,
            problems,
            leaves,
            seen,
        }
    }

    /// Active keys per owner, as stored (before any plan's changes).
    pub fn active_keys_per_owner(&self) -> BTreeMap<&str, i64> {
        let mut counts = BTreeMap::new();
        for k in &self.keys {
            if k.status == KeyStatus::Active {
                *counts.entry(k.owner.as_str()).or_insert(0) += 1;
            }
        }
        counts
    }

    pub fn key(&self, id: &str) -> Option<&Arc<Key>> {
        self.keys
            .binary_search_by(|k| k.id.as_str().cmp(id))
            .ok()
            .map(|i| &self.keys[i])
    }

    /// A key named as a person names it: by id (`binance-bot`), or with its folder
    /// (`trading/binance-bot`, which must then be where the key is).
    pub fn find_key(&self, name: &str) -> Option<&Arc<Key>> {
        match name.rsplit_once('/') {
            None => self.key(name),
            Some((folder, id)) => self.key(id).filter(|k| k.folder == folder),
        }
    }

    /// The store-relative paths whose uncommitted changes matter to keyrot.
    pub fn tracked_paths(&self) -> Vec<String> {
        [self.settings.keys_dir.clone(), self.settings.policies_dir.clone()]
            .into_iter()
            .chain(self.tracked_files())
            .collect()
    }

    /// [`Store::tracked_paths`] that are single files: the root files, and the exec
    /// providers' programs (apply runs them, so they must be what was committed).
    pub fn tracked_files(&self) -> Vec<String> {
        let providers = self.settings.services.values().filter_map(|s| match &s.provider {
            Some(settings::Provider::Exec { program }) => Some(program.clone()),
            _ => None,
        });
        files::ROOT_FILES
            .iter()
            .map(|f| f.to_string())
            .chain(providers)
            .collect()
    }
}

/// What a load can give besides the store (each costs time or memory).
#[derive(Clone, Copy, Default)]
struct Extras {
    /// Each key file's path and digest (`watch`).
    leaves: bool,
    /// What the work tree held (`plan`, `watch` finding every uncommitted path): see
    /// [`Store::load_seen`].
    seen: bool,
}

/// A store as loaded, with its problems and the [`Extras`] asked for.
struct StoreRead {
    store: Store,
    problems: Vec<Problem>,
    leaves: Vec<(String, Leaf)>,
    seen: Option<status::Seen>,
}

/// Parses one optional root file (`keyrot.toml`, `owners.toml`, `exceptions.toml`),
/// adding its problems; what could not be read is its default, so the rest of the
/// store is still checked in the same run.
fn parse_root<T: Default>(
    file: &Option<FileEntry>,
    problems: &mut Vec<Problem>,
    parse: impl FnOnce(&str, &str) -> (T, Vec<Problem>),
) -> T {
    let Some(f) = file else { return T::default() };
    match parse::utf8(&f.path, &f.bytes) {
        Ok(text) => {
            let (value, p) = parse(&f.path, text);
            problems.extend(p);
            value
        }
        Err(p) => {
            problems.push(p);
            T::default()
        }
    }
}

/// Permissions a key holds that its service does not declare (`[service.<name>]
/// permissions` in `keyrot.toml`): a misspelt `withdraw` would slip past every policy
/// that looks for it.
fn undeclared_permissions(settings: &Settings, keys: &[Arc<Key>], files: &[FileEntry]) -> Vec<Problem> {
    let mut problems = Vec::new();
    for key in keys {
        let Some(declared) = settings
            .services
            .get(&key.service)
            .and_then(|s| s.permissions.as_ref())
        else {
            continue;
        };
        for p in key.permissions.iter().filter(|p| !declared.contains(p)) {
            // The key files are sorted by path.
            let text = files
                .binary_search_by(|f| f.path.as_str().cmp(&key.path))
                .ok()
                .and_then(|i| std::str::from_utf8(&files[i].bytes).ok())
                .unwrap_or_default();
            let pos = text
                .find(&format!("\"{p}\""))
                .map(|at| crate::error::line_col(text, at));
            problems.push(Problem::at(
                &key.path,
                pos,
                format!(
                    "permission `{p}` is not one of service {}'s permissions ({}), as declared in keyrot.toml",
                    key.service,
                    declared.join(", ")
                ),
            ));
        }
    }
    problems
}

/// Parses one key file, through `watch`'s cache when reading through it.
fn parse_entry(cache: Option<&Cache>, keys_dir: &str, f: &FileEntry) -> Result<Arc<Key>, Vec<Problem>> {
    let text = parse::utf8(&f.path, &f.bytes).map_err(|p| vec![p])?;
    match cache {
        Some(cache) => cache.parse_key(keys_dir, &f.path, &f.bytes, text),
        None => key::parse_in(keys_dir, &f.path, text).map(Arc::new),
    }
}

/// Two key files with one id (`keys/a/x.toml`, `keys/b/x.toml`), with both paths: an
/// id names one key across the store, in plans, commits and `--key` arguments.
/// `keys` is sorted by id.
fn duplicate_ids(keys: &[Arc<Key>]) -> Vec<Problem> {
    keys.windows(2)
        .filter(|pair| pair[0].id == pair[1].id)
        .map(|pair| {
            Problem::new(
                &pair[1].path,
                format!(
                    "key id `{}` is also the id of {}; ids must be unique across the keys folder and its folders",
                    pair[1].id, pair[0].path
                ),
            )
        })
        .collect()
}
