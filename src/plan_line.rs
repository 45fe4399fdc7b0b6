//! `watch --json` prints the whole plan as one line at every save: 20 MB of JSON at
//! 100,000 keys, most of it the same as the line before. [`PlanLine`] keeps the last
//! line's actions serialized and re-serializes only the keys a plan diff names.

use std::io::{self, Write};
use std::sync::Arc;

use crate::plan::{Plan, PlanDiff};

/// More changed keys than this, and the actions are serialized afresh (in parallel)
/// rather than patched one key at a time.
const MAX_PATCHED_KEYS: usize = 64;

/// The actions of the last plan written, as JSON.
#[derive(Default)]
pub(crate) struct PlanLine {
    /// Each action's JSON followed by a comma, in plan order.
    actions: Vec<u8>,
    /// Per action: its key, and where its JSON (and comma) ends in `actions`.
    ends: Vec<(Arc<str>, usize)>,
    /// Whether `actions` is the last plan written (nothing written yet, or a write
    /// failed half-way: serialize afresh).
    valid: bool,
}

impl PlanLine {
    /// Writes `plan` as compact JSON, byte for byte what `serde_json::to_writer`
    /// writes. `diff`: how `plan` differs from the plan this last wrote, if it does.
    pub(crate) fn write(
        &mut self,
        plan: &Plan,
        diff: Option<&PlanDiff>,
        out: &mut impl Write,
    ) -> io::Result<()> {
        let patch = match diff {
            Some(d) if self.valid && d.keys.len() <= MAX_PATCHED_KEYS => Some(&d.keys),
            _ => None,
        };
        self.valid = false;
        match patch {
            // Last key first: the offsets of the keys before it stay put.
            Some(keys) => keys.iter().rev().try_for_each(|key| self.patch(plan, key))?,
            None => self.serialize_all(plan)?,
        }
        debug_assert_eq!(self.ends.len(), plan.actions.len());
        let (before, after) = shell(plan)?;
        out.write_all(&before)?;
        out.write_all(self.actions.strip_suffix(b",").unwrap_or(&self.actions))?;
        out.write_all(&after)?;
        self.valid = true;
        Ok(())
    }

    fn serialize_all(&mut self, plan: &Plan) -> io::Result<()> {
        let chunks = crate::parallel::map_chunks(&plan.actions, |chunk| {
            let mut bytes = Vec::with_capacity(chunk.len() * 128);
            let mut ends = Vec::with_capacity(chunk.len());
            for a in chunk {
                serde_json::to_writer(&mut bytes, a)?;
                bytes.push(b',');
                ends.push((a.key.clone(), bytes.len()));
            }
            Ok::<_, serde_json::Error>((bytes, ends))
        });
        self.actions.clear();
        self.ends.clear();
        for chunk in chunks {
            let (bytes, ends) = chunk?;
            let base = self.actions.len();
            self.actions.extend_from_slice(&bytes);
            self.ends.extend(ends.into_iter().map(|(k, end)| (k, base + end)));
        }
        Ok(())
    }

    /// Replaces one key's actions with the plan's.
    fn patch(&mut self, plan: &Plan, key: &str) -> io::Result<()> {
        let lo = self.ends.partition_point(|(k, _)| &**k < key);
        let hi = lo + self.ends[lo..].iter().take_while(|(k, _)| &**k == key).count();
        let start = if lo == 0 { 0 } else { self.ends[lo - 1].1 };
        let end = if hi == lo { start } else { self.ends[hi - 1].1 };
        let from = plan.actions.partition_point(|a| &*a.key < key);
        let new = plan.actions[from..].iter().take_while(|a| &*a.key == key);
        let mut bytes = Vec::new();
        let mut ends = Vec::new();
        for a in new {
            serde_json::to_writer(&mut bytes, a)?;
            bytes.push(b',');
            ends.push((a.key.clone(), start + bytes.len()));
        }
        let grown = bytes.len() as isize - (end - start) as isize;
        self.actions.splice(start..end, bytes);
        let added = ends.len();
        self.ends.splice(lo..hi, ends);
        for (_, e) in &mut self.ends[lo + added..] {
            *e = e.wrapping_add_signed(grown);
        }
        Ok(())
    }
}

