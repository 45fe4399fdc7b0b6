//! What a file in the store is, by its name: the one place that says which names are
//! policies, policy tests and valid policy names. `policy`, `watch` and `lint` ask
//! here, so the store never needs the policy engine to read its own folders.

/// The suffix that makes a file in the policy folder a test file.
pub const TEST_SUFFIX: &str = "_test.rhai";

/// Whether a policy-folder file is a policy test (`max-age_test.rhai`).
pub fn is_policy_test(path: &str) -> bool {
    path.ends_with(TEST_SUFFIX)
}

/// Files editors and keyrot itself leave beside the real ones: hidden files that are
/// not key or policy files (vim's `.x.toml.swp`, `.gitkeep`), emacs locks (`.#x.toml`)
/// and autosaves (`#x#`), backups (`x~`), vim's write test `4913`, and keyrot's own
/// `*.keyrot-tmp`. A hidden `.x.toml` is not an artifact: it is a key file with a bad id,
/// and reported as such rather than silently skipped.
pub fn is_editor_artifact(name: &str) -> bool {
    let hidden = name.starts_with('.')
        && (name.starts_with(".#") || !(name.ends_with(".toml") || name.ends_with(".rhai")));
    hidden
        || name.ends_with('~')
        || (name.starts_with('#') && name.ends_with('#'))
        || name == "4913"
        || name.ends_with(".keyrot-tmp")
}

/// What a file in the policy folder is, by its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyFolderFile {
    /// `max-age.rhai`: a policy, in force.
    Policy,
    /// `max-age_test.rhai`: its tests, for `keyrot test`.
    Test,
    /// `max-age.rhai.bak`: looks like a policy a reader may believe is in force.
    Misnamed,
    /// Editors' artifacts and anything else (a README): not keyrot's.
    Other,
}

/// Classifies a file of the policy folder by its name.
pub fn policy_folder_file(name: &str) -> PolicyFolderFile {
    if is_editor_artifact(name) {
        PolicyFolderFile::Other
    } else if is_policy_test(name) {
        PolicyFolderFile::Test
    } else if name.ends_with(".rhai") {
        PolicyFolderFile::Policy
    } else if name.contains(".rhai") {
        PolicyFolderFile::Misnamed
    } else {
        PolicyFolderFile::Other
    }
}

/// A policy's name is its file stem, and the `[policy.<name>]` table key:
/// `[A-Za-z0-9][A-Za-z0-9_-]{0,63}`.
pub fn is_valid_policy_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_tests() {
        assert!(is_valid_policy_name("max-age"));
        assert!(is_valid_policy_name("least_privilege2"));
        assert!(!is_valid_policy_name("-x") && !is_valid_policy_name("") && !is_valid_policy_name("a.b"));
        assert!(!is_valid_policy_name(&"a".repeat(65)));
        assert!(is_policy_test("policies/max-age_test.rhai"));
        assert!(!is_policy_test("policies/max-age.rhai"));
        assert_eq!(policy_folder_file("max-age.rhai"), PolicyFolderFile::Policy);
        assert_eq!(policy_folder_file("max-age_test.rhai"), PolicyFolderFile::Test);
        assert_eq!(policy_folder_file("max-age.rhai.bak"), PolicyFolderFile::Misnamed);
        assert_eq!(policy_folder_file(".max-age.rhai.swp"), PolicyFolderFile::Other);
        assert_eq!(policy_folder_file("README.md"), PolicyFolderFile::Other);
    }
}
