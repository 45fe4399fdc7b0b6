//! The store as `watch` keeps it between saves. A save usually touches one key file
//! of many thousands: re-listing the keys folder and re-assembling 100,000 keys for it
//! took most of a re-plan. A [`LiveStore`] is patched instead, with only the files a
//! batch of events names; everything else about it is what [`Store::load`] gives.
//!
//! It only ever holds a store that loaded without a problem: a refresh that finds one
//! reports it, and the caller drops the live store and loads the whole store again
//! (which reports every problem, in file order, as any other command would).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use super::files::{self, Source, SETTINGS_FILE};
use super::snapshot::{self, read_key_entry, Leaf, Snapshot};
use super::{exceptions, owners, parse_entry, parse_root, undeclared_permissions, Key, KeyStatus, Store};
use crate::error::Problem;

pub(crate) struct LiveStore {
    store: Store,
    /// Each key file's digest by path, for `keys_digest` without re-hashing them all.
    leaves: BTreeMap<String, Leaf>,
    /// Key ids by owner, every status: a key that joins, leaves or changes status
    /// changes its owner's key count, which all the owner's keys are planned with.
    by_owner: HashMap<String, BTreeSet<String>>,
}

/// What a refresh changed.
#[derive(Debug, Default)]
pub(crate) struct Delta {
    /// Ids of the keys whose file was added, changed or removed.
    pub keys: BTreeSet<String>,
    /// Owners whose count of active keys may have changed (a key added, removed,
    /// moved between owners, or changed from or to `active`).
    pub owners: BTreeSet<String>,
    /// `owners.toml`, `exceptions.toml` or a policy changed: every key's actions may.
    pub rest: bool,
    /// `owners.toml` or `exceptions.toml` changed (not only policies).
    pub roots: bool,
}

