//! Team operation: runners (clones) sharing one remote, a bare repository on disk or
//! `git daemon` on loopback, through the system git. The lease, the atomic push, the
//! re-made commit when someone pushed meanwhile, and crash recovery by what the remote
//! holds.

use std::path::PathBuf;
use std::process::Command;

use crate::common::*;

/// Three keys that come due one after another: `a` at NOW, `b` by ROUND_2, `c` by
/// ROUND_3 (max-age 90 days), so every round has exactly one rotation to land.
const ROUND_2: &str = "2026-11-25T20:00:00Z";
const ROUND_3: &str = "2026-11-30T20:00:00Z";

struct Team {
    /// The engineer's store the remote was made from.
    origin: Store,
    remote: PathBuf,
    runners: Vec<Store>,
}

impl Team {
    fn new(runners: usize) -> Team {
        let origin = Store::with_keys(&[
            ("a", &key("[\"read\"]", "2026-08-01T00:00:00Z", "")),
            ("b", &key("[\"read\"]", "2026-08-25T00:00:00Z", "")),
            ("c", &key("[\"read\"]", "2026-08-30T00:00:00Z", "")),
        ]);
        origin.write(
            "keyrot.toml",
            &format!("{}\n[remote]\nname = \"origin\"\n", origin.read("keyrot.toml")),
        );
        origin.commit("share through origin");
        let remote = origin.root.parent().unwrap().join("remote.git");
        origin.git(&["clone", "-q", "--bare", ".", remote.to_str().unwrap()]);
        origin.git(&["remote", "add", "origin", remote.to_str().unwrap()]);
        origin.git(&["fetch", "-q", "origin"]);
        let runners = (0..runners)
            .map(|_| clone_of(&origin, remote.to_str().unwrap()))
            .collect();
        Team {
            origin,
            remote,
            runners,
        }
    }

    /// `git` in the bare remote.
    fn remote_git(&self, args: &[&str]) -> String {
        self.origin
            .git(&[&["--git-dir", self.remote.to_str().unwrap()], args].concat())
    }

    /// The remote's apply commits' action lines, oldest first.
    fn remote_actions(&self) -> Vec<String> {
        let log = self.remote_git(&["log", "--reverse", "--first-parent", "--format=%B", "main"]);
        log.lines()
            .filter(|l| {
                ["rotate ", "revoke ", "restrict ", "expire "]
                    .iter()
                    .any(|a| l.starts_with(a))
            })
            .map(|l| l.split(" [").next().unwrap().to_string())
            .collect()
    }
}

/// A runner: a clone of `url` in a fresh temp folder of its own.
fn clone_of(origin: &Store, url: &str) -> Store {
    let r = Store::bare();
    origin.git(&["clone", "-q", url, r.root.to_str().unwrap()]);
    r
}

fn apply(r: &Store, now: &str, env: &[(&str, &str)]) -> Run {
    r.apply_at(now, env)
}

fn spawn_apply(r: &Store, now: &str, env: &[(&str, &str)]) -> Live {
    r.spawn_apply_at(now, env)
}

/// Every key's committed fingerprint on the remote has its secret in some runner's
/// secrets folder: nothing committed was lost.
fn assert_every_secret_delivered(t: &Team) {
    for id in ["a", "b", "c"] {
        let text = t.remote_git(&["show", &format!("main:keys/{id}.toml")]);
        let Some(line) = text.lines().find(|l| l.starts_with("fingerprint = ")) else {
            continue;
        };
        let fp = line
            .trim_start_matches("fingerprint = ")
            .trim_matches('"')
            .to_string();
        let delivered = t.runners.iter().chain([&t.origin]).any(|r| {
            std::fs::read_to_string(r.secret_file(id))
                .is_ok_and(|s| format!("sha256:{}", sha256_hex(s.trim_end().as_bytes())) == fp)
        });
        assert!(
            delivered,
            "the secret of {id} ({fp}) is in no runner's secrets folder"
        );
    }
}

