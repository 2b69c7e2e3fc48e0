//! `install_attempts`: one per agent-install one-liner an operator took,
//! with the progress events its script reported. An attempt is a one-time
//! capability: its installer downloads once, by the account that took it,
//! within its hour; its script reports with a key only its hash of which
//! is kept, in order (a repeated event is accepted once, a contradicting
//! one refused). Attempts older than [`KEEP_DAYS`] go when new ones come.

use chrono::{DateTime, Duration, Utc};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::codec::{decode, encode};
use super::RelationalStore;
use crate::{Error, Result};

const ATTEMPTS: TableDefinition<&str, &[u8]> = TableDefinition::new("install_attempts");
/// (created_at µs, id): the listing order and the pruning index.
const BY_CREATED: TableDefinition<(i64, &str), ()> =
    TableDefinition::new("install_attempts_by_created");
const NAME: &str = "install_attempts";

/// Days an attempt and its events are kept.
pub const KEEP_DAYS: i64 = 30;

/// One reported step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstallEvent {
    pub seq: u32,
    pub stage: String,
    pub outcome: String,
    pub exit_code: i32,
    pub error_kind: Option<String>,
    pub received_at: DateTime<Utc>,
}

/// One attempt as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstallAttempt {
    pub id: String,
    /// The account that took it.
    pub issuer: Option<String>,
    /// `windows`, `unix`; the platform downloaded once it is.
    pub os: String,
    /// Hex SHA-256 of the report key.
    pub key_hash: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// `unreported`, `running`, `succeeded`, `failed`.
    pub status: String,
    pub download_claimed: bool,
    pub seq: u32,
    pub events: Vec<InstallEvent>,
}

impl InstallEvent {
    /// The highest sequence number a report may carry.
    pub const MAX_SEQ: u32 = 128;
}

impl InstallAttempt {
    pub fn is_terminal(&self) -> bool {
        matches!(self.status.as_str(), "succeeded" | "failed")
    }
}

/// How a report was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reported {
    Stored,
    /// The same event again: nothing changed.
    Repeated,
    /// No live attempt with that id and key.
    Unknown,
    /// Out of order, contradicting, or after the end (why).
    Conflict(&'static str),
}

pub(super) fn ensure_tables(txn: &redb::WriteTransaction) -> Result<()> {
    txn.open_table(ATTEMPTS).map_err(Error::redb_op)?;
    txn.open_table(BY_CREATED).map_err(Error::redb_op)?;
    Ok(())
}

fn prune(txn: &redb::WriteTransaction, now: DateTime<Utc>) -> Result<()> {
    let cutoff = (now - Duration::days(KEEP_DAYS)).timestamp_micros();
    let mut attempts = txn.open_table(ATTEMPTS).map_err(Error::redb_op)?;
    let mut by_created = txn.open_table(BY_CREATED).map_err(Error::redb_op)?;
    let old: Vec<(i64, String)> = by_created
        .range((i64::MIN, "")..(cutoff, ""))
        .map_err(Error::redb_op)?
        .map(|e| e.map(|(k, _)| (k.value().0, k.value().1.to_string())))
        .collect::<std::result::Result<_, _>>()
        .map_err(Error::redb_op)?;
    for (at, id) in old {
        by_created
            .remove((at, id.as_str()))
            .map_err(Error::redb_op)?;
        attempts.remove(id.as_str()).map_err(Error::redb_op)?;
    }
    Ok(())
}

impl RelationalStore {
    /// Stores a new attempt (and forgets those past [`KEEP_DAYS`]).
    pub fn issue_install_attempt(&self, a: &InstallAttempt) -> Result<()> {
        let txn = self.db.begin_write().map_err(Error::redb_op)?;
        prune(&txn, a.created_at)?;
        {
            let mut attempts = txn.open_table(ATTEMPTS).map_err(Error::redb_op)?;
            let mut by_created = txn.open_table(BY_CREATED).map_err(Error::redb_op)?;
            attempts
                .insert(a.id.as_str(), encode(NAME, a)?.as_slice())
                .map_err(Error::redb_op)?;
            by_created
                .insert((a.created_at.timestamp_micros(), a.id.as_str()), ())
                .map_err(Error::redb_op)?;
        }
        txn.commit().map_err(Error::redb_op)
    }

