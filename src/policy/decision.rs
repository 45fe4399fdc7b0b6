//! What a policy can decide about a key.

use crate::time::Dur;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// New secret; the old one stays valid for `grace` (or the store default).
    Rotate { grace: Option<Dur> },
    /// Invalidate every secret of the key at once.
    Revoke,
    /// Remove these permissions.
    Restrict { remove: Vec<String> },
    /// Tell a human; change nothing.
    Warn,
}

/// One decision returned by a policy's `evaluate`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub reason: String,
}

impl Decision {
    pub fn kind_name(&self) -> &'static str {
        match self.verdict {
            Verdict::Rotate { .. } => "rotate",
            Verdict::Revoke => "revoke",
            Verdict::Restrict { .. } => "restrict",
            Verdict::Warn => "warn",
        }
    }
}

/// Longest reason keyrot keeps; reasons go into tables and commit messages.
pub(crate) const MAX_REASON_CHARS: usize = 500;

/// Makes a policy's reason safe for a one-line table cell and a commit body line:
/// control characters (newlines included) become spaces, runs of space collapse, and
/// the length is capped.
pub(crate) fn clean_reason(reason: &str) -> Result<String, String> {
    let mut out = String::with_capacity(reason.len());
    let mut last_space = true;
    // Characters in `out`, counted as they go in: counting `out` after each push made
    // this quadratic in the reason's length (5 % of evaluating the shipped policies).
    let mut chars = 0;
    for c in reason.chars() {
        let c = if c.is_control() || c.is_whitespace() {
            ' '
        } else {
            c
        };
        if c == ' ' {
            if !last_space {
                out.push(' ');
                chars += 1;
            }
            last_space = true;
        } else {
            out.push(c);
            chars += 1;
            last_space = false;
        }
        if chars >= MAX_REASON_CHARS {
            break;
        }
    }
    out.truncate(out.trim_end().len());
    if out.is_empty() {
        return Err("a decision needs a non-empty reason".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_become_one_clean_line() {
        assert_eq!(clean_reason("  too\nold\t\tnow ").unwrap(), "too old now");
        assert!(clean_reason(" \n ").is_err());
        assert_eq!(clean_reason(&"x".repeat(2000)).unwrap().len(), MAX_REASON_CHARS);
        // The cap counts characters, not bytes.
        let wide = clean_reason(&"é ".repeat(2000)).unwrap();
        assert_eq!(
            wide.chars().count(),
            MAX_REASON_CHARS - 1,
            "the trailing space is trimmed"
        );
        assert_eq!(clean_reason("a\u{0}\u{7f}b").unwrap(), "a b");
    }
}
