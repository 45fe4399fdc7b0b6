//! `keyrot audit verify`: re-derives every apply commit on the branch from its parent
//! and `Keyrot-Now`, and checks the commit is exactly that plan applied. A plan is a
//! pure function of (commit, instant), so a reviewer needs to trust only the policies
//! as committed, not whoever ran the apply.

use std::path::PathBuf;

use git2::{Commit, Oid, Repository};
use serde::Serialize;

use crate::error::{Error, InputError, Result};
use crate::signing::{Checker, Status};
use crate::store::repo;
use crate::workspace::Workspace;

use super::walk::Walk;

/// The ref that remembers the last verified tip, so a later run can tell the history
/// it verified was rewritten.
pub(crate) const VERIFIED_REF: &str = "refs/keyrot/verified";

pub(crate) struct Options {
    /// Check only the commits after this one (a commit id or revision).
    pub since: Option<String>,
    pub allowed_signers: Option<PathBuf>,
    pub require_signed: bool,
}

/// One checked commit.
#[derive(Debug, Serialize)]
pub(crate) struct Checked {
    pub commit: String,
    /// `apply` or `manual`.
    pub kind: &'static str,
    pub subject: String,
    /// `Name <email>`.
    pub author: String,
    pub committer: String,
    /// Whether the commit carries a signature at all.
    pub signed: bool,
    /// What the signature is worth: `none`, `good`, `untrusted` or `bad`.
    pub signature: &'static str,
    /// Who signed (`good`), or what is known of the key (`untrusted`).
    pub signer: Option<String>,
    /// `ok`, `manual` or `fail`.
    pub verdict: &'static str,
    pub problems: Vec<String>,
}

#[derive(Debug, Default, Serialize)]
pub(crate) struct Summary {
    pub checked: usize,
    pub apply: usize,
    pub manual: usize,
    pub failed: usize,
    pub signed: usize,
}

#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub branch: String,
    /// The tip that was verified.
    pub tip: Option<String>,
    pub commits: Vec<Checked>,
    pub summary: Summary,
}

impl Report {
    pub(crate) fn ok(&self) -> bool {
        self.summary.failed == 0
    }
}

/// Verifies the current branch's first-parent history (after `since`, when given).
/// On success `refs/keyrot/verified` moves to the tip.
pub(crate) fn verify(ws: &Workspace, opts: &Options) -> Result<Report> {
    let repo = &ws.repo;
    let branch = repo::current_branch(repo)?;
    let branch = branch.strip_prefix("refs/heads/").unwrap_or(&branch).to_string();
    let Some(tip) = repo::head_commit(repo)? else {
        return Ok(Report {
            branch,
            tip: None,
            commits: Vec::new(),
            summary: Summary::default(),
        });
    };
    let tip = tip.id();
    check_not_rewritten(repo, tip)?;
    let checker = Checker::from_config(repo, opts.allowed_signers.clone()).map_err(InputError::Signers)?;
    if opts.require_signed && !checker.has_allowed_signers() {
        return Err(InputError::NoTrustedSigners.into());
    }
    let since = match &opts.since {
        Some(rev) => Some(resolve(repo, rev)?),
        None => None,
    };
    let chain = first_parent_chain(repo, tip, since)?;

    let mut walk = Walk::new(repo);
    if let Some(since) = since {
        walk.start_after(since)?;
    }

    let mut report = Report {
        branch,
        tip: Some(tip.to_string()),
        commits: Vec::new(),
        summary: Summary::default(),
    };
    for id in chain {
        let commit = find(repo, id)?;
        let Some(mut checked) = walk.commit(&commit)? else {
            continue;
        };
        let status = checker.check(repo, &commit);
        if opts.require_signed && !matches!(status, Status::Good(_)) {
            checked.problems.push(match &status {
                Status::None => "not signed".to_string(),
                Status::Untrusted(who) => format!("signed by {who}, who is not an allowed signer"),
                Status::Bad(why) => format!("bad signature: {why}"),
                Status::Good(_) => String::new(),
            });
        }
        checked.signed = status != Status::None;
        checked.signature = status.word();
        checked.signer = status.signer().map(str::to_string);
        if !checked.problems.is_empty() {
            checked.verdict = "fail";
        }
        let s = &mut report.summary;
        s.checked += 1;
        match (checked.kind, checked.verdict) {
            (_, "fail") => s.failed += 1,
            ("apply", _) => s.apply += 1,
            _ => s.manual += 1,
        }
        if checked.signed {
            s.signed += 1;
        }
        report.commits.push(checked);
    }
    if report.ok() {
        repo.reference(VERIFIED_REF, tip, true, "keyrot audit verify")
            .map_err(|e| Error::git(format!("recording the verified tip in {VERIFIED_REF}"), e))?;
    }
    Ok(report)
}

/// Refuses when the tip verified last time is no longer in the branch's history.
fn check_not_rewritten(repo: &Repository, tip: Oid) -> Result<()> {
    let Ok(verified) = repo.refname_to_id(VERIFIED_REF) else {
        return Ok(());
    };
    let kept = verified == tip
        || repo
            .graph_descendant_of(tip, verified)
            .map_err(|e| Error::git("comparing the branch with the verified tip", e))?;
    if kept {
        Ok(())
    } else {
        Err(Error::HistoryRewritten {
            since: verified.to_string(),
            reference: VERIFIED_REF.to_string(),
        })
    }
}

fn resolve(repo: &Repository, rev: &str) -> Result<Oid> {
    repo.revparse_single(rev)
        .and_then(|o| o.peel_to_commit())
        .map(|c| c.id())
        .map_err(|e| {
            InputError::UnknownCommit {
                rev: rev.to_string(),
                why: e.message().to_string(),
            }
            .into()
        })
}

pub(super) fn find<'r>(repo: &'r Repository, id: Oid) -> Result<Commit<'r>> {
    repo.find_commit(id)
        .map_err(|e| Error::git(format!("reading commit {id}"), e))
}

pub(super) fn message(commit: &Commit) -> String {
    String::from_utf8_lossy(commit.message_bytes()).into_owned()
}

/// The first-parent line from the root (or after `since`) to `tip`, oldest first.
fn first_parent_chain(repo: &Repository, tip: Oid, since: Option<Oid>) -> Result<Vec<Oid>> {
    let mut chain = Vec::new();
    let mut at = Some(tip);
    while let Some(id) = at {
        if Some(id) == since {
            return Ok(chain.into_iter().rev().collect());
        }
        chain.push(id);
        at = find(repo, id)?.parent_ids().next();
    }
    match since {
        Some(s) => Err(InputError::NotOnFirstParent { rev: s.to_string() }.into()),
        None => Ok(chain.into_iter().rev().collect()),
    }
}

/// `Name <email>` of a commit's author or committer.
pub(super) fn person(sig: &git2::Signature) -> String {
    format!(
        "{} <{}>",
        String::from_utf8_lossy(sig.name_bytes()),
        String::from_utf8_lossy(sig.email_bytes())
    )
}
