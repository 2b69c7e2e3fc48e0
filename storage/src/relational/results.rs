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
/// Finished runs of a job by finish time: (finished µs, result id) →
/// (job id, started µs), all that scan durations read.
const RUN_TIMES: TableDefinition<(i64, &str), (&str, i64)> =
    TableDefinition::new("results_run_times");
/// (exec_id, result_id) → ().
const BY_EXEC: TableDefinition<(&str, &str), ()> = TableDefinition::new("results_by_exec");
/// (started_at µs, result_id) → () of the rows still in flight.
const IN_FLIGHT: TableDefinition<(i64, &str), ()> = TableDefinition::new("results_in_flight");
/// (job_id, pc_id, finished_at µs, result_id) → exit code, of finished
/// rows: a job's latest completion per PC is the last entry of its
/// (job_id, pc_id) range.
const BY_JOB_PC: TableDefinition<(&str, &str, i64, &str), i64> =
    TableDefinition::new("results_by_job_pc");
/// (job_id, pc_id, result_id) → exec_id ("" when none), of rows in flight.
const IN_FLIGHT_BY_JOB: TableDefinition<(&str, &str, &str), &str> =
    TableDefinition::new("results_in_flight_by_job");
/// (job_id, recorded_at µs, result_id) → exit code (`None` in flight).
const BY_JOB_RECORDED: TableDefinition<(&str, i64, &str), Option<i64>> =
    TableDefinition::new("results_by_job_recorded");
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
    #[serde(flatten)]
    pub outcome: RunOutcome,
}

/// What 0.101 agents add to a result; all absent from 0.43 agents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct RunOutcome {
    /// The agent did not run the job on purpose (unsupported feature,
    /// version pin, deadline, revoked, staleness): neither a success nor
    /// a failure. `None`: an agent that does not say.
    pub skipped: Option<bool>,
    /// The run this one finalizes (a `finalize:` hook's row).
    pub parent_result_id: Option<String>,
    /// Key in the `collections` object store of the bundle it collected.
    pub collect_object: Option<String>,
}

/// When a run started and finished, read without its output.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(default)]
pub struct RunTime {
    pub result_id: String,
    pub job_id: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// A finished run as reported by the agent.
#[derive(Debug, Clone, PartialEq, Default)]
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
    pub outcome: RunOutcome,
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
    txn.open_table(RUN_TIMES).map_err(Error::redb_op)?;
    txn.open_table(IN_FLIGHT).map_err(Error::redb_op)?;
    txn.open_table(BY_EXEC).map_err(Error::redb_op)?;
    txn.open_table(BY_JOB_PC).map_err(Error::redb_op)?;
    txn.open_table(IN_FLIGHT_BY_JOB).map_err(Error::redb_op)?;
    txn.open_table(BY_JOB_RECORDED).map_err(Error::redb_op)?;
    Ok(())
}

/// Fills the job indexes (and the run times) from the rows (a database
/// written before they existed); `true` when there was anything to index.
pub(super) fn build_job_indexes(txn: &WriteTransaction) -> Result<bool> {
    let rows = all_rows(txn)?;
    let mut t = Tables::open(txn)?;
    for r in &rows {
        t.index_job(r)?;
    }
    Ok(!rows.is_empty())
}

/// Fills the run times from the rows (a database written before they
/// existed); `true` when there was anything to index.
pub(super) fn build_run_times(txn: &WriteTransaction) -> Result<bool> {
    let rows = all_rows(txn)?;
    let mut t = Tables::open(txn)?;
    for r in &rows {
        t.index_run_time(r)?;
    }
    Ok(!rows.is_empty())
}

pub(super) fn all_rows(txn: &WriteTransaction) -> Result<Vec<ResultRecord>> {
    let t = txn.open_table(RESULTS).map_err(Error::redb_op)?;
    let mut out = Vec::new();
    for e in t.iter().map_err(Error::redb_op)? {
        let (_, v) = e.map_err(Error::redb_op)?;
        out.push(decode(NAME, v.value())?);
    }
    Ok(out)
}

