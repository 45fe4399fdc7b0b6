//! Making many small writes durable at once. An apply of 10,000 rotations writes
//! 10,000 secret files and 10,000 key files; an `fsync` each costs a disk flush each
//! (minutes on a slow disk). Instead the files are written, then one `syncfs` flushes
//! the whole filesystem they are on before the step that depends on them.

use std::fs::File;
use std::path::Path;

use crate::error::{Error, Result};

/// Flushes every file written so far on the filesystem holding `path` (a folder),
/// then the folder itself, so new names in it are durable too.
pub(crate) fn sync_filesystem(path: &Path) -> Result<()> {
    let dir = File::open(path).map_err(|e| Error::io(path, e))?;
    rustix::fs::syncfs(&dir).map_err(|e| Error::io(path, e.into()))?;
    dir.sync_all().map_err(|e| Error::io(path, e))
}
