//! Test-only pauses and failures at named points, so integration tests can signal or kill the
//! process at an exact step, or make that step fail. Compiled to nothing in release
//! builds; in debug builds active only when `KEYROT_TEST_PAUSE=<point>:<milliseconds>`
//! or `KEYROT_TEST_FAIL=<point>` names the point.

/// Pauses here if the test environment asks for it, announcing it on stderr first.
pub(crate) fn pause(point: &str) {
    #[cfg(debug_assertions)]
    {
        let Ok(spec) = std::env::var("KEYROT_TEST_PAUSE") else {
            return;
        };
        let Some((name, ms)) = spec.split_once(':') else {
            return;
        };
        if name != point {
            return;
        }
        let Ok(ms) = ms.parse::<u64>() else { return };
        eprintln!("failpoint {point}: pausing {ms} ms");
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    #[cfg(not(debug_assertions))]
    let _ = point;
}

/// Fails here if the test environment asks for it (`KEYROT_TEST_FAIL=<point>`), as if
/// the step's I/O had failed. Never fails in release builds.
pub(crate) fn fail(point: &str) -> crate::error::Result<()> {
    #[cfg(debug_assertions)]
    if std::env::var("KEYROT_TEST_FAIL").is_ok_and(|p| p == point) {
        return Err(crate::error::Error::Injected(point.to_string()));
    }
    let _ = point;
    Ok(())
}
