//! `executions`: one row per fan-out of a job to its targets, with the
//! success/failure counters the results bump; indexes by initiation time
//! and of the still-pending rows (for expiry).

use chrono::{DateTime, Utc};
use redb::{ReadableDatabase, ReadableTable, Table, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::codec::{decode, encode};
use super::RelationalStore;
use crate::{Error, Result};

const EXECUTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("executions");
/// (initiated_at µs, exec_id) → ().
const BY_INITIATED: TableDefinition<(i64, &str), ()> =
    TableDefinition::new("executions_by_initiated");
/// (initiated_at µs, exec_id) → () of rows still `pending`.
const PENDING: TableDefinition<(i64, &str), ()> = TableDefinition::new("executions_pending");
/// (job_id, status, initiated_at µs, exec_id) → (): a job's live counts
/// and the executions a kill stops are range reads.
const BY_JOB_STATUS: TableDefinition<(&str, &str, i64, &str), ()> =
    TableDefinition::new("executions_by_job_status");
const NAME: &str = "executions";

/// One execution as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ExecutionRecord {
    pub exec_id: String,
    pub job_id: String,
    pub version: String,
    pub initiated_by: String,
    pub initiated_at: DateTime<Utc>,
    pub target_count: i64,
    pub success_count: i64,
    pub failure_count: i64,
    /// pending | running | completed | expired
    pub status: String,
}

pub(super) fn ensure_tables(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(EXECUTIONS).map_err(Error::redb_op)?;
    txn.open_table(BY_INITIATED).map_err(Error::redb_op)?;
    txn.open_table(PENDING).map_err(Error::redb_op)?;
    txn.open_table(BY_JOB_STATUS).map_err(Error::redb_op)?;
    Ok(())
}

/// Fills the (job_id, status) index from the rows (a database written
/// before it existed); `true` when there was anything to index.
pub(super) fn build_job_index(txn: &WriteTransaction) -> Result<bool> {
    let rows = txn.open_table(EXECUTIONS).map_err(Error::redb_op)?;
    let mut by_job = txn.open_table(BY_JOB_STATUS).map_err(Error::redb_op)?;
    let mut any = false;
    for e in rows.iter().map_err(Error::redb_op)? {
        let (_, v) = e.map_err(Error::redb_op)?;
        let r: ExecutionRecord = decode(NAME, v.value())?;
        by_job.insert(job_key(&r), ()).map_err(Error::redb_op)?;
        any = true;
    }
    Ok(any)
}

fn job_key(e: &ExecutionRecord) -> (&str, &str, i64, &str) {
    (
        e.job_id.as_str(),
        e.status.as_str(),
        e.initiated_at.timestamp_micros(),
        e.exec_id.as_str(),
    )
}

fn get(t: &Table<'_, &'static str, &'static [u8]>, id: &str) -> Result<Option<ExecutionRecord>> {
    match t.get(id).map_err(Error::redb_op)? {
        Some(v) => Ok(Some(decode(NAME, v.value())?)),
        None => Ok(None),
    }
}

fn put(txn: &WriteTransaction, old: Option<&ExecutionRecord>, new: &ExecutionRecord) -> Result<()> {
    let mut rows = txn.open_table(EXECUTIONS).map_err(Error::redb_op)?;
    let mut by = txn.open_table(BY_INITIATED).map_err(Error::redb_op)?;
    let mut pending = txn.open_table(PENDING).map_err(Error::redb_op)?;
    let mut by_job = txn.open_table(BY_JOB_STATUS).map_err(Error::redb_op)?;
    let id = new.exec_id.as_str();
    if let Some(o) = old {
        let k = (o.initiated_at.timestamp_micros(), id);
        by.remove(k).map_err(Error::redb_op)?;
        pending.remove(k).map_err(Error::redb_op)?;
        by_job.remove(job_key(o)).map_err(Error::redb_op)?;
    }
    by_job.insert(job_key(new), ()).map_err(Error::redb_op)?;
    let k = (new.initiated_at.timestamp_micros(), id);
    by.insert(k, ()).map_err(Error::redb_op)?;
    if new.status == "pending" {
        pending.insert(k, ()).map_err(Error::redb_op)?;
    }
    rows.insert(id, encode(NAME, new)?.as_slice())
        .map_err(Error::redb_op)?;
    Ok(())
}

/// Counts one finished result against its execution (inside the caller's
/// transaction): pending/running until every target answered, then
/// completed. A missing execution is left alone.
pub(super) fn count_result(txn: &WriteTransaction, exec_id: &str, success: bool) -> Result<()> {
    let old = {
        let rows = txn.open_table(EXECUTIONS).map_err(Error::redb_op)?;
        get(&rows, exec_id)?
    };
    let Some(old) = old else { return Ok(()) };
    let mut new = old.clone();
    if success {
        new.success_count += 1;
    } else {
        new.failure_count += 1;
    }
    new.status = if new.success_count + new.failure_count >= new.target_count {
        "completed".into()
    } else {
        "running".into()
    };
    put(txn, Some(&old), &new)
}

