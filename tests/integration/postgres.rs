//! The built-in postgres provider against a real PostgreSQL server on loopback.

use crate::common::*;
use crate::servers::Postgres;

/// Whether `user` can log in with `password`.
fn logs_in(pg: &Postgres, user: &str, password: &str) -> bool {
    let mut config: postgres::Config = format!("host=127.0.0.1 port={} dbname=postgres", pg.port)
        .parse()
        .unwrap();
    config.user(user).password(password);
    config.connect(postgres::NoTls).is_ok()
}

fn admin(pg: &Postgres) -> postgres::Client {
    postgres::Client::connect(&pg.admin_dsn(), postgres::NoTls).unwrap()
}

const OLD: &str = "the-password-before-keyrot";

/// `payments` (service payments-db), whose secret is the password of role `payments`.
fn setup() -> (Store, Postgres) {
    let s = Store::new();
    let pg = Postgres::start(s.root.parent().unwrap());
    admin(&pg)
        .batch_execute(&format!("CREATE ROLE payments LOGIN PASSWORD '{OLD}'"))
        .unwrap();
    assert!(logs_in(&pg, "payments", OLD));
    s.write(
        "keyrot.toml",
        &(s.read("keyrot.toml")
            + "\n[service.payments-db]\nprovider = \"postgres\"\n[service.payments-db.postgres]\ndsn_env = \"KEYROT_PG_ADMIN_DSN\"\nrole = \"{id}\"\n"),
    );
    s.write("owners.toml", OWNERS);
    s.write(
        "keys/payments.toml",
        &key(
            "[\"read\"]",
            "2026-07-01T00:00:00Z",
            &format!("fingerprint = \"sha256:{}\"\n", sha256_hex(OLD.as_bytes())),
        )
        .replace("binance", "payments-db"),
    );
    s.commit("payments database key");
    (s, pg)
}

fn apply(s: &Store, pg: &Postgres, now: &str) -> Run {
    s.apply_at(now, &[("KEYROT_PG_ADMIN_DSN", &pg.admin_dsn())])
}

fn secret(s: &Store) -> (String, String) {
    let text = std::fs::read_to_string(s.secret_file("payments")).unwrap();
    let (user, pw) = text.trim_end().split_once(':').expect("user:password");
    (user.to_string(), pw.to_string())
}

#[test]
fn alternating_users_keep_the_old_password_through_the_grace_period_only() {
    let (s, pg) = setup();
    apply(&s, &pg, NOW).ok();
    let (user, pw) = secret(&s);
    assert_eq!(user, "payments_a");
    assert!(logs_in(&pg, "payments_a", &pw), "the new secret logs in");
    assert!(
        logs_in(&pg, "payments", OLD),
        "the old one still works during the grace period"
    );
    let text = std::fs::read_to_string(s.secret_file("payments")).unwrap();
    assert!(s
        .read("keys/payments.toml")
        .contains(&sha256_hex(text.trim_end().as_bytes())));

    // After the grace period (1d), expire: the old login stops, the new one works.
    let later = "2026-11-24T20:00:00Z";
    apply(&s, &pg, later).ok();
    assert!(!logs_in(&pg, "payments", OLD), "expired secret still logs in");
    assert!(logs_in(&pg, "payments_a", &pw));

    // The next rotation alternates to payments_b; payments_a lasts through its grace.
    let much_later = "2027-02-24T20:00:00Z";
    s.write(
        "keys/payments.toml",
        &s.read("keys/payments.toml").replace(
            "last_used_at = 2026-11-22T00:00:00Z",
            "last_used_at = 2027-02-24T00:00:00Z",
        ),
    );
    s.commit("in use");
    apply(&s, &pg, much_later).ok();
    let (user2, pw2) = secret(&s);
    assert_eq!(user2, "payments_b");
    assert!(logs_in(&pg, "payments_b", &pw2));
    assert!(logs_in(&pg, "payments_a", &pw));

    // A revoke blocks every login of the key.
    s.write(
        "keys/payments.toml",
        &format!("compromised = true\n{}", s.read("keys/payments.toml")),
    );
    s.commit("leaked");
    apply(&s, &pg, much_later).ok();
    assert!(!logs_in(&pg, "payments_a", &pw));
    assert!(!logs_in(&pg, "payments_b", &pw2));
}

#[test]
fn without_a_grace_period_the_role_itself_gets_the_new_password() {
    let (s, pg) = setup();
    s.write(
        "keyrot.toml",
        &s.read("keyrot.toml")
            .replace("grace_period = \"24h\"", "grace_period = \"0s\""),
    );
    s.commit("no grace");
    apply(&s, &pg, NOW).ok();
    let pw = std::fs::read_to_string(s.secret_file("payments")).unwrap();
    assert!(!pw.contains(':'), "single-user secrets are the password alone");
    assert!(logs_in(&pg, "payments", pw.trim_end()));
    assert!(!logs_in(&pg, "payments", OLD));
}

#[test]
fn a_missing_or_wrong_admin_connection_fails_the_key() {
    let (s, pg) = setup();
    let base = s.head();
    let secrets = s.secrets.to_str().unwrap().to_string();
    let run = s
        .keyrot(&["apply", "--yes", "--now", NOW, "--secrets-dir", &secrets])
        .fails(1);
    run.stderr_has("$KEYROT_PG_ADMIN_DSN is not set");
    let run = s
        .keyrot_env(
            &["apply", "--yes", "--now", NOW, "--secrets-dir", &secrets],
            &[(
                "KEYROT_PG_ADMIN_DSN",
                &format!("host=127.0.0.1 port={} user=nobody dbname=postgres", pg.port),
            )],
        )
        .fails(1);
    run.stderr_has("cannot connect as admin");
    assert_eq!(s.head(), base);
    assert!(logs_in(&pg, "payments", OLD));
}
