//! `keyrot apply PLANFILE`: saved plans apply only while they are exactly what the
//! policies decide at the recorded commit and instant.

use std::fs;

use crate::common::*;
use crate::plan::every_action_store;

fn save(s: &Store) -> std::path::PathBuf {
    let file = s.root.parent().unwrap().join("plan.json");
    s.keyrot(&["plan", "--out", file.to_str().unwrap(), "--now", NOW])
        .ok();
    file
}

fn apply_file(s: &Store, file: &std::path::Path) -> Run {
    s.keyrot(&[
        "apply",
        file.to_str().unwrap(),
        "--secrets-dir",
        s.secrets.to_str().unwrap(),
    ])
}

#[test]
fn a_saved_plan_applies_and_cannot_be_replayed() {
    let s = every_action_store();
    let file = save(&s);
    apply_file(&s, &file).ok();
    assert_eq!(s.commit_count(), 3);
    assert!(s
        .git(&["log", "-1", "--format=%B"])
        .contains(&format!("Keyrot-Now: {NOW}")));
    let run = apply_file(&s, &file).fails(1);
    run.stderr_has("stale");
    run.stderr_has("already applied");
    assert_eq!(s.commit_count(), 3);
}

#[test]
fn a_plan_goes_stale_when_the_store_moves() {
    let s = every_action_store();
    let file = save(&s);
    s.write(
        "keys/another.toml",
        &key("[\"read\"]", "2026-11-01T00:00:00Z", ""),
    );
    s.commit("another key");
    let run = apply_file(&s, &file).fails(1);
    run.stderr_has("stale");
}

#[test]
fn edited_or_forged_plans_are_refused() {
    let s = every_action_store();
    let file = save(&s);
    let original: serde_json::Value = serde_json::from_str(&fs::read_to_string(&file).unwrap()).unwrap();
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let edits: Vec<(&str, Edit)> = vec![
        (
            "drop an action",
            Box::new(|p| {
                p["actions"].as_array_mut().unwrap().remove(3);
            }),
        ),
        (
            "change a reason",
            Box::new(|p| p["actions"][5]["reason"] = "because".into()),
        ),
        (
            "add a revoke",
            Box::new(|p| {
                let mut a = p["actions"][5].clone();
                a["action"] = "revoke".into();
                a.as_object_mut().unwrap().remove("grace_period");
                p["actions"].as_array_mut().unwrap().insert(5, a);
            }),
        ),
        (
            "stretch a grace period",
            Box::new(|p| p["actions"][5]["grace_period"] = "365d".into()),
        ),
        ("move now", Box::new(|p| p["now"] = "2027-06-01T00:00:00Z".into())),
        (
            "fake digest",
            Box::new(|p| p["keys_digest"] = format!("sha256:{}", "0".repeat(64)).into()),
        ),
        (
            "foreign store",
            Box::new(|p| p["store_commit"] = "0123456789abcdef0123456789abcdef01234567".into()),
        ),
        ("made dirty", Box::new(|p| p["dirty"] = true.into())),
    ];
    for (what, edit) in edits {
        let mut p = original.clone();
        edit(&mut p);
        fs::write(&file, serde_json::to_string_pretty(&p).unwrap()).unwrap();
        let run = apply_file(&s, &file).fails(1);
        assert!(
            run.stderr.contains("stale") || run.stderr.contains("plan file rejected"),
            "{what}: {}",
            run.stderr
        );
        assert_eq!(s.commit_count(), 2, "{what} must not apply");
    }
    fs::write(&file, "{ not json").unwrap();
    assert!(apply_file(&s, &file)
        .fails(1)
        .stderr
        .contains("not a keyrot plan file"));
    assert!(!s.secrets.exists() || fs::read_dir(&s.secrets).unwrap().count() == 0);
}

#[test]
fn a_plan_made_on_a_dirty_tree_is_refused() {
    let s = every_action_store();
    s.write("keys/extra.toml", &key("[\"read\"]", "2026-01-01T00:00:00Z", ""));
    let file = save(&s);
    s.remove("keys/extra.toml");
    let run = apply_file(&s, &file).fails(1);
    run.stderr_has("uncommitted changes");
}
