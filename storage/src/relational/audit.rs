//! `audit_log`: one row per AUDIT stream message, keyed by its stream
//! sequence (so a redelivery or a replay writes the same row, with the
//! same id); index `audit_by_occurred` orders it by time.

use chrono::{DateTime, Utc};
use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::codec::{decode, encode};
use super::positions::{record, StreamPosition};
use super::RelationalStore;
use crate::{Error, Result};

const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit_log");
/// (occurred_at µs, id) → ().
const BY_OCCURRED: TableDefinition<(i64, u64), ()> = TableDefinition::new("audit_by_occurred");
const NAME: &str = "audit_log";

/// One audit entry as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct AuditRecord {
    /// The AUDIT stream sequence the entry came from.
    pub id: u64,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub payload: serde_json::Value,
    pub occurred_at: Option<DateTime<Utc>>,
}

pub(super) fn ensure_tables(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(AUDIT).map_err(Error::redb_op)?;
    txn.open_table(BY_OCCURRED).map_err(Error::redb_op)?;
    Ok(())
}

impl RelationalStore {
    /// Inserts entries (an id already present is left alone) and records
    /// `pos`, in one transaction; returns how many were added.
    pub fn apply_audit(
        &self,
        entries: &[AuditRecord],
        pos: Option<StreamPosition<'_>>,
    ) -> Result<usize> {
        let mut added = 0;
        let txn = self.db.begin_write().map_err(Error::redb_op)?;
        {
            let mut rows = txn.open_table(AUDIT).map_err(Error::redb_op)?;
            let mut index = txn.open_table(BY_OCCURRED).map_err(Error::redb_op)?;
            for e in entries {
                if rows.get(e.id).map_err(Error::redb_op)?.is_some() {
                    continue;
                }
                let at = e.occurred_at.map_or(0, |t| t.timestamp_micros());
                index.insert((at, e.id), ()).map_err(Error::redb_op)?;
                rows.insert(e.id, encode(NAME, e)?.as_slice())
                    .map_err(Error::redb_op)?;
                added += 1;
            }
        }
        record(&txn, pos)?;
        txn.commit().map_err(Error::redb_op)?;
        Ok(added)
    }

    /// Deletes at most `max` entries that occurred before `cutoff`, oldest
    /// first, in one transaction; returns how many went.
    pub fn prune_audit_before(&self, cutoff: DateTime<Utc>, max: usize) -> Result<usize> {
        let txn = self.db.begin_write().map_err(Error::redb_op)?;
        let mut n = 0;
        {
            let mut rows = txn.open_table(AUDIT).map_err(Error::redb_op)?;
            let mut index = txn.open_table(BY_OCCURRED).map_err(Error::redb_op)?;
            let keys: Vec<(i64, u64)> = index
                .range(..(cutoff.timestamp_micros(), 0u64))
                .map_err(Error::redb_op)?
                .take(max)
                .map(|e| e.map(|(k, _)| k.value()).map_err(Error::redb_op))
                .collect::<Result<_>>()?;
            for key in keys {
                index.remove(key).map_err(Error::redb_op)?;
                rows.remove(key.1).map_err(Error::redb_op)?;
                n += 1;
            }
        }
        txn.commit().map_err(Error::redb_op)?;
        Ok(n)
    }

    /// Walks entries newest first from `occurred_at >= since` until
    /// `visit` returns `false`.
    pub fn scan_audit_desc(
        &self,
        since: Option<DateTime<Utc>>,
        mut visit: impl FnMut(AuditRecord) -> bool,
    ) -> Result<()> {
        let txn = self.db.begin_read().map_err(Error::redb_op)?;
        let rows = txn.open_table(AUDIT).map_err(Error::redb_op)?;
        let index = txn.open_table(BY_OCCURRED).map_err(Error::redb_op)?;
        let lo = (since.map_or(i64::MIN, |s| s.timestamp_micros()), 0u64);
        for entry in index.range(lo..).map_err(Error::redb_op)?.rev() {
            let (k, _) = entry.map_err(Error::redb_op)?;
            if let Some(v) = rows.get(k.value().1).map_err(Error::redb_op)? {
                if !visit(decode(NAME, v.value())?) {
                    break;
                }
            }
        }
        Ok(())
    }
}
