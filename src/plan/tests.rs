//! Unit tests of plans: precedence, ordering, JSON, diffs and memoised re-planning.

use std::collections::HashMap;
use std::sync::Arc;

use super::diff::{unmatched_by_hash, unmatched_by_scan};
use super::*;
use crate::store::{Key, Previous};

fn t(s: &str) -> Time {
    Time::parse_rfc3339(s).unwrap()
}

pub(super) fn key(permissions: &[&str]) -> Key {
    Key {
        id: "k".into(),
        path: "keys/k.toml".into(),
        folder: String::new(),
        service: "binance".into(),
        owner: "alice".into(),
        environment: "production".into(),
        permissions: permissions.iter().map(|s| s.to_string()).collect(),
        ip_allowlist: vec![],
        created_at: t("2026-01-01T00:00:00Z"),
        rotated_at: t("2026-01-01T00:00:00Z"),
        last_used_at: None,
        last_used_from: Vec::new(),
        compromised: false,
        status: KeyStatus::Active,
        fingerprint: None,
        tags: vec![],
        previous: vec![],
        revoked_at: None,
        revoke_reason: None,
    }
}

fn d(verdict: Verdict) -> Decision {
    Decision {
        verdict,
        reason: "r".into(),
    }
}

fn run(key: Key, decisions: &[(&str, Decision)], now: &str) -> Vec<Action> {
    run_excepted(key, decisions, &[], now)
}

fn run_excepted(
    key: Key,
    decisions: &[(&str, Decision)],
    exceptions: &[Exception],
    now: &str,
) -> Vec<Action> {
    let now = t(now);
    let view = KeyView::new(Arc::new(key), None, 1, now);
    let rules = Rules {
        default_grace: Dur::parse("1d").unwrap(),
        min_interval: Dur::parse("1d").unwrap(),
        now,
        exceptions: HashMap::from([("k", exceptions.iter().collect())]),
    };
    let named: Vec<(Arc<str>, &Decision)> = decisions.iter().map(|(p, d)| (Arc::from(*p), d)).collect();
    rules.resolve(&view, named.iter().map(|(p, d)| (p, *d)))
}

fn exception(policy: &str, expires: &str) -> Exception {
    Exception {
        key: "k".into(),
        policy: policy.into(),
        reason: "SEC-123".into(),
        approved_by: "carol".into(),
        expires: t(expires),
        expires_text: expires.into(),
        pos: (1, 1),
        expires_pos: (6, 11),
    }
}

#[test]
fn an_excepted_decision_stays_listed_but_is_not_applied_or_counted() {
    let actions = run_excepted(
        key(&["withdraw"]),
        &[
            ("a", d(Verdict::Rotate { grace: None })),
            (
                "b",
                d(Verdict::Restrict {
                    remove: vec!["withdraw".into()],
                }),
            ),
        ],
        &[exception("b", "2026-07-01T00:00:00Z")],
        "2026-06-01T00:00:00Z",
    );
    assert_eq!(actions.len(), 2);
    assert!(actions[0].excepted.is_none() && actions[0].is_applied());
    let held = actions[1].excepted.as_ref().expect("restrict is excepted");
    assert_eq!(
        (held.approved_by.as_str(), held.expires.as_str()),
        ("carol", "2026-07-01T00:00:00Z")
    );
    assert!(!actions[1].is_applied());
    let s = Summary::of(&actions);
    assert_eq!((s.rotate, s.restrict, s.excepted), (1, 0, 1));
    assert!(s.to_string().ends_with(", 0 warn, 1 excepted."), "{s}");
}

#[test]
fn an_excepted_revoke_supersedes_nothing() {
    let actions = run_excepted(
        key(&[]),
        &[
            ("a", d(Verdict::Revoke)),
            ("b", d(Verdict::Rotate { grace: None })),
        ],
        &[exception("a", "2026-07-01T00:00:00Z")],
        "2026-06-01T00:00:00Z",
    );
    assert_eq!(
        kinds(&actions),
        vec![(ActionKind::Revoke, "a", None), (ActionKind::Rotate, "b", None)]
    );
    assert!(actions[0].excepted.is_some() && actions[1].is_applied());
}

