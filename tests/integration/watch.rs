//! `keyrot watch`: the real binary, real file changes, output awaited with deadlines.

use std::fs;

use crate::common::*;

fn store() -> Store {
    Store::with_keys(&[
        (
            "bot",
            &key("[\"read\"]", "2026-11-01T00:00:00Z", "tags = [\"bot\"]\n"),
        ),
        ("svc", &key("[\"read\"]", "2026-11-01T00:00:00Z", "")),
    ])
}

fn from_policy(plan: &serde_json::Value, policy: &str) -> Vec<String> {
    plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["policy"] == policy)
        .map(|a| format!("{} {}", a["key"].as_str().unwrap(), a["action"].as_str().unwrap()))
        .collect()
}

const BOTS: &str = "fn evaluate(key) { if key.has_tag(\"bot\") { warn(\"bots are watched\") } }\n";

#[test]
fn watch_follows_new_edited_renamed_broken_fixed_and_deleted_policies() {
    let s = store();
    let mut live = s.spawn(&["watch", "--json", "--now", NOW], &[]);
    let first = live.next_event("plan");
    assert!(from_policy(&first["plan"], "bots").is_empty());

    // A new policy.
    s.write("policies/bots.rhai", BOTS);
    live.plan_where("the new policy", |p| from_policy(p, "bots") == ["bot warn"]);

    // An edit in place.
    s.write(
        "policies/bots.rhai",
        &BOTS.replace("warn(\"bots are watched\")", "revoke(\"no bots\")"),
    );
    live.plan_where("the edited policy", |p| from_policy(p, "bots") == ["bot revoke"]);

    // An editor-style save: write a temp file, rename it over the original.
    s.write("policies/.bots.rhai.swp", "garbage that is never read {");
    s.write(
        "policies/bots.rhai.tmp",
        &BOTS.replace("has_tag(\"bot\")", "id == \"svc\""),
    );
    fs::rename(s.path("policies/bots.rhai.tmp"), s.path("policies/bots.rhai")).unwrap();
    live.plan_where("the renamed-over policy", |p| {
        from_policy(p, "bots") == ["svc warn"]
    });

    // A broken save is reported with its position; the watcher lives on.
    s.write("policies/bots.rhai", "fn evaluate(key) {\n  let = ;\n}\n");
    let err = live.next_event("error");
    let msg = err["error"].as_str().unwrap();
    assert!(msg.contains("policies/bots.rhai:2:"), "{msg}");

    // The fix recovers.
    s.write("policies/bots.rhai", BOTS);
    live.plan_where("the fixed policy", |p| from_policy(p, "bots") == ["bot warn"]);

    // A deleted policy takes its actions with it.
    s.remove("policies/bots.rhai");
    live.plan_where("the deleted policy", |p| from_policy(p, "bots").is_empty());

    live.signal("INT");
    assert_eq!(live.wait_exit(), 0);
}

#[test]
fn watch_follows_key_edits_new_keys_and_settings() {
    let s = store();
    let mut live = s.spawn(&["watch", "--json", "--now", NOW], &[]);
    live.next_event("plan");

    s.write("keys/svc.toml", &key("[\"read\"]", "2026-01-01T00:00:00Z", ""));
    let plan = live.plan_where("the aged key", |p| from_policy(p, "max-age") == ["svc rotate"]);
    assert_eq!(plan["dirty"], true);

    s.write("keys/new.toml", &key("[\"read\"]", "2026-01-01T00:00:00Z", ""));
    live.plan_where("the new key", |p| {
        from_policy(p, "max-age") == ["new rotate", "svc rotate"]
    });

    s.write("keyrot.toml", "[policy.max-age]\nmax_days = 400\n");
    live.plan_where("the new setting", |p| from_policy(p, "max-age").is_empty());

    s.write("keys/broken.toml", "service = \n");
    let err = live.next_event("error");
    assert!(
        err["error"].as_str().unwrap().contains("keys/broken.toml:1:"),
        "{err}"
    );
    s.remove("keys/broken.toml");
    live.next_event("plan");

    live.signal("TERM");
    assert_eq!(live.wait_exit(), 0);
}