#[test]
fn runners_applying_at_once_land_each_change_exactly_once() {
    let t = Team::new(3);
    for now in [NOW, ROUND_2, ROUND_3] {
        let mut live: Vec<Live> = t.runners.iter().map(|r| spawn_apply(r, now, &[])).collect();
        let mut landed = 0;
        for l in &mut live {
            let code = l.finish();
            let out: Vec<&str> = l.seen.iter().map(|(_, s)| s.as_str()).collect();
            let text = out.join("\n");
            match code {
                0 if text.contains("Apply complete") => landed += 1,
                0 => assert!(text.contains("Nothing to apply"), "{text}"),
                1 => assert!(
                    text.contains("error: locked by ") && text.contains("(lease "),
                    "{text}"
                ),
                other => panic!("exit {other}: {text}"),
            }
        }
        assert_eq!(landed, 1, "round {now}: exactly one runner lands the change");
    }
    // Each key rotated exactly once, in order, on a linear history; nothing left held.
    assert_eq!(t.remote_actions(), ["rotate a", "rotate b", "rotate c"]);
    assert_eq!(t.remote_git(&["rev-list", "--merges", "main"]), "");
    assert_eq!(t.remote_git(&["for-each-ref", "refs/keyrot/"]), "");
    assert_every_secret_delivered(&t);
    // The history verifies: every apply commit re-derives from its parent.
    let reviewer = clone_of(&t.origin, t.remote.to_str().unwrap());
    reviewer.keyrot(&["audit", "verify"]).ok();
}

#[test]
fn a_live_lease_is_refused_naming_its_holder_until_unlocked() {
    let t = Team::new(2);
    let (a, b) = (&t.runners[0], &t.runners[1]);
    // A holds the lease, paused before its commit; then it is killed outright.
    let mut held = spawn_apply(a, NOW, &[("KEYROT_TEST_PAUSE", "apply-after-secrets:60000")]);
    held.wait_for(true, "the pause", |l| {
        l.starts_with("failpoint apply-after-secrets")
    });
    let run = apply(b, NOW, &[]).fails(1);
    run.stderr_has("error: locked by ");
    run.stderr_has("pid ");
    run.stderr_has("hint: wait for that run to finish");
    let lease = b.keyrot(&["lease", "--json"]).ok().json();
    assert_eq!(lease["live"], true);
    let id = lease["id"].as_str().unwrap().to_string();
    assert!(run.stderr.contains(&format!("(lease {id})")), "{}", run.stderr);
    assert!(b
        .keyrot(&["lease"])
        .ok()
        .stdout
        .contains(&format!("Lease {id} on origin: held by ")));
    held.signal("KILL");
    held.wait_exit();
    // Killed, A left the lease behind; unlocking another id removes nothing.
    b.keyrot(&["unlock", "00000000"])
        .fails(1)
        .stderr_has("nothing was removed");
    b.keyrot(&["unlock", &id])
        .ok()
        .stdout_has(&format!("Removed lease {id}"));
    assert_eq!(b.keyrot(&["lease", "--json"]).ok().stdout.trim(), "null");
    apply(b, NOW, &[]).ok();
    // A's next run clears what its dead apply left and finds nothing more to do.
    apply(a, NOW, &[]).ok().stdout_has("Nothing to apply");
    assert_eq!(t.remote_actions(), ["rotate a"]);
    assert_every_secret_delivered(&t);
}

#[test]
fn an_expired_lease_is_taken_over() {
    let t = Team::new(1);
    let r = &t.runners[0];
    // A lease whose holder is long gone, pushed by hand.
    let tree = r.git(&["hash-object", "-t", "tree", "-w", "/dev/null"]);
    let msg = "keyrot lease deadbeef\n\nHolder: ghost@nowhere pid 1\nExpires: 2026-01-01T00:00:00Z\n";
    let commit = r.git(&["commit-tree", tree.trim(), "-m", msg]);
    r.git(&[
        "push",
        "-q",
        "origin",
        &format!("{}:refs/keyrot/lease", commit.trim()),
    ]);
    assert!(r
        .keyrot(&["lease"])
        .ok()
        .stdout
        .contains("expired at 2026-01-01T00:00:00Z"));
    apply(r, NOW, &[]).ok();
    assert_eq!(t.remote_actions(), ["rotate a"]);
    assert_eq!(t.remote_git(&["for-each-ref", "refs/keyrot/"]), "");
}

