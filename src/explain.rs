//! `keyrot explain KEY`: everything behind one key's fate — its derived facts, every
//! policy's decision or its silence, how precedence, cooldown and exceptions turned the
//! decisions into actions, and the key file as apply would leave it.

use serde::Serialize;

use crate::error::{Error, Result, StoreError};
use crate::plan::{Action, ActionKind, Hold, RuleStep, Rules};
use crate::policy::{Decision, KeyView, Verdict};
use crate::store::KeyStatus;
use crate::time::Time;
use crate::workspace::Loaded;

#[derive(Debug, Serialize)]
pub(crate) struct Explanation {
    pub key: String,
    pub path: String,
    pub now: String,
    pub status: String,
    /// What policies see as `key`.
    pub facts: Facts,
    /// One entry per policy, in evaluation order (empty for a revoked key).
    pub policies: Vec<PolicyOutcome>,
    /// The exceptions naming this key.
    pub exceptions: Vec<ExceptionState>,
    /// The key's actions in the plan, as `plan --json` lists them.
    pub actions: Vec<Action>,
    /// How the decisions became the actions, one sentence each.
    pub resolution: Vec<String>,
    /// The key file after apply; `None` when apply would not change it.
    pub after: Option<String>,
    /// The key file as it is, to compare `after` with.
    #[serde(skip)]
    pub before: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct Facts {
    /// The key's folder under the keys folder (`""` at its top).
    pub folder: String,
    pub service: String,
    pub owner: String,
    pub owner_status: String,
    pub owner_team: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_departed_at: Option<String>,
    pub owner_key_count: i64,
    pub environment: String,
    pub permissions: Vec<String>,
    pub ip_allowlist: Vec<String>,
    pub tags: Vec<String>,
    pub compromised: bool,
    pub created_at: String,
    pub rotated_at: String,
    pub last_used_at: Option<String>,
    /// `97d3h`, as durations are written in JSON.
    pub age: String,
    pub idle: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct PolicyOutcome {
    pub policy: String,
    /// Empty: no finding.
    pub decisions: Vec<DecisionView>,
}

#[derive(Debug, Serialize)]
pub(crate) struct DecisionView {
    pub action: String,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grace_period: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remove: Option<Vec<String>>,
}

impl From<&Decision> for DecisionView {
    fn from(d: &Decision) -> DecisionView {
        let (grace_period, remove) = match &d.verdict {
            Verdict::Rotate { grace } => (grace.map(|g| g.compact()), None),
            Verdict::Restrict { remove } => (None, Some(remove.clone())),
            _ => (None, None),
        };
        DecisionView {
            action: d.kind_name().to_string(),
            reason: d.reason.clone(),
            grace_period,
            remove,
        }
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct ExceptionState {
    pub policy: String,
    pub reason: String,
    pub approved_by: String,
    pub expires: String,
    pub active: bool,
}

/// Explains key `id` of a loaded work tree at `now`; `text` reads a key file's bytes.
pub(crate) fn explain(
    loaded: &Loaded,
    id: &str,
    now: Time,
    text: impl Fn(&str) -> Result<String>,
) -> Result<Explanation> {
    let store = &loaded.store;
    let key = store.find_key(id).ok_or_else(|| {
        Error::from(StoreError::NoSuchKey {
            id: id.to_string(),
            keys_dir: store.settings.keys_dir.clone(),
        })
    })?;
    let counts = store.active_keys_per_owner();
    let view = KeyView::new(
        key.clone(),
        store.owners.get(&key.owner),
        counts.get(key.owner.as_str()).copied().unwrap_or(0),
        now,
    );
    let f = view.facts();
    let facts = Facts {
        folder: key.folder.clone(),
        service: key.service.clone(),
        owner: key.owner.clone(),
        owner_status: f.owner_status.to_string(),
        owner_team: f.owner_team.clone(),
        owner_departed_at: f.owner_departed_at.map(|t| t.to_rfc3339()),
        owner_key_count: f.owner_key_count,
        environment: key.environment.clone(),
        permissions: key.permissions.clone(),
        ip_allowlist: key.ip_allowlist.clone(),
        tags: key.tags.clone(),
        compromised: key.compromised,
        created_at: key.created_at.to_rfc3339(),
        rotated_at: key.rotated_at.to_rfc3339(),
        last_used_at: key.last_used_at.map(|t| t.to_rfc3339()),
        age: f.age.compact(),
        idle: f.idle.compact(),
    };
    let rules = Rules::new(store, now);
    let exceptions = rules
        .exceptions_for(id)
        .iter()
        .map(|e| ExceptionState {
            policy: e.policy.clone(),
            reason: e.reason.clone(),
            approved_by: e.approved_by.clone(),
            expires: e.expires_text.clone(),
            active: e.is_active(now),
        })
        .collect();
    let before = text(&key.path)?;
    let mut out = Explanation {
        key: id.to_string(),
        path: key.path.clone(),
        now: now.to_rfc3339(),
        status: key.status.as_str().to_string(),
        facts,
        policies: Vec::new(),
        exceptions,
        actions: Vec::new(),
        resolution: Vec::new(),
        after: None,
        before,
    };
    if key.status == KeyStatus::Revoked {
        out.resolution
            .push("the key is revoked: revoked keys are not evaluated, and nothing happens to them".into());
        return Ok(out);
    }
    let names: Vec<&str> = loaded
        .policies
        .policies()
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    let mut all: Vec<(std::sync::Arc<str>, Decision)> = Vec::new();
    for (idx, name) in names.iter().enumerate() {
        let decisions = loaded.policies.evaluate_one(idx, &view)?;
        out.policies.push(PolicyOutcome {
            policy: name.to_string(),
            decisions: decisions.iter().map(DecisionView::from).collect(),
        });
        let name: std::sync::Arc<str> = std::sync::Arc::from(*name);
        all.extend(decisions.into_iter().map(|d| (name.clone(), d)));
    }
    let mut steps = Vec::new();
    out.actions = rules.resolve_traced(&view, all.iter().map(|(p, d)| (p, d)), |s| steps.push(s));
    // The rollout looks across keys: ask the whole plan what it holds back.
    let hold = crate::plan::Plan::rollout_holds(store, &loaded.policies, now)?
        .into_iter()
        .find(|(k, _)| **k == *id)
        .map(|(_, hold)| hold);
    if let Some(hold) = &hold {
        hold.defer(&mut out.actions);
    }
    out.resolution = resolution(&steps, &out.actions, &rules, hold.as_ref());
    let applied: Vec<&Action> = out.actions.iter().filter(|a| a.is_applied()).collect();
    if !applied.is_empty() {
        out.after = Some(crate::apply::preview(key, &out.before, &applied, now)?);
    }
    Ok(out)
}

/// One sentence per step from decisions to actions.
fn resolution(steps: &[RuleStep], actions: &[Action], rules: &Rules, hold: Option<&Hold>) -> Vec<String> {
    let mut out = Vec::new();
    for step in steps {
        if let RuleStep::DroppedRestrict { policy, remove } = step {
            out.push(format!(
                "restrict by {policy} removes nothing the key holds ({}): dropped",
                remove.join(", ")
            ));
        }
    }
    let skipped_cooldown = |policy: &str| {
        steps
            .iter()
            .any(|s| matches!(s, RuleStep::CooldownSkipped { policy: p } if &**p == policy))
    };
    for a in actions {
        let what = format!("{} by {}", a.action, a.policy);
        let line = if let Some(by) = a.superseded_by {
            format!("{what} is superseded by the {by}: a revoked key needs nothing else")
        } else if let Some(e) = &a.excepted {
            format!(
                "{what} is held back by an exception until {} (approved by {}: {})",
                e.expires, e.approved_by, e.reason
            )
        } else {
            match a.action {
                ActionKind::Deferred => match hold {
                    Some(hold) => format!(
                        "rotate by {} is deferred by the rollout ([rollout] in keyrot.toml): it {}",
                        a.policy,
                        hold.why()
                    ),
                    None => format!(
                        "rotate by {} is deferred: the key was rotated less than min_interval ({}) ago",
                        a.policy, rules.min_interval
                    ),
                },
                ActionKind::Warn => format!("{what}: reported, changes nothing"),
                ActionKind::Expire => format!(
                    "expire by keyrot: the grace period of secret {} has ended",
                    a.fingerprint.as_deref().unwrap_or("?")
                ),
                ActionKind::Rotate if skipped_cooldown(&a.policy) => {
                    format!("{what} is applied: a compromised key skips the cooldown")
                }
                _ => format!("{what} is applied"),
            }
        };
        out.push(line);
    }
    if actions.is_empty() {
        out.push("no policy has a finding: nothing happens to this key".into());
    } else if !actions.iter().any(Action::is_applied) {
        out.push("apply leaves this key unchanged".into());
    }
    out
}

/// A line diff of `before` → `after`: `  ` kept, `- ` removed, `+ ` added lines. Key
/// files are small, so the quadratic longest-common-subsequence table is fine.
pub(crate) fn line_diff(before: &str, after: &str) -> Vec<String> {
    let a: Vec<&str> = before.lines().collect();
    let b: Vec<&str> = after.lines().collect();
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push(format!("  {}", a[i]));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push(format!("- {}", a[i]));
            i += 1;
        } else {
            out.push(format!("+ {}", b[j]));
            j += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_marks_changed_lines() {
        assert_eq!(
            line_diff("a\nb\nc\n", "a\nB\nc\nd\n"),
            vec!["  a", "- b", "+ B", "  c", "+ d"]
        );
        assert_eq!(line_diff("", "x"), vec!["+ x"]);
    }
}
