//! How human output is shaped for where it goes: tables sized to the terminal (full
//! rows off a terminal, so pipes and scripts see every character), and the action
//! coloured on a colour terminal. Decided once per process from the flags, the
//! environment (`NO_COLOR`, `CLICOLOR_FORCE`, `COLUMNS`, `TERM`) and whether stdout is a
//! terminal, as git and ripgrep decide.

use std::borrow::Cow;
use std::io::IsTerminal;
use std::sync::OnceLock;

/// `--color`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum ColorChoice {
    /// On a colour terminal, unless NO_COLOR is set (CLICOLOR_FORCE forces it on)
    #[default]
    Auto,
    Always,
    Never,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Style {
    /// The widest a table may be; `None`: as wide as its rows.
    pub width: Option<usize>,
    pub color: bool,
}

static STYLE: OnceLock<Style> = OnceLock::new();

/// Decides the style for this process (the first call wins).
pub(super) fn init(color: ColorChoice, wide: bool) {
    let terminal = std::io::stdout().is_terminal();
    let env = |name: &str| std::env::var(name).ok();
    let _ = STYLE.set(Style {
        width: if wide || !terminal {
            None
        } else {
            Some(terminal_width(env("COLUMNS").as_deref()))
        },
        color: wants_color(color, terminal, &env),
    });
}

/// The style decided by [`init`]; plain and full width before it.
pub(super) fn get() -> &'static Style {
    STYLE.get_or_init(Style::default)
}

/// The terminal's width: `COLUMNS` when it is a number (a user's override, as `ls`
/// honours it), else what the terminal says, else 80.
fn terminal_width(columns: Option<&str>) -> usize {
    columns
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|&c| c > 0)
        .or_else(|| {
            rustix::termios::tcgetwinsize(std::io::stdout())
                .ok()
                .map(|w| usize::from(w.ws_col))
                .filter(|&c| c > 0)
        })
        .unwrap_or(80)
}

/// `--color` first; then `NO_COLOR` (any non-empty value) turns colour off,
/// `CLICOLOR_FORCE` (non-empty, not `0`) on; else a terminal that is not `dumb`.
fn wants_color(choice: ColorChoice, terminal: bool, env: &dyn Fn(&str) -> Option<String>) -> bool {
    let set = |name: &str| env(name).is_some_and(|v| !v.is_empty());
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto if set("NO_COLOR") => false,
        ColorChoice::Auto if set("CLICOLOR_FORCE") => env("CLICOLOR_FORCE").as_deref() != Some("0"),
        ColorChoice::Auto => terminal && env("TERM").as_deref() != Some("dumb"),
    }
}

/// The SGR colour of an action label (`rotate`, `rotate (superseded by revoke)`, …):
/// what acts on the store stands out, what does not is dimmed.
fn action_color(label: &str) -> Option<&'static str> {
    if label.contains("(superseded") || label.contains("(excepted") {
        return Some("2");
    }
    Some(match label.split(' ').next()? {
        "revoke" => "1;31",
        "rotate" => "33",
        "restrict" => "35",
        "expire" => "36",
        "deferred" => "34",
        "warn" => "1",
        _ => return None,
    })
}

/// `text` (already escaped) as it is shown: the ACTION column of its tables coloured
/// when colour is on.
pub(super) fn paint(text: &str) -> Cow<'_, str> {
    if get().color {
        color_actions(text)
    } else {
        Cow::Borrowed(text)
    }
}

/// Colours the ACTION column of every table in `text` (already escaped: the only
/// escape sequences in the result are these). Everything else is left as it is.
fn color_actions(text: &str) -> Cow<'_, str> {
    if !text.contains("│ ACTION") {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 1024);
    // The ACTION column's index among a row's cells, inside a table.
    let mut column: Option<usize> = None;
    for line in text.split_inclusive('\n') {
        if !line.starts_with('│') {
            if line.starts_with('└') {
                column = None;
            }
            out.push_str(line);
            continue;
        }
        let cells: Vec<&str> = line.split('│').collect();
        if let Some(i) = cells.iter().position(|c| c.trim() == "ACTION") {
            column = Some(i);
            out.push_str(line);
            continue;
        }
        let colored = column.and_then(|i| {
            let cell = cells.get(i)?;
            let code = action_color(cell.trim())?;
            let start = cell.len() - cell.trim_start().len();
            let end = cell.trim_end().len();
            let mut cells: Vec<Cow<str>> = cells.iter().map(|c| Cow::Borrowed(*c)).collect();
            cells[i] = Cow::Owned(format!(
                "{}\u{1b}[{code}m{}\u{1b}[0m{}",
                &cell[..start],
                &cell[start..end],
                &cell[end..]
            ));
            Some(cells.join("│"))
        });
        out.push_str(colored.as_deref().unwrap_or(line));
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_then_no_color_then_clicolor_force_then_the_terminal() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        };
        let none = env(&[]);
        assert!(wants_color(ColorChoice::Auto, true, &none));
        assert!(!wants_color(ColorChoice::Auto, false, &none));
        assert!(!wants_color(ColorChoice::Auto, true, &env(&[("NO_COLOR", "1")])));
        assert!(wants_color(ColorChoice::Auto, true, &env(&[("NO_COLOR", "")])));
        assert!(wants_color(
            ColorChoice::Auto,
            false,
            &env(&[("CLICOLOR_FORCE", "1")])
        ));
        assert!(!wants_color(
            ColorChoice::Auto,
            false,
            &env(&[("CLICOLOR_FORCE", "0")])
        ));
        assert!(!wants_color(ColorChoice::Auto, true, &env(&[("TERM", "dumb")])));
        assert!(wants_color(
            ColorChoice::Always,
            false,
            &env(&[("NO_COLOR", "1")])
        ));
        assert!(!wants_color(
            ColorChoice::Never,
            true,
            &env(&[("CLICOLOR_FORCE", "1")])
        ));
    }

    #[test]
    fn only_the_action_column_of_a_table_is_coloured() {
        let text = "note: rotate\n┌───┐\n│ KEY │ ACTION │ REASON │\n├\n│ k1  │ rotate │ rotate │\n│     │        │ more   │\n│ k2  │ warn (excepted until x) │ r │\n└───┘\n│ a │ rotate │\n";
        let out = color_actions(text);
        assert_eq!(
            out,
            "note: rotate\n┌───┐\n│ KEY │ ACTION │ REASON │\n├\n│ k1  │ \u{1b}[33mrotate\u{1b}[0m │ rotate │\n│     │        │ more   │\n│ k2  │ \u{1b}[2mwarn (excepted until x)\u{1b}[0m │ r │\n└───┘\n│ a │ rotate │\n"
        );
        assert!(matches!(
            color_actions("{\"action\": \"rotate\"}\n"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn columns_overrides_the_terminal() {
        assert_eq!(terminal_width(Some("100")), 100);
        assert!(terminal_width(Some("wide")) > 0);
    }
}
