//! `keyrot test`: policy tests in Rhai, their output, filter, JSON and coverage.

use crate::common::*;

/// A store with one small policy of its own, whose test file the test writes.
fn store_with_policy() -> Store {
    let s = Store::new();
    s.write(
        "policies/env.rhai",
        r#"// Staging keys live longer.
fn evaluate(key) {
    if key.environment == "staging" {
        if key.age > days(180) {
            return rotate("staging key too old");
        }
        return;
    }
    if key.age > days(30) {
        return rotate("production key too old");
    }
}
"#,
    );
    s
}

const PASSING: &str = r#"
fn test_production_rotates_after_30_days() {
    at("2026-06-01T00:00:00Z");
    assert_rotate(evaluate(key(#{ rotated_at: "2026-05-01T00:00:00Z" })));
    assert_none(evaluate(key(#{ rotated_at: "2026-05-02T00:00:00Z" })));
}

fn test_time_moves_with_at() {
    let k = key(#{ environment: "staging" });
    assert_none(evaluate(k));
    at(now() + days(181));
    let d = evaluate(k);
    assert_rotate(d, days(1) - days(1) + hours(24));
    assert_eq(d[0].reason, "staging key too old");
}
"#;

#[test]
fn passing_tests_print_like_cargo_test() {
    let s = store_with_policy();
    s.write("policies/env_test.rhai", PASSING);
    let run = s.keyrot(&["test", "env::"]).fails(1);
    // The store's default grace is 24h but the test asked for a rotate *with* grace:
    // the policy returned none, so that assertion fails. The first test passes.
    let out = &run.stdout;
    assert!(out.starts_with("running 2 tests\n"), "{out}");
    assert!(
        out.contains("test env::test_production_rotates_after_30_days ... ok\n"),
        "{out}"
    );
    assert!(
        out.contains("test env::test_time_moves_with_at ... FAILED\n"),
        "{out}"
    );
    assert!(
        out.contains("---- env::test_time_moves_with_at ----\npolicies/env_test.rhai:13:5: assert_rotate: expected a rotate with grace 1d, got [rotate(\"staging key too old\")]\n"),
        "{out}"
    );
    assert!(out.ends_with("\n1 passed, 1 failed\n"), "{out}");

    s.write(
        "policies/env_test.rhai",
        &PASSING.replace(
            "assert_rotate(d, days(1) - days(1) + hours(24));",
            "assert_rotate(d);",
        ),
    );
    let out = s.keyrot(&["test", "env::"]).ok().stdout;
    assert!(out.ends_with("\n2 passed, 0 failed\n"), "{out}");
}

#[test]
fn every_assertion_says_what_it_expected_and_what_it_got() {
    let s = store_with_policy();
    s.write(
        "policies/env_test.rhai",
        r#"
fn test_a() { assert_revoke(evaluate(key(#{ age: days(31) }))); }
fn test_b() { assert_none(evaluate(key(#{ age: days(31) }))); }
fn test_c() { assert_restrict(evaluate(key()), ["withdraw"]); }
fn test_d() { assert_warn(evaluate(key())); }
fn test_e() { assert_eq(evaluate(key()).len(), 1); }
fn test_f() { evaluate(key(#{ permisions: ["read"] })); }
fn test_g() { assert(1 > 2, "one is not more than two"); }
"#,
    );
    let run = s.keyrot(&["test", "env::", "--json"]).fails(1).json();
    assert_eq!(run["passed"], 0);
    assert_eq!(run["failed"], 7);
    let failures: Vec<String> = run["tests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["failure"].as_str().unwrap().to_string())
        .collect();
    let expected = [
        "policies/env_test.rhai:2:15: assert_revoke: expected a revoke, got [rotate(\"production key too old\")]",
        "policies/env_test.rhai:3:15: assert_none: expected no decision, got [rotate(\"production key too old\")]",
        "policies/env_test.rhai:4:15: assert_restrict: expected a restrict of {\"withdraw\"}, got no decision",
        "policies/env_test.rhai:5:15: assert_warn: expected a warn, got no decision",
        "policies/env_test.rhai:6:15: assert_eq: expected 1, got 0",
        "policies/env_test.rhai:7:24: key: unknown field `permisions`",
        "policies/env_test.rhai:8:15: assert: one is not more than two",
    ];
    for (got, want) in failures.iter().zip(expected) {
        assert!(got.starts_with(want), "got:  {got}\nwant: {want}");
    }
    assert_eq!(run["tests"][0]["policy"], "env");
    assert_eq!(run["tests"][0]["name"], "test_a");
    assert_eq!(run["tests"][0]["path"], "policies/env_test.rhai");
    assert_eq!(run["tests"][0]["passed"], false);
}

#[test]
fn a_policy_error_fails_the_test_with_the_policy_line() {
    let s = Store::new();
    s.write(
        "policies/typo.rhai",
        "fn evaluate(key) {\n    if key.idle > config().idle_dayz { return warn(\"idle\"); }\n}\n",
    );
    s.write(
        "policies/typo_test.rhai",
        "fn test_idle() {\n    assert_warn(evaluate(key()));\n}\n",
    );
    let out = s.keyrot(&["test", "typo"]).fails(1).stdout;
    assert!(
        out.contains("policies/typo_test.rhai:2:17: policies/typo.rhai:2:17: policy typo: key test-key: cannot compare a duration > ()"),
        "{out}"
    );
}

#[test]
fn broken_test_files_fail_the_run() {
    let s = Store::new();
    s.write("policies/ghost_test.rhai", "fn test_x() {}\n");
    s.write("policies/max-age_test.rhai", "fn test_x() {\n    let = 1;\n}\n");
    let run = s.keyrot(&["test"]).fails(1);
    assert!(
        run.stdout
            .contains("policies/ghost_test.rhai: tests policy ghost, which does not exist"),
        "{}",
        run.stdout
    );
    run.stdout_has("policies/max-age_test.rhai:2:9:");
}

#[test]
fn coverage_counts_the_lines_the_tests_ran_and_min_coverage_is_exact() {
    let s = store_with_policy();
    s.write(
        "policies/env_test.rhai",
        "fn test_production() {\n    at(\"2026-06-01T00:00:00Z\");\n    assert_rotate(evaluate(key(#{ rotated_at: \"2026-01-01T00:00:00Z\" })));\n}\n",
    );
    // Statements start on lines 3, 4, 5, 7, 9 and 10; the staging branch (4, 5, 7) never runs.
    let run = s.keyrot(&["test", "env::", "--coverage"]).ok();
    assert!(
        run.stdout.contains(
            "env                     3/6    lines  50.0%  policies/env.rhai  (not run: lines 4, 5, 7)"
        ),
        "{}",
        run.stdout
    );
    assert!(
        !run.stdout.contains("max-age"),
        "a filter reports only the policies it tested"
    );
    s.keyrot(&["test", "env::", "--min-coverage", "50"]).ok();
    let below = s.keyrot(&["test", "env::", "--min-coverage", "50.001"]).fails(1);
    below.stdout_has("BELOW MINIMUM");
    below.stdout_has("coverage below the minimum: env");
    let json = s
        .keyrot(&["test", "env::", "--min-coverage", "51", "--json"])
        .fails(1)
        .json();
    assert_eq!(json["ok"], false);
    assert_eq!(
        json["coverage"][0],
        serde_json::json!({"policy": "env", "path": "policies/env.rhai", "lines": 6, "covered": 3,
                           "missed": [4, 5, 7], "below_minimum": true})
    );
    let bad = s.keyrot(&["test", "--min-coverage", "101"]).fails(1);
    bad.stderr_has("not a percentage");
}

#[test]
fn a_policy_without_tests_has_no_coverage() {
    let s = store_with_policy();
    let run = s.keyrot(&["test", "--min-coverage", "100"]).fails(1);
    run.stdout_has("env                     0/6    lines   0.0%");
    run.stdout_has("coverage below the minimum: env\n");
}

/// The shipped policies come with tests that cover every line, run by the binary.
#[test]
fn the_shipped_policies_are_fully_covered_by_their_tests() {
    let s = Store::new();
    let run = s.keyrot(&["test", "--min-coverage", "100", "--json"]).ok().json();
    assert_eq!(run["ok"], true);
    assert_eq!(run["failed"], 0);
    assert!(run["passed"].as_u64().unwrap() >= 12, "{run}");
    let covered: Vec<(&str, u64, u64)> = run["coverage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["policy"].as_str().unwrap(),
                c["covered"].as_u64().unwrap(),
                c["lines"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(covered.len(), 7);
    for (policy, c, l) in covered {
        assert!(l > 0 && c == l, "{policy}: {c}/{l}");
    }
    // The store keyrot init made carries the same files as the repository's policies/.
    for entry in std::fs::read_dir(env!("CARGO_MANIFEST_DIR").to_string() + "/policies").unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        assert_eq!(
            std::fs::read_to_string(entry.path()).unwrap(),
            s.read(&format!("policies/{name}")),
            "{name}"
        );
    }
}

#[test]
fn a_test_file_that_can_run_nothing_fails_the_run() {
    let s = store_with_policy();
    s.write("policies/env_test.rhai", "fn tset_typo() { assert(false); }\n");
    let out = s.keyrot(&["test", "env::"]).fails(1).stdout;
    assert!(
        out.contains("policies/env_test.rhai: defines no `fn test_…()`: nothing to run"),
        "{out}"
    );
    s.write("policies/env_test.rhai", "fn test_with(k) { assert(false); }\n");
    let out = s.keyrot(&["test", "env::"]).fails(1).stdout;
    assert!(
        out.contains("fn test_with(k) takes parameters; a test takes none"),
        "{out}"
    );
}
