//! Micro-benchmarks of the hot paths: `cargo bench`. Whole-command timings against the
//! read-and-parse floor are in `examples/bench.sh`; results in BENCHMARKS.md.

// Tests, benchmarks and measuring tools fail loudly on purpose: `unwrap` is their
// assert. They have no public surface, so `pub` in their modules is only for siblings.
#![allow(clippy::unwrap_used, unreachable_pub)]

#[path = "../examples/synth/mod.rs"]
mod synth;

use std::sync::Arc;

use keyrot::policy::{KeyView, PolicySet};
use keyrot::store::{key, FileEntry, Settings};
use keyrot::time::Time;

const KEYS: usize = 1000;

fn main() {
    divan::main();
}

fn now() -> Time {
    Time::parse_rfc3339(synth::ANCHOR).unwrap()
}

fn shipped() -> Vec<FileEntry> {
    keyrot::init::SHIPPED_POLICIES
        .iter()
        .filter(|(name, _)| !name.ends_with(keyrot::store::layout::TEST_SUFFIX))
        .map(|(name, src)| FileEntry {
            path: format!("policies/{name}"),
            bytes: src.as_bytes().into(),
        })
        .collect()
}

fn views() -> Vec<KeyView> {
    (0..KEYS)
        .map(|i| {
            let (id, text) = synth::key(i, KEYS, 1);
            let k = key::parse(&format!("keys/{id}.toml"), &text).unwrap();
            KeyView::new(Arc::new(k), None, 7, now())
        })
        .collect()
}

/// Evaluates keys in turn against `policies`, as one planning thread does.
fn bench_evaluation(b: divan::Bencher, policies: &[FileEntry]) {
    let (set, problems) = PolicySet::compile(policies, &Settings::default(), now());
    assert!(problems.is_empty(), "{problems:?}");
    let views = views();
    let mut evaluator = set.evaluator();
    let mut i = 0;
    b.bench_local(|| {
        i = (i + 1) % views.len();
        evaluator.evaluate(&views[i]).unwrap()
    });
}

/// One key through the six shipped policies (divide by 6 for one evaluation).
#[divan::bench]
fn evaluate_six_shipped_policies(b: divan::Bencher) {
    bench_evaluation(b, &shipped());
}

/// One key through a user's policy that is not one of the shipped six.
#[divan::bench]
fn evaluate_a_users_policy(b: divan::Bencher) {
    let user = FileEntry {
        path: "policies/partner.rhai".into(),
        bytes: br#"
fn evaluate(key) {
    if !key.has_tag("partner") { return; }
    let found = [];
    if key.age > days(30) { found.push(rotate("partner key older than 30 days", days(7))); }
    if key.environment == "production" && key.owner_team == () { found.push(warn("no team")); }
    found
}"#
        .as_slice()
        .into(),
    };
    bench_evaluation(b, &[user]);
}

/// Parsing and validating one key file.
#[divan::bench]
fn parse_key_file(b: divan::Bencher) {
    let files: Vec<(String, String)> = (0..KEYS).map(|i| synth::key(i, KEYS, 1)).collect();
    let mut i = 0;
    b.bench_local(|| {
        i = (i + 1) % files.len();
        key::parse(&format!("keys/{}.toml", files[i].0), &files[i].1).unwrap()
    });
}

/// Compiling the six shipped policies (once per run; per save in `watch`).
#[divan::bench]
fn compile_shipped_policies(b: divan::Bencher) {
    let files = shipped();
    b.bench_local(|| PolicySet::compile(&files, &Settings::default(), now()));
}

/// One key through each shipped policy alone: what one call costs at the least
/// (`compromised` reads one field) and what each policy's body adds.
#[divan::bench(args = ["compromised", "departed-owner", "idle", "key-cap", "least-privilege", "max-age"])]
fn evaluate_each_shipped_policy(b: divan::Bencher, name: &str) {
    let path = format!("policies/{name}.rhai");
    let files: Vec<FileEntry> = shipped().into_iter().filter(|f| f.path == path).collect();
    assert_eq!(files.len(), 1, "{path}");
    bench_evaluation(b, &files);
}
