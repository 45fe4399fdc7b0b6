//! Measures `keyrot watch`: from a saved file to the updated plan printed.
//!
//!     cargo run --release --example watch_latency -- DIR [RUNS]
//!
//! Starts `keyrot watch` on DIR (a store from gen_store), then RUNS times edits one key
//! file, one policy file (a comment), and the same policy so that every one of its
//! findings changes, timing each save until the updated plan is printed: with
//! `--json`, the whole plan as one line (tens of megabytes at 100k keys), and in text,
//! the changes and the summary line. Prints the medians in milliseconds. The files are
//! restored afterwards.

// Tests, benchmarks and measuring tools fail loudly on purpose: `unwrap` is their
// assert. They have no public surface, so `pub` in their modules is only for siblings.
#![allow(clippy::unwrap_used, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn keyrot_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("KEYROT_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("own path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("keyrot")
}

/// Saves as editors do: a hidden temp file renamed over the original, so the watcher
/// never reads a half-written file (a plain write truncates first, and under load the
/// watcher can read the empty file in between).
fn save(path: &Path, bytes: &[u8]) {
    let name = path.file_name().unwrap().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The watcher, stopped however this program ends: left running, it would hold the
/// output pipe of whoever runs this (bench.sh's `sed`) open forever.
struct Watcher(std::process::Child);

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().expect("usage: watch_latency DIR [RUNS]"));
    let runs: usize = args.next().and_then(|r| r.parse().ok()).unwrap_or(5);
    let key = std::fs::read_dir(dir.join("keys"))
        .expect("keys/")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "toml"))
        .expect("a key file");
    let policy = dir.join("policies/max-age.rhai");
    let originals = [
        (key.clone(), std::fs::read(&key).unwrap()),
        (policy.clone(), std::fs::read(&policy).unwrap()),
    ];
    for json in [true, false] {
        let mode = if json { "--json" } else { "text" };
        let (first, edits) = measure(&dir, &key, &policy, runs, json);
        for (path, bytes) in &originals {
            save(path, bytes);
        }
        // The "after a commit" edits committed the key file: commit it back as it was.
        git(&dir, &["commit", "-q", "-a", "-m", "watch_latency: restore"]);
        println!("watch first plan ({mode}): {first:.0} ms");
        for (what, ms) in edits {
            println!("watch {what} -> plan ({mode}): {ms:.0} ms (median of {runs})");
        }
    }
}

/// Runs git in the store (failures ignored: "nothing to commit" is fine here).
fn git(dir: &Path, args: &[&str]) {
    let _ = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=bench",
            "-c",
            "user.email=bench@example.com",
            "-c",
            "gc.auto=0",
        ])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// One watcher's first plan, and the median time from a save to the updated plan.
fn measure(
    dir: &Path,
    key: &Path,
    policy: &Path,
    runs: usize,
    json: bool,
) -> (f64, Vec<(&'static str, f64)>) {
    let mut command = Command::new(keyrot_bin());
    command.arg("--store").arg(dir).arg("watch");
    if json {
        command.arg("--json");
    }
    let mut child = Watcher(
        command
            .args(["--now", "2026-11-22T00:00:00Z"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start keyrot watch"),
    );
    // Only the start of each line is looked at: turning a 20 MB line into a String
    // would time this program, not keyrot.
    let (tx, rx) = mpsc::channel();
    let out = child.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        let mut out = BufReader::with_capacity(1 << 20, out);
        let mut line = Vec::new();
        loop {
            line.clear();
            match out.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let plan = if json {
                line.starts_with(br#"{"event":"plan""#)
            } else {
                line.starts_with(b"Plan: ")
            };
            let error = json && line.starts_with(br#"{"event":"error""#);
            if plan || error {
                let head = String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned();
                let _ = tx.send((plan, head));
            }
        }
    });
    let wait = || {
        let (plan, head) = rx.recv_timeout(Duration::from_secs(120)).expect("a plan");
        assert!(plan, "expected a plan, got {head}");
    };
    let start = Instant::now();
    wait();
    let first = start.elapsed().as_secs_f64() * 1000.0;

    let mut results = Vec::new();
    let edits = [
        ("key edit", key),
        ("key edit after a commit", key),
        ("policy edit", policy),
        ("policy edit rewording every max-age finding", policy),
    ];
    for (what, path) in edits {
        let mut times = Vec::new();
        for i in 0..runs {
            let mut body = std::fs::read(path).unwrap();
            match what {
                "key edit" => body.extend_from_slice(format!("\n# {i}\n").as_bytes()),
                "key edit after a commit" => {
                    // HEAD moves (the last edit is committed) before the timed save.
                    git(dir, &["commit", "-q", "-a", "-m", "watch_latency"]);
                    body.extend_from_slice(format!("\n# after a commit {i}\n").as_bytes());
                }
                "policy edit" => body.extend_from_slice(format!("\n// {i}\n").as_bytes()),
                // Every rotate by max-age (about half the keys) gets a new reason.
                _ => {
                    let text = String::from_utf8(body).unwrap();
                    assert!(text.contains("days old"), "max-age.rhai says `days old`");
                    body = text.replace("days old", &format!("days old ({i})")).into_bytes();
                }
            }
            let t = Instant::now();
            save(path, &body);
            wait();
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        results.push((what, median(times)));
    }
    drop(child);
    (first, results)
}
