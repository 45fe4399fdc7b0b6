//! The file-system side of `watch`: which folders are watched (re-added when an editor
//! re-creates one), which events mean nothing changed, and what a watch error means.

use super::*;
use crate::error::InputError;

pub(super) fn watch_error(e: notify::Error, path: &Path) -> Error {
    let limit = matches!(e.kind, notify::ErrorKind::MaxFilesWatch);
    let why = if limit {
        "the operating system's limit on file watches is reached".to_string()
    } else {
        e.to_string()
    };
    InputError::Watch {
        path: path.to_path_buf(),
        why,
        limit,
    }
    .into()
}

/// Open, read and close-without-writing events: nothing changed on disk.
pub(super) fn is_read_only(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind};
    matches!(kind, EventKind::Access(a) if !matches!(a, AccessKind::Close(AccessMode::Write)))
}

/// Keeps a watch on each existing store folder; re-adds one that was re-created.
pub(super) struct Watches {
    pub(super) watcher: RecommendedWatcher,
    pub(super) watched: BTreeSet<PathBuf>,
}

impl Watches {
    pub(super) fn sync(
        &mut self,
        folders: &[(PathBuf, RecursiveMode)],
        touched: &BTreeSet<PathBuf>,
    ) -> Result<()> {
        for (dir, mode) in folders {
            let exists = dir.is_dir();
            let known = self.watched.contains(dir);
            if known && (!exists || touched.contains(dir)) {
                let _ = self.watcher.unwatch(dir);
                self.watched.remove(dir);
            }
            if exists && !self.watched.contains(dir) {
                self.watcher.watch(dir, *mode).map_err(|e| watch_error(e, dir))?;
                self.watched.insert(dir.clone());
            }
        }
        Ok(())
    }
}