impl RelationalStore {
    /// Records a new execution (an existing exec_id is left alone).
    pub fn insert_execution(&self, e: &ExecutionRecord) -> Result<()> {
        let txn = self.db.begin_write().map_err(Error::redb_op)?;
        let exists = {
            let rows = txn.open_table(EXECUTIONS).map_err(Error::redb_op)?;
            get(&rows, &e.exec_id)?.is_some()
        };
        if !exists {
            put(&txn, None, e)?;
        }
        txn.commit().map_err(Error::redb_op)
    }

    /// One execution by id.
    pub fn execution(&self, exec_id: &str) -> Result<Option<ExecutionRecord>> {
        let txn = self.db.begin_read().map_err(Error::redb_op)?;
        let rows = txn.open_table(EXECUTIONS).map_err(Error::redb_op)?;
        match rows.get(exec_id).map_err(Error::redb_op)? {
            Some(v) => Ok(Some(decode(NAME, v.value())?)),
            None => Ok(None),
        }
    }

    /// Walks executions newest first until `visit` returns false.
    pub fn scan_executions_desc(
        &self,
        mut visit: impl FnMut(ExecutionRecord) -> bool,
    ) -> Result<()> {
        let txn = self.db.begin_read().map_err(Error::redb_op)?;
        let rows = txn.open_table(EXECUTIONS).map_err(Error::redb_op)?;
        let by = txn.open_table(BY_INITIATED).map_err(Error::redb_op)?;
        for entry in by.iter().map_err(Error::redb_op)?.rev() {
            let (k, _) = entry.map_err(Error::redb_op)?;
            if let Some(v) = rows.get(k.value().1).map_err(Error::redb_op)? {
                if !visit(decode(NAME, v.value())?) {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Marks executions still pending that were initiated before `cutoff`
    /// as expired; returns how many.
    pub fn expire_pending_executions(&self, cutoff: DateTime<Utc>) -> Result<usize> {
        let txn = self.db.begin_write().map_err(Error::redb_op)?;
        let ids: Vec<String> = {
            let pending = txn.open_table(PENDING).map_err(Error::redb_op)?;
            let mut ids = Vec::new();
            for e in pending
                .range(..(cutoff.timestamp_micros(), ""))
                .map_err(Error::redb_op)?
            {
                ids.push(e.map_err(Error::redb_op)?.0.value().1.to_string());
            }
            ids
        };
        for id in &ids {
            let old = {
                let rows = txn.open_table(EXECUTIONS).map_err(Error::redb_op)?;
                get(&rows, id)?
            };
            if let Some(old) = old {
                let new = ExecutionRecord {
                    status: "expired".into(),
                    ..old.clone()
                };
                put(&txn, Some(&old), &new)?;
            }
        }
        txn.commit().map_err(Error::redb_op)?;
        Ok(ids.len())
    }

    /// Deletes at most `max` executions initiated before `cutoff`.
    pub fn prune_executions_before(&self, cutoff: DateTime<Utc>, max: usize) -> Result<usize> {
        let txn = self.db.begin_write().map_err(Error::redb_op)?;
        let mut n = 0;
        {
            let mut rows = txn.open_table(EXECUTIONS).map_err(Error::redb_op)?;
            let mut by = txn.open_table(BY_INITIATED).map_err(Error::redb_op)?;
            let mut pending = txn.open_table(PENDING).map_err(Error::redb_op)?;
            let mut by_job = txn.open_table(BY_JOB_STATUS).map_err(Error::redb_op)?;
            let keys: Vec<(i64, String)> = by
                .range(..(cutoff.timestamp_micros(), ""))
                .map_err(Error::redb_op)?
                .take(max)
                .map(|e| {
                    e.map(|(k, _)| (k.value().0, k.value().1.to_string()))
                        .map_err(Error::redb_op)
                })
                .collect::<Result<_>>()?;
            for (at, id) in keys {
                by.remove((at, id.as_str())).map_err(Error::redb_op)?;
                pending.remove((at, id.as_str())).map_err(Error::redb_op)?;
                if let Some(old) = rows.remove(id.as_str()).map_err(Error::redb_op)? {
                    let old: ExecutionRecord = decode(NAME, old.value())?;
                    by_job.remove(job_key(&old)).map_err(Error::redb_op)?;
                }
                n += 1;
            }
        }
        txn.commit().map_err(Error::redb_op)?;
        Ok(n)
    }
}

impl RelationalStore {
    /// The exec_ids of `job_id`'s executions in `status`, oldest first.
    pub fn job_executions_in(&self, job_id: &str, status: &str) -> Result<Vec<String>> {
        let txn = self.db.begin_read().map_err(Error::redb_op)?;
        let by_job = txn.open_table(BY_JOB_STATUS).map_err(Error::redb_op)?;
        let mut out = Vec::new();
        for e in by_job
            .range((job_id, status, i64::MIN, "")..)
            .map_err(Error::redb_op)?
        {
            let (k, _) = e.map_err(Error::redb_op)?;
            let (j, st, _, id) = k.value();
            if j != job_id || st != status {
                break;
            }
            out.push(id.to_string());
        }
        Ok(out)
    }

    /// Adds executions whose exec_id is not stored yet; returns how many.
    pub fn import_executions(&self, records: &[ExecutionRecord]) -> Result<usize> {
        let txn = self.db.begin_write().map_err(Error::redb_op)?;
        let mut added = 0;
        for e in records {
            let exists = {
                let rows = txn.open_table(EXECUTIONS).map_err(Error::redb_op)?;
                get(&rows, &e.exec_id)?.is_some()
            };
            if !exists {
                put(&txn, None, e)?;
                added += 1;
            }
        }
        txn.commit().map_err(Error::redb_op)?;
        Ok(added)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relational::FinishedRun;
    use chrono::Duration;

    fn exec(id: &str, at: DateTime<Utc>, targets: i64) -> ExecutionRecord {
        ExecutionRecord {
            exec_id: id.into(),
            job_id: "patch".into(),
            version: "1".into(),
            initiated_by: "alice".into(),
            initiated_at: at,
            target_count: targets,
            status: "pending".into(),
            ..Default::default()
        }
    }

    fn result(id: &str, exec_id: &str, code: i64) -> FinishedRun {
        let t = Utc::now();
        FinishedRun {
            result_id: id.into(),
            request_id: id.into(),
            exec_id: Some(exec_id.into()),
            pc_id: id.into(),
            exit_code: code,
            stdout: String::new(),
            stderr: String::new(),
            started_at: t,
            finished_at: t,
            job_id: Some("patch".into()),
            ..Default::default()
        }
    }

    #[test]
    fn results_count_once_and_complete_the_execution() {
        let dir = tempfile::tempdir().unwrap();
        let store = RelationalStore::open(dir.path()).unwrap();
        store.insert_execution(&exec("e1", Utc::now(), 2)).unwrap();
        store
            .apply_finished(&[result("a", "e1", 0)], Utc::now(), None)
            .unwrap();
        assert_eq!(store.execution("e1").unwrap().unwrap().status, "running");
        store
            .apply_finished(&[result("a", "e1", 0)], Utc::now(), None)
            .unwrap();
        store
            .apply_finished(&[result("b", "e1", 3)], Utc::now(), None)
            .unwrap();
        let e = store.execution("e1").unwrap().unwrap();
        assert_eq!(
            (e.success_count, e.failure_count, e.status.as_str()),
            (1, 1, "completed")
        );
    }

    #[test]
    fn old_pending_executions_expire() {
        let dir = tempfile::tempdir().unwrap();
        let store = RelationalStore::open(dir.path()).unwrap();
        let now = Utc::now();
        store
            .insert_execution(&exec("old", now - Duration::hours(2), 5))
            .unwrap();
        store.insert_execution(&exec("new", now, 5)).unwrap();
        assert_eq!(
            store
                .expire_pending_executions(now - Duration::hours(1))
                .unwrap(),
            1
        );
        assert_eq!(store.execution("old").unwrap().unwrap().status, "expired");
        assert_eq!(store.execution("new").unwrap().unwrap().status, "pending");
        assert_eq!(
            store
                .expire_pending_executions(now - Duration::hours(1))
                .unwrap(),
            0
        );
        let mut order = Vec::new();
        store
            .scan_executions_desc(|e| {
                order.push(e.exec_id);
                true
            })
            .unwrap();
        assert_eq!(order, vec!["new", "old"]);
    }

    #[test]
    fn executions_by_job_and_status_follow_the_row() {
        let dir = tempfile::tempdir().unwrap();
        let store = RelationalStore::open(dir.path()).unwrap();
        let now = Utc::now();
        store.insert_execution(&exec("e1", now, 1)).unwrap();
        store
            .insert_execution(&exec("e2", now + Duration::seconds(1), 2))
            .unwrap();
        assert_eq!(
            store.job_executions_in("patch", "pending").unwrap(),
            vec!["e1", "e2"]
        );
        store
            .apply_finished(&[result("a", "e1", 0)], Utc::now(), None)
            .unwrap();
        store
            .apply_finished(&[result("b", "e2", 0)], Utc::now(), None)
            .unwrap();
        assert_eq!(
            store.job_executions_in("patch", "pending").unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(
            store.job_executions_in("patch", "completed").unwrap(),
            vec!["e1"]
        );
        assert_eq!(
            store.job_executions_in("patch", "running").unwrap(),
            vec!["e2"]
        );
        assert!(store
            .job_executions_in("other", "running")
            .unwrap()
            .is_empty());
        store
            .prune_executions_before(now + Duration::hours(1), 10)
            .unwrap();
        assert!(store
            .job_executions_in("patch", "running")
            .unwrap()
            .is_empty());
    }
}
