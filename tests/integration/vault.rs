//! The Vault sink against a real OpenBao dev server on loopback.

use std::fs;

use crate::common::*;
use crate::servers::Bao;

/// `k1` (overdue) in a store whose sink is the given server's KV v2 mount.
fn store(bao: &Bao) -> Store {
    let s = Store::new();
    s.write(
        "keyrot.toml",
        &(s.read("keyrot.toml")
            + &format!(
                "\n[delivery]\nsink = \"vault\"\n[delivery.vault]\naddress = \"{}\"\ntoken_env = \"TEST_BAO_TOKEN\"\nmount = \"secret\"\npath = \"keyrot/{{service}}/{{id}}\"\n",
                bao.address()
            )),
    );
    s.write("owners.toml", OWNERS);
    s.write(
        "keys/k1.toml",
        &key(
            "[\"read\"]",
            "2026-07-01T00:00:00Z",
            &format!("fingerprint = \"{}\"\n", fp('a')),
        ),
    );
    s.commit("k1, delivered to vault");
    s
}

fn apply(s: &Store, token: &str, now: &str) -> Run {
    s.apply_at(now, &[("TEST_BAO_TOKEN", token)])
}

fn committed_fp(s: &Store, id: &str) -> String {
    let v: toml::Table = s.git(&["show", &format!("HEAD:keys/{id}.toml")]).parse().unwrap();
    v["fingerprint"].as_str().unwrap().to_string()
}

#[test]
fn a_rotation_lands_in_kv2_with_its_fingerprint_and_no_local_copy() {
    let bao = Bao::start();
    let s = store(&bao);
    let run = apply(&s, &bao.token, NOW).ok();
    let fp = committed_fp(&s, "k1");
    assert!(
        run.stdout.contains(&format!(
            "new secret for k1: {fp} -> vault:secret/keyrot/binance/k1 (version 1)"
        )),
        "{}",
        run.stdout
    );
    let (status, body) = bao.get("/v1/secret/data/keyrot/binance/k1");
    assert_eq!(status, 200);
    let data = &body["data"]["data"];
    assert_eq!(data["fingerprint"], fp.as_str());
    let secret = data["secret"].as_str().unwrap();
    assert_eq!(format!("sha256:{}", sha256_hex(secret.as_bytes())), fp);
    // The plaintext lives in Vault alone.
    assert!(!s.secret_file("k1").exists());
    assert_eq!(fs::read_dir(&s.secrets).unwrap().count(), 0);
    // The token is nowhere: not in the output, the store, or its history.
    assert!(!run.stdout.contains(&bao.token) && !run.stderr.contains(&bao.token));
    let history = s.git(&["log", "-p", "--all"]);
    assert!(!history.contains(&bao.token) && !history.contains(secret));
}

#[test]
fn the_previous_version_stays_during_grace_and_goes_at_expire_and_revoke_deletes_all() {
    let bao = Bao::start();
    let s = store(&bao);
    apply(&s, &bao.token, NOW).ok();
    let first = committed_fp(&s, "k1");
    // 91 days later the key is due again: version 2, and version 1 still readable.
    let later = "2027-02-21T20:00:00Z";
    s.write(
        "keys/k1.toml",
        &s.read("keys/k1.toml").replace(
            "last_used_at = 2026-11-22T00:00:00Z",
            "last_used_at = 2027-02-21T00:00:00Z",
        ),
    );
    s.commit("k1 in use");
    apply(&s, &bao.token, later).ok();
    let second = committed_fp(&s, "k1");
    let (_, v1) = bao.get("/v1/secret/data/keyrot/binance/k1?version=1");
    assert_eq!(v1["data"]["data"]["fingerprint"], first.as_str());
    let (_, v2) = bao.get("/v1/secret/data/keyrot/binance/k1");
    assert_eq!(v2["data"]["data"]["fingerprint"], second.as_str());
    assert_eq!(v2["data"]["metadata"]["version"], 2);
    // After the grace period (1d), expire destroys version 1.
    apply(&s, &bao.token, "2027-02-23T20:00:00Z").ok();
    let (_, meta) = bao.get("/v1/secret/metadata/keyrot/binance/k1");
    assert_eq!(meta["data"]["versions"]["1"]["destroyed"], true, "{meta}");
    assert_eq!(meta["data"]["versions"]["2"]["destroyed"], false, "{meta}");
    // A revoke deletes the secret and every version.
    s.write("keys/k1.toml", &(s.read("keys/k1.toml") + "compromised = true\n"));
    s.commit("k1 leaked");
    apply(&s, &bao.token, "2027-02-23T20:00:00Z").ok();
    assert_eq!(bao.get("/v1/secret/metadata/keyrot/binance/k1").0, 404);
}

