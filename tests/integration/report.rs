//! `keyrot report`: the page's numbers are the plan's, it fetches nothing, Chromium
//! renders it (to a picture that is not blank, and to PDF for print), exceptions
//! expiring soon stand out, and the weekly history counts the apply commits.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::common::*;

const AT: &str = "2026-12-02T12:00:00Z";

/// The example store as `init --example` makes it (one of every action).
fn example() -> Store {
    let s = Store::bare();
    s.keyrot_in(s.root.parent().unwrap(), &["init", "--example", "store"])
        .ok();
    s
}

fn report_html(s: &Store, now: &str) -> (PathBuf, String) {
    let out = s.root.parent().unwrap().join("report.html");
    s.keyrot(&["report", "--now", now, "--out", out.to_str().unwrap()])
        .ok()
        .stderr_has("wrote ");
    let html = std::fs::read_to_string(&out).unwrap();
    (out, html)
}

#[test]
fn the_page_shows_the_plans_numbers_and_references_nothing_outside_itself() {
    let s = example();
    let plan = s.keyrot(&["plan", "--json", "--now", AT]).ok().json();
    let report = s.keyrot(&["report", "--json", "--now", AT]).ok().json();
    crate::schemas::valid("report", &report);
    assert_eq!(
        report["plan_summary"], plan["summary"],
        "the report's plan is the plan"
    );
    assert_eq!(report["store_commit"], plan["store_commit"]);
    let c = &report["compliance"];
    let keys = report["keys"].as_u64().unwrap();
    let sum: u64 = ["compliant", "findings", "excepted", "revoked"]
        .iter()
        .map(|k| c[k].as_u64().unwrap())
        .sum();
    assert_eq!(sum, keys, "every key counted once: {c}");
    // Keys with an open finding are exactly the active keys the plan acts on.
    let acted: std::collections::BTreeSet<&str> = plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["superseded_by"].is_null() && a["excepted"].is_null())
        .map(|a| a["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        c["findings"].as_u64().unwrap() as usize,
        acted.len(),
        "{c} {acted:?}"
    );
    let aged: u64 = report["ages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            b["due_now"].as_u64().unwrap() + b["due_soon"].as_u64().unwrap() + b["later"].as_u64().unwrap()
        })
        .sum();
    assert_eq!(
        aged,
        keys - c["revoked"].as_u64().unwrap(),
        "every active key has an age"
    );
    // What falls due is what `plan` 30 days ahead rotates or revokes and today's does not.
    let due = |plan: &Value| -> std::collections::BTreeSet<String> {
        plan["actions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["superseded_by"].is_null() && a["excepted"].is_null())
            .filter(|a| a["action"] == "rotate" || a["action"] == "revoke")
            .map(|a| a["key"].as_str().unwrap().to_string())
            .collect()
    };
    let later = s
        .keyrot(&["plan", "--json", "--now", "2027-01-01T12:00:00Z"])
        .ok()
        .json();
    let want: Vec<String> = due(&later).difference(&due(&plan)).cloned().collect();
    let got: Vec<String> = report["due_soon"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap().to_string())
        .collect();
    assert!(!want.is_empty(), "the example store has a key falling due");
    assert_eq!(got, want);
    assert_eq!(report["due_soon_total"], want.len());

    let (_, html) = report_html(&s, AT);
    let summary = &plan["summary"];
    let want = format!(
        "data-summary=\"{} {} {} {} {} {}\"",
        summary["rotate"],
        summary["revoke"],
        summary["restrict"],
        summary["expire"],
        summary["deferred"],
        summary["warn"]
    );
    assert!(html.contains(&want), "{want}");
    for (id, n) in ["compliant", "findings", "excepted", "revoked"]
        .iter()
        .map(|k| (k, &c[k]))
    {
        assert!(
            html.contains(&format!("data-count=\"{id}\"><b>{n}</b>")),
            "{id} {n}"
        );
    }
    for heading in [
        "<h1>keyrot report</h1>",
        "Compliance at a glance</h2>",
        "Key age against rotation</h2>",
        "Rotations and revocations per week</h2>",
        "Falling due in the next 30 days</h2>",
        "Open exceptions</h2>",
        "Findings per team and owner</h2>",
        "The current plan</h2>",
    ] {
        assert!(html.contains(heading), "{heading}");
    }
    // Accessible: every chart is an image with a title and a description.
    assert_eq!(
        html.matches("<svg").count(),
        html.matches("role=\"img\" aria-labelledby=").count()
    );
    assert_eq!(html.matches("<svg").count(), html.matches("<desc id=").count());
    assert!(html.contains("<th scope=\"col\">"));
    // Self-contained: nothing fetched, nothing run.
    let lower = html.to_lowercase();
    for outside in [
        "<script", "<link", "<img", "<iframe", "src=", "href=", "url(", "@import", "http://", "https://",
    ] {
        assert!(
            !lower.contains(outside),
            "the page references something outside itself: {outside}"
        );
    }
}

fn chromium() -> String {
    for c in [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ] {
        if Path::new(c).exists() {
            return c.to_string();
        }
    }
    panic!("headless Chromium is needed to check the report as people see it: run scripts/install-test-servers (it installs Debian's chromium)");
}

