//! `owners.toml`: the people who own keys, and whether they are still here.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::value::Datetime;
use toml::Spanned;

use super::parse::{span_problem, toml_problem};
use crate::error::Problem;
use crate::time::Time;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnerStatus {
    Active,
    Departed,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub status: OwnerStatus,
    pub team: Option<String>,
    pub email: Option<String>,
    /// When a departed owner left, if recorded: policies rotate a key once after it.
    pub departed_at: Option<Time>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOwner {
    status: Option<Spanned<String>>,
    team: Option<String>,
    email: Option<String>,
    departed_at: Option<Spanned<Datetime>>,
}

/// Parses `owners.toml` into owners by name.
pub(crate) fn parse(path: &str, text: &str) -> (BTreeMap<String, Owner>, Vec<Problem>) {
    let mut problems = Vec::new();
    let raw: BTreeMap<String, Spanned<RawOwner>> = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => return (BTreeMap::new(), vec![toml_problem(path, text, &e)]),
    };
    let mut owners = BTreeMap::new();
    for (name, raw) in raw {
        let span = raw.span();
        let raw = raw.into_inner();
        if name.trim().is_empty() {
            problems.push(span_problem(
                path,
                text,
                span,
                "an owner's name must not be empty".into(),
            ));
            continue;
        }
        let status = match raw.status {
            None => OwnerStatus::Active,
            Some(s) => match s.get_ref().as_str() {
                "active" => OwnerStatus::Active,
                "departed" => OwnerStatus::Departed,
                other => {
                    problems.push(span_problem(
                        path,
                        text,
                        s.span(),
                        format!("owner `{name}`: status `{other}` is not \"active\" or \"departed\""),
                    ));
                    continue;
                }
            },
        };
        let departed_at = match raw.departed_at {
            None => None,
            Some(at) if status != OwnerStatus::Departed => {
                problems.push(span_problem(
                    path,
                    text,
                    at.span(),
                    format!("owner `{name}`: departed_at is set but status is not \"departed\""),
                ));
                continue;
            }
            Some(at) => match Time::from_toml(at.get_ref()) {
                Ok(t) => Some(t),
                Err(why) => {
                    problems.push(span_problem(
                        path,
                        text,
                        at.span(),
                        format!("owner `{name}`: departed_at: {why}"),
                    ));
                    continue;
                }
            },
        };
        owners.insert(
            name,
            Owner {
                status,
                team: raw.team,
                email: raw.email,
                departed_at,
            },
        );
    }
    (owners, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_owners_and_defaults_to_active() {
        let (owners, problems) = parse(
            "owners.toml",
            "[alice]\nstatus = \"active\"\nteam = \"trading\"\n[bob]\nstatus = \"departed\"\n[carol]\n",
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(owners["alice"].team.as_deref(), Some("trading"));
        assert_eq!(owners["bob"].status, OwnerStatus::Departed);
        assert_eq!(owners["carol"].status, OwnerStatus::Active);
    }

    #[test]
    fn departed_at_is_read_and_only_for_departed_owners() {
        let (owners, problems) = parse(
            "owners.toml",
            "[bob]\nstatus = \"departed\"\ndeparted_at = 2026-11-01T09:00:00Z\n",
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            owners["bob"].departed_at,
            Some(Time::parse_rfc3339("2026-11-01T09:00:00Z").unwrap())
        );
        let (_, problems) = parse("owners.toml", "[al]\ndeparted_at = 2026-11-01T09:00:00Z\n");
        assert_eq!(problems[0].pos, Some((2, 15)), "{problems:?}");
        assert!(problems[0].message.contains("status is not \"departed\""));
        let (_, problems) = parse(
            "owners.toml",
            "[bob]\nstatus = \"departed\"\ndeparted_at = 2026-11-01\n",
        );
        assert!(
            problems[0].message.contains("no time zone offset"),
            "{problems:?}"
        );
    }

    #[test]
    fn bad_status_and_unknown_fields_are_reported() {
        let (_, problems) = parse("owners.toml", "[alice]\nstatus = \"gone\"\n");
        assert_eq!(problems[0].pos, Some((2, 10)));
        let (_, problems) = parse("owners.toml", "[alice]\nrole = \"x\"\n");
        assert!(problems[0].message.contains("role"));
    }
}
