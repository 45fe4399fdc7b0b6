//! The seven shipped policies, each at and around its thresholds, through the real binary.

use crate::common::*;

/// The actions a store with these keys gets at NOW, as `(key, action, policy)`.
fn decide(keys: &[(&str, String)], settings: Option<&str>) -> Vec<(String, String, String)> {
    let s = Store::new();
    s.write("owners.toml", OWNERS);
    if let Some(toml) = settings {
        s.write("keyrot.toml", toml);
    }
    for (id, body) in keys {
        s.write(&format!("keys/{id}.toml"), body);
    }
    s.commit("keys");
    actions(&s.plan())
}

fn row(k: &str, a: &str, p: &str) -> (String, String, String) {
    (k.into(), a.into(), p.into())
}

#[test]
fn max_age_rotates_after_90_days_or_30_with_withdraw() {
    let got = decide(
        &[
            ("at-90", key("[\"read\"]", "2026-08-24T20:00:00Z", "")),
            ("over-90", key("[\"read\"]", "2026-08-24T19:00:00Z", "")),
            ("w-at-30", key("[\"withdraw\"]", "2026-10-23T20:00:00Z", "")),
            ("w-over-30", key("[\"withdraw\"]", "2026-10-23T19:59:00Z", "")),
        ],
        None,
    );
    assert_eq!(
        got,
        [
            row("over-90", "rotate", "max-age"),
            row("w-over-30", "rotate", "max-age")
        ]
    );
}

#[test]
fn max_age_limits_come_from_config() {
    let got = decide(
        &[("k", key("[\"read\"]", "2026-10-01T00:00:00Z", ""))],
        Some("[policy.max-age]\nmax_days = 30\n"),
    );
    assert_eq!(got, [row("k", "rotate", "max-age")]);
}

#[test]
fn compromised_keys_are_revoked_even_inside_the_cooldown() {
    let got = decide(
        &[(
            "k",
            key("[\"read\"]", "2026-11-22T19:00:00Z", "compromised = true\n"),
        )],
        None,
    );
    assert_eq!(got, [row("k", "revoke", "compromised")]);
}

#[test]
fn departed_owner_rotates_and_warns_or_revokes_personal_keys() {
    let dave = |extra: &str| {
        key("[\"read\"]", "2026-11-01T00:00:00Z", extra).replace("owner = \"alice\"", "owner = \"dave\"")
    };
    let got = decide(
        &[
            ("shared", dave("")),
            ("personal", dave("tags = [\"personal\"]\n")),
            (
                "nobody",
                key("[\"read\"]", "2026-11-01T00:00:00Z", "").replace("owner = \"alice\"", "owner = \"zoe\""),
            ),
            ("kept", key("[\"read\"]", "2026-11-01T00:00:00Z", "")),
        ],
        None,
    );
    assert_eq!(
        got,
        [
            row("nobody", "warn", "departed-owner"),
            row("personal", "revoke", "departed-owner"),
            row("shared", "rotate", "departed-owner"),
            row("shared", "warn", "departed-owner"),
        ]
    );
}

#[test]
fn least_privilege_cuts_withdraw_and_flags_admin_without_an_allowlist() {
    let open = |perms: &str| {
        key(perms, "2026-11-20T00:00:00Z", "").replace("ip_allowlist = [\"203.0.113.7/32\"]\n", "")
    };
    let got = decide(
        &[
            ("open-withdraw", open("[\"read\", \"withdraw\"]")),
            ("open-admin", open("[\"admin\"]")),
            ("open-read", open("[\"read\"]")),
            (
                "pinned-withdraw",
                key("[\"read\", \"withdraw\"]", "2026-11-20T00:00:00Z", ""),
            ),
        ],
        None,
    );
    assert_eq!(
        got,
        [
            row("open-admin", "warn", "least-privilege"),
            row("open-withdraw", "restrict", "least-privilege")
        ]
    );
}

#[test]
fn idle_keys_are_revoked_after_60_days() {
    let used =
        |when: &str| key("[\"read\"]", "2026-11-20T00:00:00Z", "").replace("2026-11-22T00:00:00Z", when);
    let never_used = "service = \"binance\"\nowner = \"alice\"\npermissions = []\nip_allowlist = [\"203.0.113.7/32\"]\ncreated_at = 2026-09-01T00:00:00Z\nrotated_at = 2026-11-20T00:00:00Z\n";
    let got = decide(
        &[
            ("at-60", used("2026-09-23T20:00:00Z")),
            ("over-60", used("2026-09-23T19:00:00Z")),
            ("never-used", never_used.to_string()),
        ],
        None,
    );
    assert_eq!(
        got,
        [
            row("never-used", "revoke", "idle"),
            row("over-60", "revoke", "idle")
        ]
    );
}

