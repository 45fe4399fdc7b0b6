//! A cache of what was read and parsed from the work tree, for `watch`: after a batch
//! of file events only the invalidated files are re-read, and only key files whose
//! bytes changed are re-parsed. Shared by the loading threads (locks are held only for
//! map lookups and inserts, never while reading or parsing).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::key::{self, Key};
use super::layout::may_be_folder;
use crate::error::Problem;

/// A file as read: its bytes and whether it is executable, or why not.
type ReadResult = super::files::ModeBytes;
/// What a file looked like when it was read: size, modification time, inode. A
/// `stat` raises no file-watch event, unlike the `open` a re-read needs.
type Stamp = Option<(u64, i64, i64, u64)>;
/// A parsed key with the bytes it was parsed from.
type ParsedKey = (Arc<[u8]>, Arc<Key>);

#[derive(Default)]
pub struct Cache {
    files: Mutex<HashMap<String, (ReadResult, Stamp)>>,
    keys: Mutex<HashMap<String, ParsedKey>>,
    /// Blobs read from commits, by id (a blob id names its bytes for good).
    blobs: Mutex<HashMap<git2::Oid, Arc<[u8]>>>,
    reads: AtomicUsize,
    key_parses: AtomicUsize,
}

/// Work done through the cache, for tests and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Files read from disk.
    pub reads: usize,
    /// Key files parsed.
    pub key_parses: usize,
}

fn stamp(path: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(path).ok()?;
    Some((m.len(), m.mtime(), m.mtime_nsec(), m.ino()))
}

/// A poisoned lock only means another loading thread panicked; the map is still a
/// valid cache (at worst missing an entry), so keep using it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Cache {
    /// Forgets one store-relative path, so the next load reads it from disk; for a
    /// path that is not a file read (a folder renamed, replaced or removed as a whole
    /// raises one event, for the folder), every file under it.
    pub fn invalidate(&self, rel: &str) {
        let mut files = lock(&self.files);
        if files.remove(rel).is_none() && may_be_folder(rel) {
            let under = format!("{rel}/");
            files.retain(|path, _| !path.starts_with(&under));
        }
    }

    /// Whether a file under the folder `rel` was read through the cache.
    pub fn contains_under(&self, rel: &str) -> bool {
        let under = format!("{rel}/");
        may_be_folder(rel) && lock(&self.files).keys().any(|path| path.starts_with(&under))
    }

    /// Forgets every file (a settings change, or an event that names no path).
    pub fn invalidate_all(&self) {
        lock(&self.files).clear();
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            reads: self.reads.load(Ordering::Relaxed),
            key_parses: self.key_parses.load(Ordering::Relaxed),
        }
    }

    /// Reads `rel` under `root` through the cache. The stamp is taken before the
    /// read, so a write racing the read shows up as a changed stamp later.
    pub(super) fn read(&self, root: &Path, rel: &str, read: impl FnOnce() -> ReadResult) -> ReadResult {
        if let Some((hit, _)) = lock(&self.files).get(rel) {
            return hit.clone();
        }
        let stamp = stamp(&root.join(rel));
        let fresh = read();
        self.reads.fetch_add(1, Ordering::Relaxed);
        lock(&self.files).insert(rel.to_string(), (fresh.clone(), stamp));
        fresh
    }

    /// Whether `rel` was read through the cache and not invalidated since.
    pub fn contains(&self, rel: &str) -> bool {
        lock(&self.files).contains_key(rel)
    }

    /// Forgets, and returns, every cached file whose size, modification time or inode
    /// changed since it was read (or that appeared or vanished): what a save between
    /// a load and the start of watching changed.
    pub fn revalidate(&self, root: &Path) -> Vec<String> {
        let mut files = lock(&self.files);
        let mut changed: Vec<String> = files
            .iter()
            .filter(|(rel, (_, then))| stamp(&root.join(rel)) != *then)
            .map(|(rel, _)| rel.clone())
            .collect();
        for rel in &changed {
            files.remove(rel);
        }
        changed.sort();
        changed
    }

    /// A blob of a commit through the cache: read once per id.
    pub(super) fn blob(
        &self,
        id: git2::Oid,
        read: impl FnOnce() -> super::files::Bytes,
    ) -> super::files::Bytes {
        if let Some(hit) = lock(&self.blobs).get(&id) {
            return Ok(Some(hit.clone()));
        }
        let fresh = read();
        self.reads.fetch_add(1, Ordering::Relaxed);
        if let Ok(Some(bytes)) = &fresh {
            lock(&self.blobs).insert(id, bytes.clone());
        }
        fresh
    }

    /// Parses a key file, reusing the last parse of the same path and bytes.
    pub(super) fn parse_key(
        &self,
        keys_dir: &str,
        path: &str,
        bytes: &Arc<[u8]>,
        text: &str,
    ) -> Result<Arc<Key>, Vec<Problem>> {
        if let Some((old, parsed)) = lock(&self.keys).get(path) {
            // The same read (no copy was made), or the same bytes read again, in the
            // same folder (a changed `[store] keys` can move where the folder starts).
            let same_folder = parsed.folder == super::layout::key_folder(keys_dir, path);
            if (Arc::ptr_eq(old, bytes) || **old == **bytes) && same_folder {
                return Ok(parsed.clone());
            }
        }
        self.key_parses.fetch_add(1, Ordering::Relaxed);
        let parsed = Arc::new(key::parse_in(keys_dir, path, text)?);
        lock(&self.keys).insert(path.to_string(), (bytes.clone(), parsed.clone()));
        Ok(parsed)
    }
}
