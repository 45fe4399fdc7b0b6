//! Keys in team folders (`keys/trading/binance-bot.toml`, at any depth): loaded,
//! planned, applied, committed, logged, explained and reported where they are, with
//! every guarantee a key at the top of the keys folder has.

use std::fs;

use crate::common::*;

/// A policy that reads the folder: payments keys must have an IP allowlist.
const PAYMENTS_POLICY: &str = r#"fn evaluate(key) {
    if key.folder == "payments" || key.folder.starts_with("payments/") {
        return warn(`payments key (${key.path}) is watched`);
    }
}
"#;

/// Keys at the top, one folder down and two folders down.
fn nested_store() -> Store {
    let s = Store::with_keys(&[
        ("top", &key("[\"read\"]", "2026-11-01T00:00:00Z", "")),
        (
            "trading/old",
            &key("[\"read\"]", "2026-07-01T00:00:00Z", "# the bot's key\n"),
        ),
        (
            "trading/bots/leaked",
            &key("[\"read\"]", "2026-11-01T00:00:00Z", "compromised = true\n"),
        ),
        ("payments/card", &key("[\"read\"]", "2026-11-01T00:00:00Z", "")),
    ]);
    s.write("policies/payments-watch.rhai", PAYMENTS_POLICY);
    s.commit("watch payments keys");
    s
}

fn folder_of<'p>(plan: &'p serde_json::Value, key: &str) -> Option<&'p str> {
    plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["key"] == key)
        .and_then(|a| a["folder"].as_str())
}

#[test]
fn nested_keys_are_planned_applied_and_committed_where_they_are() {
    let s = nested_store();
    let plan = s.plan();
    crate::schemas::valid("plan", &plan);
    assert_eq!(
        actions(&plan),
        [
            ("card", "warn", "payments-watch"),
            ("leaked", "revoke", "compromised"),
            ("old", "rotate", "max-age"),
        ]
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    );
    assert_eq!(folder_of(&plan, "old"), Some("trading"));
    assert_eq!(folder_of(&plan, "leaked"), Some("trading/bots"));
    assert_eq!(folder_of(&plan, "card"), Some("payments"));
    let card = &plan["actions"][0];
    assert_eq!(
        card["reason"],
        "payments key (keys/payments/card.toml) is watched"
    );

    // The table names each key with its folder.
    let table = s.keyrot(&["plan", "--now", NOW]).ok();
    table
        .stdout_has("trading/old")
        .stdout_has("trading/bots/leaked")
        .stdout_has("payments/card");

    // A notify command routes by team: the event names each key's folder.
    s.write("notify/record", "#!/bin/sh\ncat > \"$NOTIFY_OUT\"\n");
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(s.path("notify/record"), fs::Permissions::from_mode(0o755)).unwrap();
    s.append("keyrot.toml", "\n[[notify]]\ncommand = \"notify/record\"\n");
    s.commit("notify");
    let event_file = s.path("../event.json");
    let applied = s
        .apply_at(NOW, &[("NOTIFY_OUT", event_file.to_str().unwrap())])
        .ok();
    applied.stdout_has("Apply complete");
    let event: serde_json::Value = serde_json::from_str(&fs::read_to_string(&event_file).unwrap()).unwrap();
    crate::schemas::valid("notify-event", &event);
    let folders: Vec<(&str, &str)> = event["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["key"].as_str().unwrap(), a["folder"].as_str().unwrap()))
        .collect();
    assert_eq!(folders, [("leaked", "trading/bots"), ("old", "trading")]);
    // One commit, changing exactly the two nested key files, in place.
    let changed = s.git(&["diff-tree", "--no-commit-id", "--name-only", "-r", "HEAD"]);
    assert_eq!(
        changed.lines().collect::<Vec<_>>(),
        ["keys/trading/bots/leaked.toml", "keys/trading/old.toml"]
    );
    assert_eq!(s.git(&["status", "--porcelain"]), "");
    s.assert_fsck_clean();
    let old = s.read("keys/trading/old.toml");
    assert!(old.contains("# the bot's key"), "comments kept:\n{old}");
    let secret = fs::read_to_string(s.secret_file("old")).unwrap();
    assert!(old.contains(&sha256_hex(secret.trim_end().as_bytes())));
    assert!(s
        .read("keys/trading/bots/leaked.toml")
        .contains("status = \"revoked\""));
    assert!(!s.path("keys/old.toml").exists() && !s.path("keys/leaked.toml").exists());

    // The next plan has only the warning: nothing moved, nothing doubled.
    let again = s.plan();
    assert_eq!(
        actions(&again),
        [(
            "card".to_string(),
            "warn".to_string(),
            "payments-watch".to_string()
        )]
    );

    // log shows the folder, and takes the key by id or by folder/id.
    let log = s.keyrot(&["log", "--json"]).ok().json();
    crate::schemas::valid("log", &log);
    let rotate = log
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["key"] == "old" && e["action"] == "rotate")
        .unwrap();
    assert_eq!(rotate["folder"], "trading");
    s.keyrot(&["log"]).ok().stdout_has("trading/old");
    let by_id = s.keyrot(&["log", "old", "--json"]).ok().json();
    let by_path = s.keyrot(&["log", "trading/old", "--json"]).ok().json();
    assert_eq!(by_id, by_path);
    // A folder the key is not in is an error, as explain's is.
    s.keyrot(&["log", "payments/old"])
        .fails(1)
        .stderr_has("no key `payments/old`");
    let kinds: Vec<&str> = by_id
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["rotate", "manual"], "{by_id}");

    // explain by id or by folder/id; the folder is among what policies see.
    let e = s
        .keyrot(&["explain", "trading/bots/leaked", "--json", "--now", NOW])
        .ok()
        .json();
    crate::schemas::valid("explain", &e);
    assert_eq!(e["path"], "keys/trading/bots/leaked.toml");
    assert_eq!(e["facts"]["folder"], "trading/bots");
    s.keyrot(&["explain", "card", "--now", NOW])
        .ok()
        .stdout_has("Key card (keys/payments/card.toml)")
        .stdout_has("folder           payments");
    s.keyrot(&["explain", "trading/card", "--now", NOW])
        .fails(1)
        .stderr_has("no key `trading/card`");

    // audit verify re-derives the apply commit from the nested store.
    s.keyrot(&["audit", "verify"]).ok();
}

