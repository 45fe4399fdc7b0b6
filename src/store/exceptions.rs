//! `exceptions.toml`: accepted risks. Each exception names one key and one policy; a
//! decision of that policy on that key stays in the plan, marked excepted, and is not
//! applied until the exception expires.

use serde::Deserialize;
use toml::Spanned;

use super::parse::{span_problem, toml_problem};
use crate::error::{line_col, Problem};
use crate::time::{Dur, Time};

/// One accepted risk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exception {
    pub key: String,
    pub policy: String,
    pub reason: String,
    pub approved_by: String,
    /// The instant the exception stops counting: a date means the start of that day
    /// (UTC), so `expires = 2026-12-31` no longer holds on December 31st.
    pub expires: Time,
    /// `expires` as written, for plans and messages (`2026-12-31`).
    pub expires_text: String,
    /// Line and column of the `[[exception]]` header and of its `expires` value.
    pub pos: (usize, usize),
    pub expires_pos: (usize, usize),
}

impl Exception {
    /// Whether it still holds at `now`.
    pub fn is_active(&self, now: Time) -> bool {
        now < self.expires
    }
}

/// Default for `[exceptions].max_days` in `keyrot.toml`.
pub(crate) const DEFAULT_MAX_DAYS: i64 = 90;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    exception: Vec<Spanned<RawException>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawException {
    key: Spanned<String>,
    policy: Spanned<String>,
    reason: Spanned<String>,
    approved_by: Spanned<String>,
    expires: Spanned<toml::value::Datetime>,
}

/// `2026-12-31` or a full offset date-time.
fn expiry(dt: &toml::value::Datetime) -> Result<Time, String> {
    match (dt.date, dt.time, dt.offset) {
        (Some(d), None, None) => Time::parse_rfc3339(&format!("{d}T00:00:00Z")),
        (Some(_), Some(_), Some(_)) => Time::from_toml(dt),
        _ => Err(format!(
            "`{dt}` is not a date (2026-12-31) or a time with an offset (2026-12-31T12:00:00Z)"
        )),
    }
}

/// Parses `exceptions.toml`, reporting every bad entry.
pub(crate) fn parse(path: &str, text: &str) -> (Vec<Exception>, Vec<Problem>) {
    let mut problems = Vec::new();
    let raw: Raw = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => return (Vec::new(), vec![toml_problem(path, text, &e)]),
    };
    let mut out: Vec<Exception> = Vec::new();
    for entry in raw.exception {
        let pos = line_col(text, entry.span().start);
        let e = entry.into_inner();
        let mut ok = true;
        let mut bad = |span: std::ops::Range<usize>, msg: String| {
            problems.push(span_problem(path, text, span, msg));
            ok = false;
        };
        if !super::key::is_valid_id(e.key.get_ref()) {
            bad(
                e.key.span(),
                format!("`{}` is not a valid key id", e.key.get_ref()),
            );
        }
        if !super::layout::is_valid_policy_name(e.policy.get_ref()) {
            bad(
                e.policy.span(),
                format!("`{}` is not a valid policy name", e.policy.get_ref()),
            );
        }
        for (field, v) in [("reason", &e.reason), ("approved_by", &e.approved_by)] {
            if v.get_ref().trim().is_empty() {
                bad(v.span(), format!("{field} must not be empty"));
            }
        }
        let expires = match expiry(e.expires.get_ref()) {
            Ok(t) => Some(t),
            Err(why) => {
                bad(e.expires.span(), format!("expires: {why}"));
                None
            }
        };
        let duplicate = out
            .iter()
            .find(|x| x.key == *e.key.get_ref() && x.policy == *e.policy.get_ref());
        if let Some(first) = duplicate {
            bad(
                e.key.span(),
                format!(
                    "a second exception for key {} and policy {} (the first is on line {}); keep one",
                    first.key, first.policy, first.pos.0
                ),
            );
        }
        if let (true, Some(expires)) = (ok, expires) {
            out.push(Exception {
                key: e.key.get_ref().clone(),
                policy: e.policy.get_ref().clone(),
                reason: e.reason.get_ref().trim().to_string(),
                approved_by: e.approved_by.get_ref().trim().to_string(),
                expires,
                expires_text: e.expires.get_ref().to_string(),
                pos,
                expires_pos: line_col(text, e.expires.span().start),
            });
        }
    }
    (out, problems)
}

