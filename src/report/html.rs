//! The report as one HTML page: inline CSS and SVG, no scripts, nothing fetched, so it
//! can be attached to an audit ticket and opened offline years later. Real headings,
//! table headers, a text alternative for every chart (its data table follows it), and
//! a print stylesheet (an auditor prints it).

use std::fmt::Write;

use super::{Group, Report, Row, DUE_WINDOW_DAYS, EXPIRING_DAYS};

/// Text made safe for HTML text and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "
:root { --ok: #2e7d32; --bad: #c62828; --warn: #ef6c00; --hold: #6a1b9a; --off: #757575; --soon: #f9a825; --ink: #1a1a1a; --line: #d0d0d0; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif; color: var(--ink); margin: 0 auto; max-width: 1100px; padding: 24px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 32px 0 8px; border-bottom: 2px solid var(--line); padding-bottom: 4px; }
.meta { color: #555; margin: 0 0 16px; }
.tiles { display: flex; gap: 12px; flex-wrap: wrap; margin: 12px 0; }
.tile { border: 1px solid var(--line); border-left: 6px solid var(--c); border-radius: 6px; padding: 8px 14px; min-width: 150px; }
.tile b { display: block; font-size: 28px; }
table { border-collapse: collapse; width: 100%; margin: 8px 0 4px; font-size: 14px; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 8px; text-align: left; vertical-align: top; }
thead th { background: #f4f4f4; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
tr.soon td { background: #fff4d6; }
.note { color: #555; font-size: 13px; }
.legend span { display: inline-block; margin-right: 14px; }
.legend i { display: inline-block; width: 12px; height: 12px; margin-right: 4px; vertical-align: -1px; }
svg { display: block; max-width: 100%; height: auto; }
svg text { font: 12px system-ui, sans-serif; fill: var(--ink); }
@media print {
  body { max-width: none; padding: 0; font-size: 11pt; }
  h2 { break-after: avoid; }
  tr, .tile, svg { break-inside: avoid; }
  th { background: none; }
}
";

/// The page.
pub(crate) fn render(r: &Report) -> String {
    let mut h = String::with_capacity(64 * 1024 + r.plan.len() * 200);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>keyrot report: {}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n<h1>keyrot report</h1>\n<p class=\"meta\">Store <code>{}</code> at commit <code>{}</code>, as of {} (keyrot {}). {} keys.</p>\n",
        esc(&r.store),
        esc(&r.store),
        esc(&r.store_commit),
        esc(&r.now),
        esc(r.keyrot_version),
        r.keys
    );
    compliance(&mut h, r);
    ages(&mut h, r);
    weekly(&mut h, r);
    due_soon(&mut h, r);
    exceptions(&mut h, r);
    findings(&mut h, r);
    plan(&mut h, r);
    h.push_str("</main>\n</body>\n</html>\n");
    h
}

fn compliance(h: &mut String, r: &Report) {
    let c = &r.compliance;
    let parts = [
        ("compliant", "satisfy every policy", c.compliant, "var(--ok)"),
        ("findings", "have findings", c.findings, "var(--bad)"),
        (
            "excepted",
            "have only excepted findings",
            c.excepted,
            "var(--hold)",
        ),
        ("revoked", "are revoked", c.revoked, "var(--off)"),
    ];
    h.push_str("<section aria-labelledby=\"compliance\">\n<h2 id=\"compliance\">Compliance at a glance</h2>\n<div class=\"tiles\">\n");
    for (id, what, n, color) in parts {
        let _ = writeln!(
            h,
            "<div class=\"tile\" style=\"--c: {color}\" data-count=\"{id}\"><b>{n}</b>keys {what}</div>"
        );
    }
    h.push_str("</div>\n");
    let total: usize = parts.iter().map(|p| p.2).sum::<usize>().max(1);
    let desc = parts
        .iter()
        .map(|(id, _, n, _)| format!("{n} {id}"))
        .collect::<Vec<_>>()
        .join(", ");
    let _ = write!(
        h,
        "<svg viewBox=\"0 0 1000 36\" role=\"img\" aria-labelledby=\"c-t c-d\"><title id=\"c-t\">Keys by compliance</title><desc id=\"c-d\">{desc}</desc>"
    );
    let mut x = 0.0;
    for (id, _, n, color) in parts {
        let w = 1000.0 * n as f64 / total as f64;
        if n > 0 {
            let _ = write!(
                h,
                "<rect x=\"{x:.1}\" y=\"0\" width=\"{w:.1}\" height=\"36\" style=\"fill: {color}\"><title>{n} {id}</title></rect>"
            );
        }
        x += w;
    }
    h.push_str("</svg>\n</section>\n");
}

fn ages(h: &mut String, r: &Report) {
    let _ = write!(
        h,
        "<section aria-labelledby=\"ages\">\n<h2 id=\"ages\">Key age against rotation</h2>\n<p class=\"note\">Active keys by time since their last rotation; each bar split by when the plan rotates or revokes them: now, within {DUE_WINDOW_DAYS} days (a plan that far ahead does), or later.</p>\n<p class=\"legend\"><span><i style=\"background: var(--bad)\"></i>due now</span><span><i style=\"background: var(--soon)\"></i>due within {DUE_WINDOW_DAYS} days</span><span><i style=\"background: var(--ok)\"></i>later</span></p>\n"
    );
    let max = r
        .ages
        .iter()
        .map(|b| b.due_now + b.due_soon + b.later)
        .max()
        .unwrap_or(0)
        .max(1);
    let desc = r
        .ages
        .iter()
        .map(|b| {
            format!(
                "{}: {} due now, {} due soon, {} later",
                b.label, b.due_now, b.due_soon, b.later
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let _ = write!(
        h,
        "<svg viewBox=\"0 0 1000 260\" role=\"img\" aria-labelledby=\"a-t a-d\"><title id=\"a-t\">Active keys by age</title><desc id=\"a-d\">{}</desc>",
        esc(&desc)
    );
    let slot = 1000.0 / r.ages.len().max(1) as f64;
    for (i, b) in r.ages.iter().enumerate() {
        let x = i as f64 * slot + slot * 0.15;
        let w = slot * 0.7;
        let mut y = 220.0;
        for (n, color, what) in [
            (b.due_now, "var(--bad)", "due now"),
            (b.due_soon, "var(--soon)", "due soon"),
            (b.later, "var(--ok)", "later"),
        ] {
            let bar = 200.0 * n as f64 / max as f64;
            if n > 0 {
                y -= bar;
                let _ = write!(
                    h,
                    "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{bar:.1}\" style=\"fill: {color}\"><title>{}: {n} {what}</title></rect>",
                    esc(b.label)
                );
            }
        }
        let total = b.due_now + b.due_soon + b.later;
        let _ = write!(
            h,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{total}</text><text x=\"{:.1}\" y=\"245\" text-anchor=\"middle\">{}</text>",
            x + w / 2.0,
            y - 4.0,
            x + w / 2.0,
            esc(b.label)
        );
    }
    h.push_str("</svg>\n<table>\n<caption class=\"note\">The chart's data</caption>\n<thead><tr><th scope=\"col\">age</th><th scope=\"col\" class=\"n\">due now</th><th scope=\"col\" class=\"n\">due within 30 days</th><th scope=\"col\" class=\"n\">later</th></tr></thead>\n<tbody>\n");
    for b in &r.ages {
        number_row(h, b.label, &[b.due_now, b.due_soon, b.later]);
    }
    h.push_str("</tbody>\n</table>\n</section>\n");
}

fn weekly(h: &mut String, r: &Report) {
    h.push_str("<section aria-labelledby=\"weekly\">\n<h2 id=\"weekly\">Rotations and revocations per week</h2>\n<p class=\"note\">From the apply commits in the store's history (each names its actions, policy and reason), the last 26 weeks; weeks start on Monday (UTC).</p>\n<p class=\"legend\"><span><i style=\"background: var(--warn)\"></i>rotations</span><span><i style=\"background: var(--bad)\"></i>revocations</span></p>\n");
    let max = r
        .weekly
        .iter()
        .map(|w| w.rotate.max(w.revoke))
        .max()
        .unwrap_or(0)
        .max(1);
    let desc = r
        .weekly
        .iter()
        .filter(|w| w.rotate + w.revoke > 0)
        .map(|w| format!("week of {}: {} rotated, {} revoked", w.week, w.rotate, w.revoke))
        .collect::<Vec<_>>()
        .join("; ");
    let _ = write!(
        h,
        "<svg viewBox=\"0 0 1000 200\" role=\"img\" aria-labelledby=\"w-t w-d\"><title id=\"w-t\">Applied rotations and revocations per week</title><desc id=\"w-d\">{}</desc>",
        esc(if desc.is_empty() { "none in these weeks" } else { &desc })
    );
    let slot = 1000.0 / r.weekly.len().max(1) as f64;
    for (i, w) in r.weekly.iter().enumerate() {
        let x = i as f64 * slot;
        for (j, (n, color, what)) in [
            (w.rotate, "var(--warn)", "rotated"),
            (w.revoke, "var(--bad)", "revoked"),
        ]
        .into_iter()
        .enumerate()
        {
            let bar = 160.0 * n as f64 / max as f64;
            if n > 0 {
                let _ = write!(
                    h,
                    "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bar:.1}\" style=\"fill: {color}\"><title>week of {}: {n} {what}</title></rect>",
                    x + slot * (0.1 + 0.4 * j as f64),
                    170.0 - bar,
                    slot * 0.38,
                    esc(&w.week)
                );
            }
        }
        if i % 4 == 0 {
            let _ = write!(
                h,
                "<text x=\"{:.1}\" y=\"190\">{}</text>",
                x + 2.0,
                esc(&w.week[5..])
            );
        }
    }
    h.push_str("</svg>\n<table>\n<caption class=\"note\">Weeks with applied actions</caption>\n<thead><tr><th scope=\"col\">week of</th><th scope=\"col\" class=\"n\">rotated</th><th scope=\"col\" class=\"n\">revoked</th><th scope=\"col\" class=\"n\">restricted</th><th scope=\"col\" class=\"n\">expired</th></tr></thead>\n<tbody>\n");
    let active: Vec<_> = r
        .weekly
        .iter()
        .filter(|w| w.rotate + w.revoke + w.restrict + w.expire > 0)
        .collect();
    if active.is_empty() {
        h.push_str("<tr><td colspan=\"5\">No apply commit in these weeks.</td></tr>\n");
    }
    for w in active {
        number_row(h, &w.week, &[w.rotate, w.revoke, w.restrict, w.expire]);
    }
    h.push_str("</tbody>\n</table>\n</section>\n");
}

/// A table row: a header cell, then numbers.
fn number_row(h: &mut String, header: &str, numbers: &[usize]) {
    let _ = write!(h, "<tr><th scope=\"row\">{}</th>", esc(header));
    for n in numbers {
        let _ = write!(h, "<td class=\"n\">{n}</td>");
    }
    h.push_str("</tr>\n");
}

fn rows(h: &mut String, rows: &[Row], total: usize, caption: &str) {
    let _ = write!(
        h,
        "<table>\n<caption class=\"note\">{}</caption>\n<thead><tr><th scope=\"col\">key</th><th scope=\"col\">owner</th><th scope=\"col\">action</th><th scope=\"col\">policy</th><th scope=\"col\">reason</th></tr></thead>\n<tbody>\n",
        esc(caption)
    );
    for r in rows {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            match r.folder.as_str() {
                "" => esc(&r.key),
                folder => format!("{}/{}", esc(folder), esc(&r.key)),
            },
            esc(&r.owner),
            r.action,
            esc(&r.policy),
            esc(&r.reason)
        );
    }
    h.push_str("</tbody>\n</table>\n");
    if total > rows.len() {
        let _ = writeln!(
            h,
            "<p class=\"note\">{} more not shown: this report in JSON, and the plan, list them all.</p>",
            total - rows.len()
        );
    }
}

fn due_soon(h: &mut String, r: &Report) {
    let _ = write!(
        h,
        "<section aria-labelledby=\"due\">\n<h2 id=\"due\">Falling due in the next {DUE_WINDOW_DAYS} days</h2>\n<p class=\"note\" data-count=\"due-soon\">{} keys that a plan {DUE_WINDOW_DAYS} days ahead rotates or revokes and today's plan does not.</p>\n",
        r.due_soon_total
    );
    rows(
        h,
        &r.due_soon,
        r.due_soon_total,
        "What falls due, as the plan 30 days ahead says",
    );
    h.push_str("</section>\n");
}

fn exceptions(h: &mut String, r: &Report) {
    let _ = write!(
        h,
        "<section aria-labelledby=\"exceptions\">\n<h2 id=\"exceptions\">Open exceptions</h2>\n<p class=\"note\">Accepted risks in <code>exceptions.toml</code>; those expiring within {EXPIRING_DAYS} days are highlighted.</p>\n"
    );
    if r.exceptions.is_empty() {
        h.push_str("<p>None.</p>\n</section>\n");
        return;
    }
    h.push_str("<table>\n<thead><tr><th scope=\"col\">key</th><th scope=\"col\">policy</th><th scope=\"col\">reason</th><th scope=\"col\">approved by</th><th scope=\"col\">expires</th></tr></thead>\n<tbody>\n");
    for e in &r.exceptions {
        let when = if e.days_left < 0 {
            " (expired)".to_string()
        } else if e.expiring_soon {
            format!(" (in {} days)", e.days_left)
        } else {
            String::new()
        };
        let _ = writeln!(
            h,
            "<tr{}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}{when}</td></tr>",
            if e.expiring_soon { " class=\"soon\"" } else { "" },
            esc(&e.key),
            esc(&e.policy),
            esc(&e.reason),
            esc(&e.approved_by),
            esc(&e.expires)
        );
    }
    h.push_str("</tbody>\n</table>\n</section>\n");
}

fn group_table(h: &mut String, groups: &[Group], what: &str) {
    let _ = write!(
        h,
        "<table>\n<thead><tr><th scope=\"col\">{what}</th><th scope=\"col\" class=\"n\">keys</th><th scope=\"col\" class=\"n\">revoke</th><th scope=\"col\" class=\"n\">rotate</th><th scope=\"col\" class=\"n\">restrict</th><th scope=\"col\" class=\"n\">expire</th><th scope=\"col\" class=\"n\">deferred</th><th scope=\"col\" class=\"n\">warn</th></tr></thead>\n<tbody>\n"
    );
    for g in groups {
        number_row(
            h,
            &g.name,
            &[
                g.keys, g.revoke, g.rotate, g.restrict, g.expire, g.deferred, g.warn,
            ],
        );
    }
    h.push_str("</tbody>\n</table>\n");
}

fn findings(h: &mut String, r: &Report) {
    h.push_str("<section aria-labelledby=\"findings\">\n<h2 id=\"findings\">Findings per team and owner</h2>\n<p class=\"note\">Active keys and the plan's actions on them that no exception holds back, by the owner's team (owners.toml), by the folder the key file is in (when keys are in folders), and by owner (those with findings, most first).</p>\n");
    group_table(h, &r.teams, "team");
    if !r.folders.is_empty() {
        group_table(h, &r.folders, "folder");
    }
    group_table(h, &r.owners, "owner");
    if r.owners_total > r.owners.len() {
        let _ = writeln!(
            h,
            "<p class=\"note\">{} more owners with findings: this report in JSON lists the first {}.</p>",
            r.owners_total - r.owners.len(),
            r.owners.len()
        );
    }
    h.push_str("</section>\n");
}

fn plan(h: &mut String, r: &Report) {
    let s = &r.plan_summary;
    let _ = write!(
        h,
        "<section aria-labelledby=\"plan\">\n<h2 id=\"plan\">The current plan</h2>\n<p data-summary=\"{} {} {} {} {} {}\">Plan: {} rotate, {} revoke, {} restrict, {} expire, {} deferred, {} warn.</p>\n",
        s.rotate, s.revoke, s.restrict, s.expire, s.deferred, s.warn, s.rotate, s.revoke, s.restrict, s.expire, s.deferred, s.warn
    );
    rows(
        h,
        &r.plan,
        r.plan_total,
        "The plan's actions (superseded ones left out)",
    );
    h.push_str("</section>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_text_cannot_become_markup() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(esc("a\u{1b}[31mb"), "a\u{FFFD}[31mb");
    }
}
