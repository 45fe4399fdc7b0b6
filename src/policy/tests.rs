//! Unit tests of the policy API and sandbox, evaluating small scripts against one key.

use std::sync::Arc;

use super::*;
use crate::store::{key, Owner, OwnerStatus};
use crate::time::Dur;

const KEY: &str = r#"
service = "binance"
owner = "alice"
permissions = ["read", "withdraw"]
tags = ["bot"]
created_at = 2026-01-01T00:00:00Z
rotated_at = 2026-08-01T00:00:00Z
"#;

const NOW: &str = "2026-11-22T20:00:00Z";

fn settings(toml: &str) -> Settings {
    let (s, problems) = Settings::parse("keyrot.toml", toml);
    assert!(problems.is_empty(), "{problems:?}");
    s
}

fn compile(policies: &[(&str, &str)], config: &str) -> (PolicySet, Vec<Problem>) {
    let files: Vec<FileEntry> = policies
        .iter()
        .map(|(name, src)| FileEntry {
            path: format!("policies/{name}.rhai"),
            bytes: src.as_bytes().into(),
        })
        .collect();
    PolicySet::compile(&files, &settings(config), Time::parse_rfc3339(NOW).unwrap())
}

fn view() -> KeyView {
    let k = key::parse("keys/bot.toml", KEY).unwrap();
    let owner = Owner {
        status: OwnerStatus::Active,
        team: Some("trading".into()),
        email: None,
        departed_at: None,
    };
    KeyView::new(Arc::new(k), Some(&owner), 3, Time::parse_rfc3339(NOW).unwrap())
}

/// Evaluates `body` as the body of `fn evaluate(key)`.
fn eval(body: &str) -> Result<Vec<Decision>, Error> {
    eval_with(body, "")
}

fn eval_with(body: &str, config: &str) -> Result<Vec<Decision>, Error> {
    let src = format!("fn evaluate(key) {{\n{body}\n}}\n");
    let (set, problems) = compile(&[("p", &src)], config);
    assert!(problems.is_empty(), "{problems:?}");
    set.evaluate(&view())
        .map(|v| v.into_iter().map(|(_, d)| d).collect())
}

/// Asserts the body evaluates to a single warn whose reason is `expected`.
fn says(body: &str, expected: &str) {
    let d = eval(&format!("warn(`${{{body}}}`)")).unwrap();
    assert_eq!(d[0].reason, expected, "{body}");
}

fn err(body: &str) -> String {
    match eval(body) {
        Err(e) => e.to_string(),
        Ok(d) => panic!("{body}: expected an error, got {d:?}"),
    }
}

#[test]
fn the_key_view_exposes_every_field() {
    says("key.id", "bot");
    says("key.service", "binance");
    says(
        "key.owner + \"/\" + key.owner_status + \"/\" + key.owner_team",
        "alice/active/trading",
    );
    says("key.environment", "production");
    says("key.permissions.len()", "2");
    says(
        "key.has_permission(\"withdraw\") && !key.has_permission(\"admin\")",
        "true",
    );
    says("key.has_tag(\"bot\")", "true");
    says("key.ip_allowlist.len()", "0");
    says("key.last_used_from.len()", "0");
    says("in_allowlist(\"203.0.113.9\", [\"203.0.113.0/24\"])", "true");
    says(
        "in_allowlist(\"198.51.100.1\", [\"203.0.113.0/24\", \"::/0\"])",
        "false",
    );
    says("in_allowlist(\"198.51.100.1\", [])", "false");
    says("key.compromised", "false");
    says("key.status", "active");
    says("key.created_at", "2026-01-01T00:00:00Z");
    says("key.rotated_at", "2026-08-01T00:00:00Z");
    says("key.last_used_at == ()", "true");
    says("key.age", "113d 20h");
    says("key.idle.days", "325");
    says("key.owner_key_count", "3");
}

#[test]
fn time_and_duration_arithmetic() {
    says("(days(1) + hours(3)).hours", "27");
    says("hours(90).days", "3");
    says("days(1) + hours(3)", "1d 3h");
    says("hours(1) + minutes(30)", "1h 30m");
    says("days(0)", "0s");
    says("now()", NOW);
    says("now() - time(\"2026-11-21T20:00:00Z\")", "1d");
    says("time(\"2026-11-21T20:00:00Z\") + days(1) == now()", "true");
    says("now() - days(1) < now()", "true");
    says(
        "days(2) >= hours(48) && days(2) <= hours(48) && days(1) != hours(1)",
        "true",
    );
    says("days(3) * 2 == days(6) && days(6) / 3 == days(2)", "true");
    says("duration(\"1h30m\").minutes", "90");
    says("key.age > days(90)", "true");
}

#[test]
fn ordering_with_a_missing_value_is_an_error_not_false() {
    for body in [
        "if key.last_used_at < now() { warn(\"x\") }",
        "if key.age.days > config().max_days { warn(\"x\") }",
        "if config().max_days > 3 { warn(\"x\") }",
        "if () < () { warn(\"x\") }",
    ] {
        let e = err(body);
        assert!(e.contains("missing value"), "{body}: {e}");
        assert!(e.contains("policy p: key bot:"), "{e}");
        assert!(e.starts_with("policies/p.rhai:2:"), "{e}");
    }
}

#[test]
fn comparing_mismatched_types_is_an_error() {
    for body in ["key.age > 90", "now() > days(1)", "key.age.days > \"90\""] {
        let e = err(&format!("if {body} {{ warn(\"x\") }}"));
        assert!(e.contains("cannot compare"), "{body}: {e}");
    }
}

