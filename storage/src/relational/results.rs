//! `execution_results`: one row per (job run, PC), created in flight by
//! `events.started` and finished by the `ExecResult`; indexes
//! `results_by_started` and `results_by_finished` give the API its orders
//! and time filters without scanning rows.

use chrono::{DateTime, Utc};
use redb::{
    ReadableDatabase, ReadableTable, ReadableTableMetadata, Table, TableDefinition,
    WriteTransaction,
};
use serde::{Deserialize, Serialize};

use super::codec::{decode, encode};
use super::positions::{record, StreamPosition};
use super::RelationalStore;
use crate::{Error, Result};

const RESULTS: TableDefinition<&str, &[u8]> = TableDefinition::new("execution_results");
/// (started_at µs, result_id) → ().
const BY_STARTED: TableDefinition<(i64, &str), ()> = TableDefinition::new("results_by_started");
/// (finished_at µs, result_id) → ().
const BY_FINISHED: TableDefinition<(i64, &str), ()> = TableDefinition::new("results_by_finished");
/// (exec_id, result_id) → ().
const BY_EXEC: TableDefinition<(&str, &str), ()> = TableDefinition::new("results_by_exec");
/// (started_at µs, result_id) → () of the rows still in flight.
const IN_FLIGHT: TableDefinition<(i64, &str), ()> = TableDefinition::new("results_in_flight");
const NAME: &str = "execution_results";

/// One execution result as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ResultRecord {
    pub result_id: String,
    pub request_id: String,
    pub exec_id: Option<String>,
    pub pc_id: String,
    /// `None` while in flight.
    pub exit_code: Option<i64>,
    pub stdout: String,
    pub stderr: String,
    pub started_at: DateTime<Utc>,
    /// `None` while in flight.
    pub finished_at: Option<DateTime<Utc>>,
    pub recorded_at: Option<DateTime<Utc>>,
    pub job_id: Option<String>,
    pub version: Option<String>,
    /// Closed by the reaper because no result came; a late result still
    /// finishes the row.
    pub reaped: bool,
}

/// A finished run as reported by the agent.
#[derive(Debug, Clone, PartialEq)]
pub struct FinishedRun {
    pub result_id: String,
    pub request_id: String,
    pub exec_id: Option<String>,
    pub pc_id: String,
    pub exit_code: i64,
    pub stdout: String,
    pub stderr: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub job_id: Option<String>,
}

/// A run that started (events.started).
#[derive(Debug, Clone, PartialEq)]
pub struct StartedRun {
    pub result_id: String,
    pub request_id: String,
    pub exec_id: String,
    pub pc_id: String,
    pub started_at: DateTime<Utc>,
    pub job_id: String,
    pub version: String,
}

pub(super) fn ensure_tables(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(RESULTS).map_err(Error::redb_op)?;
    txn.open_table(BY_STARTED).map_err(Error::redb_op)?;
    txn.open_table(BY_FINISHED).map_err(Error::redb_op)?;
    txn.open_table(IN_FLIGHT).map_err(Error::redb_op)?;
    txn.open_table(BY_EXEC).map_err(Error::redb_op)?;
    Ok(())
}

struct Tables<'t> {
    rows: Table<'t, &'static str, &'static [u8]>,
    by_started: Table<'t, (i64, &'static str), ()>,
    by_finished: Table<'t, (i64, &'static str), ()>,
    in_flight: Table<'t, (i64, &'static str), ()>,
    by_exec: Table<'t, (&'static str, &'static str), ()>,
}

impl<'t> Tables<'t> {
    fn open(txn: &'t WriteTransaction) -> Result<Self> {
        Ok(Self {
            rows: txn.open_table(RESULTS).map_err(Error::redb_op)?,
            by_started: txn.open_table(BY_STARTED).map_err(Error::redb_op)?,
            by_finished: txn.open_table(BY_FINISHED).map_err(Error::redb_op)?,
            in_flight: txn.open_table(IN_FLIGHT).map_err(Error::redb_op)?,
            by_exec: txn.open_table(BY_EXEC).map_err(Error::redb_op)?,
        })
    }

    fn get(&self, id: &str) -> Result<Option<ResultRecord>> {
        match self.rows.get(id).map_err(Error::redb_op)? {
            Some(v) => Ok(Some(decode(NAME, v.value())?)),
            None => Ok(None),
        }
    }

