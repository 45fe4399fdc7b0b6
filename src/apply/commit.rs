//! The apply commit: its message, and its tree built from the base tree by replacing
//! only the changed blobs and the trees on their paths.

use std::collections::BTreeMap;

use git2::{Oid, Repository, Tree};

use super::Failure;
use crate::error::{Error, Result};
use crate::plan::{ActionKind, Plan, Summary};
use crate::trailers::{
    is_apply_commit, EXCEPTED, FAILED, NO_PREVIOUS, SUBJECT_PREFIX, TRAILER_FAILED, TRAILER_NOW,
    TRAILER_PLAN, TRAILER_POLICIES, TRAILER_PREVIOUS,
};

/// The apply commit's message: subject, one line per applied action (and warning),
/// then the trailers that tie it to its plan. Keys in `failed` were not applied: they
/// are left out of the counts and listed with `failed` lines and `Keyrot-Failed`.
/// `previous` is the apply commit before this one on the branch, if any.
pub(crate) fn commit_message(plan: &Plan, failed: &[Failure], previous: Option<Oid>) -> String {
    let is_failed = |key: &str| failed.iter().any(|f| f.key == key && !f.after_commit);
    let done: Vec<_> = plan
        .actions
        .iter()
        .filter(|a| !is_failed(&a.key))
        .cloned()
        .collect();
    let s = &Summary::of(&done);
    // Always all four counts, zeros included: one fixed shape for tools that read it.
    let mut msg = format!(
        "{SUBJECT_PREFIX} {} rotate, {} revoke, {} restrict, {} expire\n\n",
        s.rotate, s.revoke, s.restrict, s.expire
    );
    for a in &done {
        if a.superseded_by.is_some() || !(a.action.changes_store() || a.action == ActionKind::Warn) {
            continue;
        }
        let mut reason = a.reason.clone();
        if let Some(fp) = &a.fingerprint {
            reason = format!("{reason} ({fp})");
        }
        if let Some(remove) = &a.remove {
            reason = format!("{reason} (remove {})", remove.join(", "));
        }
        match &a.excepted {
            // Held back, but on the record: who accepted which risk, until when.
            Some(e) => msg.push_str(&format!(
                "{EXCEPTED} {} [{}] {} not applied: {reason} (accepted until {} by {}: {})\n",
                a.key, a.policy, a.action, e.expires, e.approved_by, e.reason
            )),
            None => msg.push_str(&format!("{} {} [{}] {}\n", a.action, a.key, a.policy, reason)),
        }
    }
    for f in failed.iter().filter(|f| is_failed(&f.key)) {
        msg.push_str(&format!(
            "{FAILED} {} [{}] {} not applied: {}\n",
            f.key,
            f.policies.join(","),
            f.actions.join(", "),
            f.error
        ));
    }
    msg.push_str(&format!(
        "\n{TRAILER_PLAN}: {}\n{TRAILER_POLICIES}: {}\n{TRAILER_NOW}: {}\n{TRAILER_PREVIOUS}: {}\n",
        plan.digest(),
        plan.policies_digest,
        plan.now,
        previous.map_or_else(|| NO_PREVIOUS.to_string(), |p| p.to_string())
    ));
    for f in failed.iter().filter(|f| is_failed(&f.key)) {
        msg.push_str(&format!("{TRAILER_FAILED}: {}\n", f.key));
    }
    msg
}

/// The nearest apply commit at or before `from` on the first-parent line: what the
/// next apply commit names as `Keyrot-Previous`.
pub(crate) fn previous_apply(repo: &Repository, from: Oid) -> Result<Option<Oid>> {
    let git = |e| Error::git("walking the history for the previous apply", e);
    let mut walk = repo.revwalk().map_err(git)?;
    walk.simplify_first_parent().map_err(git)?;
    walk.push(from).map_err(git)?;
    for id in walk {
        let id = id.map_err(git)?;
        let commit = repo.find_commit(id).map_err(git)?;
        if is_apply_commit(&String::from_utf8_lossy(commit.message_bytes())) {
            return Ok(Some(id));
        }
    }
    Ok(None)
}

/// A new tree: `base` with each `(path, blob)` written in, touching only the trees on
/// those paths.
pub(crate) fn write_tree(
    repo: &Repository,
    base: Option<&Tree>,
    changes: &[(Vec<&str>, Oid)],
) -> Result<Oid> {
    write_tree_noting(repo, base, changes, &mut Vec::new())
}