#[test]
fn an_expired_exception_stops_counting_and_the_plan_says_so() {
    let actions = run_excepted(
        key(&[]),
        &[("a", d(Verdict::Rotate { grace: None }))],
        &[exception("a", "2026-06-01T00:00:00Z")],
        "2026-06-01T00:00:00Z",
    );
    assert_eq!(
        kinds(&actions),
        vec![
            (ActionKind::Rotate, "a", None),
            (ActionKind::Warn, KEYROT_POLICY, None)
        ]
    );
    assert!(actions[0].is_applied());
    assert!(
        actions[1].reason.contains("expired 2026-06-01T00:00:00Z"),
        "{}",
        actions[1].reason
    );
}

#[test]
fn a_compromised_keys_revoke_is_never_excepted() {
    let mut k = key(&[]);
    k.compromised = true;
    let actions = run_excepted(
        k,
        &[("a", d(Verdict::Revoke))],
        &[exception("a", "2026-07-01T00:00:00Z")],
        "2026-06-01T00:00:00Z",
    );
    assert!(actions[0].is_applied());
    assert_eq!(&*actions[1].policy, KEYROT_POLICY);
    assert!(
        actions[1].reason.contains("cannot be excepted"),
        "{}",
        actions[1].reason
    );
}

fn kinds(actions: &[Action]) -> Vec<(ActionKind, &str, Option<ActionKind>)> {
    actions
        .iter()
        .map(|a| (a.action, &*a.policy, a.superseded_by))
        .collect()
}

#[test]
fn revoke_supersedes_all_but_warn_and_sorts_first() {
    let mut k = key(&["read", "withdraw"]);
    k.previous = vec![Previous {
        fingerprint: format!("sha256:{}", "a".repeat(64)),
        valid_until: t("2026-02-01T00:00:00Z"),
    }];
    let actions = run(
        k,
        &[
            ("a-warn", d(Verdict::Warn)),
            ("b-rotate", d(Verdict::Rotate { grace: None })),
            (
                "c-restrict",
                d(Verdict::Restrict {
                    remove: vec!["withdraw".into()],
                }),
            ),
            ("d-revoke", d(Verdict::Revoke)),
        ],
        "2026-06-01T00:00:00Z",
    );
    let rv = Some(ActionKind::Revoke);
    assert_eq!(
        kinds(&actions),
        vec![
            (ActionKind::Revoke, "d-revoke", None),
            (ActionKind::Rotate, "b-rotate", rv),
            (ActionKind::Restrict, "c-restrict", rv),
            (ActionKind::Expire, KEYROT_POLICY, rv),
            (ActionKind::Warn, "a-warn", None),
        ]
    );
    let s = Summary::of(&actions);
    assert_eq!(
        (s.revoke, s.rotate, s.restrict, s.expire, s.warn),
        (1, 0, 0, 0, 1)
    );
}

#[test]
fn rotate_and_restrict_combine_and_count_keys_once() {
    let actions = run(
        key(&["withdraw"]),
        &[
            (
                "a",
                d(Verdict::Rotate {
                    grace: Some(Dur::parse("2h").unwrap()),
                }),
            ),
            ("b", d(Verdict::Rotate { grace: None })),
            (
                "c",
                d(Verdict::Restrict {
                    remove: vec!["withdraw".into(), "admin".into()],
                }),
            ),
        ],
        "2026-06-01T00:00:00Z",
    );
    assert!(actions.iter().all(|a| a.superseded_by.is_none()));
    assert_eq!(actions[0].grace_period.map(Dur::compact).as_deref(), Some("2h"));
    assert_eq!(actions[1].grace_period.map(Dur::compact).as_deref(), Some("1d"));
    assert_eq!(actions[2].remove, Some(vec!["withdraw".to_string()]));
    let s = Summary::of(&actions);
    assert_eq!((s.rotate, s.restrict), (1, 1));
}