#[test]
fn key_cap_warns_on_every_key_of_an_owner_over_five() {
    let mut keys: Vec<(String, String)> = (1..=6)
        .map(|i| (format!("a{i}"), key("[\"read\"]", "2026-11-20T00:00:00Z", "")))
        .collect();
    // A revoked key does not count.
    keys.push((
        "a7".into(),
        key("[\"read\"]", "2026-11-20T00:00:00Z", "status = \"revoked\"\n"),
    ));
    let refs: Vec<(&str, String)> = keys.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    let got = decide(&refs, None);
    assert_eq!(got.len(), 6);
    assert!(got.iter().all(|(_, a, p)| a == "warn" && p == "key-cap"));
    let got = decide(&refs[1..], None);
    assert!(got.is_empty(), "{got:?}");
}

#[test]
fn every_shipped_policy_has_a_description() {
    let s = Store::new();
    let json = s.keyrot(&["check", "--json"]).ok().json();
    let policies = json["policies"].as_array().unwrap();
    assert_eq!(policies.len(), 7);
    for p in policies {
        assert!(!p["description"].as_str().unwrap_or_default().is_empty(), "{p}");
    }
}

/// The rows of one key in a plan made at `now`.
fn rows_at(s: &Store, now: &str, id: &str) -> Vec<(String, String, String)> {
    let plan = s.keyrot(&["plan", "--json", "--now", now]).ok().json();
    actions(&plan).into_iter().filter(|(k, _, _)| k == id).collect()
}

#[test]
fn a_departure_recorded_by_owner_depart_is_acted_on_once() {
    let s = Store::with_keys(&[(
        "shared",
        &key("[\"read\"]", "2026-11-01T00:00:00Z", "").replace("alice", "dave"),
    )]);
    s.write("owners.toml", &format!("# who owns keys\n{OWNERS}"));
    s.commit("owners with a comment");
    let rotate_and_warn = vec![
        row("shared", "rotate", "departed-owner"),
        row("shared", "warn", "departed-owner"),
    ];
    assert_eq!(rows_at(&s, NOW, "shared"), rotate_and_warn);

    // Recorded in a commit of its own that changes owners.toml alone, comments kept.
    let before = s.head();
    s.keyrot(&["owner", "depart", "dave", "--at", "2026-11-20T00:00:00Z"])
        .ok()
        .stdout_has("dave departed at 2026-11-20T00:00:00Z");
    assert_eq!(s.git(&["rev-parse", "HEAD~1"]).trim(), before.trim());
    assert_eq!(
        s.git(&["log", "-1", "--format=%s"]).trim(),
        "keyrot owner: dave departed"
    );
    assert_eq!(
        s.git(&["show", "--name-only", "--format=", "HEAD"]).trim(),
        "owners.toml"
    );
    let owners = s.read("owners.toml");
    assert!(owners.starts_with("# who owns keys\n"), "{owners}");
    assert!(
        owners.contains(
            "[dave]\nstatus = \"departed\"\nteam = \"trading\"\ndeparted_at = 2026-11-20T00:00:00Z\n"
        ),
        "{owners}"
    );
    assert!(s.git(&["status", "--porcelain"]).is_empty());

    // Last rotated before the departure: rotated once; then only the warning stays,
    // also after the cooldown.
    assert_eq!(rows_at(&s, NOW, "shared"), rotate_and_warn);
    s.apply().ok();
    let days_later = "2026-11-25T20:00:00Z";
    assert_eq!(
        rows_at(&s, days_later, "shared"),
        vec![row("shared", "warn", "departed-owner")]
    );
    let explained = s.keyrot(&["explain", "shared", "--now", days_later]).ok().stdout;
    assert!(
        explained.contains("dave (departed at 2026-11-20T00:00:00Z, team trading"),
        "{explained}"
    );
    // Without the record, keyrot cannot tell and rotates again after the cooldown.
    s.write(
        "owners.toml",
        &s.read("owners.toml")
            .replace("departed_at = 2026-11-20T00:00:00Z\n", ""),
    );
    assert_eq!(rows_at(&s, days_later, "shared"), rotate_and_warn);
    s.git(&["checkout", "owners.toml"]);

    // Again: nothing to do. An unknown owner, or uncommitted edits, are refused.
    let head = s.head();
    s.keyrot(&["owner", "depart", "dave"])
        .ok()
        .stdout_has("already recorded as departed at 2026-11-20T00:00:00Z");
    s.keyrot(&["owner", "depart", "erin"])
        .fails(1)
        .stderr_has("owners.toml: no owner `erin`");
    s.write("owners.toml", &(s.read("owners.toml") + "\n[erin]\n"));
    s.keyrot(&["owner", "depart", "alice"])
        .fails(1)
        .stderr_has("owners.toml has uncommitted changes");
    assert_eq!(s.head(), head);
    assert!(!s.read("owners.toml").contains("[alice]\nstatus = \"departed\""));
    s.keyrot(&["audit", "verify"]).ok().stdout_has("1 apply ok, ");
}
