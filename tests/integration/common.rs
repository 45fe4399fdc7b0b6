//! Test helpers: a hermetic store in a temp folder, the real binary, real git.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use tempfile::TempDir;

/// The evaluation instant most tests plan at.
pub const NOW: &str = "2026-11-22T20:00:00Z";

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "expected success\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn fails(self, code: i32) -> Run {
        assert_eq!(
            self.code, code,
            "expected exit {code}\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// Asserts stderr contains `text`, showing all of it when not.
    #[track_caller]
    pub fn stderr_has(&self, text: &str) -> &Run {
        assert!(
            self.stderr.contains(text),
            "expected `{text}` on stderr:\n{}",
            self.stderr
        );
        self
    }

    /// Asserts stdout contains `text`, showing all of it when not.
    #[track_caller]
    pub fn stdout_has(&self, text: &str) -> &Run {
        assert!(
            self.stdout.contains(text),
            "expected `{text}` on stdout:\n{}",
            self.stdout
        );
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", self.stdout))
    }
}

/// A store in a temp folder, with its own HOME and secrets folder, and git isolated
/// from the machine's configuration.
pub struct Store {
    _tmp: TempDir,
    pub root: PathBuf,
    pub secrets: PathBuf,
    home: PathBuf,
}

fn isolate(cmd: &mut Command, home: &Path) {
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("XDG_STATE_HOME", home.join("state"))
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Test Engineer")
        .env("GIT_AUTHOR_EMAIL", "eng@example.com")
        .env("GIT_COMMITTER_NAME", "Test Engineer")
        .env("GIT_COMMITTER_EMAIL", "eng@example.com")
        .stdin(Stdio::null());
}

impl Store {
    /// `keyrot init` with the shipped policies and no keys.
    pub fn new() -> Store {
        let s = Store::bare();
        s.keyrot_in(s.root.parent().unwrap(), &["init", "store"]).ok();
        s
    }

    /// An empty temp folder that will hold a store at `root`.
    pub fn bare() -> Store {
        let tmp = TempDir::new().unwrap();
        let root = tmp.path().join("store");
        let secrets = tmp.path().join("secrets");
        let home = tmp.path().join("home");
        fs::create_dir_all(&home).unwrap();
        Store {
            _tmp: tmp,
            root,
            secrets,
            home,
        }
    }