/// [`write_tree`], adding each tree it writes to `written` (deepest first).
fn write_tree_noting(
    repo: &Repository,
    base: Option<&Tree>,
    changes: &[(Vec<&str>, Oid)],
    written: &mut Vec<Oid>,
) -> Result<Oid> {
    let git = |e| Error::git("building the commit tree", e);
    let mut builder = repo.treebuilder(base).map_err(git)?;
    let mut sub: BTreeMap<&str, Vec<(Vec<&str>, Oid)>> = BTreeMap::new();
    for (parts, oid) in changes {
        match parts.as_slice() {
            [name] => {
                let mode = base
                    .and_then(|t| t.get_name(name))
                    .map_or(0o100644, |e| e.filemode());
                builder.insert(name, *oid, mode).map_err(git)?;
            }
            [dir, rest @ ..] => sub.entry(dir).or_default().push((rest.to_vec(), *oid)),
            [] => {}
        }
    }
    for (dir, changes) in sub {
        let subtree = base
            .and_then(|t| t.get_name(dir))
            .and_then(|e| repo.find_tree(e.id()).ok());
        let oid = write_tree_noting(repo, subtree.as_ref(), &changes, written)?;
        builder.insert(dir, oid, 0o040000).map_err(git)?;
    }
    let oid = builder.write().map_err(git)?;
    written.push(oid);
    Ok(oid)
}

/// Applies touching at least this many key files write their objects as one pack.
/// Smaller ones write loose objects, as git does, so that everyday applies do not pile
/// up one small pack each (every object lookup searches every pack; git's own
/// `gc --auto` folds loose objects into packs).
const PACK_FROM_FILES: usize = 64;

/// Writes the apply's objects (the changed blobs, the trees on their paths, the commit).
/// A large apply writes them as one pack file rather than one loose file per object:
/// thousands of keys would otherwise create thousands of files in `.git/objects`. Its
/// objects go to an in-memory backend first, then into the pack, which holds exactly
/// them (libgit2's own dump of the backend adds everything the commit reaches: a copy
/// of the whole store per large apply, measured as 25 MB at 100,000 keys). No ref points
/// at them yet either way.
pub(super) fn write_objects(
    repo: &Repository,
    base: Oid,
    edited: &[(String, String)],
    sig: &git2::Signature,
    message: &str,
    signer: Option<&crate::signing::Signer>,
) -> Result<Oid> {
    let git = |what: &'static str| move |e| Error::git(what, e);
    // A private handle: the in-memory backend is attached to its object database only,
    // and goes away with it, so no later write of this process can land in memory.
    let repo = Repository::open(repo.path()).map_err(git("opening the repository"))?;
    let odb = repo.odb().map_err(git("opening the object database"))?;
    let mempack = if edited.len() >= PACK_FROM_FILES {
        Some(
            odb.add_new_mempack_backend(1000)
                .map_err(git("opening an in-memory object store"))?,
        )
    } else {
        None
    };
    let base = repo.find_commit(base).map_err(git("reading the base commit"))?;
    let base_tree = base.tree().map_err(git("reading the base tree"))?;
    let mut changes = Vec::with_capacity(edited.len());
    for (path, text) in edited {
        let oid = repo
            .blob(text.as_bytes())
            .map_err(git("writing a key file blob"))?;
        changes.push((path.split('/').collect::<Vec<_>>(), oid));
    }
    let mut trees = Vec::new();
    let tree_id = write_tree_noting(&repo, Some(&base_tree), &changes, &mut trees)?;
    let tree = repo.find_tree(tree_id).map_err(git("reading the new tree"))?;
    crate::failpoint::fail("apply-write-commit")?;
    let commit = crate::signing::write_commit(&repo, sig, message, &tree, &[&base], signer)?;
    if mempack.is_some() {
        // The commit, its trees, its blobs: in the order packs keep them.
        let mut builder = repo.packbuilder().map_err(git("packing the objects"))?;
        let blobs = changes.iter().map(|(_, oid)| *oid);
        for oid in std::iter::once(commit)
            .chain(trees.into_iter().rev())
            .chain(blobs)
        {
            builder
                .insert_object(oid, None)
                .map_err(git("packing the objects"))?;
        }
        let mut pack = git2::Buf::new();
        builder.write_buf(&mut pack).map_err(git("packing the objects"))?;
        let mut writer = odb.packwriter().map_err(git("writing the pack"))?;
        std::io::Write::write_all(&mut writer, &pack)
            .map_err(|e| Error::io(repo.path().join("objects/pack"), e))?;
        writer.commit().map_err(git("writing the pack"))?;
    }
    Ok(commit)
}