#[test]
fn a_runner_killed_around_its_push_converges_on_the_next_run() {
    for point in [
        "apply-after-secrets",
        "apply-before-commit",
        "remote-after-push",
        "apply-after-commit",
    ] {
        let t = Team::new(1);
        let r = &t.runners[0];
        let mut live = spawn_apply(r, NOW, &[("KEYROT_TEST_PAUSE", &format!("{point}:60000"))]);
        live.wait_for(true, point, |l| l.starts_with(&format!("failpoint {point}")));
        live.signal("KILL");
        live.wait_exit();
        // The dead runner's lease blocks the next run until it expires or is removed.
        let id = r.keyrot(&["lease", "--json"]).ok().json()["id"]
            .as_str()
            .map(str::to_string);
        if let Some(id) = id {
            r.keyrot(&["unlock", &id]).ok();
        }
        let run = apply(r, NOW, &[]).ok();
        let pushed = matches!(point, "remote-after-push" | "apply-after-commit");
        if pushed {
            assert!(
                run.stderr.contains("finished an interrupted apply"),
                "{point}: {}",
                run.stderr
            );
        }
        assert_eq!(t.remote_actions(), ["rotate a"], "{point}");
        assert_eq!(r.head(), t.remote_git(&["rev-parse", "main"]).trim(), "{point}");
        assert_eq!(r.git(&["status", "--porcelain"]), "", "{point}");
        assert!(!r.root.join(".git/keyrot/journal").exists(), "{point}");
        assert_every_secret_delivered(&t);
    }
}

/// Starts an apply on runner 0 that pauses just before its push, runs `meanwhile`
/// (which pushes from runner 1), lets it go on; returns its exit code and output.
fn with_a_push_in_between(t: &Team, meanwhile: impl FnOnce(&Store)) -> (i32, String) {
    let mut live = spawn_apply(
        &t.runners[0],
        NOW,
        &[("KEYROT_TEST_PAUSE", "apply-before-commit:4000")],
    );
    live.wait_for(true, "the pause", |l| {
        l.starts_with("failpoint apply-before-commit")
    });
    meanwhile(&t.runners[1]);
    let code = live.finish();
    let text: Vec<&str> = live.seen.iter().map(|(_, l)| l.as_str()).collect();
    (code, text.join("\n"))
}

#[test]
fn an_unrelated_push_during_an_apply_is_built_upon() {
    let t = Team::new(2);
    let (code, text) = with_a_push_in_between(&t, |other| {
        // A push without the lease, as an engineer's `git push` is.
        other.write("README.md", "the key inventory\n");
        other.commit("readme");
        other.git(&["push", "-q", "origin", "main"]);
    });
    assert_eq!(code, 0, "{text}");
    let r = &t.runners[0];
    assert_eq!(t.remote_actions(), ["rotate a"]);
    // The apply commit was made again on top of the other push: linear history.
    assert_eq!(
        t.remote_git(&["log", "-1", "--format=%s", "main^"]).trim(),
        "readme"
    );
    assert_eq!(r.head(), t.remote_git(&["rev-parse", "main"]).trim());
    assert_eq!(r.read("README.md"), "the key inventory\n");
    assert_eq!(r.git(&["status", "--porcelain"]), "");
    assert_every_secret_delivered(&t);
    r.keyrot(&["audit", "verify"]).ok();
}

#[test]
fn a_conflicting_push_during_an_apply_rolls_it_back() {
    let t = Team::new(2);
    let (code, text) = with_a_push_in_between(&t, |other| {
        // Someone marks `b` compromised: the policies now decide more than the apply did.
        other.write(
            "keys/b.toml",
            &format!("{}compromised = true\n", other.read("keys/b.toml")),
        );
        other.commit("b leaked");
        other.git(&["push", "-q", "origin", "main"]);
    });
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("the policies decide differently there"), "{text}");
    assert!(
        text.contains("nothing was pushed, and nothing changed at any service"),
        "{text}"
    );
    let r = &t.runners[0];
    // The remote holds only the other push; the runner's own state is untouched.
    assert_eq!(t.remote_actions(), Vec::<String>::new());
    assert_eq!(
        t.remote_git(&["log", "-1", "--format=%s", "main"]).trim(),
        "b leaked"
    );
    assert!(!r.secret_file("a").exists());
    assert!(!r.root.join(".git/keyrot/journal").exists());
    assert_eq!(t.remote_git(&["for-each-ref", "refs/keyrot/"]), "");
    // The next run plans from the new tip and applies both decisions.
    apply(r, NOW, &[]).ok();
    assert_eq!(t.remote_actions(), ["rotate a", "revoke b"]);
}