#[test]
fn a_wrong_token_or_a_server_that_is_down_fails_the_key_and_changes_nothing() {
    let bao = Bao::start();
    let s = store(&bao);
    let base = s.head();
    let run = apply(&s, "not-the-token", NOW).fails(1);
    assert!(
        run.stderr
            .contains("error: key k1: rotate not applied: vault at http://127.0.0.1:")
            && run
                .stderr
                .contains("(read metadata): permission denied: the token was refused (403)"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("not-the-token"));
    assert_eq!(s.head(), base);
    assert_eq!(
        fs::read_dir(&s.secrets).unwrap().count(),
        0,
        "no pending secret left behind"
    );

    let missing = s
        .keyrot(&[
            "apply",
            "--yes",
            "--now",
            NOW,
            "--secrets-dir",
            s.secrets.to_str().unwrap(),
        ])
        .fails(1);
    missing.stderr_has("$TEST_BAO_TOKEN is not set");

    drop(bao);
    let run = apply(&s, "whatever", NOW).fails(1);
    run.stderr_has("cannot reach it");
    assert_eq!(s.head(), base);
}

#[test]
fn a_check_and_set_conflict_fails_the_key() {
    let bao = Bao::start();
    let s = store(&bao);
    let base = s.head();
    let secrets = s.secrets.to_str().unwrap().to_string();
    let mut live = s.spawn(
        &["apply", "--yes", "--now", NOW, "--secrets-dir", &secrets],
        &[
            ("TEST_BAO_TOKEN", &bao.token),
            ("KEYROT_TEST_PAUSE", "vault-before-write:3000"),
        ],
    );
    live.wait_for(true, "the pause before the write", |l| {
        l.starts_with("failpoint vault-before-write")
    });
    // Someone else writes the secret while keyrot is between its read and its write.
    let (status, _) = bao.post(
        "/v1/secret/data/keyrot/binance/k1",
        &serde_json::json!({"data": {"secret": "someone-else", "fingerprint": "sha256:x"}}),
    );
    assert_eq!(status, 200);
    assert_eq!(live.finish(), 1);
    assert!(
        live.seen.iter().any(|(e, l)| *e
            && l.contains("check-and-set conflict: keyrot/binance/k1 changed after keyrot read version 0")),
        "{:?}",
        live.seen
    );
    assert_eq!(s.head(), base);
    let (_, body) = bao.get("/v1/secret/data/keyrot/binance/k1");
    assert_eq!(
        body["data"]["data"]["secret"], "someone-else",
        "the other writer's version is kept"
    );
}

#[test]
fn providers_never_see_the_vault_token() {
    let bao = Bao::start();
    let s = store(&bao);
    fs::create_dir_all(s.path("providers")).unwrap();
    s.write(
        "providers/env-dump",
        "#!/bin/sh\ncat > /dev/null\nenv > \"$DUMP\"\necho '{\"ok\": true}'\n",
    );
    let mut perms = fs::metadata(s.path("providers/env-dump")).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    fs::set_permissions(s.path("providers/env-dump"), perms).unwrap();
    s.write(
        "keyrot.toml",
        &(s.read("keyrot.toml") + "\n[service.binance]\nprovider = \"exec:providers/env-dump\"\n"),
    );
    s.commit("a provider that shows its environment");
    let dump = s.root.parent().unwrap().join("env.txt");
    let secrets = s.secrets.to_str().unwrap().to_string();
    s.keyrot_env(
        &["apply", "--yes", "--now", NOW, "--secrets-dir", &secrets],
        &[("TEST_BAO_TOKEN", &bao.token), ("DUMP", dump.to_str().unwrap())],
    )
    .ok();
    let env = fs::read_to_string(dump).unwrap();
    assert!(
        env.contains("DUMP="),
        "the provider ran with the environment: {env}"
    );
    assert!(
        !env.contains(&bao.token) && !env.contains("TEST_BAO_TOKEN"),
        "{env}"
    );
}

/// A store whose sink is Vault, configured by `table` (the lines of [delivery.vault]),
/// with `id` overdue.
fn store_with(table: &str, id: &str) -> Store {
    let s = Store::new();
    s.write(
        "keyrot.toml",
        &(s.read("keyrot.toml")
            + "\n[delivery]\nsink = \"vault\"\n[delivery.vault]\ntoken_env = \"TEST_BAO_TOKEN\"\n"
            + table),
    );
    s.write("owners.toml", OWNERS);
    s.write(
        &format!("keys/{id}.toml"),
        &key("[\"read\"]", "2026-07-01T00:00:00Z", ""),
    );
    s.commit("a key delivered to vault");
    s
}

#[test]
fn over_tls_a_private_ca_is_trusted_only_when_named_and_vault_addr_is_honoured() {
    let certs = tempfile::TempDir::new().unwrap();
    let bao = Bao::start_tls(certs.path());
    let ca = bao.ca.clone().unwrap();
    let ca = ca.to_str().unwrap();
    let address = bao.address();
    let token = ("TEST_BAO_TOKEN", bao.token.as_str());
    let s = store_with("", "k1");
    let head = s.head();

    // No address in keyrot.toml nor in the environment: refused before anything.
    s.apply_at(NOW, &[token])
        .fails(1)
        .stderr_has("neither [delivery.vault] address nor $VAULT_ADDR is set");
    // VAULT_ADDR is used; the server's CA is in no trust store: the key fails, saying
    // what was trusted and how to add a CA.
    let run = s.apply_at(NOW, &[token, ("VAULT_ADDR", &address)]).fails(1);
    run.stderr_has(&format!("vault at {address}"))
        .stderr_has("trusted: the system's trust store; for a private CA set VAULT_CACERT");
    assert_eq!(s.head(), head);
    assert!(!s.secret_file("k1").exists());
    // With VAULT_CACERT naming the CA: delivered over TLS and read back.
    let run = s
        .apply_at(NOW, &[token, ("VAULT_ADDR", &address), ("VAULT_CACERT", ca)])
        .ok();
    run.stdout_has("vault:secret/keyrot/binance/k1");
    assert_ne!(s.head(), head);
    assert!(committed_fp(&s, "k1").starts_with("sha256:"));
}

#[test]
fn a_ca_folder_or_the_stores_own_ca_file_is_trusted_and_the_store_setting_wins() {
    let certs = tempfile::TempDir::new().unwrap();
    let bao = Bao::start_tls(certs.path());
    let ca = bao.ca.clone().unwrap();
    let token = ("TEST_BAO_TOKEN", bao.token.as_str());
    let address = format!("address = \"{}\"\n", bao.address());

    // VAULT_CAPATH: a folder of PEM files.
    let folder = tempfile::TempDir::new().unwrap();
    fs::copy(&ca, folder.path().join("private-ca.pem")).unwrap();
    let s = store_with(&address, "by-folder");
    s.apply_at(NOW, &[token, ("VAULT_CAPATH", folder.path().to_str().unwrap())])
        .ok();

    // ca_cert in keyrot.toml, relative to the store: it wins over a VAULT_CACERT that
    // names something else.
    let s = store_with(&(address + "ca_cert = \"certs/vault-ca.pem\"\n"), "by-setting");
    fs::create_dir_all(s.path("certs")).unwrap();
    fs::copy(&ca, s.path("certs/vault-ca.pem")).unwrap();
    s.commit("the vault CA");
    s.apply_at(NOW, &[token, ("VAULT_CACERT", "/nonexistent/ca.pem")])
        .ok()
        .stdout_has("vault:secret/keyrot/binance/by-setting");
}

#[test]
fn vault_namespace_sends_the_secrets_into_that_namespace() {
    let bao = Bao::start();
    let (status, _) = bao.post("/v1/sys/namespaces/team1", &serde_json::json!({}));
    assert_eq!(status, 200);
    let (status, body) = bao.post(
        "/v1/team1/sys/mounts/secret",
        &serde_json::json!({"type": "kv", "options": {"version": "2"}}),
    );
    assert!(status == 200 || status == 204, "{status} {body}");
    let s = store_with(&format!("address = \"{}\"\n", bao.address()), "k1");
    s.apply_at(
        NOW,
        &[
            ("TEST_BAO_TOKEN", bao.token.as_str()),
            ("VAULT_NAMESPACE", "team1"),
        ],
    )
    .ok();
    let fp = committed_fp(&s, "k1");
    let (status, body) = bao.get("/v1/team1/secret/data/keyrot/binance/k1");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["data"]["fingerprint"], fp.as_str());
    let (status, _) = bao.get("/v1/secret/data/keyrot/binance/k1");
    assert_eq!(status, 404, "nothing in the root namespace");
}

#[test]
fn many_keys_are_delivered_at_once_each_to_its_own_secret() {
    let bao = Bao::start();
    let s = store(&bao);
    for i in 0..8 {
        s.write(
            &format!("keys/p{i}.toml"),
            &key("[\"read\"]", "2026-07-01T00:00:00Z", ""),
        );
    }
    s.commit("eight more keys");
    s.apply_at(NOW, &[("TEST_BAO_TOKEN", bao.token.as_str())]).ok();
    for id in ["k1", "p0", "p3", "p7"] {
        let (status, body) = bao.get(&format!("/v1/secret/data/keyrot/binance/{id}"));
        assert_eq!(status, 200, "{id}: {body}");
        assert_eq!(
            body["data"]["data"]["fingerprint"],
            committed_fp(&s, id).as_str(),
            "{id}"
        );
    }
}