    /// A store with the given key files (id, body), committed.
    pub fn with_keys(keys: &[(&str, &str)]) -> Store {
        let s = Store::new();
        s.write("owners.toml", OWNERS);
        for (id, body) in keys {
            s.write(&format!("keys/{id}.toml"), body);
        }
        s.commit("add keys");
        s
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    pub fn write(&self, rel: &str, text: &str) {
        let p = self.path(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    pub fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.path(rel)).unwrap()
    }

    pub fn remove(&self, rel: &str) {
        fs::remove_file(self.path(rel)).unwrap();
    }

    pub fn git(&self, args: &[&str]) -> String {
        self.git_in(&self.root, args, &[])
    }

    /// Runs git in `dir` (any repository: an app beside the store) with this test's
    /// isolated environment and `env`; its stdout, after asserting it succeeded.
    #[track_caller]
    pub fn git_in(&self, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
        let out = self.git_run(dir, args, env);
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// [`Store::git_in`] that may fail (a hook refusing a commit).
    pub fn git_run(&self, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new("git");
        isolate(&mut cmd, &self.home);
        cmd.arg("-C").arg(dir).args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }

    /// Appends `text` to the store file `rel` (not committed).
    pub fn append(&self, rel: &str, text: &str) {
        self.write(rel, &(self.read(rel) + text));
    }

    /// With `bot` applied at NOW: marks it used recently and applies again 100 days
    /// on, so its first secret becomes `previous` until 2027-03-03T20:00:00Z (the
    /// idle policy leaves a key used the day before alone).
    pub fn rotate_again_in_use(&self) {
        self.write(
            "keys/bot.toml",
            &self
                .read("keys/bot.toml")
                .replace("2026-11-22T00:00:00Z", "2027-03-01T00:00:00Z"),
        );
        self.commit("used");
        self.apply_at("2027-03-02T20:00:00Z", &[]).ok();
    }

    pub fn commit(&self, msg: &str) {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", msg]);
    }

    /// Asserts `git fsck --strict` finds nothing wrong with the repository.
    #[track_caller]
    pub fn assert_fsck_clean(&self) {
        let out = Command::new("git")
            .arg("-C")
            .arg(&self.root)
            .args(["fsck", "--strict"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git fsck: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn head(&self) -> String {
        self.git(&["rev-parse", "HEAD"]).trim().to_string()
    }

    pub fn commit_count(&self) -> usize {
        self.git(&["rev-list", "--count", "HEAD"]).trim().parse().unwrap()
    }

    /// Runs keyrot with `--store` set to this store.
    pub fn keyrot(&self, args: &[&str]) -> Run {
        self.keyrot_os(args)
    }

    /// The one way tests build a keyrot command: the real binary, git and HOME
    /// isolated, `--store` set to this store, `env` added.
    fn command<S: AsRef<std::ffi::OsStr>>(&self, args: &[S], env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyrot"));
        isolate(&mut cmd, &self.home);
        cmd.arg("--store").arg(&self.root).args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    /// [`Store::keyrot`] with arguments that need not be UTF-8.
    pub fn keyrot_os<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Run {
        Run::from(self.command(args, &[]).output().unwrap())
    }

    /// [`Store::keyrot`] with extra environment variables.
    pub fn keyrot_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        Run::from(self.command(args, env).output().unwrap())
    }

    /// Runs a bash command line in the store, as cron or systemd would.
    pub fn shell(&self, line: &str, env: &[(&str, &str)]) -> Run {
        let mut cmd = Command::new("bash");
        isolate(&mut cmd, &self.home);
        cmd.current_dir(&self.root).arg("-c").arg(line);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Run::from(cmd.output().unwrap())
    }

    /// Runs keyrot in `dir` without `--store`.
    pub fn keyrot_in(&self, dir: &Path, args: &[&str]) -> Run {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyrot"));
        isolate(&mut cmd, &self.home);
        cmd.current_dir(dir).args(args);
        Run::from(cmd.output().unwrap())
    }

    pub fn plan(&self) -> serde_json::Value {
        self.keyrot(&["plan", "--json", "--now", NOW]).ok().json()
    }

    /// `apply --yes` at NOW, secrets into the test's secrets folder.
    pub fn apply(&self) -> Run {
        self.apply_with(&[])
    }

    /// [`Store::apply`] with more arguments.
    pub fn apply_with(&self, extra: &[&str]) -> Run {
        let secrets = self.secrets.to_str().unwrap().to_string();
        let mut args = vec!["apply", "--yes", "--now", NOW, "--secrets-dir", &secrets];
        args.extend_from_slice(extra);
        self.keyrot(&args)
    }

    /// `apply --yes` at `now`, which may be after today (`--allow-future`: tests step
    /// months past NOW), with `env`, secrets into the test's secrets folder.
    pub fn apply_at(&self, now: &str, env: &[(&str, &str)]) -> Run {
        let args = self.apply_at_args(now);
        self.keyrot_env(&args.iter().map(String::as_str).collect::<Vec<_>>(), env)
    }

    /// [`Store::apply`] started in the background with `env` (failpoints, pauses).
    pub fn spawn_apply(&self, env: &[(&str, &str)]) -> Live {
        self.spawn_apply_at(NOW, env)
    }

    /// An apply at NOW killed (SIGKILL) when it reaches the failpoint `point`.
    pub fn kill_apply_at(&self, point: &str) {
        let mut live = self.spawn_apply(&[("KEYROT_TEST_PAUSE", &format!("{point}:60000"))]);
        live.wait_for(true, point, |l| l.starts_with(&format!("failpoint {point}")));
        live.signal("KILL");
        assert_ne!(live.wait_exit(), 0, "killed at {point}");
    }

    /// [`Store::apply_at`] started in the background.
    pub fn spawn_apply_at(&self, now: &str, env: &[(&str, &str)]) -> Live {
        let args = self.apply_at_args(now);
        self.spawn(&args.iter().map(String::as_str).collect::<Vec<_>>(), env)
    }

    fn apply_at_args(&self, now: &str) -> Vec<String> {
        let secrets = self.secrets.to_str().unwrap();
        [
            "apply",
            "--yes",
            "--allow-future",
            "--now",
            now,
            "--secrets-dir",
            secrets,
        ]
        .map(str::to_string)
        .to_vec()
    }

    pub fn secret_file(&self, id: &str) -> PathBuf {
        self.secrets.join(format!("{id}.secret"))
    }

    pub fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }
}

pub const OWNERS: &str = r#"
[alice]
status = "active"
team = "trading"

[dave]
status = "departed"
team = "trading"
"#;

/// A key file body with the given permissions and rotation date, owned by alice, with
/// an allowlist, used recently: compliant with the shipped policies unless `extra`
/// says otherwise. `extra` lines are appended verbatim.
pub fn key(permissions: &str, rotated_at: &str, extra: &str) -> String {
    format!(
        "service = \"binance\"\nowner = \"alice\"\npermissions = {permissions}\nip_allowlist = [\"203.0.113.7/32\"]\ncreated_at = 2026-01-01T00:00:00Z\nrotated_at = {rotated_at}\nlast_used_at = 2026-11-22T00:00:00Z\n{extra}"
    )
}

/// A fingerprint made from one repeated hex digit.
pub fn fp(c: char) -> String {
    format!("sha256:{}", c.to_string().repeat(64))
}

/// `(key, action, policy)` of each action of a JSON plan.
pub fn actions(plan: &serde_json::Value) -> Vec<(String, String, String)> {
    plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["key"].as_str().unwrap().to_string(),
                a["action"].as_str().unwrap().to_string(),
                a["policy"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// sha256 hex of bytes, computed with the system's sha256sum (independent of keyrot).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// A long-running keyrot (`watch`, `run`) whose output lines arrive on a channel.
pub struct Live {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<(bool, String)>,
    /// Every line seen so far, `(from stderr, text)`.
    pub seen: Vec<(bool, String)>,
}

/// Starts a server on a free loopback port: `start(port)` spawns it; it is up once the
/// port accepts connections. Tries other ports when one was taken meanwhile.
pub fn serve_on_loopback(mut start: impl FnMut(u16) -> std::process::Child) -> (std::process::Child, u16) {
    for _ in 0..20 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = start(port);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return (child, port);
            }
            if child.try_wait().unwrap().is_some() {
                break;
            }
            // Polling a port, not waiting for an effect: a short nap is fine.
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("the server did not start on loopback");
}

/// How long a test waits for a line or an exit before failing: generous, as the
/// machine may be loaded; tests never sleep for a fixed time instead.
pub const DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

impl Live {
    /// Asserts that the process wrote a stderr line containing `text`.
    #[track_caller]
    pub fn assert_stderr_has(&self, text: &str, context: &str) {
        assert!(
            self.seen.iter().any(|(err, l)| *err && l.contains(text)),
            "{context}: no stderr line with `{text}` in {:?}",
            self.seen
        );
    }

    /// Waits for the next line (stdout, or stderr when `stderr`) matching `pred`.
    #[track_caller]
    pub fn wait_for(&mut self, stderr: bool, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let start = std::time::Instant::now();
        loop {
            let left = DEADLINE.checked_sub(start.elapsed()).unwrap_or_default();
            match self.lines.recv_timeout(left) {
                Ok((is_err, line)) => {
                    self.seen.push((is_err, line.clone()));
                    if is_err == stderr && pred(&line) {
                        return line;
                    }
                }
                Err(_) => panic!("timed out waiting for {what}; saw:\n{:#?}", self.seen),
            }
        }
    }

    /// Waits for the next JSON line on stdout whose `event` is `event`.
    #[track_caller]
    pub fn next_event(&mut self, event: &str) -> serde_json::Value {
        let line = self.wait_for(false, event, |l| {
            serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| v["event"] == event)
        });
        serde_json::from_str(&line).unwrap()
    }

    /// Waits for a plan event satisfying `pred`, skipping intermediate ones.
    #[track_caller]
    pub fn plan_where(&mut self, what: &str, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let line = self.wait_for(false, what, |l| {
            serde_json::from_str::<serde_json::Value>(l)
                .is_ok_and(|v| v["event"] == "plan" && pred(&v["plan"]))
        });
        serde_json::from_str::<serde_json::Value>(&line).unwrap()["plan"].clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits for the process to exit and for all its output; returns its exit code.
    #[track_caller]
    pub fn finish(&mut self) -> i32 {
        let code = self.wait_exit();
        // The reader threads end when the pipes close, which disconnects the channel.
        while let Ok(line) = self.lines.recv_timeout(DEADLINE) {
            self.seen.push(line);
        }
        code
    }

    /// Waits for the process to exit, reading its peak resident memory (`VmHWM` in
    /// /proc) as it runs; returns its exit code and that peak in KB.
    #[track_caller]
    pub fn finish_measuring_memory(&mut self) -> (i32, u64) {
        let status = format!("/proc/{}/status", self.child.id());
        let mut peak = 0;
        let start = std::time::Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            if let Ok(text) = fs::read_to_string(&status) {
                if let Some(kb) = text
                    .lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                {
                    peak = peak.max(kb);
                }
            }
            assert!(start.elapsed() < DEADLINE * 4, "process did not exit");
            // Sampling memory while it runs: the nap is the sampling interval.
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        (self.finish(), peak)
    }

    /// Everything the process wrote to stdout so far, one line each.
    pub fn stdout(&self) -> String {
        self.seen
            .iter()
            .filter(|(err, _)| !err)
            .map(|(_, l)| format!("{l}\n"))
            .collect()
    }

    /// Waits for the process to exit; returns its exit code.
    #[track_caller]
    pub fn wait_exit(&mut self) -> i32 {
        let start = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            if start.elapsed() > DEADLINE {
                let _ = self.child.kill();
                panic!("process did not exit; saw:\n{:#?}", self.seen);
            }
            // Polling an exit status, not waiting for an effect: a short nap is fine.
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Store {
    /// Starts keyrot with `--store` set, reading its stdout and stderr line by line.
    pub fn spawn(&self, args: &[&str], env: &[(&str, &str)]) -> Live {
        use std::io::BufRead;
        let mut cmd = self.command(args, env);
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send((false, line));
            }
        });
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx2.send((true, line));
            }
        });
        Live {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }
}

impl Store {
    /// Copies the example ledger provider into `providers/ledger` and makes it the
    /// provider of service `ledger`, with this step `timeout` and `more` lines of
    /// `[service.ledger]` (not committed: the caller commits with its keys).
    pub fn install_ledger(&self, timeout: &str, more: &str) {
        let provider = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/providers/ledger");
        fs::create_dir_all(self.path("providers")).unwrap();
        fs::copy(provider, self.path("providers/ledger")).unwrap();
        self.write(
            "keyrot.toml",
            &(self.read("keyrot.toml")
                + &format!("\n[service.ledger]\nprovider = \"exec:providers/ledger\"\ntimeout = \"{timeout}\"\n{more}")),
        );
    }
}
