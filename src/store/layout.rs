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

/// Why a folder in the keys folder is refused.
pub const FOLDER_NAME_RULE: &str = "is not a valid folder name: folders in the keys folder are named as key ids are (a-z, 0-9, '.', '_' and '-', starting with a letter or digit)";

/// A folder inside the keys folder (`keys/trading/`) is named as a key id is: names
/// that print safely, match themselves in a CODEOWNERS pattern, and cannot be `..`.
pub fn is_valid_folder_name(name: &str) -> bool {
    super::key::is_valid_id(name)
}

/// The folder of a key file, relative to the keys folder: `trading/bots` for
/// `keys/trading/bots/x.toml`, `""` for `keys/x.toml`.
pub fn key_folder<'p>(keys_dir: &str, path: &'p str) -> &'p str {
    let inside = path
        .strip_prefix(keys_dir)
        .and_then(|rest| rest.strip_prefix('/'))
        .unwrap_or(path);
    inside.rsplit_once('/').map_or("", |(folder, _)| folder)
}

/// Whether `rel` can name a folder keyrot reads files from: key and policy files are
/// named `*.toml` and `*.rhai`, folders never are (a load refuses such a folder). Only
/// then does a change at `rel` concern more than one file.
pub fn may_be_folder(rel: &str) -> bool {
    !rel.ends_with(".toml") && !rel.ends_with(".rhai")
}

/// Whether a path under the keys folder (`rest`, relative to it) is one a load reads
/// or reports: any but an editor's artifact.
pub fn is_in_keys_folder(rest: &str) -> bool {
    !rest.is_empty() && !rest.rsplit('/').next().is_some_and(is_editor_artifact)
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

    #[test]
    fn key_folders() {
        assert_eq!(key_folder("keys", "keys/a.toml"), "");
        assert_eq!(key_folder("keys", "keys/trading/a.toml"), "trading");
        assert_eq!(
            key_folder("inv/keys", "inv/keys/trading/bots/a.toml"),
            "trading/bots"
        );
        assert!(
            is_valid_folder_name("market-data")
                && !is_valid_folder_name("..")
                && !is_valid_folder_name(".old")
        );
        assert!(!is_valid_folder_name("Trading") && !is_valid_folder_name("a b"));
        assert!(is_in_keys_folder("trading/a.toml") && is_in_keys_folder("a.toml"));
        assert!(
            !is_in_keys_folder("trading/.a.toml.swp")
                && !is_in_keys_folder("a.toml~")
                && !is_in_keys_folder("")
        );
    }
}
