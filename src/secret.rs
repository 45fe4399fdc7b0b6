//! New secrets: drawn from the operating system's CSPRNG, formatted as
//! `<prefix>_<service>_<base62 body><6-char base62 CRC32 checksum>`, fingerprinted
//! with SHA-256, and written to the secrets folder with owner-only permissions.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rand::rngs::OsRng;
use rand::TryRngCore;

use crate::error::{Error, Result};
use crate::store::files::sha256_tagged;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const CHECKSUM_CHARS: usize = 6;

/// A secret's plaintext. Never printed or logged (no `Display`, a redacting
/// `Debug`), and overwritten in memory when dropped.
pub struct Secret(String);

impl Secret {
    /// Draws `bytes` random bytes from the OS CSPRNG and formats them.
    pub fn generate(prefix: &str, service: &str, bytes: usize) -> Result<Secret> {
        let mut raw = vec![0u8; bytes];
        OsRng
            .try_fill_bytes(&mut raw)
            .map_err(|e| Error::Usage(format!("the operating system's random generator failed: {e}")))?;
        let body = base62_fixed(&raw);
        wipe(&mut raw);
        // One allocation of the final size, so no copy of the secret is left behind in
        // memory freed by a reallocation; the intermediate body is wiped.
        let mut s = String::with_capacity(prefix.len() + service.len() + body.len() + 2 + CHECKSUM_CHARS);
        s.push_str(prefix);
        s.push('_');
        s.push_str(service);
        s.push('_');
        s.push_str(&body);
        let mut body = body.into_bytes();
        wipe(&mut body);
        let check = crc32(s.as_bytes());
        s.push_str(&base62_u32(check));
        Ok(Secret(s))
    }

    /// A secret a service generated (a provider's `create`). Refuses what cannot be
    /// written as one line of a secret file.
    pub fn from_service(s: String) -> std::result::Result<Secret, String> {
        let secret = Secret(s);
        let text = secret.expose();
        if text.is_empty() || text.len() > 4096 {
            return Err("a secret must be 1 to 4096 bytes".into());
        }
        if text.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err("a secret must not contain spaces, newlines or control characters".into());
        }
        Ok(secret)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `sha256:<hex>` of the secret's bytes: what the store records.
    pub fn fingerprint(&self) -> String {
        sha256_tagged(self.0.as_bytes())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        let mut bytes = std::mem::take(&mut self.0).into_bytes();
        wipe(&mut bytes);
    }
}

fn read_secret_file(path: &Path) -> Option<Secret> {
    let mut bytes = fs::read(path).ok()?;
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
    }
    match String::from_utf8(bytes) {
        Ok(s) => Some(Secret(s)),
        Err(e) => {
            wipe(&mut e.into_bytes());
            None
        }
    }
}

/// Overwrites memory in a way the optimiser may not remove.
pub(crate) fn wipe(bytes: &mut [u8]) {
    for b in bytes.iter_mut() {
        // SAFETY: `b` is a valid, aligned, exclusive reference to one byte.
        unsafe { std::ptr::write_volatile(b, 0) };
    }
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
}

/// Whether `s` is shaped like a keyrot secret and its checksum matches: lets scanners
/// tell a leaked keyrot secret from random text without a network call.
pub fn checksum_ok(s: &str) -> bool {
    if s.len() <= CHECKSUM_CHARS || !s.is_ascii() {
        return false;
    }
    let (head, check) = s.split_at(s.len() - CHECKSUM_CHARS);
    head.splitn(3, '_').count() == 3 && base62_u32(crc32(head.as_bytes())) == check
}

/// Base62 of a big-endian number, zero-padded to the width that any value of that
/// many bytes needs, so every secret of one size has one length.
fn base62_fixed(bytes: &[u8]) -> String {
    // chars = ceil(8n / log2(62))
    let width = ((bytes.len() as f64 * 8.0) / 62f64.log2()).ceil() as usize;
    let mut num = bytes.to_vec();
    let mut digits = Vec::with_capacity(width);
    while digits.len() < width {
        let mut rem: u32 = 0;
        for b in num.iter_mut() {
            let acc = (rem << 8) | u32::from(*b);
            *b = (acc / 62) as u8;
            rem = acc % 62;
        }
        digits.push(BASE62[rem as usize]);
    }
    wipe(&mut num);
    digits.reverse();
    String::from_utf8(digits).unwrap_or_default()
}

fn base62_u32(mut v: u32) -> String {
    let mut out = [b'0'; CHECKSUM_CHARS];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(v % 62) as usize];
        v /= 62;
    }
    String::from_utf8(out.to_vec()).unwrap_or_default()
}

