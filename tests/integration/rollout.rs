//! `[rollout]` (SPEC §10): rotations environment by environment, each earlier one
//! soaking first, and at most `max_per_run` rotations per plan — through plan, apply,
//! saved plans, explain, watch and audit verify.

use crate::common::*;

const ROLLOUT: &str = "\n[rollout]\norder = [\"development\", \"staging\", \"production\"]\nsoak = \"24h\"\n";

/// A key of `service` in `environment`, due for rotation at NOW (rotated 2026-07-01).
fn due(service: &str, environment: &str, extra: &str) -> String {
    key(
        "[\"read\"]",
        "2026-07-01T00:00:00Z",
        &format!("environment = \"{environment}\"\n{extra}"),
    )
    .replace("binance", service)
}

/// A store with the rollout settings `rollout` and these keys (id, body), committed.
fn store(rollout: &str, keys: &[(&str, String)]) -> Store {
    let s = Store::new();
    s.write("keyrot.toml", &(s.read("keyrot.toml") + rollout));
    s.write("owners.toml", OWNERS);
    for (id, body) in keys {
        s.write(&format!("keys/{id}.toml"), body);
    }
    s.commit("keys with a rollout");
    s
}

fn three_environments() -> Store {
    store(
        ROLLOUT,
        &[
            ("pay-dev", due("payments", "development", "")),
            ("pay-stg", due("payments", "staging", "")),
            ("pay-prod", due("payments", "production", "")),
        ],
    )
}

/// `(key, action)` of a JSON plan's actions, and the reason of each deferred one.
fn decided(plan: &serde_json::Value) -> Vec<(String, String)> {
    actions(plan).into_iter().map(|(k, a, _)| (k, a)).collect()
}

fn reason(plan: &serde_json::Value, key: &str) -> String {
    plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["key"] == key)
        .unwrap()["reason"]
        .as_str()
        .unwrap()
        .to_string()
}

fn plan_at(s: &Store, now: &str) -> serde_json::Value {
    s.keyrot(&["plan", "--json", "--now", now]).ok().json()
}

