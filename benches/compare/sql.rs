//! `POST /api/query`'s engine beside SQLite answering the same SQL text on
//! the same rows: the reference runs an operator's SQL on its projector
//! database, we run it with DataFusion over redb, Parquet and the explode
//! datasets. Each question's rows must agree before its times are shown.
//! The questions: software on at least N PCs (in the inventory section),
//! failures per job over the last 7 days (here), the fleet's CPU p95 per
//! hour over 30 days (in the 30-day section).

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use kanade_queries::{PerfQueries, SqlExtras, SqlLimits};
use kanade_storage::{RelationalStore, TimeSeriesConfig, TimeSeriesTable, HOST_PERF, PROCESS_PERF};
use rusqlite::Connection;
use serde_json::Value;

use super::{noise, pc_name, time, Report, Scale, SQLITE_SCHEMA};

/// What a query may hold here: as much as the default `query_memory_mib`.
pub const MEMORY: usize = 256 << 20;

/// A cell both sides agree on: numbers to 6 places, text as is.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::Number(n) => format!("{:.6}", n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// SQLite's rows for `sql`, each cell as [`cell`] has it.
pub fn sqlite_rows(c: &Connection, sql: &str) -> Vec<Vec<String>> {
    use rusqlite::types::ValueRef;
    let mut st = c.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    let n = st.column_count();
    let rows = st
        .query_map([], |r| {
            (0..n)
                .map(|i| {
                    Ok(match r.get_ref(i)? {
                        ValueRef::Null => "NULL".into(),
                        ValueRef::Integer(x) => format!("{:.6}", x as f64),
                        ValueRef::Real(x) => format!("{x:.6}"),
                        ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                        ValueRef::Blob(_) => "<blob>".into(),
                    })
                })
                .collect()
        })
        .unwrap();
    rows.map(Result::unwrap).collect()
}

/// Our rows for `sql` (at most 100,000).
pub fn our_rows(
    rt: &tokio::runtime::Runtime,
    q: &PerfQueries,
    sql: &str,
    extras: &SqlExtras,
) -> Vec<Vec<String>> {
    our_rows_within(rt, q, sql, extras, MEMORY)
}

/// As [`our_rows`], with `memory_bytes` for the query's operators.
pub fn our_rows_within(
    rt: &tokio::runtime::Runtime,
    q: &PerfQueries,
    sql: &str,
    extras: &SqlExtras,
    memory_bytes: usize,
) -> Vec<Vec<String>> {
    let limits = SqlLimits {
        rows: 100_000,
        memory_bytes,
    };
    let answer = rt
        .block_on(q.sql(sql, limits, extras.clone()))
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    assert!(!answer.truncated, "{sql}: more rows than the bench reads");
    answer
        .rows
        .iter()
        .map(|r| r.iter().map(cell).collect())
        .collect()
}

/// Times `sql` on both sides, checks they give the same rows, and adds
/// the line.
pub fn compare(
    r: &mut Report,
    label: &str,
    c: &Connection,
    rt: &tokio::runtime::Runtime,
    q: &PerfQueries,
    extras: &SqlExtras,
    sql: &str,
) {
    let (theirs_t, theirs) = time(|| sqlite_rows(c, sql));
    let (ours_t, ours) = time(|| our_rows(rt, q, sql, extras));
    assert!(!theirs.is_empty(), "{label}: SQLite answered no rows");
    assert_eq!(ours, theirs, "{label}: both must answer the same rows");
    r.time(
        &format!("POST /api/query: {label} ({} rows)", theirs.len()),
        theirs_t,
        ours_t,
    );
}

/// A query engine over empty perf tables and `store` (for questions that
/// read no perf samples).
pub fn engine(dir: &Path, store: RelationalStore) -> PerfQueries {
    let config = TimeSeriesConfig::default();
    let host = Arc::new(TimeSeriesTable::open(&HOST_PERF, dir, config.clone()).unwrap());
    let process = Arc::new(TimeSeriesTable::open(&PROCESS_PERF, dir, config).unwrap());
    PerfQueries::new(host, process, store).unwrap()
}