    /// Adds attempts of another store that this one lacks; how many.
    pub fn import_install_attempts(&self, rows: &[InstallAttempt]) -> Result<u64> {
        let txn = self.db.begin_write().map_err(Error::redb_op)?;
        let mut added = 0;
        {
            let mut attempts = txn.open_table(ATTEMPTS).map_err(Error::redb_op)?;
            let mut by_created = txn.open_table(BY_CREATED).map_err(Error::redb_op)?;
            for a in rows {
                if attempts
                    .get(a.id.as_str())
                    .map_err(Error::redb_op)?
                    .is_some()
                {
                    continue;
                }
                attempts
                    .insert(a.id.as_str(), encode(NAME, a)?.as_slice())
                    .map_err(Error::redb_op)?;
                by_created
                    .insert((a.created_at.timestamp_micros(), a.id.as_str()), ())
                    .map_err(Error::redb_op)?;
                added += 1;
            }
        }
        txn.commit().map_err(Error::redb_op)?;
        Ok(added)
    }

    /// The attempt `id`.
    pub fn install_attempt(&self, id: &str) -> Result<Option<InstallAttempt>> {
        let txn = self.db.begin_read().map_err(Error::redb_op)?;
        let t = txn.open_table(ATTEMPTS).map_err(Error::redb_op)?;
        t.get(id)
            .map_err(Error::redb_op)?
            .map(|v| decode(NAME, v.value()))
            .transpose()
    }

    /// The newest `limit` attempts, newest first.
    pub fn install_attempts(&self, limit: usize) -> Result<Vec<InstallAttempt>> {
        let txn = self.db.begin_read().map_err(Error::redb_op)?;
        let attempts = txn.open_table(ATTEMPTS).map_err(Error::redb_op)?;
        let by_created = txn.open_table(BY_CREATED).map_err(Error::redb_op)?;
        let mut out = Vec::new();
        for e in by_created.iter().map_err(Error::redb_op)?.rev() {
            if out.len() == limit {
                break;
            }
            let (k, _) = e.map_err(Error::redb_op)?;
            if let Some(v) = attempts.get(k.value().1).map_err(Error::redb_op)? {
                out.push(decode(NAME, v.value())?);
            }
        }
        Ok(out)
    }

    /// Applies `change` to attempt `id` in one transaction when `allowed`
    /// says so; answers what `allowed` and `change` said.
    fn update_install_attempt<T>(
        &self,
        id: &str,
        change: impl FnOnce(Option<&mut InstallAttempt>) -> (bool, T),
    ) -> Result<T> {
        let txn = self.db.begin_write().map_err(Error::redb_op)?;
        let answer = {
            let mut t = txn.open_table(ATTEMPTS).map_err(Error::redb_op)?;
            let mut found: Option<InstallAttempt> = t
                .get(id)
                .map_err(Error::redb_op)?
                .map(|v| decode(NAME, v.value()))
                .transpose()?;
            let (write, answer) = change(found.as_mut());
            if let (true, Some(a)) = (write, &found) {
                t.insert(id, encode(NAME, a)?.as_slice())
                    .map_err(Error::redb_op)?;
            }
            answer
        };
        txn.commit().map_err(Error::redb_op)?;
        Ok(answer)
    }

    /// Whether `issuer` may download attempt `id`'s installer now (its
    /// own, live, not yet downloaded, not ended).
    pub fn install_download_allowed(
        &self,
        id: &str,
        issuer: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        Ok(self
            .install_attempt(id)?
            .is_some_and(|a| downloadable(&a, issuer, now)))
    }

    /// Takes attempt `id`'s one download for `issuer`, recording the
    /// platform; false when it may not (see
    /// [`Self::install_download_allowed`]).
    pub fn claim_install_download(
        &self,
        id: &str,
        issuer: Option<&str>,
        os: &str,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        self.update_install_attempt(id, |a| match a {
            Some(a) if downloadable(a, issuer, now) => {
                a.download_claimed = true;
                a.os = os.to_string();
                (true, true)
            }
            _ => (false, false),
        })
    }

