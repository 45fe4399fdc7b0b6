//! `keyrot explain KEY`: why one key gets what it gets.

use std::path::Path;
use std::process::ExitCode;

use crate::error::Error;
use crate::explain::{explain, line_diff, Explanation};
use crate::time::Dur;

#[derive(clap::Args)]
#[command(mut_arg("json", |a| a.help("Print the explanation as JSON")))]
pub(super) struct Args {
    /// The key: its id (the file name without .toml), or folder/id (`trading/binance-bot`)
    key: String,
    #[command(flatten)]
    eval: super::EvalArgs,
}

pub(super) fn run(args: &Args, store: &Path) -> Result<ExitCode, Error> {
    let super::WorkTree { ws, now, loaded } = args.eval.load_worktree(store)?;
    let read = |rel: &str| {
        let path = ws.root.join(rel);
        std::fs::read_to_string(&path).map_err(|e| Error::io(path, e))
    };
    let e = explain(&loaded, &args.key, now, read)?;
    if args.eval.json {
        super::out(&format!(
            "{}\n",
            serde_json::to_string_pretty(&e).unwrap_or_default()
        ));
    } else {
        super::out(&render(&e));
    }
    Ok(ExitCode::SUCCESS)
}

/// `97d 3h` from the compact `97d3h` of the JSON form.
fn human(compact: &str) -> String {
    Dur::parse(compact).map_or_else(|_| compact.to_string(), |d| d.to_string())
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "(none)".into()
    } else {
        items.join(", ")
    }
}

fn render(e: &Explanation) -> String {
    let f = &e.facts;
    let mut out = format!("Key {} ({}), {}, at {}\n\n", e.key, e.path, e.status, e.now);
    let team = f
        .owner_team
        .as_deref()
        .map(|t| format!(", team {t}"))
        .unwrap_or_default();
    let departed = f
        .owner_departed_at
        .as_deref()
        .map(|t| format!(" at {t}"))
        .unwrap_or_default();
    let rows = [
        ("folder", f.folder.clone()),
        ("service", f.service.clone()),
        (
            "owner",
            format!(
                "{} ({}{departed}{team}; {} active key{})",
                f.owner,
                f.owner_status,
                f.owner_key_count,
                if f.owner_key_count == 1 { "" } else { "s" }
            ),
        ),
        ("environment", f.environment.clone()),
        ("permissions", list(&f.permissions)),
        ("ip_allowlist", list(&f.ip_allowlist)),
        ("tags", list(&f.tags)),
        ("compromised", f.compromised.to_string()),
        ("created_at", f.created_at.clone()),
        ("rotated_at", f.rotated_at.clone()),
        (
            "last_used_at",
            f.last_used_at.clone().unwrap_or_else(|| "never".into()),
        ),
        ("age", human(&f.age)),
        ("idle", human(&f.idle)),
    ];
    out.push_str("What policies see:\n");
    // A key at the top of the keys folder has no folder to show.
    for (name, value) in rows
        .into_iter()
        .filter(|(name, value)| *name != "folder" || !value.is_empty())
    {
        out.push_str(&format!("  {name:<16} {value}\n"));
    }
    if !e.policies.is_empty() {
        out.push_str("\nPolicies:\n");
        for p in &e.policies {
            if p.decisions.is_empty() {
                out.push_str(&format!("  {:<20} no finding\n", p.policy));
            }
            for d in &p.decisions {
                let mut extra = String::new();
                if let Some(g) = &d.grace_period {
                    extra.push_str(&format!(" (grace {})", human(g)));
                }
                if let Some(r) = &d.remove {
                    extra.push_str(&format!(" (remove {})", r.join(", ")));
                }
                out.push_str(&format!("  {:<20} {}: {}{extra}\n", p.policy, d.action, d.reason));
            }
        }
    }
    if !e.exceptions.is_empty() {
        out.push_str("\nExceptions:\n");
        for x in &e.exceptions {
            out.push_str(&format!(
                "  {:<20} {} {}, approved by {}: {}\n",
                x.policy,
                if x.active { "holds until" } else { "expired" },
                x.expires,
                x.approved_by,
                x.reason
            ));
        }
    }
    out.push_str("\nResolution:\n");
    for r in &e.resolution {
        out.push_str(&format!("  - {r}\n"));
    }
    match &e.after {
        Some(after) => {
            out.push_str(&format!("\nAfter apply ({}):\n", e.path));
            for line in line_diff(&e.before, after) {
                out.push_str(&format!("  {line}\n"));
            }
        }
        None => out.push_str(&format!("\nAfter apply: {} is unchanged.\n", e.path)),
    }
    out
}
