//! `keys/<id>.toml`: one API key's metadata. Never its secret: only fingerprints.

use std::net::IpAddr;

use serde::Deserialize;
use toml::value::Datetime;
use toml::Spanned;

use super::parse::{span_problem, toml_problem};
use crate::error::Problem;
use crate::time::Time;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyStatus {
    Active,
    Revoked,
}

impl KeyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Active => "active",
            KeyStatus::Revoked => "revoked",
        }
    }
}

/// An earlier secret still honoured until `valid_until`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Previous {
    pub fingerprint: String,
    pub valid_until: Time,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key {
    pub id: String,
    /// Path relative to the store root, e.g. `keys/binance-bot.toml`.
    pub path: String,
    /// The folder the file is in, relative to the keys folder: `trading` for
    /// `keys/trading/binance-bot.toml`, empty for a key directly in the keys folder.
    pub folder: String,
    pub service: String,
    pub owner: String,
    pub environment: String,
    pub permissions: Vec<String>,
    pub ip_allowlist: Vec<String>,
    pub created_at: Time,
    pub rotated_at: Time,
    pub last_used_at: Option<Time>,
    /// Client addresses of the last `keyrot usage import` (at most 16, sorted).
    pub last_used_from: Vec<String>,
    pub compromised: bool,
    pub status: KeyStatus,
    pub fingerprint: Option<String>,
    pub tags: Vec<String>,
    pub previous: Vec<Previous>,
    pub revoked_at: Option<Time>,
    pub revoke_reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    service: Spanned<String>,
    owner: Spanned<String>,
    environment: Option<Spanned<String>>,
    permissions: Vec<Spanned<String>>,
    #[serde(default)]
    ip_allowlist: Vec<Spanned<String>>,
    created_at: Spanned<Datetime>,
    rotated_at: Option<Spanned<Datetime>>,
    last_used_at: Option<Spanned<Datetime>>,
    #[serde(default)]
    last_used_from: Vec<Spanned<String>>,
    #[serde(default)]
    compromised: bool,
    status: Option<Spanned<String>>,
    fingerprint: Option<Spanned<String>>,
    #[serde(default)]
    tags: Vec<Spanned<String>>,
    #[serde(default)]
    previous: Vec<RawPrevious>,
    revoked_at: Option<Spanned<Datetime>>,
    revoke_reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrevious {
    fingerprint: Spanned<String>,
    valid_until: Spanned<Datetime>,
}

/// `[a-z0-9][a-z0-9._-]{0,127}`: the SPEC's rule for key ids.
pub fn is_valid_id(id: &str) -> bool {
    let b = id.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-'))
}

/// `sha256:` followed by 64 lowercase hex digits.
pub fn is_valid_fingerprint(fp: &str) -> bool {
    fp.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    })
}

/// Permission names are `[a-z0-9_.:-]{1,64}`: a look-alike such as `withdrаw` (with a
/// Cyrillic а) would pass every rule that names `withdraw`, so anything outside plain
/// ASCII is refused wherever a permission is written (key files, `[service]`
/// declarations, `restrict()`).
pub fn check_permission(p: &str) -> Result<(), String> {
    let ok = !p.is_empty()
        && p.len() <= 64
        && p.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'.' | b':' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a valid permission name: use 1 to 64 of a-z, 0-9, '_', '.', ':' and '-'",
            p.escape_default()
        ))
    }
}

