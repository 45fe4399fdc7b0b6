//! `keyrot test`: run the policy tests, report like `cargo test`, and measure coverage.

use std::path::Path;
use std::process::ExitCode;

use serde_json::json;

use crate::error::Error;
use crate::policy::coverage::{MinCoverage, Report};
use crate::policy::testing::{self, Outcome};

#[derive(clap::Args)]
#[command(
    mut_arg("now", |a| a.help("The instant each test starts at until it calls at(…) (RFC 3339); default: now")),
    mut_arg("json", |a| a.help("Print the results as JSON")),
)]
pub(super) struct Args {
    /// Run only the tests whose `policy::test_name` contains this text
    filter: Option<String>,
    /// Report, per policy, the lines the tests ran
    #[arg(long)]
    coverage: bool,
    /// Fail when any policy's line coverage is below PCT percent (implies --coverage)
    #[arg(long, value_name = "PCT", value_parser = MinCoverage::parse)]
    min_coverage: Option<MinCoverage>,
    #[command(flatten)]
    eval: super::EvalArgs,
}

pub(super) fn run(args: &Args, store: &Path) -> Result<ExitCode, Error> {
    let super::WorkTree { now, loaded, .. } = args.eval.load_worktree(store)?;
    let outcome = testing::run(&loaded.store, args.filter.as_deref(), now)?;
    let show_coverage = args.coverage || args.min_coverage.is_some();
    let below: Vec<&Report> = match &args.min_coverage {
        Some(min) => outcome.coverage.iter().filter(|r| !r.meets(min)).collect(),
        None => Vec::new(),
    };
    if args.eval.json {
        super::out(&format!("{}\n", to_json(&outcome, show_coverage, &below)));
    } else {
        super::out(&render(
            &outcome,
            show_coverage,
            &below,
            args.min_coverage.is_some(),
        ));
    }
    Ok(if outcome.ok() && below.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn to_json(outcome: &Outcome, coverage: bool, below: &[&Report]) -> serde_json::Value {
    let broken: Vec<_> = outcome
        .broken
        .iter()
        .map(|p| json!({"path": p.path, "line": p.pos.map(|x| x.0), "column": p.pos.map(|x| x.1), "message": p.message}))
        .collect();
    let mut v = json!({
        "ok": outcome.ok() && below.is_empty(),
        "passed": outcome.passed(),
        "failed": outcome.failed(),
        "tests": outcome.tests,
        "broken": broken,
    });
    if coverage {
        v["coverage"] = json!(outcome
            .coverage
            .iter()
            .map(|r| {
                let mut c = serde_json::to_value(r).unwrap_or_default();
                c["below_minimum"] = json!(below.iter().any(|b| b.policy == r.policy));
                c
            })
            .collect::<Vec<_>>());
    }
    v
}

/// `12/12 lines, 100.0%` (the percentage is rounded down, never up).
fn percent(r: &Report) -> String {
    let t = r.percent_tenths();
    format!("{}.{}%", t / 10, t % 10)
}

fn render(outcome: &Outcome, coverage: bool, below: &[&Report], has_min: bool) -> String {
    let mut out = format!(
        "running {} test{}\n",
        outcome.tests.len(),
        if outcome.tests.len() == 1 { "" } else { "s" }
    );
    for t in &outcome.tests {
        out.push_str(&format!(
            "test {} ... {}\n",
            t.full_name(),
            if t.passed { "ok" } else { "FAILED" }
        ));
    }
    let failures: Vec<_> = outcome.tests.iter().filter(|t| !t.passed).collect();
    if !failures.is_empty() || !outcome.broken.is_empty() {
        out.push_str("\nfailures:\n");
        for t in failures {
            out.push_str(&format!(
                "---- {} ----\n{}\n",
                t.full_name(),
                t.failure.as_deref().unwrap_or_default()
            ));
        }
        for p in &outcome.broken {
            out.push_str(&format!("---- {} (not run) ----\n{p}\n", p.path));
        }
    }
    if coverage {
        out.push_str("\ncoverage:\n");
        for r in &outcome.coverage {
            let mut line = format!(
                "  {:<20} {:>4}/{:<4} lines {:>6}  {}",
                r.policy,
                r.covered,
                r.lines,
                percent(r),
                r.path
            );
            if !r.missed.is_empty() {
                let lines: Vec<String> = r.missed.iter().map(|l| l.to_string()).collect();
                let s = if lines.len() == 1 { "" } else { "s" };
                line.push_str(&format!("  (not run: line{s} {})", lines.join(", ")));
            }
            if below.iter().any(|b| b.policy == r.policy) {
                line.push_str("  BELOW MINIMUM");
            }
            out.push_str(&line);
            out.push('\n');
        }
        if has_min && !below.is_empty() {
            let names: Vec<&str> = below.iter().map(|r| r.policy.as_str()).collect();
            out.push_str(&format!("coverage below the minimum: {}\n", names.join(", ")));
        }
    }
    out.push_str(&format!(
        "\n{} passed, {} failed\n",
        outcome.passed(),
        outcome.failed()
    ));
    out
}