#[test]
fn restrict_of_permissions_not_held_is_dropped() {
    let actions = run(
        key(&["read"]),
        &[(
            "c",
            d(Verdict::Restrict {
                remove: vec!["withdraw".into()],
            }),
        )],
        "2026-06-01T00:00:00Z",
    );
    assert!(actions.is_empty());
}

#[test]
fn rotation_inside_cooldown_is_deferred_unless_compromised() {
    let mut k = key(&[]);
    k.rotated_at = t("2026-06-01T10:00:00Z");
    let actions = run(
        k.clone(),
        &[("m", d(Verdict::Rotate { grace: None }))],
        "2026-06-01T12:00:13Z",
    );
    assert_eq!(actions[0].action, ActionKind::Deferred);
    assert_eq!(actions[0].reason, "r; rotated 2h ago, cooldown 1d");
    k.compromised = true;
    let actions = run(
        k,
        &[("m", d(Verdict::Rotate { grace: None }))],
        "2026-06-01T12:00:00Z",
    );
    assert_eq!(actions[0].action, ActionKind::Rotate);
}

#[test]
fn expire_only_ended_grace_periods() {
    let mut k = key(&[]);
    let fp = |c: &str| format!("sha256:{}", c.repeat(64));
    k.previous = vec![
        Previous {
            fingerprint: fp("a"),
            valid_until: t("2026-06-01T00:00:00Z"),
        },
        Previous {
            fingerprint: fp("b"),
            valid_until: t("2026-06-02T00:00:00Z"),
        },
    ];
    let actions = run(k, &[], "2026-06-01T00:00:00Z");
    assert_eq!(actions.len(), 1);
    assert_eq!(actions[0].fingerprint, Some(fp("a")));
}

#[test]
fn action_kinds_order_as_the_spec_says() {
    use ActionKind::*;
    let mut v = vec![Warn, Deferred, Expire, Restrict, Rotate, Revoke];
    v.sort();
    assert_eq!(v, vec![Revoke, Rotate, Restrict, Expire, Deferred, Warn]);
}

#[test]
fn diff_reports_added_and_removed_actions() {
    let mk = |key: &str, kind, reason: &str| Action::new(&key.into(), kind, &"p".into(), reason.into());
    let old = vec![
        mk("a", ActionKind::Rotate, "old"),
        mk("b", ActionKind::Warn, "w"),
        mk("b", ActionKind::Warn, "w"),
    ];
    let new = vec![
        mk("a", ActionKind::Rotate, "older"),
        mk("b", ActionKind::Warn, "w"),
        mk("c", ActionKind::Revoke, "x"),
    ];
    let plan = plan_of;
    let d = PlanDiff::between(&plan(old), &plan(new));
    assert_eq!(
        d.added,
        vec![
            mk("a", ActionKind::Rotate, "older"),
            mk("c", ActionKind::Revoke, "x")
        ]
    );
    assert_eq!(
        d.removed,
        vec![mk("a", ActionKind::Rotate, "old"), mk("b", ActionKind::Warn, "w")]
    );
}

