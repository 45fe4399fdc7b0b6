//! Telling people: after each apply (`applied`, or `failed` when some of its actions
//! failed at their service) and, from `keyrot notify upcoming`, per owner, what a plan
//! some days ahead would rotate or revoke. Each `[[notify]]` target gets the event JSON:
//! a command committed in the store on its stdin, a webhook as a signed POST. A target
//! that fails is tried three times in all, then reported; it never undoes or blocks an
//! apply, whose exit code stays what it was.

mod deliver;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::apply::Applied;
use crate::plan::{ActionKind, Plan};
use crate::store::notify::Event;
use crate::store::Store;
use crate::time::{Dur, Time};
use crate::workspace::Workspace;

/// One action in an event: whose key, what, why. Fingerprints, never secrets.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct EventAction {
    pub key: String,
    /// The key's team folder (`trading`), so a hook can route by team; absent for a
    /// key at the top of the keys folder.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub folder: String,
    pub owner: String,
    pub owner_email: Option<String>,
    pub action: String,
    pub policy: String,
    pub reason: String,
    /// Why the action failed at its service (`failed` events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a target receives (SPEC §8).
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Message {
    pub event: Event,
    /// The store's folder on the machine that sent it.
    pub store: String,
    pub commit: Option<String>,
    pub at: String,
    /// `upcoming`: the owner these actions are for, and how far ahead was looked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub within: Option<String>,
    pub actions: Vec<EventAction>,
}

/// What one target did with one message.
#[derive(Debug, Serialize)]
pub(crate) struct Sent {
    pub target: String,
    pub event: Event,
    /// `upcoming`: the owner it was about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    pub tries: u32,
    /// `None` when delivered; else the last try's error (never the URL or a secret).
    pub error: Option<String>,
}

fn action_of(store: &Store, key: &str, action: &str, policy: &str, reason: &str) -> EventAction {
    let stored = store.key(key);
    let owner = stored.map(|k| k.owner.clone()).unwrap_or_default();
    EventAction {
        owner_email: store.owners.get(&owner).and_then(|o| o.email.clone()),
        owner,
        key: key.to_string(),
        folder: stored.map(|k| k.folder.clone()).unwrap_or_default(),
        action: action.to_string(),
        policy: policy.to_string(),
        reason: reason.to_string(),
        error: None,
    }
}

/// The `applied` or `failed` event of one apply (`None` when it changed nothing and
/// nothing failed): every change the plan asked for, each failed one with its error.
pub(crate) fn apply_event(
    root: &std::path::Path,
    store: &Store,
    plan: &Plan,
    applied: &Applied,
    now: Time,
) -> Option<Message> {
    if applied.commit.is_none() && applied.failed.is_empty() {
        return None;
    }
    let failed: BTreeMap<&str, &crate::apply::Failure> =
        applied.failed.iter().map(|f| (f.key.as_str(), f)).collect();
    let actions = plan
        .actions
        .iter()
        .filter(|a| a.action.changes_store() && a.superseded_by.is_none())
        .map(|a| {
            let mut e = action_of(store, &a.key, a.action.as_str(), &a.policy, &a.reason);
            e.error = failed.get(&*a.key).map(|f| f.error.clone());
            e
        })
        .collect();
    Some(Message {
        event: if applied.failed.is_empty() {
            Event::Applied
        } else {
            Event::Failed
        },
        store: crate::workspace::root_name(root),
        commit: applied.commit.clone(),
        at: now.to_rfc3339(),
        owner: None,
        owner_email: None,
        within: None,
        actions,
    })
}

/// The `upcoming` events of a plan made `within` ahead: one per owner with a key it
/// would rotate or revoke, in owner order.
pub(crate) fn upcoming_events(
    root: &std::path::Path,
    store: &Store,
    ahead: &Plan,
    commit: Option<String>,
    within: Dur,
    now: Time,
) -> Vec<Message> {
    let mut per_owner: BTreeMap<String, Vec<EventAction>> = BTreeMap::new();
    for a in &ahead.actions {
        if a.superseded_by.is_some() || !matches!(a.action, ActionKind::Rotate | ActionKind::Revoke) {
            continue;
        }
        let e = action_of(store, &a.key, a.action.as_str(), &a.policy, &a.reason);
        per_owner.entry(e.owner.clone()).or_default().push(e);
    }
    per_owner
        .into_iter()
        .map(|(owner, actions)| Message {
            event: Event::Upcoming,
            store: crate::workspace::root_name(root),
            commit: commit.clone(),
            at: now.to_rfc3339(),
            owner_email: store.owners.get(&owner).and_then(|o| o.email.clone()),
            owner: Some(owner),
            within: Some(within.compact()),
            actions,
        })
        .collect()
}

/// Sends `message` to every `[[notify]]` target of `store` that asked for its event.
pub(crate) fn send(ws: &Workspace, store: &Store, message: &Message) -> Vec<Sent> {
    let targets: Vec<_> = store
        .settings
        .notify
        .iter()
        .filter(|n| n.on.contains(&message.event))
        .collect();
    if targets.is_empty() {
        return Vec::new();
    }
    let body = match serde_json::to_vec(message) {
        Ok(b) => b,
        Err(e) => {
            return targets
                .iter()
                .map(|n| Sent {
                    target: n.display(),
                    event: message.event,
                    owner: message.owner.clone(),
                    tries: 0,
                    error: Some(format!("cannot encode the event: {e}")),
                })
                .collect()
        }
    };
    let ctx = deliver::Context::new(ws, &store.settings);
    targets
        .into_iter()
        .map(|n| {
            let (tries, error) = ctx.deliver_with_retries(n, message.event, &body);
            Sent {
                target: n.display(),
                event: message.event,
                owner: message.owner.clone(),
                tries,
                error,
            }
        })
        .collect()
}

/// After an apply: sends its event and returns one warning per target that failed
/// (for the caller to print; the apply's result stands).
pub(crate) fn after_apply(ws: &Workspace, store: &Store, plan: &Plan, applied: &Applied) -> Vec<String> {
    let Some(message) = apply_event(&ws.root, store, plan, applied, Time::now()) else {
        return Vec::new();
    };
    send(ws, store, &message)
        .into_iter()
        .filter_map(|s| {
            s.error.map(|e| {
                format!(
                    "notification {} ({}) failed after {} tries: {e}; the apply stands",
                    s.target,
                    s.event.as_str(),
                    s.tries
                )
            })
        })
        .collect()
}