struct Tables<'t> {
    rows: Table<'t, &'static str, &'static [u8]>,
    by_started: Table<'t, (i64, &'static str), ()>,
    by_finished: Table<'t, (i64, &'static str), ()>,
    run_times: Table<'t, (i64, &'static str), (&'static str, i64)>,
    in_flight: Table<'t, (i64, &'static str), ()>,
    by_exec: Table<'t, (&'static str, &'static str), ()>,
    by_job_pc: Table<'t, (&'static str, &'static str, i64, &'static str), i64>,
    in_flight_by_job: Table<'t, (&'static str, &'static str, &'static str), &'static str>,
    by_job_recorded: Table<'t, (&'static str, i64, &'static str), Option<i64>>,
}

/// µs of a row's `recorded_at` (rows from before it existed sort by start).
fn recorded_micros(r: &ResultRecord) -> i64 {
    r.recorded_at.unwrap_or(r.started_at).timestamp_micros()
}

impl<'t> Tables<'t> {
    fn open(txn: &'t WriteTransaction) -> Result<Self> {
        Ok(Self {
            rows: txn.open_table(RESULTS).map_err(Error::redb_op)?,
            by_started: txn.open_table(BY_STARTED).map_err(Error::redb_op)?,
            by_finished: txn.open_table(BY_FINISHED).map_err(Error::redb_op)?,
            run_times: txn.open_table(RUN_TIMES).map_err(Error::redb_op)?,
            in_flight: txn.open_table(IN_FLIGHT).map_err(Error::redb_op)?,
            by_exec: txn.open_table(BY_EXEC).map_err(Error::redb_op)?,
            by_job_pc: txn.open_table(BY_JOB_PC).map_err(Error::redb_op)?,
            in_flight_by_job: txn.open_table(IN_FLIGHT_BY_JOB).map_err(Error::redb_op)?,
            by_job_recorded: txn.open_table(BY_JOB_RECORDED).map_err(Error::redb_op)?,
        })
    }

    /// Adds a finished run of a job to the run times.
    fn index_run_time(&mut self, r: &ResultRecord) -> Result<()> {
        if let (Some(job), Some(f)) = (r.job_id.as_deref(), r.finished_at) {
            self.run_times
                .insert(
                    (f.timestamp_micros(), r.result_id.as_str()),
                    (job, r.started_at.timestamp_micros()),
                )
                .map_err(Error::redb_op)?;
        }
        Ok(())
    }

    /// Adds `r`'s entries to the per-job indexes.
    fn index_job(&mut self, r: &ResultRecord) -> Result<()> {
        self.index_run_time(r)?;
        let Some(job) = r.job_id.as_deref() else {
            return Ok(());
        };
        let id = r.result_id.as_str();
        match r.finished_at {
            Some(f) => {
                self.by_job_pc
                    .insert(
                        (job, r.pc_id.as_str(), f.timestamp_micros(), id),
                        r.exit_code.unwrap_or(-1),
                    )
                    .map_err(Error::redb_op)?;
            }
            None => {
                self.in_flight_by_job
                    .insert(
                        (job, r.pc_id.as_str(), id),
                        r.exec_id.as_deref().unwrap_or(""),
                    )
                    .map_err(Error::redb_op)?;
            }
        }
        self.by_job_recorded
            .insert(
                (job, recorded_micros(r), id),
                r.finished_at.and(r.exit_code),
            )
            .map_err(Error::redb_op)?;
        Ok(())
    }

