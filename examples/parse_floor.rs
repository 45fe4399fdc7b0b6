//! The floor `plan` is measured against: list a store's key folder, read every file
//! and parse it into a minimal struct, on 2 threads, and nothing else.
//!
//!     cargo run --release --example parse_floor -- DIR

// Tests, benchmarks and measuring tools fail loudly on purpose: `unwrap` is their
// assert. They have no public surface, so `pub` in their modules is only for siblings.
#![allow(clippy::unwrap_used, unreachable_pub)]

use std::path::PathBuf;

#[allow(dead_code)]
#[derive(serde::Deserialize)]
struct Key {
    service: String,
    owner: String,
    permissions: Vec<String>,
    created_at: toml::value::Datetime,
    rotated_at: Option<toml::value::Datetime>,
    last_used_at: Option<toml::value::Datetime>,
    fingerprint: Option<String>,
}

fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).expect("usage: parse_floor DIR")).join("keys");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("read keys/")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    let half = paths.len().div_ceil(2);
    let parsed: usize = std::thread::scope(|s| {
        let workers: Vec<_> = paths
            .chunks(half.max(1))
            .map(|chunk| {
                s.spawn(move || {
                    chunk
                        .iter()
                        .filter(|p| {
                            let text = std::fs::read_to_string(p).unwrap_or_default();
                            toml::from_str::<Key>(&text).is_ok()
                        })
                        .count()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap_or(0)).sum()
    });
    println!("parsed {parsed} of {} key files", paths.len());
}
