//! Side by side: the SQLite design (the reference schema and indexes, its
//! queries, WAL mode, synchronous=NORMAL, one transaction per 1,000 rows)
//! and this store (the projectors' write path, DataFusion queries), loaded
//! with one synthetic fleet in the same run. Prints figures and ratios; it
//! asserts nothing about speed.
//!
//! `bash scripts/bench.sh full` (1,000 PCs × 7 days host, 50 PCs × 20
//! processes × 7 days, 12,000 results) or `quick` (what `cargo test` runs
//! as a smoke test).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, DurationRound, Utc};
use kanade_backend::tasks::maintenance::PERSIST_CHECK;
use kanade_queries::{Aggregate, HostMetric, PerfQueries, ProcessMetric};
use kanade_storage::arrow::record_batch::RecordBatch;
use kanade_storage::{
    FinishedRun, HeartbeatUpdate, HostPerfRow, PartitionDate, ProcessPerfRow, RelationalStore,
    TimeSeriesConfig, TimeSeriesTable, HOST_PERF, PROCESS_PERF,
};
use rusqlite::{params, Connection};

#[path = "compare/capture.rs"]
mod capture;
#[path = "compare/inventory.rs"]
mod inventory;
#[path = "compare/month.rs"]
mod month;
#[path = "compare/sql.rs"]
mod sql;

struct Scale {
    name: &'static str,
    pcs: usize,
    days: i64,
    process_pcs: usize,
    processes: usize,
    results: usize,
    /// PCs of the 30-day section.
    month_pcs: usize,
}

const FULL: Scale = Scale {
    name: "full",
    pcs: 1_000,
    days: 7,
    process_pcs: 50,
    processes: 20,
    results: 12_000,
    month_pcs: 200,
};
const QUICK: Scale = Scale {
    name: "quick",
    pcs: 20,
    days: 2,
    process_pcs: 3,
    processes: 5,
    results: 300,
    month_pcs: 4,
};

/// Messages per write, as the projector commits under load (one flush):
/// a host message is one row, a process message one PC's tick of
/// [`Scale::processes`] rows. The SQLite design commits the same rows
/// per transaction (the reference commits every message on its own).
impl Scale {
    fn host_rows(&self) -> f64 {
        (self.days * 86_400 / STEP_SECS) as f64 * self.pcs as f64
    }

    fn process_rows(&self) -> f64 {
        (self.days * 86_400 / STEP_SECS) as f64 * (self.process_pcs * self.processes) as f64
    }
}

const BATCH_MESSAGES: usize = kanade_backend::ingest::FLUSH_MAX_MESSAGES;
const STEP_SECS: i64 = 60;

/// Deterministic noise in [0, 1).
fn noise(a: u64, b: u64) -> f64 {
    let mut x = a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 29;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

fn pc_name(i: usize) -> String {
    format!("PC-{i:05}")
}

/// A PC's metric as an agent reports it: a per-PC level, a slow daily
/// swing and minute-to-minute jitter (telemetry is smooth, not white
/// noise), at the resolution the agent measures.
fn smooth(seed: u64, tick: i64, level: f64, swing: f64, jitter: f64) -> f64 {
    let phase = noise(seed, 1) * std::f64::consts::TAU;
    let day = (tick as f64 / 1440.0) * std::f64::consts::TAU;
    level * (0.5 + noise(seed, 2))
        + swing * (day + phase).sin()
        + jitter * (noise(seed, tick as u64) - 0.5)
}

/// Disk and network rates: idle most minutes, bursts now and then.
fn bursty(seed: u64, tick: i64, peak: f64) -> f64 {
    let n = noise(seed, tick as u64 ^ 0xABCD);
    if n < 0.7 {
        0.0
    } else {
        ((n - 0.7) / 0.3 * peak / 4096.0).round() * 4096.0
    }
}

/// A rate as the agent computes it: the bytes counted over a tick
/// divided by the tick's measured length (never exactly 60 s), so a
/// full-mantissa f64.
fn rate(seed: u64, tick: i64, peak: f64) -> f64 {
    let bytes = (bursty(seed, tick, peak) * STEP_SECS as f64).floor();
    let elapsed = STEP_SECS as f64 + (noise(seed ^ 0x5EED, tick as u64) - 0.5) * 0.05;
    bytes / elapsed
}

/// CPU as the agent reports it: an f32 percentage widened to f64.
fn agent_cpu(v: f64) -> f64 {
    f64::from(v as f32)
}

fn host_row(pc: usize, tick: i64, at: DateTime<Utc>) -> HostPerfRow {
    let seed = pc as u64 * 16;
    let cpu = smooth(seed, tick, 25.0, 15.0, 10.0).clamp(0.0, 100.0);
    let mem = smooth(seed + 1, tick, 8e9, 1e9, 2e8).max(1e9);
    HostPerfRow {
        pc_id: pc_name(pc),
        at,
        cpu_pct: Some(agent_cpu(cpu)),
        cpu_count: Some(8),
        mem_used_bytes: Some(mem as i64),
        mem_total_bytes: Some(17_179_869_184),
        swap_used_bytes: Some(smooth(seed + 2, tick, 2e8, 5e7, 0.0).max(0.0) as i64),
        swap_total_bytes: Some(2_147_483_648),
        disk_read_bytes_per_sec: Some(rate(seed + 3, tick, 5e7)),
        disk_written_bytes_per_sec: Some(rate(seed + 4, tick, 2e7)),
        net_rx_bytes_per_sec: Some(rate(seed + 5, tick, 1e7)),
        net_tx_bytes_per_sec: Some(rate(seed + 6, tick, 2e6)),
    }
}

fn process_row(pc: usize, proc_: usize, tick: i64, at: DateTime<Utc>) -> ProcessPerfRow {
    let seed = (pc * 1000 + proc_) as u64 * 16 + 7;
    let cpu = smooth(seed, tick, 30.0 / (proc_ + 1) as f64, 5.0, 4.0).clamp(0.0, 100.0);
    let rss = smooth(seed + 1, tick, 2e8 / (proc_ + 1) as f64, 2e7, 1e6).max(1e6);
    ProcessPerfRow {
        pc_id: pc_name(pc),
        at,
        pid: 1000 + proc_ as i64,
        name: format!("proc-{proc_:02}.exe"),
        cpu_pct: agent_cpu(cpu),
        rss_bytes: (rss / 4096.0) as i64 * 4096,
        disk_read_bytes_per_sec: Some(rate(seed + 2, tick, 1e6)),
        disk_written_bytes_per_sec: Some(rate(seed + 3, tick, 5e5)),
    }
}

/// The fleet's samples in arrival order (every PC per minute), in batches
/// of [`BATCH_MESSAGES`] messages, generated on the fly.
fn host_batches(s: &Scale, start: DateTime<Utc>) -> impl Iterator<Item = Vec<HostPerfRow>> + '_ {
    let ticks = s.days * 86_400 / STEP_SECS;
    let mut rows = (0..ticks).flat_map(move |t| {
        let at = start + chrono::Duration::seconds(t * STEP_SECS);
        (0..s.pcs).map(move |pc| host_row(pc, t, at))
    });
    std::iter::from_fn(move || {
        let b: Vec<_> = rows.by_ref().take(BATCH_MESSAGES).collect();
        (!b.is_empty()).then_some(b)
    })
}

