//! Editing a key file for its applied actions, in place: a format-preserving TOML
//! editor keeps every comment, order and byte of what does not change, so the
//! commit's diff shows exactly the fields that changed.

use toml_edit::{ArrayOfTables, DocumentMut, Item, Table, Value};

use crate::key_edit::set;

use crate::error::{ApplyError, Error, Result, StoreError};
use crate::plan::{Action, ActionKind};
use crate::store::Key;
use crate::time::{Dur, Time};

/// The changes one key gets, merged from all its applied actions.
#[derive(Default)]
pub(super) struct KeyChanges {
    pub revoke: Vec<String>,
    /// The shortest grace period asked for, when any policy asked for a rotation.
    pub rotate_grace: Option<Dur>,
    pub remove: Vec<String>,
    pub expire: Vec<String>,
}

impl KeyChanges {
    /// A rotation that no revoke overrides: the key gets a new secret.
    pub(super) fn gets_new_secret(&self) -> bool {
        self.revoke.is_empty() && self.rotate_grace.is_some()
    }
}

pub(super) fn merge(actions: &[&Action]) -> KeyChanges {
    let mut c = KeyChanges::default();
    for a in actions {
        match a.action {
            ActionKind::Revoke => c.revoke.push(a.reason.clone()),
            ActionKind::Rotate => {
                let grace = a.grace_period.unwrap_or_default();
                c.rotate_grace = Some(c.rotate_grace.map_or(grace, |g| g.min(grace)));
            }
            ActionKind::Restrict => {
                for p in a.remove.iter().flatten() {
                    if !c.remove.contains(p) {
                        c.remove.push(p.clone());
                    }
                }
            }
            ActionKind::Expire => c.expire.extend(a.fingerprint.clone()),
            ActionKind::Deferred | ActionKind::Warn => {}
        }
    }
    c
}

fn toml_time(key: &Key, t: Time) -> Result<Value> {
    t.to_toml().map(Value::from).map_err(|why| {
        ApplyError::Time {
            path: key.path.clone(),
            why,
        }
        .into()
    })
}