#[test]
fn watch_shows_no_change_that_time_alone_made_to_a_reason() {
    let mk = |key: &str, kind, reason: &str| Action::new(&key.into(), kind, &"p".into(), reason.into());
    let old = vec![
        mk("a", ActionKind::Deferred, "old; rotated 16m ago, cooldown 1d"),
        mk(
            "b",
            ActionKind::Deferred,
            "x; rollout: waits for dev, where d was rotated 2h 5m ago (soak 1d)",
        ),
        mk("c", ActionKind::Deferred, "old; rotated 3m ago, cooldown 1d"),
        mk("d", ActionKind::Warn, "rotated 2 keys ago"),
    ];
    let new = vec![
        mk("a", ActionKind::Deferred, "old; rotated 17m ago, cooldown 1d"),
        mk(
            "b",
            ActionKind::Deferred,
            "x; rollout: waits for dev, where d was rotated 2h 6m ago (soak 1d)",
        ),
        // A real change beside the elapsed time: shown.
        mk("c", ActionKind::Deferred, "older; rotated 4m ago, cooldown 1d"),
        mk("d", ActionKind::Warn, "rotated 3 keys ago"),
    ];
    let d = PlanDiff::between(&plan_of(old), &plan_of(new)).beyond_elapsed_time();
    let keys = |v: &[Action]| v.iter().map(|a| a.key.to_string()).collect::<Vec<_>>();
    assert_eq!(keys(&d.removed), ["c", "d"]);
    assert_eq!(keys(&d.added), ["c", "d"]);
    let same = PlanDiff::between(
        &plan_of(vec![mk(
            "a",
            ActionKind::Deferred,
            "r; rotated 1h ago, cooldown 1d",
        )]),
        &plan_of(vec![mk(
            "a",
            ActionKind::Deferred,
            "r; rotated 1h 1m ago, cooldown 1d",
        )]),
    );
    assert!(!same.is_empty() && same.beyond_elapsed_time().is_empty());
}

#[test]
fn the_version_is_in_the_json_but_not_in_the_digest() {
    let mut plan = plan_of(vec![Action::new(
        &"k".into(),
        ActionKind::Warn,
        &"p".into(),
        "r".into(),
    )]);
    let without = plan.digest();
    plan.keyrot_version = Some("9.9.9".into());
    let json = serde_json::to_string(&plan).unwrap();
    assert!(
        json.starts_with("{\"format\":1,\"keyrot_version\":\"9.9.9\","),
        "{json}"
    );
    assert_eq!(plan.digest(), without);
    // A plan file from a keyrot that wrote no version still reads.
    let old = json.replace(",\"keyrot_version\":\"9.9.9\"", "");
    assert_eq!(
        Plan::from_json("p.json", old.as_bytes()).unwrap().keyrot_version,
        None
    );
}

/// A plan of just these actions.
fn plan_of(actions: Vec<Action>) -> Plan {
    Plan {
        format: FORMAT,
        keyrot_version: None,
        store_commit: None,
        policies_digest: String::new(),
        keys_digest: String::new(),
        now: Time::from_unix(0),
        dirty: false,
        summary: Summary::of(&actions),
        actions,
    }
}

fn arb_actions() -> impl proptest::strategy::Strategy<Value = Vec<Action>> {
    use proptest::prelude::*;
    proptest::collection::vec((0u8..4, 0u8..3, 0u8..3), 0..12).prop_map(|v| {
        let mut actions: Vec<Action> = v
            .into_iter()
            .map(|(k, kind, r)| {
                let kind = [ActionKind::Rotate, ActionKind::Warn, ActionKind::Revoke][kind as usize];
                Action::new(&format!("k{k}").into(), kind, &"p".into(), format!("r{r}"))
            })
            .collect();
        actions.sort_by(|a, b| a.key.cmp(&b.key));
        actions
    })
}

