//! The command line: argument parsing, one module per command, and rendering. Each
//! command calls the library and prints; errors come back here to be printed once.

mod apply;
mod audit;
mod bars;
mod check;
mod demo;
mod docs;
mod explain;
mod init;
mod lease;
mod log;
mod notify;
mod owner;
mod plan;
mod render;
mod report;
mod run;
mod scan;
mod style;
mod test;
mod usage;
mod watch;

use bars::{PlanBar, ServiceBars};

use std::io::Write;
use std::path::Path;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc::{self, Receiver, Sender};

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::error::Error;
use crate::term::safe;
use crate::time::Time;
use crate::watch::Signal;

#[derive(Parser)]
#[command(name = "keyrot", version, about = "Policy-as-code rotation engine for API keys", long_about = None)]
struct Cli {
    /// Run as if keyrot was started in DIR (as git's -C), before anything else
    #[arg(short = 'C', global = true, value_name = "DIR")]
    chdir: Option<PathBuf>,
    /// The store (a git repository, or any folder in one); default: $KEYROT_STORE, else
    /// the current directory
    #[arg(long, global = true, env = "KEYROT_STORE", value_name = "DIR")]
    store: Option<PathBuf>,
    /// Colour the actions in tables: auto (a colour terminal, unless NO_COLOR is set;
    /// CLICOLOR_FORCE forces it), always, never
    #[arg(long, global = true, value_enum, default_value_t, value_name = "WHEN")]
    color: style::ColorChoice,
    /// Tables as wide as their rows, even on a narrower terminal (off a terminal they
    /// always are)
    #[arg(long, global = true)]
    wide: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a store: git init, settings, owners, keys/, the shipped policies, one commit
    Init(init::Args),
    /// Compile every policy, load every key and owner, validate keyrot.toml
    Check(check::Args),
    /// Evaluate every key against every policy and print the plan
    Plan(plan::Args),
    /// Apply a saved plan, or plan and apply the committed store, as one git commit
    Apply(apply::Args),
    /// Why one key gets what the plan gives it: its facts, each policy, the rules
    Explain(explain::Args),
    /// The audit trail from git history
    Log(log::Args),
    /// Check the audit trail: every apply commit re-derived from its policies
    Audit(audit::Args),
    /// Print the plan, then what changes in it every time a policy, key or setting is saved
    Watch(watch::Args),
    /// Plan (and with --apply, apply) now and then every DURATION, or once for cron
    Run(run::Args),
    /// Run the policy tests (policies/*_test.rhai), with line coverage
    Test(test::Args),
    /// Quick start: make an example store, then plan, apply and log it
    Demo(demo::Args),
    /// Show the shared remote's lease: who holds it, until when
    Lease(lease::Args),
    /// Remove the shared remote's lease LEASE_ID (like terraform force-unlock)
    Unlock(lease::UnlockArgs),
    /// Change owners.toml: `owner depart NAME` records that NAME has left
    Owner(owner::Args),
    /// Find leaked keyrot secrets in files, the index or the whole git history
    Scan(scan::Args),
    /// Import access records: when and from where each key was last used
    Usage(usage::Args),
    /// Tell owners ahead of time: `notify upcoming --within 7d`
    Notify(notify::Args),
    /// Write one self-contained HTML page (or JSON) of where the keys stand
    Report(report::Args),
    /// Print shell completions (bash, zsh, fish, powershell, elvish)
    Completions(docs::CompletionsArgs),
    /// Print the man page, or write every command's page into DIR
    Man(docs::ManArgs),
    /// Print the JSON Schema of a command's --json output (the list without NAME)
    Schema(docs::SchemaArgs),
}

/// `--now` and `--json`, declared once for the commands that evaluate policies; a
/// command whose flags mean something more specific says so with `mut_arg`.
#[derive(clap::Args)]
struct EvalArgs {
    /// Evaluation instant (RFC 3339), for reproducible output; default: now
    #[arg(long, value_parser = parse_now, value_name = "TIME")]
    now: Option<Time>,
    /// Print the result as JSON
    #[arg(long)]
    json: bool,
}

impl EvalArgs {
    /// The instant asked for, else the current time.
    fn now(&self) -> Time {
        self.now.unwrap_or_else(Time::now)
    }

    /// The store at `store` opened and its work tree loaded at [`EvalArgs::now`]: where
    /// the commands that look at the store as the engineer left it (`explain`, `test`)
    /// start. A load problem is the error.
    fn load_worktree(&self, store: &Path) -> Result<WorkTree, Error> {
        let ws = crate::workspace::Workspace::open(store)?;
        let now = self.now();
        let loaded = ws.load_worktree(now)?;
        Ok(WorkTree { ws, now, loaded })
    }
}

