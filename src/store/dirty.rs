//! Which of the files keyrot reads differ from HEAD: the one place that answers "why
//! is `dirty` true?". `plan` asks once ([`uncommitted`]); `watch` keeps the answer and
//! asks again only about the paths each save names ([`Tracker`]).

use std::collections::BTreeSet;

use git2::Repository;

use super::repo::{self, HeadFiles};
use super::status::{self, Seen};
use super::Store;
use crate::error::Result;

/// Every uncommitted path among the store's files: from what the load saw in the
/// work tree when that can tell (measured: 0.4 s less than `git status` at 100,000
/// keys), else from git's status.
pub(crate) fn uncommitted(repo: &Repository, store: &Store, seen: Option<&Seen>) -> Result<Vec<String>> {
    let fast = match seen {
        Some(seen) => status::uncommitted(repo, seen, &store.tracked_files())?,
        None => None,
    };
    match fast {
        Some(paths) => Ok(paths),
        None => repo::dirty_paths(repo, &store.tracked_paths()),
    }
}

/// The uncommitted paths, with the HEAD they were compared against (and its files,
/// read when first needed): kept up to date from the paths each batch of saves names,
/// instead of a `git status` over the whole store per save.
#[derive(Default)]
pub(crate) struct Tracker(Option<(Option<String>, BTreeSet<String>, Option<HeadFiles>)>);

impl Tracker {
    /// Whether the paths are known (else the next [`Tracker::paths`] computes them
    /// all, and wants what the load saw to do it quickly).
    pub(crate) fn knows(&self) -> bool {
        self.0.is_some()
    }

    /// Forgets the paths, after a change that can change any path's status.
    pub(crate) fn forget(&mut self) {
        self.0 = None;
    }

    /// The store's uncommitted paths: all of them the first time or after
    /// [`Tracker::forget`]; otherwise only the `changed` ones are asked about again, and
    /// when HEAD moved (a commit, a checkout), also the paths HEAD's files changed at
    /// and the ones that were uncommitted.
    pub(crate) fn paths(
        &mut self,
        repo: &Repository,
        store: &Store,
        changed: &[String],
        worktree: Option<&Seen>,
    ) -> Result<Vec<String>> {
        let head = repo::head_commit(repo)?.map(|c| c.id().to_string());
        let Some((seen, set, files)) = &mut self.0 else {
            return self.all(repo, store, head, worktree);
        };
        let mut ask: BTreeSet<String> = changed.iter().cloned().collect();
        if *seen != head {
            // Only HEAD's files as last read can tell what moved; and a changed ignore
            // or attributes file can change any path's status.
            let Some(head_files) = files else {
                return self.all(repo, store, head, None);
            };
            let moved = head_files.advance(repo)?;
            if moved
                .iter()
                .any(|p| p.ends_with(".gitignore") || p.ends_with(".gitattributes"))
            {
                return self.all(repo, store, head, None);
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
                None => files.insert(HeadFiles::read(repo)?),
            };
            let mut ask_git = Vec::new();
            for c in ask {
                set.remove(&c);
                // Maybe a folder (a team folder renamed or removed as a whole raises
                // one event, for it): git tells what under it is uncommitted.
                if super::layout::may_be_folder(&c) {
                    let under = format!("{c}/");
                    set.retain(|p| !p.starts_with(&under));
                    ask_git.push(c);
                    continue;
                }
                match files.file_changed(repo, &c)? {
                    Some(true) => {
                        set.insert(c);
                    }
                    Some(false) => {}
                    None => ask_git.push(c),
                }
            }
            if !ask_git.is_empty() {
                set.extend(repo::dirty_paths(repo, &ask_git)?);
            }
        }
        Ok(set.iter().cloned().collect())
    }

    fn all(
        &mut self,
        repo: &Repository,
        store: &Store,
        head: Option<String>,
        worktree: Option<&Seen>,
    ) -> Result<Vec<String>> {
        let all = uncommitted(repo, store, worktree)?;
        self.0 = Some((head, all.iter().cloned().collect(), None));
        Ok(all)
    }
}
