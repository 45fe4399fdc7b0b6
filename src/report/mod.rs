//! `keyrot report`: where the keys stand, for reviewers and auditors, as one
//! self-contained HTML page ([`html`]) or JSON. Every figure comes from the plan
//! (`Plan::make`, the code `plan` and `apply` run) of the committed store, and from the
//! apply commits in its history: never a second reading of the policies.

mod html;

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

pub(crate) use html::render;

use crate::error::{Error, Result, StoreError};
use crate::plan::{Action, ActionKind, Plan, Provenance, Summary};
use crate::store::{KeyStatus, Store};
use crate::time::{Dur, Time};
use crate::workspace::Workspace;

/// How far ahead "falls due soon" looks.
pub(crate) const DUE_WINDOW_DAYS: i64 = 30;
/// An exception expiring within this many days is highlighted.
pub(crate) const EXPIRING_DAYS: i64 = 14;
/// Longest lists on the page (the JSON says how many there were in all).
const MAX_ROWS: usize = 200;
const MAX_OWNERS: usize = 25;
const WEEKS: i64 = 26;

#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub keyrot_version: &'static str,
    pub store: String,
    pub store_commit: String,
    pub now: String,
    pub keys: usize,
    pub compliance: Compliance,
    /// Active keys by age (since their last rotation), each bucket split by when the
    /// plan rotates or revokes them.
    pub ages: Vec<AgeBucket>,
    /// Applied actions per week (weeks start on Monday, UTC), the last 26 weeks.
    pub weekly: Vec<Week>,
    /// Keys a plan 30 days ahead rotates or revokes that today's plan does not.
    pub due_soon: Vec<Row>,
    pub due_soon_total: usize,
    pub exceptions: Vec<ExceptionRow>,
    /// Findings (actions held back by nothing) per owner's team and per owner.
    pub teams: Vec<Group>,
    pub owners: Vec<Group>,
    pub owners_total: usize,
    /// Per folder of the keys folder (`trading`, `trading/bots`; `(top)` for keys at
    /// its top); empty when no key is in a folder.
    pub folders: Vec<Group>,
    pub plan_summary: Summary,
    pub plan: Vec<Row>,
    pub plan_total: usize,
}

/// How many keys satisfy every policy, have findings, have only excepted findings, or
/// are revoked.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub(crate) struct Compliance {
    pub compliant: usize,
    pub findings: usize,
    pub excepted: usize,
    pub revoked: usize,
}

#[derive(Debug, Serialize)]
pub(crate) struct AgeBucket {
    pub label: &'static str,
    /// The plan rotates or revokes them now.
    pub due_now: usize,
    /// A plan 30 days ahead does.
    pub due_soon: usize,
    pub later: usize,
}

#[derive(Debug, Default, Serialize)]
pub(crate) struct Week {
    /// The Monday the week starts on (`2026-11-30`).
    pub week: String,
    pub rotate: usize,
    pub revoke: usize,
    pub restrict: usize,
    pub expire: usize,
}

/// One action of a plan, as a row.
#[derive(Debug, Serialize)]
pub(crate) struct Row {
    pub key: String,
    /// The key's folder under the keys folder; absent at its top.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub folder: String,
    pub owner: String,
    pub action: &'static str,
    pub policy: String,
    pub reason: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct ExceptionRow {
    pub key: String,
    pub policy: String,
    pub reason: String,
    pub approved_by: String,
    pub expires: String,
    /// Days until it stops holding (negative: it no longer does).
    pub days_left: i64,
    pub expiring_soon: bool,
}

#[derive(Debug, Default, Serialize)]
pub(crate) struct Group {
    pub name: String,
    pub keys: usize,
    pub revoke: usize,
    pub rotate: usize,
    pub restrict: usize,
    pub expire: usize,
    pub deferred: usize,
    pub warn: usize,
}

impl Group {
    fn findings(&self) -> usize {
        self.revoke + self.rotate + self.restrict + self.expire + self.deferred + self.warn
    }

