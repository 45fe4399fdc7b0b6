//! What `keyrot check` finds in a store that loads: settings that no policy reads,
//! policies reading settings that are not there, tests without policies and policies
//! without tests, and exceptions that cannot or do not apply.

use std::collections::BTreeSet;
use std::path::Path;

use crate::error::Problem;
use crate::plan::{ActionKind, Plan, Provenance};
use crate::policy::config_use::config_use;
use crate::policy::testing::{orphan_test, tested_policy};
use crate::store::files::{EXCEPTIONS_FILE, SETTINGS_FILE};
use crate::store::layout::TEST_SUFFIX;
use crate::store::settings::Provider;
use crate::time::Time;
use crate::workspace::Loaded;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Severity {
    Error,
    Warning,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Finding {
    pub severity: Severity,
    pub problem: Problem,
}

fn error(problem: Problem) -> Finding {
    Finding {
        severity: Severity::Error,
        problem,
    }
}

fn warning(problem: Problem) -> Finding {
    Finding {
        severity: Severity::Warning,
        problem,
    }
}

/// Everything `check` reports about a loaded store, errors first, each in file order.
/// `now` is the instant exceptions are matched against the plan at.
pub(crate) fn lint(loaded: &Loaded, root: &Path, now: Time) -> Vec<Finding> {
    let mut out = Vec::new();
    providers(loaded, root, &mut out);
    config_entries(loaded, &mut out);
    tests(loaded, &mut out);
    exceptions(loaded, now, &mut out);
    out.sort_by(|a, b| {
        (a.severity, &a.problem.path, a.problem.pos).cmp(&(b.severity, &b.problem.path, b.problem.pos))
    });
    out
}

/// Exec providers must be executable files in the store: apply runs them.
fn providers(loaded: &Loaded, root: &Path, out: &mut Vec<Finding>) {
    use std::os::unix::fs::PermissionsExt;
    for (name, service) in &loaded.store.settings.services {
        let Some(Provider::Exec { program }) = &service.provider else {
            continue;
        };
        let ok = std::fs::symlink_metadata(root.join(program))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
        if !ok {
            out.push(error(Problem::new(
                SETTINGS_FILE,
                format!("service {name}: provider {program} is not an executable file in the store"),
            )));
        }
    }
}

/// `[policy.<name>]` entries no policy reads are errors: a misspelt `max_dayz = 30`
/// would otherwise leave the limit at its default. Entries a policy reads that are
/// not set are warnings: the policy's default applies, which may be intended.
fn config_entries(loaded: &Loaded, out: &mut Vec<Finding>) {
    let settings = &loaded.store.settings;
    out.extend(loaded.policies.warnings().iter().cloned().map(warning));
    for policy in loaded.policies.policies() {
        let used = config_use(&policy.ast);
        let Some(table) = settings.policy_config.get(&policy.name) else {
            continue;
        };
        let pos = settings.policy_config_pos.get(&policy.name).copied();
        if used.dynamic {
            continue; // its reads cannot be listed, so nothing is known to be unread
        }
        for entry in table.keys().filter(|k| !used.reads.contains_key(*k)) {
            out.push(error(Problem::at(
                SETTINGS_FILE,
                pos,
                format!(
                    "[policy.{}] sets `{entry}`, which policy {} never reads (misspelt?); it has no effect",
                    policy.name, policy.name
                ),
            )));
        }
    }
}

fn tests(loaded: &Loaded, out: &mut Vec<Finding>) {
    let store = &loaded.store;
    let dir = &store.settings.policies_dir;
    let tested: BTreeSet<&str> = store
        .policy_tests
        .iter()
        .filter_map(|f| tested_policy(&f.path))
        .collect();
    for f in &store.policy_tests {
        if loaded
            .policies
            .index_of(tested_policy(&f.path).unwrap_or_default())
            .is_none()
        {
            out.push(error(orphan_test(f, dir)));
        }
    }
    for p in loaded.policies.policies() {
        if !tested.contains(p.name.as_str()) {
            out.push(warning(Problem::new(
                &p.path,
                format!(
                    "policy {} has no tests (write them in {dir}/{}{TEST_SUFFIX}; see keyrot test)",
                    p.name, p.name
                ),
            )));
        }
    }
}

fn exceptions(loaded: &Loaded, now: Time, out: &mut Vec<Finding>) {
    let store = &loaded.store;
    if store.exceptions.is_empty() {
        return;
    }
    let plan = match Plan::make(store, &loaded.policies, now, Provenance::default(), None) {
        Ok(plan) => Some(plan),
        Err(e) => {
            // A policy that fails on some key fails every plan: that is check's business.
            out.push(error(Problem::new(
                EXCEPTIONS_FILE,
                format!("cannot match exceptions against the plan: {e}"),
            )));
            None
        }
    };
    for e in &store.exceptions {
        let at = |msg: String| Problem::at(EXCEPTIONS_FILE, Some(e.pos), msg);
        if loaded.policies.index_of(&e.policy).is_none() {
            out.push(error(at(format!(
                "exception names policy {}, which does not exist (no {}/{}.rhai)",
                e.policy, store.settings.policies_dir, e.policy
            ))));
            continue;
        }
        let Some(key) = store.key(&e.key) else {
            out.push(warning(at(format!(
                "exception names key {}, which does not exist",
                e.key
            ))));
            continue;
        };
        if !e.is_active(now) {
            out.push(warning(at(format!(
                "exception for key {} and policy {} expired {}; remove it",
                e.key, e.policy, e.expires_text
            ))));
            continue;
        }
        let Some(plan) = &plan else { continue };
        let decided: Vec<_> = plan
            .actions
            .iter()
            .filter(|a| *a.key == *e.key && *a.policy == *e.policy)
            .collect();
        if key.compromised && decided.iter().any(|a| a.action == ActionKind::Revoke) {
            out.push(error(at(format!(
                "exception for key {} and policy {} would hold back the revoke of a compromised key; that is never allowed, and the revoke goes ahead",
                e.key, e.policy
            ))));
        } else if decided.is_empty() {
            out.push(warning(at(format!(
                "exception for key {} and policy {} matches nothing: the policy makes no decision on the key at {}",
                e.key,
                e.policy,
                now.to_rfc3339()
            ))));
        }
    }
}
