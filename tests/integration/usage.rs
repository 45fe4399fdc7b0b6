//! `keyrot usage import`: records become `last_used_at`/`last_used_from` in one commit;
//! the shipped `unexpected-source` and `idle` policies act on them; stale and unknown
//! records are reported; a bad record applies nothing; a million records stream.

use std::fs;
use std::io::Write;

use crate::common::*;

fn records_file(s: &Store, name: &str, text: &str) -> String {
    let path = s.root.parent().unwrap().join(name);
    fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

fn jsonl(key: &str, at: &str, ip: &str) -> String {
    format!("{{\"key\":\"{key}\",\"at\":\"{at}\",\"ip\":\"{ip}\",\"status\":200}}\n")
}

#[test]
fn use_is_recorded_in_one_commit_and_an_unexpected_source_is_revoked() {
    let s = Store::with_keys(&[
        (
            "bot",
            &format!(
                "# the trading bot\n{}",
                key("[\"read\"]", "2026-11-01T00:00:00Z", "")
            ),
        ),
        ("pay", &key("[\"read\"]", "2026-11-01T00:00:00Z", "")),
    ]);
    let before = s.read("keys/bot.toml");
    let mut text = String::new();
    text += &jsonl("bot", "2026-11-22T10:00:00Z", "203.0.113.7");
    text += &jsonl("bot", "2026-11-22T11:00:00Z", "198.51.100.23");
    text += &jsonl("pay", "2026-11-22T09:00:00Z", "203.0.113.7");
    text += &jsonl("pay", "2026-11-20T09:00:00Z", "203.0.113.7");
    text += "\n";
    let file = records_file(&s, "access.jsonl", &text);
    let commits = s.commit_count();
    s.keyrot(&["usage", "import", &file])
        .ok()
        .stdout_has("Imported 4 records: 2 keys used, 0 records of secrets that no longer work, 0 of unknown keys or fingerprints.")
        .stdout_has("Recorded the use of 2 keys");
    assert_eq!(s.commit_count(), commits + 1);
    assert!(s.git(&["status", "--porcelain"]).is_empty());
    let after = s.read("keys/bot.toml");
    assert_eq!(
        after,
        before.replace("2026-11-22T00:00:00Z", "2026-11-22T11:00:00Z")
            + "last_used_from = [\"198.51.100.23\", \"203.0.113.7\"]\n",
        "only the two fields change, the comment stays"
    );
    let message = s.git(&["log", "-1", "--format=%B"]);
    assert!(message.starts_with("keyrot usage: 2 keys\n"), "{message}");
    assert!(
        message.contains("used bot: last 2026-11-22T11:00:00Z from 198.51.100.23, 203.0.113.7 (2 records)"),
        "{message}"
    );
    assert!(message.contains("\nKeyrot-Usage: sha256:"), "{message}");
    assert!(
        message.contains(&format!("Keyrot-Usage: sha256:{}", sha256_hex(text.as_bytes()))),
        "{message}"
    );
    assert!(message.contains("\nKeyrot-Usage-Records: 4\n"), "{message}");

    let plan = s.plan();
    let revoke = plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["key"] == "bot" && a["action"] == "revoke")
        .unwrap_or_else(|| panic!("bot is revoked: {plan:#}"));
    assert_eq!(revoke["policy"], "unexpected-source");
    assert_eq!(
        revoke["reason"],
        "used from 198.51.100.23, outside its IP allowlist"
    );
    assert!(
        !actions(&plan).iter().any(|(k, _, _)| k == "pay"),
        "pay was used only from its allowlist"
    );
    s.apply().ok();
    assert!(s.read("keys/bot.toml").contains("status = \"revoked\""));
    s.keyrot(&["audit", "verify"]).ok().stdout_has("0 failed");

    // The same records again change nothing and make no commit.
    let commits = s.commit_count();
    s.keyrot(&["usage", "import", &file])
        .ok()
        .stdout_has("No key file changed");
    assert_eq!(s.commit_count(), commits);
}

