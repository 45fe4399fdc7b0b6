//! Tests of re-planning: caches, the memo, the dirty flag, seeded random edits.

use super::*;
use std::fs;

fn store() -> (tempfile::TempDir, Planner) {
    let tmp = tempfile::TempDir::new().unwrap();
    let root = tmp.path().join("s");
    crate::init::init(&root, false, Time::now()).unwrap();
    let ws = Workspace::open(&root).unwrap();
    (
        tmp,
        Planner::new(ws, Some(Time::parse_rfc3339("2026-11-22T20:00:00Z").unwrap())),
    )
}

fn write_key(p: &Planner, id: &str, rotated: &str) {
    fs::write(
        p.root().join(format!("keys/{id}.toml")),
        format!("service = \"x\"\nowner = \"a\"\npermissions = []\nip_allowlist = [\"10.0.0.1/32\"]\ncreated_at = {rotated}\nlast_used_at = 2026-11-22T00:00:00Z\n"),
    )
    .unwrap();
}

#[test]
fn the_watch_limit_error_says_how_to_raise_it() {
    let e = watch_error(
        notify::Error::new(notify::ErrorKind::MaxFilesWatch),
        Path::new("/s/keys"),
    );
    let msg = e.to_string();
    assert!(msg.contains("limit on file watches"), "{msg}");
    // What to do is the error's hint, as data: the CLI prints it on its own line.
    let hint = e.hint().unwrap_or_default();
    assert!(hint.contains("fs.inotify.max_user_watches"), "{hint}");
}

#[test]
fn relevance_follows_the_store_layout() {
    let (_tmp, p) = store();
    for yes in [
        "keyrot.toml",
        "owners.toml",
        "keys/a.toml",
        "keys/notes.txt",
        "exceptions.toml",
        "policies/x.rhai",
        "keys",
        "keys/sub",
        "keys/sub/a.toml",
        "keys/sub/deeper/a.toml",
    ] {
        assert!(p.is_relevant(yes), "{yes}");
    }
    for no in [
        "README.md",
        "keys/.a.toml.swp",
        "keys/a.toml~",
        "keys/#a.toml#",
        "keys/4913",
        "keys/a.toml.keyrot-tmp",
        "policies/notes.md",
        "policies/x_test.rhai",
        "policies/sub/x.rhai",
        "keys/sub/.a.toml.swp",
    ] {
        assert!(!p.is_relevant(no), "{no}");
    }
}

#[test]
fn a_replan_rereads_and_reparses_only_invalidated_files() {
    let (_tmp, mut p) = store();
    for i in 0..20 {
        write_key(&p, &format!("k{i:02}"), "2026-11-01T00:00:00Z");
    }
    assert!(matches!(p.replan(vec![]), Outcome::Plan { .. }));
    let first = p.cache().stats();
    let compiles = p.asts().compiles();
    assert_eq!(first.key_parses, 20);
    let shipped = crate::init::SHIPPED_POLICIES
        .iter()
        .filter(|(name, _)| !name.ends_with("_test.rhai"))
        .count();
    assert_eq!(compiles, shipped);

    write_key(&p, "k07", "2026-01-01T00:00:00Z");
    p.invalidate(Some(&["keys/k07.toml".to_string()]));
    let Outcome::Plan { diff, .. } = p.replan(vec!["keys/k07.toml".into()]) else {
        panic!("plan failed")
    };
    let stats = p.cache().stats();
    assert_eq!(stats.reads - first.reads, 1, "one file re-read");
    assert_eq!(stats.key_parses - first.key_parses, 1, "one file re-parsed");
    assert_eq!(p.asts().compiles(), compiles, "no policy recompiled");
    let diff = diff.unwrap();
    assert_eq!(diff.added.len(), 1);
    assert_eq!(&*diff.added[0].key, "k07");
    // Its owner's key count is unchanged: no other key is even looked at.
    assert_eq!(p.evaluations(), (shipped, 0), "only the edited key re-evaluated");

    fs::write(p.root().join("policies/max-age.rhai"), "fn evaluate(key) { }").unwrap();
    p.invalidate(Some(&["policies/max-age.rhai".to_string()]));
    assert!(matches!(p.replan(vec![]), Outcome::Plan { .. }));
    assert_eq!(
        p.asts().compiles(),
        compiles + 1,
        "only the edited policy recompiled"
    );
    assert_eq!(
        p.evaluations(),
        (20, 20 * (shipped - 1)),
        "only the edited policy re-evaluated"
    );
}

