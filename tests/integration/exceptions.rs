//! `exceptions.toml`: accepted risks held back from apply, on the record, time-boxed.

use crate::common::*;

/// `old` is overdue for rotation and `wide` holds withdraw without an allowlist.
fn store() -> Store {
    Store::with_keys(&[
        ("old", &key("[\"read\"]", "2026-07-01T00:00:00Z", "")),
        (
            "wide",
            &key("[\"read\", \"withdraw\"]", "2026-11-01T00:00:00Z", "")
                .replace("ip_allowlist = [\"203.0.113.7/32\"]\n", ""),
        ),
    ])
}

fn exception(key: &str, policy: &str, expires: &str) -> String {
    format!(
        "[[exception]]\nkey = \"{key}\"\npolicy = \"{policy}\"\nreason = \"vendor cannot allowlist before the migration (SEC-123)\"\napproved_by = \"carol\"\nexpires = {expires}\n\n"
    )
}

#[test]
fn an_excepted_decision_is_listed_not_applied_and_on_the_record() {
    let s = store();
    s.write(
        "exceptions.toml",
        &exception("wide", "least-privilege", "2026-12-31"),
    );
    s.commit("accept SEC-123");
    let plan = s.plan();
    let restrict = plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["key"] == "wide" && a["action"] == "restrict")
        .expect("the restrict stays in the plan");
    assert_eq!(
        restrict["excepted"],
        serde_json::json!({"reason": "vendor cannot allowlist before the migration (SEC-123)", "approved_by": "carol", "expires": "2026-12-31"})
    );
    assert_eq!(plan["summary"]["restrict"], 0);
    assert_eq!(plan["summary"]["rotate"], 1);
    assert_eq!(plan["summary"]["excepted"], 1);
    let text = s.keyrot(&["plan", "--now", NOW]).ok().stdout;
    assert!(text.contains("restrict (excepted until 2026-12-31)"), "{text}");
    assert!(
        text.contains("Plan: 1 rotate, 0 revoke, 0 restrict, 0 expire, 0 deferred, 0 warn, 1 excepted."),
        "{text}"
    );

    s.apply().ok();
    assert!(
        s.read("keys/wide.toml").contains("\"withdraw\""),
        "the excepted restrict was applied"
    );
    assert!(s.read("keys/old.toml").contains("fingerprint"));
    let msg = s.git(&["log", "-1", "--format=%B"]);
    assert!(
        msg.starts_with("keyrot apply: 1 rotate, 0 revoke, 0 restrict, 0 expire"),
        "{msg}"
    );
    assert!(
        msg.contains("excepted wide [least-privilege] restrict not applied:")
            && msg.contains("(accepted until 2026-12-31 by carol: vendor cannot allowlist"),
        "{msg}"
    );
    let log = s.keyrot(&["log", "wide", "--json"]).ok().json();
    assert_eq!(log[0]["action"], "excepted");
    assert_eq!(log[0]["policy"], "least-privilege");
}

#[test]
fn an_expired_exception_stops_counting_and_the_plan_says_so() {
    let s = store();
    s.write(
        "exceptions.toml",
        &exception("wide", "least-privilege", "2026-11-22"),
    );
    s.commit("accept SEC-123");
    let plan = s.plan();
    assert_eq!(plan["summary"]["restrict"], 1);
    assert!(plan["summary"].get("excepted").is_none(), "{}", plan["summary"]);
    let note = plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["key"] == "wide" && a["policy"] == "keyrot")
        .expect("a note about the expired exception");
    assert_eq!(note["action"], "warn");
    assert!(
        note["reason"]
            .as_str()
            .unwrap()
            .starts_with("exception for policy least-privilege expired 2026-11-22"),
        "{note}"
    );
}

#[test]
fn a_compromised_keys_revoke_cannot_be_excepted() {
    let s = Store::with_keys(&[(
        "leaked",
        &key("[\"read\"]", "2026-11-01T00:00:00Z", "compromised = true\n"),
    )]);
    s.write(
        "exceptions.toml",
        &exception("leaked", "compromised", "2026-12-01"),
    );
    s.commit("try to keep a leaked key");
    let plan = s.plan();
    assert_eq!(plan["summary"]["revoke"], 1);
    assert!(plan["actions"][0].get("excepted").is_none());
    assert!(plan["actions"][1]["reason"]
        .as_str()
        .unwrap()
        .contains("cannot be excepted"));
    let check = s.keyrot(&["check", "--now", NOW]).fails(1);
    check.stderr_has("exceptions.toml:1:1: exception for key leaked and policy compromised would hold back the revoke of a compromised key");
    s.apply().ok();
    assert!(s.read("keys/leaked.toml").contains("status = \"revoked\""));
}

#[test]
fn bad_exceptions_stop_the_plan_with_file_and_line() {
    let s = store();
    s.write(
        "exceptions.toml",
        &format!(
            "{}[[exception]]\nkey = \"old\"\npolicy = \"max-age\"\nreason = \"\"\napproved_by = \"dave\"\nexpires = 2026-12-01\n",
            exception("wide", "least-privilege", "2027-06-01")
        ),
    );
    let run = s.keyrot(&["plan", "--now", NOW]).fails(1);
    run.stderr_has("exceptions.toml:6:11: exception for key wide and policy least-privilege expires 2027-06-01, more than 90 days ahead");
    assert!(
        run.stderr
            .contains("exceptions.toml:11:10: reason must not be empty"),
        "{}",
        run.stderr
    );

    // The horizon is a setting.
    s.write("keyrot.toml", "[exceptions]\nmax_days = 365\n");
    s.write(
        "exceptions.toml",
        &exception("wide", "least-privilege", "2027-06-01"),
    );
    assert_eq!(s.plan()["summary"]["excepted"], 1);
}

#[test]
fn exceptions_are_part_of_the_policies_digest() {
    let s = store();
    let before = s.plan()["policies_digest"].clone();
    let out = s.path("plan.json");
    s.keyrot(&["plan", "--now", NOW, "--out", out.to_str().unwrap()])
        .ok();
    s.write(
        "exceptions.toml",
        &exception("wide", "least-privilege", "2026-12-31"),
    );
    s.commit("accept SEC-123");
    assert_ne!(s.plan()["policies_digest"], before);
    let run = s.keyrot(&["apply", "--yes", out.to_str().unwrap()]).fails(1);
    run.stderr_has("stale");

    // And apply refuses an uncommitted exception like any other uncommitted input.
    s.write("exceptions.toml", &exception("old", "max-age", "2026-12-31"));
    let run = s.apply().fails(1);
    run.stderr_has("exceptions.toml");
}
