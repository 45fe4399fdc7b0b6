//! What changed between two plans, action by action (`watch` prints it).

use std::collections::HashMap;
use std::sync::Arc;

use super::*;

/// What changed between two plans, action by action.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub(crate) struct PlanDiff {
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
    pub(crate) fn between(old: &Plan, new: &Plan) -> PlanDiff {
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

    pub(crate) fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }

    /// Adds one key's change from `olds` to `news` (its actions in two plans); returns
    /// whether they differ.
    pub(super) fn add_key(&mut self, olds: &[Action], news: &[Action]) -> bool {
        if olds == news {
            return false;
        }
        self.add_key_owned(olds.to_vec(), news)
    }

    /// [`PlanDiff::add_key`], moving the removed actions out of `olds` instead of
    /// copying them (a policy edit can remove an action of 50,000 keys).
    pub(super) fn add_key_owned(&mut self, olds: Vec<Action>, news: &[Action]) -> bool {
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

impl PlanDiff {
    /// This diff without the changes time alone makes to a reason: a deferred key's
    /// "rotated 16m ago" that reads "17m" a minute later, at every save (`watch`'s text
    /// shows what a save changed; its JSON lines stay complete).
    pub(crate) fn beyond_elapsed_time(&self) -> PlanDiff {
        let mut out = PlanDiff {
            keys: self.keys.clone(),
            ..PlanDiff::default()
        };
        let mut used = vec![false; self.added.len()];
        for r in &self.removed {
            let twin = self
                .added
                .iter()
                .enumerate()
                .position(|(i, a)| !used[i] && a.key == r.key && same_but_elapsed(a, r));
            match twin {
                Some(i) => used[i] = true,
                None => out.removed.push(r.clone()),
            }
        }
        out.added = self
            .added
            .iter()
            .zip(used)
            .filter(|(_, used)| !used)
            .map(|(a, _)| a.clone())
            .collect();
        out
    }
}

/// Whether two actions differ at most in the elapsed times of their reasons.
fn same_but_elapsed(a: &Action, b: &Action) -> bool {
    let mut a2 = a.clone();
    a2.reason = without_elapsed(&a.reason);
    let mut b2 = b.clone();
    b2.reason = without_elapsed(&b.reason);
    a2 == b2
}

/// `reason` with each "rotated <duration> ago" (keyrot's cooldown and rollout
/// wording) as "rotated … ago".
fn without_elapsed(reason: &str) -> String {
    const START: &str = "rotated ";
    let mut out = String::with_capacity(reason.len());
    let mut rest = reason;
    while let Some(at) = rest.find(START) {
        out.push_str(&rest[..at + START.len()]);
        rest = &rest[at + START.len()..];
        // Duration tokens (`2h`, `16m`), separated by single spaces, then " ago".
        let mut end = 0;
        let mut tokens = 0;
        for token in rest.split(' ') {
            let unit = token.chars().last();
            let digits = token.len() > 1 && token[..token.len() - 1].bytes().all(|b| b.is_ascii_digit());
            if digits && matches!(unit, Some('d' | 'h' | 'm' | 's')) {
                end += token.len() + 1;
                tokens += 1;
            } else {
                break;
            }
        }
        if tokens > 0 && rest[end..].starts_with("ago") {
            out.push('…');
            out.push(' ');
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
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

pub(super) fn unmatched_by_scan(from: &[Action], minus: &[Action]) -> Vec<bool> {
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

pub(super) fn unmatched_by_hash(from: &[Action], minus: &[Action]) -> Vec<bool> {
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