/// Service names appear inside generated secrets, so they are plain lowercase words.
fn is_valid_service(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// `203.0.113.7/32` or `2001:db8::/32`: an address and a prefix length that fits it.
pub fn check_cidr(cidr: &str) -> Result<(), String> {
    let (addr, len) = cidr.split_once('/').ok_or_else(|| {
        format!("`{cidr}` is not a CIDR block; write it as address/prefix, e.g. 203.0.113.7/32")
    })?;
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("`{cidr}`: `{addr}` is not an IP address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    match len.parse::<u8>() {
        Ok(n) if n <= max && !len.starts_with('+') => Ok(()),
        _ => Err(format!("`{cidr}`: prefix length must be 0 to {max}")),
    }
}

/// Whether `ip` is inside `cidr` (a block [`check_cidr`] accepts; `None` if it is not
/// one). An IPv4 address written as IPv6 (`::ffff:203.0.113.7`) is the IPv4 address.
pub fn cidr_contains(cidr: &str, ip: IpAddr) -> Option<bool> {
    check_cidr(cidr).ok()?;
    let (net, len) = cidr.split_once('/')?;
    let net: IpAddr = net.parse().ok()?;
    let len: u32 = len.parse().ok()?;
    Some(match (net.to_canonical(), ip.to_canonical()) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    })
}

/// Parses and validates one key file at `path` (`<keys dir>/[<folder>/]<id>.toml`).
pub fn parse_in(keys_dir: &str, path: &str, text: &str) -> Result<Key, Vec<Problem>> {
    let mut key = parse(path, text)?;
    key.folder = super::layout::key_folder(keys_dir, path).to_string();
    Ok(key)
}