impl LiveStore {
    /// Loads the whole store, with every problem found (as [`Store::load`]), and when
    /// `see`, what the work tree held (see [`Store::load_seen`]). Keep it only if there
    /// are no problems.
    pub(crate) fn load(source: &Source, see: bool) -> (LiveStore, Vec<Problem>, Option<super::status::Seen>) {
        let read = Store::load_inner(
            source,
            super::Extras {
                leaves: true,
                seen: see,
            },
        );
        let (store, problems, seen) = (read.store, read.problems, read.seen);
        let leaves = read.leaves.into_iter().collect();
        let mut by_owner: HashMap<String, BTreeSet<String>> = HashMap::new();
        for k in &store.keys {
            by_owner.entry(k.owner.clone()).or_default().insert(k.id.clone());
        }
        let live = LiveStore {
            store,
            leaves,
            by_owner,
        };
        (live, problems, seen)
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// The ids of an owner's keys, every status.
    pub(crate) fn keys_of(&self, owner: &str) -> impl Iterator<Item = &String> {
        self.by_owner.get(owner).into_iter().flatten()
    }

    /// The owner's active keys, as [`Store::active_keys_per_owner`] counts them.
    pub(crate) fn active_keys_of(&self, owner: &str) -> i64 {
        let active = self.keys_of(owner).filter_map(|id| self.store.key(id));
        active.filter(|k| k.status == KeyStatus::Active).count() as i64
    }

    /// The keys a re-plan after `delta` must look at again: the changed ones, and
    /// every key of an owner whose key count may have changed.
    pub(crate) fn affected(&self, delta: &Delta) -> BTreeSet<String> {
        let mut keys = delta.keys.clone();
        for owner in &delta.owners {
            keys.extend(self.keys_of(owner).cloned());
        }
        keys
    }

    /// Whether [`LiveStore::refresh`] can take a change to this store-relative path:
    /// a file in the keys or policies folder, `owners.toml` or `exceptions.toml`. A
    /// changed `keyrot.toml` or folder can change what every file means.
    pub(crate) fn can_refresh(&self, rel: &str) -> bool {
        if rel == SETTINGS_FILE {
            return false;
        }
        if files::ROOT_FILES.contains(&rel) {
            return true;
        }
        let settings = &self.store.settings;
        let inside = |dir: &str| rel.strip_prefix(dir).and_then(|r| r.strip_prefix('/'));
        // A key file at any depth; a folder (listed only by a whole load) is not one.
        inside(&settings.keys_dir).is_some_and(|rest| rest.ends_with(".toml"))
            || inside(&settings.policies_dir).is_some_and(|name| !name.is_empty() && !name.contains('/'))
    }

    /// Re-reads the files named by `changed` (each one [`LiveStore::can_refresh`]
    /// takes) and patches the store with them. `Err`: the store now has problems, and
    /// this live store is no longer consistent with the disk: drop it.
    pub(crate) fn refresh(&mut self, source: &Source, changed: &[String]) -> Result<Delta, Vec<Problem>> {
        debug_assert!(changed.iter().all(|c| self.can_refresh(c)), "{changed:?}");
        let keys_dir = format!("{}/", self.store.settings.keys_dir);
        let (key_paths, rest): (Vec<&String>, Vec<&String>) =
            changed.iter().partition(|c| c.starts_with(&keys_dir));
        let mut problems = Vec::new();
        let mut delta = Delta {
            rest: !rest.is_empty(),
            roots: rest.iter().any(|r| files::ROOT_FILES.contains(&r.as_str())),
            ..Delta::default()
        };
        if delta.rest {
            self.refresh_rest(source, &mut problems);
        }
        for rel in key_paths {
            self.refresh_key(source, rel, &mut delta, &mut problems);
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        if !delta.keys.is_empty() {
            self.store.keys_digest =
                snapshot::keys_digest_of(self.leaves.iter().map(|(p, l)| (p.as_str(), l)));
        }
        Ok(delta)
    }

    /// Re-reads `owners.toml`, `exceptions.toml` and the policies folder (a handful of
    /// small files, through the cache).
    fn refresh_rest(&mut self, source: &Source, problems: &mut Vec<Problem>) {
        let mut snap = Snapshot::read_root(source);
        problems.append(&mut snap.problems);
        let owners = parse_root(&snap.owners, problems, owners::parse);
        let exceptions = parse_root(&snap.exceptions, problems, exceptions::parse);
        snap.read_policies(source, &self.store.settings.policies_dir);
        problems.append(&mut snap.problems);
        let store = &mut self.store;
        store.owners = owners;
        store.exceptions = exceptions;
        store.policies_digest = snap.policies_digest();
        store.policy_files = std::mem::take(&mut snap.policies);
        store.policy_tests = std::mem::take(&mut snap.policy_tests);
    }

    /// Re-reads one key file: adds, replaces or removes its key.
    fn refresh_key(&mut self, source: &Source, rel: &str, delta: &mut Delta, problems: &mut Vec<Problem>) {
        let name = rel.rsplit('/').next().unwrap_or(rel);
        let id = name.strip_suffix(".toml").unwrap_or(name);
        let fresh: Option<Arc<Key>> = match read_key_entry(source, rel) {
            Err(p) => return problems.push(p),
            Ok(None) => None,
            Ok(Some(entry)) => match parse_entry(source.cache(), &self.store.settings.keys_dir, &entry) {
                Err(p) => return problems.extend(p),
                Ok(key) => {
                    problems.extend(undeclared_permissions(
                        &self.store.settings,
                        std::slice::from_ref(&key),
                        std::slice::from_ref(&entry),
                    ));
                    self.leaves.insert(entry.path, snapshot::leaf(&entry.bytes));
                    Some(key)
                }
            },
        };
        let keys = &mut self.store.keys;
        let at = keys.binary_search_by(|k| k.id.as_str().cmp(id));
        if let Ok(i) = at {
            if keys[i].path != rel {
                // Another file holds this id: a duplicate (or a key moved between
                // folders in two steps). A whole load tells which, with both paths.
                if fresh.is_some() {
                    problems.push(Problem::new(
                        rel,
                        format!("key id `{id}` is also the id of {}", keys[i].path),
                    ));
                }
                return;
            }
        }
        let old = match (at, fresh.clone()) {
            (Ok(i), Some(key)) => Some(std::mem::replace(&mut keys[i], key)),
            (Err(i), Some(key)) => {
                keys.insert(i, key);
                None
            }
            (Ok(i), None) => Some(keys.remove(i)),
            (Err(_), None) => None,
        };
        if fresh.is_none() {
            self.leaves.remove(rel);
        }
        let active = |k: &Option<Arc<Key>>| {
            k.as_ref()
                .filter(|k| k.status == KeyStatus::Active)
                .map(|k| k.owner.clone())
        };
        let (was, is) = (active(&old), active(&fresh));
        if was != is {
            delta.owners.extend(was.into_iter().chain(is));
        }
        if let Some(old) = &old {
            if let Some(ids) = self.by_owner.get_mut(&old.owner) {
                ids.remove(id);
                if ids.is_empty() {
                    self.by_owner.remove(&old.owner);
                }
            }
        }
        if let Some(key) = &fresh {
            self.by_owner
                .entry(key.owner.clone())
                .or_default()
                .insert(key.id.clone());
        }
        delta.keys.insert(id.to_string());
    }
}