    /// Removes `r`'s entries from the per-job indexes.
    fn unindex_job(&mut self, r: &ResultRecord) -> Result<()> {
        let Some(job) = r.job_id.as_deref() else {
            return Ok(());
        };
        let id = r.result_id.as_str();
        if let Some(f) = r.finished_at {
            self.by_job_pc
                .remove((job, r.pc_id.as_str(), f.timestamp_micros(), id))
                .map_err(Error::redb_op)?;
            self.run_times
                .remove((f.timestamp_micros(), id))
                .map_err(Error::redb_op)?;
        }
        self.in_flight_by_job
            .remove((job, r.pc_id.as_str(), id))
            .map_err(Error::redb_op)?;
        self.by_job_recorded
            .remove((job, recorded_micros(r), id))
            .map_err(Error::redb_op)?;
        Ok(())
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
        self.unindex_job(old)?;
        if drop_row {
            if let Some(exec_id) = old.exec_id.as_deref() {
                self.by_exec.remove((exec_id, id)).map_err(Error::redb_op)?;
            }
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
        self.index_job(new)?;
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
            .map(|_| ())
    }

    /// [`Self::apply_finished`] plus the check states those results
    /// report, in the same transaction.
    pub fn apply_finished_with_checks(
        &self,
        runs: &[FinishedRun],
        checks: &[super::check_status::CheckStatusRecord],
        now: DateTime<Utc>,
        pos: Option<StreamPosition<'_>>,
    ) -> Result<Vec<super::check_status::CheckChange>> {
        self.apply_finished_with(runs, checks, &[], now, pos)
    }

    /// [`Self::apply_finished_with_checks`] plus the inventory facts those
    /// results carry, all in one transaction. Answers the checks whose
    /// status the commit changed.
    pub fn apply_finished_with(
        &self,
        runs: &[FinishedRun],
        checks: &[super::check_status::CheckStatusRecord],
        facts: &[super::inventory::InventoryFactRecord],
        now: DateTime<Utc>,
        pos: Option<StreamPosition<'_>>,
    ) -> Result<Vec<super::check_status::CheckChange>> {
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
                        outcome: r.outcome.clone(),
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
                        outcome: r.outcome.clone(),
                    },
                };
                t.put(old.as_ref(), &new)?;
                super::completions::record(&txn, &new)?;
                if let Some(exec_id) = new.exec_id.as_deref() {
                    counted.push((exec_id.to_string(), r.exit_code == 0));
                }
            }
        }
        for (exec_id, success) in counted {
            super::executions::count_result(&txn, &exec_id, success)?;
        }
        let changes = super::check_status::upsert(&txn, checks)?;
        super::inventory::upsert(&txn, facts)?;
        record(&txn, pos)?;
        txn.commit().map_err(Error::redb_op)?;
        Ok(changes)
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
                        // A success that arrived first gets its version now.
                        super::completions::record(&txn, &merged)?;
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
        self.finished_since(since)
    }

    /// The runs of a job finished at or after `since`, by finish time:
    /// each run's id, job and times, read from the run-times index alone.
    pub fn run_times_finished_since(&self, since: DateTime<Utc>) -> Result<Vec<RunTime>> {
        let txn = self.db.begin_read().map_err(Error::redb_op)?;
        let times = txn.open_table(RUN_TIMES).map_err(Error::redb_op)?;
        let mut out = Vec::new();
        for entry in times
            .range((since.timestamp_micros(), "")..)
            .map_err(Error::redb_op)?
        {
            let (k, v) = entry.map_err(Error::redb_op)?;
            let ((finished, id), (job, started)) = (k.value(), v.value());
            out.push(RunTime {
                result_id: id.to_string(),
                job_id: Some(job.to_string()),
                started_at: micros_to_utc(started),
                finished_at: Some(micros_to_utc(finished)),
            });
        }
        Ok(out)
    }

    /// Rows finished at or after `since` as `T` (a view of the row).
    fn finished_since<T: serde::de::DeserializeOwned>(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<T>> {
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

/// Where one PC stands with one job, from the per-job indexes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobPcStanding {
    /// The PC's most recently finished run of the job.
    pub latest: Option<LatestRun>,
    /// When the PC last finished the job with exit code 0.
    pub last_success: Option<DateTime<Utc>>,
    /// Runs of the job on the PC still in flight.
    pub in_flight: usize,
}

/// A finished run as the per-job index knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct LatestRun {
    pub result_id: String,
    pub finished_at: DateTime<Utc>,
    pub exit_code: i64,
}

