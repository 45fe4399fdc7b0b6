//! Errors of making new secrets and delivering them (the secrets folder, Vault).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The operating system's CSPRNG failed: no secret is made without it.
    #[error("the operating system's random generator failed: {0}")]
    Random(String),

    /// The secrets folder's real path cannot be written into the apply journal.
    #[error("the secrets folder {} resolves to a path that is not valid UTF-8; keyrot records it in its apply journal, so it must be", .0.display())]
    FolderNotUtf8(PathBuf),

    /// A committed rotation whose new secret is in neither of the places it can be.
    #[error("the new secret for key {id} is missing from {}: neither {id}.secret.{txid}.pending nor a {id}.secret with fingerprint {fingerprint} exists", .dir.display())]
    SecretMissing {
        id: String,
        dir: PathBuf,
        txid: String,
        fingerprint: String,
    },

    /// On CI, new secrets would go to a folder that is deleted with the runner.
    #[error("CI is set and new secrets would go to this runner's secrets folder, which is deleted with the runner")]
    SecretsWouldBeLost,

    /// `[delivery] sink = "vault"` without an address anywhere.
    #[error("[delivery] sink is vault, but neither [delivery.vault] address nor $VAULT_ADDR is set")]
    NoVaultAddress,

    /// `$VAULT_ADDR` is not an address keyrot talks to.
    #[error("{0}")]
    VaultAddress(String),

    /// `[delivery] sink = "vault"` without a token.
    #[error(
        "[delivery] sink is vault, but ${env} is not set: it must hold the token keyrot writes secrets with"
    )]
    NoVaultToken { env: String },

    /// The certificates to trust for Vault's TLS could not be read.
    #[error("{from}: {why}")]
    Trust {
        /// Where the setting came from (`ca_cert = "…"`, `VAULT_CACERT=…`).
        from: String,
        why: String,
    },
}

impl DeliveryError {
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            DeliveryError::FolderNotUtf8(_) => "choose a folder whose path is UTF-8".into(),
            DeliveryError::SecretMissing { .. } => "the commit records that fingerprint; rotate the key again (keyrot apply) to issue a new secret".into(),
            DeliveryError::SecretsWouldBeLost => {
                "deliver them to Vault ([delivery] sink = \"vault\") or name a secrets folder that outlives the runner".into()
            }
            _ => return None,
        })
    }
}