    fn count(&mut self, kind: ActionKind) {
        match kind {
            ActionKind::Revoke => self.revoke += 1,
            ActionKind::Rotate => self.rotate += 1,
            ActionKind::Restrict => self.restrict += 1,
            ActionKind::Expire => self.expire += 1,
            ActionKind::Deferred => self.deferred += 1,
            ActionKind::Warn => self.warn += 1,
        }
    }
}

/// An action that counts: not superseded by another of its key, not held back by an
/// exception.
fn open(a: &Action) -> bool {
    a.superseded_by.is_none() && a.excepted.is_none()
}

fn rotates_or_revokes(a: &Action) -> bool {
    open(a) && matches!(a.action, ActionKind::Rotate | ActionKind::Revoke)
}

/// The keys `actions` rotate or revoke.
fn due_keys(actions: &[Action]) -> HashSet<&str> {
    actions
        .iter()
        .filter(|a| rotates_or_revokes(a))
        .map(|a| &*a.key)
        .collect()
}

/// The report of the store committed at HEAD, at `now`.
pub(crate) fn make(ws: &Workspace, now: Time) -> Result<Report> {
    let head = ws.head_id()?.ok_or(StoreError::NoCommits)?;
    let loaded = ws.load_commit(head.as_str(), now)?;
    let plan = loaded.plan(now, Provenance::committed(head.clone()), None)?;
    let ahead_at = now
        .checked_add(Dur::days_n(DUE_WINDOW_DAYS).unwrap_or_default())
        .ok_or_else(|| Error::BeyondYear9999(format!("{now} + {DUE_WINDOW_DAYS}d")))?;
    // Only keys today's plan does not already rotate or revoke can fall due later.
    let due_now = due_keys(&plan.actions);
    let later = |k: &crate::store::Key| !due_now.contains(k.id.as_str());
    // Policies are compiled for one instant (their `now()`): the look-ahead gets its own.
    let policies_ahead = crate::workspace::compile_policies(&loaded.store, Vec::new(), ahead_at, None)?;
    let ahead = Plan::key_actions(&loaded.store, &policies_ahead, ahead_at, Some(&later))?;
    let mut weekly: BTreeMap<i64, Week> = BTreeMap::new();
    let first_week = monday(now) - (WEEKS - 1) * 7;
    for w in 0..WEEKS {
        let day = first_week + w * 7;
        weekly.insert(
            day,
            Week {
                week: day_text(day),
                ..Week::default()
            },
        );
    }
    crate::audit::applied_actions(&ws.repo, |t, action| {
        if let Some(w) = weekly.get_mut(&monday(t)) {
            match action {
                "rotate" => w.rotate += 1,
                "revoke" => w.revoke += 1,
                "restrict" => w.restrict += 1,
                "expire" => w.expire += 1,
                _ => {}
            }
        }
    })?;
    Ok(build(
        &ws.root,
        head.as_str(),
        &loaded.store,
        &Plans {
            today: &plan,
            due_now: &due_now,
            ahead: &ahead,
        },
        now,
        weekly.into_values().collect(),
    ))
}

/// Days since the epoch of the Monday (UTC) of `t`'s week.
fn monday(t: Time) -> i64 {
    let day = t.unix().div_euclid(86_400);
    // 1970-01-01 was a Thursday: day 0 is 3 days after a Monday.
    day - (day + 3).rem_euclid(7)
}

fn day_text(day: i64) -> String {
    Time::from_unix(day * 86_400).to_rfc3339()[..10].to_string()
}

/// Today's plan, the keys it rotates or revokes, and the look-ahead's actions.
struct Plans<'p> {
    today: &'p Plan,
    due_now: &'p HashSet<&'p str>,
    ahead: &'p [Action],
}

