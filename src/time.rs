//! Instants and durations as keyrot sees them: whole seconds, UTC, and the human
//! duration syntax of the SPEC (`"90d"`, `"1h30m"`, printed as `97d 3h`).

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};

const MINUTE: i64 = 60;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

/// An instant, in whole seconds since the Unix epoch (UTC). Sub-second parts of
/// input times are truncated: keyrot's rules work in minutes and days.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(i64);

/// The instants a key file can hold: TOML writes years 0000 to 9999.
const FIRST: i64 = -62_167_219_200; // 0000-01-01T00:00:00Z
const LAST: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z

/// The longest grace period keyrot accepts, from a policy or from `keyrot.toml`.
pub const MAX_GRACE: Dur = Dur(366 * DAY);

/// A grace period is at least zero and at most [`MAX_GRACE`]: an old secret valid for
/// years is no rotation at all, and a huge one overflowed time arithmetic.
pub fn check_grace(grace: Dur) -> Result<(), String> {
    if grace < Dur::ZERO {
        return Err(format!("grace period {grace} is negative"));
    }
    if grace > MAX_GRACE {
        return Err(format!(
            "grace period {grace} is longer than the limit of {MAX_GRACE}"
        ));
    }
    Ok(())
}

impl Time {
    /// The current wall-clock time.
    pub fn now() -> Time {
        Time(Utc::now().timestamp())
    }

    pub fn from_unix(secs: i64) -> Time {
        Time(secs)
    }

    pub fn unix(self) -> i64 {
        self.0
    }

    /// Parses an RFC 3339 instant such as `2026-11-22T20:00:00Z`. The offset is required.
    pub fn parse_rfc3339(s: &str) -> Result<Time, String> {
        DateTime::parse_from_rfc3339(s.trim())
            .map(|t| Time(t.timestamp()))
            .map_err(|e| format!("`{s}` is not an RFC 3339 time such as 2026-11-22T20:00:00Z ({e})"))
    }

    /// Converts a TOML datetime. Only offset date-times name an instant; a local
    /// date or time would depend on the machine's zone, so it is refused.
    pub fn from_toml(dt: &toml::value::Datetime) -> Result<Time, String> {
        if dt.date.is_none() || dt.time.is_none() || dt.offset.is_none() {
            return Err(format!(
                "`{dt}` has no time zone offset; write a full time such as 2026-03-01T00:00:00Z"
            ));
        }
        Time::parse_rfc3339(&dt.to_string())
    }

    /// `2026-11-22T20:00:00Z`: the form used in JSON, TOML and commit trailers.
    pub fn to_rfc3339(self) -> String {
        match DateTime::<Utc>::from_timestamp(self.0, 0) {
            Some(t) => t.to_rfc3339_opts(SecondsFormat::Secs, true),
            None => format!("@{}", self.0),
        }
    }

    /// The TOML offset date-time for this instant (UTC, whole seconds); an error for
    /// an instant outside the years 0000–9999 that TOML can write.
    pub fn to_toml(self) -> Result<toml::value::Datetime, String> {
        use chrono::{Datelike, Timelike};
        let t = DateTime::<Utc>::from_timestamp(self.0, 0)
            .filter(|_| (FIRST..=LAST).contains(&self.0))
            .ok_or_else(|| format!("the instant {self} is outside the years 0000 to 9999"))?;
        Ok(toml::value::Datetime {
            date: Some(toml::value::Date {
                year: t.year() as u16,
                month: t.month() as u8,
                day: t.day() as u8,
            }),
            time: Some(toml::value::Time {
                hour: t.hour() as u8,
                minute: t.minute() as u8,
                second: Some(t.second() as u8),
                nanosecond: None,
            }),
            offset: Some(toml::value::Offset::Z),
        })
    }

    /// `self + d`, or `None` past the years 0000–9999 (or on overflow).
    pub fn checked_add(self, d: Dur) -> Option<Time> {
        self.0
            .checked_add(d.0)
            .filter(|t| (FIRST..=LAST).contains(t))
            .map(Time)
    }