/// Edits one key file's text for its changes. Everything not changed keeps its bytes.
pub(super) fn edit_key_file(
    key: &Key,
    text: &str,
    c: &KeyChanges,
    new_fp: Option<&str>,
    now: Time,
) -> Result<String> {
    let mut doc: DocumentMut = text.parse().map_err(|e| StoreError::Edit {
        path: key.path.clone(),
        why: format!("cannot edit: {e}"),
    })?;
    let root = doc.as_table_mut();
    if !c.revoke.is_empty() {
        set(root, "status", "revoked");
        set(root, "revoked_at", toml_time(key, now)?);
        set(root, "revoke_reason", c.revoke.join("; "));
        root.remove("previous");
        return Ok(doc.to_string());
    }
    if !c.expire.is_empty() {
        if let Some(prev) = root.get_mut("previous").and_then(Item::as_array_of_tables_mut) {
            prev.retain(|t| {
                let fp = t.get("fingerprint").and_then(Item::as_str).unwrap_or_default();
                !c.expire.iter().any(|e| e == fp)
            });
            if prev.is_empty() {
                root.remove("previous");
            }
        }
    }
    if !c.remove.is_empty() {
        if let Some(perms) = root.get_mut("permissions").and_then(Item::as_array_mut) {
            perms.retain(|v| !v.as_str().is_some_and(|p| c.remove.iter().any(|r| r == p)));
        }
    }
    if let (Some(grace), Some(new_fp)) = (c.rotate_grace, new_fp) {
        if let Some(old) = key.fingerprint.as_deref() {
            if grace > Dur::ZERO {
                let until = now.checked_add(grace).ok_or_else(|| {
                    Error::BeyondYear9999(format!(
                        "{}: the end of the grace period {grace} from {now}",
                        key.path
                    ))
                })?;
                let mut entry = Table::new();
                entry.insert("fingerprint", Item::Value(old.into()));
                entry.insert("valid_until", Item::Value(toml_time(key, until)?));
                if !root.contains_key("previous") {
                    root.insert("previous", Item::ArrayOfTables(ArrayOfTables::new()));
                }
                if let Some(prev) = root.get_mut("previous").and_then(Item::as_array_of_tables_mut) {
                    prev.push(entry);
                }
            }
        }
        set(root, "fingerprint", new_fp);
        set(root, "rotated_at", toml_time(key, now)?);
    }
    Ok(doc.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::key;

    const TEXT: &str = r#"# Binance trading bot
service = "binance"
owner = "alice"   # on-call: alice
permissions = ["read", "trade", "withdraw"]
created_at = 2026-03-01T00:00:00Z
fingerprint = "sha256:1111111111111111111111111111111111111111111111111111111111111111" # current

[[previous]]
fingerprint = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
valid_until = 2026-04-01T00:00:00Z
"#;

    fn now() -> Time {
        Time::parse_rfc3339("2026-11-22T20:00:00Z").unwrap()
    }

    #[test]
    fn rotate_keeps_comments_and_moves_the_old_secret_to_previous() {
        let k = key::parse("keys/b.toml", TEXT).unwrap();
        let c = KeyChanges {
            rotate_grace: Some(Dur::parse("1d").unwrap()),
            expire: vec![k.previous[0].fingerprint.clone()],
            remove: vec!["withdraw".into()],
            ..KeyChanges::default()
        };
        let fp = format!("sha256:{}", "3".repeat(64));
        let out = edit_key_file(&k, TEXT, &c, Some(&fp), now()).unwrap();
        assert!(out.starts_with("# Binance trading bot\n"));
        assert!(out.contains("owner = \"alice\"   # on-call: alice"));
        assert!(
            out.contains(&format!("fingerprint = \"{fp}\" # current")),
            "{out}"
        );
        assert!(out.contains("permissions = [\"read\", \"trade\"]"), "{out}");
        assert!(!out.contains(&"2".repeat(64)), "expired entry must go: {out}");
        let back = key::parse("keys/b.toml", &out).unwrap();
        assert_eq!(back.previous.len(), 1);
        assert_eq!(back.previous[0].fingerprint, k.fingerprint.clone().unwrap());
        assert_eq!(
            back.previous[0].valid_until,
            Time::parse_rfc3339("2026-11-23T20:00:00Z").unwrap()
        );
        assert_eq!(back.rotated_at, now());
    }

    #[test]
    fn revoke_drops_every_previous_secret() {
        let k = key::parse("keys/b.toml", TEXT).unwrap();
        let c = KeyChanges {
            revoke: vec!["leaked".into()],
            ..KeyChanges::default()
        };
        let out = edit_key_file(&k, TEXT, &c, None, now()).unwrap();
        let back = key::parse("keys/b.toml", &out).unwrap();
        assert_eq!(back.status, crate::store::KeyStatus::Revoked);
        assert!(back.previous.is_empty());
        assert_eq!(back.revoke_reason.as_deref(), Some("leaked"));
        assert_eq!(back.revoked_at, Some(now()));
    }

    proptest::proptest! {
        /// Whatever the permissions, previous entries and changes, an edited key file
        /// parses back with exactly the intended changes and nothing else.
        #[test]
        fn edits_round_trip(
            perms in proptest::collection::btree_set("[a-z]{1,8}", 0..6),
            remove_mask in proptest::prelude::any::<u8>(),
            previous in proptest::collection::vec((0u8..16, 0i64..1000), 0..4),
            expire_mask in proptest::prelude::any::<u8>(),
            grace_h in proptest::option::of(0i64..100),
        ) {
            let perms: Vec<String> = perms.into_iter().collect();
            let fp = |n: u8| format!("sha256:{}", format!("{n:x}").repeat(64));
            let mut text = format!(
                "# a comment that must survive\nservice = \"x\"\nowner = \"a\"\npermissions = {perms:?}\ncreated_at = 2026-01-01T00:00:00Z\nfingerprint = \"{}\"\n",
                fp(0xa)
            );
            for (n, hours) in &previous {
                text.push_str(&format!("\n[[previous]]\nfingerprint = \"{}\"\nvalid_until = {}\n", fp(*n), Time::from_unix(1_790_000_000 + hours * 3600)));
            }
            let k = key::parse("keys/p.toml", &text).unwrap();
            let remove: Vec<String> = perms.iter().enumerate().filter(|(i, _)| remove_mask & (1 << i) != 0).map(|(_, p)| p.clone()).collect();
            let expire: Vec<String> = previous.iter().enumerate().filter(|(i, _)| expire_mask & (1 << i) != 0).map(|(_, (n, _))| fp(*n)).collect();
            let c = KeyChanges { rotate_grace: grace_h.map(|h| Dur::hours_n(h).unwrap()), remove: remove.clone(), expire: expire.clone(), ..KeyChanges::default() };
            let new_fp = fp(0xb);
            let out = edit_key_file(&k, &text, &c, Some(&new_fp), now()).unwrap();
            proptest::prop_assert!(out.starts_with("# a comment that must survive\n"));
            let back = key::parse("keys/p.toml", &out).unwrap();
            let kept: Vec<String> = perms.iter().filter(|p| !remove.contains(p)).cloned().collect();
            proptest::prop_assert_eq!(&back.permissions, &kept);
            let mut want: Vec<String> = k.previous.iter().map(|p| p.fingerprint.clone()).filter(|f| !expire.contains(f)).collect();
            match grace_h {
                Some(h) => {
                    proptest::prop_assert_eq!(back.fingerprint.as_deref(), Some(new_fp.as_str()));
                    proptest::prop_assert_eq!(back.rotated_at, now());
                    if h > 0 { want.push(fp(0xa)); }
                }
                None => proptest::prop_assert_eq!(back.fingerprint, Some(fp(0xa))),
            }
            let got: Vec<String> = back.previous.iter().map(|p| p.fingerprint.clone()).collect();
            proptest::prop_assert_eq!(got, want);
            proptest::prop_assert_eq!(back.service, k.service);
        }
    }

    #[test]
    fn zero_grace_keeps_no_previous_entry() {
        let text = "service = \"x\"\nowner = \"a\"\npermissions = []\ncreated_at = 2026-03-01T00:00:00Z\nfingerprint = \"sha256:1111111111111111111111111111111111111111111111111111111111111111\"\n";
        let k = key::parse("keys/b.toml", text).unwrap();
        let c = KeyChanges {
            rotate_grace: Some(Dur::ZERO),
            ..KeyChanges::default()
        };
        let fp = format!("sha256:{}", "3".repeat(64));
        let out = edit_key_file(&k, text, &c, Some(&fp), now()).unwrap();
        assert!(key::parse("keys/b.toml", &out).unwrap().previous.is_empty());
    }
}
