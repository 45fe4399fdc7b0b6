//! Output on a terminal (a pseudo-terminal made by util-linux's `script`) and off one:
//! tables sized to the terminal, actions coloured, pipes untouched.

use crate::common::*;

/// A store whose plan has long reasons: a rotate, a deferred and a warn.
fn store() -> Store {
    let s = Store::with_keys(&[
        ("old-bot", &key("[\"read\"]", "2026-07-01T00:00:00Z", "")),
        (
            "fresh-bot",
            &key("[\"read\"]", "2026-11-22T18:00:00Z", "").replace("alice", "dave"),
        ),
    ]);
    s.write(
        "policies/long.rhai",
        "fn evaluate(key) { warn(\"a reason long enough that no 80-column terminal can show it on one line of the table, however it is cut\") }\n",
    );
    s.commit("a wordy policy");
    s
}

/// `keyrot ARGS` run on a pseudo-terminal COLUMNS wide: what the terminal shows,
/// carriage returns removed (stderr, the progress bar, discarded).
fn on_terminal(s: &Store, columns: &str, args: &str, env: &[(&str, &str)]) -> String {
    let line = format!(
        "script -qec '{} --store {} {args} 2>/dev/null' /dev/null",
        env!("CARGO_BIN_EXE_keyrot"),
        s.root.display()
    );
    let mut all = vec![("COLUMNS", columns)];
    all.extend_from_slice(env);
    s.shell(&line, &all).ok().stdout.replace('\r', "")
}

/// Without colour codes.
fn plain(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('\u{1b}') {
        out.push_str(&rest[..at]);
        let end = rest[at..].find('m').map_or(rest.len(), |m| at + m + 1);
        rest = &rest[end..];
    }
    out + rest
}

fn widest(text: &str) -> usize {
    text.lines().map(|l| l.chars().count()).max().unwrap_or(0)
}

/// The words of the table's REASON cells, in order (wrapped or not).
fn reason_words(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.starts_with('│') && !l.contains(" REASON "))
        .flat_map(|l| {
            l.split('│')
                .nth(4)
                .unwrap_or("")
                .split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn on_a_terminal_the_table_fits_its_width_and_the_actions_are_coloured() {
    let s = store();
    let args = format!("plan --now {NOW}");
    let shown = on_terminal(&s, "80", &args, &[]);
    let text = plain(&shown);
    assert!(widest(&text) <= 80, "wider than 80 columns:\n{text}");
    assert!(
        text.contains("Plan: 1 rotate, 0 revoke, 0 restrict, 0 expire, 1 deferred, 2 warn."),
        "{text}"
    );
    // Nothing is lost to the wrapping: the same words as the full rows of a pipe.
    let piped = s.keyrot(&["plan", "--now", NOW]).ok().stdout;
    assert!(widest(&piped) > 80, "a pipe gets full rows");
    assert_eq!(reason_words(&text), reason_words(&piped));
    assert!(shown.contains("\u{1b}[33mrotate\u{1b}[0m"), "{shown:?}");
    assert!(shown.contains("\u{1b}[34mdeferred\u{1b}[0m"), "{shown:?}");

    // --wide: full rows on the terminal too; 120 columns: fits 120.
    assert!(widest(&plain(&on_terminal(&s, "80", &format!("{args} --wide"), &[]))) > 120);
    assert!(widest(&plain(&on_terminal(&s, "120", &args, &[]))) <= 120);
    // No colour when asked not to.
    assert!(!on_terminal(&s, "80", &args, &[("NO_COLOR", "1")]).contains('\u{1b}'));
    assert!(!on_terminal(&s, "80", &format!("{args} --color never"), &[]).contains('\u{1b}'));
    // log's table too.
    s.apply().ok();
    let log = plain(&on_terminal(&s, "100", "log", &[]));
    assert!(widest(&log) <= 100, "{log}");
}

#[test]
fn off_a_terminal_rows_are_whole_and_colour_comes_only_when_forced() {
    let s = store();
    let piped = s
        .keyrot_env(&["plan", "--now", NOW], &[("COLUMNS", "80")])
        .ok()
        .stdout;
    assert!(widest(&piped) > 80 && !piped.contains('\u{1b}'));
    let forced = s
        .keyrot_env(&["plan", "--now", NOW], &[("CLICOLOR_FORCE", "1")])
        .ok()
        .stdout;
    assert!(forced.contains("\u{1b}[33mrotate\u{1b}[0m"), "{forced:?}");
    assert_eq!(plain(&forced), piped);
    let always = s.keyrot(&["plan", "--now", NOW, "--color", "always"]).ok().stdout;
    assert_eq!(always, forced);
    // JSON is never coloured.
    let json = s
        .keyrot(&["plan", "--now", NOW, "--json", "--color", "always"])
        .ok()
        .stdout;
    assert!(!json.contains('\u{1b}'));
}
