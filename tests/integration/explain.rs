//! `keyrot explain KEY`: facts, each policy, the resolution, the key after apply.

use crate::common::*;

fn store() -> Store {
    Store::with_keys(&[
        (
            "old",
            &key("[\"read\"]", "2026-07-01T00:00:00Z", "tags = [\"bot\"]\n"),
        ),
        (
            "leaked",
            &key(
                "[\"read\", \"withdraw\"]",
                "2026-07-01T00:00:00Z",
                "compromised = true\n",
            )
            .replace("ip_allowlist = [\"203.0.113.7/32\"]\n", ""),
        ),
        ("fine", &key("[\"read\"]", "2026-11-01T00:00:00Z", "")),
        (
            "gone",
            &key("[\"read\"]", "2026-11-01T00:00:00Z", "status = \"revoked\"\n"),
        ),
    ])
}

#[test]
fn explain_shows_facts_decisions_resolution_and_the_file_after_apply() {
    let s = store();
    let out = s.keyrot(&["explain", "old", "--now", NOW]).ok().stdout;
    for expected in [
        "Key old (keys/old.toml), active, at 2026-11-22T20:00:00Z",
        "  owner            alice (active, team trading; 3 active keys)",
        "  age              144d 20h",
        "  idle             20h",
        "  compromised          no finding",
        "  max-age              rotate: secret is 144 days old (limit 90)",
        "  - rotate by max-age is applied",
        "After apply (keys/old.toml):",
        "  - rotated_at = 2026-07-01T00:00:00Z",
        "  + rotated_at = 2026-11-22T20:00:00Z",
        "  + fingerprint = \"sha256:<new secret's fingerprint>\"",
        "    service = \"binance\"",
    ] {
        assert!(out.contains(expected), "missing `{expected}` in:\n{out}");
    }
    // Explaining changes nothing.
    assert!(s.git(&["status", "--porcelain"]).is_empty());
}

#[test]
fn explain_json_lists_every_policy_and_how_revoke_superseded_the_rest() {
    let s = store();
    let e = s
        .keyrot(&["explain", "leaked", "--now", NOW, "--json"])
        .ok()
        .json();
    assert_eq!(e["key"], "leaked");
    assert_eq!(e["facts"]["compromised"], true);
    assert_eq!(e["facts"]["age"], "144d20h");
    assert_eq!(e["facts"]["owner_key_count"], 3);
    let policies: Vec<(&str, usize)> = e["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["policy"].as_str().unwrap(),
                p["decisions"].as_array().unwrap().len(),
            )
        })
        .collect();
    assert_eq!(
        policies,
        [
            ("compromised", 1),
            ("departed-owner", 0),
            ("idle", 0),
            ("key-cap", 0),
            ("least-privilege", 1),
            ("max-age", 1),
            ("unexpected-source", 0)
        ]
    );
    assert_eq!(
        e["policies"][4]["decisions"][0]["remove"],
        serde_json::json!(["withdraw"])
    );
    // The actions are exactly the plan's for this key.
    let plan = s.plan();
    let from_plan: Vec<&serde_json::Value> = plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["key"] == "leaked")
        .collect();
    assert_eq!(
        e["actions"].as_array().unwrap().iter().collect::<Vec<_>>(),
        from_plan
    );
    let resolution: Vec<&str> = e["resolution"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(
        resolution,
        [
            "revoke by compromised is applied",
            "rotate by max-age is superseded by the revoke: a revoked key needs nothing else",
            "restrict by least-privilege is superseded by the revoke: a revoked key needs nothing else",
        ]
    );
    assert!(e["after"].as_str().unwrap().contains("status = \"revoked\""));
}

#[test]
fn explain_shows_exceptions_and_keys_with_nothing_to_do() {
    let s = store();
    s.write(
        "exceptions.toml",
        "[[exception]]\nkey = \"old\"\npolicy = \"max-age\"\nreason = \"retired on Friday\"\napproved_by = \"carol\"\nexpires = 2026-12-01\n",
    );
    let out = s.keyrot(&["explain", "old", "--now", NOW]).ok().stdout;
    assert!(
        out.contains("  max-age              holds until 2026-12-01, approved by carol: retired on Friday"),
        "{out}"
    );
    assert!(
        out.contains("  - rotate by max-age is held back by an exception until 2026-12-01 (approved by carol: retired on Friday)"),
        "{out}"
    );
    assert!(out.contains("After apply: keys/old.toml is unchanged."), "{out}");

    let out = s.keyrot(&["explain", "fine", "--now", NOW]).ok().stdout;
    assert!(
        out.contains("  - no policy has a finding: nothing happens to this key"),
        "{out}"
    );
    let out = s.keyrot(&["explain", "gone", "--now", NOW]).ok().stdout;
    assert!(out.contains("revoked keys are not evaluated"), "{out}");
    assert!(!out.contains("Policies:"), "{out}");
    let run = s.keyrot(&["explain", "nope"]).fails(1);
    assert!(
        run.stderr
            .contains("no key `nope` in the store (no keys/nope.toml)"),
        "{}",
        run.stderr
    );
}

#[test]
fn explain_tells_the_rules_that_leave_no_mark_on_the_actions() {
    // A restrict of a permission the key does not hold is dropped; a compromised key's
    // rotate inside the cooldown goes ahead. Neither shows in the plan's actions.
    let s = Store::with_keys(&[(
        "hot",
        &key("[\"read\"]", "2026-11-22T12:00:00Z", "compromised = true\n"),
    )]);
    for p in [
        "compromised",
        "departed-owner",
        "idle",
        "key-cap",
        "least-privilege",
        "max-age",
    ] {
        s.remove(&format!("policies/{p}.rhai"));
        s.remove(&format!("policies/{p}_test.rhai"));
    }
    s.write("keyrot.toml", "");
    s.write(
        "policies/cut.rhai",
        "fn evaluate(key) {\n    [restrict(\"withdraw\", \"no withdrawals\"), rotate(\"leaked\")]\n}\n",
    );
    s.commit("one policy");
    let out = s.keyrot(&["explain", "hot", "--now", NOW]).ok().stdout;
    for expected in [
        "  - restrict by cut removes nothing the key holds (withdraw): dropped",
        "  - rotate by cut is applied: a compromised key skips the cooldown",
    ] {
        assert!(out.contains(expected), "expected `{expected}` in:\n{out}");
    }
    // Without the compromise, the same rotate is deferred by the cooldown.
    s.write(
        "keys/hot.toml",
        &s.read("keys/hot.toml").replace("compromised = true\n", ""),
    );
    let out = s.keyrot(&["explain", "hot", "--now", NOW]).ok().stdout;
    assert!(
        out.contains("rotate by cut is deferred: the key was rotated less than min_interval (1d) ago"),
        "{out}"
    );
}
