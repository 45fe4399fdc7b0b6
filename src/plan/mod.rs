//! The plan: every key evaluated against every policy, turned into an ordered list of
//! actions by keyrot's precedence rules. Plain data; the same inputs give the same
//! plan, byte for byte.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::policy::{Decision, KeyView, PolicySet, Verdict};
use crate::store::repo::CommitId;
use crate::store::{Exception, Key, KeyStatus, Store};
use crate::time::{Dur, Time};

mod build;
mod diff;
mod rollout;
mod rules;

pub(crate) use build::Memo;
pub(crate) use diff::PlanDiff;
pub(crate) use rollout::Hold;
pub(crate) use rules::{RuleStep, Rules};

pub(crate) const FORMAT: u32 = 1;

/// This keyrot's version, recorded in the plans it makes.
pub(crate) const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What happens to a key. The declaration order is the order within one key in a plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ActionKind {
    Revoke,
    Rotate,
    Restrict,
    Expire,
    Deferred,
    Warn,
}

impl ActionKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ActionKind::Revoke => "revoke",
            ActionKind::Rotate => "rotate",
            ActionKind::Restrict => "restrict",
            ActionKind::Expire => "expire",
            ActionKind::Deferred => "deferred",
            ActionKind::Warn => "warn",
        }
    }

    /// Whether this action, when not superseded, changes the store.
    pub(crate) fn changes_store(self) -> bool {
        matches!(
            self,
            ActionKind::Revoke | ActionKind::Rotate | ActionKind::Restrict | ActionKind::Expire
        )
    }

    pub(crate) fn parse(s: &str) -> Option<ActionKind> {
        [
            ActionKind::Revoke,
            ActionKind::Rotate,
            ActionKind::Restrict,
            ActionKind::Expire,
            ActionKind::Deferred,
            ActionKind::Warn,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

impl fmt::Display for ActionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The policy name keyrot uses for its own actions (`expire`).
pub(crate) const KEYROT_POLICY: &str = "keyrot";

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Action {
    /// Shared by the actions of one key (a 100k-key plan holds every action in memory).
    pub key: Arc<str>,
    /// The key's folder under the keys folder (`trading`), for a key not at its top.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<Arc<str>>,
    pub action: ActionKind,
    /// Shared by every action of one policy.
    pub policy: Arc<str>,
    pub reason: String,
    /// Rotate: how long the old secret stays valid (`1d`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_period: Option<Dur>,
    /// Restrict: the permissions removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove: Option<Vec<String>>,
    /// Expire: the fingerprint of the secret whose grace ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<ActionKind>,
    /// An accepted risk in `exceptions.toml` holds this decision back (boxed: rare, and
    /// a 100k-key plan holds every action in memory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excepted: Option<Box<Excepted>>,
}

/// The exception that holds an action back, as the plan shows it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Excepted {
    pub reason: String,
    pub approved_by: String,
    /// As written in `exceptions.toml` (`2026-12-31`).
    pub expires: String,
}

impl From<&Exception> for Excepted {
    fn from(e: &Exception) -> Excepted {
        Excepted {
            reason: e.reason.clone(),
            approved_by: e.approved_by.clone(),
            expires: e.expires_text.clone(),
        }
    }
}

impl Action {
    pub(crate) fn new(key: &Arc<str>, action: ActionKind, policy: &Arc<str>, reason: String) -> Action {
        Action {
            key: key.clone(),
            folder: None,
            action,
            policy: policy.clone(),
            reason,
            grace_period: None,
            remove: None,
            fingerprint: None,
            superseded_by: None,
            excepted: None,
        }
    }

    /// Whether apply acts on it: an action that changes the store, neither superseded
    /// nor excepted.
    pub(crate) fn is_applied(&self) -> bool {
        self.superseded_by.is_none() && self.excepted.is_none() && self.action.changes_store()
    }

    /// Whether it counts in the summary under its own action.
    fn counts(&self) -> bool {
        self.superseded_by.is_none() && self.excepted.is_none()
    }
}

/// Keys per action (a key two policies want rotated is one rotate).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Summary {
    pub rotate: usize,
    pub revoke: usize,
    pub restrict: usize,
    pub expire: usize,
    pub deferred: usize,
    pub warn: usize,
    /// Keys with a decision held back by an exception (omitted when none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub excepted: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Summary {
    /// Counts a plan's actions, which come sorted by key (as every plan's do).
    pub(crate) fn of(actions: &[Action]) -> Summary {
        debug_assert!(
            actions.windows(2).all(|w| w[0].key <= w[1].key),
            "actions not sorted by key"
        );
        // Grouped by key: count each kind once per key.
        let mut s = Summary::default();
        let mut i = 0;
        while i < actions.len() {
            let n = actions[i..]
                .iter()
                .take_while(|a| a.key == actions[i].key)
                .count();
            s.count_key(&actions[i..i + n], true);
            i += n;
        }
        s
    }

    /// Counts the actions of one key into the summary, or (`add` false) out of it.
    fn count_key(&mut self, actions: &[Action], add: bool) {
        let (mut kinds, mut excepted) = (0u8, false);
        for a in actions {
            if a.counts() {
                kinds |= 1 << a.action as u8;
            } else if a.superseded_by.is_none() {
                excepted = true;
            }
        }
        let count = |n: &mut usize, yes: bool| match (yes, add) {
            (false, _) => {}
            (true, true) => *n += 1,
            (true, false) => *n -= 1,
        };
        let has = |k: ActionKind| kinds & (1 << k as u8) != 0;
        count(&mut self.rotate, has(ActionKind::Rotate));
        count(&mut self.revoke, has(ActionKind::Revoke));
        count(&mut self.restrict, has(ActionKind::Restrict));
        count(&mut self.expire, has(ActionKind::Expire));
        count(&mut self.deferred, has(ActionKind::Deferred));
        count(&mut self.warn, has(ActionKind::Warn));
        count(&mut self.excepted, excepted);
    }

    /// Whether applying would change the store (for `--detailed-exitcode`).
    pub(crate) fn has_changes(&self) -> bool {
        self.rotate + self.revoke + self.restrict + self.expire > 0
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Plan: {} rotate, {} revoke, {} restrict, {} expire, {} deferred, {} warn",
            self.rotate, self.revoke, self.restrict, self.expire, self.deferred, self.warn
        )?;
        if self.excepted > 0 {
            write!(f, ", {} excepted", self.excepted)?;
        }
        f.write_str(".")
    }
}

