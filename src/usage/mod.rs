//! `keyrot usage import`: access records become each key's `last_used_at` (the latest)
//! and `last_used_from` (this import's addresses), in one commit, so `idle` works on
//! real data and `unexpected-source` sees where a key was used from. Records of a
//! secret that no longer works (revoked, expired) are reported; records of keys or
//! fingerprints the store does not know are counted and listed, never dropped.

mod records;

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::net::IpAddr;

use serde::Serialize;
use sha2::{Digest, Sha256};

pub(crate) use records::Format;
use records::{Record, Records, Who};

use crate::direct_commit::Edit;
use crate::error::{Error, InputError, Result, StoreError};
use crate::store::{Key, KeyStatus, Source, Store};
use crate::time::{Dur, Time};
use crate::trailers::TRAILER_NOW;
use crate::workspace::Workspace;

/// The most addresses kept per key (SPEC §8).
pub(crate) const MAX_ADDRESSES: usize = 16;

/// What an import found and did.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Imported {
    /// Records read.
    pub records: u64,
    /// Keys whose use was recorded, by id.
    pub keys: Vec<KeyUse>,
    /// Records of secrets that no longer work.
    pub stale: Vec<StaleUse>,
    /// Records naming a key or fingerprint the store does not know.
    pub unknown: Vec<Unknown>,
    /// The commit, when a key file changed.
    pub commit: Option<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct KeyUse {
    pub key: String,
    pub records: u64,
    pub last_used_at: String,
    pub last_used_from: Vec<String>,
    /// Whether the key file changed (a re-import of the same records changes nothing).
    pub changed: bool,
}

/// Use of a secret after it stopped working: a client that never switched, or someone
/// holding a secret they should not have.
#[derive(Debug, Serialize)]
pub(crate) struct StaleUse {
    pub key: String,
    /// The secret used, when the record named it by fingerprint.
    pub fingerprint: Option<String>,
    /// `revoked` (the key was revoked before the use), `expired` (a previous secret
    /// past its grace period) or `older` (a secret the history shows the key had).
    pub why: &'static str,
    pub records: u64,
    pub last_at: String,
    pub ips: Vec<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Unknown {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    pub records: u64,
}

/// How far in the future a record may be (clocks of log sources drift).
const CLOCK_SKEW: Dur = Dur::from_secs(300);

/// Addresses seen, the latest use of each, at most [`MAX_ADDRESSES`]: when full, a new
/// address replaces the one used longest ago (memory stays bounded per key, whatever
/// the import holds).
#[derive(Default)]
struct Addresses(Vec<(IpAddr, Time)>);

impl Addresses {
    fn see(&mut self, ip: IpAddr, at: Time) {
        if let Some(slot) = self.0.iter_mut().find(|(a, _)| *a == ip) {
            slot.1 = slot.1.max(at);
        } else if self.0.len() < MAX_ADDRESSES {
            self.0.push((ip, at));
        } else if let Some(oldest) = self.0.iter_mut().min_by_key(|(_, t)| *t) {
            if oldest.1 < at {
                *oldest = (ip, at);
            }
        }
    }
}

/// One key's (or stale secret's) use in this import.
#[derive(Default)]
struct Seen {
    records: u64,
    latest: Option<Time>,
    /// Addresses outside the key's allowlist, kept apart so that a key used from a
    /// thousand expected addresses and one unexpected keeps the unexpected one.
    outside: Addresses,
    inside: Addresses,
}

impl Seen {
    fn see(&mut self, r: &Record, outside: bool) {
        self.records += 1;
        self.latest = Some(self.latest.map_or(r.at, |t| t.max(r.at)));
        if outside {
            self.outside.see(r.ip, r.at);
        } else {
            self.inside.see(r.ip, r.at);
        }
    }