/// CRC-32 (IEEE 802.3), as in zip and PNG.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

/// The folder new secrets are written to: `<id>.secret`, 0600, in a 0700 folder
/// outside the store.
pub struct SecretsDir {
    path: PathBuf,
}

impl SecretsDir {
    /// Opens (creating) the folder, refusing one inside the store's work tree.
    pub fn open(path: &Path, store_root: &Path) -> Result<SecretsDir> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(|e| Error::io(path, e))?;
        let real = path.canonicalize().map_err(|e| Error::io(path, e))?;
        // The journals record this path so that a crash after the commit can be
        // finished; they are JSON, which holds only UTF-8 text.
        if real.to_str().is_none() {
            return Err(Error::Usage(format!(
                "the secrets folder {} resolves to a path that is not valid UTF-8; keyrot records it in its apply journal, so it must be\n  hint: choose a folder whose path is UTF-8",
                real.display()
            )));
        }
        let store = store_root.canonicalize().map_err(|e| Error::io(store_root, e))?;
        if real.starts_with(&store) {
            return Err(Error::Usage(format!(
                "the secrets folder {} is inside the store {}; secrets must never be where git can commit them\n  hint: pass --secrets-dir with a folder outside the store",
                real.display(),
                store.display()
            )));
        }
        let meta = fs::metadata(&real).map_err(|e| Error::io(&real, e))?;
        if meta.permissions().mode() & 0o077 != 0 {
            fs::set_permissions(&real, fs::Permissions::from_mode(0o700)).map_err(|e| Error::io(&real, e))?;
        }
        Ok(SecretsDir { path: real })
    }

    /// The folder at `path` if it exists (for recovery, which must not create one).
    pub fn existing(path: &Path) -> Option<SecretsDir> {
        path.is_dir().then(|| SecretsDir {
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn final_path(&self, id: &str) -> PathBuf {
        self.path.join(format!("{id}.secret"))
    }

    fn pending_path(&self, id: &str, txid: &str) -> PathBuf {
        self.path.join(format!("{id}.secret.{txid}.pending"))
    }

    /// Writes the secret and a newline to a pending file, created 0600 (never readable
    /// by others, not even briefly). Durable after [`SecretsDir::sync`].
    pub fn write_pending(&self, id: &str, txid: &str, secret: &Secret) -> Result<()> {
        let path = self.pending_path(id, txid);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let mut line = Vec::with_capacity(secret.expose().len() + 1);
        line.extend_from_slice(secret.expose().as_bytes());
        line.push(b'\n');
        let written = f.write_all(&line);
        wipe(&mut line);
        written.map_err(|e| Error::io(&path, e))
    }

    /// Moves a pending secret into place as `<id>.secret`, replacing the old one.
    pub fn promote(&self, id: &str, txid: &str) -> Result<PathBuf> {
        let from = self.pending_path(id, txid);
        let to = self.final_path(id);
        fs::rename(&from, &to).map_err(|e| Error::io(&from, e))?;
        Ok(to)
    }

    /// [`SecretsDir::promote`], or nothing if an earlier run already promoted it: then
    /// `<id>.secret` must hold the secret whose fingerprint the commit recorded.
    pub fn promote_if_pending(&self, id: &str, txid: &str, fingerprint: &str) -> Result<PathBuf> {
        if self.pending_path(id, txid).exists() {
            return self.promote(id, txid);
        }
        let done = self.final_path(id);
        let mut content = fs::read(&done).unwrap_or_default();
        if content.last() == Some(&b'\n') {
            content.pop();
        }
        let matches = !content.is_empty() && sha256_tagged(&content) == fingerprint;
        wipe(&mut content);
        if matches {
            return Ok(done);
        }
        Err(Error::Usage(format!(
            "the new secret for key {id} is missing from {}: neither {id}.secret.{txid}.pending nor a {id}.secret with fingerprint {fingerprint} exists\n  hint: the commit records that fingerprint; rotate the key again (keyrot apply) to issue a new secret",
            self.path.display()
        )))
    }

    /// Pending secret files that no apply in progress owns: left by an apply that died
    /// before its commit. Never live; safe to delete.
    pub fn orphans(&self, except_txid: &str) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = fs::read_dir(&self.path)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                name.ends_with(".pending") && !name.ends_with(&format!(".{except_txid}.pending"))
            })
            .collect();
        out.sort();
        out
    }

    /// The secret in a pending file, if it is there.
    pub fn read_pending(&self, id: &str, txid: &str) -> Option<Secret> {
        read_secret_file(&self.pending_path(id, txid))
    }

    /// The secret in `<id>.secret`, if it is there.
    pub fn read_final(&self, id: &str) -> Option<Secret> {
        read_secret_file(&self.final_path(id))
    }

    pub fn discard(&self, id: &str, txid: &str) {
        let _ = fs::remove_file(self.pending_path(id, txid));
    }

    /// Removes a revoked key's secret file, if there is one.
    pub fn remove(&self, id: &str) -> Result<()> {
        let path = self.final_path(id);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(&path, e)),
            _ => Ok(()),
        }
    }

    /// Makes everything written to the folder durable: file contents and entries
    /// (new files, renames).
    pub fn sync(&self) -> Result<()> {
        crate::durable::sync_filesystem(&self.path)
    }
}

