//! The system `git`, run as a child process for everything that talks to a remote, so
//! the user's credential helpers, SSH agent, `insteadOf` rules and proxies apply as
//! they do for `git push` (keyrot stores no credentials; libgit2 would know none of them).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{RemoteError, Result};

/// What a push did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pushed {
    Done,
    /// A ref was not at the value expected of it (`--force-with-lease`): someone else
    /// moved it. Names the refs that were.
    Stale(Vec<String>),
    /// The remote refused (a hook, permissions, a protected branch) or could not be
    /// reached: git's own words.
    Refused(String),
}

/// `git -C <work tree>` with the remote's name, for one store.
pub(crate) struct Git {
    root: PathBuf,
    pub remote: String,
}

impl Git {
    pub(crate) fn new(root: &Path, remote: &str) -> Git {
        Git {
            root: root.to_path_buf(),
            remote: remote.to_string(),
        }
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new("git");
        cmd.arg("-C")
            .arg(&self.root)
            // A scheduled run has nobody to answer a password prompt: fail instead.
            .env("GIT_TERMINAL_PROMPT", "0")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `git args…`; `Err` with git's message when it fails.
    fn run(&self, args: &[&str], what: &str) -> Result<String> {
        let out = self
            .command()
            .args(args)
            .output()
            .map_err(|e| RemoteError::cannot_run_git(&e))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(RemoteError::Git {
                what: what.to_string(),
                why: one_line(&String::from_utf8_lossy(&out.stderr)),
            }
            .into())
        }
    }

    /// Fetches `branch` into `refs/remotes/<remote>/<branch>` and every keyrot ref
    /// (the lease) into `refs/keyrot/remote/<remote>/…`, dropping those the remote no
    /// longer has.
    pub(crate) fn fetch(&self, branch: &str) -> Result<()> {
        let heads = format!("+refs/heads/{branch}:{}", self.tracking(branch));
        self.fetch_refs(
            Some(&heads),
            &format!("cannot fetch {branch} from {}", self.remote),
        )
    }

    /// Fetches only keyrot's refs (the lease).
    pub(crate) fn fetch_lease(&self) -> Result<()> {
        self.fetch_refs(None, &format!("cannot fetch the lease from {}", self.remote))
    }

    fn fetch_refs(&self, heads: Option<&str>, what: &str) -> Result<()> {
        let keyrot = format!("+refs/keyrot/*:refs/keyrot/remote/{}/*", self.remote);
        let mut args = vec![
            "fetch",
            "--quiet",
            "--no-tags",
            "--prune",
            "--no-write-fetch-head",
            "--",
            &self.remote,
        ];
        args.extend(heads);
        args.push(&keyrot);
        self.run(&args, what).map(drop)
    }

    /// Where [`Git::fetch`] puts the remote's branch.
    pub(crate) fn tracking(&self, branch: &str) -> String {
        format!("refs/remotes/{}/{branch}", self.remote)
    }

    /// Where [`Git::fetch`] puts the remote's `refs/keyrot/<name>`.
    pub(crate) fn keyrot_ref(&self, name: &str) -> String {
        format!("refs/keyrot/remote/{}/{name}", self.remote)
    }

    /// Pushes `updates` (`(new value or None to delete, remote ref, expected old value
    /// or None for "must not exist")`) in one atomic push: all land or none does, and
    /// each only if the remote still has the value expected of it.
    pub(crate) fn push(&self, updates: &[(Option<&str>, &str, Option<&str>)]) -> Result<Pushed> {
        let mut args: Vec<String> = vec!["push".into(), "--porcelain".into(), "--atomic".into()];
        for (_, dst, expect) in updates {
            args.push(format!("--force-with-lease={dst}:{}", expect.unwrap_or("")));
        }
        args.push("--".into());
        args.push(self.remote.clone());
        for (src, dst, _) in updates {
            args.push(format!("{}:{dst}", src.unwrap_or("")));
        }
        let out = self
            .command()
            .args(&args)
            .output()
            .map_err(|e| RemoteError::cannot_run_git(&e))?;
        if out.status.success() {
            return Ok(Pushed::Done);
        }
        // `--porcelain`: one `<flag>\t<from>:<to>\t<summary>` line per ref; `!` rejected.
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Refused by our own expectation (`stale info`), or by the server finding the
        // ref already moved when it locked it (two pushes racing): someone else won.
        let mut stale: Vec<String> = stdout
            .lines()
            .filter(|l| l.starts_with('!') && l.contains("stale info"))
            .filter_map(|l| l.split('\t').nth(1))
            .filter_map(|refs| refs.split(':').nth(1))
            .map(str::to_string)
            .collect();
        stale.extend(
            stderr
                .split("cannot lock ref '")
                .skip(1)
                .filter_map(|rest| rest.split('\'').next())
                .map(str::to_string),
        );
        if !stale.is_empty() {
            return Ok(Pushed::Stale(stale));
        }
        let rejected: Vec<&str> = stdout.lines().filter(|l| l.starts_with('!')).collect();
        Ok(Pushed::Refused(one_line(&format!(
            "{}\n{}",
            rejected.join("\n"),
            stderr
        ))))
    }
}

/// git's message on one line, without its hints and blank lines.
fn one_line(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("hint:") && *l != "Done")
        .collect();
    lines.join("; ")
}
