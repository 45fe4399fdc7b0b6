//! `keyrot check`: compile every policy, load every key and owner, then look for what
//! loads but is still wrong (see [`crate::lint`]).

use std::path::Path;
use std::process::ExitCode;

use serde_json::json;

use crate::error::{Error, Problem};
use crate::lint::{Finding, Severity};
use crate::workspace::Workspace;

#[derive(clap::Args)]
#[command(mut_arg("now", |a| a.help("The instant exceptions are matched against the plan at (RFC 3339); default: now")))]
pub(super) struct Args {
    #[command(flatten)]
    eval: super::EvalArgs,
}

fn problem_json(p: &Problem, severity: Severity) -> serde_json::Value {
    json!({"path": p.path, "line": p.pos.map(|x| x.0), "column": p.pos.map(|x| x.1),
           "message": p.message, "severity": severity})
}

/// `path:line:col: message`, or `path:line:col: warning: message`.
fn finding_line(f: &Finding) -> String {
    match f.severity {
        Severity::Error => f.problem.to_string(),
        Severity::Warning => super::warning_line(&f.problem),
    }
}

pub(super) fn run(args: &Args, store: &Path) -> Result<ExitCode, Error> {
    let ws = Workspace::open(store)?;
    let now = args.eval.now();
    let loaded = match ws.load_worktree(now) {
        Ok(loaded) => loaded,
        Err(Error::Invalid(problems)) if args.eval.json => {
            let list: Vec<_> = problems
                .iter()
                .map(|p| problem_json(p, Severity::Error))
                .collect();
            super::out(&format!("{}\n", json!({"ok": false, "problems": list})));
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(e),
    };
    let findings = crate::lint::lint(&loaded, &ws.root, now);
    let errors = findings.iter().filter(|f| f.severity == Severity::Error).count();
    let policies = loaded.policies.policies();
    if args.eval.json {
        let list: Vec<_> = policies
            .iter()
            .map(|p| json!({"name": p.name, "path": p.path, "description": p.description}))
            .collect();
        let problems: Vec<_> = findings
            .iter()
            .map(|f| problem_json(&f.problem, f.severity))
            .collect();
        super::out(&format!(
            "{}\n",
            json!({"ok": errors == 0, "problems": problems, "policies": list,
                   "keys": loaded.store.keys.len(), "owners": loaded.store.owners.len(),
                   "exceptions": loaded.store.exceptions.len(), "tests": loaded.store.policy_tests.len()})
        ));
    } else {
        for f in &findings {
            super::err_line(&finding_line(f));
        }
        if errors > 0 {
            super::err_line(&format!(
                "error: {errors} problem{} in the store",
                if errors == 1 { "" } else { "s" }
            ));
        } else {
            let mut text = format!(
                "ok: {} keys, {} owners, {} policies\n",
                loaded.store.keys.len(),
                loaded.store.owners.len(),
                policies.len()
            );
            for p in policies {
                text.push_str(&format!(
                    "  {:<20} {}\n",
                    p.name,
                    p.description.as_deref().unwrap_or("")
                ));
            }
            super::out(&text);
        }
    }
    Ok(if errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
