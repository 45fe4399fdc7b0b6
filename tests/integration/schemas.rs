//! The JSON Schemas in `schemas/` (and `keyrot schema NAME`) against the real output of
//! every command's `--json`, errors included.

use serde_json::{json, Value};

use crate::common::*;

fn schema(name: &str) -> Value {
    let path = format!("{}/schemas/{name}.schema.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// A validator for `name`, with the schemas it names (`plan.schema.json`,
/// `apply.schema.json`) embedded as resources of their own `$id`, as a bundler does.
fn validator(name: &str) -> jsonschema::Validator {
    let mut s = schema(name);
    let defs = s
        .as_object_mut()
        .unwrap()
        .entry("$defs")
        .or_insert_with(|| json!({}));
    for other in ["plan", "apply", "notify-event"] {
        if other != name {
            defs[format!("bundled-{other}")] = schema(other);
        }
    }
    jsonschema::validator_for(&s).unwrap()
}

#[track_caller]
pub fn valid(name: &str, value: &Value) {
    let errors: Vec<String> = validator(name)
        .iter_errors(value)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{name}: {errors:#?}\n{value:#}");
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn every_commands_json_output_matches_its_schema() {
    let s = Store::bare();
    s.keyrot_in(s.root.parent().unwrap(), &["init", "--example", "store"])
        .ok();

    let plan = s.keyrot(&["plan", "--json"]).ok().json();
    assert!(
        plan["actions"].as_array().unwrap().len() > 3,
        "an example plan with actions"
    );
    assert_eq!(plan["keyrot_version"], env!("CARGO_PKG_VERSION"));
    valid("plan", &plan);
    for id in ["binance-bot", "coinbase-withdraw", "fresh-bot", "old-bot"] {
        valid("explain", &s.keyrot(&["explain", id, "--json"]).ok().json());
    }
    valid("check", &s.keyrot(&["check", "--json"]).ok().json());
    valid("test", &s.keyrot(&["test", "--json", "--coverage"]).ok().json());
    let secrets = s.secrets.to_str().unwrap().to_string();
    let applied = s
        .keyrot(&["apply", "--yes", "--json", "--secrets-dir", &secrets])
        .ok()
        .json();
    assert!(applied["commit"].is_string());
    valid("apply", &applied);
    valid("log", &s.keyrot(&["log", "--json"]).ok().json());
    valid(
        "audit-verify",
        &s.keyrot(&["audit", "verify", "--json"]).ok().json(),
    );
    let cycles = s.keyrot(&["run", "--once", "--json"]).stdout;
    for event in json_lines(&cycles) {
        valid("run-event", &event);
    }
    // A cycle that fails: its error, and what to do about it, as fields.
    let bot = "keys/trading/binance-bot.toml";
    let k1 = s.read(bot);
    s.write(bot, &format!("{k1}# draft\n"));
    let failed = s
        .keyrot(&["run", "--once", "--apply", "--json", "--secrets-dir", &secrets])
        .fails(1)
        .stdout;
    let events = json_lines(&failed);
    assert_eq!(events.len(), 1, "{failed}");
    valid("run-event", &events[0]);
    assert_eq!(
        events[0]["error"],
        format!("the store has uncommitted changes: {bot}")
    );
    assert!(
        events[0]["hint"].as_str().unwrap().starts_with("commit them"),
        "{failed}"
    );
    s.write(bot, &k1);

    // A shared remote with no lease: null.
    let bare = s.root.parent().unwrap().join("remote.git");
    std::process::Command::new("git")
        .args(["init", "-q", "--bare"])
        .arg(&bare)
        .status()
        .unwrap();
    s.git(&["remote", "add", "origin", bare.to_str().unwrap()]);
    s.git(&["push", "-q", "origin", "main"]);
    let lease = s.keyrot(&["lease", "--json", "--remote", "origin"]).ok().json();
    assert!(lease.is_null());
    valid("lease", &lease);

    // A scan that finds one secret of the store (and marks its key), one of no store.
    let leak = s.root.parent().unwrap().join("leak.txt");
    let secret = std::fs::read_to_string(s.secret_file("binance-bot")).unwrap();
    std::fs::write(&leak, format!("{secret}kr_other_{}\n", "A".repeat(40))).unwrap();
    let leak = leak.to_str().unwrap();
    let scanned = s
        .keyrot(&["scan", leak, "--json", "--mark-compromised"])
        .fails(1)
        .json();
    assert_eq!(scanned["marked"]["keys"], json!(["binance-bot"]));
    valid("scan", &scanned);
    valid("scan", &s.keyrot(&["scan", "--git", "--json"]).ok().json());

    // Usage of a known key, a revoked one after its revocation, an unknown one.
    let records = s.root.parent().unwrap().join("access.csv");
    std::fs::write(
        &records,
        "key,at,ip\nbinance-bot,2026-11-30T10:00:00Z,203.0.113.7\nstale-report,2026-11-30T10:00:00Z,198.51.100.1\nghost,2026-11-30T10:00:00Z,198.51.100.1\n",
    )
    .unwrap();
    let imported = s
        .keyrot(&["usage", "import", records.to_str().unwrap(), "--json"])
        .ok()
        .json();
    assert_eq!(imported["unknown"][0]["key"], "ghost");
    valid("usage-import", &imported);
}

#[test]
fn watch_events_and_errors_match_their_schemas() {
    let s = Store::with_keys(&[("k1", &key("[\"read\"]", "2026-07-01T00:00:00Z", ""))]);
    let mut w = s.spawn(&["watch", "--json", "--now", NOW], &[]);
    valid("watch-event", &w.next_event("plan"));
    s.write("policies/broken.rhai", "fn evaluate(key) { rotate( }\n");
    valid("watch-event", &w.next_event("error"));
    w.signal("INT");
    w.finish();

    // With --json, a failing command's error is one JSON object on stderr.
    let run = s.keyrot(&["plan", "--json", "--now", NOW]).fails(1);
    assert!(run.stdout.is_empty());
    let error: Value = serde_json::from_str(run.stderr.trim()).unwrap();
    valid("error", &error);
    assert_eq!(error["path"], "policies/broken.rhai");
    assert_eq!(error["line"], 1);
    assert!(error["error"]
        .as_str()
        .unwrap()
        .contains("1 problem in the store"));
    s.remove("policies/broken.rhai");
    let run = s.keyrot(&["apply", "--json", "--now", NOW]).fails(1);
    let error: Value = serde_json::from_str(run.stderr.trim()).unwrap();
    valid("error", &error);
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("apply --json needs --yes"),
        "{error}"
    );
    assert!(error["path"].is_null() && error["problems"].as_array().unwrap().is_empty());
}

#[test]
fn the_schemas_reject_what_keyrot_never_writes_and_are_printed_as_shipped() {
    let s = Store::with_keys(&[("k1", &key("[\"read\"]", "2026-07-01T00:00:00Z", ""))]);
    let mut plan = s.plan();
    valid("plan", &plan);
    // The plan inside another output is checked through its reference too.
    let applied = |plan: &Value| json!({"commit": null, "branch": "main", "secrets": [], "notes": [], "failed": [], "plan": plan});
    assert!(validator("apply").is_valid(&applied(&plan)));
    plan["actions"][0]["action"] = json!("rotat");
    assert!(!validator("plan").is_valid(&plan));
    assert!(!validator("apply").is_valid(&applied(&plan)));
    let mut plan = s.plan();
    plan["surprise"] = json!(1);
    assert!(!validator("plan").is_valid(&plan));

    let names = s.keyrot(&["schema"]).ok().stdout;
    for name in names.lines() {
        let printed: Value = serde_json::from_str(&s.keyrot(&["schema", name]).ok().stdout).unwrap();
        assert_eq!(printed, schema(name), "{name}");
    }
    let shipped = std::fs::read_dir(format!("{}/schemas", env!("CARGO_MANIFEST_DIR")))
        .unwrap()
        .count();
    assert_eq!(names.lines().count(), shipped, "every shipped schema is printed");
    s.keyrot(&["schema", "nope"])
        .fails(1)
        .stderr_has("no schema `nope`");
}

#[test]
fn demo_refuses_a_store_named_by_flag() {
    let s = Store::new();
    s.keyrot(&["demo"])
        .fails(1)
        .stderr_has("demo makes and applies its own example store");
}

/// An error's hint and location are data: the text form prints the hint on its own
/// line, the JSON form has it in `hint` (never inside `error`), and `path`/`line` name
/// the place for errors about one, not only for load problems.
#[test]
fn an_errors_hint_and_location_are_fields_of_its_json() {
    let s = Store::with_keys(&[("k1", &key("[\"read\"]", "2026-07-01T00:00:00Z", ""))]);
    let error_of = |run: &Run| -> Value {
        let error: Value = serde_json::from_str(run.stderr.trim()).unwrap();
        valid("error", &error);
        assert!(!error["error"].as_str().unwrap().contains("hint"), "{error}");
        error
    };

    // The library's hint (what to do), kept out of the message.
    s.write("keys/k1.toml", &format!("{}# draft\n", s.read("keys/k1.toml")));
    let run = s.keyrot(&["apply", "--json", "--yes", "--now", NOW]).fails(1);
    let error = error_of(&run);
    assert!(error["error"]
        .as_str()
        .unwrap()
        .starts_with("the store has uncommitted changes: keys/k1.toml"));
    assert!(
        error["hint"]
            .as_str()
            .unwrap()
            .starts_with("commit them (git add"),
        "{error}"
    );
    s.keyrot(&["apply", "--yes", "--now", NOW])
        .fails(1)
        .stderr_has("error: the store has uncommitted changes: keys/k1.toml\n  hint: commit them (git add");
    s.git(&["checkout", "--", "keys/k1.toml"]);

    // A hint that names flags is the CLI's: the library's message names none.
    let run = s
        .keyrot(&["audit", "verify", "--require-signed", "--json"])
        .fails(1);
    let error = error_of(&run);
    assert_eq!(
        error["error"],
        "signed commits are required, but there are no keys to trust"
    );
    assert!(
        error["hint"]
            .as_str()
            .unwrap()
            .contains("give --allowed-signers FILE"),
        "{error}"
    );
    s.keyrot(&["audit", "verify", "--require-signed"]).fails(1).stderr_has(
        "error: signed commits are required, but there are no keys to trust\n  hint: --require-signed needs the keys to trust",
    );

    // A bad record of an import: its file and line.
    let file = s.root.parent().unwrap().join("access.jsonl");
    std::fs::write(&file, "{\"key\":\"k1\",\"at\":\"2026-11-22T10:00:00Z\",\"ip\":\"203.0.113.7\"}\n{\"key\":\"k1\",\"at\":\"2026-11-22T10:00:00Z\",\"ip\":\"nope\"}\n").unwrap();
    let run = s
        .keyrot(&["usage", "import", file.to_str().unwrap(), "--json"])
        .fails(1);
    let error = error_of(&run);
    assert!(
        error["path"].as_str().unwrap().ends_with("access.jsonl"),
        "{error}"
    );
    assert_eq!(error["line"], 2);
    assert!(error["column"].is_null());

    // A policy that fails on a key: the policy's file, line and column.
    s.write(
        "policies/thrower.rhai",
        "fn evaluate(key) {\n    throw \"no\";\n}\n",
    );
    let run = s.keyrot(&["plan", "--json", "--now", NOW]).fails(1);
    let error = error_of(&run);
    assert_eq!(error["path"], "policies/thrower.rhai");
    assert_eq!(error["line"], 2);
    assert!(error["column"].as_u64().is_some(), "{error}");
}
