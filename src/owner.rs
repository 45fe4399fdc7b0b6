//! `keyrot owner depart NAME`: records in `owners.toml` that a person has left (status
//! and `departed_at`), as a commit of its own, so that policies act on the departure
//! once (`key.owner_departed_at`) and the history says who recorded it and when.

use crate::direct_commit::Edit;
use crate::error::{Error, Result, StoreError};
use crate::store::files::OWNERS_FILE;
use crate::store::owners::{self, OwnerStatus};
use crate::store::Settings;
use crate::time::Time;
use crate::workspace::Workspace;

/// What `depart` did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Departure {
    /// Recorded in this commit.
    Recorded { commit: String },
    /// `owners.toml` already said so, with this instant: nothing changed.
    AlreadyRecorded { at: Time },
}

/// Marks owner `name` departed at `at` in `owners.toml` (format-preserving) and commits
/// that file alone. Refuses an owner the file does not list and a file with uncommitted
/// changes (the commit must hold exactly this change).
pub(crate) fn depart(ws: &Workspace, name: &str, at: Time) -> Result<Departure> {
    let path = ws.root.join(OWNERS_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let (owners, problems) = owners::parse(OWNERS_FILE, &text);
    if !problems.is_empty() {
        return Err(Error::Invalid(problems));
    }
    let owner = owners.get(name).ok_or_else(|| {
        Error::from(StoreError::UnknownOwner {
            path: OWNERS_FILE.to_string(),
            name: name.to_string(),
        })
    })?;
    if let (OwnerStatus::Departed, Some(at)) = (owner.status, owner.departed_at) {
        return Ok(Departure::AlreadyRecorded { at });
    }
    let edit = Edit {
        path: OWNERS_FILE.to_string(),
        after: mark_departed(&text, name, at)?,
        before: text,
    };
    let message = format!(
        "keyrot owner: {name} departed\n\nstatus = \"departed\", departed_at = {}\n",
        at.to_rfc3339()
    );
    let commit = crate::direct_commit::commit_edits(
        &ws.repo,
        &ws.root,
        &settings_of(ws),
        OWNERS_FILE,
        &[edit],
        "the departure",
        &message,
    )?;
    Ok(Departure::Recorded { commit })
}

/// The store's settings (for the commit's author and whether it must be signed), else
/// the defaults: a broken keyrot.toml must not keep a departure from being recorded.
fn settings_of(ws: &Workspace) -> Settings {
    std::fs::read_to_string(ws.root.join(crate::store::files::SETTINGS_FILE))
        .map(|text| Settings::parse(crate::store::files::SETTINGS_FILE, &text).0)
        .unwrap_or_default()
}

/// `owners.toml` with `[name]` set to `status = "departed"` and `departed_at = at`,
/// everything else (comments, order, spacing) as it was.
fn mark_departed(text: &str, name: &str, at: Time) -> Result<String> {
    let bad = |why: String| {
        Error::from(StoreError::Edit {
            path: OWNERS_FILE.to_string(),
            why,
        })
    };
    let mut doc: toml_edit::DocumentMut = text.parse().map_err(|e| bad(format!("{e}")))?;
    let table = doc
        .get_mut(name)
        .and_then(toml_edit::Item::as_table_like_mut)
        .ok_or_else(|| bad(format!("`{name}` is not a table")))?;
    let when = at
        .to_toml()
        .map_err(|why| bad(format!("cannot write {at}: {why}")))?;
    for (field, value) in [
        ("status", toml_edit::Value::from("departed")),
        ("departed_at", toml_edit::Value::from(when)),
    ] {
        match table.get_mut(field).and_then(toml_edit::Item::as_value_mut) {
            // Keep the comment and spacing around a value that is replaced.
            Some(old) => {
                let decor = old.decor().clone();
                *old = value;
                *old.decor_mut() = decor;
            }
            None => {
                table.insert(field, toml_edit::Item::Value(value));
            }
        }
    }
    Ok(doc.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_owners_status_and_departure_change() {
        let text = "# people\n[alice]\nstatus = \"active\"   # still here\nteam = \"trading\"\n\n[bob]\nteam = \"ops\"\n";
        let at = Time::parse_rfc3339("2026-12-01T17:30:00Z").unwrap();
        let out = mark_departed(text, "alice", at).unwrap();
        assert_eq!(
            out,
            "# people\n[alice]\nstatus = \"departed\"   # still here\nteam = \"trading\"\ndeparted_at = 2026-12-01T17:30:00Z\n\n[bob]\nteam = \"ops\"\n"
        );
        let out = mark_departed(text, "bob", at).unwrap();
        assert!(
            out.ends_with(
                "[bob]\nteam = \"ops\"\nstatus = \"departed\"\ndeparted_at = 2026-12-01T17:30:00Z\n"
            ),
            "{out}"
        );
        let (owners, problems) = owners::parse(OWNERS_FILE, &out);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(owners["bob"].departed_at, Some(at));
    }
}