fn process_batches(
    s: &Scale,
    start: DateTime<Utc>,
) -> impl Iterator<Item = Vec<ProcessPerfRow>> + '_ {
    let ticks = s.days * 86_400 / STEP_SECS;
    let mut rows = (0..ticks).flat_map(move |t| {
        let at = start + chrono::Duration::seconds(t * STEP_SECS);
        (0..s.process_pcs)
            .flat_map(move |pc| (0..s.processes).map(move |p| process_row(pc, p, t, at)))
    });
    std::iter::from_fn(move || {
        let b: Vec<_> = rows.by_ref().take(BATCH_MESSAGES * s.processes).collect();
        (!b.is_empty()).then_some(b)
    })
}

/// Batches of rows as our writes: an Arrow batch each, with its newest
/// `at` (the data's clock, which the compaction pass follows).
fn as_writes<'a, R: 'a>(
    batches: impl Iterator<Item = Vec<R>> + 'a,
    at: fn(&R) -> DateTime<Utc>,
    to_batch: fn(&[R]) -> kanade_storage::Result<RecordBatch>,
) -> impl Iterator<Item = (RecordBatch, DateTime<Utc>)> + 'a {
    batches.map(move |b| {
        let newest = b.iter().map(at).max().expect("batches are not empty");
        (to_batch(&b).unwrap(), newest)
    })
}

fn host_writes(
    s: &Scale,
    start: DateTime<Utc>,
) -> impl Iterator<Item = (RecordBatch, DateTime<Utc>)> + '_ {
    as_writes(host_batches(s, start), |r| r.at, HostPerfRow::to_batch)
}

fn process_writes(
    s: &Scale,
    start: DateTime<Utc>,
) -> impl Iterator<Item = (RecordBatch, DateTime<Utc>)> + '_ {
    as_writes(
        process_batches(s, start),
        |r| r.at,
        ProcessPerfRow::to_batch,
    )
}

fn results(s: &Scale, end: DateTime<Utc>) -> Vec<FinishedRun> {
    (0..s.results)
        .map(|i| {
            let n = noise(i as u64, 7);
            let started = end - chrono::Duration::seconds((n * s.days as f64 * 86_400.0) as i64);
            let dur = 100 + (noise(i as u64, 11) * 60_000.0) as i64;
            FinishedRun {
                result_id: format!("res-{i:06}"),
                request_id: format!("req-{}", i / 100),
                exec_id: Some(format!("ex-{}", i / 100)),
                pc_id: pc_name(i % s.pcs),
                exit_code: i64::from(i % 17 == 0),
                stdout: "ok".into(),
                stderr: String::new(),
                started_at: started,
                finished_at: started + chrono::Duration::milliseconds(dur),
                job_id: Some(format!("job-{:02}", i % 20)),
                ..Default::default()
            }
        })
        .collect()
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339()
}

/// Peak RSS since the last reset, in MiB (Linux).
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Logs the current and peak RSS (MiB) at a stage of the run: where the
/// peak of the README's row is reached.
fn note_rss(stage: &str) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(f64::NAN, |k| k / 1024.0)
    };
    eprintln!(
        "RSS {stage}: now {:.0} MiB, peak {:.0} MiB",
        kib("VmRSS:"),
        kib("VmHWM:")
    );
}

fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                total += e.metadata().map_or(0, |m| m.len());
            }
        }
    }
    total
}

fn sqlite_bytes(path: &Path) -> u64 {
    ["", "-wal", "-shm"]
        .iter()
        .map(|suffix| {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            std::fs::metadata(p).map_or(0, |m| m.len())
        })
        .sum()
}

/// Median wall time of a few runs (fewer when one run is slow).
fn time<T>(mut f: impl FnMut() -> T) -> (Duration, T) {
    let first = Instant::now();
    let mut out = f();
    let mut times = vec![first.elapsed()];
    let runs = if times[0] > Duration::from_secs(1) {
        3
    } else {
        9
    };
    for _ in 1..runs {
        let t = Instant::now();
        out = f();
        times.push(t.elapsed());
    }
    times.sort();
    (times[times.len() / 2], out)
}

struct Report {
    /// (question, SQLite, DuckDB, ours, ratio)
    rows: Vec<(String, String, String, String, String)>,
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// "N× faster" / "N× slower" of ours against `other`.
fn verdict(other: Duration, ours: Duration) -> String {
    let ratio = other.as_secs_f64() / ours.as_secs_f64().max(1e-9);
    if ratio >= 1.0 {
        format!("{ratio:.1}× faster")
    } else {
        format!("{:.1}× slower", 1.0 / ratio)
    }
}

impl Report {
    fn time(&mut self, what: &str, sqlite: Duration, ours: Duration) {
        self.time3(what, sqlite, None, ours);
    }

    /// A timed row with the DuckDB figure when there is one; the ratio
    /// column then names both.
    fn time3(&mut self, what: &str, sqlite: Duration, duck: Option<Duration>, ours: Duration) {
        let ratio = match duck {
            Some(d) => format!(
                "{} than SQLite, {} than DuckDB",
                verdict(sqlite, ours),
                verdict(d, ours)
            ),
            None => verdict(sqlite, ours),
        };
        self.rows.push((
            what.into(),
            ms(sqlite),
            duck.map(ms).unwrap_or_default(),
            ms(ours),
            ratio,
        ));
    }

    fn line(&mut self, what: &str, sqlite: String, ours: String, ratio: String) {
        self.rows
            .push((what.into(), sqlite, String::new(), ours, ratio));
    }

    fn line3(&mut self, what: &str, sqlite: String, duck: String, ours: String, ratio: String) {
        self.rows.push((what.into(), sqlite, duck, ours, ratio));
    }

    fn print(&self, scale: &Scale) {
        self.print_titled(&format!(
            "{} scale: {} PCs × {} d host @60 s; {} PCs × {} processes; {} results",
            scale.name, scale.pcs, scale.days, scale.process_pcs, scale.processes, scale.results
        ));
    }

