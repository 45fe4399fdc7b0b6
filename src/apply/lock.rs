//! The store's apply lock: `.git/keyrot/lock`, created exclusively, naming its holder.
//!
//! The compare-and-swap on the branch already guarantees that two applies cannot both
//! land; the lock makes the loser fail early and clearly ("locked by pid N") instead of
//! after generating secrets, and serialises crash recovery. A lock whose process has
//! died on this host is stale and taken over; any other can be removed by id with
//! `keyrot apply --force-unlock ID`, as with Terraform.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{ApplyError, Error, Result};
use crate::time::Time;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Holder {
    pub id: String,
    pub pid: u32,
    pub host: String,
    pub started: String,
}

/// A held lock, released on drop.
#[derive(Debug)]
pub(crate) struct Lock {
    path: PathBuf,
    holder: Holder,
    /// Set when this lock replaced a stale one.
    pub took_over: Option<Holder>,
}

pub(crate) fn keyrot_dir(git_dir: &Path) -> PathBuf {
    git_dir.join("keyrot")
}

fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// Whether the holder's process is gone: only decidable for a holder on this host.
fn is_stale(h: &Holder) -> bool {
    h.host == hostname() && h.pid != 0 && !Path::new(&format!("/proc/{}", h.pid)).exists()
}

/// The lock's holder; `Ok(None)` when there is no lock, an error saying why when
/// there is something at its place that is not a lock keyrot wrote.
fn read_holder(path: &Path) -> std::result::Result<Option<Holder>, String> {
    match crate::state_file::read(path) {
        Ok(None) => Ok(None),
        Ok(Some(bytes)) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("not a keyrot lock: {e}")),
        Err(e) => Err(e.to_string()),
    }
}

impl Lock {
    pub(crate) fn acquire(git_dir: &Path, id: &str) -> Result<Lock> {
        let dir = keyrot_dir(git_dir);
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let path = dir.join("lock");
        let holder = Holder {
            id: id.to_string(),
            pid: std::process::id(),
            host: hostname(),
            started: Time::now().to_rfc3339(),
        };
        // Write the holder to a private file first, then hard-link it into place: the
        // link either fails (held) or makes the lock appear whole, never half-written.
        let tmp = dir.join(format!("lock.{id}.tmp"));
        let body = serde_json::to_vec(&holder).map_err(|e| ApplyError::Encode {
            what: "the lock's holder",
            why: e.to_string(),
        })?;
        crate::state_file::create(&tmp)
            .and_then(|mut f| f.write_all(&body).and_then(|()| f.sync_all()))
            .map_err(|e| Error::io(&tmp, e))?;
        let taken = take(&path, &tmp);
        let _ = fs::remove_file(&tmp);
        let took_over = taken?;
        Ok(Lock {
            path,
            holder,
            took_over,
        })
    }
}

/// Links `tmp` into place as the lock, taking over a stale lock once. Returns the
/// stale holder replaced, if any.
fn take(path: &Path, tmp: &Path) -> Result<Option<Holder>> {
    let mut took_over = None;
    for _ in 0..2 {
        match fs::hard_link(tmp, path) {
            Ok(()) => return Ok(took_over),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let other = match read_holder(path) {
                    Ok(Some(other)) => other,
                    // Gone between the link and the read: try the link again.
                    Ok(None) => continue,
                    Err(why) => {
                        return Err(ApplyError::LockUnreadable {
                            path: path.to_path_buf(),
                            why: why.to_string(),
                        }
                        .into())
                    }
                };
                if !is_stale(&other) {
                    return Err(Error::Locked {
                        pid: other.pid,
                        host: other.host,
                        since: other.started,
                        id: other.id,
                    });
                }
                let _ = fs::remove_file(path);
                took_over = Some(other);
            }
            Err(e) => return Err(Error::io(path, e)),
        }
    }
    Err(ApplyError::LockContended {
        path: path.to_path_buf(),
    }
    .into())
}

impl Drop for Lock {
    fn drop(&mut self) {
        // Only remove the lock if it is still ours (a --force-unlock may have replaced it).
        if read_holder(&self.path).is_ok_and(|h| h.as_ref() == Some(&self.holder)) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Removes the lock if its id is `id`.
pub(crate) fn force_unlock(git_dir: &Path, id: &str) -> Result<Holder> {
    let path = keyrot_dir(git_dir).join("lock");
    match read_holder(&path) {
        Ok(Some(h)) if h.id == id => {
            fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            Ok(h)
        }
        Ok(Some(h)) => Err(ApplyError::LockIdDiffers {
            held: h.id,
            given: id.to_string(),
        }
        .into()),
        Ok(None) => Err(ApplyError::NotLocked.into()),
        Err(why) => Err(ApplyError::LockNotRemoved {
            path,
            why: why.to_string(),
        }
        .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_and_released_on_drop() {
        let tmp = tempfile::TempDir::new().unwrap();
        let a = Lock::acquire(tmp.path(), "a").unwrap();
        let e = Lock::acquire(tmp.path(), "b").unwrap_err().to_string();
        assert!(
            e.contains(&format!("locked by pid {}", std::process::id())),
            "{e}"
        );
        assert!(e.contains("(id a)"), "{e}");
        drop(a);
        Lock::acquire(tmp.path(), "b").unwrap();
    }

    #[test]
    fn a_dead_holders_lock_is_taken_over() {
        let tmp = tempfile::TempDir::new().unwrap();
        let dir = keyrot_dir(tmp.path());
        fs::create_dir_all(&dir).unwrap();
        let dead = Holder {
            id: "old".into(),
            pid: u32::MAX - 1,
            host: hostname(),
            started: "2026-01-01T00:00:00Z".into(),
        };
        fs::write(dir.join("lock"), serde_json::to_vec(&dead).unwrap()).unwrap();
        let lock = Lock::acquire(tmp.path(), "new").unwrap();
        assert_eq!(lock.took_over, Some(dead));
    }

    #[test]
    fn force_unlock_needs_the_right_id() {
        let tmp = tempfile::TempDir::new().unwrap();
        let lock = Lock::acquire(tmp.path(), "abc").unwrap();
        assert!(force_unlock(tmp.path(), "xyz").is_err());
        assert_eq!(force_unlock(tmp.path(), "abc").unwrap().id, "abc");
        drop(lock);
        assert!(force_unlock(tmp.path(), "abc").is_err());
    }
}
