//! The lease: `refs/keyrot/lease` on the shared remote, what Terraform's state lock is,
//! kept where the state already is. It points at a commit (on an empty tree, no
//! parent) whose message names the holder and when the lease expires. It is taken and
//! released only by compare-and-swap pushes, so of two runners only one ever holds it.

use git2::{Oid, Repository};
use serde::Serialize;

use super::git::{Git, Pushed};
use crate::error::{Error, RemoteError, Result};
use crate::time::{Dur, Time};

/// The ref on the remote.
pub(crate) const LEASE_REF: &str = "refs/keyrot/lease";

/// A lease as its commit describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Lease {
    pub id: String,
    /// `user@host pid N`.
    pub holder: String,
    pub expires: Time,
    /// The lease commit.
    #[serde(skip)]
    pub commit: Oid,
}

impl Lease {
    pub(crate) fn live(&self, now: Time) -> bool {
        self.expires > now
    }

    fn message(id: &str, holder: &str, expires: Time) -> String {
        format!("keyrot lease {id}\n\nHolder: {holder}\nExpires: {expires}\n")
    }

    /// Reads a lease commit's message; `None` when it is not one.
    fn parse(commit: Oid, message: &str) -> Option<Lease> {
        let id = message
            .lines()
            .next()?
            .strip_prefix("keyrot lease ")?
            .trim()
            .to_string();
        let field = |name: &str| {
            message
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
        };
        Some(Lease {
            id,
            holder: field("Holder: ")?,
            expires: Time::parse_rfc3339(&field("Expires: ")?).ok()?,
            commit,
        })
    }
}

/// Who this process is, for the lease: `user@host pid N`.
fn holder() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into());
    format!("{user}@{host} pid {}", std::process::id())
}

/// The lease as last fetched (`None`: there is none).
pub(crate) fn current(repo: &Repository, git: &Git) -> Result<Option<Lease>> {
    let Ok(id) = repo.refname_to_id(&git.keyrot_ref("lease")) else {
        return Ok(None);
    };
    let commit = repo
        .find_commit(id)
        .map_err(|e| Error::git("reading the lease", e))?;
    let message = String::from_utf8_lossy(commit.message_bytes()).into_owned();
    Lease::parse(id, &message).map(Some).ok_or_else(|| {
        Error::from(RemoteError::NotALease {
            reference: LEASE_REF.to_string(),
            remote: git.remote.clone(),
            commit: id.to_string(),
        })
    })
}

/// Takes the lease for `duration`: creates it, or replaces an expired one, by a
/// compare-and-swap push. Another runner's live lease is [`Error::Leased`].
pub(crate) fn take(repo: &Repository, git: &Git, duration: Dur) -> Result<Lease> {
    for _ in 0..3 {
        let old = current(repo, git)?;
        let now = Time::now();
        if let Some(l) = old.as_ref().filter(|l| l.live(now)) {
            return Err(leased(l));
        }
        let id = crate::secret::random_hex(8)?;
        let holder = holder();
        let expires = now
            .checked_add(duration)
            .ok_or_else(|| Error::BeyondYear9999("the lease's expiry".into()))?;
        let commit = write_lease_commit(repo, &Lease::message(&id, &holder, expires))?;
        let expect = old.as_ref().map(|l| l.commit.to_string());
        match git.push(&[(Some(&commit.to_string()), LEASE_REF, expect.as_deref())])? {
            Pushed::Done => {
                // Remember it as fetched, so `current` sees it without another fetch.
                set_ref(repo, &git.keyrot_ref("lease"), Some(commit))?;
                return Ok(Lease {
                    id,
                    holder,
                    expires,
                    commit,
                });
            }
            // Someone took or released it meanwhile: look again.
            Pushed::Stale(_) => git.fetch_lease()?,
            Pushed::Refused(why) => return Err(refused("take the lease".into(), why)),
        }
    }
    Err(RemoteError::LeaseContended.into())
}

