//! What a file in the store is, by its name: the one place that says which names are
//! policies, policy tests and valid policy names. `policy`, `watch` and `lint` ask
//! here, so the store never needs the policy engine to read its own folders.

/// The suffix that makes a file in the policy folder a test file.
pub const TEST_SUFFIX: &str = "_test.rhai";

/// Whether a policy-folder file is a policy test (`max-age_test.rhai`).
pub fn is_policy_test(path: &str) -> bool {
    path.ends_with(TEST_SUFFIX)
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
    }
}
