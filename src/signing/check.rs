//! Checking a commit's signature as `git verify-commit` does: SSH signatures against
//! an allowed-signers file (ssh-keygen's format, `gpg.ssh.allowedSignersFile`),
//! OpenPGP and X.509 ones against the user's keyring.

use std::path::PathBuf;

use serde::Serialize;

use super::{run_with_input, stderr_line, Format, GitConfig, TempFile};

/// What a commit's signature says about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", content = "detail", rename_all = "lowercase")]
pub(crate) enum Status {
    /// Not signed.
    None,
    /// A good signature by a trusted key: an allowed signer (SSH) or a key the keyring
    /// trusts fully (OpenPGP, X.509). Carries the signer.
    Good(String),
    /// A signature that verifies, by a key nobody said to trust. Carries what is known
    /// of the key.
    Untrusted(String),
    /// A signature that does not verify, or cannot be checked (no public key, no
    /// program). Carries why.
    Bad(String),
}

impl Status {
    /// The signer to show: who signed, or what is known of the key.
    pub(crate) fn signer(&self) -> Option<&str> {
        match self {
            Status::Good(s) | Status::Untrusted(s) => Some(s),
            Status::None | Status::Bad(_) => None,
        }
    }

    /// One word for tables and JSON: `good`, `untrusted`, `bad`, `none`.
    pub(crate) fn word(&self) -> &'static str {
        match self {
            Status::None => "none",
            Status::Good(_) => "good",
            Status::Untrusted(_) => "untrusted",
            Status::Bad(_) => "bad",
        }
    }
}

/// Checks commit signatures with git's settings, read once.
pub(crate) struct Checker {
    allowed_signers: Option<PathBuf>,
    ssh_program: String,
    gpg_program: String,
    x509_program: String,
}

impl Checker {
    /// `allowed_signers` overrides `gpg.ssh.allowedSignersFile`; a file named but
    /// missing is an error (a check that trusts nobody must not pass silently).
    pub(crate) fn from_config(
        repo: &git2::Repository,
        allowed_signers: Option<PathBuf>,
    ) -> Result<Checker, String> {
        let config = GitConfig::of(repo)?;
        let allowed_signers = allowed_signers.or_else(|| config.path("gpg.ssh.allowedsignersfile"));
        if let Some(file) = allowed_signers.as_ref().filter(|f| !f.is_file()) {
            return Err(format!(
                "the allowed-signers file {} does not exist",
                file.display()
            ));
        }
        Ok(Checker::with(&config, allowed_signers))
    }

    /// [`Checker::from_config`] for showing signatures (`keyrot log`): a configured
    /// allowed-signers file that is missing is not an error there; without it SSH
    /// signatures show as `untrusted` (with their key), as nobody said whom to trust.
    pub(crate) fn for_display(repo: &git2::Repository) -> Result<Checker, String> {
        let config = GitConfig::of(repo)?;
        let allowed_signers = config.path("gpg.ssh.allowedsignersfile").filter(|f| f.is_file());
        Ok(Checker::with(&config, allowed_signers))
    }

    fn with(config: &GitConfig, allowed_signers: Option<PathBuf>) -> Checker {
        Checker {
            allowed_signers,
            ssh_program: config.program(Format::Ssh),
            gpg_program: config.program(Format::OpenPgp),
            x509_program: config.program(Format::X509),
        }
    }

    pub(crate) fn has_allowed_signers(&self) -> bool {
        self.allowed_signers.is_some()
    }

    /// The signature status of `commit`.
    pub(crate) fn check(&self, repo: &git2::Repository, commit: &git2::Commit) -> Status {
        // Unsigned commits (most) are told from the commit already read; only signed
        // ones are read again whole to split off what the signature covers.
        if commit.header_field_bytes("gpgsig").is_err() {
            return Status::None;
        }
        let id = commit.id();
        let (signature, signed) = match repo.extract_signature(&id, None) {
            Ok(pair) => pair,
            Err(e) if e.code() == git2::ErrorCode::NotFound => return Status::None,
            Err(e) => return Status::Bad(format!("unreadable signature: {}", e.message())),
        };
        let signature = String::from_utf8_lossy(&signature).into_owned();
        let time = repo
            .find_commit(id)
            .map(|c| c.committer().when().seconds())
            .unwrap_or(0);
        match Format::of_signature(&signature) {
            Some(Format::Ssh) => self.ssh(&signature, &signed, time),
            Some(format @ (Format::OpenPgp | Format::X509)) => {
                let program = if format == Format::X509 {
                    &self.x509_program
                } else {
                    &self.gpg_program
                };
                gpg(program, &signature, &signed)
            }
            None => Status::Bad("a signature of an unknown format".into()),
        }
    }