#[test]
fn check_names_both_files_of_a_duplicate_id_and_every_bad_folder() {
    let s = Store::new();
    let body = key("[\"read\"]", "2026-11-01T00:00:00Z", "");
    for path in [
        "keys/trading/bot.toml",
        "keys/payments/bot.toml",
        "keys/Trading/a.toml",
        "keys/.archive/b.toml",
        "keys/c.toml/d.toml",
    ] {
        s.write(path, &body);
    }
    s.write("keys/team/notes.txt", "hello");
    fs::create_dir_all(s.path("elsewhere")).unwrap();
    s.write("elsewhere/e.toml", &body);
    std::os::unix::fs::symlink(s.path("elsewhere"), s.path("keys/linked")).unwrap();
    // Deeper than any team layout: refused, never walked without end.
    let deep = format!("keys/{}deep.toml", "d/".repeat(40));
    s.write(&deep, &body);

    let check = s.keyrot(&["check"]).fails(1);
    check
        .stderr_has("keys/trading/bot.toml: key id `bot` is also the id of keys/payments/bot.toml")
        .stderr_has("keys/Trading: is not a valid folder name")
        .stderr_has("keys/.archive: is not a valid folder name")
        .stderr_has("keys/c.toml: is a folder, not a file")
        .stderr_has("keys/team/notes.txt: is not a key file")
        .stderr_has("keys/linked: is a symbolic link")
        .stderr_has(&format!(
            "keys/{}d: folders nest more than 32 deep",
            "d/".repeat(32)
        ));
    // Nothing is planned or applied from such a store.
    s.keyrot(&["plan", "--now", NOW])
        .fails(1)
        .stderr_has("is also the id of");
    s.commit("bad layout");
    s.apply().fails(1);
    assert!(!s.secrets.exists() || fs::read_dir(&s.secrets).unwrap().next().is_none());
}