    fn print_titled(&self, title: &str) {
        let duck = self.rows.iter().any(|r| !r.2.is_empty());
        println!();
        if duck {
            println!("| {title} | SQLite design | DuckDB on our files | ours | ratio |");
            println!("|---|---:|---:|---:|---:|");
        } else {
            println!("| {title} | SQLite design | ours | ratio |");
            println!("|---|---:|---:|---:|");
        }
        for (a, b, c, d, e) in &self.rows {
            if duck {
                println!("| {a} | {b} | {c} | {d} | {e} |");
            } else {
                println!("| {a} | {b} | {d} | {e} |");
            }
        }
    }
}

/// What DuckDB answered over our data directory (`compare/duckdb_side.py`).
struct Duck {
    /// Per question of [`ANSWERED`] (not scan durations): time and answer.
    answers: std::collections::HashMap<String, (Duration, Answer)>,
    db_bytes_host: u64,
    db_bytes_process: u64,
}

/// Runs the DuckDB side; `None` (with a note) when Python or the duckdb
/// module is missing, unless `BENCH_DUCKDB=required` (CI).
fn duckdb_side(
    dir: &Path,
    pc: &str,
    ppc: &str,
    end: DateTime<Utc>,
    days: i64,
    mode: &str,
) -> Option<Duck> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/compare/duckdb_side.py");
    let arg = serde_json::json!({
        "dir": dir, "pc": pc, "ppc": ppc, "end": end.timestamp(), "days": days, "mode": mode,
    });
    let required = std::env::var("BENCH_DUCKDB").is_ok_and(|v| v == "required");
    let out = match std::process::Command::new("python3")
        .arg(&script)
        .arg(arg.to_string())
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            assert!(!required, "python3 for the DuckDB side: {e}");
            eprintln!("DuckDB column skipped: python3 not found ({e})");
            return None;
        }
    };
    if out.status.code() == Some(3) {
        assert!(!required, "the DuckDB side needs `pip install duckdb`");
        eprintln!("DuckDB column skipped: pip install duckdb");
        return None;
    }
    assert!(
        out.status.success(),
        "DuckDB side failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("DuckDB side's JSON");
    let answers = v["answers"]
        .as_object()
        .expect("answers")
        .iter()
        .map(|(k, a)| {
            let d = Duration::from_secs_f64(a["ms"].as_f64().unwrap() / 1e3);
            let answer = Answer {
                rows: a["rows"].as_u64().unwrap() as usize,
                cpu_sum: a["sum"].as_f64().unwrap(),
            };
            (k.clone(), (d, answer))
        })
        .collect();
    Some(Duck {
        answers,
        db_bytes_host: v["db_bytes"]["host_perf"].as_u64().unwrap_or(0),
        db_bytes_process: v["db_bytes"]["process_perf"].as_u64().unwrap_or(0),
    })
}

const SQLITE_SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
CREATE TABLE agents (pc_id TEXT PRIMARY KEY, hostname TEXT, last_heartbeat TIMESTAMP,
  agent_version TEXT, os_family TEXT, updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP);
CREATE TABLE host_perf_samples (pc_id TEXT NOT NULL, at TIMESTAMP NOT NULL, cpu_pct REAL,
  cpu_count INTEGER, mem_used_bytes INTEGER, mem_total_bytes INTEGER, swap_used_bytes INTEGER,
  swap_total_bytes INTEGER, disk_read_bytes_per_sec REAL, disk_written_bytes_per_sec REAL,
  net_rx_bytes_per_sec REAL, net_tx_bytes_per_sec REAL, PRIMARY KEY (pc_id, at));
CREATE INDEX idx_host_perf_samples_at ON host_perf_samples(at);
CREATE TABLE process_perf_samples (pc_id TEXT NOT NULL, at TIMESTAMP NOT NULL,
  pid INTEGER NOT NULL, name TEXT NOT NULL, cpu_pct REAL NOT NULL, rss_bytes INTEGER NOT NULL,
  disk_read_bytes_per_sec REAL, disk_written_bytes_per_sec REAL, PRIMARY KEY (pc_id, at, pid));
CREATE INDEX idx_process_perf_samples_at ON process_perf_samples(at);
CREATE TABLE execution_results (result_id TEXT PRIMARY KEY, request_id TEXT NOT NULL,
  exec_id TEXT, pc_id TEXT NOT NULL, exit_code INTEGER, stdout TEXT NOT NULL DEFAULT '',
  stderr TEXT NOT NULL DEFAULT '', started_at TIMESTAMP NOT NULL, finished_at TIMESTAMP,
  recorded_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, job_id TEXT, version TEXT,
  reaped INTEGER NOT NULL DEFAULT 0);
CREATE INDEX idx_execution_results_finished_at ON execution_results (finished_at)
  WHERE finished_at IS NOT NULL;
CREATE INDEX idx_execution_results_started_at ON execution_results (started_at DESC, result_id DESC);
CREATE INDEX idx_execution_results_pc ON execution_results(pc_id, recorded_at DESC);
";

/// What a query answered, reduced to compare the two designs: rows and
/// the sum of the cpu values in them.
#[derive(Debug, Clone, Copy, Default)]
struct Answer {
    rows: usize,
    cpu_sum: f64,
}

impl Answer {
    fn of(values: impl IntoIterator<Item = Option<f64>>) -> Self {
        values.into_iter().fold(Self::default(), |a, v| Self {
            rows: a.rows + 1,
            cpu_sum: a.cpu_sum + v.unwrap_or(0.0),
        })
    }

    fn same(&self, other: &Self) -> bool {
        self.rows == other.rows
            && (self.cpu_sum - other.cpu_sum).abs() <= 1e-6 * self.cpu_sum.abs().max(1.0)
    }
}

/// The queries whose answers both designs must agree on, in the order of
/// [`Timings::answers`].
const ANSWERED: [&str; 9] = [
    "host timeline 1 h",
    "host timeline N d",
    "fleet 24 h",
    "top-5",
    "latest tick",
    "process timeline 1 h",
    "process timeline 24 h",
    "process timeline N d",
    "scan durations",
];

struct Timings {
    /// Each query's answer, named by [`ANSWERED`].
    answers: [Answer; 9],
    ingest_host: Duration,
    ingest_process: Duration,
    host_1h: Duration,
    host_7d: Duration,
    fleet_24h: Duration,
    /// Ours only: the same from files and rollups, without the in-memory
    /// windows (files and rollups).
    fleet_24h_stored: Duration,
    /// Ours only: the stored path over 24 h on the 5-minute grid (no
    /// partial first window read raw), whatever the wall clock.
    fleet_24h_stored_grid: Duration,
    /// Ours only: fleet 24 h with from and to 17 s off the minute.
    fleet_24h_odd: Duration,
    top5: Duration,
    latest_tick: Duration,
    proc_1h: Duration,
    proc_24h: Duration,
    proc_7d: Duration,
    scan: Duration,
    retention: Duration,
    bytes_host: u64,
    bytes_process: u64,
    freed: u64,
    peak_rss: Option<f64>,
    /// The DuckDB side, asked of our files before the retention row.
    duck: Option<Duck>,
}

