//! The rollout rule (`[rollout]`, SPEC §10): a rotation waits while the same service's
//! keys in an earlier environment are rotated by this plan or have not yet held for
//! `soak`, and a plan rotates at most `max_per_run` keys, longest-rotated first.
//!
//! Unlike the other rules it looks across keys, so it runs once over a whole plan's
//! actions (after each key's own rules): a few hash-map passes, never key × key.

use std::collections::HashMap;
use std::sync::Arc;

use super::rules::round_to_minutes;
use super::*;
use crate::store::Rollout;

/// Why the rollout rule held a key's rotation back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Hold {
    /// An earlier environment of the same service is not done.
    Waits { environment: String, cause: Cause },
    /// The plan already rotates `max_per_run` keys.
    Budget { max_per_run: usize },
}

/// What keeps an earlier environment from being done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Cause {
    /// This key of it is rotated by this plan (or wants to be, and is held itself).
    Rotating { key: String },
    /// This key of it was rotated less than `soak` ago.
    Soaking { key: String, ago: Dur, soak: Dur },
}

impl Hold {
    /// Why, as one clause: `waits for development, where dev-bot is rotated by this plan`.
    pub(crate) fn why(&self) -> String {
        match self {
            Hold::Waits {
                environment,
                cause: Cause::Rotating { key },
            } => format!("waits for {environment}, where {key} is rotated by this plan"),
            Hold::Waits {
                environment,
                cause: Cause::Soaking { key, ago, soak },
            } => format!("waits for {environment}, where {key} was rotated {ago} ago (soak {soak})"),
            Hold::Budget { max_per_run } => format!(
                "this plan already rotates max_per_run = {max_per_run} keys (those rotated longest ago go first)"
            ),
        }
    }

    /// Turns one key's counting rotations into `deferred`, the reason saying why.
    pub(crate) fn defer(&self, actions: &mut [Action]) {
        for a in actions {
            if a.action == ActionKind::Rotate && a.counts() {
                a.action = ActionKind::Deferred;
                a.grace_period = None;
                a.reason = format!("{}; rollout: {}", a.reason, self.why());
            }
        }
    }
}

/// Applies the rollout rule to a plan's actions (sorted by key, each key's own rules
/// applied): held rotations become `deferred`, their reason saying why. Returns the
/// holds by key, in key order.
pub(crate) fn hold_back(store: &Store, now: Time, actions: &mut [Action]) -> Vec<(Arc<str>, Hold)> {
    let rollout = &store.settings.rollout;
    if !rollout.is_active() {
        return Vec::new();
    }
    // Each key with a rotation that counts, as its range of actions.
    let mut due: Vec<(std::ops::Range<usize>, &Key)> = Vec::new();
    let mut start = 0;
    while start < actions.len() {
        let id = &actions[start].key;
        let end = start + actions[start..].iter().take_while(|a| a.key == *id).count();
        let rotates = actions[start..end]
            .iter()
            .any(|a| a.action == ActionKind::Rotate && a.counts());
        if let Some(key) = rotates.then(|| store.key(id)).flatten() {
            due.push((start..end, key));
        }
        start = end;
    }
    let mut holds: Vec<Option<Hold>> = vec![None; due.len()];
    if rollout.order.len() > 1 {
        let stages = Stages::of(store, rollout, now, &due);
        for ((_, key), hold) in due.iter().zip(&mut holds) {
            if !key.compromised {
                *hold = stages.wait_for(key);
            }
        }
    }
    if let Some(max) = rollout.max_per_run {
        // Compromised keys are never held back, but they do take their places.
        let mut going: Vec<usize> = (0..due.len()).filter(|&i| holds[i].is_none()).collect();
        going.sort_by_key(|&i| {
            let key = due[i].1;
            (!key.compromised, key.rotated_at, key.id.as_str())
        });
        for &i in going.iter().skip(max) {
            if !due[i].1.compromised {
                holds[i] = Some(Hold::Budget { max_per_run: max });
            }
        }
    }
    let mut out = Vec::new();
    for ((range, key), hold) in due.into_iter().zip(holds) {
        let Some(hold) = hold else { continue };
        hold.defer(&mut actions[range]);
        out.push((Arc::from(key.id.as_str()), hold));
    }
    out
}