/// The key files an apply commit changed.
fn changed_by(s: &Store, commit: &str) -> Vec<String> {
    s.git(&["show", "--name-only", "--format=", commit])
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn environments_rotate_one_after_another_each_after_the_soak_of_the_one_before() {
    let s = three_environments();
    // Day 1: development only; the others name what they wait for.
    let plan = plan_at(&s, NOW);
    assert_eq!(
        decided(&plan),
        [
            ("pay-dev", "rotate"),
            ("pay-prod", "deferred"),
            ("pay-stg", "deferred")
        ]
        .map(|(k, a)| (k.to_string(), a.to_string()))
    );
    assert_eq!(plan["summary"]["deferred"], 2);
    assert!(reason(&plan, "pay-stg")
        .ends_with("; rollout: waits for development, where pay-dev is rotated by this plan"));
    let out = s.keyrot(&["plan", "--now", NOW]).ok().stdout;
    assert!(
        out.contains("Plan: 1 rotate, 0 revoke, 0 restrict, 0 expire, 2 deferred, 0 warn."),
        "{out}"
    );
    // Through a saved plan: apply derives the same decision again.
    let file = s.root.parent().unwrap().join("day1.json");
    s.keyrot(&["plan", "--now", NOW, "--out", file.to_str().unwrap()])
        .ok();
    let secrets = s.secrets.to_str().unwrap().to_string();
    s.keyrot(&["apply", file.to_str().unwrap(), "--secrets-dir", &secrets])
        .ok();
    let day1 = s.head();
    assert_eq!(changed_by(&s, &day1), ["keys/pay-dev.toml"]);

    // Twelve hours later development has not held for a day: nothing to apply.
    let later = "2026-11-23T08:00:00Z";
    let plan = plan_at(&s, later);
    assert_eq!(plan["summary"]["rotate"], 0);
    assert!(
        reason(&plan, "pay-stg")
            .ends_with("; rollout: waits for development, where pay-dev was rotated 12h ago (soak 1d)"),
        "{}",
        reason(&plan, "pay-stg")
    );
    s.apply_at(later, &[]).ok().stdout_has("No commit made");
    assert_eq!(s.head(), day1);

    // Day 2: staging goes; production waits for it.
    let day2 = "2026-11-23T21:00:00Z";
    let plan = plan_at(&s, day2);
    assert_eq!(plan["summary"]["rotate"], 1);
    assert!(reason(&plan, "pay-prod")
        .contains("rollout: waits for staging, where pay-stg is rotated by this plan"));
    s.apply_at(day2, &[]).ok();
    assert_eq!(changed_by(&s, &s.head()), ["keys/pay-stg.toml"]);

    // Day 3, a day after staging: production.
    let day3 = "2026-11-24T22:00:00Z";
    s.apply_at(day3, &[]).ok();
    assert_eq!(changed_by(&s, &s.head()), ["keys/pay-prod.toml"]);
    assert_eq!(plan_at(&s, day3)["summary"]["deferred"], 0);

    // Each key rotated exactly once, in order, and the history re-derives.
    let subjects = s.git(&["log", "--format=%s", "-3"]);
    assert_eq!(
        subjects.lines().collect::<Vec<_>>(),
        ["keyrot apply: 1 rotate, 0 revoke, 0 restrict, 0 expire"; 3],
    );
    s.keyrot(&["audit", "verify"])
        .ok()
        .stdout_has("Verified: ")
        .stdout_has(" 3 apply ok, ");
}

#[test]
fn revocations_restrictions_and_compromised_keys_are_never_held_back() {
    let s = store(
        ROLLOUT,
        &[
            ("pay-dev", due("payments", "development", "")),
            ("pay-prod", due("payments", "production", "compromised = true\n")),
            (
                "pay-wide",
                due("payments", "production", "")
                    .replace("[\"read\"]", "[\"read\", \"withdraw\"]")
                    .replace("ip_allowlist = [\"203.0.113.7/32\"]\n", ""),
            ),
        ],
    );
    let plan = s.plan();
    let got = decided(&plan);
    assert!(got.contains(&("pay-prod".into(), "revoke".into())), "{got:?}");
    assert!(got.contains(&("pay-wide".into(), "restrict".into())), "{got:?}");
    assert!(got.contains(&("pay-wide".into(), "deferred".into())), "{got:?}");
    assert!(got.contains(&("pay-dev".into(), "rotate".into())), "{got:?}");
    s.apply().ok();
    let after = s.read("keys/pay-prod.toml");
    assert!(after.contains("status = \"revoked\""), "{after}");
    assert!(s.read("keys/pay-wide.toml").contains("permissions = [\"read\"]"));
}

#[test]
fn max_per_run_spreads_a_mass_rotation_over_runs_longest_rotated_first() {
    let rotated = |date: &str| due("svc", "production", "").replace("2026-07-01T00:00:00Z", date);
    let s = store(
        "\n[rollout]\nmax_per_run = 2\n",
        &[
            ("a", rotated("2026-06-01T00:00:00Z")),
            ("b", rotated("2026-05-01T00:00:00Z")),
            ("c", rotated("2026-06-01T00:00:00Z")),
            ("d", rotated("2026-07-01T00:00:00Z")),
            ("e", rotated("2026-04-01T00:00:00Z")),
        ],
    );
    let plan = s.plan();
    let rotating: Vec<String> = decided(&plan)
        .into_iter()
        .filter(|(_, a)| a == "rotate")
        .map(|(k, _)| k)
        .collect();
    assert_eq!(rotating, ["b", "e"]);
    assert!(reason(&plan, "a").contains("rollout: this plan already rotates max_per_run = 2 keys"));
    // Runs after: a and c (tie by id), then d; every key once.
    s.apply().ok();
    s.apply_at("2026-11-22T21:00:00Z", &[]).ok();
    assert_eq!(changed_by(&s, &s.head()), ["keys/a.toml", "keys/c.toml"]);
    s.apply_at("2026-11-22T22:00:00Z", &[]).ok();
    assert_eq!(changed_by(&s, &s.head()), ["keys/d.toml"]);
    assert_eq!(plan_at(&s, "2026-11-22T23:00:00Z")["summary"]["deferred"], 0);
    s.keyrot(&["audit", "verify"]).ok();
}

#[test]
fn other_services_and_environments_outside_the_order_are_not_held_back() {
    let s = store(
        ROLLOUT,
        &[
            ("pay-dev", due("payments", "development", "")),
            ("pay-qa", due("payments", "qa", "")),
            ("ship-prod", due("shipping", "production", "")),
        ],
    );
    assert_eq!(s.plan()["summary"]["rotate"], 3);
}

#[test]
fn a_rotation_that_failed_at_its_service_keeps_the_next_environment_waiting() {
    let s = store(
        ROLLOUT,
        &[
            ("led-dev", due("ledger", "development", "")),
            ("led-stg", due("ledger", "staging", "")),
        ],
    );
    s.install_ledger("5s", "");
    s.commit("the ledger provider");
    let ledger = s.root.parent().unwrap().join("ledger");
    let ledger = ledger.to_str().unwrap();
    s.apply_at(NOW, &[("LEDGER_DIR", ledger), ("LEDGER_FAIL", "set")])
        .fails(1);
    // Development is still due two days later, so staging still waits for it.
    let later = "2026-11-24T20:00:00Z";
    let plan = plan_at(&s, later);
    assert!(reason(&plan, "led-stg").contains("waits for development, where led-dev is rotated by this plan"));
    s.apply_at(later, &[("LEDGER_DIR", ledger)]).ok();
    assert_eq!(changed_by(&s, &s.head()), ["keys/led-dev.toml"]);
}

#[test]
fn explain_names_the_rule_that_held_a_rotation_back() {
    let s = three_environments();
    let out = s.keyrot(&["explain", "pay-prod", "--now", NOW]).ok().stdout;
    assert!(
        out.contains("rotate by max-age is deferred by the rollout ([rollout] in keyrot.toml): it waits for development, where pay-dev is rotated by this plan"),
        "{out}"
    );
    assert!(out.contains("apply leaves this key unchanged"), "{out}");
    let out = s.keyrot(&["explain", "pay-dev", "--now", NOW]).ok().stdout;
    assert!(out.contains("rotate by max-age is applied"), "{out}");
}

#[test]
fn check_names_the_line_of_a_bad_rollout_setting() {
    let s = store("\n[rollout]\norder = [\"dev\", \"dev\"]\nmax_per_run = 0\n", &[]);
    let lines = s.read("keyrot.toml").lines().count();
    let run = s.keyrot(&["check"]).fails(1);
    run.stderr_has(&format!("keyrot.toml:{}:", lines - 1))
        .stderr_has("rollout.order: `dev` is listed twice")
        .stderr_has(&format!("keyrot.toml:{lines}:"))
        .stderr_has("rollout.max_per_run must be at least 1");
}

#[test]
fn watch_frees_the_next_environment_when_an_earlier_key_is_no_longer_due() {
    let s = three_environments();
    let mut w = s.spawn(&["watch", "--json", "--now", NOW], &[]);
    let first = w.next_event("plan");
    assert_eq!(first["plan"]["summary"]["deferred"], 2);
    // Development's key was rotated yesterday after all: staging goes, production
    // waits for development's soak.
    s.write(
        "keys/pay-dev.toml",
        &due("payments", "development", "").replace("2026-07-01T00:00:00Z", "2026-11-21T08:00:00Z"),
    );
    let plan = w.plan_where("staging freed", |p| p["summary"]["rotate"] == 1);
    let reasons: Vec<(String, String)> = decided(&plan);
    assert!(
        reasons.contains(&("pay-stg".into(), "rotate".into())),
        "{reasons:?}"
    );
    assert!(reason(&plan, "pay-prod").contains("waits for staging, where pay-stg is rotated by this plan"));
    w.signal("INT");
    assert_eq!(w.finish(), 0);
}

#[test]
fn the_table_init_ships_commented_out_works_when_uncommented() {
    let s = Store::new();
    let shipped = s.read("keyrot.toml");
    assert!(shipped.contains("\n# [rollout]\n"), "{shipped}");
    let uncommented: String = shipped
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest)
                if ["[rollout]", "order", "soak", "max_per_run"]
                    .iter()
                    .any(|p| rest.starts_with(p)) =>
            {
                rest
            }
            _ => l,
        })
        .map(|l| format!("{l}\n"))
        .collect();
    s.write("keyrot.toml", &uncommented);
    s.write("owners.toml", OWNERS);
    s.write("keys/pay-dev.toml", &due("payments", "development", ""));
    s.write("keys/pay-prod.toml", &due("payments", "production", ""));
    s.keyrot(&["check"]).ok();
    let plan = s.keyrot(&["plan", "--json", "--now", NOW]).ok().json();
    assert_eq!(
        decided(&plan),
        [("pay-dev", "rotate"), ("pay-prod", "deferred")].map(|(k, a)| (k.to_string(), a.to_string()))
    );
}
