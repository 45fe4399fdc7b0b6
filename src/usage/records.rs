//! Access records, read one line at a time (a file of a million records is never held
//! in memory): JSON lines (`{"key": "bot", "at": "2026-11-30T12:00:00Z", "ip":
//! "203.0.113.7"}`, or `"fingerprint"` instead of `"key"`; other fields are ignored) or
//! CSV with a header naming the columns `key` or `fingerprint`, `at` and `ip`.

use std::io::BufRead;
use std::net::IpAddr;

use serde::Deserialize;

use crate::error::{Error, InputError, Result};
use crate::time::Time;

/// Which key a record names.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Who {
    Key(String),
    Fingerprint(String),
}

/// One access: who, when, from where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Record {
    pub who: Who,
    pub at: Time,
    pub ip: IpAddr,
}

/// The two record formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    Jsonl,
    Csv,
}

/// The records of one input, in order; each error names the input and line.
pub(crate) struct Records<R> {
    input: R,
    format: Format,
    /// How the input is named in errors (`access.jsonl`, `stdin`).
    name: String,
    line: usize,
    buf: String,
    columns: Option<Columns>,
}

/// Where the CSV header put each field.
struct Columns {
    key: Option<usize>,
    fingerprint: Option<usize>,
    at: usize,
    ip: usize,
}

#[derive(Deserialize)]
struct JsonRecord {
    key: Option<String>,
    fingerprint: Option<String>,
    at: Option<String>,
    ip: Option<String>,
}

impl<R: BufRead> Records<R> {
    pub(crate) fn new(input: R, format: Format, name: &str) -> Records<R> {
        Records {
            input,
            format,
            name: name.to_string(),
            line: 0,
            buf: String::new(),
            columns: None,
        }
    }

    /// Lines read so far.
    pub(crate) fn lines(&self) -> usize {
        self.line
    }

    fn bad(&self, why: impl std::fmt::Display) -> Error {
        InputError::Record {
            file: self.name.clone(),
            line: self.line,
            why: why.to_string(),
        }
        .into()
    }

    /// The next record, `None` at the end. Blank lines are skipped.
    pub(crate) fn next_record(&mut self) -> Result<Option<Record>> {
        loop {
            self.buf.clear();
            let n = self
                .input
                .read_line(&mut self.buf)
                .map_err(|e| InputError::Record {
                    file: self.name.clone(),
                    line: self.line + 1,
                    why: format!("cannot read: {e}"),
                })?;
            if n == 0 {
                if self.format == Format::Csv && self.columns.is_none() {
                    return Err(self.bad(
                        "no header line: the first line names the columns (key or fingerprint, at, ip)",
                    ));
                }
                return Ok(None);
            }
            self.line += 1;
            let text = self.buf.trim_end_matches(['\n', '\r']);
            if text.trim().is_empty() {
                continue;
            }
            let fields = match self.format {
                Format::Jsonl => {
                    let r: JsonRecord = serde_json::from_str(text)
                        .map_err(|e| self.bad(format!("not a JSON record: {e}")))?;
                    (r.key, r.fingerprint, r.at, r.ip)
                }
                Format::Csv => {
                    let cells = split_csv(text).map_err(|why| self.bad(why))?;
                    let Some(c) = &self.columns else {
                        self.columns = Some(header(&cells).map_err(|why| self.bad(why))?);
                        continue;
                    };
                    let cell = |i: Option<usize>| -> Option<String> {
                        i.and_then(|i| cells.get(i)).filter(|v| !v.is_empty()).cloned()
                    };
                    (
                        cell(c.key),
                        cell(c.fingerprint),
                        cell(Some(c.at)),
                        cell(Some(c.ip)),
                    )
                }
            };
            return self.record(fields).map(Some);
        }
    }

    fn record(
        &self,
        (key, fingerprint, at, ip): (Option<String>, Option<String>, Option<String>, Option<String>),
    ) -> Result<Record> {
        let who = match (key, fingerprint) {
            (Some(k), None) => Who::Key(k),
            (None, Some(f)) => {
                if !crate::store::key::is_valid_fingerprint(&f) {
                    return Err(self.bad(format!(
                        "`{f}` is not a fingerprint (sha256: and 64 lowercase hex digits)"
                    )));
                }
                Who::Fingerprint(f)
            }
            (Some(_), Some(_)) => return Err(self.bad("give the key or the fingerprint, not both")),
            (None, None) => {
                return Err(self.bad("a record names its key (`key`) or the secret's `fingerprint`"))
            }
        };
        let at = at.ok_or_else(|| self.bad("a record needs `at` (RFC 3339)"))?;
        let at = Time::parse_rfc3339(&at).map_err(|why| self.bad(format!("at: {why}")))?;
        let ip = ip.ok_or_else(|| self.bad("a record needs `ip`"))?;
        let ip = ip
            .parse::<IpAddr>()
            .map_err(|_| self.bad(format!("ip: `{ip}` is not an IP address")))?;
        Ok(Record { who, at, ip })
    }
}