#[test]
fn an_unreachable_remote_applies_nothing_anywhere() {
    let t = Team::new(1);
    let r = &t.runners[0];
    r.git(&["remote", "set-url", "origin", "/nonexistent/remote.git"]);
    let base = r.head();
    let run = apply(r, NOW, &[]).fails(1);
    run.stderr_has("error: remote: cannot fetch main from origin");
    assert_eq!(r.head(), base);
    assert!(!r.secret_file("a").exists());
    // plan still plans the work tree, and says it could not compare.
    let run = r.keyrot(&["plan", "--now", NOW]).ok();
    run.stderr_has("warning: cannot fetch main from origin");
    run.stdout_has("Plan: 1 rotate");
}

#[test]
fn a_rewritten_remote_history_is_refused() {
    let t = Team::new(2);
    let (r, other) = (&t.runners[0], &t.runners[1]);
    r.keyrot(&["plan", "--now", NOW])
        .ok()
        .stderr_has("note: main is up to date with origin/main");
    other.git(&["commit", "-q", "--amend", "-m", "share, reworded"]);
    other.git(&["push", "-q", "--force", "origin", "main"]);
    r.keyrot(&["plan", "--now", NOW])
        .fails(1)
        .stderr_has("error: history rewritten since ");
    let run = apply(r, NOW, &[]).fails(1);
    run.stderr_has("error: history rewritten since ");
    run.stderr_has("`git update-ref -d refs/keyrot/fetched/origin/main`");
    assert_eq!(t.remote_actions(), Vec::<String>::new());
    // Reviewed and accepted, the runner follows the new history.
    r.git(&["update-ref", "-d", "refs/keyrot/fetched/origin/main"]);
    r.git(&["reset", "-q", "--hard", "origin/main"]);
    apply(r, NOW, &[]).ok();
    assert_eq!(t.remote_actions(), ["rotate a"]);
}