/// Headless Chromium with the flags this closed network needs, a fresh profile.
fn headless(profile: &Path, args: &[&str]) {
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn chromium_renders_the_page_and_prints_it() {
    let s = example();
    let (page, _) = report_html(&s, AT);
    let dir = s.root.parent().unwrap();
    let png = dir.join("report.png");
    let url = format!("file://{}", page.display());
    headless(
        &dir.join("profile"),
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1100,2400",
            &url,
        ],
    );
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let bytes = &buf[..info.buffer_size()];
    let channels = info.color_type.samples();
    let pixels: Vec<&[u8]> = bytes.chunks(channels).collect();
    let inked = pixels.iter().filter(|p| p[..3].iter().any(|&v| v < 200)).count();
    let colours: std::collections::HashSet<&[u8]> = pixels.iter().map(|p| &p[..3]).collect();
    assert!((info.width, info.height) == (1100, 2400), "{info:?}");
    assert!(
        inked * 100 > pixels.len() * 3,
        "the picture is nearly blank: {inked} of {} pixels inked",
        pixels.len()
    );
    // Text, and the charts' red, amber, green and grey.
    for (name, rgb) in [
        ("green", [0x2e, 0x7d, 0x32]),
        ("red", [0xc6, 0x28, 0x28]),
        ("grey", [0x75, 0x75, 0x75]),
    ] {
        assert!(
            colours.contains(&rgb[..]),
            "no {name} in the picture: the charts were not drawn"
        );
    }

    let pdf = dir.join("report.pdf");
    headless(
        &dir.join("profile2"),
        &[
            &format!("--print-to-pdf={}", pdf.display()),
            "--no-pdf-header-footer",
            &url,
        ],
    );
    let bytes = std::fs::read(&pdf).unwrap();
    assert!(
        bytes.starts_with(b"%PDF") && bytes.len() > 10_000,
        "{} bytes",
        bytes.len()
    );
}

#[test]
fn exceptions_expiring_soon_stand_out_and_the_weeks_count_the_applies() {
    let s = Store::with_keys(&[
        ("old", &key("[\"read\"]", "2026-07-01T00:00:00Z", "")),
        ("older", &key("[\"read\"]", "2026-06-01T00:00:00Z", "")),
        (
            "bad",
            &key("[\"read\"]", "2026-11-01T00:00:00Z", "compromised = true\n"),
        ),
    ]);
    s.write(
        "exceptions.toml",
        "[[exception]]\nkey = \"old\"\npolicy = \"max-age\"\nreason = \"migration (SEC-9)\"\napproved_by = \"carol\"\nexpires = 2026-11-27\n\n[[exception]]\nkey = \"older\"\npolicy = \"max-age\"\nreason = \"vendor freeze (SEC-10)\"\napproved_by = \"dana\"\nexpires = 2027-02-01\n",
    );
    s.commit("exceptions");
    // A week before, `bad` is revoked by an apply.
    s.apply_at("2026-11-15T10:00:00Z", &[]).ok();
    let report: Value = s.keyrot(&["report", "--json", "--now", NOW]).ok().json();
    let ex = report["exceptions"].as_array().unwrap();
    assert_eq!(
        (
            ex[0]["key"].as_str(),
            ex[0]["expiring_soon"].as_bool(),
            ex[0]["days_left"].as_i64()
        ),
        (Some("old"), Some(true), Some(4))
    );
    assert_eq!(
        (ex[1]["key"].as_str(), ex[1]["expiring_soon"].as_bool()),
        (Some("older"), Some(false))
    );
    assert_eq!(report["compliance"]["excepted"], 2);
    assert_eq!(report["compliance"]["revoked"], 1);
    let weeks: Vec<(&str, u64)> = report["weekly"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["revoke"].as_u64().unwrap() > 0)
        .map(|w| (w["week"].as_str().unwrap(), w["revoke"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        weeks,
        [("2026-11-09", 1)],
        "the revoke of 2026-11-15, in the week starting Monday 9th"
    );
    let (_, html) = report_html(&s, NOW);
    assert!(
        html.contains("<tr class=\"soon\"><td>old</td>"),
        "the expiring exception is highlighted"
    );
    assert!(html.contains("2026-11-27 (in 4 days)"));
}

#[test]
fn the_look_ahead_runs_the_policies_at_its_own_instant() {
    // A policy that reads the clock itself, not a key's age.
    let s = Store::with_keys(&[("k", &key("[\"read\"]", "2026-11-20T00:00:00Z", ""))]);
    s.write(
        "policies/deadline.rhai",
        "fn evaluate(key) {\n    if now() >= time(\"2026-12-20T00:00:00Z\") {\n        return rotate(\"the vendor's deadline\");\n    }\n}\n",
    );
    s.commit("deadline");
    let r = s
        .keyrot(&["report", "--json", "--now", "2026-12-02T00:00:00Z"])
        .ok()
        .json();
    assert_eq!(r["plan_summary"]["rotate"], 0);
    assert_eq!(r["due_soon_total"], 1, "{r:#}");
    assert_eq!(
        (
            r["due_soon"][0]["key"].as_str(),
            r["due_soon"][0]["reason"].as_str()
        ),
        (Some("k"), Some("the vendor's deadline"))
    );
}