#[test]
fn uncommitted_changes_in_team_folders_make_the_plan_dirty_and_stop_apply() {
    let s = nested_store();
    assert_eq!(s.plan()["dirty"], false);

    // An edit one and two folders down.
    s.append("keys/trading/bots/leaked.toml", "# note\n");
    assert_eq!(s.plan()["dirty"], true);
    s.apply().fails(1).stderr_has("keys/trading/bots/leaked.toml");
    s.git(&["checkout", "--", "keys"]);
    assert_eq!(s.plan()["dirty"], false);

    // A new team folder, never committed.
    s.write(
        "keys/treasury/vault.toml",
        &key("[\"read\"]", "2026-11-01T00:00:00Z", ""),
    );
    assert_eq!(s.plan()["dirty"], true);
    s.apply().fails(1).stderr_has("keys/treasury/vault.toml");
    s.commit("treasury");
    assert_eq!(s.plan()["dirty"], false);

    // A committed folder removed from the work tree.
    fs::remove_dir_all(s.path("keys/treasury")).unwrap();
    assert_eq!(s.plan()["dirty"], true);
    s.git(&["checkout", "--", "keys"]);
    assert_eq!(s.plan()["dirty"], false);
}

#[test]
fn a_saved_plan_is_stale_once_a_key_moves_between_folders() {
    let s = nested_store();
    let out = s.path("../plan.json");
    let out = out.to_str().unwrap();
    s.keyrot(&["plan", "--now", NOW, "--out", out]).ok();
    // The same bytes, another folder: a different key file to the digest.
    fs::create_dir_all(s.path("keys/crew")).unwrap();
    fs::rename(s.path("keys/trading/old.toml"), s.path("keys/crew/old.toml")).unwrap();
    s.commit("move old to crew");
    let secrets = s.secrets.to_str().unwrap().to_string();
    s.keyrot(&["apply", out, "--secrets-dir", &secrets])
        .fails(1)
        .stderr_has("stale");
    // Planned again, it applies at the new path.
    s.apply().ok();
    assert!(s.git(&["show", "--stat", "HEAD"]).contains("keys/crew/old.toml"));
    let log = s.keyrot(&["log", "old", "--json"]).ok().json();
    assert!(
        log.as_array().unwrap().iter().all(|e| e["folder"] == "crew"),
        "{log}"
    );
}

#[test]
fn an_apply_killed_after_its_commit_is_finished_at_the_nested_paths() {
    for point in ["apply-after-commit", "apply-worktree-staged"] {
        let s = nested_store();
        let base = s.head();
        s.kill_apply_at(point);
        s.assert_fsck_clean();
        let next = s.apply().ok();
        next.stderr_has("finished an interrupted apply");
        assert_eq!(
            s.git(&["rev-parse", "HEAD^"]).trim(),
            base,
            "{point}: one apply commit"
        );
        assert_eq!(s.git(&["status", "--porcelain"]), "", "{point}");
        let secret = fs::read_to_string(s.secret_file("old")).unwrap();
        let committed = s.git(&["show", "HEAD:keys/trading/old.toml"]);
        assert!(
            committed.contains(&sha256_hex(secret.trim_end().as_bytes())),
            "{point}"
        );
        assert!(s.apply().ok().stdout.contains("No commit made"), "{point}");
    }
}

#[test]
fn watch_follows_keys_and_folders_at_any_depth() {
    let s = nested_store();
    let mut live = s.spawn(&["watch", "--json", "--now", NOW], &[]);
    let plan = live.next_event("plan");
    assert_eq!(folder_of(&plan["plan"], "old"), Some("trading"));

    // An edit two folders down.
    s.write(
        "keys/trading/bots/leaked.toml",
        &key("[\"read\"]", "2026-11-01T00:00:00Z", ""),
    );
    live.plan_where("the leaked key mended", |p| {
        folder_of(p, "leaked").is_none() && folder_of(p, "old").is_some()
    });

    // A new folder with a key in it, made after the watch started.
    s.write(
        "keys/payments/eu/iban.toml",
        &key("[\"read\"]", "2026-11-01T00:00:00Z", ""),
    );
    live.plan_where("the new folder's key", |p| {
        folder_of(p, "iban") == Some("payments/eu")
    });

    // A folder renamed: its keys move with it.
    fs::rename(s.path("keys/payments"), s.path("keys/cards")).unwrap();
    live.plan_where("the renamed folder", |p| {
        folder_of(p, "iban").is_none() && folder_of(p, "card").is_none()
    });

    // A folder removed whole: its keys go from the plan.
    fs::remove_dir_all(s.path("keys/trading")).unwrap();
    live.plan_where("the removed folder", |p| {
        folder_of(p, "old").is_none() && p["dirty"] == true
    });

    // A duplicate id across folders is an error; removing it recovers.
    s.write(
        "keys/cards/top.toml",
        &key("[\"read\"]", "2026-11-01T00:00:00Z", ""),
    );
    let err = live.next_event("error");
    assert!(
        err["error"].as_str().unwrap().contains("is also the id of"),
        "{err}"
    );
    s.remove("keys/cards/top.toml");
    live.next_event("plan");

    live.signal("TERM");
    assert_eq!(live.wait_exit(), 0);
}