impl RelationalStore {
    /// Every PC that ran (or runs) `job_id`, with its latest finished run
    /// and its in-flight count: two range reads of the job's index
    /// entries, no scan of other jobs' results.
    pub fn job_standing_by_pc(
        &self,
        job_id: &str,
    ) -> Result<std::collections::BTreeMap<String, JobPcStanding>> {
        let txn = self.db.begin_read().map_err(Error::redb_op)?;
        let mut out = std::collections::BTreeMap::<String, JobPcStanding>::new();
        let by_pc = txn.open_table(BY_JOB_PC).map_err(Error::redb_op)?;
        for e in by_pc
            .range((job_id, "", i64::MIN, "")..)
            .map_err(Error::redb_op)?
        {
            let (k, v) = e.map_err(Error::redb_op)?;
            let (job, pc, finished, id) = k.value();
            if job != job_id {
                break;
            }
            // Entries of a PC come oldest first: the last one wins.
            let standing = out.entry(pc.to_string()).or_default();
            let finished_at = micros_to_utc(finished);
            if v.value() == 0 {
                standing.last_success = Some(finished_at);
            }
            standing.latest = Some(LatestRun {
                result_id: id.to_string(),
                finished_at,
                exit_code: v.value(),
            });
        }
        let flying = txn.open_table(IN_FLIGHT_BY_JOB).map_err(Error::redb_op)?;
        for e in flying.range((job_id, "", "")..).map_err(Error::redb_op)? {
            let (k, _) = e.map_err(Error::redb_op)?;
            let (job, pc, _) = k.value();
            if job != job_id {
                break;
            }
            out.entry(pc.to_string()).or_default().in_flight += 1;
        }
        Ok(out)
    }

    /// The exec_ids of `job_id`'s runs still in flight (what a kill
    /// cascade stops).
    pub fn job_in_flight_exec_ids(
        &self,
        job_id: &str,
    ) -> Result<std::collections::BTreeSet<String>> {
        let txn = self.db.begin_read().map_err(Error::redb_op)?;
        let flying = txn.open_table(IN_FLIGHT_BY_JOB).map_err(Error::redb_op)?;
        let mut out = std::collections::BTreeSet::new();
        for e in flying.range((job_id, "", "")..).map_err(Error::redb_op)? {
            let (k, v) = e.map_err(Error::redb_op)?;
            if k.value().0 != job_id {
                break;
            }
            if !v.value().is_empty() {
                out.insert(v.value().to_string());
            }
        }
        Ok(out)
    }

    /// The most recently recorded run of `job_id` (in flight or not), and
    /// how many of its runs recorded since `since` finished with exit 0
    /// and with another code.
    pub fn job_recent_runs(
        &self,
        job_id: &str,
        since: DateTime<Utc>,
    ) -> Result<(Option<ResultRecord>, u64, u64)> {
        let txn = self.db.begin_read().map_err(Error::redb_op)?;
        let index = txn.open_table(BY_JOB_RECORDED).map_err(Error::redb_op)?;
        let rows = txn.open_table(RESULTS).map_err(Error::redb_op)?;
        let last = match index
            .range((job_id, i64::MIN, "")..=(job_id, i64::MAX, "\u{10FFFF}"))
            .map_err(Error::redb_op)?
            .next_back()
        {
            Some(e) => {
                let (k, _) = e.map_err(Error::redb_op)?;
                match rows.get(k.value().2).map_err(Error::redb_op)? {
                    Some(v) => Some(decode(NAME, v.value())?),
                    None => None,
                }
            }
            None => None,
        };
        let (mut ok, mut fail) = (0, 0);
        for e in index
            .range((job_id, since.timestamp_micros(), "")..)
            .map_err(Error::redb_op)?
        {
            let (k, v) = e.map_err(Error::redb_op)?;
            if k.value().0 != job_id {
                break;
            }
            match v.value() {
                Some(0) => ok += 1,
                Some(_) => fail += 1,
                None => {}
            }
        }
        Ok((last, ok, fail))
    }
}

