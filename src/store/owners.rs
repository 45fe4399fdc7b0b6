//! `owners.toml`: the people who own keys, and whether they are still here.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::parse::{span_problem, toml_problem};
use crate::error::Problem;

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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOwner {
    status: Option<Spanned<String>>,
    team: Option<String>,
    email: Option<String>,
}

/// Parses `owners.toml` into owners by name.
pub fn parse(path: &str, text: &str) -> (BTreeMap<String, Owner>, Vec<Problem>) {
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
        owners.insert(
            name,
            Owner {
                status,
                team: raw.team,
                email: raw.email,
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
    fn bad_status_and_unknown_fields_are_reported() {
        let (_, problems) = parse("owners.toml", "[alice]\nstatus = \"gone\"\n");
        assert_eq!(problems[0].pos, Some((2, 10)));
        let (_, problems) = parse("owners.toml", "[alice]\nrole = \"x\"\n");
        assert!(problems[0].message.contains("role"));
    }
}
