//! Making a commit signature: which key and program git's settings name, and running
//! it over the commit buffer.

use super::{run_with_input, stderr_line, Format, GitConfig, TempFile};
use crate::error::{Error, Result};
use crate::store::Settings;

/// How apply commits are signed, resolved from git's settings before an apply starts,
/// so that a missing key fails the apply before any service is touched.
#[derive(Debug)]
pub(crate) struct Signer {
    format: Format,
    program: String,
    key: Key,
}

#[derive(Debug)]
enum Key {
    /// An SSH key file (private, or public with the private half in the agent).
    Path(String),
    /// An SSH public key written in the setting itself (`key::…` or `ssh-…`): the agent holds
    /// the private half.
    Literal(String),
    /// An OpenPGP or X.509 key id, or the committer's `Name <email>`.
    Id(String),
}

impl Signer {
    /// The signer for apply commits: `Some` when `commit.gpgSign` is set in git's
    /// configuration or `[commit] sign = true` in keyrot.toml. Either way signing is
    /// fail-closed, as it is for git itself: a signature that cannot be made stops the
    /// apply. The committer's `Name <email>` is the default OpenPGP key, as for git.
    pub(crate) fn from_config(
        repo: &git2::Repository,
        settings: &Settings,
        committer: &git2::Signature,
    ) -> Result<Option<Signer>> {
        let config = GitConfig::of(repo).map_err(Error::Signing)?;
        let wanted = settings.commit_sign || config.bool("commit.gpgsign").map_err(Error::Signing)?;
        if !wanted {
            return Ok(None);
        }
        let format = config.format().map_err(Error::Signing)?;
        let program = config.program(format);
        let key = match (format, config.string("user.signingkey")) {
            (Format::Ssh, Some(k)) => match k.strip_prefix("key::") {
                Some(literal) => Key::Literal(literal.to_string()),
                None if k.starts_with("ssh-") || k.starts_with("ecdsa-") || k.starts_with("sk-") => Key::Literal(k),
                None => Key::Path(super::expand_home(&k).to_string_lossy().into_owned()),
            },
            (Format::Ssh, None) => match config.string("gpg.ssh.defaultkeycommand") {
                Some(cmd) => Key::Literal(default_ssh_key(&cmd)?),
                None => {
                    return Err(Error::Signing(
                        "gpg.format is ssh but user.signingKey is not set (git config user.signingKey ~/.ssh/id_ed25519.pub)"
                            .into(),
                    ))
                }
            },
            (_, Some(k)) => Key::Id(k),
            (_, None) => Key::Id(format!(
                "{} <{}>",
                String::from_utf8_lossy(committer.name_bytes()),
                String::from_utf8_lossy(committer.email_bytes())
            )),
        };
        if let Key::Path(p) = &key {
            if !std::path::Path::new(p).is_file() {
                return Err(Error::Signing(format!("user.signingKey {p} is not a file")));
            }
        }
        Ok(Some(Signer { format, program, key }))
    }

    /// The armored signature of `buffer` (a commit without its signature header).
    pub(crate) fn sign(&self, buffer: &str) -> Result<String> {
        let fail = |why: String| Error::Signing(format!("{} ({}): {why}", self.program, self.format.name()));
        let (output, expect) = match (&self.key, self.format) {
            (Key::Path(path), _) => (
                run_with_input(
                    &self.program,
                    &["-Y", "sign", "-n", "git", "-f", path],
                    buffer.as_bytes(),
                ),
                "-----BEGIN SSH SIGNATURE-----",
            ),
            (Key::Literal(key), _) => {
                let file = TempFile::new("signing-key", format!("{key}\n").as_bytes()).map_err(fail)?;
                (
                    run_with_input(
                        &self.program,
                        &["-Y", "sign", "-n", "git", "-U", "-f", file.path()],
                        buffer.as_bytes(),
                    ),
                    "-----BEGIN SSH SIGNATURE-----",
                )
            }
            (Key::Id(id), format) => (
                run_with_input(&self.program, &["--status-fd=2", "-bsau", id], buffer.as_bytes()),
                if format == Format::X509 {
                    "-----BEGIN SIGNED MESSAGE-----"
                } else {
                    "-----BEGIN PGP SIGNATURE-----"
                },
            ),
        };
        let output = output.map_err(fail)?;
        let signature = String::from_utf8_lossy(&output.stdout).into_owned();
        let gpg_created = self.format == Format::Ssh
            || String::from_utf8_lossy(&output.stderr).contains("[GNUPG:] SIG_CREATED ");
        if !output.status.success() || !gpg_created || !signature.trim_start().starts_with(expect) {
            return Err(fail(stderr_line(&output)));
        }
        Ok(signature)
    }
}

/// The first public key `gpg.ssh.defaultKeyCommand` prints (git's fallback when
/// `user.signingKey` is unset, typically `ssh-add -L`).
fn default_ssh_key(command: &str) -> Result<String> {
    let mut words = command.split_whitespace();
    let program = words.next().unwrap_or_default();
    let args: Vec<&str> = words.collect();
    let output = run_with_input(program, &args, b"").map_err(Error::Signing)?;
    let text = String::from_utf8_lossy(&output.stdout);
    match text.lines().map(str::trim).find(|l| !l.is_empty()) {
        Some(key) if output.status.success() => Ok(key.strip_prefix("key::").unwrap_or(key).to_string()),
        _ => Err(Error::Signing(format!(
            "gpg.ssh.defaultKeyCommand `{command}` gave no key: {}",
            stderr_line(&output)
        ))),
    }
}