fn micros_to_utc(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
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
                    super::completions::record(&txn, r)?;
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
            ..Default::default()
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

    fn run_of(id: &str, pc: &str, job: &str, code: i64, at: DateTime<Utc>) -> FinishedRun {
        FinishedRun {
            pc_id: pc.into(),
            job_id: Some(job.into()),
            exec_id: Some(format!("ex-{id}")),
            ..finished(id, at, code)
        }
    }

    #[test]
    fn job_indexes_answer_standing_in_flight_and_recent_runs() {
        let dir = tempfile::tempdir().unwrap();
        let store = RelationalStore::open(dir.path()).unwrap();
        // The index keeps microseconds.
        let t = chrono::SubsecRound::trunc_subsecs(Utc::now(), 6) - Duration::hours(2);
        store
            .apply_finished(
                &[
                    run_of("a1", "pc-a", "inv", 0, t),
                    run_of("a2", "pc-a", "inv", 3, t + Duration::minutes(5)),
                    run_of("b1", "pc-b", "inv", 0, t + Duration::minutes(1)),
                    run_of("x1", "pc-a", "other", 0, t + Duration::minutes(9)),
                ],
                t,
                None,
            )
            .unwrap();
        let flying = StartedRun {
            pc_id: "pc-c".into(),
            job_id: "inv".into(),
            exec_id: "ex-c1".into(),
            ..started("c1", t + Duration::minutes(30))
        };
        store.apply_started(&[flying], Utc::now(), None).unwrap();

        let st = store.job_standing_by_pc("inv").unwrap();
        assert_eq!(st.len(), 3);
        let a = &st["pc-a"];
        assert_eq!(
            a.latest
                .as_ref()
                .map(|l| (l.result_id.as_str(), l.exit_code)),
            Some(("a2", 3))
        );
        assert_eq!(a.last_success, Some(t + Duration::seconds(3)));
        assert_eq!((a.in_flight, st["pc-c"].in_flight), (0, 1));
        assert!(st["pc-c"].latest.is_none());
        assert_eq!(
            store
                .job_in_flight_exec_ids("inv")
                .unwrap()
                .into_iter()
                .collect::<Vec<_>>(),
            vec!["ex-c1".to_string()]
        );
        assert!(store.job_in_flight_exec_ids("other").unwrap().is_empty());

        let (last, ok, fail) = store
            .job_recent_runs("inv", t - Duration::hours(1))
            .unwrap();
        assert_eq!(last.map(|r| r.result_id), Some("c1".to_string()));
        assert_eq!((ok, fail), (2, 1));

        // The in-flight run finishes: it moves between the indexes.
        store
            .apply_finished(
                &[run_of("c1", "pc-c", "inv", 0, t + Duration::minutes(30))],
                Utc::now(),
                None,
            )
            .unwrap();
        let st = store.job_standing_by_pc("inv").unwrap();
        assert_eq!(
            (st["pc-c"].in_flight, st["pc-c"].latest.is_some()),
            (0, true)
        );
        assert!(store.job_in_flight_exec_ids("inv").unwrap().is_empty());
        assert_eq!(
            store
                .job_recent_runs("inv", t - Duration::hours(1))
                .unwrap()
                .1,
            3
        );

        // Pruned rows leave the job indexes too.
        store
            .prune_results_before(Utc::now() + Duration::hours(1), 100)
            .unwrap();
        assert!(store.job_standing_by_pc("inv").unwrap().is_empty());
        assert_eq!(
            store
                .job_recent_runs("inv", t - Duration::hours(1))
                .unwrap(),
            (None, 0, 0)
        );
    }

    #[test]
    fn a_database_from_before_the_job_indexes_gets_them_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let t = chrono::SubsecRound::trunc_subsecs(Utc::now(), 6);
        {
            let store = RelationalStore::open(dir.path()).unwrap();
            store
                .apply_finished(&[run_of("a1", "pc-a", "inv", 0, t)], t, None)
                .unwrap();
            // Make it look like a database written before the indexes.
            let txn = store.db.begin_write().unwrap();
            txn.delete_table(BY_JOB_PC).unwrap();
            txn.delete_table(BY_JOB_RECORDED).unwrap();
            txn.open_table(super::super::INDEX_BUILDS)
                .unwrap()
                .remove("results_by_job")
                .unwrap();
            txn.commit().unwrap();
            assert!(
                store.job_standing_by_pc("inv").is_err()
                    || store.job_standing_by_pc("inv").unwrap().is_empty()
            );
        }
        let store = RelationalStore::open(dir.path()).unwrap();
        let st = store.job_standing_by_pc("inv").unwrap();
        assert_eq!(st["pc-a"].last_success, Some(t + Duration::seconds(3)));
        assert_eq!(
            store
                .job_recent_runs("inv", t - Duration::hours(1))
                .unwrap()
                .1,
            1
        );
    }

    #[test]
    fn run_times_follow_the_rows_and_are_built_for_an_older_database() {
        let dir = tempfile::tempdir().unwrap();
        let t = chrono::SubsecRound::trunc_subsecs(Utc::now(), 6) - Duration::hours(1);
        {
            let store = RelationalStore::open(dir.path()).unwrap();
            store
                .apply_finished(
                    &[
                        run_of("a1", "pc-a", "inv", 0, t),
                        run_of("b1", "pc-b", "scan", 0, t + Duration::minutes(1)),
                    ],
                    t,
                    None,
                )
                .unwrap();
            let runs = store.run_times_finished_since(t).unwrap();
            assert_eq!(runs.len(), 2);
            // Make it look like a database written before the run times.
            let txn = store.db.begin_write().unwrap();
            txn.delete_table(RUN_TIMES).unwrap();
            txn.open_table(super::super::INDEX_BUILDS)
                .unwrap()
                .remove("results_run_times")
                .unwrap();
            txn.commit().unwrap();
        }
        let store = RelationalStore::open(dir.path()).unwrap();
        let runs = store.run_times_finished_since(t).unwrap();
        let ids: Vec<(&str, Option<&str>)> = runs
            .iter()
            .map(|r| (r.result_id.as_str(), r.job_id.as_deref()))
            .collect();
        assert_eq!(ids, [("a1", Some("inv")), ("b1", Some("scan"))]);
        let full = store.results_finished_since(t).unwrap();
        assert_eq!(full.len(), 2);
        for (a, b) in runs.iter().zip(&full) {
            assert_eq!((a.started_at, a.finished_at), (b.started_at, b.finished_at));
        }
        // Pruned rows leave the run times.
        store
            .prune_results_before(Utc::now() + Duration::hours(1), 100)
            .unwrap();
        assert!(store.run_times_finished_since(t).unwrap().is_empty());
    }

    #[test]
    fn imported_rows_are_in_the_job_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let store = RelationalStore::open(dir.path()).unwrap();
        let t = chrono::SubsecRound::trunc_subsecs(Utc::now(), 6);
        let row = ResultRecord {
            result_id: "imp-1".into(),
            request_id: "req".into(),
            exec_id: Some("ex-imp".into()),
            pc_id: "pc-i".into(),
            exit_code: Some(0),
            started_at: t,
            finished_at: Some(t),
            recorded_at: Some(t),
            job_id: Some("inv".into()),
            version: Some("1.0".into()),
            ..ResultRecord::default()
        };
        let flying = ResultRecord {
            result_id: "imp-2".into(),
            pc_id: "pc-j".into(),
            exec_id: Some("ex-fly".into()),
            exit_code: None,
            finished_at: None,
            ..row.clone()
        };
        assert_eq!(store.import_results(&[row, flying]).unwrap(), 2);
        let st = store.job_standing_by_pc("inv").unwrap();
        assert_eq!(st["pc-i"].last_success, Some(t));
        assert_eq!(st["pc-j"].in_flight, 1);
        assert_eq!(
            store
                .job_in_flight_exec_ids("inv")
                .unwrap()
                .into_iter()
                .collect::<Vec<_>>(),
            vec!["ex-fly".to_string()]
        );
    }
}
