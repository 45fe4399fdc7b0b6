//! A cache of what was read and parsed from the work tree, for `watch`: after a batch
//! of file events only the invalidated files are re-read, and only key files whose
//! bytes changed are re-parsed.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::Arc;

use super::key::{self, Key};
use crate::error::Problem;

type ReadResult = Result<Option<Vec<u8>>, String>;
/// A parsed key with the bytes it was parsed from.
type ParsedKey = (Vec<u8>, Arc<Key>);

#[derive(Default)]
pub struct Cache {
    files: RefCell<HashMap<String, ReadResult>>,
    keys: RefCell<HashMap<String, ParsedKey>>,
    stats: Cell<CacheStats>,
}

/// Work done through the cache, for tests and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Files read from disk.
    pub reads: usize,
    /// Key files parsed.
    pub key_parses: usize,
}

impl Cache {
    /// Forgets one store-relative path, so the next load reads it from disk.
    pub fn invalidate(&self, rel: &str) {
        self.files.borrow_mut().remove(rel);
    }

    /// Forgets every file (a settings change, or an event that names no path).
    pub fn invalidate_all(&self) {
        self.files.borrow_mut().clear();
    }

    pub fn stats(&self) -> CacheStats {
        self.stats.get()
    }

    pub(super) fn read(&self, rel: &str, read: impl FnOnce() -> ReadResult) -> ReadResult {
        if let Some(hit) = self.files.borrow().get(rel) {
            return hit.clone();
        }
        let fresh = read();
        let mut stats = self.stats.get();
        stats.reads += 1;
        self.stats.set(stats);
        self.files.borrow_mut().insert(rel.to_string(), fresh.clone());
        fresh
    }

    /// Parses a key file, reusing the last parse of the same path and bytes.
    pub(super) fn parse_key(&self, path: &str, bytes: &[u8], text: &str) -> Result<Arc<Key>, Vec<Problem>> {
        if let Some((old, parsed)) = self.keys.borrow().get(path) {
            if old == bytes {
                return Ok(parsed.clone());
            }
        }
        let mut stats = self.stats.get();
        stats.key_parses += 1;
        self.stats.set(stats);
        let parsed = Arc::new(key::parse(path, text)?);
        self.keys
            .borrow_mut()
            .insert(path.to_string(), (bytes.to_vec(), parsed.clone()));
        Ok(parsed)
    }
}
