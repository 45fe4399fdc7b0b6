//! Building a plan over all keys, in parallel, reusing earlier decisions when given a
//! [`Memo`] (`watch`). Planning and memoised re-planning stay in one module: each uses
//! the other (the memo re-plans through the key planner, which fills the memo), and
//! splitting them would only make an import cycle.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use super::*;

/// Each key's decisions from the last plan, kept by `watch`, so that a re-plan at the
/// same instant re-evaluates only what can have changed: a key whose file or owner
/// facts changed (against every policy), and a policy whose source or `config()`
/// changed (against every key). A decision depends on nothing else, so the plan is the
/// one a full evaluation gives. A different instant invalidates everything.
#[derive(Default)]
pub(crate) struct Memo {
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
    owner: crate::policy::api::OwnerFacts,
    /// Per policy, in the memo's policy order.
    decisions: Vec<Vec<Decision>>,
}

/// Which keys a plan evaluates: all, or those a filter keeps (each with the facts of
/// the whole store: its owner's key count counts every key).
pub(crate) type KeyFilter<'f> = Option<&'f (dyn Fn(&Key) -> bool + Sync)>;

/// Evaluates every active key (that `only` keeps) against every policy and applies the
/// precedence rules, reusing and refreshing `memo` when given. Keys are split into contiguous chunks
/// evaluated in parallel (one per core), and the chunks' actions joined in key order,
/// so the result does not depend on scheduling.
pub(super) fn actions_memo(
    store: &Store,
    policies: &PolicySet,
    now: Time,
    progress: crate::progress::Progress,
    memo: Option<&mut Memo>,
    only: KeyFilter,
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
            if key.status == KeyStatus::Revoked || only.is_some_and(|keep| !keep(key)) {
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
        let same = (Arc::ptr_eq(&e.key, key) || e.key == *key) && e.owner.describes(facts);
        same.then_some(e)
    }

    /// Re-plans, in place, only the keys in `keys` (ids, present or removed), for a
    /// store whose other keys, owners, exceptions, settings and policies are those
    /// `plan` was made from through this memo. `keys` must hold every key whose owner's
    /// count of active keys changed; `active_keys_of` counts them. Returns what
    /// changed, or `None` (and changes nothing) when the memo cannot vouch for the
    /// other keys: a different instant or other policies.
    pub(crate) fn replan_keys(
        &mut self,
        plan: &mut Plan,
        store: &Store,
        policies: &PolicySet,
        now: Time,
        keys: &BTreeSet<String>,
        active_keys_of: impl Fn(&str) -> i64,
    ) -> Result<Option<PlanDiff>> {
        let planner = KeyPlanner::new(store, policies, now);
        if self.now != Some(now) || self.policies != planner.identities || looks_across(store) {
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
    pub(crate) fn replan_policies(
        &mut self,
        plan: &mut Plan,
        store: &Store,
        policies: &PolicySet,
        now: Time,
    ) -> Result<Option<PlanDiff>> {
        let planner = KeyPlanner::new(store, policies, now);
        let same_names = self.names.len() == planner.names.len()
            && self.names.iter().zip(&planner.names).all(|(a, b)| a == b);
        if self.now != Some(now) || !same_names || looks_across(store) {
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
                let view = KeyView::from_parts(entry.key.clone(), entry.owner.clone(), now);
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

/// Whether a rule of this store decides one key's actions from other keys' (the
/// rollout): then one changed key can change any other's actions, and a re-plan
/// resolves every key again (still reusing the memo's decisions).
fn looks_across(store: &Store) -> bool {
    store.settings.rollout.is_active()
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
            owner: facts.owner(),
            decisions,
        }
    }
}