fn header(cells: &[String]) -> std::result::Result<Columns, String> {
    let find = |name: &str| cells.iter().position(|c| c.trim() == name);
    let columns = Columns {
        key: find("key"),
        fingerprint: find("fingerprint"),
        at: find("at").ok_or("the header has no `at` column")?,
        ip: find("ip").ok_or("the header has no `ip` column")?,
    };
    if columns.key.is_none() && columns.fingerprint.is_none() {
        return Err("the header has neither a `key` nor a `fingerprint` column".into());
    }
    Ok(columns)
}

/// The cells of one CSV line (RFC 4180: commas, double quotes around a cell that holds
/// one, `""` for a quote inside). A quoted cell across lines is refused: no record
/// field holds a newline.
fn split_csv(line: &str) -> std::result::Result<Vec<String>, String> {
    let mut cells = Vec::new();
    let mut cell = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut at_start = true;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (false, '"') if at_start => quoted = true,
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cell.push('"');
            }
            (true, '"') => {
                quoted = false;
                if !matches!(chars.peek(), None | Some(',')) {
                    return Err("text after a closing quote".into());
                }
            }
            (false, ',') => {
                cells.push(std::mem::take(&mut cell));
                at_start = true;
                continue;
            }
            (_, c) => cell.push(c),
        }
        at_start = false;
    }
    if quoted {
        return Err("a quoted cell is not closed on its line".into());
    }
    cells.push(cell);
    Ok(cells)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(text: &str, format: Format) -> Result<Vec<Record>> {
        let mut r = Records::new(text.as_bytes(), format, "in");
        let mut out = Vec::new();
        while let Some(rec) = r.next_record()? {
            out.push(rec);
        }
        Ok(out)
    }

    fn rec(who: Who, at: &str, ip: &str) -> Record {
        Record {
            who,
            at: Time::parse_rfc3339(at).unwrap(),
            ip: ip.parse().unwrap(),
        }
    }

    #[test]
    fn json_lines_name_a_key_or_a_fingerprint() {
        let fp = format!("sha256:{}", "a".repeat(64));
        let text = format!(
            "{{\"key\":\"bot\",\"at\":\"2026-11-30T12:00:00Z\",\"ip\":\"203.0.113.7\",\"status\":200}}\n\n{{\"fingerprint\":\"{fp}\",\"at\":\"2026-11-30T12:00:01+01:00\",\"ip\":\"2001:db8::1\"}}\n"
        );
        assert_eq!(
            all(&text, Format::Jsonl).unwrap(),
            vec![
                rec(Who::Key("bot".into()), "2026-11-30T12:00:00Z", "203.0.113.7"),
                rec(Who::Fingerprint(fp), "2026-11-30T11:00:01Z", "2001:db8::1"),
            ]
        );
    }

    #[test]
    fn csv_follows_its_header_and_quotes() {
        let text = "ip,at,key,note\r\n203.0.113.7,2026-11-30T12:00:00Z,bot,\"a, \"\"quoted\"\" note\"\n\"198.51.100.2\",2026-11-30T13:00:00Z,\"pay\",\n";
        assert_eq!(
            all(text, Format::Csv).unwrap(),
            vec![
                rec(Who::Key("bot".into()), "2026-11-30T12:00:00Z", "203.0.113.7"),
                rec(Who::Key("pay".into()), "2026-11-30T13:00:00Z", "198.51.100.2"),
            ]
        );
    }

    #[test]
    fn every_bad_record_names_its_line() {
        let cases = [
            ("{\"key\":\"bot\",\"at\":\"2026-11-30T12:00:00Z\",\"ip\":\"203.0.113.7\"}\n{\"key\":\"bot\",\"at\":\"yesterday\",\"ip\":\"203.0.113.7\"}\n", Format::Jsonl, "in:2: at:"),
            ("{\"key\":\"bot\",\"at\":\"2026-11-30T12:00:00Z\",\"ip\":\"203.0.113.7:443\"}\n", Format::Jsonl, "in:1: ip: `203.0.113.7:443` is not an IP address"),
            ("{\"at\":\"2026-11-30T12:00:00Z\",\"ip\":\"203.0.113.7\"}\n", Format::Jsonl, "in:1: a record names its key"),
            ("not json\n", Format::Jsonl, "in:1: not a JSON record"),
            ("{\"fingerprint\":\"md5:x\",\"at\":\"2026-11-30T12:00:00Z\",\"ip\":\"203.0.113.7\"}\n", Format::Jsonl, "is not a fingerprint"),
            ("key,at\n", Format::Csv, "in:1: the header has no `ip` column"),
            ("key,at,ip\nbot,\"2026-11-30T12:00:00Z,1.2.3.4\n", Format::Csv, "in:2: a quoted cell is not closed"),
            ("", Format::Csv, "no header line"),
        ];
        for (text, format, want) in cases {
            let e = all(text, format).unwrap_err().to_string();
            assert!(e.contains(want), "{want}: {e}");
        }
    }
}