/// The store's work tree, loaded at one instant.
struct WorkTree {
    ws: crate::workspace::Workspace,
    now: Time,
    loaded: crate::workspace::Loaded,
}

/// For a command that commits without applying (`owner depart`, `scan
/// --mark-compromised`, `usage import`) in a shared store: the session with its remote,
/// the local branch brought up to the remote's before anything is read, so that the
/// commit is made on the shared history and can be pushed after it. `None`: local only
/// (no `[remote]`, or `--no-remote`).
fn share_direct<'w>(
    ws: &'w crate::workspace::Workspace,
    remote: &RemoteArgs,
) -> Result<Option<crate::remote::Session<'w>>, Error> {
    let Some(r) = remote.resolve(ws)? else {
        return Ok(None);
    };
    let session = crate::remote::Session::open(ws, &r)?;
    session.prepare_direct()?;
    Ok(Some(session))
}

/// Pushes the commit a command made after [`share_direct`], if it made one, and says so.
fn push_direct(session: Option<&mut crate::remote::Session>, commit: Option<&str>) -> Result<(), Error> {
    let (Some(session), Some(commit)) = (session, commit) else {
        return Ok(());
    };
    let id = git2::Oid::from_str(commit).map_err(|e| Error::git("reading the commit's id", e))?;
    session.push_direct(id)?;
    notes(&[format!("pushed commit {commit} to {}", session.shared_branch())]);
    Ok(())
}

/// `--secrets-dir`, the one place it is declared and resolved: `apply`, `run` and
/// `demo` flatten it.
#[derive(clap::Args)]
struct SecretsArgs {
    /// Where new secrets are written (default: a per-user state folder outside the store)
    #[arg(long, env = "KEYROT_SECRETS_DIR", value_name = "DIR")]
    secrets_dir: Option<PathBuf>,
}

impl SecretsArgs {
    /// The secrets folder for the store at `root`: the one given, else the default;
    /// created 0700 and refused inside the store.
    fn open(&self, root: &std::path::Path) -> Result<crate::secret::SecretsDir, Error> {
        let path = match &self.secrets_dir {
            Some(p) => p.clone(),
            None => crate::secret::default_dir(root)?,
        };
        crate::secret::SecretsDir::open(&path, root)
    }
}

/// `--parallelism N`, declared once: `apply` and `run` flatten it.
#[derive(clap::Args)]
struct StepArgs {
    /// Service steps in flight at once, across all services (default: [apply]
    /// parallelism in keyrot.toml, else 10)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    parallelism: Option<u16>,
}

impl StepArgs {
    fn parallelism(&self) -> Option<usize> {
        self.parallelism.map(usize::from)
    }
}

/// `--remote NAME` / `--no-remote`, declared once: `plan`, `apply`, `run`, `lease`,
/// `unlock` and the commands that commit without applying flatten it.
#[derive(clap::Args)]
struct RemoteArgs {
    /// Share the store through this git remote (overrides [remote] name in keyrot.toml)
    #[arg(long, value_name = "NAME", value_parser = parse_remote)]
    remote: Option<String>,
    /// Work locally even though keyrot.toml names a [remote]
    #[arg(long, conflicts_with = "remote")]
    no_remote: bool,
}

impl RemoteArgs {
    /// The remote to use: `--remote`, else the committed keyrot.toml's `[remote]`
    /// (its branch and lease kept when only the name is overridden); `None`: local.
    fn resolve(&self, ws: &crate::workspace::Workspace) -> Result<Option<crate::store::Remote>, Error> {
        if self.no_remote {
            return Ok(None);
        }
        let configured = match ws.head_id()? {
            Some(head) => crate::store::repo::settings_at(&ws.repo, head.as_str())?.remote,
            None => None,
        };
        Ok(match (&self.remote, configured) {
            (Some(name), Some(mut r)) => {
                r.name = name.clone();
                Some(r)
            }
            (Some(name), None) => Some(crate::store::Remote::named(name).map_err(Error::Usage)?),
            (None, r) => r,
        })
    }
}

fn parse_remote(s: &str) -> Result<String, String> {
    crate::store::settings::check_remote_name(s).map(|()| s.to_string())
}

/// Parses an RFC 3339 `--now`.
fn parse_now(s: &str) -> Result<Time, String> {
    Time::parse_rfc3339(s)
}

