//! keyrot's precedence rules: what turns one key's decisions into its actions.

use std::collections::HashMap;
use std::sync::Arc;

use super::*;

/// A rule that changed what a decision became without leaving a mark on the actions
/// (what does leave one, a supersede, an exception, a deferral, is in the action
/// itself). [`Rules::resolve_traced`] reports them, so `explain` tells the rules as they
/// ran instead of restating them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RuleStep {
    /// A restrict that removes nothing the key holds: dropped, so plans settle.
    DroppedRestrict { policy: Arc<str>, remove: Vec<String> },
    /// A rotate inside the cooldown, applied anyway: the key is compromised.
    CooldownSkipped { policy: Arc<str> },
}

/// What turns a key's decisions into its actions besides the decisions themselves:
/// the store's grace period and cooldown, its exceptions, and the instant.
pub(crate) struct Rules<'a> {
    pub default_grace: Dur,
    pub min_interval: Dur,
    pub now: Time,
    pub(super) exceptions: HashMap<&'a str, Vec<&'a Exception>>,
}

impl<'a> Rules<'a> {
    pub(crate) fn new(store: &'a Store, now: Time) -> Rules<'a> {
        let mut exceptions: HashMap<&str, Vec<&Exception>> = HashMap::new();
        for e in &store.exceptions {
            exceptions.entry(e.key.as_str()).or_default().push(e);
        }
        Rules {
            default_grace: store.settings.grace_period,
            min_interval: store.settings.min_interval,
            now,
            exceptions,
        }
    }

    /// Whether the key was rotated less than `min_interval` ago: a rotate of it is
    /// deferred, unless it is compromised.
    pub(crate) fn cooling_down(&self, key: &crate::store::Key) -> bool {
        self.now.since(key.rotated_at) < self.min_interval
    }

    /// The exceptions naming this key.
    pub(crate) fn exceptions_for(&self, key: &str) -> &[&'a Exception] {
        self.exceptions.get(key).map_or(&[], Vec::as_slice)
    }

    /// Turns one key's decisions into its actions: drop no-op restricts, hold back
    /// excepted decisions, add `expire` for ended grace periods, defer rotations inside
    /// the cooldown, let revoke supersede, sort.
    pub(crate) fn resolve<'d>(
        &self,
        view: &KeyView,
        decisions: impl Iterator<Item = (&'d Arc<str>, &'d Decision)>,
    ) -> Vec<Action> {
        self.resolve_traced(view, decisions, |_| {})
    }

    /// [`Rules::resolve`], telling `trace` each [`RuleStep`] it took.
    pub(crate) fn resolve_traced<'d>(
        &self,
        view: &KeyView,
        decisions: impl Iterator<Item = (&'d Arc<str>, &'d Decision)>,
        mut trace: impl FnMut(RuleStep),
    ) -> Vec<Action> {
        let now = self.now;
        let key = &view.facts().key;
        let exceptions = self.exceptions_for(&key.id);
        let mut actions = Vec::new();
        let id: Arc<str> = Arc::from(key.id.as_str());
        for (policy, d) in decisions {
            let mut a = Action::new(&id, ActionKind::Warn, policy, d.reason.clone());
            match &d.verdict {
                Verdict::Warn => {}
                Verdict::Revoke => a.action = ActionKind::Revoke,
                Verdict::Rotate { grace } => {
                    a.action = ActionKind::Rotate;
                    a.grace_period = Some(grace.unwrap_or(self.default_grace));
                }
                Verdict::Restrict { remove } => {
                    let held: Vec<String> = remove
                        .iter()
                        .filter(|p| key.permissions.contains(p))
                        .cloned()
                        .collect();
                    if held.is_empty() {
                        trace(RuleStep::DroppedRestrict {
                            policy: policy.clone(),
                            remove: remove.clone(),
                        });
                        continue;
                    }
                    a.action = ActionKind::Restrict;
                    a.remove = Some(held);
                }
            }
            let exception = exceptions
                .iter()
                .find(|e| *e.policy == **policy && e.is_active(now));
            // A compromised key's secret is in someone else's hands: no accepted risk
            // covers keeping it alive.
            if let Some(e) = exception.filter(|_| !(a.action == ActionKind::Revoke && key.compromised)) {
                a.excepted = Some(Box::new(Excepted::from(*e)));
            }
            actions.push(a);
        }
        for e in exceptions {
            let note = if !e.is_active(now) {
                format!(
                    "exception for policy {} expired {} and no longer counts ({}; approved by {})",
                    e.policy, e.expires_text, e.reason, e.approved_by
                )
            } else if key.compromised
                && actions
                    .iter()
                    .any(|a| *a.policy == *e.policy && a.action == ActionKind::Revoke)
            {
                format!(
                    "exception for policy {} ignored: the revoke of a compromised key cannot be excepted",
                    e.policy
                )
            } else {
                continue;
            };
            actions.push(Action::new(
                &id,
                ActionKind::Warn,
                &Arc::from(KEYROT_POLICY),
                note,
            ));
        }
        for prev in &key.previous {
            if prev.valid_until <= now {
                let mut a = Action::new(
                    &id,
                    ActionKind::Expire,
                    &Arc::from(KEYROT_POLICY),
                    "grace period ended".into(),
                );
                a.fingerprint = Some(prev.fingerprint.clone());
                actions.push(a);
            }
        }
        let since_rotation = now.since(key.rotated_at);
        let revoked = actions
            .iter()
            .any(|a| a.action == ActionKind::Revoke && a.excepted.is_none());
        for a in &mut actions {
            if revoked && a.action != ActionKind::Revoke && a.action != ActionKind::Warn {
                a.superseded_by = Some(ActionKind::Revoke);
            } else if a.action == ActionKind::Rotate && a.excepted.is_none() && self.cooling_down(key) {
                if key.compromised {
                    trace(RuleStep::CooldownSkipped {
                        policy: a.policy.clone(),
                    });
                    continue;
                }
                a.action = ActionKind::Deferred;
                a.grace_period = None;
                a.reason = format!(
                    "{}; rotated {} ago, cooldown {}",
                    a.reason,
                    round_to_minutes(since_rotation),
                    self.min_interval
                );
            }
        }
        // Stable: several actions of one kind by one policy keep their evaluation order.
        actions.sort_by(|a, b| (a.action, &a.policy).cmp(&(b.action, &b.policy)));
        if !key.folder.is_empty() {
            let folder: Arc<str> = Arc::from(key.folder.as_str());
            actions.iter_mut().for_each(|a| a.folder = Some(folder.clone()));
        }
        actions
    }
}

/// `2h` rather than `2h 0m 13s` in messages; seconds only under a minute.
pub(super) fn round_to_minutes(d: Dur) -> Dur {
    if d.secs().abs() < 60 {
        d
    } else {
        Dur::from_secs(d.secs() - d.secs() % 60)
    }
}