/// Per service and environment of `order`, what keeps that environment from being
/// done: a key rotated by this plan (the first by id), else the key rotated most
/// recently within `soak`.
struct Stages<'a> {
    order: &'a [String],
    rank: HashMap<&'a str, usize>,
    rotating: HashMap<(&'a str, usize), &'a str>,
    soaking: HashMap<(&'a str, usize), &'a Key>,
    now: Time,
    soak: Dur,
}

impl<'a> Stages<'a> {
    fn of(
        store: &'a Store,
        rollout: &'a Rollout,
        now: Time,
        due: &[(std::ops::Range<usize>, &'a Key)],
    ) -> Stages<'a> {
        let rank: HashMap<&str, usize> = rollout
            .order
            .iter()
            .enumerate()
            .map(|(i, e)| (e.as_str(), i))
            .collect();
        // Only environments before the last can hold anything back.
        let earlier = |key: &Key| {
            rank.get(key.environment.as_str())
                .copied()
                .filter(|&r| r + 1 < rollout.order.len())
        };
        let mut rotating = HashMap::new();
        for (_, key) in due {
            if let Some(r) = earlier(key) {
                // Keys come in id order: the first one stays.
                rotating
                    .entry((key.service.as_str(), r))
                    .or_insert(key.id.as_str());
            }
        }
        let mut soaking: HashMap<(&str, usize), &Key> = HashMap::new();
        for key in &store.keys {
            if key.status != KeyStatus::Active || now.since(key.rotated_at) >= rollout.soak {
                continue;
            }
            let Some(r) = earlier(key) else { continue };
            let latest = soaking.entry((key.service.as_str(), r)).or_insert(key);
            if key.rotated_at > latest.rotated_at {
                *latest = key;
            }
        }
        Stages {
            order: &rollout.order,
            rank,
            rotating,
            soaking,
            now,
            soak: rollout.soak,
        }
    }

    /// What the earliest environment before this key's that is not done holds it back
    /// with, if any.
    fn wait_for(&self, key: &Key) -> Option<Hold> {
        let here = *self.rank.get(key.environment.as_str())?;
        let service = key.service.as_str();
        (0..here).find_map(|r| {
            let cause = if let Some(other) = self.rotating.get(&(service, r)) {
                Cause::Rotating {
                    key: other.to_string(),
                }
            } else {
                let other = self.soaking.get(&(service, r))?;
                Cause::Soaking {
                    key: other.id.clone(),
                    ago: round_to_minutes(self.now.since(other.rotated_at)),
                    soak: self.soak,
                }
            };
            Some(Hold::Waits {
                environment: self.order[r].clone(),
                cause,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Settings;

    fn t(s: &str) -> Time {
        Time::parse_rfc3339(s).expect("time")
    }

    const NOW: &str = "2026-06-01T00:00:00Z";

    /// The plan tests' key, as `id` of `service` in `env`, rotated at `rotated`.
    fn key(id: &str, service: &str, env: &str, rotated: &str) -> Key {
        Key {
            id: id.into(),
            path: format!("keys/{id}.toml"),
            folder: String::new(),
            service: service.into(),
            environment: env.into(),
            rotated_at: t(rotated),
            ..crate::plan::tests::key(&[])
        }
    }

    fn store(mut keys: Vec<Key>, rollout: Rollout) -> Store {
        keys.sort_by(|a, b| a.id.cmp(&b.id));
        Store {
            settings: Settings {
                rollout,
                ..Settings::default()
            },
            owners: Default::default(),
            exceptions: vec![],
            keys: keys.into_iter().map(Arc::new).collect(),
            policy_files: vec![],
            policy_tests: vec![],
            policies_digest: String::new(),
            keys_digest: String::new(),
        }
    }

    fn staged(max_per_run: Option<usize>) -> Rollout {
        Rollout {
            order: vec!["development".into(), "staging".into(), "production".into()],
            soak: Dur::parse("24h").expect("dur"),
            max_per_run,
        }
    }

    /// A rotate by max-age for each of these keys, in key order.
    fn rotations(ids: &[&str]) -> Vec<Action> {
        let mut ids = ids.to_vec();
        ids.sort();
        ids.iter()
            .map(|id| {
                let mut a = Action::new(
                    &Arc::from(*id),
                    ActionKind::Rotate,
                    &Arc::from("max-age"),
                    "old".into(),
                );
                a.grace_period = Some(Dur::parse("1d").expect("dur"));
                a
            })
            .collect()
    }

    fn rotating(actions: &[Action]) -> Vec<&str> {
        actions
            .iter()
            .filter(|a| a.action == ActionKind::Rotate)
            .map(|a| &*a.key)
            .collect()
    }

    #[test]
    fn only_the_earliest_environment_rotates_and_the_others_name_it() {
        let s = store(
            vec![
                key("dev", "svc", "development", "2026-01-01T00:00:00Z"),
                key("stg", "svc", "staging", "2026-01-01T00:00:00Z"),
                key("prod", "svc", "production", "2026-01-01T00:00:00Z"),
                key("other-prod", "other", "production", "2026-01-01T00:00:00Z"),
                key("qa", "svc", "qa", "2026-01-01T00:00:00Z"),
            ],
            staged(None),
        );
        let mut actions = rotations(&["dev", "stg", "prod", "other-prod", "qa"]);
        let holds = hold_back(&s, t(NOW), &mut actions);
        // Another service, and an environment outside the order, are not held back.
        assert_eq!(rotating(&actions), ["dev", "other-prod", "qa"]);
        assert_eq!(holds.len(), 2);
        let stg = actions.iter().find(|a| &*a.key == "stg").expect("stg");
        assert_eq!(stg.action, ActionKind::Deferred);
        assert_eq!(stg.grace_period, None);
        assert_eq!(
            stg.reason,
            "old; rollout: waits for development, where dev is rotated by this plan"
        );
        let prod = actions.iter().find(|a| &*a.key == "prod").expect("prod");
        assert!(prod.reason.contains("waits for development"), "{}", prod.reason);
        assert_eq!(Summary::of(&actions).deferred, 2);
    }

    #[test]
    fn an_environment_waits_for_the_soak_of_the_one_before() {
        let keys = || {
            vec![
                key("dev", "svc", "development", "2026-05-31T21:00:00Z"),
                key("stg", "svc", "staging", "2026-01-01T00:00:00Z"),
                key("prod", "svc", "production", "2026-01-01T00:00:00Z"),
            ]
        };
        let s = store(keys(), staged(None));
        let mut actions = rotations(&["stg", "prod"]);
        hold_back(&s, t(NOW), &mut actions);
        assert!(rotating(&actions).is_empty());
        assert!(
            actions[1]
                .reason
                .ends_with("waits for development, where dev was rotated 3h ago (soak 1d)"),
            "{}",
            actions[1].reason
        );
        // A day later development has held: staging goes, production waits for it.
        let mut actions = rotations(&["stg", "prod"]);
        hold_back(&s, t("2026-06-01T21:00:00Z"), &mut actions);
        assert_eq!(rotating(&actions), ["stg"]);
        assert!(actions[0]
            .reason
            .contains("waits for staging, where stg is rotated"));
        // With no soak, only rotations in this plan hold anything back.
        let s = store(
            keys(),
            Rollout {
                soak: Dur::ZERO,
                ..staged(None)
            },
        );
        let mut actions = rotations(&["stg", "prod"]);
        hold_back(&s, t(NOW), &mut actions);
        assert_eq!(rotating(&actions), ["stg"]);
    }

    #[test]
    fn a_compromised_key_is_never_held_back_but_takes_its_place_in_the_budget() {
        let mut prod = key("prod", "svc", "production", "2026-05-01T00:00:00Z");
        prod.compromised = true;
        let s = store(
            vec![
                key("dev", "svc", "development", "2026-03-01T00:00:00Z"),
                prod,
                key("a", "x", "production", "2026-02-01T00:00:00Z"),
                key("b", "x", "production", "2026-01-01T00:00:00Z"),
                key("c", "x", "production", "2026-01-01T00:00:00Z"),
            ],
            staged(Some(3)),
        );
        let mut actions = rotations(&["dev", "prod", "a", "b", "c"]);
        let holds = hold_back(&s, t(NOW), &mut actions);
        // prod (compromised) first, then the longest rotated: b and c (tie by id).
        assert_eq!(rotating(&actions), ["b", "c", "prod"]);
        assert_eq!(holds.iter().map(|(k, _)| &**k).collect::<Vec<_>>(), ["a", "dev"]);
        assert!(holds.iter().all(|(_, h)| *h == Hold::Budget { max_per_run: 3 }));
        assert!(actions[0]
            .reason
            .contains("rollout: this plan already rotates max_per_run = 3 keys"));
    }

    #[test]
    fn superseded_and_excepted_rotations_neither_count_nor_hold() {
        let s = store(
            vec![
                key("dev", "svc", "development", "2026-01-01T00:00:00Z"),
                key("prod", "svc", "production", "2026-01-01T00:00:00Z"),
            ],
            staged(Some(1)),
        );
        let mut actions = rotations(&["dev", "prod"]);
        actions[0].superseded_by = Some(ActionKind::Revoke);
        let before = actions[0].clone();
        assert!(hold_back(&s, t(NOW), &mut actions).is_empty());
        assert_eq!(actions[0], before);
        assert_eq!(rotating(&actions), ["dev", "prod"]);
    }

    #[test]
    fn without_an_order_or_a_budget_nothing_changes() {
        let s = store(
            vec![
                key("dev", "svc", "development", "2026-01-01T00:00:00Z"),
                key("prod", "svc", "production", "2026-01-01T00:00:00Z"),
            ],
            Rollout {
                order: vec!["development".into()],
                ..staged(None)
            },
        );
        let mut actions = rotations(&["dev", "prod"]);
        assert!(hold_back(&s, t(NOW), &mut actions).is_empty());
        assert_eq!(rotating(&actions), ["dev", "prod"]);
    }

    const ENVS: [&str; 4] = ["development", "staging", "production", "qa"];

    proptest::proptest! {
        /// Whatever the keys: no more rotations than the budget (compromised keys
        /// aside), no rotation while an earlier environment of its service is due or
        /// soaking, every compromised rotation kept, nothing but rotations touched, and
        /// a key is held only when a rule says so.
        #[test]
        fn the_rules_hold(
            keys in proptest::collection::vec(
                (0..2usize, 0..4usize, 0..72i64, proptest::bool::ANY, proptest::bool::ANY, proptest::bool::ANY),
                0..24,
            ),
            max in proptest::option::of(1..6usize),
        ) {
            let now = t(NOW);
            let mut all = Vec::new();
            let mut due = Vec::new();
            for (i, (service, env, hours, compromised, is_due, warn)) in keys.iter().enumerate() {
                let id = format!("k{i:02}");
                let mut k = key(&id, ["a", "b"][*service], ENVS[*env], NOW);
                k.rotated_at = Time::from_unix(now.unix() - hours * 3600);
                k.compromised = *compromised;
                if *is_due {
                    due.push((id.clone(), *warn));
                }
                all.push(k);
            }
            let s = store(all, staged(max));
            let mut actions = Vec::new();
            for (id, warn) in &due {
                actions.extend(rotations(&[id.as_str()]));
                if *warn {
                    actions.push(Action::new(&Arc::from(id.as_str()), ActionKind::Warn, &Arc::from("w"), "w".into()));
                }
            }
            let before = actions.clone();
            let holds = hold_back(&s, now, &mut actions);
            let key_of = |id: &str| -> &Key { s.key(id).expect("key") };
            let going: Vec<&Key> = rotating(&actions).into_iter().map(key_of).collect();
            let compromised_due = due.iter().filter(|(id, _)| key_of(id).compromised).count();
            if let Some(max) = max {
                proptest::prop_assert!(going.len() <= max.max(compromised_due));
            }
            let rank = |k: &Key| ENVS[..3].iter().position(|e| *e == k.environment);
            for k in &going {
                let Some(r) = rank(k) else { continue };
                if k.compromised {
                    continue;
                }
                for other in s.keys.iter().filter(|o| o.service == k.service && rank(o).is_some_and(|o| o < r)) {
                    let other_due = due.iter().any(|(id, _)| *id == other.id);
                    let soaking = now.since(other.rotated_at) < Dur::parse("24h").expect("dur");
                    proptest::prop_assert!(!other_due && !soaking, "{} rotates before {}", k.id, other.id);
                }
            }
            for (id, _) in &due {
                if key_of(id).compromised {
                    proptest::prop_assert!(rotating(&actions).contains(&id.as_str()));
                }
            }
            proptest::prop_assert_eq!(before.len(), actions.len());
            for (b, a) in before.iter().zip(&actions) {
                let held = holds.iter().any(|(k, _)| *k == b.key);
                if b.action == ActionKind::Rotate && held {
                    proptest::prop_assert_eq!(a.action, ActionKind::Deferred);
                    proptest::prop_assert!(a.reason.contains("; rollout: "));
                } else {
                    proptest::prop_assert_eq!(a, b);
                }
            }
            // Nothing is held for budget while the budget has room.
            let budget_held = holds.iter().filter(|(_, h)| matches!(h, Hold::Budget { .. })).count();
            if budget_held > 0 {
                proptest::prop_assert_eq!(Some(going.len()), max.map(|m| m.max(compromised_due)));
            }
        }
    }
}