impl Cli {
    fn store_dir(&self) -> PathBuf {
        self.store.clone().unwrap_or_else(|| PathBuf::from("."))
    }
}

pub fn main() -> ExitCode {
    // A panic is a bug in keyrot; say so in one line rather than with Rust's output.
    std::panic::set_hook(Box::new(|info| {
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        err_line(&format!(
            "error: internal error{at}: {what} (this is a bug in keyrot; nothing more was applied)"
        ));
    }));
    let parsed = Cli::command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m).map(|cli| (cli, m)));
    let (cli, matches) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let invoked = Invoked::of(&matches);
    match run(&cli, &invoked) {
        Ok(code) => code,
        Err(e) if invoked.json => {
            report_json(&e);
            ExitCode::from(1)
        }
        Err(e) => {
            report(&e);
            ExitCode::from(1)
        }
    }
}

/// What the command line said beyond the parsed values: whether output is JSON (then
/// errors are too), and whether `--store` was given as a flag (not `$KEYROT_STORE`).
struct Invoked {
    json: bool,
    store_flag: bool,
}

impl Invoked {
    fn of(matches: &clap::ArgMatches) -> Invoked {
        // The innermost subcommand's own arguments (`audit verify --json`).
        let mut m = matches;
        while let Some((_, sub)) = m.subcommand() {
            m = sub;
        }
        let json = matches!(m.try_get_one::<bool>("json"), Ok(Some(true)));
        let store_flag = [matches, m]
            .iter()
            .any(|m| m.value_source("store") == Some(clap::parser::ValueSource::CommandLine));
        Invoked { json, store_flag }
    }
}

fn run(cli: &Cli, invoked: &Invoked) -> Result<ExitCode, Error> {
    style::init(cli.color, cli.wide);
    if invoked.store_flag && matches!(cli.command, Command::Demo(_)) {
        // The demo applies: it works only on the example store it makes.
        return Err(Error::Usage(
            "demo makes and applies its own example store; name its folder with `keyrot demo DIR`, not --store".into(),
        ));
    }
    if let Some(dir) = &cli.chdir {
        std::env::set_current_dir(dir).map_err(|e| Error::io(dir, e))?;
    }
    let store = cli.store_dir();
    // The commands that can commit to the store: after one that did, the store's
    // repository gets its maintenance. (`run` applies cycle after cycle, and sees to it
    // after each.)
    let commits = matches!(
        cli.command,
        Command::Apply(_) | Command::Owner(_) | Command::Scan(_) | Command::Usage(_)
    );
    let head_before = commits.then(|| head_of(&store)).flatten();
    let result = dispatch(cli, &store);
    if commits && result.is_ok() {
        maintain(&store, head_before);
    }
    result
}

fn dispatch(cli: &Cli, store: &Path) -> Result<ExitCode, Error> {
    let store = store.to_path_buf();
    match &cli.command {
        Command::Init(args) => init::run(args, cli.store.as_deref()),
        Command::Check(args) => check::run(args, &store),
        Command::Plan(args) => plan::run(args, &store),
        Command::Apply(args) => apply::run(args, &store),
        Command::Explain(args) => explain::run(args, &store),
        Command::Log(args) => log::run(args, &store),
        Command::Audit(args) => audit::run(args, &store),
        Command::Watch(args) => watch::run(args, &store),
        Command::Run(args) => run::run(args, &store),
        Command::Test(args) => test::run(args, &store),
        Command::Demo(args) => demo::run(args),
        Command::Lease(args) => lease::run(args, &store),
        Command::Owner(args) => owner::run(args, &store),
        Command::Scan(args) => scan::run(args, cli.store.as_deref()),
        Command::Usage(args) => usage::run(args, &store),
        Command::Notify(args) => notify::run(args, &store),
        Command::Report(args) => report::run(args, &store),
        Command::Unlock(args) => lease::unlock(args, &store),
        Command::Completions(args) => docs::completions(args),
        Command::Man(args) => docs::man(args),
        Command::Schema(args) => docs::schema(args),
    }
}

/// The store's HEAD commit, if it is a store with one.
fn head_of(store: &Path) -> Option<String> {
    let ws = crate::workspace::Workspace::open(store).ok()?;
    ws.head_id().ok().flatten().map(|id| id.to_string())
}

