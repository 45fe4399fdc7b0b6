//! Turning TOML parse failures into [`Problem`]s with line and column.

use std::ops::Range;

use crate::error::{line_col, Problem};

/// A `toml` deserialization error as `path:line:col: message`.
pub(super) fn toml_problem(path: &str, text: &str, err: &toml::de::Error) -> Problem {
    let pos = err.span().map(|s| line_col(text, s.start));
    Problem::at(path, pos, err.message().trim().to_string())
}

/// A problem found after parsing, at a value's span.
pub(super) fn span_problem(path: &str, text: &str, span: Range<usize>, message: String) -> Problem {
    Problem::at(path, Some(line_col(text, span.start)), message)
}

/// Decodes a file's bytes as UTF-8, or says where it stops being text.
pub(super) fn utf8<'a>(path: &str, bytes: &'a [u8]) -> Result<&'a str, Problem> {
    std::str::from_utf8(bytes).map_err(|e| {
        let valid = &bytes[..e.valid_up_to()];
        let text = std::str::from_utf8(valid).unwrap_or_default();
        Problem::at(
            path,
            Some(line_col(text, text.len())),
            "file is not valid UTF-8 text",
        )
    })
}