#[test]
fn a_push_refused_by_a_server_hook_is_kept_unpublished_and_pushed_by_the_next_run() {
    let t = Team::new(1);
    let r = &t.runners[0];
    let hook = t.remote.join("hooks/pre-receive");
    // It refuses changes to branches (the lease is not a branch).
    std::fs::write(
        &hook,
        "#!/bin/sh\nwhile read old new ref; do case $ref in refs/heads/*) echo 'policy: no pushes today' >&2; exit 1;; esac; done\n",
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let base = r.head();
    let run = apply(r, NOW, &[]).fails(1);
    run.stderr_has("origin refused the push of apply commit");
    run.stderr_has("no pushes today");
    run.stderr_has("the next `keyrot apply` pushes it");
    // Nothing is live: the branch, the secrets folder and the remote are as they were,
    // and the lease is not left behind. The prepared commit waits in the journal.
    assert_eq!(r.head(), base);
    assert!(!r.secret_file("a").exists());
    assert_eq!(t.remote_actions(), Vec::<String>::new());
    assert_eq!(t.remote_git(&["for-each-ref", "refs/keyrot/"]), "");
    r.keyrot(&["plan", "--now", NOW])
        .ok()
        .stderr_has("note: 1 apply commit not pushed");
    // Still refused: still kept.
    apply(r, NOW, &[]).fails(1).stderr_has("no pushes today");
    std::fs::remove_file(&hook).unwrap();
    let run = apply(r, NOW, &[]).ok();
    run.stderr_has("finished an interrupted apply");
    run.stdout_has("Nothing to apply");
    assert_eq!(t.remote_actions(), ["rotate a"]);
    assert_eq!(r.head(), t.remote_git(&["rev-parse", "main"]).trim());
    assert_eq!(r.git(&["status", "--porcelain"]), "");
    assert_every_secret_delivered(&t);
}

#[test]
fn ci_without_a_secrets_folder_that_outlives_the_runner_is_refused() {
    let t = Team::new(1);
    let r = &t.runners[0];
    let run = r
        .keyrot_env(&["apply", "--yes", "--now", NOW], &[("CI", "true")])
        .fails(1);
    run.stderr_has("CI is set and new secrets would go to this runner's secrets folder");
    assert_eq!(t.remote_actions(), Vec::<String>::new());
    // Given explicitly, it is the user's choice.
    apply(r, NOW, &[("CI", "true")]).ok();
    // --no-remote works on the local clone alone.
    let local = clone_of(&t.origin, t.remote.to_str().unwrap());
    let run = local.keyrot(&["plan", "--now", NOW, "--no-remote"]).ok();
    assert!(!run.stderr.contains("origin/main"), "{}", run.stderr);
}

/// `git daemon` serving the remote's folder on a free loopback port, with pushes.
struct Daemon(std::process::Child, u16);

impl Daemon {
    fn start(base: &std::path::Path) -> Daemon {
        // git-daemon itself, not the `git daemon` wrapper, which would leave it
        // running when killed.
        let exec_path = Command::new("git").arg("--exec-path").output().unwrap().stdout;
        let daemon = PathBuf::from(String::from_utf8(exec_path).unwrap().trim()).join("git-daemon");
        let (child, port) = serve_on_loopback(|port| {
            Command::new(&daemon)
                .args([
                    "--reuseaddr",
                    "--export-all",
                    "--enable=receive-pack",
                    "--listen=127.0.0.1",
                ])
                .arg(format!("--port={port}"))
                .arg(format!("--base-path={}", base.display()))
                .arg(base)
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        });
        Daemon(child, port)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn runners_share_a_remote_over_git_daemon() {
    let t = Team::new(0);
    let daemon = Daemon::start(t.remote.parent().unwrap());
    let url = format!("git://127.0.0.1:{}/remote.git", daemon.1);
    let (a, b) = (clone_of(&t.origin, &url), clone_of(&t.origin, &url));
    apply(&a, NOW, &[]).ok().stdout_has("Apply complete");
    apply(&b, NOW, &[]).ok().stdout_has("Nothing to apply");
    apply(&b, ROUND_2, &[]).ok().stdout_has("Apply complete");
    assert_eq!(t.remote_actions(), ["rotate a", "rotate b"]);
    assert_eq!(t.remote_git(&["for-each-ref", "refs/keyrot/"]), "");
}

#[test]
fn an_apply_commit_made_without_the_remote_is_pushed_by_the_next_shared_apply() {
    let t = Team::new(1);
    let r = &t.runners[0];
    let secrets = r.secrets.to_str().unwrap().to_string();
    r.keyrot(&[
        "apply",
        "--yes",
        "--now",
        NOW,
        "--secrets-dir",
        &secrets,
        "--no-remote",
    ])
    .ok();
    let local = r.head();
    r.keyrot(&["plan", "--now", NOW])
        .ok()
        .stderr_has("note: 1 apply commit not pushed; the next `keyrot apply` pushes it");
    let run = apply(r, NOW, &[]).ok();
    run.stderr_has(&format!("note: pushed apply commit {local}"));
    run.stdout_has("Nothing to apply");
    assert_eq!(t.remote_git(&["rev-parse", "main"]).trim(), local);
    assert_eq!(t.remote_actions(), ["rotate a"]);
}

#[test]
fn ctrl_c_before_the_commit_releases_the_lease_and_applies_nothing() {
    let t = Team::new(1);
    let r = &t.runners[0];
    let base = r.head();
    let mut live = spawn_apply(r, NOW, &[("KEYROT_TEST_PAUSE", "apply-planned:3000")]);
    live.wait_for(true, "the pause", |l| l.starts_with("failpoint apply-planned"));
    assert_eq!(r.keyrot(&["lease", "--json"]).ok().json()["live"], true);
    live.signal("INT");
    assert_eq!(live.finish(), 1);
    live.assert_stderr_has("interrupted before anything was applied", "ctrl-c");
    assert_eq!(r.keyrot(&["lease", "--json"]).ok().stdout.trim(), "null");
    assert_eq!(r.head(), base);
    assert!(!r.secret_file("a").exists());
}

#[test]
fn the_scheduled_runner_applies_through_the_remote() {
    let t = Team::new(1);
    let r = &t.runners[0];
    let secrets = r.secrets.to_str().unwrap().to_string();
    let run = r.keyrot(&["run", "--once", "--apply", "--secrets-dir", &secrets]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stdout.contains("applied, commit"), "{}", run.stdout);
    // `run` plans at the clock's time, when all three keys are due.
    assert_eq!(t.remote_actions(), ["rotate a", "rotate b", "rotate c"]);
    assert_eq!(t.remote_git(&["for-each-ref", "refs/keyrot/"]), "");
}

/// An `sshd` from Debian's openssh-server on a free loopback port, with a throwaway
/// host key and one authorized client key; `ssh_command` is the GIT_SSH_COMMAND that
/// logs in with it.
struct Sshd {
    child: std::process::Child,
    port: u16,
    ssh_command: String,
}

impl Sshd {
    fn start(dir: &std::path::Path) -> Sshd {
        let keygen = |name: &str| {
            let ok = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(dir.join(name))
                .status()
                .unwrap()
                .success();
            assert!(ok, "ssh-keygen");
        };
        std::fs::create_dir_all(dir).unwrap();
        keygen("host");
        keygen("client");
        std::fs::copy(dir.join("client.pub"), dir.join("authorized_keys")).unwrap();
        // sshd wants its privilege separation folder (it runs as root in CI).
        let _ = std::fs::create_dir_all("/run/sshd");
        let config = dir.join("sshd_config");
        let (child, port) = serve_on_loopback(|port| {
            std::fs::write(
                &config,
                format!(
                    "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host\nAuthorizedKeysFile {d}/authorized_keys\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\nStrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\nPidFile {d}/sshd.pid\n",
                    d = dir.display()
                ),
            )
            .unwrap();
            Command::new("/usr/sbin/sshd")
                .args(["-D", "-e", "-f"])
                .arg(&config)
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("sshd (.ci/run installs openssh-server)")
        });
        let ssh_command = format!(
            "ssh -i {} -p {port} -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
            dir.join("client").display()
        );
        Sshd {
            child,
            port,
            ssh_command,
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn runners_share_a_remote_over_ssh() {
    let t = Team::new(0);
    let sshd = Sshd::start(&t.remote.parent().unwrap().join("sshd"));
    let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap();
    let url = format!(
        "ssh://{}@127.0.0.1:{}{}",
        user.trim(),
        sshd.port,
        t.remote.display()
    );
    let env = [("GIT_SSH_COMMAND", sshd.ssh_command.as_str())];
    let runners: Vec<Store> = (0..2)
        .map(|_| {
            let r = Store::bare();
            let ok = Command::new("git")
                .args(["clone", "-q", &url])
                .arg(&r.root)
                .env("GIT_SSH_COMMAND", &sshd.ssh_command)
                .env("GIT_CONFIG_GLOBAL", "/dev/null")
                .status()
                .unwrap()
                .success();
            assert!(ok, "clone over ssh");
            r
        })
        .collect();
    apply(&runners[0], NOW, &env).ok().stdout_has("Apply complete");
    apply(&runners[1], NOW, &env).ok().stdout_has("Nothing to apply");
    let lease = runners[1].keyrot_env(&["lease"], &env).ok();
    lease.stdout_has("No lease on origin");
    apply(&runners[1], ROUND_2, &env)
        .ok()
        .stdout_has("Apply complete");
    assert_eq!(t.remote_actions(), ["rotate a", "rotate b"]);
}

#[test]
fn a_pushed_apply_whose_local_side_fails_is_never_rolled_back_and_is_finished_next() {
    let t = Team::new(1);
    let r = &t.runners[0];
    let run = apply(r, NOW, &[("KEYROT_TEST_FAIL", "remote-move-local")]).fails(1);
    run.stderr_has("the apply landed as commit");
    // The remote has it; nothing was taken back, and the journal waits for the next run.
    assert_eq!(t.remote_actions(), ["rotate a"]);
    assert!(r.root.join(".git/keyrot/journal").exists());
    let run = apply(r, NOW, &[]).ok();
    run.stderr_has("finished an interrupted apply");
    assert_eq!(r.head(), t.remote_git(&["rev-parse", "main"]).trim());
    assert_eq!(r.git(&["status", "--porcelain"]), "");
    assert_every_secret_delivered(&t);
}

/// Commits that are not applies (a departure, an import, a compromise mark) in a shared
/// store are made on the remote's tip and pushed: a runner behind the remote catches up
/// before it reads anything, so it marks the secret the remote knows. A commit the
/// remote does not take stays local and is said to be unshared; `--no-remote` keeps one
/// local on purpose, and an apply through the remote then refuses until it is shared.
#[test]
fn commits_that_are_not_applies_are_shared_through_the_remote() {
    let t = Team::new(2);
    let (r1, r2) = (&t.runners[0], &t.runners[1]);
    let remote_tip = || t.remote_git(&["rev-parse", "main"]).trim().to_string();

    // A departure: committed, then pushed.
    let run = r1.keyrot(&["owner", "depart", "alice", "--at", NOW]).ok();
    run.stderr_has(&format!("note: pushed commit {} to origin/main", r1.head()));
    assert_eq!(remote_tip(), r1.head());
    assert!(t
        .remote_git(&["show", "main:owners.toml"])
        .contains("status = \"departed\""));

    // An import on the runner one commit behind: it catches up first, and its commit
    // lands on top of the departure.
    let records = r2.root.parent().unwrap().join("access.jsonl");
    std::fs::write(
        &records,
        "{\"key\":\"b\",\"at\":\"2026-11-22T10:00:00Z\",\"ip\":\"203.0.113.7\"}\n",
    )
    .unwrap();
    r2.keyrot(&["usage", "import", records.to_str().unwrap(), "--now", NOW])
        .ok()
        .stderr_has("note: pushed commit ");
    assert_eq!(remote_tip(), r2.head());
    assert_eq!(r2.git(&["rev-parse", "HEAD~1"]).trim(), r1.head());
    assert!(r2.read("owners.toml").contains("status = \"departed\""));

    // r1 applies through the remote (key a is due), so r2 is behind again; a leak of
    // that new secret, scanned on r2 with --mark-compromised, is attributed to key a
    // (r2 caught up before reading the keys) and the mark is shared.
    apply(r1, NOW, &[]).ok();
    let leak = r2.root.parent().unwrap().join("leak.txt");
    let secret = std::fs::read_to_string(r1.secret_file("a")).unwrap();
    std::fs::write(&leak, format!("token: {}", secret.trim_end())).unwrap();
    r2.keyrot(&["scan", leak.to_str().unwrap(), "--mark-compromised"])
        .fails(1)
        .stdout_has(" a (current secret)")
        .stderr_has("note: pushed commit ");
    assert_eq!(remote_tip(), r2.head());
    assert!(t
        .remote_git(&["show", "main:keys/a.toml"])
        .contains("compromised = true"));

    // A remote that refuses the push (a hook): the commit stays here, said so.
    std::fs::write(
        &records,
        "{\"key\":\"c\",\"at\":\"2026-11-23T10:00:00Z\",\"ip\":\"203.0.113.7\"}\n",
    )
    .unwrap();
    let hook = t.remote.join("hooks/pre-receive");
    std::fs::write(&hook, "#!/bin/sh\necho 'protected branch' >&2\nexit 1\n").unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let before = remote_tip();
    let run = r1
        .keyrot(&["usage", "import", records.to_str().unwrap(), "--now", ROUND_2])
        .fails(1);
    run.stderr_has(&format!(
        "error: remote: origin did not take commit {} (",
        r1.head()
    ))
    .stderr_has("): it is recorded in this store but not shared")
    .stderr_has("hint: share it with `git pull --rebase origin main && git push origin main`");
    assert_eq!(remote_tip(), before);
    std::fs::remove_file(&hook).unwrap();

    // --no-remote: local on purpose; the next apply through the remote refuses to
    // start from a history the remote lacks.
    // (Nothing to record here, but the runner is brought up to the remote first.)
    r2.keyrot(&["owner", "depart", "alice", "--at", NOW])
        .ok()
        .stdout_has("already recorded as departed");
    let commits = r2.commit_count();
    std::fs::write(
        &records,
        "{\"key\":\"b\",\"at\":\"2026-11-24T10:00:00Z\",\"ip\":\"203.0.113.7\"}\n",
    )
    .unwrap();
    r2.keyrot(&[
        "usage",
        "import",
        records.to_str().unwrap(),
        "--now",
        ROUND_2,
        "--no-remote",
    ])
    .ok();
    assert_eq!(r2.commit_count(), commits + 1);
    assert_ne!(remote_tip(), r2.head());
    apply(r2, ROUND_2, &[])
        .fails(1)
        .stderr_has("commit(s) that origin lacks");
}
