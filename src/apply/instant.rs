//! When an apply may act. The instant an apply writes into the audit trail
//! (`rotated_at`, `revoked_at`, `Keyrot-Now`) comes from `--now` or from a saved plan,
//! so it is checked against this machine's clock: an instant in the future would
//! revoke keys that are not due and date the trail ahead. Instants in the past stay
//! allowed (tests and replays use them); a saved plan made long ago is applied with a
//! warning, since the store has aged since.

use crate::error::{Error, Result};
use crate::time::{Dur, Time};

/// How far ahead of the clock an instant may be: clocks of two machines differ.
pub(crate) const MAX_AHEAD: Dur = Dur::from_secs(5 * 60);

/// Age past which applying a saved plan is warned about.
pub(crate) const OLD_PLAN: Dur = Dur::from_secs(24 * 60 * 60);

/// Whether an apply at `instant` may go ahead at `clock`. `future_ok`: the operator
/// said an instant ahead of the clock is meant. `saved`: the instant is a saved
/// plan's. Returns a warning to show, if any.
pub(crate) fn check(instant: Time, clock: Time, future_ok: bool, saved: bool) -> Result<Option<String>> {
    let ahead = instant.since(clock);
    if ahead > MAX_AHEAD && !future_ok {
        return Err(Error::FutureInstant {
            instant,
            clock,
            ahead,
            max: MAX_AHEAD,
        });
    }
    let age = clock.since(instant);
    Ok((saved && age > OLD_PLAN).then(|| {
        format!(
            "this plan was made for {instant}, {age} ago; the store may have changed since (plan again for what is due now)"
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Time {
        Time::parse_rfc3339(s).unwrap()
    }

    #[test]
    fn the_future_is_refused_past_a_small_skew_and_old_plans_are_warned_about() {
        let clock = t("2026-12-02T12:00:00Z");
        assert_eq!(
            check(t("2026-12-02T12:05:00Z"), clock, false, false).unwrap(),
            None
        );
        let e = check(t("2099-01-01T00:00:00Z"), clock, false, true)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("2099-01-01T00:00:00Z") && e.contains("ahead of this machine's clock"),
            "{e}"
        );
        assert!(check(t("2026-12-02T12:05:01Z"), clock, false, false).is_err());
        assert_eq!(
            check(t("2099-01-01T00:00:00Z"), clock, true, false).unwrap(),
            None
        );
        // The past: allowed; a saved plan over a day old gets a warning, `--now` none.
        assert_eq!(
            check(t("2020-01-01T00:00:00Z"), clock, false, false).unwrap(),
            None
        );
        let w = check(t("2026-11-30T12:00:00Z"), clock, false, true)
            .unwrap()
            .unwrap();
        assert!(w.contains("2d ago"), "{w}");
        assert_eq!(
            check(t("2026-12-01T13:00:00Z"), clock, false, true).unwrap(),
            None
        );
    }
}
