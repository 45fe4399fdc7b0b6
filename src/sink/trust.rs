//! Which certificate authorities the Vault sink trusts, decided as the Vault CLI
//! decides: a CA named for Vault (`[delivery.vault] ca_cert`, else `$VAULT_CACERT`, a
//! PEM file, else `$VAULT_CAPATH`, a folder of them) is the only one trusted; with none
//! named, the operating system's trust store (which honours `SSL_CERT_FILE` and
//! `SSL_CERT_DIR`). There is deliberately no way to skip verification.

use std::path::{Path, PathBuf};

use ureq::tls::{Certificate, PemItem, RootCerts};

use crate::error::{DeliveryError, Error, Result};
use crate::store::settings::VaultSettings;

/// The roots to verify the Vault server's certificate with, and what they came from
/// (for messages). `env` reads an environment variable; `root` is the store's root,
/// which a relative `ca_cert` is read from.
pub(super) fn roots(
    settings: &VaultSettings,
    root: &Path,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(RootCerts, String)> {
    let (files, from) = if let Some(file) = &settings.ca_cert {
        (
            vec![root.join(file)],
            format!("[delivery.vault] ca_cert = {file:?}"),
        )
    } else if let Some(file) = env("VAULT_CACERT") {
        (vec![PathBuf::from(&file)], format!("VAULT_CACERT={file}"))
    } else if let Some(dir) = env("VAULT_CAPATH") {
        (
            pem_files(Path::new(&dir), &format!("VAULT_CAPATH={dir}"))?,
            format!("VAULT_CAPATH={dir}"),
        )
    } else {
        return Ok((RootCerts::PlatformVerifier, "the system's trust store".into()));
    };
    let mut certs = Vec::new();
    for file in &files {
        certs.extend(read_certificates(file, &from)?);
    }
    if certs.is_empty() {
        return Err(trust(&from, "no PEM certificate found there".into()));
    }
    Ok((RootCerts::Specific(std::sync::Arc::new(certs)), from))
}

fn trust(from: &str, why: String) -> Error {
    DeliveryError::Trust {
        from: from.to_string(),
        why,
    }
    .into()
}

/// The files of a CA folder, in name order (as `VAULT_CAPATH` is read: every file).
fn pem_files(dir: &Path, from: &str) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| trust(from, format!("cannot read the folder: {e}")))?;
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// The certificates of one PEM file; anything else in it (a key) is skipped.
fn read_certificates(file: &Path, from: &str) -> Result<Vec<Certificate<'static>>> {
    let bytes =
        std::fs::read(file).map_err(|e| trust(from, format!("cannot read {}: {e}", file.display())))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&bytes) {
        match item {
            Ok(PemItem::Certificate(c)) => certs.push(c),
            Ok(_) => {}
            Err(e) => return Err(trust(from, format!("{} is not a PEM file: {e}", file.display()))),
        }
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(ca_cert: Option<&str>) -> VaultSettings {
        VaultSettings {
            address: None,
            namespace: None,
            ca_cert: ca_cert.map(str::to_string),
            token_env: "VAULT_TOKEN".into(),
            mount: "secret".into(),
            path: "keyrot/{id}".into(),
        }
    }

    #[test]
    fn a_named_ca_comes_first_and_a_bad_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let none = |_: &str| None;
        let (trusted, from) = roots(&settings(None), dir.path(), none).unwrap();
        assert!(matches!(trusted, RootCerts::PlatformVerifier));
        assert_eq!(from, "the system's trust store");

        std::fs::write(dir.path().join("empty.pem"), "not pem\n").unwrap();
        let env = |name: &str| (name == "VAULT_CACERT").then(|| "/nonexistent/ca.pem".to_string());
        // The store's own setting wins over the environment.
        let err = roots(&settings(Some("empty.pem")), dir.path(), env)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ca_cert = \"empty.pem\": no PEM certificate"),
            "{err}"
        );
        let err = roots(&settings(None), dir.path(), env).unwrap_err().to_string();
        assert!(
            err.contains("VAULT_CACERT=/nonexistent/ca.pem: cannot read"),
            "{err}"
        );
    }
}