/// Exceptions that reach further than `max_days` past `now`: an accepted risk must be
/// looked at again, so none may be granted for longer.
pub(crate) fn beyond_horizon(path: &str, exceptions: &[Exception], now: Time, max_days: i64) -> Vec<Problem> {
    let limit = Dur::days_n(max_days).and_then(|d| now.checked_add(d));
    exceptions
        .iter()
        .filter(|e| limit.is_none_or(|limit| e.expires > limit))
        .map(|e| {
            Problem::at(
                path,
                Some(e.expires_pos),
                format!(
                    "exception for key {} and policy {} expires {}, more than {max_days} days ahead; \
                     the limit is [exceptions].max_days in keyrot.toml",
                    e.key, e.policy, e.expires_text
                ),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[exception]]
key = "legacy-admin"
policy = "least-privilege"
reason = "vendor cannot allowlist before the migration (SEC-123)"
approved_by = "carol"
expires = 2026-12-31

[[exception]]
key = "old-bot"
policy = "max-age"
reason = "decommissioned on Friday"
approved_by = "dave"
expires = 2026-11-30T18:00:00Z
"#;

    fn t(s: &str) -> Time {
        Time::parse_rfc3339(s).unwrap()
    }

    #[test]
    fn dates_expire_at_the_start_of_the_day() {
        let (list, problems) = parse("exceptions.toml", GOOD);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].expires, t("2026-12-31T00:00:00Z"));
        assert_eq!(list[0].expires_text, "2026-12-31");
        assert_eq!(list[0].pos.0, 2);
        assert!(list[0].is_active(t("2026-12-30T23:59:59Z")));
        assert!(!list[0].is_active(t("2026-12-31T00:00:00Z")));
        assert_eq!(list[1].expires, t("2026-11-30T18:00:00Z"));
    }

    #[test]
    fn every_bad_entry_is_reported_with_its_line() {
        let text = "[[exception]]\nkey = \"Bad Id\"\npolicy = \"max-age\"\nreason = \"\"\napproved_by = \"x\"\nexpires = 2026-12-31T10:00:00\n\n[[exception]]\nkey = \"a\"\npolicy = \"p\"\nreason = \"r\"\napproved_by = \"x\"\nexpires = 2026-12-01\n[[exception]]\nkey = \"a\"\npolicy = \"p\"\nreason = \"r\"\napproved_by = \"x\"\nexpires = 2026-12-02\n";
        let (list, problems) = parse("exceptions.toml", text);
        let lines: Vec<usize> = problems.iter().filter_map(|p| p.pos.map(|p| p.0)).collect();
        assert_eq!(lines, vec![2, 4, 6, 15], "{problems:?}");
        assert_eq!(list.len(), 1);
    }

    #[test]
    fn missing_and_unknown_fields_are_errors() {
        let (_, p) = parse("exceptions.toml", "[[exception]]\nkey = \"a\"\npolicy = \"p\"\n");
        assert!(p[0].message.contains("missing field"), "{p:?}");
        let (_, p) = parse(
            "exceptions.toml",
            "[[exception]]\nkey = \"a\"\npolicy = \"p\"\nreason = \"r\"\napproved_by = \"x\"\nexpires = 2026-12-01\nforever = true\n",
        );
        assert!(p[0].message.contains("forever"), "{p:?}");
    }

    #[test]
    fn the_horizon_is_counted_from_now() {
        let (list, _) = parse("exceptions.toml", GOOD);
        assert!(beyond_horizon("exceptions.toml", &list, t("2026-11-22T00:00:00Z"), 90).is_empty());
        let p = beyond_horizon("exceptions.toml", &list, t("2026-11-22T00:00:00Z"), 30);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].pos, Some((7, 11)));
        assert!(p[0].message.contains("more than 30 days"), "{}", p[0].message);
    }
}