/// Inserts the scale's host samples the reference's way (a transaction
/// per batch); returns the time it took.
fn sqlite_insert_host(c: &mut Connection, s: &Scale, start: DateTime<Utc>) -> Duration {
    let t = Instant::now();
    for batch in host_batches(s, start) {
        let tx = c.transaction().unwrap();
        {
            let mut st = tx
                .prepare_cached("INSERT OR IGNORE INTO host_perf_samples VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)")
                .unwrap();
            for r in &batch {
                st.execute(params![
                    r.pc_id,
                    ts(r.at),
                    r.cpu_pct,
                    r.cpu_count,
                    r.mem_used_bytes,
                    r.mem_total_bytes,
                    r.swap_used_bytes,
                    r.swap_total_bytes,
                    r.disk_read_bytes_per_sec,
                    r.disk_written_bytes_per_sec,
                    r.net_rx_bytes_per_sec,
                    r.net_tx_bytes_per_sec
                ])
                .unwrap();
            }
        }
        tx.commit().unwrap();
    }
    t.elapsed()
}

fn sqlite_insert_process(c: &mut Connection, s: &Scale, start: DateTime<Utc>) -> Duration {
    let t = Instant::now();
    for batch in process_batches(s, start) {
        let tx = c.transaction().unwrap();
        {
            let mut st = tx
                .prepare_cached("INSERT OR IGNORE INTO process_perf_samples VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)")
                .unwrap();
            for r in &batch {
                st.execute(params![
                    r.pc_id,
                    ts(r.at),
                    r.pid,
                    r.name,
                    r.cpu_pct,
                    r.rss_bytes,
                    r.disk_read_bytes_per_sec,
                    r.disk_written_bytes_per_sec
                ])
                .unwrap();
            }
        }
        tx.commit().unwrap();
    }
    t.elapsed()
}

