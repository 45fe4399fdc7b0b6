//! Keeping the store's repository small, without anyone running `git gc`.
//!
//! Every commit writes the trees on the changed files' paths anew: with 100,000 keys in
//! one folder, a one-key apply writes a 2.7 MB keys tree (a plain `git commit` does the
//! same), and libgit2 never packs or collects. A store applied daily would grow by about
//! a gigabyte of loose objects a year. So after each commit keyrot looks at the loose
//! objects (a listing of `objects/??/`: about a millisecond when they are few, which
//! this keeps them) and, once they pass [`LOOSE_BYTES`] or [`LOOSE_OBJECTS`], has git
//! pack them with deltas, where one version of a tree costs a few bytes next to the
//! last.
//!
//! The packing is `git repack -d --geometric=2`: the loose objects go into a new pack,
//! which is merged with the smallest packs until each pack holds at least twice the
//! objects of all smaller ones. The number of packs stays logarithmic (`log KEY`
//! searches every pack index per object: a thousand packs made it 3.3 times slower),
//! each object is rewritten O(log n) times over the store's life, and the merged packs
//! delta each tree against its neighbours. As each pack still holds one tree in full,
//! the small packs are folded into one with the rest once they hold a quarter of the
//! largest pack's bytes ([`CONSOLIDATE`]). Git writes a pack and its index under
//! temporary names, renames them into place, and only then removes what they replace:
//! a crash at any point leaves every object readable.

use std::fs;
use std::process::{Command, Stdio};

use git2::Repository;

use crate::store::Settings;

/// Loose object bytes (as stored, compressed) that trigger packing: with 100,000
/// keys in one folder, every third one-key apply; with them in 1,000 folders (30 KB
/// per apply), every ~250th.
pub(crate) const LOOSE_BYTES: u64 = 8 << 20;

/// Loose objects that trigger packing whatever their size: git's own `gc.auto`.
pub(crate) const LOOSE_OBJECTS: usize = 6700;

/// The smaller packs are folded into one with the largest once they hold 1/this of its
/// bytes.
const CONSOLIDATE_AT: u64 = 4;

/// What the object database holds outside packs, and how many packs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Health {
    pub loose_objects: usize,
    pub loose_bytes: u64,
    pub packs: usize,
    /// The largest pack's size, and all the others' together, in bytes.
    pub largest_pack: u64,
    pub other_packs: u64,
}

impl Health {
    /// Whether the loose objects are past what [`after_commit`] lets pile up.
    pub(crate) fn needs_packing(&self) -> bool {
        self.loose_bytes >= LOOSE_BYTES || self.loose_objects >= LOOSE_OBJECTS
    }

    /// Whether the packs besides the largest hold a quarter of its bytes: time to fold
    /// them all into one (see [`consolidate`]).
    pub(crate) fn needs_consolidating(&self) -> bool {
        self.packs > 1 && self.other_packs.saturating_mul(CONSOLIDATE_AT) >= self.largest_pack
    }
}

/// Counts the loose objects (`objects/[0-9a-f]{2}/*`) and packs of a repository.
pub(crate) fn health(repo: &Repository) -> std::io::Result<Health> {
    let objects = repo.commondir().join("objects");
    let mut health = Health::default();
    for entry in fs::read_dir(&objects)? {
        let entry = entry?;
        let name = entry.file_name();
        let is_fanout = name.len() == 2
            && name
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_hexdigit()));
        if !is_fanout {
            continue;
        }
        for object in fs::read_dir(entry.path())? {
            let object = object?;
            // Git's temporary files (`tmp_obj_*`) are not objects yet.
            if object.file_name().len() == 38 {
                health.loose_objects += 1;
                health.loose_bytes += object.metadata()?.len();
            }
        }
    }
    match fs::read_dir(objects.join("pack")) {
        Ok(packs) => {
            for p in packs {
                let p = p?;
                if p.file_name().to_str().is_some_and(|n| n.ends_with(".pack")) {
                    health.packs += 1;
                    let bytes = p.metadata()?.len();
                    health.other_packs += bytes.min(health.largest_pack);
                    health.largest_pack = health.largest_pack.max(bytes);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    Ok(health)
}

/// What a round of maintenance did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Packed {
    pub before: Health,
    pub after: Health,
}

impl std::fmt::Display for Packed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "packed {} loose objects ({:.1} MiB) with git repack; {} pack{} now",
            self.before.loose_objects,
            self.before.loose_bytes as f64 / f64::from(1 << 20),
            self.after.packs,
            if self.after.packs == 1 { "" } else { "s" }
        )
    }
}

