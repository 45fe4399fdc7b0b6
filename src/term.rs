//! Text bound for a terminal. Store content (an owner's name, a tag, a provider's
//! message, a file name in an error) is whatever someone typed or pushed: an escape
//! sequence in it could rewrite the screen, set the window title or hide a line, and a
//! bidi override (U+202E) could show `evil` as `live`. Everything keyrot prints for
//! people goes through [`safe`] on its way out.

use std::borrow::Cow;

/// Whether a character is shown escaped: control characters other than newline and
/// tab (C0, DEL, C1: ESC among them), and the invisible formatting characters that
/// reorder or hide text (bidi marks, embeddings, overrides and isolates, zero-width
/// characters, line and paragraph separators, the byte-order mark).
fn is_unsafe(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(c,
            '\u{061C}' | '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

/// `text` with every unsafe character written as `\uXXXX`. The form is JSON's own
/// escape, so a JSON document passed through stays valid and means the same; it also
/// shows a person exactly which character was there. Text without such characters is
/// returned as it is, without a copy.
pub(crate) fn safe(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if is_unsafe(c) {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_controls_and_bidi_but_keeps_lines_and_text() {
        assert!(matches!(safe("plain text\n\tand │ boxes ✓"), Cow::Borrowed(_)));
        assert_eq!(safe("a\u{1b}[31mb"), "a\\u001b[31mb");
        assert_eq!(safe("t\u{1b}]0;x\u{7}"), "t\\u001b]0;x\\u0007");
        assert_eq!(safe("evil\u{202e}txt"), "evil\\u202etxt");
        assert_eq!(safe("\u{9b}2J\u{7f}\r"), "\\u009b2J\\u007f\\u000d");
        assert_eq!(safe("zero\u{200b}width\u{2066}"), "zero\\u200bwidth\\u2066");
    }

    #[test]
    fn json_passed_through_stays_the_same_document() {
        let value = serde_json::json!({"owner": "mal\u{202e}lory\u{1b}[2J", "n": 1});
        let text = serde_json::to_string(&value).unwrap();
        let shown = safe(&text);
        assert!(!shown.contains('\u{202e}') && !shown.contains('\u{1b}'));
        let back: serde_json::Value = serde_json::from_str(&shown).unwrap();
        assert_eq!(back, value);
    }
}