/// A plan, as printed by `plan --json` and saved by `plan --out`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Plan {
    pub format: u32,
    /// The keyrot that made the plan. It says who, not what: it is left out of the
    /// plan's digest and of a saved plan's comparison with its derivation, so plans
    /// and apply commits of other versions stay verifiable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyrot_version: Option<String>,
    pub store_commit: Option<CommitId>,
    pub policies_digest: String,
    pub keys_digest: String,
    /// The evaluation instant (RFC 3339 in JSON).
    pub now: Time,
    pub dirty: bool,
    pub actions: Vec<Action>,
    pub summary: Summary,
}

/// Where the store a plan was made from was read: the commit it was at (none before
/// the first), and whether the work tree differed from it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Provenance {
    pub commit: Option<CommitId>,
    pub dirty: bool,
}

impl Provenance {
    /// The committed store at `commit`, as apply reads it.
    pub(crate) fn committed(commit: CommitId) -> Provenance {
        Provenance {
            commit: Some(commit),
            dirty: false,
        }
    }
}

impl Plan {
    /// Plans a loaded store at `now`; `from` says where the store was read.
    pub(crate) fn make(
        store: &Store,
        policies: &PolicySet,
        now: Time,
        from: Provenance,
        progress: crate::progress::Progress,
    ) -> Result<Plan> {
        Plan::make_memo(store, policies, now, from, progress, None)
    }

