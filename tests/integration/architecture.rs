//! The code's shape, checked as the README's architecture map describes it: no two
//! top-level modules under `src/` import each other, even through others (data flows
//! one way: key file → load → evaluate → plan → apply → commit), and no source file
//! outgrows what a newcomer can hold (unit tests apart).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `src/`, with its top-level module (`store` for
/// `src/store/files.rs`, `plan_line` for `src/plan_line.rs`).
fn sources() -> Vec<(String, PathBuf)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    let mut folders = vec![src.clone()];
    while let Some(dir) = folders.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(&src).unwrap();
                let first = rel.components().next().unwrap().as_os_str().to_string_lossy();
                out.push((first.trim_end_matches(".rs").to_string(), path));
            }
        }
    }
    out.sort();
    out
}

/// The code of a file without its unit tests and comments: what it imports.
fn code(path: &Path) -> Option<String> {
    if path.file_name().is_some_and(|n| n == "tests.rs") {
        return None;
    }
    let text = std::fs::read_to_string(path).unwrap();
    let code = text.split("\n#[cfg(test)]\nmod tests").next().unwrap_or(&text);
    Some(
        code.lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

/// Which top-level modules each one names as `crate::<module>`.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, path) in sources() {
        if module == "main" || module == "lib" {
            continue;
        }
        let Some(code) = code(&path) else { continue };
        for (i, _) in code.match_indices("crate::") {
            let name: String = code[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && name != module {
                edges.entry(module.clone()).or_default().insert(name);
            }
        }
    }
    edges
}

/// A path from `from` back to itself through `edges`, if there is one.
fn cycle_through(from: &str, edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    let mut stack = vec![vec![from.to_string()]];
    let mut seen = BTreeSet::new();
    while let Some(path) = stack.pop() {
        let last = path.last().unwrap();
        for next in edges.get(last).into_iter().flatten() {
            if next == from {
                let mut cycle = path.clone();
                cycle.push(from.to_string());
                return Some(cycle);
            }
            if seen.insert(next.clone()) {
                let mut longer = path.clone();
                longer.push(next.clone());
                stack.push(longer);
            }
        }
    }
    None
}

#[test]
fn no_module_imports_itself_through_others() {
    let edges = imports();
    // The check sees the edges it should: the apply path imports the plan and the store.
    assert!(
        edges["apply"].contains("plan") && edges["plan"].contains("store"),
        "{edges:?}"
    );
    let cycles: Vec<String> = edges
        .keys()
        .filter_map(|m| cycle_through(m, &edges))
        .map(|c| c.join(" → "))
        .collect();
    assert!(
        cycles.is_empty(),
        "import cycles between modules:\n{}",
        cycles.join("\n")
    );
}

#[test]
fn no_source_file_outgrows_about_600_lines() {
    let long: Vec<String> = sources()
        .into_iter()
        .filter_map(|(_, path)| {
            let lines = code(&path)?.lines().count();
            (lines > 620).then(|| format!("{}: {lines} lines", path.display()))
        })
        .collect();
    assert!(long.is_empty(), "split these by concern:\n{}", long.join("\n"));
}

/// The library's errors are typed by concern, each with its location and hint as data;
/// `Error::Usage(String)` is for the command line's own mistakes, made in `src/cli/`.
#[test]
fn only_the_cli_makes_usage_errors() {
    let found: Vec<String> = sources()
        .into_iter()
        .filter(|(module, _)| module != "cli")
        .filter_map(|(_, path)| {
            let code = code(&path)?;
            code.contains("Error::Usage(").then(|| path.display().to_string())
        })
        .collect();
    assert!(found.is_empty(), "Error::Usage outside src/cli/: {found:?}");
}
