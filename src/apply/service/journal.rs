//! The journal of provider steps, `.git/keyrot/services`: a header line (the apply,
//! its base commit, the secrets folder), then one JSON record per line, each folded
//! into the state: intents announced before a step reaches a service, their
//! completion, and Vault clean-ups to run after the commit.

use super::*;
use crate::error::ApplyError;

pub(super) const FILE: &str = "services";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Stage {
    /// About to ask the service to create a secret (nothing to undo yet).
    Create,
    /// About to `set` the secret, or done: the service may honour it.
    Set,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Intent {
    pub key: String,
    /// The key file, to see whether the commit landed.
    pub path: String,
    pub stage: Stage,
    /// The new secret's, once known.
    pub fingerprint: Option<String>,
    /// What the provider is told about the key.
    pub info: KeyInfo,
    /// The Vault version the new secret was written as, once written.
    #[serde(default)]
    pub vault_version: Option<u64>,
}

/// Vault secrets to destroy once the commit is made: a revoked key's (all versions)
/// or an expired secret's. Safe to redo, and to do even if the commit never landed:
/// the service already stopped honouring them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Cleanup {
    pub key: String,
    pub vault_path: String,
    /// `None`: every version (revoke).
    pub fingerprint: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Journal {
    pub(super) txid: String,
    /// The commit apply started from: its `keyrot.toml` names the providers.
    pub(super) base: String,
    pub(super) secrets_dir: PathBuf,
    pub(super) intents: Vec<Intent>,
    #[serde(default)]
    pub(super) cleanup: Vec<Cleanup>,
}

/// One line of the journal after its header: the journal is append-only while apply
/// runs (one short write per step, not the whole journal again), and folded on reading.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Record {
    /// A rotation's intent, new or updated (by key).
    Intent(Box<Intent>),
    /// The key's rotation is settled: no intent left.
    Done(String),
    /// A Vault clean-up to run after the commit.
    Cleanup(Cleanup),
    /// That clean-up ran.
    Cleaned(Cleanup),
}

impl Journal {
    pub(super) fn fold(&mut self, r: Record) {
        match r {
            Record::Intent(i) => {
                self.intents.retain(|x| x.key != i.key);
                self.intents.push(*i);
            }
            Record::Done(key) => self.intents.retain(|x| x.key != key),
            Record::Cleanup(c) => self.cleanup.push(c),
            Record::Cleaned(c) => self.cleanup.retain(|x| *x != c),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.intents.is_empty() && self.cleanup.is_empty()
    }

    /// Reads a journal: the header line, then records. A torn last line (a crash in
    /// the middle of an append) is dropped: its step had not started, as each record
    /// is synced before the step it announces.
    pub(super) fn parse(bytes: &[u8]) -> std::result::Result<Journal, String> {
        let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
        let mut lines = text.lines();
        let mut j: Journal =
            serde_json::from_str(lines.next().unwrap_or_default()).map_err(|e| e.to_string())?;
        let rest: Vec<&str> = lines.collect();
        for (n, line) in rest.iter().enumerate() {
            match serde_json::from_str::<Record>(line) {
                Ok(r) => j.fold(r),
                Err(_) if n + 1 == rest.len() && !text.ends_with('\n') => {}
                Err(e) => return Err(format!("line {}: {e}", n + 2)),
            }
        }
        Ok(j)
    }

    /// The journal as one header line, the state folded into it.
    pub(super) fn compacted(&self) -> Result<Vec<u8>> {
        let mut line = serde_json::to_vec(self).map_err(|e| ApplyError::Encode {
            what: "the journal of provider steps",
            why: e.to_string(),
        })?;
        line.push(b'\n');
        Ok(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent(key: &str, stage: Stage) -> Intent {
        Intent {
            key: key.into(),
            path: format!("keys/{key}.toml"),
            stage,
            fingerprint: None,
            info: KeyInfo {
                id: key.into(),
                service: "s".into(),
                owner: "o".into(),
                environment: "production".into(),
                permissions: vec![],
                ip_allowlist: vec![],
                tags: vec![],
                status: "active".into(),
                fingerprint: None,
            },
            vault_version: None,
        }
    }

    fn line(r: &Record) -> String {
        serde_json::to_string(r).unwrap() + "\n"
    }

    #[test]
    fn the_journal_folds_its_records_and_drops_a_torn_last_line() {
        let header = Journal {
            txid: "t".into(),
            base: "b".into(),
            secrets_dir: "/s".into(),
            intents: vec![],
            cleanup: vec![],
        };
        let mut text = String::from_utf8(header.compacted().unwrap()).unwrap();
        text += &line(&Record::Intent(Box::new(intent("a", Stage::Create))));
        text += &line(&Record::Intent(Box::new(intent("b", Stage::Create))));
        text += &line(&Record::Intent(Box::new(intent("a", Stage::Set))));
        text += &line(&Record::Done("b".into()));
        let c = Cleanup {
            key: "c".into(),
            vault_path: "p".into(),
            fingerprint: None,
        };
        text += &line(&Record::Cleanup(c.clone()));
        let j = Journal::parse(text.as_bytes()).unwrap();
        assert_eq!(j.intents, vec![intent("a", Stage::Set)]);
        assert_eq!(j.cleanup, vec![c.clone()]);
        // A crash in the middle of an append leaves a torn last line: ignored.
        let torn = text.clone() + "{\"intent\": {\"key\": \"x";
        assert_eq!(Journal::parse(torn.as_bytes()).unwrap().intents.len(), 1);
        // Garbage anywhere else is an error, not a silent loss.
        let bad = text.replace("{\"done\"", "{\"dne\"");
        assert!(Journal::parse(bad.as_bytes()).is_err());
        let cleaned = text + line(&Record::Cleaned(c)).as_str();
        assert!(Journal::parse(cleaned.as_bytes()).unwrap().cleanup.is_empty());
    }
}