/// Everything but the history, from the plans.
fn build(
    root: &std::path::Path,
    commit: &str,
    store: &Store,
    plans: &Plans,
    now: Time,
    weekly: Vec<Week>,
) -> Report {
    let Plans {
        today: plan,
        due_now,
        ahead,
    } = *plans;
    let mut by_key: HashMap<&str, Vec<&Action>> = HashMap::new();
    for a in &plan.actions {
        by_key.entry(&a.key).or_default().push(a);
    }
    let mut due_soon_rows = Vec::new();
    let mut due_soon: HashSet<&str> = HashSet::new();
    for a in ahead.iter().filter(|a| rotates_or_revokes(a)) {
        if !due_now.contains(&*a.key) && due_soon.insert(&a.key) {
            due_soon_rows.push(row(store, a));
        }
    }
    let mut compliance = Compliance::default();
    const BUCKETS: [(&str, i64); 6] = [
        ("under 30 days", 30),
        ("30–59 days", 60),
        ("60–89 days", 90),
        ("90–179 days", 180),
        ("180–364 days", 365),
        ("a year or more", i64::MAX),
    ];
    let mut ages: Vec<AgeBucket> = BUCKETS
        .iter()
        .map(|(label, _)| AgeBucket {
            label,
            due_now: 0,
            due_soon: 0,
            later: 0,
        })
        .collect();
    let mut teams: BTreeMap<String, Group> = BTreeMap::new();
    let mut owners: BTreeMap<String, Group> = BTreeMap::new();
    let mut folders: BTreeMap<String, Group> = BTreeMap::new();
    for key in &store.keys {
        if key.status == KeyStatus::Revoked {
            compliance.revoked += 1;
            continue;
        }
        let actions = by_key.get(key.id.as_str()).map(Vec::as_slice).unwrap_or_default();
        if actions.iter().any(|a| open(a)) {
            compliance.findings += 1;
        } else if actions.iter().any(|a| a.excepted.is_some()) {
            compliance.excepted += 1;
        } else {
            compliance.compliant += 1;
        }
        let days = now.since(key.rotated_at).days();
        let bucket = BUCKETS
            .iter()
            .position(|(_, below)| days < *below)
            .unwrap_or(BUCKETS.len() - 1);
        let b = &mut ages[bucket];
        if due_now.contains(key.id.as_str()) {
            b.due_now += 1;
        } else if due_soon.contains(key.id.as_str()) {
            b.due_soon += 1;
        } else {
            b.later += 1;
        }
        let team = store
            .owners
            .get(&key.owner)
            .and_then(|o| o.team.clone())
            .unwrap_or_else(|| "(no team)".into());
        let folder = match key.folder.as_str() {
            "" => TOP_FOLDER.to_string(),
            folder => folder.to_string(),
        };
        for group in [
            teams.entry(team).or_insert_with_key(|n| named(n)),
            owners.entry(key.owner.clone()).or_insert_with_key(|n| named(n)),
            folders.entry(folder).or_insert_with_key(|n| named(n)),
        ] {
            group.keys += 1;
            for a in actions.iter().filter(|a| open(a)) {
                group.count(a.action);
            }
        }
    }
    let mut owners: Vec<Group> = owners.into_values().filter(|g| g.findings() > 0).collect();
    owners.sort_by(|a, b| b.findings().cmp(&a.findings()).then_with(|| a.name.cmp(&b.name)));
    let owners_total = owners.len();
    owners.truncate(MAX_OWNERS);
    let exceptions = store
        .exceptions
        .iter()
        .map(|e| {
            let days_left = e.expires.unix().saturating_sub(now.unix()).div_euclid(86_400);
            ExceptionRow {
                key: e.key.clone(),
                policy: e.policy.clone(),
                reason: e.reason.clone(),
                approved_by: e.approved_by.clone(),
                expires: e.expires_text.clone(),
                days_left,
                expiring_soon: days_left < EXPIRING_DAYS,
            }
        })
        .collect();
    let due_soon_total = due_soon_rows.len();
    due_soon_rows.truncate(MAX_ROWS);
    let shown: Vec<&Action> = plan
        .actions
        .iter()
        .filter(|a| a.superseded_by.is_none())
        .collect();
    Report {
        keyrot_version: env!("CARGO_PKG_VERSION"),
        store: crate::workspace::root_name(root),
        store_commit: commit.to_string(),
        now: now.to_rfc3339(),
        keys: store.keys.len(),
        compliance,
        ages,
        weekly,
        due_soon: due_soon_rows,
        due_soon_total,
        exceptions,
        teams: teams.into_values().collect(),
        owners,
        owners_total,
        // A store without folders has one: the keys folder, shown as such elsewhere.
        folders: match folders.keys().any(|f| f != TOP_FOLDER) {
            true => folders.into_values().collect(),
            false => Vec::new(),
        },
        plan_summary: plan.summary.clone(),
        plan_total: shown.len(),
        plan: shown.into_iter().take(MAX_ROWS).map(|a| row(store, a)).collect(),
    }
}

fn named(name: &str) -> Group {
    Group {
        name: name.to_string(),
        ..Group::default()
    }
}

/// How the report names the keys folder itself among its folders.
const TOP_FOLDER: &str = "(top)";

fn row(store: &Store, a: &Action) -> Row {
    Row {
        key: a.key.to_string(),
        folder: a.folder.as_deref().unwrap_or_default().to_string(),
        owner: store.key(&a.key).map(|k| k.owner.clone()).unwrap_or_default(),
        action: if a.excepted.is_some() {
            "excepted"
        } else {
            a.action.as_str()
        },
        policy: a.policy.to_string(),
        reason: a.reason.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weeks_start_on_monday() {
        let t = |s: &str| Time::parse_rfc3339(s).unwrap();
        // 2026-12-02 is a Wednesday; 2026-11-30 the Monday before; Sunday stays.
        assert_eq!(day_text(monday(t("2026-12-02T13:00:00Z"))), "2026-11-30");
        assert_eq!(day_text(monday(t("2026-11-30T00:00:00Z"))), "2026-11-30");
        assert_eq!(day_text(monday(t("2026-12-06T23:59:59Z"))), "2026-11-30");
        assert_eq!(day_text(monday(t("1970-01-01T00:00:00Z"))), "1969-12-29");
    }
}
