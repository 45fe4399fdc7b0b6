//! `[[notify]]` in `keyrot.toml`: who hears about applies and upcoming rotations.
//!
//! ```toml
//! [[notify]]
//! on = ["applied", "failed", "upcoming"]   # default: all three
//! command = "notify/slack"                 # an executable committed in the store: event JSON on stdin
//! timeout = "30s"                          # default 30s
//! [[notify]]
//! on = ["applied"]
//! url_env = "KEYROT_WEBHOOK_URL"           # POST the event JSON to the URL in this variable
//! secret_env = "KEYROT_WEBHOOK_SECRET"     # X-Keyrot-Signature: sha256=<HMAC-SHA256 of the body>
//! ```

use serde::Deserialize;
use toml::Spanned;

use crate::time::Dur;

/// What a notification is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Event {
    /// An apply committed its changes.
    Applied,
    /// An apply's actions failed at their service (some or all of them).
    Failed,
    /// `keyrot notify upcoming`: what a plan some days ahead rotates or revokes.
    Upcoming,
}

impl Event {
    pub const ALL: [Event; 3] = [Event::Applied, Event::Failed, Event::Upcoming];

    pub fn as_str(self) -> &'static str {
        match self {
            Event::Applied => "applied",
            Event::Failed => "failed",
            Event::Upcoming => "upcoming",
        }
    }
}

/// Where a notification goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// An executable committed in the store (relative path), run with the event on stdin.
    Command(String),
    /// An HTTP POST to the URL held by environment variable `url_env`, signed with the
    /// secret held by `secret_env` when one is named. Neither is ever in the store.
    Webhook {
        url_env: String,
        secret_env: Option<String>,
    },
}

/// One `[[notify]]` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notify {
    pub on: Vec<Event>,
    pub target: Target,
    /// How long one try may take.
    pub timeout: Dur,
}

impl Notify {
    /// How it is named in messages: the command, or the variable holding the URL.
    pub fn display(&self) -> String {
        match &self.target {
            Target::Command(c) => c.clone(),
            Target::Webhook { url_env, .. } => format!("webhook ${url_env}"),
        }
    }
}

/// Default time one try of a notification may take.
const DEFAULT_TIMEOUT_SECS: i64 = 30;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNotify {
    on: Option<Vec<Spanned<String>>>,
    command: Option<Spanned<String>>,
    url_env: Option<Spanned<String>>,
    secret_env: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
}

/// Reads one `[[notify]]` table (whose span is `table`), telling `bad` what is wrong
/// with it and where.
pub(super) fn notify(
    raw: RawNotify,
    table: std::ops::Range<usize>,
    bad: &mut dyn FnMut(std::ops::Range<usize>, String),
) -> Option<Notify> {
    let mut on = Vec::new();
    match raw.on {
        None => on.extend(Event::ALL),
        Some(list) => {
            for e in list {
                match Event::ALL.iter().find(|x| x.as_str() == e.get_ref()) {
                    Some(ev) if !on.contains(ev) => on.push(*ev),
                    Some(_) => bad(e.span(), format!("notify.on: `{}` is listed twice", e.get_ref())),
                    None => bad(
                        e.span(),
                        format!(
                            "notify.on: `{}` is not an event; the events are applied, failed, upcoming",
                            e.get_ref()
                        ),
                    ),
                }
            }
            if on.is_empty() {
                bad(table.clone(), "notify.on must name at least one event".into());
            }
        }
    }
    let env_name = |v: Spanned<String>, field: &str, bad: &mut dyn FnMut(std::ops::Range<usize>, String)| {
        if super::settings::is_env_name(v.get_ref()) {
            Some(v.into_inner())
        } else {
            bad(
                v.span(),
                format!(
                    "notify.{field}: `{}` is not an environment variable name",
                    v.get_ref()
                ),
            );
            None
        }
    };
    let target = match (raw.command, raw.url_env) {
        (Some(c), None) => {
            if raw.secret_env.is_some() {
                bad(
                    table.clone(),
                    "notify.secret_env signs webhooks; a command gets the event on stdin".into(),
                );
            }
            match super::settings::check_folder(c.get_ref()) {
                Ok(()) => Target::Command(c.into_inner()),
                Err(_) => {
                    bad(
                        c.span(),
                        format!("notify.command `{}` must be a relative path to an executable inside the store, such as \"notify/slack\"", c.get_ref()),
                    );
                    return None;
                }
            }
        }
        (None, Some(u)) => Target::Webhook {
            url_env: env_name(u, "url_env", bad)?,
            secret_env: match raw.secret_env {
                Some(s) => Some(env_name(s, "secret_env", bad)?),
                None => None,
            },
        },
        (Some(_), Some(_)) => {
            bad(
                table,
                "a [[notify]] table has a command or a url_env, not both".into(),
            );
            return None;
        }
        (None, None) => {
            bad(
                table,
                "a [[notify]] table needs a command (an executable in the store) or a url_env (a webhook)"
                    .into(),
            );
            return None;
        }
    };
    let timeout = match raw.timeout {
        None => Dur::from_secs(DEFAULT_TIMEOUT_SECS),
        Some(t) => match Dur::parse(t.get_ref()) {
            Ok(d) if (1..=600).contains(&d.secs()) => d,
            _ => {
                bad(t.span(), "notify.timeout must be between 1s and 10m".into());
                return None;
            }
        },
    };
    Some(Notify { on, target, timeout })
}