    fn ssh(&self, signature: &str, signed: &[u8], time: i64) -> Status {
        let file = match TempFile::new("signature", signature.as_bytes()) {
            Ok(f) => f,
            Err(e) => return Status::Bad(e),
        };
        let program = &self.ssh_program;
        // Whether it verifies at all, and with which key (ssh-keygen prints its SHA256
        // fingerprint): the answer when no allowed signer matches.
        let key_of = || -> Status {
            match run_with_input(
                program,
                &["-Y", "check-novalidate", "-n", "git", "-s", file.path()],
                signed,
            ) {
                Ok(out) if out.status.success() => {
                    let text = String::from_utf8_lossy(&out.stdout).into_owned()
                        + String::from_utf8_lossy(&out.stderr).as_ref();
                    let key = text
                        .split_whitespace()
                        .find(|w| w.starts_with("SHA256:"))
                        .unwrap_or("an unknown key")
                        .to_string();
                    Status::Untrusted(format!("ssh key {key}"))
                }
                Ok(out) => Status::Bad(stderr_line(&out)),
                Err(e) => Status::Bad(e),
            }
        };
        let Some(allowed) = self.allowed_signers.as_ref().and_then(|p| p.to_str()) else {
            return key_of();
        };
        let verify_time = format!("verify-time={}", ssh_time(time));
        let principals = match run_with_input(
            program,
            &["-Y", "find-principals", "-s", file.path(), "-f", allowed],
            b"",
        ) {
            Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
            Ok(_) => return key_of(),
            Err(e) => return Status::Bad(e),
        };
        // The first principal the key is allowed for that verifies; a signature that
        // verifies for none of them is bad (wrong namespace, outside its validity).
        let mut failure = None;
        for principal in principals.lines().map(str::trim).filter(|p| !p.is_empty()) {
            let args = [
                "-Y",
                "verify",
                "-f",
                allowed,
                "-I",
                principal,
                "-n",
                "git",
                "-s",
                file.path(),
                "-O",
                &verify_time,
            ];
            match run_with_input(program, &args, signed) {
                Ok(out) if out.status.success() => return Status::Good(principal.to_string()),
                Ok(out) => failure = Some(stderr_line(&out)),
                Err(e) => failure = Some(e),
            }
        }
        match failure {
            Some(why) => Status::Bad(why),
            None => key_of(),
        }
    }
}

/// `YYYYMMDDHHMMSS` in UTC, as ssh-keygen's `verify-time` option wants it.
fn ssh_time(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|t| t.format("%Y%m%d%H%M%SZ").to_string())
        .unwrap_or_default()
}

/// An OpenPGP (gpg) or X.509 (gpgsm) signature, read from the program's status lines.
fn gpg(program: &str, signature: &str, signed: &[u8]) -> Status {
    let file = match TempFile::new("signature", signature.as_bytes()) {
        Ok(f) => f,
        Err(e) => return Status::Bad(e),
    };
    let out = match run_with_input(program, &["--status-fd=1", "--verify", file.path(), "-"], signed) {
        Ok(out) => out,
        Err(e) => return Status::Bad(e),
    };
    let status = String::from_utf8_lossy(&out.stdout);
    let mut good = None;
    let mut trusted = false;
    for line in status.lines() {
        let Some(rest) = line.strip_prefix("[GNUPG:] ") else {
            continue;
        };
        let mut words = rest.splitn(3, ' ');
        match (words.next(), words.next(), words.next()) {
            (Some("GOODSIG"), Some(id), uid) => good = Some(uid.unwrap_or(id).to_string()),
            (Some("BADSIG" | "EXPSIG" | "EXPKEYSIG" | "REVKEYSIG"), ..) => {
                return Status::Bad(rest.to_string());
            }
            (Some("ERRSIG"), Some(id), _) => return Status::Bad(format!("cannot check: no public key {id}")),
            (Some("TRUST_FULLY" | "TRUST_ULTIMATE"), ..) => trusted = true,
            _ => {}
        }
    }
    match good {
        Some(signer) if out.status.success() && trusted => Status::Good(signer),
        Some(signer) if out.status.success() => Status::Untrusted(signer),
        _ => Status::Bad(stderr_line(&out)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_times_are_utc_digits() {
        assert_eq!(ssh_time(0), "19700101000000Z");
        assert_eq!(ssh_time(1_795_305_600), "20261122000000Z");
    }

    #[test]
    fn statuses_name_their_signer_and_word() {
        assert_eq!(Status::Good("a".into()).signer(), Some("a"));
        assert_eq!(Status::Bad("x".into()).signer(), None);
        assert_eq!(Status::None.word(), "none");
        assert_eq!(Status::Untrusted("k".into()).word(), "untrusted");
    }
}