#[test]
fn idle_works_on_imported_use() {
    let idle = "service = \"binance\"\nowner = \"alice\"\npermissions = [\"read\"]\nip_allowlist = [\"203.0.113.0/24\"]\ncreated_at = 2026-01-01T00:00:00Z\nrotated_at = 2026-11-01T00:00:00Z\nlast_used_at = 2026-06-01T00:00:00Z\n";
    let s = Store::with_keys(&[("bot", idle)]);
    assert!(actions(&s.plan()).contains(&("bot".into(), "revoke".into(), "idle".into())));
    let file = records_file(
        &s,
        "access.csv",
        "at,ip,key\n2026-11-21T08:00:00Z,203.0.113.9,bot\n",
    );
    s.keyrot(&["usage", "import", &file]).ok();
    assert!(s
        .read("keys/bot.toml")
        .contains("last_used_at = 2026-11-21T08:00:00Z"));
    assert!(
        actions(&s.plan()).is_empty(),
        "used yesterday, from inside its allowlist"
    );
}

#[test]
fn records_of_secrets_that_no_longer_work_and_unknown_keys_are_reported() {
    let s = Store::with_keys(&[
        ("bot", &key("[\"read\"]", "2026-01-01T00:00:00Z", "")),
        (
            "old",
            &key(
                "[\"read\"]",
                "2026-11-01T00:00:00Z",
                "status = \"revoked\"\nrevoked_at = 2026-11-10T00:00:00Z\nrevoke_reason = \"test\"\n",
            ),
        ),
    ]);
    s.apply().ok(); // bot gets a secret
    let fp_of = |id: &str| {
        let secret = fs::read_to_string(s.secret_file(id)).unwrap();
        format!("sha256:{}", sha256_hex(secret.trim_end().as_bytes()))
    };
    let first_fp = fp_of("bot");
    s.rotate_again_in_use();
    let current_fp = fp_of("bot");
    let unknown_fp = fp('e');
    let fingerprint = |fp: &str, at: &str, ip: &str| {
        format!("{{\"fingerprint\":\"{fp}\",\"at\":\"{at}\",\"ip\":\"{ip}\"}}\n")
    };
    let records = [
        fingerprint(&current_fp, "2027-03-03T10:00:00Z", "203.0.113.7"),
        // The previous secret within its grace period is use; after it, a stale record.
        fingerprint(&first_fp, "2027-03-03T10:00:00Z", "203.0.113.7"),
        fingerprint(&first_fp, "2027-03-03T22:00:00Z", "198.51.100.77"),
        // A revoked key: used before its revocation (use), and after it (stale).
        jsonl("old", "2026-11-09T10:00:00Z", "203.0.113.7"),
        jsonl("old", "2026-11-30T10:00:00Z", "198.51.100.5"),
        jsonl("ghost", "2026-11-30T10:00:00Z", "198.51.100.5"),
        jsonl("ghost", "2026-11-30T11:00:00Z", "198.51.100.5"),
        fingerprint(&unknown_fp, "2026-11-30T09:00:00Z", "192.0.2.1"),
    ]
    .concat();
    let file = records_file(&s, "mixed.jsonl", &records);
    let json = s
        .keyrot(&[
            "usage",
            "import",
            &file,
            "--json",
            "--now",
            "2027-03-04T00:00:00Z",
        ])
        .ok()
        .json();
    assert_eq!(json["records"], 8);
    let stale: Vec<(&str, &str, u64)> = json["stale"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["key"].as_str().unwrap(),
                s["why"].as_str().unwrap(),
                s["records"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(stale, [("bot", "expired", 1), ("old", "revoked", 1)], "{json:#}");
    assert_eq!(json["stale"][0]["fingerprint"], first_fp.as_str());
    assert_eq!(json["stale"][0]["ips"], serde_json::json!(["198.51.100.77"]));
    assert_eq!(json["stale"][1]["ips"], serde_json::json!(["198.51.100.5"]));
    let unknown = json["unknown"].as_array().unwrap();
    assert_eq!(unknown.len(), 2, "{json:#}");
    assert_eq!(
        (unknown[0]["key"].as_str(), unknown[0]["records"].as_u64()),
        (Some("ghost"), Some(2))
    );
    assert_eq!(unknown[1]["fingerprint"], unknown_fp.as_str());
    let used: Vec<(&str, u64)> = json["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["key"].as_str().unwrap(), k["records"].as_u64().unwrap()))
        .collect();
    assert_eq!(used, [("bot", 2), ("old", 1)]);

    // Two days on the first secret has expired: only the history knows it was bot's.
    s.apply_at("2027-03-04T20:00:00Z", &[]).ok();
    let file = records_file(
        &s,
        "late.csv",
        &format!("fingerprint,at,ip\n{first_fp},2026-11-30T09:00:00Z,203.0.113.7\n"),
    );
    s.keyrot(&["usage", "import", &file])
        .ok()
        .stdout_has("Records of secrets that no longer work")
        .stdout_has(&format!(
            "stale bot ({first_fp}): an older secret, rotated away; 1 record"
        ));
}

#[test]
fn a_bad_record_names_its_line_and_nothing_is_written() {
    let s = Store::with_keys(&[("bot", &key("[\"read\"]", "2026-11-01T00:00:00Z", ""))]);
    let before = s.read("keys/bot.toml");
    let commits = s.commit_count();
    for (name, text, want) in [
        (
            "a.jsonl",
            format!(
                "{}{}",
                jsonl("bot", "2026-11-22T10:00:00Z", "203.0.113.7"),
                jsonl("bot", "2026-11-22T10:00:00Z", "not-an-ip")
            ),
            "a.jsonl:2: ip: `not-an-ip` is not an IP address",
        ),
        (
            "b.csv",
            "key,at\nbot,2026-11-22T10:00:00Z\n".to_string(),
            "b.csv:1: the header has no `ip` column",
        ),
        (
            "c.jsonl",
            jsonl("bot", "2099-01-01T00:00:00Z", "203.0.113.7"),
            "c.jsonl:1: at 2099-01-01T00:00:00Z is in the future",
        ),
    ] {
        let file = records_file(&s, name, &text);
        s.keyrot(&["usage", "import", &file]).fails(1).stderr_has(want);
    }
    assert_eq!(s.read("keys/bot.toml"), before);
    assert_eq!(s.commit_count(), commits);
    // Uncommitted edits to a key file the import would change are refused.
    s.write("keys/bot.toml", &format!("{before}# draft\n"));
    let file = records_file(
        &s,
        "ok.jsonl",
        &jsonl("bot", "2026-11-22T10:00:00Z", "203.0.113.7"),
    );
    s.keyrot(&["usage", "import", &file])
        .fails(1)
        .stderr_has("keys/bot.toml has uncommitted changes");
    assert_eq!(s.commit_count(), commits);
}

/// A million records, read from a file of ~85 MB: the import streams (its peak memory,
/// read from /proc while it runs, stays a fraction of the file's size) and records
/// every one of them.
#[test]
fn a_million_records_stream() {
    let keys: Vec<(String, String)> = (0..100)
        .map(|i| (format!("k{i:03}"), key("[\"read\"]", "2026-11-01T00:00:00Z", "")))
        .collect();
    let refs: Vec<(&str, &str)> = keys.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let s = Store::with_keys(&refs);
    let path = s.root.parent().unwrap().join("million.jsonl");
    let mut out = std::io::BufWriter::new(fs::File::create(&path).unwrap());
    let n = 1_000_000;
    for i in 0..n {
        let id = if i % 250_000 == 7 {
            "nobody".to_string()
        } else {
            format!("k{:03}", i % 100)
        };
        writeln!(
            out,
            "{{\"key\":\"{id}\",\"at\":\"2026-11-2{}T{:02}:{:02}:{:02}Z\",\"ip\":\"203.0.113.{}\",\"agent\":\"bench\"}}",
            i % 2,
            (i / 3600) % 24,
            (i / 60) % 60,
            i % 60,
            (i / 100) % 250
        )
        .unwrap();
    }
    drop(out);
    let size = fs::metadata(&path).unwrap().len();
    let mut live = s.spawn(&["usage", "import", path.to_str().unwrap(), "--json"], &[]);
    let (code, peak_kb) = live.finish_measuring_memory();
    assert_eq!(code, 0, "{:?}", live.seen);
    let json: serde_json::Value = serde_json::from_str(&live.stdout()).unwrap();
    assert_eq!(json["records"], n);
    assert_eq!(json["keys"].as_array().unwrap().len(), 100);
    assert_eq!(json["unknown"][0]["records"], 4);
    assert_eq!(
        json["keys"][0]["last_used_from"].as_array().unwrap().len(),
        16,
        "at most 16 addresses"
    );
    assert!(
        peak_kb * 1024 < size / 2,
        "peak memory {peak_kb} KB for a {size}-byte file: the import must stream"
    );
    assert!(s
        .git(&["log", "-1", "--format=%B"])
        .contains("Keyrot-Usage-Records: 1000000"));
}