/// Failures per job over the last 7 days: `runs` results of 40 jobs
/// across `pcs` PCs over 14 days, one in nine failing.
pub fn failures(scale: &Scale, dir: &Path, end: DateTime<Utc>) {
    let (pcs, runs) = if scale.name == "full" {
        (3_000, 300_000)
    } else {
        (20, 2_000)
    };
    eprintln!("SQL: failures per job, {runs} results on {pcs} PCs");
    let results: Vec<kanade_storage::FinishedRun> = (0..runs)
        .map(|i| {
            let back = noise(i as u64, 21) * 14.0 * 86_400.0;
            let started = end - chrono::Duration::seconds(back as i64);
            kanade_storage::FinishedRun {
                result_id: format!("run-{i:07}"),
                request_id: format!("req-{}", i / 50),
                exec_id: Some(format!("ex-{}", i / 50)),
                pc_id: pc_name(i % pcs),
                exit_code: i64::from(noise(i as u64, 22) < 1.0 / 9.0),
                stdout: "ok".into(),
                stderr: String::new(),
                started_at: started,
                finished_at: started + chrono::Duration::seconds(30),
                job_id: Some(format!("job-{:02}", (noise(i as u64, 23) * 40.0) as u64)),
                ..Default::default()
            }
        })
        .collect();

    let sqlite_dir = dir.join("sql-sqlite");
    std::fs::create_dir_all(&sqlite_dir).unwrap();
    let mut c = Connection::open(sqlite_dir.join("backend.db")).unwrap();
    c.execute_batch(SQLITE_SCHEMA).unwrap();
    for chunk in results.chunks(1_000) {
        let tx = c.transaction().unwrap();
        {
            let mut ins = tx
                .prepare_cached(
                    "INSERT INTO execution_results (result_id, request_id, exec_id, pc_id, exit_code, \
                     stdout, started_at, finished_at, job_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )
                .unwrap();
            for r in chunk {
                ins.execute(rusqlite::params![
                    r.result_id,
                    r.request_id,
                    r.exec_id,
                    r.pc_id,
                    r.exit_code,
                    r.stdout,
                    super::ts(r.started_at),
                    super::ts(r.finished_at),
                    r.job_id,
                ])
                .unwrap();
            }
        }
        tx.commit().unwrap();
    }

    let ours_dir = dir.join("sql-ours");
    std::fs::create_dir_all(&ours_dir).unwrap();
    let store = RelationalStore::open(&ours_dir).unwrap();
    for chunk in results.chunks(1_000) {
        store.apply_finished(chunk, end, None).unwrap();
    }
    let q = engine(&ours_dir, store);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let since = super::ts(end - chrono::Duration::days(7));
    let mut r = Report { rows: vec![] };
    compare(
        &mut r,
        "failures per job, last 7 d",
        &c,
        &rt,
        &q,
        &SqlExtras::default(),
        &format!(
            "SELECT job_id, count(*) AS failures FROM execution_results \
             WHERE exit_code <> 0 AND finished_at >= '{since}' \
             GROUP BY job_id ORDER BY failures DESC, job_id"
        ),
    );
    r.print_titled(&format!(
        "{} scale: SQL, {runs} results on {pcs} PCs over 14 days",
        scale.name
    ));
}

/// The fleet's CPU p95 per hour (nearest rank), as an operator writes it
/// in SQLite's dialect: both sides run this text.
pub fn p95_sql(from: &str) -> String {
    format!(
        "WITH s AS (SELECT strftime('%Y-%m-%d %H', at) AS h, cpu_pct, \
           row_number() OVER (PARTITION BY strftime('%Y-%m-%d %H', at) ORDER BY cpu_pct) AS rn, \
           count(*) OVER (PARTITION BY strftime('%Y-%m-%d %H', at)) AS n \
         FROM host_perf_samples WHERE at >= '{from}' AND cpu_pct IS NOT NULL) \
         SELECT h, cpu_pct AS p95 FROM s WHERE rn = (n * 95 + 99) / 100 ORDER BY h"
    )
}
