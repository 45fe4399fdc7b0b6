//! Commit signatures the way git makes and checks them: git's own settings
//! (`commit.gpgSign`, `gpg.format`, `user.signingKey`, `gpg.program`,
//! `gpg.<format>.program`, `gpg.ssh.allowedSignersFile`) and the same programs
//! (`ssh-keygen -Y sign -n git`, `gpg -bsau`), so `git verify-commit` and a forge's
//! "Verified" badge accept keyrot's commits and keyrot reads everyone else's. Keys stay
//! where the user keeps them (a file or the agent); keyrot never sees one.

mod check;
mod make;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub(crate) use check::{Checker, Status};
pub(crate) use make::Signer;

/// Writes a commit object (no ref moves), signed by `signer` when given, as git signs:
/// the commit without its signature header is what the signature covers, and the
/// signature goes in as the `gpgsig` header.
pub(crate) fn write_commit(
    repo: &git2::Repository,
    sig: &git2::Signature,
    message: &str,
    tree: &git2::Tree,
    parents: &[&git2::Commit],
    signer: Option<&Signer>,
) -> crate::error::Result<git2::Oid> {
    let git = |what: &'static str| move |e| crate::error::Error::git(what, e);
    let Some(signer) = signer else {
        return repo
            .commit(None, sig, sig, message, tree, parents)
            .map_err(git("writing the commit"));
    };
    let buffer = repo
        .commit_create_buffer(sig, sig, message, tree, parents)
        .map_err(git("building the commit"))?;
    let buffer = buffer
        .as_str()
        .ok_or_else(|| crate::error::Error::Signing("the commit is not UTF-8".into()))?;
    let signature = signer.sign(buffer)?;
    repo.commit_signed(buffer, &signature, None)
        .map_err(git("writing the signed commit"))
}

/// The signature formats git knows (`gpg.format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    OpenPgp,
    Ssh,
    X509,
}

impl Format {
    fn parse(text: &str) -> Option<Format> {
        match text {
            "openpgp" => Some(Format::OpenPgp),
            "ssh" => Some(Format::Ssh),
            "x509" => Some(Format::X509),
            _ => None,
        }
    }

    /// Which format an armored signature is, by its first line.
    fn of_signature(signature: &str) -> Option<Format> {
        let first = signature.trim_start().lines().next()?;
        match first {
            "-----BEGIN SSH SIGNATURE-----" => Some(Format::Ssh),
            "-----BEGIN PGP SIGNATURE-----" => Some(Format::OpenPgp),
            "-----BEGIN SIGNED MESSAGE-----" => Some(Format::X509),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Format::OpenPgp => "openpgp",
            Format::Ssh => "ssh",
            Format::X509 => "x509",
        }
    }
}

/// The git settings that concern signatures, read once.
struct GitConfig(git2::Config);

impl GitConfig {
    fn of(repo: &git2::Repository) -> Result<GitConfig, String> {
        repo.config()
            .and_then(|mut c| c.snapshot())
            .map(GitConfig)
            .map_err(|e| format!("reading git's configuration: {}", e.message()))
    }

    fn string(&self, name: &str) -> Option<String> {
        self.0.get_string(name).ok().filter(|s| !s.is_empty())
    }

    fn bool(&self, name: &str) -> Result<bool, String> {
        match self.0.get_bool(name) {
            Ok(b) => Ok(b),
            Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(false),
            Err(e) => Err(format!("git config {name}: {}", e.message())),
        }
    }

    /// A path setting, with `~/` expanded as git does.
    fn path(&self, name: &str) -> Option<PathBuf> {
        self.string(name).map(|p| expand_home(&p))
    }

    /// `gpg.format`, openpgp when unset.
    fn format(&self) -> Result<Format, String> {
        match self.string("gpg.format") {
            None => Ok(Format::OpenPgp),
            Some(f) => {
                Format::parse(&f).ok_or_else(|| format!("gpg.format `{f}` is not one of openpgp, ssh, x509"))
            }
        }
    }

