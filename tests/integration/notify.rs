//! Notifications (`[[notify]]`): a real HTTP server on loopback receives signed
//! webhooks; committed commands get the event on stdin; failures are retried, then
//! reported, and never change an apply; `notify upcoming` tells each owner ahead.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::common::*;

/// One request the server received.
#[derive(Clone, Debug)]
struct Request {
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A minimal HTTP/1.1 server on a loopback port, answering each request with the next
/// status of `statuses` (then 200), recording what it got.
struct Hook {
    url: String,
    got: Arc<Mutex<Vec<Request>>>,
}

impl Hook {
    fn start(statuses: &[u16]) -> Hook {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://127.0.0.1:{}/hook", listener.local_addr().unwrap().port());
        let got = Arc::new(Mutex::new(Vec::new()));
        let seen = got.clone();
        let mut statuses: Vec<u16> = statuses.iter().rev().copied().collect();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let path = line.split(' ').nth(1).unwrap_or_default().to_string();
                let mut headers = Vec::new();
                loop {
                    let mut h = String::new();
                    reader.read_line(&mut h).unwrap();
                    let h = h.trim_end();
                    if h.is_empty() {
                        break;
                    }
                    let (k, v) = h.split_once(':').unwrap();
                    headers.push((k.trim().to_string(), v.trim().to_string()));
                }
                let len: usize = headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .map_or(0, |(_, v)| v.parse().unwrap());
                let mut body = vec![0; len];
                reader.read_exact(&mut body).unwrap();
                seen.lock().unwrap().push(Request { path, headers, body });
                let status = statuses.pop().unwrap_or(200);
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        Hook { url, got }
    }