#[test]
fn missing_values_can_be_tested_and_defaulted() {
    says("config().max_days ?? 90", "90");
    says("config().max_days == ()", "true");
    says("key.last_used_at != ()", "false");
    let d = eval_with(
        "warn(`${config().max_days ?? 90}`)",
        "[policy.p]\nmax_days = 30\n",
    )
    .unwrap();
    assert_eq!(d[0].reason, "30");
}

#[test]
fn config_is_each_policys_own_table() {
    let (set, problems) = compile(
        &[
            ("a", "fn evaluate(key) { warn(`${config().n}`) }"),
            ("b", "fn evaluate(key) { warn(`${config().n ?? \"none\"}`) }"),
        ],
        "[policy.a]\nn = 1\n",
    );
    assert!(problems.is_empty());
    let d = set.evaluate(&view()).unwrap();
    assert_eq!((d[0].0, d[0].1.reason.as_str()), (0, "1"));
    assert_eq!((d[1].0, d[1].1.reason.as_str()), (1, "none"));
}

#[test]
fn decisions_and_return_shapes() {
    assert!(eval("").unwrap().is_empty());
    assert!(eval("[]").unwrap().is_empty());
    let d =
        eval("[rotate(\"old\", hours(2)), restrict([\"withdraw\"], \"cut\"), revoke(\"bad\"), warn(\"w\")]")
            .unwrap();
    assert_eq!(
        d[0].verdict,
        Verdict::Rotate {
            grace: Some(Dur::parse("2h").unwrap())
        }
    );
    assert_eq!(
        d[1].verdict,
        Verdict::Restrict {
            remove: vec!["withdraw".into()]
        }
    );
    assert_eq!(d[2].verdict, Verdict::Revoke);
    assert_eq!(d[3].verdict, Verdict::Warn);
    assert!(err("42").contains("evaluate returned i64"));
    assert!(err("in_allowlist(\"10.0.0.300\", [])").contains("`10.0.0.300` is not an IP address"));
    assert!(err("in_allowlist(\"10.0.0.1\", [\"10.0.0.0\"])").contains("`10.0.0.0` is not a CIDR block"));
    assert!(err("[warn(\"a\"), \"b\"]").contains("index 1"));
    assert!(err("rotate(\"x\", hours(-1))").contains("negative"));
    assert!(err("warn(\"\")").contains("non-empty reason"));
}

#[test]
fn the_sandbox_bounds_runaway_policies() {
    assert!(err("loop { }").contains("operations"));
    let e = eval_with("", "").map(|_| ()).err();
    assert!(e.is_none());
    let (set, problems) = compile(&[("r", "fn f(n) { f(n + 1) }\nfn evaluate(key) { f(0) }")], "");
    assert!(problems.is_empty());
    let e = set.evaluate(&view()).unwrap_err().to_string();
    assert!(e.contains("policy r: key bot:"), "{e}");
    assert!(
        err("let s = \"x\"; loop { s += s; }").contains("too large")
            || err("let s = \"x\"; loop { s += s; }").contains("Length")
    );
    // Doubling, not `push`: a push loop re-measures the array at each step and, in a
    // debug build, meets the time budget before the size bound.
    let e = err("let a = [1]; loop { a += a; }");
    assert!(e.contains("too large") || e.contains("Size"), "{e}");
    assert!(err("throw \"boom\"").contains("boom"));
}

#[test]
fn no_clock_no_eval_no_imports() {
    assert!(err("timestamp()").contains("Function not found"));
    // Rhai's `sleep` would block the run; `exit`, `parse_json` and tags are gone with it.
    for call in [
        "sleep(1)",
        "sleep(0.5)",
        "exit()",
        "parse_json(\"{}\")",
        "back_trace()",
    ] {
        assert!(err(call).contains("Function not found"), "{call}");
    }
    for src in [
        "fn evaluate(key) { eval(\"1\") }",
        "import \"../secrets\" as s;\nfn evaluate(key) { }",
        "import \"/etc/passwd\" as s;\nfn evaluate(key) { }",
    ] {
        let (_, problems) = compile(&[("p", src)], "");
        assert_eq!(problems.len(), 1, "{src}");
        assert_eq!(problems[0].path, "policies/p.rhai");
        assert!(problems[0].pos.is_some());
    }
}

#[test]
fn compile_problems_name_file_and_position() {
    let (_, problems) = compile(&[("bad", "fn evaluate(key) {\n  let x = ;\n}")], "");
    assert_eq!(problems[0].path, "policies/bad.rhai");
    assert_eq!(problems[0].pos.map(|p| p.0), Some(2));
    let (_, problems) = compile(&[("none", "fn other(key) { }")], "");
    assert!(problems[0].message.contains("fn evaluate(key)"));
    let (_, problems) = compile(&[("p", "fn evaluate(key) { }")], "[policy.q]\nx = 1\n");
    assert_eq!(problems[0].path, "keyrot.toml");
    assert!(problems[0].message.contains("[policy.q]"), "{problems:?}");
    assert_eq!(problems[0].pos.map(|p| p.0), Some(1));
}

#[test]
fn constants_and_description_are_visible() {
    let (set, problems) = compile(
        &[("p", "const DESCRIPTION = \"Keeps keys fresh\";\nconst LIMIT = 30;\nfn evaluate(key) { warn(`${LIMIT}`) }")],
        "",
    );
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(set.policies()[0].description.as_deref(), Some("Keeps keys fresh"));
    assert_eq!(set.evaluate(&view()).unwrap()[0].1.reason, "30");
}

#[test]
fn print_and_debug_go_nowhere() {
    let d = eval("print(\"leak\"); debug(\"leak\"); warn(\"ok\")").unwrap();
    assert_eq!(d[0].reason, "ok");
}