    /// `self - d`, or `None` past the years 0000–9999 (or on overflow).
    pub fn checked_sub(self, d: Dur) -> Option<Time> {
        self.0
            .checked_sub(d.0)
            .filter(|t| (FIRST..=LAST).contains(t))
            .map(Time)
    }

    /// `self - earlier`, saturating (times far outside any real key's life do not panic).
    pub fn since(self, earlier: Time) -> Dur {
        Dur(self.0.saturating_sub(earlier.0))
    }
}

/// In JSON (plans, saved plans) an instant is its RFC 3339 form, `2026-11-22T20:00:00Z`.
impl serde::Serialize for Time {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> serde::Deserialize<'de> for Time {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Time, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Time::parse_rfc3339(&text).map_err(serde::de::Error::custom)
    }
}

/// In JSON a duration is its compact form, `1d`, `1h30m`, `0s`.
impl serde::Serialize for Dur {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.compact())
    }
}

impl<'de> serde::Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Dur, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Dur::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

/// A signed span of whole seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dur(i64);

impl Dur {
    pub const ZERO: Dur = Dur(0);

    pub const fn from_secs(secs: i64) -> Dur {
        Dur(secs)
    }

    pub fn secs(self) -> i64 {
        self.0
    }

    pub fn days_n(n: i64) -> Option<Dur> {
        n.checked_mul(DAY).map(Dur)
    }

    pub fn hours_n(n: i64) -> Option<Dur> {
        n.checked_mul(HOUR).map(Dur)
    }

    pub fn minutes_n(n: i64) -> Option<Dur> {
        n.checked_mul(MINUTE).map(Dur)
    }

    /// Whole days, truncated toward zero.
    pub fn days(self) -> i64 {
        self.0 / DAY
    }

    /// Whole hours, truncated toward zero.
    pub fn hours(self) -> i64 {
        self.0 / HOUR
    }

    /// Whole minutes, truncated toward zero.
    pub fn minutes(self) -> i64 {
        self.0 / MINUTE
    }

    /// Parses `"90d"`, `"24h"`, `"1h30m"`, `"97d 3h"`, `"45s"`, `"0s"`: one or more
    /// `<number><unit>` parts, units `d h m s`, each at most once, largest first.
    pub fn parse(input: &str) -> Result<Dur, String> {
        let bad = |why: &str| {
            format!("`{input}` is not a duration ({why}); write it like \"90d\", \"24h\" or \"1h30m\"")
        };
        let s = input.trim();
        if s.is_empty() {
            return Err(bad("it is empty"));
        }
        let mut total: i64 = 0;
        let mut last_rank = usize::MAX;
        let mut rest = s;
        while !rest.is_empty() {
            rest = rest.trim_start();
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(bad("expected a number"));
            }
            let n: i64 = rest[..digits]
                .parse()
                .map_err(|_| bad("the number is too large"))?;
            rest = &rest[digits..];
            let unit = rest
                .chars()
                .next()
                .ok_or_else(|| bad("a number needs a unit: d, h, m or s"))?;
            let (rank, secs) = match unit {
                'd' => (0, DAY),
                'h' => (1, HOUR),
                'm' => (2, MINUTE),
                's' => (3, 1),
                _ => return Err(bad(&format!("unknown unit `{unit}`; use d, h, m or s"))),
            };
            if last_rank != usize::MAX && rank <= last_rank {
                return Err(bad("units must each appear once, largest first"));
            }
            last_rank = rank;
            rest = &rest[unit.len_utf8()..];
            total = n
                .checked_mul(secs)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(|| bad("it is too large"))?;
        }
        Ok(Dur(total))
    }

    /// The compact form used in JSON and TOML: `1h30m`, `1d`, `0s`.
    pub fn compact(self) -> String {
        self.render("")
    }

    fn render(self, sep: &str) -> String {
        if self.0 == 0 {
            return "0s".to_string();
        }
        let sign = if self.0 < 0 { "-" } else { "" };
        let mut rest = self.0.unsigned_abs();
        let mut parts = Vec::new();
        for (unit, secs) in [("d", DAY), ("h", HOUR), ("m", MINUTE), ("s", 1)] {
            let secs = secs as u64;
            let n = rest / secs;
            rest %= secs;
            if n > 0 {
                parts.push(format!("{n}{unit}"));
            }
        }
        format!("{sign}{}", parts.join(sep))
    }
}