    fn requests(&self) -> Vec<Request> {
        self.got.lock().unwrap().clone()
    }
}

fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    format!(
        "sha256={}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

const OWNERS_WITH_EMAIL: &str = "[alice]\nstatus = \"active\"\nteam = \"trading\"\nemail = \"alice@example.com\"\n\n[bob]\nstatus = \"active\"\nteam = \"payments\"\nemail = \"bob@example.com\"\n";

/// A store with `bot` due for rotation and a `[[notify]]` webhook for `on`.
fn store_with_webhook(on: &str) -> Store {
    let s = Store::with_keys(&[("bot", &key("[\"read\"]", "2026-01-01T00:00:00Z", ""))]);
    s.write("owners.toml", OWNERS_WITH_EMAIL);
    s.append(
        "keyrot.toml",
        &format!("\n[[notify]]\non = {on}\nurl_env = \"HOOK_URL\"\nsecret_env = \"HOOK_SECRET\"\n"),
    );
    s.commit("notify");
    s
}

#[test]
fn an_apply_posts_one_signed_event_to_the_webhook() {
    let s = store_with_webhook("[\"applied\", \"failed\"]");
    let hook = Hook::start(&[]);
    s.apply_at(NOW, &[("HOOK_URL", &hook.url), ("HOOK_SECRET", "s3cret")])
        .ok();
    let got = hook.requests();
    assert_eq!(got.len(), 1, "one event per apply: {got:?}");
    let r = &got[0];
    assert_eq!(r.path, "/hook");
    assert_eq!(r.header("X-Keyrot-Event"), Some("applied"));
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    assert_eq!(
        r.header("X-Keyrot-Signature"),
        Some(signature("s3cret", &r.body).as_str())
    );
    let event = r.json();
    crate::schemas::valid("notify-event", &event);
    assert_eq!(event["event"], "applied");
    assert_eq!(event["commit"], s.head().trim());
    assert_eq!(event["store"], s.root.canonicalize().unwrap().to_str().unwrap());
    let a = &event["actions"][0];
    assert_eq!(
        (
            a["key"].as_str(),
            a["owner"].as_str(),
            a["owner_email"].as_str(),
            a["action"].as_str(),
            a["policy"].as_str()
        ),
        (
            Some("bot"),
            Some("alice"),
            Some("alice@example.com"),
            Some("rotate"),
            Some("max-age")
        )
    );
    let secret = std::fs::read_to_string(s.secret_file("bot")).unwrap();
    assert!(
        !String::from_utf8_lossy(&r.body).contains(secret.trim()),
        "never the secret"
    );

    // Nothing to change: no commit, no event.
    s.apply_at(NOW, &[("HOOK_URL", &hook.url), ("HOOK_SECRET", "s3cret")])
        .ok();
    assert_eq!(hook.requests().len(), 1);
}

#[test]
fn a_failing_webhook_is_retried_then_reported_and_the_apply_stands() {
    // Two refusals, then success: delivered on the third try, nothing reported.
    let s = store_with_webhook("[\"applied\"]");
    let hook = Hook::start(&[500, 503]);
    let run = s
        .apply_at(NOW, &[("HOOK_URL", &hook.url), ("HOOK_SECRET", "s3cret")])
        .ok();
    assert_eq!(hook.requests().len(), 3);
    assert!(!run.stderr.contains("notification"), "{}", run.stderr);
    let bodies: Vec<Vec<u8>> = hook.requests().into_iter().map(|r| r.body).collect();
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "the same event each try");

    // Nobody listening: three tries, one warning without the URL, exit 0, the commit.
    let s = store_with_webhook("[\"applied\"]");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/secret-token-in-the-url");
    let commits = s.commit_count();
    let run = s
        .apply_at(NOW, &[("HOOK_URL", &url), ("HOOK_SECRET", "s3cret")])
        .ok();
    run.stderr_has("warning: notification webhook $HOOK_URL (applied) failed after 3 tries")
        .stderr_has("the apply stands");
    assert!(!run.stderr.contains("secret-token-in-the-url"), "{}", run.stderr);
    assert_eq!(s.commit_count(), commits + 1);

    // The URL missing from the environment is said as such.
    let s = store_with_webhook("[\"applied\"]");
    s.apply_at(NOW, &[]).ok().stderr_has("$HOOK_URL is not set");
}

#[test]
fn a_failed_apply_sends_failed_with_each_error() {
    let s = store_with_webhook("[\"failed\"]");
    s.install_ledger("10s", "");
    s.write(
        "keys/bot.toml",
        &s.read("keys/bot.toml").replace("binance", "ledger"),
    );
    s.commit("ledger");
    let hook = Hook::start(&[]);
    let ledger = s.root.parent().unwrap().join("ledger");
    std::fs::create_dir_all(&ledger).unwrap();
    s.apply_at(
        NOW,
        &[
            ("HOOK_URL", &hook.url),
            ("HOOK_SECRET", "s3cret"),
            ("LEDGER_DIR", ledger.to_str().unwrap()),
            ("LEDGER_FAIL", "create"),
        ],
    )
    .fails(1);
    let got = hook.requests();
    assert_eq!(got.len(), 1, "{got:?}");
    let event = got[0].json();
    crate::schemas::valid("notify-event", &event);
    assert_eq!(event["event"], "failed");
    assert_eq!(event["actions"][0]["key"], "bot");
    assert!(
        event["actions"][0]["error"]
            .as_str()
            .unwrap()
            .contains("provider"),
        "{event:#}"
    );
}

/// Commits `examples/notify/<name>` (or `text`) as `notify/<name>`, executable.
fn commit_command(s: &Store, name: &str, text: Option<&str>) {
    std::fs::create_dir_all(s.path("notify")).unwrap();
    let path = s.path(&format!("notify/{name}"));
    match text {
        Some(t) => std::fs::write(&path, t).unwrap(),
        None => {
            std::fs::copy(
                format!("{}/examples/notify/{name}", env!("CARGO_MANIFEST_DIR")),
                &path,
            )
            .unwrap();
        }
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn a_committed_command_gets_the_event_and_the_shipped_examples_deliver_it() {
    let s = Store::with_keys(&[("bot", &key("[\"read\"]", "2026-01-01T00:00:00Z", ""))]);
    s.write("owners.toml", OWNERS_WITH_EMAIL);
    commit_command(&s, "record", Some("#!/bin/sh\ncat > \"$NOTIFY_OUT\"\n"));
    commit_command(&s, "slack", None);
    commit_command(&s, "email", None);
    // A fake sendmail that keeps the mail, first on PATH.
    let bin = s.root.parent().unwrap().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let mail = s.root.parent().unwrap().join("mail.txt");
    std::fs::write(
        bin.join("sendmail"),
        format!(
            "#!/bin/sh\n[ \"$1\" = -t ] || exit 2\ncat > '{}'\n",
            mail.display()
        ),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(bin.join("sendmail"))
        .status()
        .unwrap();
    s.append(
        "keyrot.toml",
        "\n[[notify]]\ncommand = \"notify/record\"\n\n[[notify]]\non = [\"applied\"]\ncommand = \"notify/slack\"\n\n[[notify]]\non = [\"applied\"]\ncommand = \"notify/email\"\n",
    );
    s.commit("notify commands");
    let out = s.root.parent().unwrap().join("event.json");
    let hook = Hook::start(&[]);
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    s.apply_at(
        NOW,
        &[
            ("NOTIFY_OUT", out.to_str().unwrap()),
            ("SLACK_WEBHOOK_URL", &hook.url),
            ("PATH", &path),
        ],
    )
    .ok();
    let event: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(event["event"], "applied");
    assert_eq!(event["actions"][0]["owner_email"], "alice@example.com");

    let slack = hook.requests();
    assert_eq!(slack.len(), 1);
    let text = slack[0].json()["text"].as_str().unwrap().to_string();
    assert!(text.contains("keyrot applied 1 change(s)"), "{text}");
    assert!(text.contains("rotate `bot` (alice) [max-age]"), "{text}");

    let mail = std::fs::read_to_string(&mail).unwrap();
    assert!(mail.contains("To: alice@example.com\n"), "{mail}");
    assert!(
        mail.contains("Subject: keyrot: 1 key change(s) applied\n"),
        "{mail}"
    );
    assert!(mail.contains("- rotate bot (owner alice) [max-age]"), "{mail}");
}

#[test]
fn a_command_that_is_not_committed_or_fails_is_reported() {
    let s = Store::with_keys(&[("bot", &key("[\"read\"]", "2026-01-01T00:00:00Z", ""))]);
    s.append(
        "keyrot.toml",
        "\n[[notify]]\ncommand = \"notify/missing\"\n\n[[notify]]\ncommand = \"notify/broken\"\n",
    );
    commit_command(
        &s,
        "broken",
        Some("#!/bin/sh\necho 'smtp: connection refused' >&2\nexit 3\n"),
    );
    s.commit("notify");
    let run = s.apply().ok();
    run.stderr_has("warning: notification notify/missing (applied) failed after 3 tries: notify/missing is not committed")
        .stderr_has("notification notify/broken (applied) failed after 3 tries: exited with status 3: smtp: connection refused");
}

#[test]
fn upcoming_tells_each_owner_what_falls_due() {
    // alice's key is due in 5 days, bob's in 20: within 7d only alice hears.
    let s = Store::with_keys(&[
        ("alice-bot", &key("[\"read\"]", "2026-08-29T20:00:00Z", "")),
        (
            "bob-pay",
            &key("[\"read\"]", "2026-09-13T20:00:00Z", "").replace("owner = \"alice\"", "owner = \"bob\""),
        ),
    ]);
    s.write("owners.toml", OWNERS_WITH_EMAIL);
    s.append(
        "keyrot.toml",
        "\n[[notify]]\non = [\"upcoming\"]\nurl_env = \"HOOK_URL\"\n",
    );
    s.commit("notify");
    let hook = Hook::start(&[]);
    let dry = s
        .keyrot(&[
            "notify",
            "upcoming",
            "--within",
            "7d",
            "--now",
            NOW,
            "--dry-run",
            "--json",
        ])
        .ok()
        .json();
    assert!(hook.requests().is_empty(), "--dry-run sends nothing");
    assert_eq!(dry["events"].as_array().unwrap().len(), 1, "{dry:#}");

    let run = s
        .keyrot_env(
            &["notify", "upcoming", "--within", "7d", "--now", NOW],
            &[("HOOK_URL", &hook.url)],
        )
        .ok();
    run.stdout_has("alice <alice@example.com>: rotate alice-bot")
        .stdout_has("Sent 1 notification(s) for 1 owner(s).");
    let got = hook.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].header("X-Keyrot-Event"), Some("upcoming"));
    assert_eq!(
        got[0].header("X-Keyrot-Signature"),
        None,
        "no secret_env: unsigned"
    );
    let event = got[0].json();
    assert_eq!(
        (event["owner"].as_str(), event["within"].as_str()),
        (Some("alice"), Some("7d"))
    );
    assert_eq!(event["actions"][0]["key"], "alice-bot");

    // Three weeks ahead both owners hear, each about their own key.
    let json = s
        .keyrot_env(
            &["notify", "upcoming", "--within", "21d", "--now", NOW, "--json"],
            &[("HOOK_URL", &hook.url)],
        )
        .ok()
        .json();
    crate::schemas::valid("notify-upcoming", &json);
    crate::schemas::valid("notify-upcoming", &dry);
    let owners: Vec<&str> = json["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["owner"].as_str().unwrap())
        .collect();
    assert_eq!(owners, ["alice", "bob"]);
    assert_eq!(hook.requests().len(), 3);

    // A target that cannot be reached makes `notify upcoming` fail (it is its job).
    s.keyrot_env(
        &["notify", "upcoming", "--now", NOW],
        &[("HOOK_URL", "http://127.0.0.1:9/x")],
    )
    .fails(1)
    .stderr_has("error: notification webhook $HOOK_URL for alice failed after 3 tries");
}

#[test]
fn bad_notify_tables_are_named_with_their_line() {
    let s = Store::new();
    s.append(
        "keyrot.toml",
        "\n[[notify]]\non = [\"applied\", \"sent\"]\ncommand = \"notify/x\"\n\n[[notify]]\ncommand = \"../x\"\n\n[[notify]]\ncommand = \"a\"\nurl_env = \"B\"\n\n[[notify]]\nurl_env = \"lower case\"\n",
    );
    let run = s.keyrot(&["check"]).fails(1);
    run.stderr_has("`sent` is not an event")
        .stderr_has("notify.command `../x` must be a relative path")
        .stderr_has("a command or a url_env, not both")
        .stderr_has("notify.url_env: `lower case` is not an environment variable name");
}