    /// Removes `old`'s index entries (and the row when `drop_row`).
    fn unindex(&mut self, old: &ResultRecord, drop_row: bool) -> Result<()> {
        let id = old.result_id.as_str();
        let started = old.started_at.timestamp_micros();
        self.by_started
            .remove((started, id))
            .map_err(Error::redb_op)?;
        self.in_flight
            .remove((started, id))
            .map_err(Error::redb_op)?;
        if let Some(f) = old.finished_at {
            self.by_finished
                .remove((f.timestamp_micros(), id))
                .map_err(Error::redb_op)?;
        }
        if drop_row {
            self.rows.remove(id).map_err(Error::redb_op)?;
        }
        Ok(())
    }

    /// Writes `new` over `old`, moving its index entries.
    fn put(&mut self, old: Option<&ResultRecord>, new: &ResultRecord) -> Result<()> {
        let id = new.result_id.as_str();
        if let Some(o) = old {
            self.unindex(o, false)?;
        }
        if let Some(exec_id) = new.exec_id.as_deref() {
            self.by_exec
                .insert((exec_id, id), ())
                .map_err(Error::redb_op)?;
        }
        if new.finished_at.is_none() {
            self.in_flight
                .insert((new.started_at.timestamp_micros(), id), ())
                .map_err(Error::redb_op)?;
        }
        self.by_started
            .insert((new.started_at.timestamp_micros(), id), ())
            .map_err(Error::redb_op)?;
        if let Some(f) = new.finished_at {
            self.by_finished
                .insert((f.timestamp_micros(), id), ())
                .map_err(Error::redb_op)?;
        }
        self.rows
            .insert(id, encode(NAME, new)?.as_slice())
            .map_err(Error::redb_op)?;
        Ok(())
    }
}

impl RelationalStore {
    /// Applies finished runs: a new row, or the finish of an in-flight or
    /// reaped one (keeping its `version` and `started_at`). A row that is
    /// already finished is left alone (redelivery). Each run that finishes
    /// a row is counted against its execution. `pos` is recorded in the
    /// same transaction.
    pub fn apply_finished(
        &self,
        runs: &[FinishedRun],
        now: DateTime<Utc>,
        pos: Option<StreamPosition<'_>>,
    ) -> Result<()> {
        self.apply_finished_with_checks(runs, &[], now, pos)
    }

    /// [`Self::apply_finished`] plus the check states those results
    /// report, in the same transaction.
    pub fn apply_finished_with_checks(
        &self,
        runs: &[FinishedRun],
        checks: &[super::check_status::CheckStatusRecord],
        now: DateTime<Utc>,
        pos: Option<StreamPosition<'_>>,
    ) -> Result<()> {
        let txn = self.db.begin_write().map_err(Error::redb_op)?;
        let mut counted = Vec::new();
        {
            let mut t = Tables::open(&txn)?;
            for r in runs {
                let old = t.get(&r.result_id)?;
                let new = match &old {
                    Some(o) if o.finished_at.is_some() && !o.reaped => continue,
                    Some(o) => ResultRecord {
                        exit_code: Some(r.exit_code),
                        stdout: r.stdout.clone(),
                        stderr: r.stderr.clone(),
                        finished_at: Some(r.finished_at),
                        reaped: false,
                        job_id: r.job_id.clone().or_else(|| o.job_id.clone()),
                        request_id: r.request_id.clone(),
                        ..o.clone()
                    },
                    None => ResultRecord {
                        result_id: r.result_id.clone(),
                        request_id: r.request_id.clone(),
                        exec_id: r.exec_id.clone(),
                        pc_id: r.pc_id.clone(),
                        exit_code: Some(r.exit_code),
                        stdout: r.stdout.clone(),
                        stderr: r.stderr.clone(),
                        started_at: r.started_at,
                        finished_at: Some(r.finished_at),
                        recorded_at: Some(now),
                        job_id: r.job_id.clone(),
                        version: None,
                        reaped: false,
                    },
                };
                t.put(old.as_ref(), &new)?;
                if let Some(exec_id) = new.exec_id.as_deref() {
                    counted.push((exec_id.to_string(), r.exit_code == 0));
                }
            }
        }
        for (exec_id, success) in counted {
            super::executions::count_result(&txn, &exec_id, success)?;
        }
        super::check_status::upsert(&txn, checks)?;
        record(&txn, pos)?;
        txn.commit().map_err(Error::redb_op)
    }