#[test]
fn policy_tests_build_keys_in_folders() {
    let s = Store::new();
    s.write("policies/payments-watch.rhai", PAYMENTS_POLICY);
    s.write(
        "policies/payments-watch_test.rhai",
        r#"
fn test_payments_keys_are_watched() {
    assert_warn(evaluate(key(#{ folder: "payments" })));
    assert_warn(evaluate(key(#{ folder: "payments/eu" })));
    assert_none(evaluate(key(#{ folder: "trading" })));
    assert_none(evaluate(key(#{})));
    assert_eq(key(#{ id: "card", folder: "payments" }).path, "keys/payments/card.toml");
}
"#,
    );
    s.keyrot(&["test", "payments"])
        .ok()
        .stdout_has("test payments-watch::test_payments_keys_are_watched ... ok")
        .stdout_has("1 passed, 0 failed");
    s.write(
        "policies/payments-watch_test.rhai",
        "fn test_bad_folder() { key(#{ folder: \"../x\" }); }\n",
    );
    s.keyrot(&["test"])
        .fails(1)
        .stdout_has("folder `../x` is not a valid folder");
}

#[test]
fn the_report_counts_findings_per_folder() {
    let s = nested_store();
    let report = s.keyrot(&["report", "--json", "--now", NOW]).ok().json();
    crate::schemas::valid("report", &report);
    let folders: Vec<(String, u64)> = report["folders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["name"].as_str().unwrap().to_string(),
                g["keys"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        folders,
        [("(top)", 1), ("payments", 1), ("trading", 1), ("trading/bots", 1)].map(|(n, k)| (n.to_string(), k))
    );
    let old = report["plan"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == "old")
        .unwrap();
    assert_eq!(old["folder"], "trading");
    let out = s.path("../report.html");
    s.keyrot(&["report", "--now", NOW, "--out", out.to_str().unwrap()])
        .ok();
    let html = fs::read_to_string(&out).unwrap();
    assert!(html.contains("<th scope=\"col\">folder</th>") && html.contains("trading/old"));

    // A store without folders has no folder table.
    let flat = Store::with_keys(&[("a", &key("[\"read\"]", "2026-07-01T00:00:00Z", ""))]);
    let report = flat.keyrot(&["report", "--json", "--now", NOW]).ok().json();
    assert_eq!(report["folders"], serde_json::json!([]));
}

#[test]
fn usage_import_and_scan_marking_edit_nested_key_files_in_place() {
    let s = nested_store();
    let records = s.path("../access.jsonl");
    fs::write(
        &records,
        "{\"key\":\"card\",\"at\":\"2026-11-22T10:00:00Z\",\"ip\":\"203.0.113.7\",\"status\":200}\n",
    )
    .unwrap();
    s.keyrot(&["usage", "import", records.to_str().unwrap()]).ok();
    let card = s.read("keys/payments/card.toml");
    assert!(card.contains("last_used_from = [\"203.0.113.7\"]"), "{card}");
    assert!(!s.path("keys/card.toml").exists());
    assert_eq!(s.git(&["status", "--porcelain"]), "");

    // A leaked secret of a nested key, found by scan, marks that file.
    s.apply().ok();
    let secret = fs::read_to_string(s.secret_file("old")).unwrap();
    let leak = s.path("../leak.env");
    fs::write(&leak, format!("API_KEY={}", secret.trim_end())).unwrap();
    s.keyrot(&["scan", leak.to_str().unwrap(), "--mark-compromised"])
        .fails(1);
    assert!(s.read("keys/trading/old.toml").contains("compromised = true"));
    assert_eq!(s.git(&["status", "--porcelain"]), "");
    let plan = s.plan();
    assert_eq!(folder_of(&plan, "old"), Some("trading"));
    assert!(actions(&plan).contains(&("old".to_string(), "revoke".to_string(), "compromised".to_string())));
}