/// The plan's JSON before and after its actions' elements: `{…"actions":[` and
/// `],"summary":{…}}`.
fn shell(plan: &Plan) -> io::Result<(Vec<u8>, Vec<u8>)> {
    let empty = Plan {
        format: plan.format,
        keyrot_version: plan.keyrot_version.clone(),
        store_commit: plan.store_commit.clone(),
        policies_digest: plan.policies_digest.clone(),
        keys_digest: plan.keys_digest.clone(),
        now: plan.now,
        dirty: plan.dirty,
        actions: Vec::new(),
        summary: plan.summary.clone(),
    };
    let mut json = serde_json::to_vec(&empty)?;
    // No field before `actions` can hold this text: a number, hex digests, an RFC 3339
    // instant and a boolean.
    const EMPTY: &[u8] = b"\"actions\":[]";
    let at = json
        .windows(EMPTY.len())
        .position(|w| w == EMPTY)
        .map(|i| i + EMPTY.len() - 1)
        .ok_or_else(|| io::Error::other("plan JSON without actions"))?;
    let after = json.split_off(at);
    Ok((json, after))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Action, ActionKind, Summary, FORMAT};

    fn action(key: &str, reason: &str) -> Action {
        let mut a = Action::new(
            &key.into(),
            ActionKind::Rotate,
            &"max-age".into(),
            format!("r \"{reason}\""),
        );
        a.grace_period = (reason.len() % 2 == 0).then(|| crate::time::Dur::parse("1d").unwrap());
        a
    }

    fn plan(actions: Vec<Action>) -> Plan {
        Plan {
            format: FORMAT,
            keyrot_version: (actions.len() > 2).then(|| "0.1.0".into()),
            store_commit: (actions.len() > 1)
                .then(|| crate::store::repo::CommitId::parse(&"ab".repeat(20)).unwrap()),
            policies_digest: "sha256:00".into(),
            keys_digest: "sha256:11".into(),
            now: crate::time::Time::parse_rfc3339("2026-11-22T20:00:00Z").unwrap(),
            dirty: actions.len() == 3,
            summary: Summary::of(&actions),
            actions,
        }
    }

    fn written(line: &mut PlanLine, plan: &Plan, diff: Option<&PlanDiff>) -> String {
        let mut out = Vec::new();
        line.write(plan, diff, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// Serialized whole, small (one thread) and large (split between threads), empty
    /// and not: exactly what serde prints.
    #[test]
    fn a_plan_is_written_as_serde_writes_it() {
        for n in [0, 1, 3, 5000] {
            let p = plan(
                (0..n)
                    .map(|i| action(&format!("k{i:05}"), &i.to_string()))
                    .collect(),
            );
            assert_eq!(
                written(&mut PlanLine::default(), &p, None),
                serde_json::to_string(&p).unwrap(),
                "{n} actions"
            );
        }
    }

    /// Patched key by key (changed, reordered, added, removed, first, last, into an
    /// empty plan),
    /// the line is what serializing the new plan whole gives.
    #[test]
    fn patched_lines_equal_fresh_ones() {
        let keys = ["a", "b", "c", "d"];
        // The third and fourth are the same actions in another order: no action is
        // added or removed, yet the line changes.
        let variants: [&[&str]; 5] = [&[], &["x"], &["x", "yy"], &["yy", "x"], &["zzz"]];
        let mut line = PlanLine::default();
        let mut last = plan(Vec::new());
        written(&mut line, &last, None);
        // Every key cycles through the variants, each step changing one to three keys.
        for step in 0..40usize {
            let actions: Vec<Action> = keys
                .iter()
                .enumerate()
                .flat_map(|(i, k)| {
                    let v = variants[(step * (i + 1) / 3 + i) % variants.len()];
                    v.iter().map(move |r| action(k, r))
                })
                .collect();
            let next = plan(actions);
            let diff = PlanDiff::between(&last, &next);
            assert_eq!(
                written(&mut line, &next, Some(&diff)),
                serde_json::to_string(&next).unwrap(),
                "step {step}"
            );
            last = next;
        }
    }
}
