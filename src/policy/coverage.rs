//! Line coverage of policies, for `keyrot test --coverage`.
//!
//! A line counts when a statement of one of the policy's functions starts on it: the
//! code that decides. Top-level declarations (`const DESCRIPTION`) run whenever the
//! policy loads, so they prove nothing and are not counted. A line is covered when the
//! engine stepped onto it while a test ran, seen through Rhai's debugger interface,
//! which only the test engine registers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};

use rhai::debugger::DebuggerCommand;
use rhai::{ASTNode, Engine, Stmt, AST};

/// Lines stepped on, per policy source path.
#[derive(Clone, Default)]
pub struct Coverage(Arc<Mutex<BTreeMap<String, BTreeSet<usize>>>>);

impl Coverage {
    /// Makes `engine` record every line it steps on.
    pub fn attach(&self, engine: &mut Engine) {
        let hits = self.0.clone();
        // Marked volatile, not deprecated, by Rhai; Cargo.lock pins the version.
        #[allow(deprecated)]
        engine.register_debugger(
            |_, debugger| debugger,
            move |_, _, _, source, pos| {
                if let (Some(source), Some(line)) = (source, pos.line()) {
                    let mut hits = hits.lock().unwrap_or_else(PoisonError::into_inner);
                    match hits.get_mut(source) {
                        Some(lines) => {
                            lines.insert(line);
                        }
                        None => {
                            hits.insert(source.to_string(), BTreeSet::from([line]));
                        }
                    }
                }
                // Stop at every statement and expression, functions included.
                Ok(DebuggerCommand::StepInto)
            },
        );
    }

    /// The lines of `path` stepped on so far.
    pub fn hits(&self, path: &str) -> BTreeSet<usize> {
        let hits = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        hits.get(path).cloned().unwrap_or_default()
    }
}

/// The lines on which a statement of one of the script's functions starts.
pub(crate) fn statement_lines(ast: &AST) -> BTreeSet<usize> {
    let mut lines = BTreeSet::new();
    ast.clone_functions_only().walk(&mut |path: &[ASTNode]| {
        if let Some(ASTNode::Stmt(stmt)) = path.last() {
            if !matches!(stmt, Stmt::Noop(..)) {
                if let Some(line) = stmt.position().line() {
                    lines.insert(line);
                }
            }
        }
        true
    });
    lines
}

/// One policy's coverage.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Report {
    pub policy: String,
    pub path: String,
    pub lines: usize,
    pub covered: usize,
    /// Lines with a statement that no test reached.
    pub missed: Vec<usize>,
}

impl Report {
    pub(crate) fn new(policy: &str, path: &str, lines: &BTreeSet<usize>, hits: &BTreeSet<usize>) -> Report {
        Report {
            policy: policy.to_string(),
            path: path.to_string(),
            lines: lines.len(),
            covered: lines.intersection(hits).count(),
            missed: lines.difference(hits).copied().collect(),
        }
    }

    /// Covered share in percent, for display only (rounded down to a tenth, so a
    /// display never shows more than was covered).
    pub(crate) fn percent_tenths(&self) -> u64 {
        if self.lines == 0 {
            return 1000;
        }
        (self.covered as u64 * 1000) / self.lines as u64
    }

    /// Whether `covered / lines >= min`, exactly: `min` is compared as a fraction,
    /// never rounded in the policy's favour.
    pub(crate) fn meets(&self, min: &MinCoverage) -> bool {
        // covered / lines >= num / den  <=>  covered * den >= num * lines (all ≥ 0)
        let lhs = self.covered as u128 * min.den as u128;
        let rhs = min.num as u128 * self.lines as u128;
        self.lines == 0 || lhs >= rhs
    }
}

/// A coverage threshold in percent, kept as an exact fraction of 1: `99.5` is 995/1000.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MinCoverage {
    num: u64,
    den: u64,
}

impl MinCoverage {
    /// Parses `80`, `99.5`, `100`, `33.333`: up to 6 decimals, 0 to 100.
    pub(crate) fn parse(s: &str) -> Result<MinCoverage, String> {
        let bad = || format!("`{s}` is not a percentage between 0 and 100 (such as 90 or 99.5)");
        let s = s.trim().trim_end_matches('%');
        let (int, frac) = s.split_once('.').unwrap_or((s, ""));
        if int.is_empty()
            || int.len() > 3
            || frac.len() > 6
            || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        let den = 10u64.pow(frac.len() as u32);
        let num = int.parse::<u64>().map_err(|_| bad())? * den + frac.parse::<u64>().unwrap_or(0);
        if num > 100 * den {
            return Err(bad());
        }
        Ok(MinCoverage { num, den: den * 100 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(covered: usize, lines: usize) -> Report {
        Report {
            policy: "p".into(),
            path: "policies/p.rhai".into(),
            lines,
            covered,
            missed: Vec::new(),
        }
    }

    #[test]
    fn thresholds_compare_exactly() {
        let two_thirds = report(2, 3); // 66.666…%
        assert!(two_thirds.meets(&MinCoverage::parse("66.666").unwrap()));
        assert!(!two_thirds.meets(&MinCoverage::parse("66.667").unwrap()));
        assert!(!two_thirds.meets(&MinCoverage::parse("67").unwrap()));
        assert!(report(199, 200).meets(&MinCoverage::parse("99.5").unwrap()));
        assert!(!report(199, 200).meets(&MinCoverage::parse("99.6").unwrap()));
        assert!(!report(999, 1000).meets(&MinCoverage::parse("100").unwrap()));
        assert!(report(0, 0).meets(&MinCoverage::parse("100").unwrap()));
        assert_eq!(report(2, 3).percent_tenths(), 666);
    }

    #[test]
    fn percentages_parse_strictly() {
        for ok in ["0", "100", "99.5", "80%", "33.333333"] {
            assert!(MinCoverage::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-1", "100.1", "101", "1e2", "ninety", ".5", "33.3333333"] {
            assert!(MinCoverage::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_function_statements_count() {
        let engine = Engine::new_raw();
        let ast = engine
            .compile("const X = 1;\nfn f(x) {\n    if x > 1 {\n        return 2;\n    }\n    // comment\n    3\n}\n")
            .unwrap();
        assert_eq!(statement_lines(&ast), BTreeSet::from([3, 4, 7]));
    }
}