    /// Records a reported event of attempt `id` whose key hashes to
    /// `key_hash`.
    pub fn report_install_event(
        &self,
        id: &str,
        key_hash: &str,
        event: InstallEvent,
        now: DateTime<Utc>,
    ) -> Result<Reported> {
        self.update_install_attempt(id, |a| {
            let Some(a) = a.filter(|a| a.key_hash == key_hash && a.expires_at > now) else {
                return (false, Reported::Unknown);
            };
            if a.is_terminal() && event.outcome == "progress" {
                return (false, Reported::Conflict("attempt is terminal"));
            }
            if let Some(same) = a.events.iter().find(|e| e.seq == event.seq) {
                let equal = (&same.stage, &same.outcome, same.exit_code, &same.error_kind)
                    == (
                        &event.stage,
                        &event.outcome,
                        event.exit_code,
                        &event.error_kind,
                    );
                return if equal {
                    (false, Reported::Repeated)
                } else {
                    (false, Reported::Conflict("sequence already used"))
                };
            }
            if a.is_terminal() || event.seq <= a.seq {
                return (
                    false,
                    Reported::Conflict("attempt is terminal or sequence does not advance"),
                );
            }
            a.status = match event.outcome.as_str() {
                "progress" => "running".to_string(),
                other => other.to_string(),
            };
            a.seq = event.seq;
            a.events.push(event);
            (true, Reported::Stored)
        })
    }
}

fn downloadable(a: &InstallAttempt, issuer: Option<&str>, now: DateTime<Utc>) -> bool {
    a.issuer.as_deref() == issuer && a.expires_at > now && !a.download_claimed && !a.is_terminal()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(id: &str, at: DateTime<Utc>) -> InstallAttempt {
        InstallAttempt {
            id: id.into(),
            issuer: Some("ops".into()),
            os: "unix".into(),
            key_hash: "h".into(),
            created_at: at,
            expires_at: at + Duration::hours(1),
            status: "unreported".into(),
            download_claimed: false,
            seq: 0,
            events: Vec::new(),
        }
    }

    fn event(seq: u32, stage: &str, outcome: &str, code: i32) -> InstallEvent {
        InstallEvent {
            seq,
            stage: stage.into(),
            outcome: outcome.into(),
            exit_code: code,
            error_kind: None,
            received_at: Utc::now(),
        }
    }

    #[test]
    fn downloads_once_reports_in_order_and_old_attempts_go() {
        let dir = tempfile::tempdir().unwrap();
        let store = RelationalStore::open(dir.path()).unwrap();
        let now = Utc::now();
        store
            .issue_install_attempt(&attempt("old", now - Duration::days(31)))
            .unwrap();
        assert!(store.install_attempt("old").unwrap().is_some());
        store.issue_install_attempt(&attempt("a", now)).unwrap();
        store
            .issue_install_attempt(&attempt("b", now + Duration::seconds(1)))
            .unwrap();
        let ids: Vec<String> = store
            .install_attempts(10)
            .unwrap()
            .into_iter()
            .map(|a| a.id)
            .collect();
        assert_eq!(ids, ["b", "a"], "newest first; the 31-day-old one pruned");

        assert!(!store
            .claim_install_download("a", Some("eve"), "linux", now)
            .unwrap());
        assert!(store
            .claim_install_download("a", Some("ops"), "linux", now)
            .unwrap());
        assert!(!store
            .claim_install_download("a", Some("ops"), "linux", now)
            .unwrap());
        assert!(!store
            .install_download_allowed("b", Some("ops"), now + Duration::hours(2))
            .unwrap());

        let r = |e| store.report_install_event("a", "h", e, now).unwrap();
        assert_eq!(
            store
                .report_install_event("a", "wrong", event(1, "download", "progress", 0), now)
                .unwrap(),
            Reported::Unknown
        );
        assert_eq!(r(event(1, "download", "progress", 0)), Reported::Stored);
        assert_eq!(r(event(1, "download", "progress", 0)), Reported::Repeated);
        assert!(matches!(
            r(event(1, "extract", "progress", 0)),
            Reported::Conflict(_)
        ));
        assert_eq!(r(event(3, "extract", "failed", 2)), Reported::Stored);
        assert!(matches!(
            r(event(4, "x", "progress", 0)),
            Reported::Conflict(_)
        ));
        let a = store.install_attempt("a").unwrap().unwrap();
        assert_eq!((a.status.as_str(), a.seq, a.events.len()), ("failed", 3, 2));
        assert_eq!(a.os, "linux");
    }
}