proptest::proptest! {
    /// Counting key by key gives the keys per action, as a set of (kind, key) does.
    #[test]
    fn summary_counts_keys_per_action(actions in arb_actions(), superseded in proptest::collection::vec(proptest::prelude::any::<bool>(), 12)) {
        let mut actions = actions;
        for (a, s) in actions.iter_mut().zip(superseded) {
            if s {
                a.superseded_by = Some(ActionKind::Revoke);
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for a in actions.iter().filter(|a| a.superseded_by.is_none()) {
            seen.insert((a.action, a.key.clone()));
        }
        let count = |kind| seen.iter().filter(|(k, _)| *k == kind).count();
        let s = Summary::of(&actions);
        proptest::prop_assert_eq!((s.rotate, s.warn, s.revoke), (count(ActionKind::Rotate), count(ActionKind::Warn), count(ActionKind::Revoke)));
    }

    /// The key-by-key diff is the multiset difference of the whole plans.
    #[test]
    fn the_diff_walk_equals_the_multiset_difference(old in arb_actions(), new in arb_actions()) {
        let plan = plan_of;
        let d = PlanDiff::between(&plan(old.clone()), &plan(new.clone()));
        // The multiset difference, the plain way: each action of `minus` cancels
        // one equal action of `from`.
        let naive = |from: &[Action], minus: &[Action]| {
            let mut left = minus.to_vec();
            let mut out = Vec::new();
            for a in from {
                match left.iter().position(|b| b == a) {
                    Some(i) => {
                        left.remove(i);
                    }
                    None => out.push(a.clone()),
                }
            }
            out
        };
        proptest::prop_assert_eq!(d.added, naive(&new, &old));
        proptest::prop_assert_eq!(d.removed, naive(&old, &new));
        // The two ways of pairing actions agree.
        proptest::prop_assert_eq!(unmatched_by_scan(&new, &old), unmatched_by_hash(&new, &old));
        proptest::prop_assert_eq!(unmatched_by_scan(&old, &new), unmatched_by_hash(&old, &new));
    }

    /// The plan-file reader refuses garbage with an error, never a panic.
    #[test]
    fn reading_arbitrary_plan_files_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
        let _ = Plan::from_json("fuzz.json", &bytes);
    }

    /// Nor does a valid plan with one field's JSON replaced by an arbitrary value.
    #[test]
    fn reading_plans_with_mangled_fields_never_panics(field in 0usize..8, value in "(?s).{0,40}") {
        let mut v = serde_json::json!({"format": 1, "store_commit": "abc", "policies_digest": "sha256:x",
            "keys_digest": "sha256:y", "now": "2026-11-22T20:00:00Z", "dirty": false,
            "actions": [{"key": "k", "action": "rotate", "policy": "p", "reason": "r", "grace_period": "1d"}],
            "summary": {"rotate": 1, "revoke": 0, "restrict": 0, "expire": 0, "deferred": 0, "warn": 0}});
        let names = ["format", "store_commit", "policies_digest", "keys_digest", "now", "dirty", "actions", "summary"];
        v[names[field]] = serde_json::from_str(&value).unwrap_or(serde_json::Value::String(value));
        if let Ok(plan) = Plan::from_json("fuzz.json", v.to_string().as_bytes()) {
            let _ = plan.now.to_rfc3339();
        }
    }
}

#[test]
fn summary_line_format() {
    let s = Summary {
        rotate: 2,
        revoke: 1,
        restrict: 1,
        expire: 1,
        deferred: 0,
        warn: 3,
        excepted: 0,
    };
    assert_eq!(
        s.to_string(),
        "Plan: 2 rotate, 1 revoke, 1 restrict, 1 expire, 0 deferred, 3 warn."
    );
}

#[test]
fn a_plans_store_commit_is_a_commit_id_or_the_file_is_refused() {
    let with = |commit: &str| {
        serde_json::json!({"format": 1, "store_commit": commit, "policies_digest": "sha256:x",
            "keys_digest": "sha256:y", "now": "2026-11-22T20:00:00Z", "dirty": false, "actions": [],
            "summary": {"rotate": 0, "revoke": 0, "restrict": 0, "expire": 0, "deferred": 0, "warn": 0}})
        .to_string()
    };
    let good = "0123456789abcdef0123456789abcdef01234567";
    let plan = Plan::from_json("p.json", with(good).as_bytes()).unwrap();
    assert_eq!(plan.store_commit.as_ref().map(CommitId::as_str), Some(good));
    assert_eq!(serde_json::to_value(&plan).unwrap()["store_commit"], good);
    for bad in [
        "abc",
        &good.to_uppercase(),
        &format!("{good}0"),
        "0123456789abcdef0123456789abcdef0123456g",
    ] {
        let e = Plan::from_json("p.json", with(bad).as_bytes())
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a commit id"), "{bad}: {e}");
    }
}