/// Extends `lease` to `duration` from now, by a compare-and-swap from itself.
pub(crate) fn renew(repo: &Repository, git: &Git, lease: &Lease, duration: Dur) -> Result<Lease> {
    let expires = Time::now()
        .checked_add(duration)
        .ok_or_else(|| Error::BeyondYear9999("the lease's expiry".into()))?;
    let commit = write_lease_commit(repo, &Lease::message(&lease.id, &lease.holder, expires))?;
    let old = lease.commit.to_string();
    match git.push(&[(Some(&commit.to_string()), LEASE_REF, Some(&old))])? {
        Pushed::Done => {
            set_ref(repo, &git.keyrot_ref("lease"), Some(commit))?;
            Ok(Lease {
                expires,
                commit,
                ..lease.clone()
            })
        }
        Pushed::Stale(_) => Err(RemoteError::LeaseLost {
            id: lease.id.clone(),
            nothing_pushed: true,
        }
        .into()),
        Pushed::Refused(why) => Err(refused(format!("renew lease {}", lease.id), why)),
    }
}

/// Releases `lease` if the remote still holds it (a compare-and-swap delete).
pub(crate) fn release(repo: &Repository, git: &Git, lease: &Lease) -> Result<()> {
    match git.push(&[(None, LEASE_REF, Some(&lease.commit.to_string()))])? {
        Pushed::Done => set_ref(repo, &git.keyrot_ref("lease"), None),
        Pushed::Stale(_) => Err(RemoteError::LeaseLost {
            id: lease.id.clone(),
            nothing_pushed: false,
        }
        .into()),
        Pushed::Refused(why) => Err(refused(format!("release lease {}", lease.id), why)),
    }
}

/// `keyrot unlock ID`: removes the remote's lease if it is the one named.
pub(crate) fn unlock(repo: &Repository, git: &Git, id: &str) -> Result<Lease> {
    match current(repo, git)? {
        Some(l) if l.id == id => {
            release(repo, git, &l)?;
            Ok(l)
        }
        Some(l) => Err(RemoteError::LeaseIdDiffers {
            remote: git.remote.clone(),
            held: l.id,
            holder: l.holder,
            given: id.to_string(),
        }
        .into()),
        None => Err(RemoteError::NoLease {
            remote: git.remote.clone(),
        }
        .into()),
    }
}

fn refused(what: String, why: String) -> Error {
    RemoteError::LeaseRefused { what, why }.into()
}

pub(crate) fn leased(l: &Lease) -> Error {
    Error::Leased {
        holder: l.holder.clone(),
        until: l.expires,
        id: l.id.clone(),
    }
}

/// A lease commit: no parent, the empty tree, keyrot as author.
fn write_lease_commit(repo: &Repository, message: &str) -> Result<Oid> {
    let git = |what: &'static str| move |e| Error::git(what, e);
    let tree = repo
        .treebuilder(None)
        .and_then(|b| b.write())
        .map_err(git("writing the lease's tree"))?;
    let tree = repo.find_tree(tree).map_err(git("reading the lease's tree"))?;
    let sig = git2::Signature::now("keyrot", "keyrot@localhost").map_err(git("signing the lease"))?;
    repo.commit(None, &sig, &sig, message, &tree, &[])
        .map_err(git("writing the lease commit"))
}

fn set_ref(repo: &Repository, name: &str, to: Option<Oid>) -> Result<()> {
    let result = match to {
        Some(id) => repo.reference(name, id, true, "keyrot lease").map(drop),
        None => match repo.find_reference(name) {
            Ok(mut r) => r.delete(),
            Err(_) => Ok(()),
        },
    };
    result.map_err(|e| Error::git(format!("updating {name}"), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_message_reads_back() {
        let expires = Time::parse_rfc3339("2026-12-02T10:00:00Z").unwrap();
        let msg = Lease::message("0123abcd", "ci@runner pid 42", expires);
        let lease = Lease::parse(Oid::zero(), &msg).unwrap();
        assert_eq!(lease.id, "0123abcd");
        assert_eq!(lease.holder, "ci@runner pid 42");
        assert_eq!(lease.expires, expires);
        assert!(lease.live(Time::parse_rfc3339("2026-12-02T09:59:59Z").unwrap()));
        assert!(!lease.live(expires));
        assert_eq!(Lease::parse(Oid::zero(), "keyrot apply: 1 rotate"), None);
        assert_eq!(
            Lease::parse(Oid::zero(), "keyrot lease x\n\nHolder: h\nExpires: soon\n"),
            None
        );
    }
}