/// Human form with spaces: `97d 3h`, `1h 30m`, `1d`, `0s`.
impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_spec_forms() {
        assert_eq!(Dur::parse("90d").unwrap(), Dur::days_n(90).unwrap());
        assert_eq!(Dur::parse("24h").unwrap(), Dur::parse("1d").unwrap());
        assert_eq!(Dur::parse("30m").unwrap().secs(), 1800);
        assert_eq!(Dur::parse("1h30m").unwrap().secs(), 5400);
        assert_eq!(Dur::parse("97d 3h").unwrap().hours(), 97 * 24 + 3);
        assert_eq!(Dur::parse("0s").unwrap(), Dur::ZERO);
    }

    #[test]
    fn rejects_malformed_durations() {
        for bad in [
            "",
            "d",
            "90",
            "90x",
            "1m1h",
            "1h1h",
            "-1d",
            "1.5d",
            "99999999999999999999d",
        ] {
            assert!(Dur::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn prints_largest_unit_first() {
        let d = Dur::days_n(97).unwrap().secs() + 3 * HOUR;
        assert_eq!(Dur(d).to_string(), "97d 3h");
        assert_eq!(Dur(5400).to_string(), "1h 30m");
        assert_eq!(Dur(5400).compact(), "1h30m");
        assert_eq!(Dur(DAY).to_string(), "1d");
        assert_eq!(Dur::ZERO.to_string(), "0s");
        assert_eq!(Dur(-HOUR).to_string(), "-1h");
    }

    #[test]
    fn whole_units_truncate_toward_zero() {
        assert_eq!(Dur(DAY + 3 * HOUR).hours(), 27);
        assert_eq!(Dur(DAY + 3 * HOUR).days(), 1);
        assert_eq!(Dur(-(DAY + HOUR)).days(), -1);
    }

    #[test]
    fn times_round_trip_and_refuse_local_datetimes() {
        let t = Time::parse_rfc3339("2026-11-22T20:00:00Z").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-22T20:00:00Z");
        let offset = Time::parse_rfc3339("2026-11-22T21:00:00+01:00").unwrap();
        assert_eq!(offset, t);
        let local: toml::value::Datetime = "2026-11-22T20:00:00".parse().unwrap();
        assert!(Time::from_toml(&local).is_err());
        let full: toml::value::Datetime = "2026-11-22T20:00:00Z".parse().unwrap();
        assert_eq!(Time::from_toml(&full).unwrap(), t);
        assert_eq!(t.to_toml(), Ok(full));
        assert_eq!(t.to_toml().unwrap().to_string(), "2026-11-22T20:00:00Z");
    }

    #[test]
    fn arithmetic_stays_within_the_years_toml_writes() {
        let t = Time::parse_rfc3339("9999-09-30T00:00:00Z").unwrap();
        assert!(t.checked_add(Dur::days_n(100).unwrap()).is_none());
        assert!(t.checked_add(Dur(i64::MAX)).is_none());
        assert!(Time::from_unix(LAST + 1).to_toml().is_err());
        assert!(Time::from_unix(FIRST - 1).to_toml().is_err());
        assert_eq!(
            Time::from_unix(LAST).to_toml().unwrap().to_string(),
            "9999-12-31T23:59:59Z"
        );
        assert!(check_grace(Dur::days_n(366).unwrap()).is_ok());
        let e = check_grace(Dur::days_n(367).unwrap()).unwrap_err();
        assert!(e.contains("366d"), "{e}");
        assert!(check_grace(Dur(-1)).unwrap_err().contains("negative"));
    }

    proptest! {
        #[test]
        fn compact_form_parses_back(secs in 0i64..10_000 * DAY) {
            let d = Dur(secs);
            prop_assert_eq!(Dur::parse(&d.compact()).unwrap(), d);
            prop_assert_eq!(Dur::parse(&d.to_string()).unwrap(), d);
        }
    }
}
