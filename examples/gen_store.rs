//! Generates a deterministic, realistic key store for benchmarks:
//!
//!     cargo run --release --example gen_store -- --keys 100000 /tmp/store-100k
//!
//! N keys (a mix of services, permissions, ages, owners, allowlists, compromised,
//! revoked and grace entries), about N/20 owners, the shipped policies, one commit.
//! `--seed S` changes the data; `--stale` makes every key old enough to rotate (for
//! apply benchmarks); `--folders F` puts the keys in F team folders
//! (`keys/team-0042/…`, round robin) instead of the keys folder itself. Plan it with
//! `--now 2026-11-22T00:00:00Z`.

// Tests, benchmarks and measuring tools fail loudly on purpose: `unwrap` is their
// assert. They have no public surface, so `pub` in their modules is only for siblings.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod synth;

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut keys = 1000usize;
    let mut seed = 1u64;
    let mut stale = false;
    let mut folders = 0usize;
    let mut dir = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--keys" => keys = args.next().and_then(|v| v.parse().ok()).unwrap_or(0),
            "--seed" => seed = args.next().and_then(|v| v.parse().ok()).unwrap_or(1),
            "--stale" => stale = true,
            "--folders" => folders = args.next().and_then(|v| v.parse().ok()).unwrap_or(0),
            _ if dir.is_none() && !a.starts_with('-') => dir = Some(PathBuf::from(a)),
            _ => {
                eprintln!("usage: gen_store --keys N [--seed S] [--stale] [--folders F] DIR");
                return ExitCode::from(1);
            }
        }
    }
    let Some(dir) = dir.filter(|_| keys > 0) else {
        eprintln!("usage: gen_store --keys N [--seed S] [--stale] [--folders F] DIR");
        return ExitCode::from(1);
    };
    match generate(&dir, keys, seed, stale, folders) {
        Ok(()) => {
            println!(
                "generated {keys} keys in {} (plan with --now {})",
                dir.display(),
                synth::ANCHOR
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn generate(
    dir: &std::path::Path,
    keys: usize,
    seed: u64,
    stale: bool,
    folders: usize,
) -> Result<(), String> {
    let now = keyrot::time::Time::parse_rfc3339(synth::ANCHOR)?;
    keyrot::init::init(dir, false, now).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("owners.toml"), synth::owners(keys, seed)).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(dir.join("keys/.gitkeep"));
    for i in 0..keys {
        let (id, mut text) = synth::key(i, keys, seed);
        if stale {
            text = stale_key(&text);
        }
        let path = match folders {
            0 => format!("keys/{id}.toml"),
            f => format!("keys/team-{:04}/{id}.toml", i % f),
        };
        if i < folders {
            std::fs::create_dir_all(dir.join(&path).parent().unwrap()).map_err(|e| e.to_string())?;
        }
        std::fs::write(dir.join(path), text).map_err(|e| e.to_string())?;
    }
    let repo = git2::Repository::open(dir).map_err(|e| e.to_string())?;
    let mut index = repo.index().map_err(|e| e.to_string())?;
    index
        .add_all(["*"].iter(), git2::IndexAddOption::DEFAULT, None)
        .map_err(|e| e.to_string())?;
    index.write().map_err(|e| e.to_string())?;
    let tree = repo
        .find_tree(index.write_tree().map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let sig = git2::Signature::new("gen_store", "gen@example.com", &git2::Time::new(now.unix(), 0))
        .map_err(|e| e.to_string())?;
    let parent = repo
        .head()
        .and_then(|h| h.peel_to_commit())
        .map_err(|e| e.to_string())?;
    repo.commit(
        Some("HEAD"),
        &sig,
        &sig,
        &format!("{keys} generated keys"),
        &tree,
        &[&parent],
    )
    .map_err(|e| e.to_string())?;
    Ok(())
}

/// Every key active, compliant with everything but age: rotated a year ago.
fn stale_key(text: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with("compromised") && !l.starts_with("status") && !l.starts_with("revoke"))
        .map(|l| {
            if l.starts_with("rotated_at") {
                "rotated_at = 2025-11-01T00:00:00Z".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}
