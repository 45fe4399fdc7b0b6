//! `keyrot scan [PATH…] [--git | --staged] [--mark-compromised]`: finds leaked keyrot
//! secrets and, in a store, whose they are.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::error::Error;
use crate::scan::{self, Finder, Scanned};
use crate::store::{Source, Store};
use crate::workspace::Workspace;

#[derive(clap::Args)]
pub(super) struct Args {
    /// Files or folders to scan, recursively (default: the current folder); with
    /// --git or --staged, a folder inside the repository
    paths: Vec<PathBuf>,
    /// Scan every blob reachable from any ref of the repository, not the files
    #[arg(long, conflicts_with = "staged")]
    git: bool,
    /// Scan what the index would commit (for a pre-commit hook)
    #[arg(long)]
    staged: bool,
    /// Set `compromised = true` in the key files of the keys whose current or previous
    /// secret was found, in a commit, so the next plan revokes them
    #[arg(long)]
    mark_compromised: bool,
    /// The secrets' prefix (default: [secrets] prefix of the store, else "kr")
    #[arg(long, value_name = "PREFIX", value_parser = parse_prefix)]
    prefix: Option<String>,
    /// Print the findings as JSON
    #[arg(long)]
    json: bool,
    // With --mark-compromised in a shared store: the remote the marking commit is
    // pushed to (default: keyrot.toml's [remote]); ignored otherwise.
    #[command(flatten)]
    remote: super::RemoteArgs,
}

fn parse_prefix(s: &str) -> Result<String, String> {
    let ok = (1..=16).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    ok.then(|| s.to_string())
        .ok_or_else(|| "a prefix is 1 to 16 lowercase letters or digits".into())
}

/// The store the findings are matched against: `--store`/`$KEYROT_STORE` when given
/// (an error if it is not one), else the current folder if it is a store.
fn open_workspace(explicit: Option<&Path>) -> Result<Option<Workspace>, Error> {
    let dir = explicit.unwrap_or(Path::new("."));
    match Workspace::open(dir) {
        Ok(ws) => Ok(Some(ws)),
        Err(Error::NotAStore(_)) if explicit.is_none() => Ok(None),
        Err(e) => Err(e),
    }
}

/// The store's keys as the work tree has them, to name whose secret each finding is.
fn load_store(ws: &Workspace) -> Store {
    let (store, problems) = Store::load(&Source::WorkTree(ws.root.clone()));
    if !problems.is_empty() {
        // Scanning must not stop at a broken key file; the keys it could not read
        // cannot be named, so say so.
        super::warnings(&problems);
        super::notes(&[format!(
            "{} problem{} in the store (see `keyrot check`): a secret of a key that could not be read is reported as unknown",
            problems.len(),
            if problems.len() == 1 { "" } else { "s" }
        )]);
    }
    store
}

pub(super) fn run(args: &Args, explicit_store: Option<&Path>) -> Result<ExitCode, Error> {
    let ws = open_workspace(explicit_store)?;
    if args.mark_compromised && ws.is_none() {
        return Err(Error::Usage(
            "marking keys compromised needs the store they belong to: run scan in the store, or pass --store DIR".into(),
        ));
    }
    // Marking commits: in a shared store, the branch is brought up to the remote's
    // before the keys are read, and the commit pushed after.
    let mut shared = match &ws {
        Some(ws) if args.mark_compromised => super::share_direct(ws, &args.remote)?,
        _ => None,
    };
    let store = ws.as_ref().map(|ws| (ws, load_store(ws)));
    let prefix = match (&args.prefix, &store) {
        (Some(p), _) => p.clone(),
        (None, Some((_, s))) => s.settings.secret_prefix.clone(),
        (None, None) => "kr".into(),
    };
    let finder = Finder::new(&prefix);
    let mut scanned = if args.git || args.staged {
        if args.paths.len() > 1 {
            return Err(Error::Usage(
                "name at most one repository folder with --git or --staged".into(),
            ));
        }
        let at = args.paths.first().map_or(Path::new("."), PathBuf::as_path);
        let repo = git2::Repository::discover(at)
            .map_err(|e| Error::git(format!("finding the git repository at {}", at.display()), e))?;
        if args.git {
            scan::scan_history(&finder, &repo)?
        } else {
            scan::scan_staged(&finder, &repo)?
        }
    } else {
        let roots = if args.paths.is_empty() {
            vec![PathBuf::from(".")]
        } else {
            args.paths.clone()
        };
        scan::scan_files(&finder, &roots)?
    };
    let mut marked = None;
    if let Some((ws, store)) = &store {
        scan::attribute(&mut scanned.findings, store, &ws.repo)?;
        if args.mark_compromised {
            marked = Some(scan::mark_compromised(ws, store, &scanned.findings)?);
        }
    }
    if args.json {
        let value = serde_json::json!({
            "findings": scanned.findings,
            "files": scanned.files,
            "bytes": scanned.bytes,
            "marked": marked.as_ref().map(|m| serde_json::json!({
                "keys": m.keys,
                "already": m.already,
                "commit": m.commit,
            })),
        });
        super::out(&format!(
            "{}\n",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        ));
    } else {
        super::out(&text(&scanned, marked.as_ref(), args.git));
    }
    super::push_direct(shared.as_mut(), marked.as_ref().and_then(|m| m.commit.as_deref()))?;
    Ok(if scanned.findings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// One line per finding (`where  fingerprint  key  which secret`), then a summary.
fn text(scanned: &Scanned, marked: Option<&scan::Marked>, history: bool) -> String {
    let mut out = String::new();
    for f in &scanned.findings {
        let whose = match (&f.key, f.secret) {
            (Some(id), age) => {
                let revoked = if f.key_status == Some("revoked") {
                    ", key revoked"
                } else {
                    ""
                };
                format!("{id} ({} secret{revoked})", age.as_str())
            }
            (None, _) => format!("not a key of this store (service {})", f.service),
        };
        out.push_str(&format!(
            "{}: {}  {whose}\n",
            f.location,
            &f.fingerprint[..f.fingerprint.len().min("sha256:".len() + 16)]
        ));
    }
    let what = if history { "blob" } else { "file" };
    let n = scanned.findings.len();
    out.push_str(&match n {
        0 => format!(
            "No keyrot secrets in {} {what}{}.\n",
            scanned.files,
            plural(scanned.files)
        ),
        _ => format!(
            "Found {n} keyrot secret{} in {} {what}{}.\n",
            plural(n),
            scanned.files,
            plural(scanned.files)
        ),
    });
    if let Some(m) = marked {
        if let Some(commit) = &m.commit {
            out.push_str(&format!(
                "Marked {} compromised: {}\ncommit {commit}\nThe next plan revokes {}.\n",
                if m.keys.len() == 1 { "1 key" } else { "these keys" },
                m.keys.join(", "),
                if m.keys.len() == 1 { "it" } else { "them" },
            ));
        }
        if !m.already.is_empty() {
            out.push_str(&format!(
                "Already compromised or revoked: {}\n",
                m.already.join(", ")
            ));
        }
        if m.commit.is_none() && m.already.is_empty() {
            out.push_str("No key to mark: no current or previous secret of a key of this store was found.\n");
        }
    }
    out
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