#[test]
fn a_burst_of_twenty_saves_settles_on_the_last_one() {
    let s = store();
    let mut live = s.spawn(&["watch", "--json", "--now", NOW], &[]);
    live.next_event("plan");
    for i in 0..20 {
        s.write(
            "policies/burst.rhai",
            &format!("fn evaluate(key) {{ if key.id == \"bot\" {{ warn(\"save {i}\") }} }}\n"),
        );
    }
    let plan = live.plan_where("the last save", |p| {
        p["actions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["reason"] == "save 19")
    });
    assert_eq!(from_policy(&plan, "burst"), ["bot warn"]);
    let plans = live
        .seen
        .iter()
        .filter(|(e, l)| !e && l.contains("\"event\":\"plan\""))
        .count();
    assert!(plans <= 21, "at most one plan per save, got {plans} plans");
    live.signal("TERM");
    assert_eq!(live.wait_exit(), 0);
}

#[test]
fn text_output_shows_what_changed_in_the_plan() {
    let s = store();
    let mut live = s.spawn(&["watch", "--now", NOW], &[]);
    live.wait_for(false, "the first summary", |l| l.starts_with("Plan: "));
    s.write("policies/bots.rhai", BOTS);
    live.wait_for(false, "the change header", |l| {
        l == "--- policies/bots.rhai changed"
    });
    let added = live.wait_for(false, "the added action", |l| l.trim_start().starts_with('+'));
    assert_eq!(added.trim(), "+ bot warn [bots] bots are watched");
    live.wait_for(false, "the new summary", |l| {
        l == "Plan: 0 rotate, 0 revoke, 0 restrict, 0 expire, 0 deferred, 1 warn."
    });

    s.write("policies/bots.rhai", "fn evaluate(key) {");
    live.wait_for(true, "the error on stderr", |l| {
        l.starts_with("policies/bots.rhai:")
    });
    live.wait_for(true, "the keep-going note", |l| {
        l.contains("keeping the last good plan")
    });
    live.signal("INT");
    assert_eq!(live.wait_exit(), 0);
    live.wait_for(false, "the goodbye", |l| l == "Stopped watching.");
}

#[test]
fn watch_follows_exceptions() {
    let s = Store::with_keys(&[("old", &key("[\"read\"]", "2026-07-01T00:00:00Z", ""))]);
    let mut live = s.spawn(&["watch", "--json", "--now", NOW], &[]);
    let first = live.next_event("plan");
    assert_eq!(first["plan"]["summary"]["rotate"], 1);
    let exception = "[[exception]]\nkey = \"old\"\npolicy = \"max-age\"\nreason = \"retired Friday\"\napproved_by = \"carol\"\nexpires = 2026-12-01\n";
    s.write("exceptions.toml", exception);
    live.plan_where("the new exception", |p| {
        p["summary"]["excepted"] == 1 && p["summary"]["rotate"] == 0
    });
    s.write("exceptions.toml", &exception.replace("2026-12-01", "2027-12-01"));
    let err = live.next_event("error");
    assert!(
        err["error"].as_str().unwrap().contains("more than 90 days ahead"),
        "{err}"
    );
    s.remove("exceptions.toml");
    live.plan_where("the exception removed", |p| p["summary"]["rotate"] == 1);
    live.signal("INT");
    assert_eq!(live.finish(), 0);
}

/// Each plan `watch --json --now` prints after a save (patched in place, its JSON
/// patched key by key) is the plan `keyrot plan --json` makes of the same files.
#[test]
fn each_printed_plan_is_the_plan_of_the_files_as_saved() {
    let s = store();
    for i in 0..6 {
        s.write(
            &format!("keys/k{i}.toml"),
            &key("[\"read\", \"withdraw\"]", "2026-11-01T00:00:00Z", ""),
        );
    }
    let mut live = s.spawn(&["watch", "--json", "--now", NOW], &[]);
    let first = live.next_event("plan");
    assert_eq!(first["plan"], s.plan());
    let edits: [(&str, &str); 5] = [
        ("keys/k2.toml", "2026-01-01T00:00:00Z"),
        ("keys/k9.toml", "2026-01-01T00:00:00Z"),
        ("keys/k2.toml", "2026-11-20T00:00:00Z"),
        ("keys/k0.toml", "2025-06-01T00:00:00Z"),
        ("keys/k9.toml", "2026-11-01T00:00:00Z"),
    ];
    for (path, rotated) in edits {
        s.write(path, &key("[\"read\"]", rotated, ""));
        let want = s.plan();
        live.plan_where(&format!("the plan after saving {path}"), |p| *p == want);
    }
    s.write(
        "policies/max-age.rhai",
        "fn evaluate(key) { if key.age > days(30) { rotate(\"old\") } }\n",
    );
    let want = s.plan();
    live.plan_where("the plan after editing a policy", |p| *p == want);
    s.remove("keys/k0.toml");
    let want = s.plan();
    live.plan_where("the plan after deleting a key", |p| *p == want);
    live.signal("TERM");
    assert_eq!(live.wait_exit(), 0);
}

#[test]
fn an_editors_temporary_file_is_not_named_in_the_change_line() {
    let s = store();
    let mut live = s.spawn(&["watch", "--now", NOW], &[]);
    live.wait_for(false, "the first summary", |l| l.starts_with("Plan: "));
    // As `sed -i` saves: a temporary file in the folder, renamed over the original.
    let key = s.read("keys/bot.toml");
    s.write("keys/sedm8i3WE", &key.replace("\"read\"", "\"read\", \"trade\""));
    std::fs::rename(s.path("keys/sedm8i3WE"), s.path("keys/bot.toml")).unwrap();
    let header = live.wait_for(false, "the change header", |l| l.starts_with("--- "));
    assert_eq!(header, "--- keys/bot.toml changed");
    live.signal("INT");
    assert_eq!(live.wait_exit(), 0);
}

#[test]
fn a_save_that_changes_only_elapsed_times_shows_no_change() {
    // Rotated seconds ago, so the cooldown defers it: "rotated 5s ago" reads "7s" at
    // the next save.
    let now = std::process::Command::new("date")
        .args(["-u", "-d", "5 seconds ago", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    let rotated = String::from_utf8(now.stdout).unwrap();
    let s = Store::with_keys(&[("bot", &key("[\"read\"]", rotated.trim(), ""))]);
    s.write(
        "policies/always.rhai",
        "fn evaluate(key) { rotate(\"always\") }\n",
    );
    s.commit("always");
    let mut live = s.spawn(&["watch"], &[]);
    let first = live.wait_for(false, "the first summary", |l| l.starts_with("Plan: "));
    assert!(first.contains("1 deferred"), "{first}");
    std::thread::sleep(std::time::Duration::from_millis(2100));
    s.append("policies/always.rhai", "// a comment\n");
    live.wait_for(false, "the change header", |l| {
        l == "--- policies/always.rhai changed"
    });
    let next = live.wait_for(false, "the next line", |_| true);
    assert_eq!(next, "  (no change to the plan)");
    live.signal("INT");
    assert_eq!(live.wait_exit(), 0);
}
