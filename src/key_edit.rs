//! Editing people's TOML files in place (key files by apply, `scan --mark-compromised`
//! and `usage import`): a format-preserving editor keeps every comment, order and byte
//! of what does not change, so a commit's diff shows exactly the fields that changed.

use toml_edit::{Item, Table, Value};

/// Sets a top-level value, keeping the decoration (comments, spacing) of the one it
/// replaces so the diff shows only the value.
pub(crate) fn set(table: &mut Table, key: &str, v: impl Into<Value>) {
    let mut v = v.into();
    match table.get_mut(key).and_then(Item::as_value_mut) {
        Some(old) => {
            *v.decor_mut() = old.decor().clone();
            *old = v;
        }
        None => {
            table.insert(key, Item::Value(v));
        }
    }
}
