//! Where new secrets go. A rotation's secret is always first a pending file in the
//! secrets folder (so a crash loses nothing); a [`Sink`] says what else happens to it.
//! The folder sink keeps that file as the delivered secret; the Vault sink writes it to
//! a KV v2 mount before the commit and the folder keeps nothing after.

mod trust;
pub(crate) mod vault;

use crate::error::Result;
use crate::secret::Secret;
use crate::store::settings::Sink as SinkSettings;
use crate::store::Settings;
use vault::Vault;

/// Where a secret was delivered: a location to show, and the version to take back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Delivery {
    pub location: String,
    pub version: u64,
}

/// A place new secrets are delivered to besides the secrets folder's pending file.
pub(crate) trait Sink: Send + Sync {
    /// Whether secrets leave this machine (then every key's rotation involves the
    /// sink, and the secrets folder keeps no copy after the commit).
    fn is_remote(&self) -> bool;

    /// Delivers a rotation's new secret before the commit; `None` when the pending
    /// file is the delivery.
    fn deliver(
        &self,
        service: &str,
        id: &str,
        secret: &Secret,
    ) -> std::result::Result<Option<Delivery>, crate::provider::StepError>;

    /// Takes back a delivered version of a rotation that will not be committed.
    fn take_back(
        &self,
        service: &str,
        id: &str,
        version: u64,
    ) -> std::result::Result<(), crate::provider::StepError>;

    /// Where a revoke's or an expire's clean-up must run after the commit; `None`: there
    /// is nothing to clean up.
    fn clean_up_path(&self, service: &str, id: &str) -> Option<String>;

    /// Destroys, at `path`, every version (`fingerprint` `None`: a revoke) or those of
    /// one secret (an expire).
    fn clean_up(
        &self,
        path: &str,
        fingerprint: Option<&str>,
    ) -> std::result::Result<(), crate::provider::StepError>;
}

/// The secrets folder alone: the pending file, promoted after the commit, is the
/// delivered secret, and nothing else is kept anywhere.
pub(crate) struct Folder;

impl Sink for Folder {
    fn is_remote(&self) -> bool {
        false
    }

    fn deliver(
        &self,
        _: &str,
        _: &str,
        _: &Secret,
    ) -> std::result::Result<Option<Delivery>, crate::provider::StepError> {
        Ok(None)
    }

    fn take_back(&self, _: &str, _: &str, _: u64) -> std::result::Result<(), crate::provider::StepError> {
        Ok(())
    }

    fn clean_up_path(&self, _: &str, _: &str) -> Option<String> {
        None
    }

    fn clean_up(&self, _: &str, _: Option<&str>) -> std::result::Result<(), crate::provider::StepError> {
        Ok(())
    }
}

impl Sink for Vault {
    fn is_remote(&self) -> bool {
        true
    }

    fn deliver(
        &self,
        service: &str,
        id: &str,
        secret: &Secret,
    ) -> std::result::Result<Option<Delivery>, crate::provider::StepError> {
        let path = self.path_for(service, id);
        let version = Vault::deliver(self, &path, secret)?;
        Ok(Some(Delivery {
            location: self.location(&path),
            version,
        }))
    }

    fn take_back(
        &self,
        service: &str,
        id: &str,
        version: u64,
    ) -> std::result::Result<(), crate::provider::StepError> {
        self.destroy(&self.path_for(service, id), None, Some(version))
    }

    fn clean_up_path(&self, service: &str, id: &str) -> Option<String> {
        Some(self.path_for(service, id))
    }

    fn clean_up(
        &self,
        path: &str,
        fingerprint: Option<&str>,
    ) -> std::result::Result<(), crate::provider::StepError> {
        match fingerprint {
            None => self.delete_all(path),
            Some(fp) => self.destroy(path, Some(fp), None),
        }
    }
}

/// The sink `keyrot.toml` configures, for the store at `root`.
pub(crate) fn from_settings(settings: &Settings, root: &std::path::Path) -> Result<Box<dyn Sink>> {
    Ok(match &settings.sink {
        SinkSettings::Vault(v) => Box::new(Vault::new(v, root)?),
        SinkSettings::Dir => Box::new(Folder),
    })
}
