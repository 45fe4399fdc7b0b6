//! The store's repository stays small by itself: past a threshold of loose objects,
//! a command that commits has git pack them; `[store] maintenance = false` turns it
//! off; a crash while packing loses nothing.

use std::fs;
use std::process::Command;

use crate::common::*;

/// `git count-objects -v` as (loose objects, packs).
fn objects(s: &Store) -> (u64, u64) {
    let out = s.git(&["count-objects", "-v"]);
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().parse::<u64>().unwrap())
            .unwrap()
    };
    (field("count:"), field("packs:"))
}

/// The loose objects' size on disk, in KiB (`git count-objects -v`'s `size`).
fn loose_kib(s: &Store) -> u64 {
    let out = s.git(&["count-objects", "-v"]);
    out.lines()
        .find_map(|l| l.strip_prefix("size:"))
        .map(|v| v.trim().parse::<u64>().unwrap())
        .unwrap()
}

/// Writes `n` loose objects of 9 MiB of random bytes each (past the 8 MiB threshold),
/// not reachable from any commit; returns their ids.
fn bulk(s: &Store, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let path = s.path(&format!("../bulk{i}"));
            let out = Command::new("head")
                .args(["-c", "9437184", "/dev/urandom"])
                .output()
                .unwrap();
            fs::write(&path, out.stdout).unwrap();
            s.git(&["hash-object", "-w", path.to_str().unwrap()])
                .trim()
                .to_string()
        })
        .collect()
}

/// A store with one key due for rotation, and history to keep.
fn due_store() -> Store {
    Store::with_keys(&[("old", &key("[\"read\"]", "2026-07-01T00:00:00Z", ""))])
}

#[test]
fn loose_objects_past_the_threshold_are_packed_after_an_apply() {
    let s = due_store();
    let ids = bulk(&s, 1);
    let (loose, _) = objects(&s);
    assert!(loose > 1);

    let applied = s.apply().ok();
    applied.stderr_has("note: packed");
    let (loose, packs) = objects(&s);
    assert_eq!(loose, 0, "every loose object packed");
    assert!(packs >= 1);
    s.assert_fsck_clean();
    // Everything is still there: history, the packed objects, the apply's commit.
    s.git(&["cat-file", "-e", &ids[0]]);
    s.keyrot(&["log", "old"]).ok().stdout_has("rotate");
    s.keyrot(&["audit", "verify"]).ok();

    // Below the threshold, nothing to do: the next apply commits and packs nothing.
    s.append("keys/old.toml", "compromised = true\n");
    s.commit("leaked");
    let again = s.apply().ok();
    again.stdout_has("1 revoke");
    assert!(!again.stderr.contains("packed"), "{}", again.stderr);
    assert!(objects(&s).0 > 0);
}

#[test]
fn maintenance_can_be_turned_off() {
    let s = due_store();
    let settings = s
        .read("keyrot.toml")
        .replace("maintenance = true", "maintenance = false");
    assert!(
        settings.contains("maintenance = false"),
        "the template shows the setting"
    );
    s.write("keyrot.toml", &settings);
    s.commit("no maintenance");
    bulk(&s, 1);
    let before = objects(&s);
    let applied = s.apply().ok();
    assert!(!applied.stderr.contains("packed"), "{}", applied.stderr);
    let (loose, packs) = objects(&s);
    assert!(loose > before.0, "the apply's objects are loose, the bulk too");
    assert_eq!(packs, before.1);

    // A bad value is named with its line.
    s.write("keyrot.toml", "[store]\nmaintenance = \"yes\"\n");
    s.keyrot(&["check"]).fails(1).stderr_has("keyrot.toml:2:");
}

#[test]
fn other_commits_are_followed_by_maintenance_too() {
    let s = due_store();
    bulk(&s, 1);
    s.keyrot(&["owner", "depart", "alice", "--at", "2026-11-20T00:00:00Z"])
        .ok()
        .stderr_has("note: packed");
    assert_eq!(objects(&s).0, 0);
}