/// After a command that committed (HEAD is no longer `before`): packs the store's
/// loose objects once they pass the thresholds, unless `[store] maintenance = false`
/// in the committed settings, and says so. A failure is a warning: the commit stands.
fn maintain(store: &Path, before: Option<String>) {
    let Ok(ws) = crate::workspace::Workspace::open(store) else {
        return;
    };
    let Some(head) = ws.head_id().ok().flatten().map(|id| id.to_string()) else {
        return;
    };
    if Some(&head) == before.as_ref() {
        return;
    }
    match crate::store::repo::settings_at(&ws.repo, &head) {
        Ok(settings) => notes(crate::maintenance::note_after_commit(&ws.repo, &settings).as_slice()),
        Err(e) => err_line(&format!("warning: no maintenance of the store's objects: {e}")),
    }
}

/// Prints an error to stderr: one line per problem, then a closing line.
fn report(e: &Error) {
    let mut err = std::io::stderr().lock();
    match e {
        Error::Invalid(problems) => {
            for p in problems {
                let _ = writeln!(err, "{}", safe(&p.to_string()));
            }
            let n = problems.len();
            let _ = writeln!(
                err,
                "error: {n} problem{} in the store; nothing was planned or applied",
                if n == 1 { "" } else { "s" }
            );
        }
        other => {
            let _ = writeln!(err, "error: {}", safe(&other.to_string()));
        }
    }
    if let Some(h) = hint(e) {
        let _ = writeln!(err, "  hint: {}", safe(&h));
    }
}

/// Prints an error to stderr as one JSON object on one line (with `--json`): the
/// message, where ([`Error::location`]: the file, line and column, when the error is
/// about one place), every problem, and the hint.
fn report_json(e: &Error) {
    let problems: Vec<serde_json::Value> = match e {
        Error::Invalid(problems) => problems
            .iter()
            .map(|p| {
                serde_json::json!({
                    "path": p.path,
                    "line": p.pos.map(|p| p.0),
                    "column": p.pos.map(|p| p.1),
                    "message": p.message,
                })
            })
            .collect(),
        _ => Vec::new(),
    };
    let message = match e {
        Error::Invalid(problems) => format!(
            "{} problem{} in the store; nothing was planned or applied",
            problems.len(),
            if problems.len() == 1 { "" } else { "s" }
        ),
        other => other.to_string(),
    };
    let at = e.location();
    let value = serde_json::json!({
        "error": message,
        "path": at.as_ref().map(|a| &a.path),
        "line": at.as_ref().and_then(|a| a.line),
        "column": at.as_ref().and_then(|a| a.column),
        "hint": hint(e),
        "problems": problems,
    });
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{}", safe(&value.to_string()));
}

/// What to do about an error, in terms of this command line: the library's errors
/// say what is wrong and, where it knows, what to do ([`Error::hint`]); which flag or
/// command helps is the CLI's to say.
fn hint(e: &Error) -> Option<String> {
    use crate::error::{DeliveryError, InputError};
    Some(match e {
        Error::StalePlan(_) => "run `keyrot plan --out FILE` again".into(),
        Error::ForgedPlan(_) => {
            "plan files are re-derived before apply; run `keyrot plan --out FILE` again".into()
        }
        Error::NotAStore(dir) => format!(
            "create one with `keyrot init {}`, or pass --store DIR",
            dir.display()
        ),
        Error::Locked { id, .. } => {
            format!("wait for it to finish; if that process is gone, run `keyrot apply --force-unlock {id}`")
        }
        Error::SecretsInStore { .. } => "pass --secrets-dir with a folder outside the store".into(),
        Error::NoStateFolder => "pass --secrets-dir DIR".into(),
        Error::UnknownKey(_) => "`keyrot log` without a key lists every key's entries".into(),
        Error::HistoryRewritten { reference, .. } => format!(
            "someone amended, rebased or force-pushed the branch; compare it with the commit named (git log, git reflog) before trusting it, then accept the new history with `git update-ref -d {reference}`"
        ),
        Error::Signing(_) => "fix git's signing settings (gpg.format, user.signingKey) and try `git commit -S` by hand; apply again once that signs".into(),
        Error::Leased { id, .. } => format!(
            "wait for that run to finish; if it died, the lease expires by itself, or remove it with `keyrot unlock {id}`"
        ),
        Error::FutureInstant { .. } => {
            "if you mean that instant (a replay, a test), pass --allow-future".into()
        }
        Error::Delivery(DeliveryError::SecretsWouldBeLost) => {
            "deliver them to Vault ([delivery] sink = \"vault\") or pass --secrets-dir to a folder that outlives it".into()
        }
        Error::Input(InputError::NoTrustedSigners) => {
            "--require-signed needs the keys to trust: give --allowed-signers FILE or set git's gpg.ssh.allowedSignersFile".into()
        }
        Error::Input(InputError::UnknownCommit { .. } | InputError::NotOnFirstParent { .. }) => {
            "--since takes a commit of the branch's first-parent history".into()
        }
        Error::Input(InputError::NoIndex) => {
            "--staged scans a repository's index; scan its history with --git instead".into()
        }
        other => return other.hint(),
    })
}