    /// Applies started runs: creates the in-flight row. On a row the
    /// result already finished it only fills in `version`, `job_id` and
    /// `exec_id` when missing; it never reopens it.
    pub fn apply_started(
        &self,
        runs: &[StartedRun],
        now: DateTime<Utc>,
        pos: Option<StreamPosition<'_>>,
    ) -> Result<()> {
        let txn = self.db.begin_write().map_err(Error::redb_op)?;
        {
            let mut t = Tables::open(&txn)?;
            for r in runs {
                if let Some(old) = t.get(&r.result_id)? {
                    // The result got here first (the two streams are
                    // consumed independently): fill in only what the
                    // result does not carry, so the final row does not
                    // depend on arrival order.
                    if old.version.is_none() || old.job_id.is_none() || old.exec_id.is_none() {
                        let merged = ResultRecord {
                            version: old.version.clone().or_else(|| Some(r.version.clone())),
                            job_id: old.job_id.clone().or_else(|| Some(r.job_id.clone())),
                            exec_id: old.exec_id.clone().or_else(|| Some(r.exec_id.clone())),
                            ..old.clone()
                        };
                        t.put(Some(&old), &merged)?;
                    }
                    continue;
                }
                let new = ResultRecord {
                    result_id: r.result_id.clone(),
                    request_id: r.request_id.clone(),
                    exec_id: Some(r.exec_id.clone()),
                    pc_id: r.pc_id.clone(),
                    started_at: r.started_at,
                    recorded_at: Some(now),
                    job_id: Some(r.job_id.clone()),
                    version: Some(r.version.clone()),
                    ..ResultRecord::default()
                };
                t.put(None, &new)?;
            }
        }
        record(&txn, pos)?;
        txn.commit().map_err(Error::redb_op)
    }

    /// One result by id.
    pub fn result(&self, result_id: &str) -> Result<Option<ResultRecord>> {
        let txn = self.db.begin_read().map_err(Error::redb_op)?;
        let rows = txn.open_table(RESULTS).map_err(Error::redb_op)?;
        match rows.get(result_id).map_err(Error::redb_op)? {
            Some(v) => Ok(Some(decode(NAME, v.value())?)),
            None => Ok(None),
        }
    }