/// After a commit: packs the loose objects when they are past the thresholds and
/// `[store] maintenance` is on. `Ok(None)`: nothing to do. An `Err` is for a warning
/// only: the commit stands, and the next commit tries again.
pub(crate) fn after_commit(repo: &Repository, settings: &Settings) -> Result<Option<Packed>, String> {
    if !settings.maintenance {
        return Ok(None);
    }
    let before = health(repo).map_err(|e| format!("cannot look at the store's objects: {e}"))?;
    if !before.needs_packing() {
        return Ok(None);
    }
    repack(repo, GEOMETRIC)?;
    let mut after = health(repo).map_err(|e| format!("cannot look at the store's objects: {e}"))?;
    if after.needs_consolidating() {
        repack(repo, CONSOLIDATE)?;
        after = health(repo).map_err(|e| format!("cannot look at the store's objects: {e}"))?;
    }
    Ok(Some(Packed { before, after }))
}

/// [`after_commit`] as a note for the user: what was packed, or why packing failed
/// (the commit stands, and the next commit tries again); `None` when there was
/// nothing to do.
pub(crate) fn note_after_commit(repo: &Repository, settings: &Settings) -> Option<String> {
    match after_commit(repo, settings) {
        Ok(packed) => packed.map(|p| p.to_string()),
        Err(why) => Some(format!(
            "the store's loose objects were not packed ({why}); the next commit tries again (or run `git gc`)"
        )),
    }
}

/// The routine packing: the loose objects into a new pack, merged with the smallest
/// packs while the sizes (by object count) do not double from one to the next.
const GEOMETRIC: &[&str] = &["--geometric=2"];

/// Geometric merging counts objects, and a store's few new objects per apply include
/// whole trees (2.7 MB for a folder of 100,000 keys): small packs each hold one such
/// tree in full, and so would pile up. Once they hold a quarter of the largest pack's
/// bytes, every reachable object goes into one pack (existing deltas reused, the new
/// trees stored as deltas of each other) and the unreachable ones into a cruft pack,
/// as `git gc` does: nothing is deleted that a concurrent apply may still point a
/// branch at.
const CONSOLIDATE: &[&str] = &["--cruft"];

/// `git repack -d <how>` (see the module's documentation), quietly, without the bitmap
/// index or the multi-pack index a server would want.
fn repack(repo: &Repository, how: &[&str]) -> Result<(), String> {
    crate::failpoint::pause("maintenance-repack");
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(repo.path())
        .args(["repack", "-d", "-q", "--no-write-bitmap-index"])
        .args(how)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run git repack: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "git repack failed: {}",
            err.lines().next().unwrap_or("no message").trim()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Writes incompressible blobs into the repository at `dir` until its loose objects
    /// are past the thresholds.
    fn fill_past(dir: &Path) {
        let repo = Repository::open(dir).unwrap();
        let mut n = 0u64;
        while !health(&repo).unwrap_or_default().needs_packing() {
            // Incompressible, so that bytes reach the threshold.
            let blob: Vec<u8> = (0..64 * 1024u64)
                .map(|i| (i.wrapping_mul(0x9E37_79B9).wrapping_add(n * 7919) >> 7) as u8)
                .collect();
            repo.blob(&blob).unwrap();
            n += 1;
        }
    }

    #[test]
    fn small_packs_are_consolidated_at_a_quarter_of_the_largest() {
        let h = |packs, largest_pack, other_packs| Health {
            packs,
            largest_pack,
            other_packs,
            ..Health::default()
        };
        assert!(h(3, 100, 25).needs_consolidating());
        assert!(!h(3, 100, 24).needs_consolidating());
        assert!(!h(1, 100, 0).needs_consolidating());
    }

    #[test]
    fn loose_objects_past_the_threshold_are_packed_and_stay_readable() {
        let tmp = tempfile::TempDir::new().unwrap();
        let repo = Repository::init(tmp.path()).unwrap();
        let first = repo.blob(b"one").unwrap();
        let small = health(&repo).unwrap_or_default();
        assert_eq!((small.loose_objects, small.packs), (1, 0));
        assert!(!small.needs_packing());
        assert_eq!(after_commit(&repo, &Settings::default()), Ok(None));

        fill_past(tmp.path());
        let off = Settings {
            maintenance: false,
            ..Settings::default()
        };
        assert_eq!(after_commit(&repo, &off), Ok(None), "turned off");
        let packed = after_commit(&repo, &Settings::default())
            .unwrap()
            .expect("past the threshold, something is packed");
        assert!(packed.before.needs_packing());
        assert_eq!(packed.after.loose_objects, 0);
        assert_eq!(packed.after.packs, 1);
        let repo = Repository::open(tmp.path()).unwrap();
        assert_eq!(
            repo.find_blob(first).map(|b| b.content().to_vec()).ok(),
            Some(b"one".to_vec())
        );
    }
}