/// The dirty flag, kept from the paths each batch names, matches a full status.
#[test]
fn the_dirty_flag_follows_edits_reverts_and_commits() {
    let (_tmp, mut p) = store();
    let replan = |p: &mut Planner, path: &str| -> bool {
        let changed = [path.to_string()];
        p.invalidate(Some(&changed));
        match p.replan(changed.to_vec()) {
            Outcome::Plan { plan, .. } => plan.dirty,
            Outcome::Failed { error, .. } => panic!("{error}"),
        }
    };
    let Outcome::Plan { plan, .. } = p.replan(vec![]) else {
        panic!()
    };
    assert!(!plan.dirty);
    write_key(&p, "a", "2026-11-01T00:00:00Z");
    assert!(replan(&mut p, "keys/a.toml"), "a new key file is uncommitted");
    let policy = p.root().join("policies/idle.rhai");
    let original = fs::read(&policy).unwrap();
    fs::write(&policy, "fn evaluate(key) { }").unwrap();
    assert!(replan(&mut p, "policies/idle.rhai"));
    fs::remove_file(p.root().join("keys/a.toml")).unwrap();
    assert!(replan(&mut p, "keys/a.toml"), "the policy is still edited");
    fs::write(&policy, &original).unwrap();
    assert!(!replan(&mut p, "policies/idle.rhai"), "back to HEAD");
    // A commit moves HEAD: the next re-plan compares everything again, not just
    // the paths it names.
    fs::write(&policy, "fn evaluate(key) { }").unwrap();
    assert!(replan(&mut p, "policies/idle.rhai"));
    let git = |args: &[&str]| {
        let ok = std::process::Command::new("git")
            .current_dir(p.root())
            .args(["-c", "user.name=t", "-c", "user.email=t@t"])
            .args(args)
            .status()
            .unwrap()
            .success();
        assert!(ok, "git {args:?}");
    };
    git(&["add", "-A"]);
    git(&["commit", "-qm", "b"]);
    assert!(!replan(&mut p, "keys/b.toml"));
}

/// Plans through the memo are the plans a full evaluation gives, edit after edit.
#[test]
fn memoised_replans_equal_full_plans() {
    let (_tmp, mut p) = store();
    let now = Time::parse_rfc3339("2026-11-22T20:00:00Z").unwrap();
    let full = |p: &Planner| {
        Workspace::open(p.root())
            .unwrap()
            .plan_worktree(now, None)
            .unwrap()
            .plan
    };
    for i in 0..8 {
        write_key(&p, &format!("k{i}"), "2026-11-01T00:00:00Z");
    }
    let edits: [(&str, &str); 6] = [
        ("keys/k3.toml", "service = \"x\"\nowner = \"a\"\npermissions = [\"withdraw\"]\ncreated_at = 2026-01-01T00:00:00Z\n"),
        ("owners.toml", "[a]\nstatus = \"departed\"\n"),
        ("keys/k9.toml", "service = \"x\"\nowner = \"a\"\npermissions = []\ncreated_at = 2026-11-01T00:00:00Z\nlast_used_at = 2026-11-20T00:00:00Z\n"),
        ("policies/key-cap.rhai", "fn evaluate(key) { if key.owner_key_count > 8 { warn(\"many\") } }"),
        ("keyrot.toml", "[policy.idle]\nmax_idle_days = 5\n"),
        ("keys/k1.toml", "service = \"x\"\nowner = \"b\"\npermissions = []\ncreated_at = 2026-11-01T00:00:00Z\nlast_used_at = 2026-11-22T00:00:00Z\n"),
    ];
    let Outcome::Plan { plan, .. } = p.replan(vec![]) else {
        panic!()
    };
    assert_eq!(plan.actions, full(&p).actions);
    for (path, text) in edits {
        fs::write(p.root().join(path), text).unwrap();
        let changed = [path.to_string()];
        p.invalidate(if path.contains('/') { Some(&changed) } else { None });
        let Outcome::Plan { plan, .. } = p.replan(vec![path.to_string()]) else {
            panic!("{path}: plan failed")
        };
        assert_eq!(plan.actions, full(&p).actions, "after editing {path}");
    }
}