    /// Walks results newest `started_at` first (ties: higher result_id
    /// first), starting at `started_at >= since` when given, and hands each
    /// row to `visit` until it returns `false`.
    pub fn scan_results_by_started_desc(
        &self,
        since: Option<DateTime<Utc>>,
        mut visit: impl FnMut(ResultRecord) -> bool,
    ) -> Result<()> {
        let txn = self.db.begin_read().map_err(Error::redb_op)?;
        let rows = txn.open_table(RESULTS).map_err(Error::redb_op)?;
        let index = txn.open_table(BY_STARTED).map_err(Error::redb_op)?;
        let lo = (since.map_or(i64::MIN, |s| s.timestamp_micros()), "");
        for entry in index.range(lo..).map_err(Error::redb_op)?.rev() {
            let (k, _) = entry.map_err(Error::redb_op)?;
            let id = k.value().1;
            if let Some(v) = rows.get(id).map_err(Error::redb_op)? {
                if !visit(decode(NAME, v.value())?) {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Every result finished at or after `since`, oldest first (from the
    /// finished_at index).
    pub fn results_finished_since(&self, since: DateTime<Utc>) -> Result<Vec<ResultRecord>> {
        let txn = self.db.begin_read().map_err(Error::redb_op)?;
        let rows = txn.open_table(RESULTS).map_err(Error::redb_op)?;
        let index = txn.open_table(BY_FINISHED).map_err(Error::redb_op)?;
        let mut out = Vec::new();
        for entry in index
            .range((since.timestamp_micros(), "")..)
            .map_err(Error::redb_op)?
        {
            let (k, _) = entry.map_err(Error::redb_op)?;
            if let Some(v) = rows.get(k.value().1).map_err(Error::redb_op)? {
                out.push(decode(NAME, v.value())?);
            }
        }
        Ok(out)
    }

    /// Closes runs still in flight that started before `cutoff`: exit code
    /// -1, finished now, `note` appended to stderr, marked reaped (a late
    /// result still finishes them). Returns how many were reaped.
    pub fn reap_in_flight(
        &self,
        cutoff: DateTime<Utc>,
        now: DateTime<Utc>,
        note: &str,
    ) -> Result<usize> {
        let txn = self.db.begin_write().map_err(Error::redb_op)?;
        let mut reaped = 0;
        {
            let mut t = Tables::open(&txn)?;
            let ids: Vec<String> =
                collect_ids(&t.in_flight, cutoff.timestamp_micros(), usize::MAX)?;
            for id in ids {
                let Some(old) = t.get(&id)? else { continue };
                if old.finished_at.is_some() {
                    continue;
                }
                let stderr = if old.stderr.is_empty() {
                    note.to_string()
                } else {
                    format!("{}\n{note}", old.stderr)
                };
                let new = ResultRecord {
                    exit_code: Some(-1),
                    finished_at: Some(now),
                    stderr,
                    reaped: true,
                    ..old.clone()
                };
                t.put(Some(&old), &new)?;
                reaped += 1;
            }
        }
        txn.commit().map_err(Error::redb_op)?;
        Ok(reaped)
    }

    /// Deletes at most `max` results that started before `cutoff`, oldest
    /// first, in one transaction; returns how many went.
    pub fn prune_results_before(&self, cutoff: DateTime<Utc>, max: usize) -> Result<usize> {
        let txn = self.db.begin_write().map_err(Error::redb_op)?;
        let mut n = 0;
        {
            let mut t = Tables::open(&txn)?;
            let ids = collect_ids(&t.by_started, cutoff.timestamp_micros(), max)?;
            for id in ids {
                if let Some(old) = t.get(&id)? {
                    t.unindex(&old, true)?;
                    n += 1;
                }
            }
        }
        txn.commit().map_err(Error::redb_op)?;
        Ok(n)
    }

    /// Every result of one execution (from the exec_id index).
    pub fn results_of_execution(&self, exec_id: &str) -> Result<Vec<ResultRecord>> {
        let txn = self.db.begin_read().map_err(Error::redb_op)?;
        let rows = txn.open_table(RESULTS).map_err(Error::redb_op)?;
        let index = txn.open_table(BY_EXEC).map_err(Error::redb_op)?;
        let mut out = Vec::new();
        for entry in index.range((exec_id, "")..).map_err(Error::redb_op)? {
            let (k, _) = entry.map_err(Error::redb_op)?;
            let (e, id) = k.value();
            if e != exec_id {
                break;
            }
            if let Some(v) = rows.get(id).map_err(Error::redb_op)? {
                out.push(decode(NAME, v.value())?);
            }
        }
        Ok(out)
    }

    /// Number of result rows.
    pub fn result_count(&self) -> Result<u64> {
        let txn = self.db.begin_read().map_err(Error::redb_op)?;
        let rows = txn.open_table(RESULTS).map_err(Error::redb_op)?;
        rows.len().map_err(Error::redb_op)
    }
}

/// Ids of an (at µs, id) index older than `before`, oldest first.
fn collect_ids(
    index: &Table<'_, (i64, &'static str), ()>,
    before: i64,
    max: usize,
) -> Result<Vec<String>> {
    let mut ids = Vec::new();
    for entry in index.range(..(before, "")).map_err(Error::redb_op)? {
        if ids.len() >= max {
            break;
        }
        ids.push(entry.map_err(Error::redb_op)?.0.value().1.to_string());
    }
    Ok(ids)
}

impl RelationalStore {
    /// Adds result rows whose result_id is not stored yet, with their index
    /// entries (a migration from another store); returns how many.
    pub fn import_results(&self, records: &[ResultRecord]) -> Result<usize> {
        let txn = self.db.begin_write().map_err(Error::redb_op)?;
        let mut added = 0;
        {
            let mut t = Tables::open(&txn)?;
            for r in records {
                if t.get(&r.result_id)?.is_none() {
                    t.put(None, r)?;
                    added += 1;
                }
            }
        }
        txn.commit().map_err(Error::redb_op)?;
        Ok(added)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn finished(id: &str, at: DateTime<Utc>, code: i64) -> FinishedRun {
        FinishedRun {
            result_id: id.into(),
            request_id: "req".into(),
            exec_id: Some("e1".into()),
            pc_id: "pc1".into(),
            exit_code: code,
            stdout: "out".into(),
            stderr: String::new(),
            started_at: at,
            finished_at: at + Duration::seconds(3),
            job_id: None,
        }
    }

    fn started(id: &str, at: DateTime<Utc>) -> StartedRun {
        StartedRun {
            result_id: id.into(),
            request_id: "req".into(),
            exec_id: "e1".into(),
            pc_id: "pc1".into(),
            started_at: at,
            job_id: "inventory".into(),
            version: "1.2.0".into(),
        }
    }

    #[test]
    fn started_then_finished_keeps_version_and_moves_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let store = RelationalStore::open(dir.path()).unwrap();
        let t = Utc::now();
        store.apply_started(&[started("r1", t)], t, None).unwrap();
        assert!(store
            .results_finished_since(t - Duration::hours(1))
            .unwrap()
            .is_empty());
        store
            .apply_finished(&[finished("r1", t, 0)], t, None)
            .unwrap();
        let r = store.result("r1").unwrap().unwrap();
        assert_eq!(r.version.as_deref(), Some("1.2.0"));
        assert_eq!(
            r.job_id.as_deref(),
            Some("inventory"),
            "kept when the result has none"
        );
        assert_eq!(r.exit_code, Some(0));
        assert_eq!(store.results_finished_since(t).unwrap().len(), 1);
        // Redelivery of either message changes nothing.
        let mut again = finished("r1", t, 9);
        again.stdout = "other".into();
        store.apply_finished(&[again], t, None).unwrap();
        store.apply_started(&[started("r1", t)], t, None).unwrap();
        assert_eq!(store.result("r1").unwrap().unwrap(), r);
        assert_eq!(store.result_count().unwrap(), 1);
    }

    #[test]
    fn reaper_closes_stale_runs_and_a_late_result_still_finishes_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = RelationalStore::open(dir.path()).unwrap();
        let now = Utc::now();
        store
            .apply_started(
                &[
                    started("old", now - Duration::hours(30)),
                    started("new", now),
                ],
                now,
                None,
            )
            .unwrap();
        assert_eq!(
            store
                .reap_in_flight(now - Duration::hours(24), now, "NOTE")
                .unwrap(),
            1
        );
        let old = store.result("old").unwrap().unwrap();
        assert_eq!(
            (old.exit_code, old.reaped, old.stderr.as_str()),
            (Some(-1), true, "NOTE")
        );
        assert!(store.result("new").unwrap().unwrap().finished_at.is_none());
        assert_eq!(
            store
                .reap_in_flight(now - Duration::hours(24), now, "NOTE")
                .unwrap(),
            0
        );
        store
            .apply_finished(&[finished("old", now - Duration::hours(30), 0)], now, None)
            .unwrap();
        let late = store.result("old").unwrap().unwrap();
        assert_eq!(
            (late.exit_code, late.reaped, late.stdout.as_str()),
            (Some(0), false, "out")
        );
    }

    #[test]
    fn prune_removes_rows_and_index_entries_in_batches() {
        let dir = tempfile::tempdir().unwrap();
        let store = RelationalStore::open(dir.path()).unwrap();
        let t = Utc::now() - Duration::days(100);
        let runs: Vec<_> = (0..5)
            .map(|i| {
                finished(
                    &format!("r{i}"),
                    t + Duration::days(i * 5) + Duration::hours(1),
                    0,
                )
            })
            .collect();
        store.apply_finished(&runs, t, None).unwrap();
        let cutoff = Utc::now() - Duration::days(90);
        assert_eq!(store.prune_results_before(cutoff, 1).unwrap(), 1);
        assert_eq!(store.prune_results_before(cutoff, 10).unwrap(), 1);
        assert_eq!(store.prune_results_before(cutoff, 10).unwrap(), 0);
        assert_eq!(store.result_count().unwrap(), 3);
        assert_eq!(
            store
                .results_finished_since(t - Duration::days(1))
                .unwrap()
                .len(),
            3
        );
    }

    #[test]
    fn started_after_finished_does_not_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = RelationalStore::open(dir.path()).unwrap();
        let t = Utc::now();
        store
            .apply_finished(&[finished("r1", t, 1)], t, None)
            .unwrap();
        store.apply_started(&[started("r1", t)], t, None).unwrap();
        assert!(store.result("r1").unwrap().unwrap().finished_at.is_some());
    }

    #[test]
    fn scan_is_newest_first_and_bounded_by_since() {
        let dir = tempfile::tempdir().unwrap();
        let store = RelationalStore::open(dir.path()).unwrap();
        let t = Utc::now();
        let runs: Vec<_> = (0..5)
            .map(|i| finished(&format!("r{i}"), t + Duration::minutes(i), 0))
            .collect();
        store.apply_finished(&runs, t, None).unwrap();
        let mut seen = Vec::new();
        store
            .scan_results_by_started_desc(Some(t + Duration::minutes(2)), |r| {
                seen.push(r.result_id);
                true
            })
            .unwrap();
        assert_eq!(seen, vec!["r4", "r3", "r2"]);
    }
}