    /// The program for `format`: `gpg.<format>.program`, for openpgp also the older
    /// `gpg.program`, else git's default.
    fn program(&self, format: Format) -> String {
        let specific = self.string(&format!("gpg.{}.program", format.name()));
        let legacy = (format == Format::OpenPgp)
            .then(|| self.string("gpg.program"))
            .flatten();
        specific.or(legacy).unwrap_or_else(|| {
            match format {
                Format::OpenPgp => "gpg",
                Format::Ssh => "ssh-keygen",
                Format::X509 => "gpgsm",
            }
            .to_string()
        })
    }
}

fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => Path::new(&home).join(rest),
        _ => PathBuf::from(path),
    }
}

/// Runs `program args…` with `input` on its standard input (written from a thread, so
/// a program that answers before it has read everything cannot deadlock us).
fn run_with_input(program: &str, args: &[&str], input: &[u8]) -> Result<Output, String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run `{program}`: {e}"))?;
    let mut stdin = child.stdin.take();
    let output = std::thread::scope(|s| {
        s.spawn(move || {
            if let Some(stdin) = stdin.as_mut() {
                // A program that exits early closes the pipe; its exit status says why.
                let _ = stdin.write_all(input);
            }
            drop(stdin);
        });
        child.wait_with_output()
    });
    output.map_err(|e| format!("running `{program}`: {e}"))
}

/// What a program said on standard error, on one line, for an error message.
fn stderr_line(output: &Output) -> String {
    let text = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("[GNUPG:]"))
        .collect();
    if lines.is_empty() {
        output.status.to_string()
    } else {
        lines.join("; ")
    }
}

/// A file in the temp folder, created new (never following a planted link) and
/// private, deleted when dropped. For the public key or signature a program reads.
struct TempFile(PathBuf);

impl TempFile {
    fn new(what: &str, contents: &[u8]) -> Result<TempFile, String> {
        use std::os::unix::fs::OpenOptionsExt;
        let name = crate::secret::random_hex(8).map_err(|e| e.to_string())?;
        let path = std::env::temp_dir().join(format!("keyrot-{what}-{name}"));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let temp = TempFile(path);
        file.write_all(contents)
            .map_err(|e| format!("{}: {e}", temp.0.display()))?;
        Ok(temp)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap_or_default()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_format_is_told_by_its_armor() {
        assert_eq!(
            Format::of_signature("-----BEGIN SSH SIGNATURE-----\nU1NIU0lH\n"),
            Some(Format::Ssh)
        );
        assert_eq!(
            Format::of_signature("\n-----BEGIN PGP SIGNATURE-----\n"),
            Some(Format::OpenPgp)
        );
        assert_eq!(
            Format::of_signature("-----BEGIN SIGNED MESSAGE-----\n"),
            Some(Format::X509)
        );
        assert_eq!(Format::of_signature("garbage"), None);
        assert_eq!(Format::parse("ssh"), Some(Format::Ssh));
        assert_eq!(Format::parse("SSH"), None);
    }

    #[test]
    fn a_program_gets_its_input_and_says_why_it_failed() {
        let out = run_with_input("cat", &[], &vec![b'x'; 1 << 20]).unwrap();
        assert_eq!(out.stdout.len(), 1 << 20);
        let out = run_with_input(
            "sh",
            &["-c", "echo '[GNUPG:] NOISE' >&2; echo nope >&2; exit 3"],
            b"",
        )
        .unwrap();
        assert_eq!(stderr_line(&out), "nope");
        let out = run_with_input("false", &[], b"").unwrap();
        assert_eq!(stderr_line(&out), "exit status: 1");
        assert!(run_with_input("/nonexistent/program", &[], b"")
            .unwrap_err()
            .contains("cannot run"));
    }

    #[test]
    fn temp_files_are_private_and_go_when_dropped() {
        use std::os::unix::fs::PermissionsExt;
        let file = TempFile::new("test", b"contents").unwrap();
        let path = std::path::PathBuf::from(file.path());
        assert_eq!(std::fs::read(&path).unwrap(), b"contents");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        drop(file);
        assert!(!path.exists());
    }
}