/// The process ids of `pid`'s descendants (git and the programs it runs).
fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let children = Command::new("ps")
            .args(["-o", "pid=", "--ppid", &p.to_string()])
            .output()
            .unwrap();
        for c in String::from_utf8_lossy(&children.stdout).split_whitespace() {
            let c: u32 = c.parse().unwrap();
            out.push(c);
            todo.push(c);
        }
    }
    out
}

/// When the test kills the packing apply.
#[derive(Clone, Copy, Debug)]
enum Moment {
    /// This long after keyrot announced the packing.
    After(u64),
    /// As soon as the new pack is in place (git then deletes what it replaces).
    PackInPlace,
}

#[test]
fn a_crash_while_packing_loses_nothing() {
    for moment in [Moment::After(0), Moment::After(300), Moment::PackInPlace] {
        let s = due_store();
        let ids = bulk(&s, 2);
        let mut live = s.spawn_apply(&[("KEYROT_TEST_PAUSE", "maintenance-repack:1")]);
        live.wait_for(true, "the packing", |l| {
            l.starts_with("failpoint maintenance-repack")
        });
        match moment {
            Moment::After(ms) => std::thread::sleep(std::time::Duration::from_millis(ms)),
            Moment::PackInPlace => {
                let packs = s.path(".git/objects/pack");
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
                while !fs::read_dir(&packs)
                    .is_ok_and(|mut d| d.any(|e| e.unwrap().file_name().to_string_lossy().ends_with(".pack")))
                {
                    assert!(std::time::Instant::now() < deadline, "no pack appeared");
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
            }
        }
        // keyrot and git with it (git runs pack-objects and prune-packed).
        let pid = live.pid();
        let mut victims = descendants(pid);
        victims.push(pid);
        for v in victims {
            let _ = Command::new("kill").args(["-KILL", &v.to_string()]).status();
        }
        live.wait_exit();
        if let Moment::PackInPlace = moment {
            assert_eq!(objects(&s).1, 1, "killed with the pack in place");
        }

        // The apply had committed before packing: it stands, and every object is there.
        s.assert_fsck_clean();
        assert!(
            s.git(&["log", "-1", "--format=%s"]).starts_with("keyrot apply"),
            "{moment:?}"
        );
        for id in &ids {
            s.git(&["cat-file", "-e", id]);
        }
        // The next commit packs what is still loose, if it is still past the threshold.
        s.append("keys/old.toml", "# after the crash\n");
        s.commit("after the crash");
        s.keyrot(&["owner", "depart", "alice", "--at", "2026-11-20T00:00:00Z"])
            .ok();
        s.assert_fsck_clean();
        assert!(
            loose_kib(&s) < 8 * 1024,
            "{moment:?}: loose objects left past the threshold"
        );
        for id in &ids {
            s.git(&["cat-file", "-e", id]);
        }
    }
}

#[test]
fn a_large_apply_packs_exactly_its_own_objects() {
    // 100 keys to rotate (a large apply writes a pack), 300 that stay as they are.
    let due = key("[\"read\"]", "2026-07-01T00:00:00Z", "");
    let fine = key("[\"read\"]", "2026-11-01T00:00:00Z", "");
    let mut keys: Vec<(String, &str)> = (0..100).map(|i| (format!("due{i:03}"), due.as_str())).collect();
    keys.extend((0..300).map(|i| (format!("fine{i:03}"), fine.as_str())));
    let refs: Vec<(&str, &str)> = keys.iter().map(|(id, body)| (id.as_str(), *body)).collect();
    let s = Store::with_keys(&refs);
    assert_eq!(objects(&s).1, 0, "no pack before");
    s.apply().ok().stdout_has("100 rotate");
    let out = s.git(&["count-objects", "-v"]);
    let in_pack: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("in-pack:"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap();
    // The 100 new key files, the keys tree, the root tree and the commit: not the 300
    // unchanged keys, nor the policies.
    assert_eq!(in_pack, 103, "{out}");
    s.assert_fsck_clean();
}