    /// [`Plan::make`] through a [`Memo`] of the last plan's decisions (`watch`).
    pub(crate) fn make_memo(
        store: &Store,
        policies: &PolicySet,
        now: Time,
        from: Provenance,
        progress: crate::progress::Progress,
        memo: Option<&mut Memo>,
    ) -> Result<Plan> {
        let mut actions = build::actions_memo(store, policies, now, progress, memo, None)?;
        rollout::hold_back(store, now, &mut actions);
        Ok(Plan {
            format: FORMAT,
            keyrot_version: Some(VERSION.to_string()),
            store_commit: from.commit,
            policies_digest: store.policies_digest.clone(),
            keys_digest: store.keys_digest.clone(),
            now,
            dirty: from.dirty,
            summary: Summary::of(&actions),
            actions,
        })
    }

    /// What the rollout rule holds back in a plan of this store at `now`, by key in key
    /// order (for `explain`; empty without `[rollout]`).
    pub(crate) fn rollout_holds(
        store: &Store,
        policies: &PolicySet,
        now: Time,
    ) -> Result<Vec<(Arc<str>, Hold)>> {
        if !store.settings.rollout.is_active() {
            return Ok(Vec::new());
        }
        let mut actions = build::actions_memo(store, policies, now, None, None, None)?;
        Ok(rollout::hold_back(store, now, &mut actions))
    }

    /// The actions each key that `only` keeps gets at `now` from its own rules: what
    /// its policies decide, after precedence, cooldowns and exceptions, before the one
    /// rule that looks across keys (a rollout, which may spread them over runs). For
    /// looking ahead (`report`: what falls due) without planning every key twice.
    pub(crate) fn key_actions(
        store: &Store,
        policies: &PolicySet,
        now: Time,
        only: build::KeyFilter,
    ) -> Result<Vec<Action>> {
        build::actions_memo(store, policies, now, None, None, only)
    }

    /// Writes the plan as pretty JSON and a newline, streaming: a 100k-key plan is tens
    /// of megabytes, which need not be held in memory as one string.
    pub(crate) fn write_json(&self, out: impl std::io::Write) -> std::io::Result<()> {
        use std::io::Write;
        let mut out = std::io::BufWriter::with_capacity(1 << 16, out);
        serde_json::to_writer_pretty(&mut out, self)?;
        out.write_all(b"\n")?;
        out.flush()
    }

    /// Reads a saved plan file, refusing anything that is not exactly a keyrot plan.
    pub(crate) fn from_json(path: &str, bytes: &[u8]) -> Result<Plan> {
        let plan: Plan = serde_json::from_slice(bytes)
            .map_err(|e| Error::ForgedPlan(format!("{path}: not a keyrot plan file: {e}")))?;
        if plan.format != FORMAT {
            return Err(Error::ForgedPlan(format!(
                "{path}: plan format {} is not supported (this keyrot reads format {FORMAT})",
                plan.format
            )));
        }
        Ok(plan)
    }

    /// `sha256:` over the plan's canonical JSON without `keyrot_version`; recorded as
    /// `Keyrot-Plan` in the commit.
    pub(crate) fn digest(&self) -> String {
        let mut json = serde_json::to_string(self).unwrap_or_default();
        if let Some(v) = &self.keyrot_version {
            // Serialised right after `format` (a number), before any text from the
            // store: its first occurrence is the field itself.
            let field = format!(",\"keyrot_version\":{}", serde_json::Value::from(v.as_str()));
            if let Some(at) = json.find(&field) {
                json.replace_range(at..at + field.len(), "");
            }
        }
        crate::digest::sha256_tagged(json.as_bytes())
    }

    pub(crate) fn has_changes(&self) -> bool {
        self.summary.has_changes()
    }
}

#[cfg(test)]
mod tests;
