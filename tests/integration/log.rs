//! `keyrot log`: the audit trail read back from git history.

use crate::plan::every_action_store;

#[test]
fn log_lists_applied_actions_and_manual_commits() {
    let s = every_action_store();
    s.apply().ok();
    let apply_commit = s.head();
    s.write(
        "keys/old.toml",
        &s.read("keys/old.toml").replace("tags", "# edited\ntags"),
    );
    s.write(
        "keys/old.toml",
        &format!("{}# a human edit\n", s.read("keys/old.toml")),
    );
    s.commit("fix old by hand");

    let entries = s.keyrot(&["log", "--json"]).ok().json();
    let rows: Vec<(String, String, String)> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["key"].as_str().unwrap().into(),
                e["action"].as_str().unwrap().into(),
                e["policy"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(rows[0], ("old".into(), "manual".into(), "-".into()));
    assert!(rows.contains(&("old".into(), "rotate".into(), "max-age".into())));
    assert!(rows.contains(&("leaked".into(), "revoke".into(), "compromised".into())));
    assert!(rows.contains(&("fresh".into(), "warn".into(), "departed-owner".into())));
    let rotate = entries
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "rotate")
        .unwrap();
    assert_eq!(rotate["commit"], apply_commit);
    assert_eq!(rotate["reason"], "secret is 144 days old (limit 90)");
    assert!(rotate["time"].as_str().unwrap().ends_with('Z'));

    let table = s.keyrot(&["log"]).ok().stdout;
    assert!(table.contains("fix old by hand"), "{table}");
    assert!(table.contains("TIME") && table.contains("POLICY"), "{table}");
}

#[test]
fn log_key_shows_only_that_key() {
    let s = every_action_store();
    s.apply().ok();
    let entries = s.keyrot(&["log", "old", "--json"]).ok().json();
    let entries = entries.as_array().unwrap();
    assert!(entries.iter().all(|e| e["key"] == "old"));
    let actions: Vec<&str> = entries.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["rotate", "manual"]);
    assert!(s
        .keyrot(&["log", "../etc"])
        .fails(1)
        .stderr
        .contains("not a valid key id"));
}

#[test]
fn log_reads_only_the_committed_settings_and_reports_them_broken() {
    let s = every_action_store();
    s.apply().ok();
    // A broken key file does not hide the history.
    s.write("keys/broken.toml", "service = \n");
    s.commit("a broken key file");
    let entries = s.keyrot(&["log", "--json"]).ok().json();
    assert!(entries
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "rotate"));
    // A broken keyrot.toml is reported, never replaced by the defaults.
    s.write("keyrot.toml", "[store]\nkeys = \"elsewhere\"\nsurprise = 1\n");
    s.commit("broken settings");
    let run = s.keyrot(&["log"]).fails(1);
    run.stderr_has("keyrot.toml:3:");
}
