//! `job_completions` / `job_version_completions`: when each PC last ran a
//! job (and a version of it) successfully. Written in the transaction
//! that finishes the result, never pruned: result retention may drop the
//! rows, but a `once` schedule must not fire again at a PC that already
//! succeeded, however long ago.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use super::results::ResultRecord;
use super::RelationalStore;
use crate::{Error, Result};

/// (job_id, pc_id) → last success, µs.
const BY_JOB: TableDefinition<(&str, &str), i64> = TableDefinition::new("job_completions");
/// (job_id, version, pc_id) → last success, µs.
const BY_VERSION: TableDefinition<(&str, &str, &str), i64> =
    TableDefinition::new("job_version_completions");

pub(super) fn ensure_tables(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(BY_JOB).map_err(Error::redb_op)?;
    txn.open_table(BY_VERSION).map_err(Error::redb_op)?;
    Ok(())
}

/// Records `row` if it is a finished success of a job; the stored time
/// only moves forward.
pub(super) fn record(txn: &WriteTransaction, row: &ResultRecord) -> Result<()> {
    let (Some(job), Some(0), Some(at)) = (row.job_id.as_deref(), row.exit_code, row.finished_at)
    else {
        return Ok(());
    };
    let at = at.timestamp_micros();
    let mut by_job = txn.open_table(BY_JOB).map_err(Error::redb_op)?;
    let key = (job, row.pc_id.as_str());
    let old = by_job.get(key).map_err(Error::redb_op)?.map(|v| v.value());
    if old.is_none_or(|o| o < at) {
        by_job.insert(key, at).map_err(Error::redb_op)?;
    }
    let Some(version) = row.version.as_deref() else {
        return Ok(());
    };
    let mut by_version = txn.open_table(BY_VERSION).map_err(Error::redb_op)?;
    let key = (job, version, row.pc_id.as_str());
    let old = by_version
        .get(key)
        .map_err(Error::redb_op)?
        .map(|v| v.value());
    if old.is_none_or(|o| o < at) {
        by_version.insert(key, at).map_err(Error::redb_op)?;
    }
    Ok(())
}

/// Fills the ledgers from the results a database already holds.
pub(super) fn build(txn: &WriteTransaction) -> Result<bool> {
    let rows = super::results::all_rows(txn)?;
    for r in &rows {
        record(txn, r)?;
    }
    Ok(!rows.is_empty())
}

fn micros(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

/// One imported completion: (job_id, version, pc_id, last success).
pub type CompletionRow = (String, Option<String>, String, DateTime<Utc>);

impl RelationalStore {
    /// Merges completions of another store (the stored time only moves
    /// forward); how many rows were new or newer.
    pub fn import_completions(&self, rows: &[CompletionRow]) -> Result<u64> {
        let txn = self.db.begin_write().map_err(Error::redb_op)?;
        let mut added = 0;
        {
            let mut by_job = txn.open_table(BY_JOB).map_err(Error::redb_op)?;
            let mut by_version = txn.open_table(BY_VERSION).map_err(Error::redb_op)?;
            for (job, version, pc, at) in rows {
                let at = at.timestamp_micros();
                let newer = match version {
                    None => {
                        let key = (job.as_str(), pc.as_str());
                        let old = by_job.get(key).map_err(Error::redb_op)?.map(|v| v.value());
                        let newer = old.is_none_or(|o| o < at);
                        if newer {
                            by_job.insert(key, at).map_err(Error::redb_op)?;
                        }
                        newer
                    }
                    Some(v) => {
                        let key = (job.as_str(), v.as_str(), pc.as_str());
                        let old = by_version
                            .get(key)
                            .map_err(Error::redb_op)?
                            .map(|v| v.value());
                        let newer = old.is_none_or(|o| o < at);
                        if newer {
                            by_version.insert(key, at).map_err(Error::redb_op)?;
                        }
                        newer
                    }
                };
                added += u64::from(newer);
            }
        }
        txn.commit().map_err(Error::redb_op)?;
        Ok(added)
    }

    /// The last success of `job` per PC; with `version`, of that version
    /// of the job only.
    pub fn job_completions(
        &self,
        job: &str,
        version: Option<&str>,
    ) -> Result<BTreeMap<String, DateTime<Utc>>> {
        let txn = self.db.begin_read().map_err(Error::redb_op)?;
        let mut out = BTreeMap::new();
        match version {
            None => {
                let t = txn.open_table(BY_JOB).map_err(Error::redb_op)?;
                for e in t.range((job, "")..).map_err(Error::redb_op)? {
                    let (k, v) = e.map_err(Error::redb_op)?;
                    let (j, pc) = k.value();
                    if j != job {
                        break;
                    }
                    out.insert(pc.to_string(), micros(v.value()));
                }
            }
            Some(version) => {
                let t = txn.open_table(BY_VERSION).map_err(Error::redb_op)?;
                for e in t.range((job, version, "")..).map_err(Error::redb_op)? {
                    let (k, v) = e.map_err(Error::redb_op)?;
                    let (j, ver, pc) = k.value();
                    if j != job || ver != version {
                        break;
                    }
                    out.insert(pc.to_string(), micros(v.value()));
                }
            }
        }
        Ok(out)
    }
}