/// A small seeded generator: the edit sequences must be the same on every run.
struct XorShift(u64);

impl rand::TryRng for XorShift {
    type Error = std::convert::Infallible;

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Ok(self.0)
    }
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        Ok((self.try_next_u64()? >> 32) as u32)
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        for b in dst {
            *b = self.try_next_u32()? as u8;
        }
        Ok(())
    }
}

/// A policy whose findings name the owner's key count, so that every change of a
/// count changes the plan of each of the owner's keys.
fn count_policy(limit: i64) -> String {
    format!(
        "fn evaluate(key) {{ let out = []; if key.owner_key_count > {limit} {{ out.push(warn(`${{key.owner_key_count}} keys`)) }} if key.age > days({limit}) {{ out.push(rotate(\"old\")) }} out }}"
    )
}

/// The folders the random edits put keys in: the keys folder, team folders, one inside
/// another.
const FOLDERS: [&str; 4] = ["keys", "keys/team", "keys/team/bots", "keys/crew"];

/// A seeded random edit of a small store: keys (every field that matters, added,
/// removed, broken, renamed, moved between team folders, with duplicate ids), team
/// folders renamed and removed whole, owners, exceptions, policies and stray files.
fn random_edit(rng: &mut impl rand::RngExt, root: &Path) -> Vec<String> {
    let pick = |rng: &mut dyn rand::Rng, list: &[&'static str]| list[rng.next_u32() as usize % list.len()];
    let write = |rel: &str, text: String| {
        fs::create_dir_all(root.join(rel).parent().unwrap()).unwrap();
        fs::write(root.join(rel), text).unwrap()
    };
    // Broken files are mended soon, as people do: most plans should succeed.
    if rng.random_bool(0.5) {
        if root.join("keys/notes.txt").exists() {
            fs::remove_file(root.join("keys/notes.txt")).unwrap();
            return vec!["keys/notes.txt".into()];
        }
        for i in 0..12 {
            let mut found = FOLDERS
                .iter()
                .map(|f| format!("{f}/k{i}.toml"))
                .filter(|rel| root.join(rel).exists());
            let (Some(first), second) = (found.next(), found.next()) else {
                continue;
            };
            let broken = fs::read(root.join(&first)).is_ok_and(|b| b.ends_with(b"owner = "));
            // A broken file, or the second file of one id.
            if let Some(rel) = second.or(broken.then_some(first)) {
                fs::remove_file(root.join(&rel)).unwrap();
                return vec![rel];
            }
        }
    }
    let id = format!("k{}", rng.random_range(0..12));
    let path = format!("{}/{id}.toml", pick(rng, &FOLDERS));
    match rng.random_range(0..17) {
        0..=4 => {
            let owner = pick(rng, &["a", "b", "c", "gone"]);
            let status = pick(rng, &["active", "active", "active", "revoked"]);
            let perms = pick(
                rng,
                &["[]", "[\"read\"]", "[\"withdraw\"]", "[\"read\", \"withdraw\"]"],
            );
            let allow = pick(rng, &["[]", "[\"10.0.0.1/32\"]"]);
            let rotated = pick(
                rng,
                &[
                    "2026-11-21T00:00:00Z",
                    "2026-10-01T00:00:00Z",
                    "2026-01-01T00:00:00Z",
                ],
            );
            let used = pick(
                rng,
                &[
                    "",
                    "last_used_at = 2026-11-22T00:00:00Z\n",
                    "last_used_at = 2026-06-01T00:00:00Z\n",
                ],
            );
            let compromised = pick(rng, &["false", "false", "false", "true"]);
            let revoked = if status == "revoked" {
                "revoked_at = 2026-11-01T00:00:00Z\n"
            } else {
                ""
            };
            write(&path, format!(
                "service = \"x\"\nowner = \"{owner}\"\nstatus = \"{status}\"\npermissions = {perms}\nip_allowlist = {allow}\ncreated_at = 2025-01-01T00:00:00Z\nrotated_at = {rotated}\n{used}compromised = {compromised}\n{revoked}"
            ));
            vec![path]
        }
        5 => {
            let _ = fs::remove_file(root.join(&path));
            vec![path]
        }
        6 => {
            write(&path, "service = \"x\"\nowner = ".into());
            vec![path]
        }
        7 => {
            let to = format!("{}/k{}.toml", pick(rng, &FOLDERS), rng.random_range(0..12));
            fs::create_dir_all(root.join(&to).parent().unwrap()).unwrap();
            let _ = fs::rename(root.join(&path), root.join(&to));
            vec![path, to]
        }
        14 if root.join("keys/team").exists() && root.join("keys/crew").exists() => {
            // Two team folders swapped: the watcher names the folders, not the keys,
            // and the keys read at one folder's paths are now the other's.
            fs::rename(root.join("keys/team"), root.join("keys/swap")).unwrap();
            fs::rename(root.join("keys/crew"), root.join("keys/team")).unwrap();
            fs::rename(root.join("keys/swap"), root.join("keys/crew")).unwrap();
            vec!["keys/team".into(), "keys/swap".into(), "keys/crew".into()]
        }
        14 => {
            // A team folder renamed.
            let (from, to) = match root.join("keys/team").exists() {
                true => ("keys/team", "keys/crew/team"),
                false => ("keys/crew/team", "keys/team"),
            };
            fs::create_dir_all(root.join("keys/crew")).unwrap();
            let _ = fs::rename(root.join(from), root.join(to));
            vec![from.into(), to.into()]
        }
        15 => {
            // A team folder removed with its keys: one event, for the folder.
            let dir = pick(rng, &["keys/team/bots", "keys/crew"]);
            let _ = fs::remove_dir_all(root.join(dir));
            vec![dir.into()]
        }
        16 => {
            // A key moved between folders in one step.
            let to = format!("{}/{id}.toml", pick(rng, &FOLDERS));
            fs::create_dir_all(root.join(&to).parent().unwrap()).unwrap();
            let _ = fs::rename(root.join(&path), root.join(&to));
            vec![path, to]
        }
        8 => {
            let team = pick(rng, &["red", "blue"]);
            let b = pick(rng, &["active", "departed"]);
            write(
                "owners.toml",
                format!("[a]\nteam = \"{team}\"\n[b]\nstatus = \"{b}\"\n[c]\n"),
            );
            vec!["owners.toml".into()]
        }
        9 => {
            let policy = pick(rng, &["idle", "least-privilege", "max-age"]);
            write(
                "exceptions.toml",
                format!("[[exception]]\nkey = \"{id}\"\npolicy = \"{policy}\"\nreason = \"r\"\napproved_by = \"x\"\nexpires = 2026-12-01\n"),
            );
            vec!["exceptions.toml".into()]
        }
        10 => {
            let limit = rng.random_range(1..4);
            let policy = pick(rng, &["policies/key-cap.rhai", "policies/extra.rhai"]);
            write(policy, count_policy(limit));
            vec![policy.into()]
        }
        11 => {
            // A commit of everything: HEAD moves, no file changes.
            commit_all(root);
            vec![]
        }
        12 => {
            // `git reset --soft HEAD~`: HEAD moves back, index and files stay, so what
            // the last commit held is uncommitted again.
            let repo = git2::Repository::open(root).unwrap();
            let head = repo.head().unwrap().peel_to_commit().unwrap();
            if let Ok(parent) = head.parent(0) {
                repo.reset(parent.as_object(), git2::ResetType::Soft, None)
                    .unwrap();
            }
            vec![]
        }
        _ => {
            write("keys/notes.txt", "hello".into());
            vec!["keys/notes.txt".into()]
        }
    }
}

fn commit_all(root: &Path) {
    crate::store::repo::testing::commit_all(&git2::Repository::open(root).unwrap());
}

/// Plans patched in place, edit after edit, are the plans `keyrot plan` makes of
/// the same files: actions, summary, digests, dirty flag; each diff is the
/// difference between the two full plans; and the JSON line patched with each diff
/// is the full plan's JSON.
#[test]
fn live_replans_equal_full_plans_edit_after_edit() {
    for seed in 1..5u64 {
        let (_tmp, mut p) = store();
        let now = p.fixed_now.unwrap();
        let full = |p: &Planner| {
            Workspace::open(p.root())
                .unwrap()
                .plan_worktree(now, None)
                .map(|w| (w.plan, w.dirty))
        };
        let mut rng = XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        fs::write(p.root().join("policies/key-cap.rhai"), count_policy(1)).unwrap();
        let Outcome::Plan { plan, .. } = p.replan(vec![]) else {
            panic!("first plan failed")
        };
        let mut last_good = (*plan).clone();
        // What `watch --json` prints, patched key by key.
        let mut line = crate::plan_line::PlanLine::default();
        let print = |line: &mut crate::plan_line::PlanLine, plan: &Plan, diff: Option<&PlanDiff>| {
            let mut out = Vec::new();
            line.write(plan, diff, &mut out).unwrap();
            String::from_utf8(out).unwrap()
        };
        print(&mut line, &plan, None);
        let (mut plans, mut failures) = (0, 0);
        for step in 0..60 {
            let changed = random_edit(&mut rng, p.root());
            p.invalidate(Some(&changed));
            let outcome = p.replan(changed.clone());
            let expected = full(&p);
            match (outcome, expected) {
                (Outcome::Plan { plan, diff, .. }, Ok((want, _))) => {
                    assert_eq!(*plan, want, "seed {seed}, step {step}: after {changed:?}");
                    let diff = diff.unwrap();
                    let json = print(&mut line, &plan, Some(&diff));
                    assert_eq!(
                        json,
                        serde_json::to_string(&want).unwrap(),
                        "seed {seed}, step {step}"
                    );
                    let want_diff = PlanDiff::between(&last_good, &want);
                    let sorted = |mut v: Vec<crate::plan::Action>| {
                        v.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
                        v
                    };
                    assert_eq!(
                        sorted(diff.added),
                        sorted(want_diff.added),
                        "seed {seed}, step {step}"
                    );
                    assert_eq!(
                        sorted(diff.removed),
                        sorted(want_diff.removed),
                        "seed {seed}, step {step}"
                    );
                    last_good = want;
                    plans += 1;
                }
                (Outcome::Failed { error, .. }, Err(want)) => {
                    assert_eq!(error.to_string(), want.to_string(), "seed {seed}, step {step}");
                    failures += 1;
                }
                (Outcome::Plan { .. }, Err(e)) => {
                    panic!("seed {seed}, step {step}: planned, but plan fails: {e}")
                }
                (Outcome::Failed { error, .. }, Ok(_)) => {
                    panic!("seed {seed}, step {step}: failed, but plan works: {error}")
                }
            }
        }
        assert!(
            plans > 20 && failures > 3,
            "seed {seed}: {plans} plans, {failures} failures"
        );
    }
}

#[test]
fn saves_between_the_first_load_and_the_watches_are_found_by_stat() {
    let (_tmp, mut p) = store();
    write_key(&p, "a", "2026-11-01T00:00:00Z");
    write_key(&p, "b", "2026-11-01T00:00:00Z");
    assert!(matches!(p.replan(vec![]), Outcome::Plan { .. }));
    assert!(p.changed_since_load().is_empty(), "nothing changed yet");
    // An edit (different size), a deletion, a new key and a new policy.
    fs::write(p.root().join("keys/a.toml"), "# edited\n").unwrap();
    fs::remove_file(p.root().join("keys/b.toml")).unwrap();
    write_key(&p, "c", "2026-11-01T00:00:00Z");
    fs::write(p.root().join("policies/new.rhai"), "fn evaluate(key) { }").unwrap();
    fs::write(p.root().join("policies/new_test.rhai"), "fn test_x() { }").unwrap();
    let mut got = p.changed_since_load();
    got.sort();
    assert_eq!(
        got,
        ["keys/a.toml", "keys/b.toml", "keys/c.toml", "policies/new.rhai"]
    );
}

#[test]
fn a_bad_edit_fails_and_the_next_good_one_diffs_against_the_last_good_plan() {
    let (_tmp, mut p) = store();
    write_key(&p, "a", "2026-11-01T00:00:00Z");
    assert!(matches!(p.replan(vec![]), Outcome::Plan { .. }));
    fs::write(p.root().join("policies/bad.rhai"), "fn evaluate(key) {").unwrap();
    p.invalidate(None);
    assert!(matches!(p.replan(vec![]), Outcome::Failed { .. }));
    fs::write(
        p.root().join("policies/bad.rhai"),
        "fn evaluate(key) { warn(\"hi\") }",
    )
    .unwrap();
    p.invalidate(None);
    let Outcome::Plan { diff, .. } = p.replan(vec![]) else {
        panic!()
    };
    assert_eq!(diff.unwrap().added.len(), 1);
}
