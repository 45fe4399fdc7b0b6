//! A deterministic synthetic key store, shared by the `gen_store` example, the
//! benchmarks and the tests that keep them from rotting. Realistic mix: services,
//! permission sets, ages, owners (about one per 20 keys, some departed, some unknown),
//! allowlists, compromised and revoked keys, grace entries (some expired).
//!
//! Dates are relative to [`ANCHOR`]; plan with `--now` set to it for stable results.

#![allow(dead_code)]

use std::fmt::Write;

/// The instant the generated dates are relative to.
pub const ANCHOR: &str = "2026-11-22T00:00:00Z";
const ANCHOR_UNIX: i64 = 1_795_305_600; // 2026-11-22T00:00:00Z
const DAY: i64 = 86_400;

/// splitmix64: tiny, fast, and the same sequence on every machine.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True with probability `pct` percent.
    pub fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }

    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

fn time(unix: i64) -> String {
    let days = unix.div_euclid(DAY);
    let secs = unix.rem_euclid(DAY);
    // civil_from_days (Howard Hinnant's algorithm)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

fn fingerprint(rng: &mut Rng) -> String {
    format!(
        "sha256:{:016x}{:016x}{:016x}{:016x}",
        rng.next(),
        rng.next(),
        rng.next(),
        rng.next()
    )
}

pub fn owner_count(keys: usize) -> usize {
    (keys / 20).max(1)
}

/// `owners.toml` for a store of `keys` keys.
pub fn owners(keys: usize, seed: u64) -> String {
    let mut rng = Rng::new(seed ^ 0x0057_4E45_5253);
    let teams = ["trading", "treasury", "payments", "platform", "data"];
    let mut out = String::new();
    for i in 0..owner_count(keys) {
        let status = if rng.chance(5) { "departed" } else { "active" };
        let team = rng.pick(&teams);
        let _ = writeln!(
            out,
            "[owner{i:05}]\nstatus = \"{status}\"\nteam = \"{team}\"\nemail = \"owner{i:05}@example.com\"\n"
        );
    }
    out
}

/// Key `i` of a store of `keys` keys: `(id, file text)`.
pub fn key(i: usize, keys: usize, seed: u64) -> (String, String) {
    let mut rng = Rng::new(seed.wrapping_mul(1_000_003).wrapping_add(i as u64));
    let services = [
        "binance", "coinbase", "kraken", "stripe", "github", "aws", "datadog", "slack",
    ];
    let service = rng.pick(&services);
    let id = format!("{service}-{i:06}");
    let owners = owner_count(keys) as u64;
    let owner = if rng.chance(3) {
        format!("contractor{:03}", rng.below(50))
    } else {
        format!("owner{:05}", rng.below(owners))
    };
    let perms = match rng.below(10) {
        0..=3 => "[\"read\"]",
        4..=6 => "[\"read\", \"trade\"]",
        7 => "[\"read\", \"trade\", \"withdraw\"]",
        8 => "[\"read\", \"admin\"]",
        _ => "[]",
    };
    let env = rng.pick(&["production", "production", "staging", "development"]);
    let created = ANCHOR_UNIX - (30 + rng.below(400) as i64) * DAY;
    let rotated = (ANCHOR_UNIX - rng.below(200) as i64 * DAY - rng.below(DAY as u64) as i64).max(created);
    let mut t = String::with_capacity(600);
    let _ = writeln!(
        t,
        "service = \"{service}\"\nowner = \"{owner}\"\nenvironment = \"{env}\"\npermissions = {perms}"
    );
    if !rng.chance(10) {
        let _ = writeln!(
            t,
            "ip_allowlist = [\"203.0.{}.{}/32\"]",
            rng.below(256),
            rng.below(256)
        );
    }
    let _ = writeln!(
        t,
        "created_at = {}\nrotated_at = {}",
        time(created),
        time(rotated)
    );
    if !rng.chance(5) {
        let _ = writeln!(
            t,
            "last_used_at = {}",
            time(ANCHOR_UNIX - rng.below(90 * DAY as u64) as i64)
        );
    }
    if rng.chance(1) {
        let _ = writeln!(t, "compromised = true");
    }
    if rng.chance(1) {
        let _ = writeln!(
            t,
            "status = \"revoked\"\nrevoked_at = {}\nrevoke_reason = \"retired\"",
            time(ANCHOR_UNIX - 5 * DAY)
        );
    }
    let _ = writeln!(t, "fingerprint = \"{}\"", fingerprint(&mut rng));
    let _ = writeln!(
        t,
        "tags = [\"{}\"]",
        rng.pick(&["bot", "service", "partner", "personal", "ci"])
    );
    if rng.chance(5) {
        let until = ANCHOR_UNIX + (rng.below(4 * DAY as u64) as i64) - 2 * DAY;
        let _ = writeln!(
            t,
            "\n[[previous]]\nfingerprint = \"{}\"\nvalid_until = {}",
            fingerprint(&mut rng),
            time(until)
        );
    }
    (id, t)
}
