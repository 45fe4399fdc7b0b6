//! Test-only pauses at named points, so integration tests can signal or kill the
//! process at an exact step. Compiled to nothing in release builds; in debug builds
//! active only when `KEYROT_TEST_PAUSE=<point>:<milliseconds>` names the point.

/// Pauses here if the test environment asks for it, announcing it on stderr first.
pub fn pause(point: &str) {
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
