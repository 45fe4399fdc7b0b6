//! The plan: every key evaluated against every policy, turned into an ordered list of
//! actions by keyrot's precedence rules. Plain data; the same inputs give the same
//! plan, byte for byte.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::policy::{Decision, KeyView, PolicySet, Verdict};
use crate::store::{Exception, Key, KeyStatus, Store};
use crate::time::{Dur, Time};

pub const FORMAT: u32 = 1;

/// What happens to a key. The declaration order is the order within one key in a plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionKind {
    Revoke,
    Rotate,
    Restrict,
    Expire,
    Deferred,
    Warn,
}

impl ActionKind {
    pub fn as_str(self) -> &'static str {
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
    pub fn changes_store(self) -> bool {
        matches!(
            self,
            ActionKind::Revoke | ActionKind::Rotate | ActionKind::Restrict | ActionKind::Expire
        )
    }

    pub fn parse(s: &str) -> Option<ActionKind> {
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
pub const KEYROT_POLICY: &str = "keyrot";

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    /// Shared by the actions of one key (a 100k-key plan holds every action in memory).
    pub key: Arc<str>,
    pub action: ActionKind,
    /// Shared by every action of one policy.
    pub policy: Arc<str>,
    pub reason: String,
    /// Rotate: how long the old secret stays valid (`1d`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_period: Option<String>,
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
pub struct Excepted {
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
    pub fn is_applied(&self) -> bool {
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
pub struct Summary {
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
    pub fn of(actions: &[Action]) -> Summary {
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
    pub fn has_changes(&self) -> bool {
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
pub struct Plan {
    pub format: u32,
    pub store_commit: Option<String>,
    pub policies_digest: String,
    pub keys_digest: String,
    pub now: String,
    pub dirty: bool,
    pub actions: Vec<Action>,
    pub summary: Summary,
}

impl Plan {
    /// Plans a loaded store at `now`. `store_commit` and `dirty` describe where the
    /// store was read from.
    pub fn make(
        store: &Store,
        policies: &PolicySet,
        now: Time,
        store_commit: Option<String>,
        dirty: bool,
        progress: crate::progress::Progress,
    ) -> Result<Plan> {
        Plan::make_memo(store, policies, now, store_commit, dirty, progress, None)
    }

    /// [`Plan::make`] through a [`Memo`] of the last plan's decisions (`watch`).
    pub fn make_memo(
        store: &Store,
        policies: &PolicySet,
        now: Time,
        store_commit: Option<String>,
        dirty: bool,
        progress: crate::progress::Progress,
        memo: Option<&mut Memo>,
    ) -> Result<Plan> {
        let actions = actions_memo(store, policies, now, progress, memo)?;
        Ok(Plan {
            format: FORMAT,
            store_commit,
            policies_digest: store.policies_digest.clone(),
            keys_digest: store.keys_digest.clone(),
            now: now.to_rfc3339(),
            dirty,
            summary: Summary::of(&actions),
            actions,
        })
    }

    /// The instant the plan was made for.
    pub fn now(&self) -> Result<Time> {
        Time::parse_rfc3339(&self.now).map_err(|e| Error::ForgedPlan(format!("`now`: {e}")))
    }

    /// Writes the plan as pretty JSON and a newline, streaming: a 100k-key plan is tens
    /// of megabytes, which need not be held in memory as one string.
    pub fn write_json(&self, out: impl std::io::Write) -> std::io::Result<()> {
        use std::io::Write;
        let mut out = std::io::BufWriter::with_capacity(1 << 16, out);
        serde_json::to_writer_pretty(&mut out, self)?;
        out.write_all(b"\n")?;
        out.flush()
    }

    /// Reads a saved plan file, refusing anything that is not exactly a keyrot plan.
    pub fn from_json(path: &str, bytes: &[u8]) -> Result<Plan> {
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

    /// `sha256:` over the plan's canonical JSON; recorded as `Keyrot-Plan` in the commit.
    pub fn digest(&self) -> String {
        crate::digest::sha256_tagged(serde_json::to_string(self).unwrap_or_default().as_bytes())
    }

    pub fn has_changes(&self) -> bool {
        self.summary.has_changes()
    }
}

/// What changed between two plans, action by action.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PlanDiff {
    /// In the newer plan only.
    pub added: Vec<Action>,
    /// In the older plan only.
    pub removed: Vec<Action>,
    /// Keys whose list of actions differs in any way, order included (the same
    /// actions in another order are neither added nor removed), in plan order.
    #[serde(skip)]
    pub keys: Vec<Arc<str>>,
}

impl PlanDiff {
    /// Compares the actions of two plans as multisets (an action whose reason or grace
    /// changed is one removal plus one addition), in plan order.
    pub fn between(old: &Plan, new: &Plan) -> PlanDiff {
        // Both plans are sorted by key: walk them key by key, and compare as multisets
        // only the keys whose actions differ (hashing every action of a 100k-key plan
        // took longer than planning it).
        let mut diff = PlanDiff::default();
        let (a, b) = (&old.actions[..], &new.actions[..]);
        let (mut i, mut j) = (0, 0);
        while i < a.len() || j < b.len() {
            let key = match (a.get(i), b.get(j)) {
                (Some(x), Some(y)) => (&*x.key).min(&*y.key),
                (Some(x), None) => &*x.key,
                (None, Some(y)) => &*y.key,
                (None, None) => break,
            };
            let run =
                |v: &[Action], from: usize| from + v[from..].iter().take_while(|x| &*x.key == key).count();
            let (i2, j2) = (run(a, i), run(b, j));
            let (olds, news) = (&a[i..i2], &b[j..j2]);
            diff.add_key(olds, news);
            (i, j) = (i2, j2);
        }
        diff
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }

    /// Adds one key's change from `olds` to `news` (its actions in two plans); returns
    /// whether they differ.
    fn add_key(&mut self, olds: &[Action], news: &[Action]) -> bool {
        if olds == news {
            return false;
        }
        self.add_key_owned(olds.to_vec(), news)
    }

    /// [`PlanDiff::add_key`], moving the removed actions out of `olds` instead of
    /// copying them (a policy edit can remove an action of 50,000 keys).
    fn add_key_owned(&mut self, olds: Vec<Action>, news: &[Action]) -> bool {
        if olds == news {
            return false;
        }
        let new_only = unmatched(news, &olds);
        self.added.extend(
            news.iter()
                .zip(new_only)
                .filter(|(_, keep)| *keep)
                .map(|(a, _)| a.clone()),
        );
        if let Some(a) = olds.first().or(news.first()) {
            self.keys.push(a.key.clone());
        }
        let old_only = unmatched(&olds, news);
        self.removed.extend(
            olds.into_iter()
                .zip(old_only)
                .filter(|(_, keep)| *keep)
                .map(|(a, _)| a),
        );
        true
    }
}

/// For each action of `from`, whether it is not matched one for one in `minus` (the
/// multiset difference). One key has a handful of actions: pair them by scanning
/// (hashing every action was an eighth of the time of a policy edit that changed
/// 50,000 keys' findings).
fn unmatched(from: &[Action], minus: &[Action]) -> Vec<bool> {
    match minus.len() <= MAX_SCANNED {
        true => unmatched_by_scan(from, minus),
        false => unmatched_by_hash(from, minus),
    }
}

const MAX_SCANNED: usize = 64;

fn unmatched_by_scan(from: &[Action], minus: &[Action]) -> Vec<bool> {
    let mut used = [false; MAX_SCANNED];
    from.iter()
        .map(|a| match (0..minus.len()).find(|&i| !used[i] && minus[i] == *a) {
            Some(i) => {
                used[i] = true;
                false
            }
            None => true,
        })
        .collect()
}

fn unmatched_by_hash(from: &[Action], minus: &[Action]) -> Vec<bool> {
    let mut left: HashMap<&Action, usize> = HashMap::new();
    for a in minus {
        *left.entry(a).or_default() += 1;
    }
    from.iter()
        .map(|a| match left.get_mut(a) {
            Some(n) if *n > 0 => {
                *n -= 1;
                false
            }
            _ => true,
        })
        .collect()
}

/// Each key's decisions from the last plan, kept by `watch`, so that a re-plan at the
/// same instant re-evaluates only what can have changed: a key whose file or owner
/// facts changed (against every policy), and a policy whose source or `config()`
/// changed (against every key). A decision depends on nothing else, so the plan is the
/// one a full evaluation gives. A different instant invalidates everything.
#[derive(Default)]
pub struct Memo {
    now: Option<Time>,
    /// Policy identities, by the index their decisions are stored under.
    policies: Vec<String>,
    /// The policies' names, in the same order.
    names: Vec<Arc<str>>,
    /// By key id, sorted (as the store's keys are).
    keys: Vec<(String, Memoized)>,
    /// (key, policy) evaluations run and reused by the last plan, for tests.
    pub last_counts: (usize, usize),
}

struct Memoized {
    key: Arc<Key>,
    owner: (&'static str, Option<String>, i64),
    /// Per policy, in the memo's policy order.
    decisions: Vec<Vec<Decision>>,
}

/// Evaluates every active key against every policy and applies the precedence rules,
/// reusing and refreshing `memo` when given. Keys are split into contiguous chunks
/// evaluated in parallel (one per core), and the chunks' actions joined in key order,
/// so the result does not depend on scheduling.
fn actions_memo(
    store: &Store,
    policies: &PolicySet,
    now: Time,
    progress: crate::progress::Progress,
    memo: Option<&mut Memo>,
) -> Result<Vec<Action>> {
    let counts = store.active_keys_per_owner();
    let planner = KeyPlanner::new(store, policies, now);
    let total = store.keys.len() as u64;
    // For each current policy, where the memo holds its decisions, if it does.
    let old: Option<(&Memo, Vec<Option<usize>>)> = memo
        .as_deref()
        .filter(|m| m.now == Some(now))
        .map(|m| (m, m.policy_map(&planner.identities)));
    type Chunk = (Vec<Action>, Vec<(String, Memoized)>, (usize, usize));
    let keep = memo.is_some();
    let plan_chunk = |keys: &[Arc<Key>]| -> Result<Chunk> {
        let mut out = Vec::new();
        let mut fresh = Vec::new();
        let mut tally = (0, 0);
        let mut evaluator = policies.evaluator();
        for (i, key) in keys.iter().enumerate() {
            if i % 256 == 255 {
                crate::progress::tick(progress, 256, total);
            }
            if key.status == KeyStatus::Revoked {
                continue;
            }
            let count = counts.get(key.owner.as_str()).copied().unwrap_or(0);
            let known = old.as_ref().map(|(m, map)| (*m, map.as_slice()));
            let (actions, view, decisions) =
                planner.plan_key(&mut evaluator, key, count, known, &mut tally)?;
            out.extend(actions);
            if keep {
                // Made only for the memo: a plain plan needs none of this.
                fresh.push((key.id.clone(), Memoized::new(&view, decisions)));
            }
        }
        crate::progress::tick(progress, keys.len() as u64 % 256, total);
        Ok((out, fresh, tally))
    };
    let mut out = Vec::new();
    let mut keys = Vec::new();
    let mut tally = (0, 0);
    for chunk in crate::parallel::map_chunks(&store.keys, plan_chunk) {
        // The first failing chunk in key order reports, so the error is deterministic too.
        let (actions, fresh, (e, r)) = chunk?;
        out.extend(actions);
        keys.extend(fresh);
        tally = (tally.0 + e, tally.1 + r);
    }
    if let Some(m) = memo {
        let old = std::mem::replace(
            m,
            Memo {
                now: Some(now),
                names: planner.names.clone(),
                policies: planner.identities,
                keys,
                last_counts: tally,
            },
        );
        // Freeing 100,000 entries takes a while; the plan need not wait for it.
        std::thread::spawn(move || drop(old));
    }
    Ok(out)
}

impl Memo {
    /// For each policy identity, where this memo holds its decisions, if it does.
    fn policy_map(&self, identities: &[String]) -> Vec<Option<usize>> {
        identities
            .iter()
            .map(|id| self.policies.iter().position(|p| p == id))
            .collect()
    }

    /// The memo's entry for a key, if its file and owner facts are the ones given.
    fn entry_for(&self, key: &Arc<Key>, facts: &crate::policy::api::KeyFacts) -> Option<&Memoized> {
        let at = self
            .keys
            .binary_search_by(|(id, _)| id.as_str().cmp(&key.id))
            .ok()?;
        let e = &self.keys[at].1;
        let (status, team, count) = &e.owner;
        let same = (Arc::ptr_eq(&e.key, key) || e.key == *key)
            && *status == facts.owner_status
            && *team == facts.owner_team
            && *count == facts.owner_key_count;
        same.then_some(e)
    }

    /// Re-plans, in place, only the keys in `keys` (ids, present or removed), for a
    /// store whose other keys, owners, exceptions, settings and policies are those
    /// `plan` was made from through this memo. `keys` must hold every key whose owner's
    /// count of active keys changed; `active_keys_of` counts them. Returns what
    /// changed, or `None` (and changes nothing) when the memo cannot vouch for the
    /// other keys: a different instant or other policies.
    pub fn replan_keys(
        &mut self,
        plan: &mut Plan,
        store: &Store,
        policies: &PolicySet,
        now: Time,
        keys: &BTreeSet<String>,
        active_keys_of: impl Fn(&str) -> i64,
    ) -> Result<Option<PlanDiff>> {
        let planner = KeyPlanner::new(store, policies, now);
        if self.now != Some(now) || self.policies != planner.identities {
            return Ok(None);
        }
        let map: Vec<Option<usize>> = (0..planner.identities.len()).map(Some).collect();
        let mut evaluator = policies.evaluator();
        let mut tally = (0, 0);
        let mut fresh: Vec<(&str, Vec<Action>)> = Vec::with_capacity(keys.len());
        let mut counts: HashMap<&str, i64> = HashMap::new();
        for id in keys {
            let id = id.as_str();
            let key = store.key(id).filter(|k| k.status != KeyStatus::Revoked);
            let at = self.keys.binary_search_by(|(k, _)| k.as_str().cmp(id));
            let Some(key) = key else {
                if let Ok(i) = at {
                    self.keys.remove(i);
                }
                fresh.push((id, Vec::new()));
                continue;
            };
            let count = *counts
                .entry(key.owner.as_str())
                .or_insert_with(|| active_keys_of(&key.owner));
            let (actions, view, decisions) =
                planner.plan_key(&mut evaluator, key, count, Some((self, &map)), &mut tally)?;
            let entry = (key.id.clone(), Memoized::new(&view, decisions));
            match at {
                Ok(i) => self.keys[i] = entry,
                Err(i) => self.keys.insert(i, entry),
            }
            fresh.push((id, actions));
        }
        self.last_counts = tally;
        Ok(Some(splice_keys(plan, fresh)))
    }

    /// Re-plans, in place, a plan after only policies' sources or `config()` changed
    /// (the same policy names; the same keys, owners, exceptions and settings as the
    /// plan was made from through this memo): every key is evaluated again by the
    /// changed policies only, and only keys whose decisions changed are resolved into
    /// actions again. `None` (nothing changed) when the memo cannot vouch for the rest.
    pub fn replan_policies(
        &mut self,
        plan: &mut Plan,
        store: &Store,
        policies: &PolicySet,
        now: Time,
    ) -> Result<Option<PlanDiff>> {
        let planner = KeyPlanner::new(store, policies, now);
        let same_names = self.names.len() == planner.names.len()
            && self.names.iter().zip(&planner.names).all(|(a, b)| a == b);
        if self.now != Some(now) || !same_names {
            return Ok(None);
        }
        let changed: Vec<usize> = (0..planner.names.len())
            .filter(|&i| self.policies[i] != planner.identities[i])
            .collect();
        let planner = &planner;
        let changed = &changed;
        let chunks = crate::parallel::map_chunks_mut(&mut self.keys, |entries| {
            let mut evaluator = policies.evaluator();
            let mut fresh = Vec::new();
            let mut evaluated = 0;
            for (id, entry) in entries.iter_mut() {
                let (status, team, count) = &entry.owner;
                let view = KeyView::from_parts(entry.key.clone(), status, team.clone(), *count, now);
                let mut differs = false;
                for &idx in changed {
                    let decisions = evaluator.evaluate_policy(idx, &view)?;
                    evaluated += 1;
                    if decisions != entry.decisions[idx] {
                        entry.decisions[idx] = decisions;
                        differs = true;
                    }
                }
                if differs {
                    fresh.push((id.clone(), planner.resolve(&view, &entry.decisions)));
                }
            }
            Ok::<_, Error>((fresh, evaluated))
        });
        // An error leaves some entries with new decisions under old identities:
        // forget them all rather than trust them.
        let mut fresh = Vec::new();
        let mut evaluated = 0;
        for chunk in chunks {
            match chunk {
                Ok((f, e)) => {
                    fresh.extend(f);
                    evaluated += e;
                }
                Err(e) => {
                    *self = Memo::default();
                    return Err(e);
                }
            }
        }
        self.policies.clone_from(&planner.identities);
        self.last_counts = (evaluated, self.keys.len() * planner.names.len() - evaluated);
        Ok(Some(splice_keys(plan, fresh)))
    }
}

/// Replaces the actions of some keys (given sorted by key) in a plan, and its summary;
/// returns what changed. A few keys are replaced where they stand (no action moves
/// unless their number changes); many, by one pass that moves the others.
fn splice_keys<K: AsRef<str>>(plan: &mut Plan, fresh: Vec<(K, Vec<Action>)>) -> PlanDiff {
    let mut diff = PlanDiff::default();
    let mut changed = |olds: &[Action], news: &[Action], summary: &mut Summary| {
        if diff.add_key(olds, news) {
            summary.count_key(olds, false);
            summary.count_key(news, true);
        }
    };
    let actions = &mut plan.actions;
    if fresh.len() <= 64 {
        for (id, news) in fresh {
            let id = id.as_ref();
            let start = actions.partition_point(|a| &*a.key < id);
            let end = start + actions[start..].iter().take_while(|a| &*a.key == id).count();
            changed(&actions[start..end], &news, &mut plan.summary);
            actions.splice(start..end, news);
        }
        return diff;
    }
    let old = std::mem::take(actions);
    actions.reserve(old.len());
    let mut old = old.into_iter().peekable();
    for (id, news) in fresh {
        let id = id.as_ref();
        while old.peek().is_some_and(|a| &*a.key < id) {
            actions.extend(old.next());
        }
        let mut olds = Vec::new();
        while old.peek().is_some_and(|a| &*a.key == id) {
            olds.extend(old.next());
        }
        if olds != news {
            plan.summary.count_key(&olds, false);
            plan.summary.count_key(&news, true);
            diff.add_key_owned(olds, &news);
        }
        actions.extend(news);
    }
    actions.extend(old);
    diff
}

/// What planning one key needs besides the key, made once per plan.
struct KeyPlanner<'a> {
    store: &'a Store,
    /// Shared by every action of a policy.
    names: Vec<Arc<str>>,
    identities: Vec<String>,
    rules: Rules<'a>,
    now: Time,
}

impl<'a> KeyPlanner<'a> {
    fn new(store: &'a Store, policies: &'a PolicySet, now: Time) -> KeyPlanner<'a> {
        KeyPlanner {
            store,
            names: policies
                .policies()
                .iter()
                .map(|p| Arc::from(p.name.as_str()))
                .collect(),
            identities: policies.policies().iter().map(|p| p.identity.clone()).collect(),
            rules: Rules::new(store, now),
            now,
        }
    }

    /// One (not revoked) key's actions, the view its policies saw, and their decisions
    /// (per policy), reusing what `old` (a memo, and where it holds each policy's
    /// decisions) knows of the key. `tally` counts evaluations run and reused.
    fn plan_key(
        &self,
        evaluator: &mut crate::policy::Evaluator,
        key: &Arc<Key>,
        owner_count: i64,
        old: Option<(&Memo, &[Option<usize>])>,
        tally: &mut (usize, usize),
    ) -> Result<(Vec<Action>, KeyView, Vec<Vec<Decision>>)> {
        let view = KeyView::new(
            key.clone(),
            self.store.owners.get(&key.owner),
            owner_count,
            self.now,
        );
        let known = old.and_then(|(m, map)| Some((m.entry_for(key, view.facts())?, map)));
        let mut decisions = Vec::with_capacity(self.names.len());
        for idx in 0..self.names.len() {
            match known.and_then(|(e, map)| map[idx].map(|j| &e.decisions[j])) {
                Some(d) => {
                    tally.1 += 1;
                    decisions.push(d.clone());
                }
                None => {
                    tally.0 += 1;
                    decisions.push(evaluator.evaluate_policy(idx, &view)?);
                }
            }
        }
        let actions = self.resolve(&view, &decisions);
        Ok((actions, view, decisions))
    }

    /// A key's actions from its decisions (per policy).
    fn resolve(&self, view: &KeyView, decisions: &[Vec<Decision>]) -> Vec<Action> {
        let names = &self.names;
        self.rules.resolve(
            view,
            decisions
                .iter()
                .enumerate()
                .flat_map(|(idx, ds)| ds.iter().map(move |d| (&names[idx], d))),
        )
    }
}

impl Memoized {
    fn new(view: &KeyView, decisions: Vec<Vec<Decision>>) -> Memoized {
        let facts = view.facts();
        Memoized {
            key: facts.key.clone(),
            owner: (
                facts.owner_status,
                facts.owner_team.clone(),
                facts.owner_key_count,
            ),
            decisions,
        }
    }
}

/// What turns a key's decisions into its actions besides the decisions themselves:
/// the store's grace period and cooldown, its exceptions, and the instant.
pub struct Rules<'a> {
    pub default_grace: Dur,
    pub min_interval: Dur,
    pub now: Time,
    exceptions: HashMap<&'a str, Vec<&'a Exception>>,
}

impl<'a> Rules<'a> {
    pub fn new(store: &'a Store, now: Time) -> Rules<'a> {
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
    pub fn cooling_down(&self, key: &crate::store::Key) -> bool {
        self.now.since(key.rotated_at) < self.min_interval
    }

    /// The exceptions naming this key.
    pub fn exceptions_for(&self, key: &str) -> &[&'a Exception] {
        self.exceptions.get(key).map_or(&[], Vec::as_slice)
    }

    /// Turns one key's decisions into its actions: drop no-op restricts, hold back
    /// excepted decisions, add `expire` for ended grace periods, defer rotations inside
    /// the cooldown, let revoke supersede, sort.
    pub fn resolve<'d>(
        &self,
        view: &KeyView,
        decisions: impl Iterator<Item = (&'d Arc<str>, &'d Decision)>,
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
                    a.grace_period = Some(grace.unwrap_or(self.default_grace).compact());
                }
                Verdict::Restrict { remove } => {
                    let held: Vec<String> = remove
                        .iter()
                        .filter(|p| key.permissions.contains(p))
                        .cloned()
                        .collect();
                    if held.is_empty() {
                        continue; // removes nothing: dropped, so plans settle
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
            } else if a.action == ActionKind::Rotate
                && a.excepted.is_none()
                && !key.compromised
                && self.cooling_down(key)
            {
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
        actions
    }
}

/// `2h` rather than `2h 0m 13s` in messages; seconds only under a minute.
fn round_to_minutes(d: Dur) -> Dur {
    if d.secs().abs() < 60 {
        d
    } else {
        Dur::from_secs(d.secs() - d.secs() % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Key, Previous};
    use std::sync::Arc;

    fn t(s: &str) -> Time {
        Time::parse_rfc3339(s).unwrap()
    }

    fn key(permissions: &[&str]) -> Key {
        Key {
            id: "k".into(),
            path: "keys/k.toml".into(),
            service: "binance".into(),
            owner: "alice".into(),
            environment: "production".into(),
            permissions: permissions.iter().map(|s| s.to_string()).collect(),
            ip_allowlist: vec![],
            created_at: t("2026-01-01T00:00:00Z"),
            rotated_at: t("2026-01-01T00:00:00Z"),
            last_used_at: None,
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
        assert_eq!(actions[0].grace_period.as_deref(), Some("2h"));
        assert_eq!(actions[1].grace_period.as_deref(), Some("1d"));
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

    /// A plan of just these actions.
    fn plan_of(actions: Vec<Action>) -> Plan {
        Plan {
            format: FORMAT,
            store_commit: None,
            policies_digest: String::new(),
            keys_digest: String::new(),
            now: String::new(),
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
                let _ = plan.now();
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
}