    /// The addresses to record: those outside the allowlist first, then the most
    /// recent, at most [`MAX_ADDRESSES`], sorted.
    fn addresses(&self) -> Vec<String> {
        let by_recency = |v: &Addresses| {
            let mut v = v.0.clone();
            v.sort_by_key(|a| std::cmp::Reverse(a.1));
            v
        };
        let mut chosen: Vec<IpAddr> = by_recency(&self.outside)
            .into_iter()
            .chain(by_recency(&self.inside))
            .map(|(ip, _)| ip)
            .take(MAX_ADDRESSES)
            .collect();
        chosen.sort();
        chosen.iter().map(IpAddr::to_string).collect()
    }
}

/// What a fingerprint in the store is.
enum KnownSecret<'s> {
    Current(&'s Key),
    Previous(&'s Key, Time),
}

/// Imports the records of `input` (named `name` in errors) into the store's key files
/// and commits them. A bad record stops the import before anything is written.
pub(crate) fn import(
    ws: &Workspace,
    input: impl Read,
    name: &str,
    format: Format,
    now: Time,
) -> Result<Imported> {
    let (store, problems) = Store::load(&Source::WorkTree(ws.root.clone()));
    if !problems.is_empty() {
        return Err(Error::Invalid(problems));
    }
    let mut secrets: HashMap<&str, KnownSecret> = HashMap::new();
    for key in &store.keys {
        for p in &key.previous {
            secrets.insert(&p.fingerprint, KnownSecret::Previous(key, p.valid_until));
        }
        if let Some(fp) = &key.fingerprint {
            secrets.insert(fp, KnownSecret::Current(key));
        }
    }
    let mut hashed = Hashing::new(input);
    let mut reader = Records::new(
        std::io::BufReader::with_capacity(1 << 16, &mut hashed),
        format,
        name,
    );
    let mut used: HashMap<String, Seen> = HashMap::new();
    let mut stale: BTreeMap<(String, Option<String>, &'static str), Seen> = BTreeMap::new();
    let mut unknown: BTreeMap<Who, u64> = BTreeMap::new();
    let latest_allowed = now.checked_add(CLOCK_SKEW).unwrap_or(now);
    let mut count = 0u64;
    while let Some(r) = reader.next_record()? {
        count += 1;
        if r.at > latest_allowed {
            return Err(InputError::Record {
                file: name.to_string(),
                line: reader.lines(),
                why: format!(
                    "at {} is in the future (now is {})",
                    r.at.to_rfc3339(),
                    now.to_rfc3339()
                ),
            }
            .into());
        }
        let (key, stale_as) = match &r.who {
            Who::Key(id) => match store.key(id) {
                Some(k) => (k.as_ref(), None),
                None => {
                    *unknown.entry(r.who.clone()).or_default() += 1;
                    continue;
                }
            },
            Who::Fingerprint(fp) => match secrets.get(fp.as_str()) {
                Some(KnownSecret::Current(k)) => (*k, None),
                Some(KnownSecret::Previous(k, until)) => (*k, (r.at > *until).then_some("expired")),
                None => {
                    *unknown.entry(r.who.clone()).or_default() += 1;
                    continue;
                }
            },
        };
        let revoked = key.status == KeyStatus::Revoked && key.revoked_at.is_none_or(|t| r.at > t);
        let fingerprint = match &r.who {
            Who::Fingerprint(fp) => Some(fp.clone()),
            Who::Key(_) => None,
        };
        let outside = outside_allowlist(key, r.ip);
        match (revoked, stale_as) {
            (true, _) => stale
                .entry((key.id.clone(), fingerprint, "revoked"))
                .or_default()
                .see(&r, outside),
            (false, Some(why)) => stale
                .entry((key.id.clone(), fingerprint, why))
                .or_default()
                .see(&r, outside),
            (false, None) => used.entry(key.id.clone()).or_default().see(&r, outside),
        }
    }
    drop(reader);
    let digest = hashed.finish();

    let mut out = Imported {
        records: count,
        ..Imported::default()
    };
    // Fingerprints the store's keys do not name now may be secrets they had: the
    // history says whose (use of a secret rotated away).
    let wanted: std::collections::HashSet<String> = unknown
        .keys()
        .filter_map(|w| match w {
            Who::Fingerprint(fp) => Some(fp.clone()),
            Who::Key(_) => None,
        })
        .collect();
    let older = if wanted.is_empty() {
        HashMap::new()
    } else {
        crate::scan::keys_in_history(&ws.repo, &store.settings.keys_dir, wanted)?
    };
    for (who, records) in unknown {
        match &who {
            Who::Fingerprint(fp) if older.contains_key(fp) => out.stale.push(StaleUse {
                key: older[fp].clone(),
                fingerprint: Some(fp.clone()),
                why: "older",
                records,
                last_at: String::new(),
                ips: Vec::new(),
            }),
            Who::Fingerprint(fp) => out.unknown.push(Unknown {
                key: None,
                fingerprint: Some(fp.clone()),
                records,
            }),
            Who::Key(id) => out.unknown.push(Unknown {
                key: Some(id.clone()),
                fingerprint: None,
                records,
            }),
        }
    }
    for ((key, fingerprint, why), seen) in stale {
        out.stale.push(StaleUse {
            key,
            fingerprint,
            why,
            records: seen.records,
            last_at: seen.latest.map(Time::to_rfc3339).unwrap_or_default(),
            ips: seen.addresses(),
        });
    }
    out.stale
        .sort_by(|a, b| (&a.key, &a.fingerprint).cmp(&(&b.key, &b.fingerprint)));

    let mut edits = Vec::new();
    let mut ids: Vec<&String> = used.keys().collect();
    ids.sort();
    for id in ids {
        let seen = &used[id];
        let key = store.key(id).ok_or_else(|| Error::UnknownKey(id.clone()))?;
        let latest = seen.latest.unwrap_or(key.created_at);
        let last_used_at = key.last_used_at.map_or(latest, |t| t.max(latest));
        let from = seen.addresses();
        let changed = key.last_used_at != Some(last_used_at) || key.last_used_from != from;
        if changed {
            edits.push((key.path.clone(), last_used_at, from.clone()));
        }
        out.keys.push(KeyUse {
            key: id.clone(),
            records: seen.records,
            last_used_at: last_used_at.to_rfc3339(),
            last_used_from: from,
            changed,
        });
    }
    if !edits.is_empty() {
        out.commit = Some(commit(ws, &store, &edits, &out, name, &digest, now)?);
    }
    Ok(out)
}

fn outside_allowlist(key: &Key, ip: IpAddr) -> bool {
    !key.ip_allowlist.is_empty()
        && !key
            .ip_allowlist
            .iter()
            .any(|c| crate::store::key::cidr_contains(c, ip) == Some(true))
}

/// Writes the key files and commits them with a summary and trailers; on failure the
/// files are put back as HEAD has them.
fn commit(
    ws: &Workspace,
    store: &Store,
    edits: &[(String, Time, Vec<String>)],
    out: &Imported,
    name: &str,
    digest: &str,
    now: Time,
) -> Result<String> {
    let mut files = Vec::with_capacity(edits.len());
    for (rel, last_used_at, from) in edits {
        files.push(Edit::toml(&ws.root, rel, |doc| {
            let when = last_used_at.to_toml().map_err(|why| StoreError::Edit {
                path: rel.clone(),
                why: format!("cannot write {last_used_at}: {why}"),
            })?;
            crate::key_edit::set(doc.as_table_mut(), "last_used_at", when);
            crate::key_edit::set(
                doc.as_table_mut(),
                "last_used_from",
                from.iter().map(String::as_str).collect::<toml_edit::Array>(),
            );
            Ok(())
        })?);
    }
    let message = message(out, edits.len(), name, digest, now);
    crate::direct_commit::commit_edits(
        &ws.repo,
        &ws.root,
        &store.settings,
        &store.settings.keys_dir,
        &files,
        "the import",
        &message,
    )
}

/// `keyrot usage: N keys`, one line per key changed, what no longer works, what is
/// unknown, then trailers naming the records (by digest) and the instant.
fn message(out: &Imported, changed: usize, name: &str, digest: &str, now: Time) -> String {
    let mut m = format!(
        "keyrot usage: {changed} key{}\n\n{}\n\n",
        if changed == 1 { "" } else { "s" },
        summary(out)
    );
    for k in out.keys.iter().filter(|k| k.changed) {
        m.push_str(&format!(
            "used {}: last {} from {} ({} record{})\n",
            k.key,
            k.last_used_at,
            k.last_used_from.join(", "),
            k.records,
            if k.records == 1 { "" } else { "s" }
        ));
    }
    for s in &out.stale {
        m.push_str(&format!("{}\n", stale_line(s)));
    }
    for u in &out.unknown {
        m.push_str(&format!("{}\n", unknown_line(u)));
    }
    m.push_str(&format!(
        "\nKeyrot-Usage: {digest}\nKeyrot-Usage-Records: {}\nKeyrot-Usage-Source: {}\n{TRAILER_NOW}: {}\n",
        out.records,
        name.replace('\n', " "),
        now.to_rfc3339()
    ));
    m
}

/// `Imported 1000 records: 3 keys used, 2 records of secrets that no longer work, 1 unknown.`
pub(crate) fn summary(out: &Imported) -> String {
    let stale: u64 = out.stale.iter().map(|s| s.records).sum();
    let unknown: u64 = out.unknown.iter().map(|u| u.records).sum();
    format!(
        "Imported {} record{}: {} key{} used, {stale} record{} of secrets that no longer work, {unknown} of unknown keys or fingerprints.",
        out.records,
        if out.records == 1 { "" } else { "s" },
        out.keys.len(),
        if out.keys.len() == 1 { "" } else { "s" },
        if stale == 1 { "" } else { "s" },
    )
}

/// One line about a stale use, for the commit and the terminal.
pub(crate) fn stale_line(s: &StaleUse) -> String {
    let what = match s.why {
        "revoked" => "its key is revoked".to_string(),
        "expired" => "a previous secret past its grace period".to_string(),
        _ => "an older secret, rotated away".to_string(),
    };
    let secret = s
        .fingerprint
        .as_deref()
        .map(|f| format!(" ({f})"))
        .unwrap_or_default();
    let mut line = format!(
        "stale {}{secret}: {what}; {} record{}",
        s.key,
        s.records,
        if s.records == 1 { "" } else { "s" }
    );
    if !s.last_at.is_empty() {
        line.push_str(&format!(", last {} from {}", s.last_at, s.ips.join(", ")));
    }
    line
}

pub(crate) fn unknown_line(u: &Unknown) -> String {
    let what = match (&u.key, &u.fingerprint) {
        (Some(k), _) => format!("key {k}"),
        (None, Some(f)) => format!("fingerprint {f}"),
        (None, None) => String::new(),
    };
    format!(
        "unknown {what}: {} record{}",
        u.records,
        if u.records == 1 { "" } else { "s" }
    )
}

/// A reader that hashes what passes through it, so the commit can name the records it
/// came from without a second read (the input may be a pipe).
struct Hashing<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Hashing<R> {
    fn new(inner: R) -> Hashing<R> {
        Hashing {
            inner,
            hash: Sha256::new(),
        }
    }

    /// `sha256:<hex>` of everything read.
    fn finish(self) -> String {
        format!("sha256:{}", crate::digest::hex(&self.hash.finalize()))
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}
