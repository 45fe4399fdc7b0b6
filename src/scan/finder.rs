//! Finding keyrot secrets in bytes: a SIMD search for `<prefix>_` (memchr's memmem),
//! then the secret's shape, then its checksum. Only a candidate whose checksum holds is
//! a finding, so random text, fingerprints and look-alikes are never reported (one
//! chance in 62^6 ≈ 5.7 × 10^10 for a look-alike of the right shape).

use memchr::memmem;

use crate::digest::sha256_tagged;
use crate::secret::{body_chars, checksum_ok, CHECKSUM_LEN};
use crate::store::settings::SECRET_BYTES;

/// One secret found in a buffer. Holds where it was and its fingerprint, never the
/// secret itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Hit {
    /// 1-based line of the secret's first byte.
    pub line: usize,
    /// `sha256:<hex>` of the secret.
    pub fingerprint: String,
    /// The service named inside the secret.
    pub service: String,
}

/// Finds the secrets of one prefix (`[secrets] prefix`).
pub(crate) struct Finder {
    needle: memmem::Finder<'static>,
    prefix_len: usize,
}

/// The longest service name a secret can carry (the key file's rule).
const MAX_SERVICE: usize = 64;

impl Finder {
    pub(crate) fn new(prefix: &str) -> Finder {
        Finder {
            needle: memmem::Finder::new(format!("{prefix}_").as_bytes()).into_owned(),
            prefix_len: prefix.len(),
        }
    }

    /// Every secret in `bytes`, in order.
    pub(crate) fn find(&self, bytes: &[u8]) -> Vec<Hit> {
        let mut hits = Vec::new();
        let mut line = 1;
        let mut counted = 0;
        for start in self.needle.find_iter(bytes) {
            let Some(end) = self.secret_end(bytes, start) else {
                continue;
            };
            let token = &bytes[start..end];
            if !checksum_ok(token) {
                continue;
            }
            line += memchr::memchr_iter(b'\n', &bytes[counted..start]).count();
            counted = start;
            let service_start = self.prefix_len + 1;
            let service_len = token[service_start..]
                .iter()
                .position(|&b| b == b'_')
                .unwrap_or_default();
            hits.push(Hit {
                line,
                fingerprint: sha256_tagged(token),
                service: String::from_utf8_lossy(&token[service_start..service_start + service_len])
                    .into_owned(),
            });
        }
        hits
    }

    /// Where the secret that starts at `start` (with the prefix and its `_`) ends, if
    /// what follows is shaped like one: a service of `[a-z0-9-]`, `_`, then a run of
    /// base62 as long as a body of 16 to 1024 bytes and its checksum.
    fn secret_end(&self, bytes: &[u8], start: usize) -> Option<usize> {
        let service_start = start + self.prefix_len + 1;
        let service_len = bytes[service_start..]
            .iter()
            .take(MAX_SERVICE + 1)
            .position(|&b| !(b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'))?;
        if service_len == 0 || service_len > MAX_SERVICE || bytes[service_start + service_len] != b'_' {
            return None;
        }
        let body_start = service_start + service_len + 1;
        let longest = body_chars(*SECRET_BYTES.end() as usize) + CHECKSUM_LEN;
        let shortest = body_chars(*SECRET_BYTES.start() as usize) + CHECKSUM_LEN;
        let run = bytes[body_start..]
            .iter()
            .take(longest + 1)
            .position(|b| !b.is_ascii_alphanumeric())
            .unwrap_or((bytes.len() - body_start).min(longest + 1));
        (shortest..=longest).contains(&run).then_some(body_start + run)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use proptest::prelude::*;

    fn secret(prefix: &str, service: &str, bytes: usize) -> String {
        Secret::generate(prefix, service, bytes)
            .unwrap()
            .expose()
            .to_string()
    }

    #[test]
    fn finds_secrets_with_their_line_fingerprint_and_service() {
        let a = secret("kr", "binance", 32);
        let b = secret("kr", "pay-api", 16);
        let text = format!("API_KEY={a}\n\n  \"token\": \"{b}\",\nkey2={a}x\n");
        let hits = Finder::new("kr").find(text.as_bytes());
        assert_eq!(
            hits,
            vec![
                Hit {
                    line: 1,
                    fingerprint: sha256_tagged(a.as_bytes()),
                    service: "binance".into()
                },
                Hit {
                    line: 3,
                    fingerprint: sha256_tagged(b.as_bytes()),
                    service: "pay-api".into()
                },
            ],
            "a secret run into more letters is not one"
        );
    }

    #[test]
    fn look_alikes_and_fingerprints_are_not_secrets() {
        let real = secret("kr", "binance", 32);
        let mut forged = real.clone().into_bytes();
        let last = forged.len() - 1;
        forged[last] = if forged[last] == b'a' { b'b' } else { b'a' };
        let text = format!(
            "{}\nfingerprint = \"{}\"\nkr_binance_{}\nkr__{}\nother_binance_{}\n",
            String::from_utf8(forged).unwrap(),
            sha256_tagged(real.as_bytes()),
            "A".repeat(49),
            &real[3..],
            &real[3..],
        );
        assert_eq!(Finder::new("kr").find(text.as_bytes()), vec![]);
        assert_eq!(
            Finder::new("other").find(real.as_bytes()),
            vec![],
            "another prefix"
        );
    }

    #[test]
    fn a_secret_at_the_very_end_and_the_largest_size_are_found() {
        let big = secret("kr", "x", 1024);
        assert_eq!(Finder::new("kr").find(big.as_bytes()).len(), 1);
        let text = format!("no newline: {}", secret("acme", "svc", 16));
        assert_eq!(Finder::new("acme").find(text.as_bytes()).len(), 1);
        assert_eq!(Finder::new("kr").find(b"kr_"), vec![]);
        assert_eq!(Finder::new("kr").find(b"kr_x_"), vec![]);
    }

    proptest! {
        /// Wherever a secret sits among arbitrary bytes that do not touch it, it is
        /// found once, on its line; arbitrary bytes alone hold none.
        #[test]
        fn found_anywhere_in_noise(
            before in proptest::collection::vec(any::<u8>(), 0..300),
            after in proptest::collection::vec(any::<u8>(), 0..300),
            bytes in 16usize..80,
        ) {
            prop_assert_eq!(Finder::new("kr").find(&before), vec![]);
            let s = secret("kr", "svc", bytes);
            let mut text = before.clone();
            text.push(b' ');
            text.extend_from_slice(s.as_bytes());
            text.push(b'\n');
            text.extend_from_slice(&after);
            let hits = Finder::new("kr").find(&text);
            let ours: Vec<_> = hits.iter().filter(|h| h.fingerprint == sha256_tagged(s.as_bytes())).collect();
            prop_assert_eq!(ours.len(), 1);
            prop_assert_eq!(ours[0].line, before.iter().filter(|&&b| b == b'\n').count() + 1);
        }
    }
}
