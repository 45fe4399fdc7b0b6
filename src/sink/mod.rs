//! Where new secrets go besides the secrets folder: a Vault or OpenBao KV v2 mount.

pub mod vault;