fn run_sqlite(s: &Scale, dir: &Path, start: DateTime<Utc>, end: DateTime<Utc>) -> Timings {
    reset_peak_rss();
    let path = dir.join("backend.db");
    let mut c = Connection::open(&path).unwrap();
    c.execute_batch(SQLITE_SCHEMA).unwrap();
    {
        let tx = c.transaction().unwrap();
        for i in 0..s.pcs {
            tx.execute(
                "INSERT INTO agents (pc_id, hostname, last_heartbeat) VALUES (?1, ?2, ?3)",
                params![pc_name(i), format!("host-{i}"), ts(end)],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
    let ingest_host = sqlite_insert_host(&mut c, s, start);

    let ingest_process = sqlite_insert_process(&mut c, s, start);
    {
        let tx = c.transaction().unwrap();
        for r in results(s, end) {
            tx.execute(
                "INSERT INTO execution_results (result_id, request_id, exec_id, pc_id, exit_code, stdout, started_at, finished_at, job_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![r.result_id, r.request_id, r.exec_id, r.pc_id, r.exit_code, r.stdout, ts(r.started_at), ts(r.finished_at), r.job_id],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
    c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
    let db_path = path.clone();
    let table_bytes = |c: &Connection, table: &str| -> u64 {
        // dbstat is not in every build; split the file by page counts.
        let pages: Option<i64> = c
            .query_row(
                "SELECT sum(pgsize) FROM dbstat WHERE name = ?1 OR name IN (SELECT name FROM sqlite_master WHERE tbl_name = ?1)",
                [table],
                |r| r.get(0),
            )
            .ok()
            .flatten();
        pages.map_or_else(|| sqlite_bytes(&db_path) / 2, |p| p as u64)
    };
    let bytes_host = table_bytes(&c, "host_perf_samples");
    let bytes_process = table_bytes(&c, "process_perf_samples");

    let pc = pc_name(s.pcs / 2);
    let host_sql = "SELECT (CAST(strftime('%s', at) AS INTEGER) / ?1) * ?1 AS b, AVG(cpu_pct), AVG(mem_used_bytes), AVG(mem_total_bytes), AVG(swap_used_bytes), AVG(swap_total_bytes), AVG(disk_read_bytes_per_sec), AVG(disk_written_bytes_per_sec), AVG(net_rx_bytes_per_sec), AVG(net_tx_bytes_per_sec) FROM host_perf_samples WHERE pc_id = ?2 AND at >= ?3 AND at < ?4 GROUP BY b ORDER BY b";
    // Rows, and the sum of the cpu column `cpu` (its position).
    let count = |c: &Connection, sql: &str, cpu: usize, p: &[&dyn rusqlite::ToSql]| -> Answer {
        let mut st = c.prepare_cached(sql).unwrap();
        let mut rows = st.query(p).unwrap();
        let mut values = Vec::new();
        while let Some(row) = rows.next().unwrap() {
            values.push(row.get::<_, Option<f64>>(cpu).unwrap());
        }
        Answer::of(values)
    };
    let h = |d: i64| ts(end - chrono::Duration::hours(d));
    let (host_1h, a_host_1h) = time(|| count(&c, host_sql, 1, &[&300, &pc, &h(1), &ts(end)]));
    let (host_7d, a_host_7d) =
        time(|| count(&c, host_sql, 1, &[&3600, &pc, &h(24 * s.days), &ts(end)]));
    let fleet_sql = "SELECT (CAST(strftime('%s', at) AS INTEGER) / ?1) * ?1 AS b, AVG(cpu_pct) FROM host_perf_samples WHERE at >= ?2 AND at < ?3 GROUP BY b ORDER BY b";
    let (fleet_24h, a_fleet_24h) = time(|| count(&c, fleet_sql, 1, &[&300, &h(24), &ts(end)]));
    let top_sql = "SELECT h.pc_id, a.hostname, AVG(h.cpu_pct) AS value FROM host_perf_samples h LEFT JOIN agents a ON a.pc_id = h.pc_id WHERE h.at > ?1 GROUP BY h.pc_id ORDER BY value DESC NULLS LAST LIMIT 5";
    let since5 = ts(end - chrono::Duration::minutes(5));
    let (top5, a_top5) = time(|| count(&c, top_sql, 2, &[&since5]));
    let ppc = pc_name(s.process_pcs / 2);
    let (latest_tick, a_latest_tick) = time(|| {
        let latest: Option<String> = c
            .prepare_cached("SELECT MAX(at) FROM process_perf_samples WHERE pc_id = ?1")
            .unwrap()
            .query_row([&ppc], |r| r.get(0))
            .unwrap();
        count(&c, "SELECT pid, name, cpu_pct, rss_bytes, disk_read_bytes_per_sec, disk_written_bytes_per_sec FROM process_perf_samples WHERE pc_id = ?1 AND at = ?2 ORDER BY cpu_pct DESC", 2, &[&ppc, &latest])
    });
    let timeline = |hours: i64, step: i64| {
        let from = h(hours);
        let to = ts(end);
        let names: Vec<String> = {
            let mut st = c.prepare_cached("SELECT name FROM process_perf_samples WHERE pc_id = ?1 AND at >= ?2 AND at < ?3 AND cpu_pct IS NOT NULL GROUP BY name ORDER BY AVG(cpu_pct) DESC NULLS LAST LIMIT 5").unwrap();
            st.query_map(params![ppc, from, to], |r| r.get(0))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        let mut sql =
            String::from("SELECT (CAST(strftime('%s', at) AS INTEGER) / ?) * ? AS b, CASE name ");
        for _ in &names {
            sql.push_str("WHEN ? THEN name ");
        }
        sql.push_str("ELSE ? END AS n, AVG(cpu_pct) FROM process_perf_samples WHERE pc_id = ? AND at >= ? AND at < ? GROUP BY b, n ORDER BY b");
        let mut p: Vec<&dyn rusqlite::ToSql> = vec![&step, &step];
        for n in &names {
            p.push(n);
        }
        let other = "other".to_string();
        p.push(&other);
        p.push(&ppc);
        p.push(&from);
        p.push(&to);
        count(&c, &sql, 2, &p)
    };
    let (proc_1h, a_proc_1h) = time(|| timeline(1, 60));
    let (proc_24h, a_proc_24h) = time(|| timeline(24, 300));
    let (proc_7d, a_proc_7d) = time(|| timeline(24 * s.days, 3600));
    let (scan, a_scan) = time(|| {
        let mut st = c.prepare_cached("SELECT job_id, result_id, CAST((julianday(finished_at) - julianday(started_at)) * 86400000.0 AS INTEGER) AS dur_ms FROM execution_results WHERE finished_at IS NOT NULL AND started_at IS NOT NULL AND job_id IS NOT NULL AND finished_at >= ?1").unwrap();
        let mut by_job: std::collections::HashMap<String, Vec<i64>> =
            std::collections::HashMap::new();
        let rows = st
            .query_map([h(24)], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(2)?))
            })
            .unwrap();
        for r in rows {
            let (job, d) = r.unwrap();
            by_job.entry(job).or_default().push(d.max(0));
        }
        for v in by_job.values_mut() {
            v.sort_unstable();
        }
        Answer::of(by_job.values().map(|v| Some(v.len() as f64)))
    });
    let before = sqlite_bytes(&path);
    let cutoff = ts(DateTime::from_naive_utc_and_offset(
        start
            .date_naive()
            .succ_opt()
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap(),
        Utc,
    ));
    let t = Instant::now();
    for table in ["host_perf_samples", "process_perf_samples"] {
        c.execute(&format!("DELETE FROM {table} WHERE at < ?1"), [&cutoff])
            .unwrap();
    }
    let retention = t.elapsed();
    c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
    let freed = before.saturating_sub(sqlite_bytes(&path));
    Timings {
        answers: [
            a_host_1h,
            a_host_7d,
            a_fleet_24h,
            a_top5,
            a_latest_tick,
            a_proc_1h,
            a_proc_24h,
            a_proc_7d,
            a_scan,
        ],
        ingest_host,
        ingest_process,
        host_1h,
        host_7d,
        fleet_24h,
        fleet_24h_stored: Duration::ZERO,
        fleet_24h_stored_grid: Duration::ZERO,
        fleet_24h_odd: Duration::ZERO,
        top5,
        latest_tick,
        proc_1h,
        proc_24h,
        proc_7d,
        scan,
        retention,
        bytes_host,
        bytes_process,
        freed,
        peak_rss: peak_rss_mib(),
        duck: None,
    }
}

/// The server's path, thread for thread: the projector's writes on this
/// thread (a write that leaves the head past its hard cap persists
/// inline), the persist pass on a second (every `PERSIST_CHECK`, when the
/// head has reached a threshold) and the compaction pass on a third, run
/// as each day of the data closes (the pass's `today` follows the data's
/// clock, which the writes advance much faster than a real one). Then the
/// last persist and the close-of-day compaction of the last day. Each
/// stage's busy time is printed; returns the time it all took.
fn ingest_ours(
    table: &TimeSeriesTable,
    batches: &mut dyn Iterator<Item = (RecordBatch, DateTime<Utc>)>,
    end: DateTime<Utc>,
) -> Duration {
    use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
    let t = Instant::now();
    let newest = AtomicI64::new(i64::MIN);
    let done = AtomicBool::new(false);
    let (writing, persisting, (compacting, compactions)) = std::thread::scope(|s| {
        let persist_pass = s.spawn(|| {
            let mut busy = Duration::ZERO;
            while !done.load(Ordering::Acquire) {
                if std::env::var("NOPERSIST").is_err() && table.wants_persist() {
                    let p = Instant::now();
                    table.persist().unwrap();
                    busy += p.elapsed();
                } else {
                    std::thread::sleep(PERSIST_CHECK);
                }
            }
            busy
        });
        let compaction_pass = s.spawn(|| {
            let (mut busy, mut passes) = (Duration::ZERO, 0);
            let mut today = None;
            while !done.load(Ordering::Acquire) {
                let now = PartitionDate::of_micros(newest.load(Ordering::Acquire));
                if std::env::var("NOCOMPACT").is_err() && now.is_some() && now != today {
                    if let (Some(_), Some(day)) = (today, now) {
                        let c = Instant::now();
                        passes += table.compact(day).unwrap().len();
                        busy += c.elapsed();
                    }
                    today = now;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            (busy, passes)
        });
        let mut writing = Duration::ZERO;
        for (b, at) in batches {
            let w = Instant::now();
            table.write(&b).unwrap();
            writing += w.elapsed();
            newest.fetch_max(at.timestamp_micros(), Ordering::AcqRel);
        }
        done.store(true, Ordering::Release);
        (
            writing,
            persist_pass.join().unwrap(),
            compaction_pass.join().unwrap(),
        )
    });
    let p = Instant::now();
    table.persist().unwrap();
    let persisting = persisting + p.elapsed();
    note_rss(&format!("after {} writes and persists", table.spec().name));
    let c = Instant::now();
    let compactions = compactions + table.compact(PartitionDate::of(end)).unwrap().len();
    let compacting = compacting + c.elapsed();
    note_rss(&format!(
        "after {} compaction and rollups",
        table.spec().name
    ));
    eprintln!(
        "{} ingest: {:.2?} in all; busy: writes (dedup + WAL fsync + head, inline persists) {:.2?}, persist pass {:.2?}, compaction pass ({} partitions, rollups) {:.2?}",
        table.spec().name,
        t.elapsed(),
        writing,
        persisting,
        compactions,
        compacting,
    );
    t.elapsed()
}

/// Process ingest alone: the SQLite design's (when `sqlite`) and ours.
fn run_process_ingest(
    s: &Scale,
    dir: &Path,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    sqlite: bool,
) {
    let rows = s.process_rows();
    let rate = |d: Duration| rows / d.as_secs_f64().max(1e-9);
    let theirs = sqlite.then(|| {
        let mut c = Connection::open(dir.join("backend.db")).unwrap();
        c.execute_batch(SQLITE_SCHEMA).unwrap();
        let d = sqlite_insert_process(&mut c, s, start);
        eprintln!("SQLite design: process_perf {:.0} rows/s", rate(d));
        d
    });
    let config = TimeSeriesConfig {
        process_perf_retention_days: (s.days - 1) as u32,
        ..TimeSeriesConfig::default()
    };
    let process = TimeSeriesTable::open(&PROCESS_PERF, &dir.join("ours"), config).unwrap();
    let ours = ingest_ours(&process, &mut process_writes(s, start), end);
    eprintln!("ours: process_perf {:.0} rows/s", rate(ours));
    if let Some(d) = theirs {
        eprintln!("ratio {:.1}×", d.as_secs_f64() / ours.as_secs_f64());
    }
}

fn run_ours(s: &Scale, dir: &Path, start: DateTime<Utc>, end: DateTime<Utc>) -> Timings {
    reset_peak_rss();
    note_rss("at the start of ours");
    // Retention one day shorter than the data: the oldest day is the one
    // the retention row drops.
    let config = TimeSeriesConfig {
        host_perf_retention_days: (s.days - 1) as u32,
        process_perf_retention_days: (s.days - 1) as u32,
        ..TimeSeriesConfig::default()
    };
    let host = Arc::new(TimeSeriesTable::open(&HOST_PERF, dir, config.clone()).unwrap());
    let process = Arc::new(TimeSeriesTable::open(&PROCESS_PERF, dir, config).unwrap());
    let store = RelationalStore::open(dir).unwrap();
    let beats: Vec<HeartbeatUpdate> = (0..s.pcs)
        .map(|i| HeartbeatUpdate {
            pc_id: pc_name(i),
            at: end,
            hostname: Some(format!("host-{i}")),
            os_family: None,
            agent_version: "0.43.56".into(),
            agent_cpu_pct: None,
            agent_rss_bytes: None,
            agent_disk_read_bytes: None,
            agent_disk_written_bytes: None,
            quarantined_versions: vec![],
            reported: Default::default(),
        })
        .collect();
    store.upsert_heartbeats(&beats, end).unwrap();

    let ingest_host = ingest_ours(&host, &mut host_writes(s, start), end);
    let ingest_process = ingest_ours(&process, &mut process_writes(s, start), end);
    store.apply_finished(&results(s, end), end, None).unwrap();
    let bytes_host = dir_bytes(&dir.join("host_perf"));
    let bytes_process = dir_bytes(&dir.join("process_perf"));
    for table in [
        "host_perf",
        "process_perf",
        "host_perf_5m",
        "host_perf_1h",
        "host_perf_fleet_1m",
        "process_perf_5m",
        "process_perf_1h",
    ] {
        eprintln!(
            "{table}: {:.1} MB",
            dir_bytes(&dir.join(table)) as f64 / 1e6
        );
    }

    let q = PerfQueries::new(Arc::clone(&host), Arc::clone(&process), store).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let pc = pc_name(s.pcs / 2);
    let ppc = pc_name(s.process_pcs / 2);
    let h = |d: i64| end - chrono::Duration::hours(d);
    let host_tl = |hours: i64, step: i64| {
        let points = rt
            .block_on(q.host_timeline(&pc, h(hours), end, step))
            .unwrap();
        Answer::of(points.iter().map(|p| p.get("cpu_pct")))
    };
    let (host_1h, a_host_1h) = time(|| host_tl(1, 300));
    let (host_7d, a_host_7d) = time(|| host_tl(24 * s.days, 3600));
    // Fleet avg cpu @ 5 m over [from, to): from the in-memory windows
    // where they hold it, or (`stored`) from files and rollups alone.
    let fleet = |stored: bool, from: DateTime<Utc>, to: DateTime<Utc>| {
        let (m, agg) = (HostMetric::CpuPct, Aggregate::Avg);
        let points = if stored {
            rt.block_on(q.fleet_series_stored(m, agg, from, to, 300))
        } else {
            rt.block_on(q.fleet_series(m, agg, from, to, 300))
        };
        Answer::of(points.unwrap().iter().map(|p| p.value))
    };
    let (fleet_24h, a_fleet_24h) = time(|| fleet(false, h(24), end));
    let (fleet_24h_stored, a_fleet_stored) = time(|| fleet(true, h(24), end));
    assert!(
        a_fleet_stored.same(&a_fleet_24h),
        "fleet 24 h: from memory {a_fleet_24h:?}, from files {a_fleet_stored:?}"
    );
    // The stored path's cost depends on the wall clock: off the 5-minute
    // grid the range's first partial window is read raw from yesterday's
    // file, sorted by PC (every page of it). The same day on the grid:
    let grid_end = end.duration_trunc(chrono::Duration::minutes(5)).unwrap();
    let grid = (grid_end - chrono::Duration::hours(24), grid_end);
    let (fleet_24h_stored_grid, a_fleet_grid) = time(|| fleet(true, grid.0, grid.1));
    let a_fleet_grid_memory = fleet(false, grid.0, grid.1);
    assert_eq!(
        a_fleet_grid.rows, 288,
        "fleet 24 h on the grid: one point per 5 minutes"
    );
    assert!(
        a_fleet_grid.same(&a_fleet_grid_memory),
        "fleet 24 h on the grid: from memory {a_fleet_grid_memory:?}, from files {a_fleet_grid:?}"
    );
    // The dashboard's range ends at "now", mid-minute: its first partial
    // minute is read from a day file sorted by PC.
    let odd = chrono::Duration::seconds(17);
    let (fleet_24h_odd, _) = time(|| {
        rt.block_on(q.fleet_series(
            HostMetric::CpuPct,
            Aggregate::Avg,
            h(24) - odd,
            end - odd,
            300,
        ))
        .unwrap()
        .len()
    });
    let (top5, a_top5) = time(|| {
        let rows = rt
            .block_on(q.top_pcs(
                HostMetric::CpuPct,
                end - chrono::Duration::minutes(5),
                end,
                5,
            ))
            .unwrap();
        Answer::of(rows.iter().map(|r| Some(r.value)))
    });
    let (latest_tick, a_latest_tick) = time(|| {
        let tick = rt.block_on(q.latest_tick(&ppc)).unwrap();
        Answer::of(tick.processes.iter().map(|p| Some(p.cpu_pct)))
    });
    let tl = |hours: i64, step: i64| {
        let t = rt
            .block_on(q.process_timeline(&ppc, ProcessMetric::CpuPct, h(hours), end, step, 5))
            .unwrap();
        Answer::of(
            t.points
                .iter()
                .flat_map(|p| p.values.values().map(|v| Some(*v))),
        )
    };
    let (proc_1h, a_proc_1h) = time(|| tl(1, 60));
    let (proc_24h, a_proc_24h) = time(|| tl(24, 300));
    let (proc_7d, a_proc_7d) = time(|| tl(24 * s.days, 3600));
    let (scan, a_scan) = time(|| {
        let stats = rt.block_on(q.scan_durations(h(24))).unwrap();
        Answer::of(stats.iter().map(|s| Some(s.count as f64)))
    });
    // For profiling one question: `BENCH_QUERY_LOOP=n` repeats it n times
    // here (perf record around it); `BENCH_QUERY` picks it: host-1h (the
    // default), host-7d, process-24h or fleet-stored.
    if let Some(n) = std::env::var("BENCH_QUERY_LOOP")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
    {
        let which = std::env::var("BENCH_QUERY").unwrap_or_else(|_| "host-1h".into());
        match which.as_str() {
            "host-7d" => {
                let (_, read) = q
                    .host_timeline_read(&pc, h(24 * s.days), end, 3600)
                    .unwrap();
                eprintln!("host-7d reads {read:?}");
            }
            "process-24h" => {
                let (_, read) = q
                    .process_timeline_read(&ppc, ProcessMetric::CpuPct, h(24), end, 300, 5)
                    .unwrap();
                eprintln!("process-24h reads {read:?}");
            }
            _ => {}
        }
        eprintln!("looping {which} {n} times");
        let t = Instant::now();
        for _ in 0..n {
            match which.as_str() {
                "host-1h" => drop(host_tl(1, 300)),
                "host-7d" => drop(host_tl(24 * s.days, 3600)),
                "process-24h" => drop(tl(24, 300)),
                "fleet-stored" => drop(
                    rt.block_on(q.fleet_series_stored(
                        HostMetric::CpuPct,
                        Aggregate::Avg,
                        h(24),
                        end,
                        300,
                    ))
                    .unwrap(),
                ),
                other => panic!(
                    "BENCH_QUERY={other}: expected host-1h, host-7d, process-24h or fleet-stored"
                ),
            }
        }
        eprintln!(
            "{n} × {which}: {:.3} ms each",
            t.elapsed().as_secs_f64() * 1e3 / f64::from(n)
        );
    }

    note_rss("after ours' queries");
    // DuckDB reads files only: persist the head first (after our own
    // queries were timed, so they still ran against head + files).
    host.persist().unwrap();
    process.persist().unwrap();
    let duck = duckdb_side(dir, &pc, &ppc, end, s.days, "main");

    let before = dir_bytes(dir);
    let t = Instant::now();
    let today = PartitionDate::of(end);
    host.drop_expired(today).unwrap();
    process.drop_expired(today).unwrap();
    let retention = t.elapsed();
    let freed = before.saturating_sub(dir_bytes(dir));
    Timings {
        answers: [
            a_host_1h,
            a_host_7d,
            a_fleet_24h,
            a_top5,
            a_latest_tick,
            a_proc_1h,
            a_proc_24h,
            a_proc_7d,
            a_scan,
        ],
        ingest_host,
        ingest_process,
        host_1h,
        host_7d,
        fleet_24h,
        fleet_24h_stored,
        fleet_24h_stored_grid,
        fleet_24h_odd,
        top5,
        latest_tick,
        proc_1h,
        proc_24h,
        proc_7d,
        scan,
        retention,
        bytes_host,
        bytes_process,
        freed,
        peak_rss: peak_rss_mib(),
        duck,
    }
}

/// The inventory section: its own table.
fn run_inventory(scale: &Scale, dir: &Path) {
    let inv = if scale.name == "full" {
        &inventory::FULL
    } else {
        &inventory::QUICK
    };
    eprintln!("inventory: {} PCs × {} apps", inv.pcs, inv.apps);
    let mut r = Report { rows: vec![] };
    inventory::run(inv, dir, &mut r);
    r.print_titled(&format!(
        "{} scale: inventory of {} PCs × {} apps",
        scale.name, inv.pcs, inv.apps
    ));
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let scale = match args
        .iter()
        .position(|a| a == "--scale")
        .and_then(|i| args.get(i + 1))
    {
        Some(s) if s == "full" => &FULL,
        _ => &QUICK,
    };
    let work = match args
        .iter()
        .position(|a| a == "--dir")
        .and_then(|i| args.get(i + 1))
    {
        Some(d) => tempfile::tempdir_in(d).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    // `BENCH_KEEP=1` leaves both stores on disk (e.g. to point a backend
    // at `<dir>/ours` and time the dashboard on a full-scale fleet).
    let keep = std::env::var("BENCH_KEEP").is_ok_and(|v| v == "1");
    let end = Utc::now()
        .duration_trunc(chrono::Duration::minutes(1))
        .unwrap();
    let start = end - chrono::Duration::days(scale.days);
    // `--only inventory` skips the perf tables (the inventory rows alone);
    // `--only capture` runs perf ingest through the broker alone;
    // `--only process-ingest` loads process_perf alone into both designs,
    // `--only process-ingest-ours` into ours alone (e.g. under `perf`);
    // `--only ours` runs our side of the main table alone (its memory).
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(String::as_str);
    match only {
        Some("inventory") => return run_inventory(scale, work.path()),
        Some("sql") => return sql::failures(scale, work.path(), end),
        Some("month") => return month::run(scale, work.path(), end),
        Some("capture") => return capture::run(scale.pcs * 150, scale.pcs, work.path()),
        Some("process-ingest") => return run_process_ingest(scale, work.path(), start, end, true),
        Some("process-ingest-ours") => {
            return run_process_ingest(scale, work.path(), start, end, false)
        }
        Some("ours") => {
            let t = run_ours(scale, work.path(), start, end);
            eprintln!(
                "ours alone: peak RSS {:?} MiB; host 1 h {:.2?}, 7 d {:.2?}; fleet 24 h stored {:.2?} (on the 5-minute grid {:.2?}); process 1 h {:.2?}, 24 h {:.2?}, 7 d {:.2?}",
                t.peak_rss, t.host_1h, t.host_7d, t.fleet_24h_stored, t.fleet_24h_stored_grid, t.proc_1h, t.proc_24h, t.proc_7d
            );
            if keep {
                eprintln!("kept: {}", work.keep().display());
            }
            return;
        }
        Some(other) => panic!(
            "--only {other}: expected inventory, sql, month, capture, process-ingest, process-ingest-ours or ours"
        ),
        None => {}
    }
    let (host_rows, process_rows) = (scale.host_rows(), scale.process_rows());
    eprintln!(
        "{} scale: {host_rows} host rows, {process_rows} process rows; SQLite design first",
        scale.name
    );
    std::fs::create_dir_all(work.path().join("sqlite")).unwrap();
    std::fs::create_dir_all(work.path().join("ours")).unwrap();
    let a = run_sqlite(scale, &work.path().join("sqlite"), start, end);
    eprintln!("SQLite done; ours");
    let b = run_ours(scale, &work.path().join("ours"), start, end);
    // Both designs must answer the same before their times mean anything.
    for ((name, x), y) in ANSWERED.iter().zip(&a.answers).zip(&b.answers) {
        assert!(x.rows > 0, "{name}: the SQLite design answered no rows");
        assert!(x.same(y), "{name}: SQLite {x:?}, ours {y:?}");
    }
    eprintln!("both designs gave the same {} answers", a.answers.len());
    if let Some(duck) = &b.duck {
        let mut checked = 0;
        for (name, ours) in ANSWERED.iter().zip(&b.answers) {
            if let Some((_, d)) = duck.answers.get(*name) {
                assert!(d.same(ours), "{name}: DuckDB {d:?}, ours {ours:?}");
                checked += 1;
            }
        }
        assert_eq!(
            checked,
            ANSWERED.len() - 1,
            "every question but scan durations"
        );
        eprintln!("DuckDB on our files gave the same {checked} answers");
    }
    let duck_time = |name: &str| {
        b.duck
            .as_ref()
            .and_then(|d| d.answers.get(name))
            .map(|(t, _)| *t)
    };

    let mut r = Report { rows: vec![] };
    let rate = |rows: f64, d: Duration| rows / d.as_secs_f64().max(1e-9);
    let (sa, sb) = (
        rate(host_rows, a.ingest_host),
        rate(host_rows, b.ingest_host),
    );
    r.line(
        "ingest host_perf (rows/s)",
        format!("{sa:.0}"),
        format!("{sb:.0}"),
        format!("{:.1}×", sb / sa),
    );
    let (pa, pb) = (
        rate(process_rows, a.ingest_process),
        rate(process_rows, b.ingest_process),
    );
    r.line(
        "ingest process_perf (rows/s)",
        format!("{pa:.0}"),
        format!("{pb:.0}"),
        format!("{:.1}×", pb / pa),
    );
    let per_row = |bytes: u64, rows: f64| bytes as f64 / rows;
    let duck_bytes = |bytes: Option<u64>, rows: f64| {
        bytes.map_or(String::new(), |b| {
            format!("{:.1} MB ({:.1} B)", b as f64 / 1e6, per_row(b, rows))
        })
    };
    r.line3(
        "bytes on disk, host_perf (per row)",
        format!(
            "{:.1} MB ({:.1} B)",
            a.bytes_host as f64 / 1e6,
            per_row(a.bytes_host, host_rows)
        ),
        duck_bytes(b.duck.as_ref().map(|d| d.db_bytes_host), host_rows),
        format!(
            "{:.1} MB ({:.1} B)",
            b.bytes_host as f64 / 1e6,
            per_row(b.bytes_host, host_rows)
        ),
        format!("1/{:.1}", a.bytes_host as f64 / b.bytes_host.max(1) as f64),
    );
    r.line3(
        "bytes on disk, process_perf (per row)",
        format!(
            "{:.1} MB ({:.1} B)",
            a.bytes_process as f64 / 1e6,
            per_row(a.bytes_process, process_rows)
        ),
        duck_bytes(b.duck.as_ref().map(|d| d.db_bytes_process), process_rows),
        format!(
            "{:.1} MB ({:.1} B)",
            b.bytes_process as f64 / 1e6,
            per_row(b.bytes_process, process_rows)
        ),
        format!(
            "1/{:.1}",
            a.bytes_process as f64 / b.bytes_process.max(1) as f64
        ),
    );
    let rows: [(String, &str, Duration, Duration); 8] = [
        (
            "host timeline 1 h @ 5 m, one PC".into(),
            "host timeline 1 h",
            a.host_1h,
            b.host_1h,
        ),
        (
            format!("host timeline {} d @ 1 h, one PC", scale.days),
            "host timeline N d",
            a.host_7d,
            b.host_7d,
        ),
        (
            "fleet avg cpu 24 h @ 5 m".into(),
            "fleet 24 h",
            a.fleet_24h,
            b.fleet_24h,
        ),
        ("top-5 PCs, last 5 min".into(), "top-5", a.top5, b.top5),
        (
            "latest process tick".into(),
            "latest tick",
            a.latest_tick,
            b.latest_tick,
        ),
        (
            "process timeline 1 h @ 1 m".into(),
            "process timeline 1 h",
            a.proc_1h,
            b.proc_1h,
        ),
        (
            "process timeline 24 h @ 5 m".into(),
            "process timeline 24 h",
            a.proc_24h,
            b.proc_24h,
        ),
        (
            format!("process timeline {} d @ 1 h", scale.days),
            "process timeline N d",
            a.proc_7d,
            b.proc_7d,
        ),
    ];
    for (label, name, sqlite, ours) in rows {
        r.time3(&label, sqlite, duck_time(name), ours);
        if name == "fleet 24 h" {
            r.time3(
                "  the same without the in-memory windows (files and rollups)",
                sqlite,
                duck_time(name),
                b.fleet_24h_stored,
            );
            r.line(
                "  the same from files and rollups, on the 5-minute grid (ours only)",
                String::new(),
                ms(b.fleet_24h_stored_grid),
                String::new(),
            );
            r.line(
                "  the same from and to 17 s off the minute (ours only)",
                String::new(),
                ms(b.fleet_24h_odd),
                String::new(),
            );
        }
    }
    r.time("scan durations, 24 h", a.scan, b.scan);
    r.time(
        "retention of the oldest day (both tables)",
        a.retention,
        b.retention,
    );
    r.line(
        "bytes freed by that retention",
        format!("{:.1} MB", a.freed as f64 / 1e6),
        format!("{:.1} MB", b.freed as f64 / 1e6),
        String::new(),
    );
    let mib = |m: Option<f64>| m.map_or("n/a".into(), |m| format!("{m:.0} MiB"));
    r.line(
        "peak RSS (load + queries)",
        mib(a.peak_rss),
        mib(b.peak_rss),
        String::new(),
    );
    r.print(scale);

    month::run(scale, work.path(), end);
    run_inventory(scale, work.path());
    sql::failures(scale, work.path(), end);
    capture::run(scale.pcs * 150, scale.pcs, work.path());
    if keep {
        eprintln!("kept: {}", work.keep().display());
    }
}
