//! Measures `keyrot watch`: from a saved file to the updated plan printed.
//!
//!     cargo run --release --example watch_latency -- DIR [RUNS]
//!
//! Starts `keyrot watch --json` on DIR (a store from gen_store), then RUNS times edits
//! one key file and one policy file, timing each save until the next plan line. Prints
//! the medians in milliseconds. The files are restored afterwards.

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

    let mut child = Watcher(
        Command::new(keyrot_bin())
            .arg("--store")
            .arg(&dir)
            .args(["watch", "--json", "--now", "2026-11-22T00:00:00Z"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start keyrot watch"),
    );
    let (tx, rx) = mpsc::channel();
    let out = child.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let wait = || rx.recv_timeout(Duration::from_secs(120)).expect("a plan line");
    let start = Instant::now();
    wait();
    println!(
        "watch first plan: {:.0} ms",
        start.elapsed().as_secs_f64() * 1000.0
    );

    let mut results = Vec::new();
    for (what, path) in [("key edit", &key), ("policy edit", &policy)] {
        let mut times = Vec::new();
        for i in 0..runs {
            let mut body = std::fs::read(path).unwrap();
            body.extend_from_slice(
                format!("\n// {i}\n")
                    .replace("//", if what == "key edit" { "#" } else { "//" })
                    .as_bytes(),
            );
            let t = Instant::now();
            save(path, &body);
            let line = wait();
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            assert!(line.contains("\"event\":\"plan\""), "{line}");
        }
        results.push((what, median(times)));
    }
    for (path, bytes) in &originals {
        save(path, bytes);
    }
    drop(child);
    for (what, ms) in results {
        println!("watch {what} -> plan: {ms:.0} ms (median of {runs})");
    }
}