/// Parses and validates one key file. `path` is `<keys dir>/<id>.toml` (the folder is
/// left empty: see [`parse_in`]).
pub fn parse(path: &str, text: &str) -> Result<Key, Vec<Problem>> {
    let file_name = path.rsplit('/').next().unwrap_or(path);
    let id = file_name.strip_suffix(".toml").unwrap_or(file_name);
    let mut problems = Vec::new();
    if !is_valid_id(id) {
        problems.push(Problem::new(
            path,
            format!("`{id}` is not a valid key id: ids are 1 to 128 characters of a-z, 0-9, '.', '_' and '-', starting with a letter or digit"),
        ));
    }
    let raw: Raw = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            problems.push(toml_problem(path, text, &e));
            return Err(problems);
        }
    };
    let mut bad =
        |span: std::ops::Range<usize>, msg: String| problems.push(span_problem(path, text, span, msg));
    let time = |v: &Spanned<Datetime>, field: &str, bad: &mut dyn FnMut(std::ops::Range<usize>, String)| {
        Time::from_toml(v.get_ref()).unwrap_or_else(|why| {
            bad(v.span(), format!("{field}: {why}"));
            Time::from_unix(0)
        })
    };

    if !is_valid_service(raw.service.get_ref()) {
        bad(
            raw.service.span(),
            format!(
                "service `{}` must be 1 to 64 characters of a-z, 0-9 and '-'",
                raw.service.get_ref()
            ),
        );
    }
    if raw.owner.get_ref().trim().is_empty() {
        bad(raw.owner.span(), "owner must not be empty".into());
    }
    let environment = match raw.environment {
        Some(env) if env.get_ref().trim().is_empty() => {
            bad(env.span(), "environment must not be empty".into());
            String::new()
        }
        Some(env) => env.into_inner(),
        None => "production".into(),
    };
    let strings =
        |list: Vec<Spanned<String>>, what: &str, bad: &mut dyn FnMut(std::ops::Range<usize>, String)| {
            let mut out: Vec<String> = Vec::with_capacity(list.len());
            for item in list {
                if item.get_ref().trim().is_empty() {
                    bad(item.span(), format!("{what} must not be empty strings"));
                } else if out.contains(item.get_ref()) {
                    bad(
                        item.span(),
                        format!("{what}: `{}` is listed twice", item.get_ref()),
                    );
                } else {
                    out.push(item.into_inner());
                }
            }
            out
        };
    for p in &raw.permissions {
        if let Err(why) = check_permission(p.get_ref()) {
            bad(p.span(), format!("permissions: {why}"));
        }
    }
    let permissions = strings(raw.permissions, "permissions", &mut bad);
    let tags = strings(raw.tags, "tags", &mut bad);
    for cidr in &raw.ip_allowlist {
        if let Err(why) = check_cidr(cidr.get_ref()) {
            bad(cidr.span(), format!("ip_allowlist: {why}"));
        }
    }
    let ip_allowlist = strings(raw.ip_allowlist, "ip_allowlist", &mut bad);
    for ip in &raw.last_used_from {
        if ip.get_ref().parse::<IpAddr>().is_err() {
            bad(
                ip.span(),
                format!("last_used_from: `{}` is not an IP address", ip.get_ref()),
            );
        }
    }
    let last_used_from = strings(raw.last_used_from, "last_used_from", &mut bad);
    let created_at = time(&raw.created_at, "created_at", &mut bad);
    let rotated_at = raw
        .rotated_at
        .as_ref()
        .map_or(created_at, |v| time(v, "rotated_at", &mut bad));
    let last_used_at = raw
        .last_used_at
        .as_ref()
        .map(|v| time(v, "last_used_at", &mut bad));
    let revoked_at = raw.revoked_at.as_ref().map(|v| time(v, "revoked_at", &mut bad));
    let status = match &raw.status {
        None => KeyStatus::Active,
        Some(s) => match s.get_ref().as_str() {
            "active" => KeyStatus::Active,
            "revoked" => KeyStatus::Revoked,
            other => {
                bad(
                    s.span(),
                    format!("status `{other}` is not \"active\" or \"revoked\""),
                );
                KeyStatus::Active
            }
        },
    };
    let fingerprint = raw.fingerprint.map(|fp| {
        if !is_valid_fingerprint(fp.get_ref()) {
            bad(
                fp.span(),
                "fingerprint must be `sha256:` followed by 64 lowercase hex digits".into(),
            );
        }
        fp.into_inner()
    });
    let previous = raw
        .previous
        .into_iter()
        .map(|p| {
            if !is_valid_fingerprint(p.fingerprint.get_ref()) {
                bad(
                    p.fingerprint.span(),
                    "previous.fingerprint must be `sha256:` followed by 64 lowercase hex digits".into(),
                );
            }
            Previous {
                valid_until: time(&p.valid_until, "previous.valid_until", &mut bad),
                fingerprint: p.fingerprint.into_inner(),
            }
        })
        .collect();

    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Key {
        id: id.to_string(),
        path: path.to_string(),
        folder: String::new(),
        service: raw.service.into_inner(),
        owner: raw.owner.into_inner(),
        environment,
        permissions,
        ip_allowlist,
        created_at,
        rotated_at,
        last_used_at,
        last_used_from,
        compromised: raw.compromised,
        status,
        fingerprint,
        tags,
        previous,
        revoked_at,
        revoke_reason: raw.revoke_reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
service = "binance"
owner = "alice"
permissions = ["read", "trade"]
ip_allowlist = ["203.0.113.7/32", "2001:db8::/32"]
created_at = 2026-03-01T00:00:00Z
"#;

    #[test]
    fn parses_a_minimal_key_with_defaults() {
        let key = parse("keys/binance-bot.toml", GOOD).unwrap();
        assert_eq!(key.id, "binance-bot");
        assert_eq!(key.environment, "production");
        assert_eq!(key.rotated_at, key.created_at);
        assert_eq!(key.status, KeyStatus::Active);
        assert!(!key.compromised);
    }

    #[test]
    fn id_rules() {
        for ok in ["a", "binance-bot", "0x.key_1", &"a".repeat(128)] {
            assert!(is_valid_id(ok), "{ok}");
        }
        for bad in ["", "A", "-a", ".a", "a/b", "..", "a b", &"a".repeat(129), "é"] {
            assert!(!is_valid_id(bad), "{bad}");
        }
    }

    #[test]
    fn cidr_containment() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(cidr_contains("203.0.113.0/24", ip("203.0.113.99")), Some(true));
        assert_eq!(cidr_contains("203.0.113.0/24", ip("203.0.114.1")), Some(false));
        assert_eq!(cidr_contains("203.0.113.7/32", ip("203.0.113.7")), Some(true));
        assert_eq!(
            cidr_contains("203.0.113.7/32", ip("::ffff:203.0.113.7")),
            Some(true)
        );
        assert_eq!(cidr_contains("0.0.0.0/0", ip("198.51.100.1")), Some(true));
        assert_eq!(cidr_contains("0.0.0.0/0", ip("2001:db8::1")), Some(false));
        assert_eq!(cidr_contains("2001:db8::/32", ip("2001:db8:ffff::1")), Some(true));
        assert_eq!(cidr_contains("2001:db8::/32", ip("2001:db9::1")), Some(false));
        assert_eq!(cidr_contains("::/0", ip("::1")), Some(true));
        assert_eq!(cidr_contains("203.0.113.7", ip("203.0.113.7")), None);
    }

    #[test]
    fn cidr_rules() {
        for ok in ["203.0.113.7/32", "0.0.0.0/0", "2001:db8::/32", "::1/128"] {
            assert!(check_cidr(ok).is_ok(), "{ok}");
        }
        for bad in [
            "203.0.113.7",
            "203.0.113.7/33",
            "300.0.0.1/8",
            "::1/129",
            "a/8",
            "1.2.3.4/+8",
            "1.2.3.4/",
        ] {
            assert!(check_cidr(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reports_every_bad_field_with_its_line() {
        let text = "service = \"Binance\"\nowner = \"alice\"\npermissions = []\nip_allowlist = [\"1.2.3.4\"]\ncreated_at = 2026-03-01T00:00:00\nstatus = \"gone\"\nfingerprint = \"md5:x\"\n";
        let problems = parse("keys/k.toml", text).unwrap_err();
        let lines: Vec<usize> = problems.iter().filter_map(|p| p.pos.map(|p| p.0)).collect();
        assert_eq!(lines, vec![1, 4, 5, 6, 7], "{problems:?}");
    }

    #[test]
    fn unknown_fields_and_bad_ids_are_errors() {
        let problems = parse("keys/k.toml", &format!("{GOOD}colour = \"red\"\n")).unwrap_err();
        assert!(problems[0].message.contains("colour"), "{problems:?}");
        let problems = parse("keys/Bad.toml", GOOD).unwrap_err();
        assert!(problems[0].message.contains("not a valid key id"));
    }

    proptest::proptest! {
        /// The key-file parser never panics, whatever the bytes: it returns a key or
        /// problems that name the file.
        #[test]
        fn parsing_arbitrary_text_never_panics(text in "(?s).{0,300}") {
            if let Err(problems) = parse("keys/fuzz.toml", &text) {
                proptest::prop_assert!(problems.iter().all(|p| p.path == "keys/fuzz.toml"));
            }
        }

        /// Mutating a valid key file (one byte replaced, or the file cut short) gives a
        /// key or problems with positions inside the file, never a panic.
        #[test]
        fn mutated_key_files_never_panic(at in 0usize..200, byte in proptest::prelude::any::<u8>(), cut in proptest::prelude::any::<bool>()) {
            let mut bytes = GOOD.as_bytes().to_vec();
            let at = at % bytes.len();
            if cut { bytes.truncate(at) } else { bytes[at] = byte }
            let text = String::from_utf8_lossy(&bytes);
            if let Err(problems) = parse("keys/fuzz.toml", &text) {
                let lines = text.lines().count().max(1);
                proptest::prop_assert!(problems.iter().all(|p| p.pos.is_none_or(|(l, _)| l <= lines + 1)));
            }
        }
    }

    #[test]
    fn missing_required_fields_are_errors() {
        let problems = parse("keys/k.toml", "service = \"x\"\n").unwrap_err();
        assert!(problems[0].message.contains("missing field"), "{problems:?}");
    }
}
