//! Which `config()` entries a policy reads, found in its syntax tree, so that `check`
//! can match them against the `[policy.<name>]` table in `keyrot.toml`.
//!
//! Reads are `config().name`, `config()["name"]`, and the same through a variable bound
//! to `config()` (`let cfg = config(); cfg.name`). Any other use (passing `config()` to
//! a function, indexing it with a computed name) makes the set of reads unknowable, and
//! the policy is reported as reading config dynamically.

use std::collections::{BTreeMap, BTreeSet};

use rhai::{ASTNode, Expr, Stmt, AST};

/// What a policy does with `config()`.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ConfigUse {
    /// Each entry read, with the line and column of its first read.
    pub reads: BTreeMap<String, (usize, usize)>,
    /// `config()` is used in a way whose reads cannot be listed.
    pub dynamic: bool,
}

fn is_config_call(e: &Expr) -> bool {
    matches!(e, Expr::FnCall(f, _) if f.name == "config" && f.args.is_empty())
}

/// The entry named by the right-hand side of `x.name`, `x.name.more`, `x["name"]`.
fn entry_name(rhs: &Expr) -> Option<&str> {
    match rhs {
        Expr::Property(p, _) => Some(p.2.as_str()),
        Expr::StringConstant(s, _) => Some(s.as_str()),
        Expr::Dot(x, ..) | Expr::Index(x, ..) => match &x.lhs {
            Expr::Property(p, _) => Some(p.2.as_str()),
            _ => None,
        },
        _ => None,
    }
}

fn pos(e: &Expr) -> (usize, usize) {
    let p = e.position();
    (p.line().unwrap_or(0), p.position().unwrap_or(0))
}

pub(crate) fn config_use(ast: &AST) -> ConfigUse {
    // Variables bound straight to config().
    let mut bound: BTreeSet<String> = BTreeSet::new();
    ast.walk(&mut |path: &[ASTNode]| {
        if let Some(ASTNode::Stmt(Stmt::Var(x, ..))) = path.last() {
            if is_config_call(&x.1) {
                bound.insert(x.0.name.to_string());
            }
        }
        true
    });
    let mut out = ConfigUse::default();
    ast.walk(&mut |path: &[ASTNode]| {
        let Some(ASTNode::Expr(e)) = path.last() else {
            return true;
        };
        let is_source =
            is_config_call(e) || matches!(e, Expr::Variable(v, ..) if bound.contains(v.1.as_str()));
        if !is_source {
            return true;
        }
        let parent = path.len().checked_sub(2).map(|i| &path[i]);
        match parent {
            Some(ASTNode::Expr(Expr::Dot(x, ..) | Expr::Index(x, ..))) if std::ptr::eq(&x.lhs, *e) => {
                match entry_name(&x.rhs) {
                    Some(name) => {
                        out.reads.entry(name.to_string()).or_insert_with(|| pos(&x.rhs));
                    }
                    None => out.dynamic = true,
                }
            }
            // `let cfg = config();`: its reads are found through the variable.
            Some(ASTNode::Stmt(Stmt::Var(x, ..))) if std::ptr::eq(&x.1, *e) && is_config_call(e) => {}
            _ => out.dynamic = true,
        }
        true
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reads(src: &str) -> (Vec<String>, bool) {
        let ast = rhai::Engine::new_raw().compile(src).unwrap();
        let u = config_use(&ast);
        (u.reads.into_keys().collect(), u.dynamic)
    }

    #[test]
    fn direct_and_bound_reads_are_found() {
        assert_eq!(
            reads("fn evaluate(key) { let cfg = config(); if cfg.a ?? 1 > config().b { config()[\"c\"] } else { cfg.d.e } }"),
            (vec!["a".into(), "b".into(), "c".into(), "d".into()], false)
        );
    }

    #[test]
    fn other_uses_are_dynamic() {
        assert!(reads("fn evaluate(key) { f(config()) }\nfn f(c) { c.x }").1);
        assert!(reads("fn evaluate(key) { let n = \"x\"; config()[n] }").1);
        assert!(reads("fn evaluate(key) { let c = config(); g(c) }").1);
        assert_eq!(reads("fn evaluate(key) { key.age }"), (vec![], false));
    }
}