/// The default secrets folder for a store: `$XDG_STATE_HOME/keyrot/secrets/<store>-<hash>`
/// (or `~/.local/state/…`), one folder per store so that two stores with a key of the
/// same id never overwrite each other's secret.
pub fn default_dir(store_root: &Path) -> Result<PathBuf> {
    let base = match std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        Some(state) => PathBuf::from(state),
        None => match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(home) => PathBuf::from(home).join(".local").join("state"),
            None => {
                return Err(Error::Usage(
                    "cannot find a per-user state folder ($XDG_STATE_HOME and $HOME are unset)\n  hint: pass --secrets-dir DIR".into(),
                ))
            }
        },
    };
    let real = store_root.canonicalize().map_err(|e| Error::io(store_root, e))?;
    let name = real
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "store".into());
    let hash = sha256_tagged(real.to_string_lossy().as_bytes());
    Ok(base
        .join("keyrot")
        .join("secrets")
        .join(format!("{name}-{}", &hash["sha256:".len().."sha256:".len() + 8])))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn secrets_have_the_spec_shape() {
        let s = Secret::generate("kr", "binance", 32).unwrap();
        let text = s.expose();
        assert!(text.starts_with("kr_binance_"), "{}", text.len());
        let rest = &text["kr_binance_".len()..];
        assert_eq!(rest.len(), 43 + CHECKSUM_CHARS);
        assert!(rest.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert!(checksum_ok(text));
        assert_eq!(s.fingerprint().len(), "sha256:".len() + 64);
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
    }

    #[test]
    fn two_secrets_differ() {
        let a = Secret::generate("kr", "x", 32).unwrap();
        let b = Secret::generate("kr", "x", 32).unwrap();
        assert_ne!(a.expose(), b.expose());
    }

    #[test]
    fn a_changed_character_fails_the_checksum() {
        let s = Secret::generate("kr", "x", 32).unwrap();
        let mut t = s.expose().as_bytes().to_vec();
        t[10] = if t[10] == b'A' { b'B' } else { b'A' };
        assert!(!checksum_ok(std::str::from_utf8(&t).unwrap()));
    }

    #[test]
    fn base62_of_known_values() {
        assert_eq!(base62_fixed(&[0]), "00");
        assert_eq!(base62_fixed(&[61]), "0z");
        assert_eq!(base62_fixed(&[62]), "10");
        assert_eq!(base62_fixed(&[255]), "47");
        assert_eq!(base62_u32(u32::MAX), "4gfFC3");
    }

    #[test]
    fn recovery_accepts_only_the_secret_the_commit_recorded() {
        let store = tempfile::TempDir::new().unwrap();
        let dir = tempfile::TempDir::new().unwrap();
        let secrets = SecretsDir::open(&dir.path().join("s"), store.path()).unwrap();
        let new = Secret::generate("kr", "x", 32).unwrap();
        secrets.write_pending("k", "tx1", &new).unwrap();
        // Pending: promoted.
        assert!(secrets.promote_if_pending("k", "tx1", &new.fingerprint()).is_ok());
        // Already promoted: accepted, because the file holds that secret.
        assert!(secrets.promote_if_pending("k", "tx1", &new.fingerprint()).is_ok());
        // A file holding another secret is not taken for the committed one.
        let other = Secret::generate("kr", "x", 32).unwrap();
        let e = secrets
            .promote_if_pending("k", "tx1", &other.fingerprint())
            .unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
        assert_eq!(
            SecretsDir::open(&store.path().join("in"), store.path())
                .err()
                .map(|e| e.to_string().contains("inside the store")),
            Some(true)
        );
    }

    proptest! {
        #[test]
        fn base62_width_depends_only_on_length(bytes in proptest::collection::vec(any::<u8>(), 16..64)) {
            let expected = ((bytes.len() as f64 * 8.0) / 62f64.log2()).ceil() as usize;
            prop_assert_eq!(base62_fixed(&bytes).len(), expected);
        }
    }
}