/// A channel that receives [`Signal::Stop`] on Ctrl-C or SIGTERM, so long-running
/// commands finish what they are doing and exit 0 instead of dying mid-step.
fn stop_channel() -> Result<(Sender<Signal>, Receiver<Signal>), Error> {
    let (tx, rx) = mpsc::channel();
    let on_signal = tx.clone();
    ctrlc::set_handler(move || {
        let _ = on_signal.send(Signal::Stop);
    })
    .map_err(|e| Error::Usage(format!("cannot install the Ctrl-C/SIGTERM handler: {e}")))?;
    Ok((tx, rx))
}

/// Prints what the user should know but that is not an error, one `note:` line each.
fn notes(notes: &[String]) {
    for n in notes {
        err_line(&format!("note: {n}"));
    }
}

/// `path:line:col: warning: message`, as `check` prints a warning.
fn warning_line(p: &crate::error::Problem) -> String {
    let mut p = p.clone();
    p.message = format!("warning: {}", p.message);
    p.to_string()
}

/// Prints warnings about the store on stderr, one line each, as `check` does: a
/// scheduled `plan`, `apply`, `run` or `watch` shows them too.
fn warnings(problems: &[crate::error::Problem]) {
    for p in problems {
        err_line(&warning_line(p));
    }
}

/// Writes to stdout, ignoring a closed pipe (`keyrot log | head`). Store content in
/// the text is shown escaped, never as terminal control sequences.
fn out(text: &str) {
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(style::paint(&safe(text)).as_bytes());
    let _ = o.flush();
}

/// Writes one line to stderr, escaped as [`out`] does.
fn err_line(text: &str) {
    let mut e = std::io::stderr().lock();
    let _ = writeln!(e, "{}", safe(text));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every long flag of every command (`--secrets-dir`, `--require-signed`, …).
    fn long_flags(cmd: &clap::Command, out: &mut std::collections::BTreeSet<String>) {
        for arg in cmd.get_arguments() {
            if let Some(long) = arg.get_long() {
                out.insert(format!("--{long}"));
            }
        }
        for sub in cmd.get_subcommands() {
            long_flags(sub, out);
        }
    }

    /// The library says what is wrong and what to do; which flag helps is the CLI's to
    /// say. No file under `src/` outside `src/cli/` and `main.rs` names a keyrot flag in
    /// a string (where it could reach a user), so a renamed flag is renamed here alone.
    #[test]
    fn no_keyrot_flag_is_named_outside_the_cli() {
        let mut flags = std::collections::BTreeSet::new();
        long_flags(&Cli::command(), &mut flags);
        // The same spellings passed to the system git as its own arguments.
        let git_args = ["--format"];
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut folders = vec![src.clone()];
        let mut found = Vec::new();
        while let Some(dir) = folders.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path == src.join("cli") {
                    continue;
                }
                if path.is_dir() {
                    folders.push(path);
                    continue;
                }
                let name = path.file_name().unwrap().to_string_lossy().to_string();
                if !name.ends_with(".rs") || name == "main.rs" || name == "tests.rs" {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                // Unit tests at the end of a file may name flags in their data.
                let code = text.split("\n#[cfg(test)]\nmod tests").next().unwrap_or(&text);
                for (n, line) in code.lines().enumerate() {
                    let line = line.trim_start();
                    if line.starts_with("//") {
                        continue;
                    }
                    for flag in &flags {
                        let named = line.match_indices(flag.as_str()).any(|(i, _)| {
                            let after = line[i + flag.len()..].chars().next();
                            !matches!(after, Some(c) if c.is_ascii_alphanumeric() || c == '-')
                        });
                        if named && !git_args.contains(&flag.as_str()) {
                            found.push(format!("{}:{}: {flag}", path.display(), n + 1));
                        }
                    }
                }
            }
        }
        assert!(
            found.is_empty(),
            "keyrot flags named outside src/cli/:\n{}",
            found.join("\n")
        );
    }
}
