//! The 30-day section: a smaller fleet over 30 days of host samples, to
//! time the long-range questions (a month of one PC hourly, the fleet in
//! 2-hour buckets) that our rollups answer.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use kanade_queries::{Aggregate, HostMetric, PerfQueries};
use kanade_storage::{RelationalStore, TimeSeriesConfig, TimeSeriesTable, HOST_PERF, PROCESS_PERF};
use rusqlite::Connection;

use super::{
    duckdb_side, ingest_ours, pc_name, peak_rss_mib, reset_peak_rss, sqlite_insert_host, time, ts,
    Answer, Report, Scale, SQLITE_SCHEMA,
};

const DAYS: i64 = 30;

/// Names of the two questions, as the DuckDB side knows them.
const FLEET: &str = "fleet 30 d";
const HOST: &str = "host timeline 30 d";

pub fn run(scale: &Scale, dir: &Path, end: DateTime<Utc>) {
    let s = Scale {
        name: scale.name,
        pcs: scale.month_pcs,
        days: DAYS,
        process_pcs: 0,
        processes: 0,
        results: 0,
        month_pcs: scale.month_pcs,
    };
    let start = end - chrono::Duration::days(DAYS);
    let rows = s.host_rows();
    let pc = pc_name(s.pcs / 2);
    let from = start;
    eprintln!(
        "30-day fleet: {} PCs, {rows} host rows; SQLite design first",
        s.pcs
    );

    // The SQLite design: the reference's table and index, its queries.
    let sqlite_dir = dir.join("month-sqlite");
    std::fs::create_dir_all(&sqlite_dir).unwrap();
    let mut c = Connection::open(sqlite_dir.join("backend.db")).unwrap();
    c.execute_batch(SQLITE_SCHEMA).unwrap();
    let sqlite_ingest = sqlite_insert_host(&mut c, &s, start);
    let answer = |c: &Connection, sql: &str, p: &[&dyn rusqlite::ToSql]| {
        let mut st = c.prepare_cached(sql).unwrap();
        let mut rows = st.query(p).unwrap();
        let mut values = Vec::new();
        while let Some(row) = rows.next().unwrap() {
            values.push(row.get::<_, Option<f64>>(1).unwrap());
        }
        Answer::of(values)
    };
    let fleet_sql = "SELECT (CAST(strftime('%s', at) AS INTEGER) / ?1) * ?1 AS b, AVG(cpu_pct) FROM host_perf_samples WHERE at >= ?2 AND at < ?3 GROUP BY b ORDER BY b";
    let host_sql = "SELECT (CAST(strftime('%s', at) AS INTEGER) / ?1) * ?1 AS b, AVG(cpu_pct), AVG(mem_used_bytes), AVG(mem_total_bytes), AVG(swap_used_bytes), AVG(swap_total_bytes), AVG(disk_read_bytes_per_sec), AVG(disk_written_bytes_per_sec), AVG(net_rx_bytes_per_sec), AVG(net_tx_bytes_per_sec) FROM host_perf_samples WHERE pc_id = ?2 AND at >= ?3 AND at < ?4 GROUP BY b ORDER BY b";
    let (sqlite_fleet, a_fleet) = time(|| answer(&c, fleet_sql, &[&7_200, &ts(from), &ts(end)]));
    let (sqlite_host, a_host) = time(|| answer(&c, host_sql, &[&3_600, &pc, &ts(from), &ts(end)]));
    // An operator's SQL (POST /api/query): the fleet's CPU p95 per hour.
    let p95 = super::sql::p95_sql(&ts(from));
    let (sqlite_p95, theirs_p95) = time(|| super::sql::sqlite_rows(&c, &p95));
    drop(c);

    // Ours: ingest, persist, the close-of-day compaction (which rolls up
    // every closed day), then the same questions.
    eprintln!("SQLite done; ours");
    reset_peak_rss();
    let ours_dir = dir.join("month-ours");
    std::fs::create_dir_all(&ours_dir).unwrap();
    let config = TimeSeriesConfig {
        host_perf_retention_days: DAYS as u32 + 1,
        ..TimeSeriesConfig::default()
    };
    let host = Arc::new(TimeSeriesTable::open(&HOST_PERF, &ours_dir, config.clone()).unwrap());
    let process =
        Arc::new(TimeSeriesTable::open(&PROCESS_PERF, &ours_dir, config.clone()).unwrap());
    let ours_ingest = ingest_ours(&host, &mut super::host_writes(&s, start), end);
    let store = RelationalStore::open(&ours_dir).unwrap();
    let q = PerfQueries::new(Arc::clone(&host), process, store).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let fleet = |rolled: bool| {
        let points = if rolled {
            rt.block_on(q.fleet_series(HostMetric::CpuPct, Aggregate::Avg, from, end, 7_200))
        } else {
            rt.block_on(q.fleet_series_sql(HostMetric::CpuPct, Aggregate::Avg, from, end, 7_200))
        };
        Answer::of(points.unwrap().iter().map(|p| p.value))
    };
    let host_tl = |rolled: bool| {
        let points = if rolled {
            rt.block_on(q.host_timeline(&pc, from, end, 3_600))
        } else {
            rt.block_on(q.host_timeline_sql(&pc, from, end, 3_600))
        };
        Answer::of(points.unwrap().iter().map(|p| p.get("cpu_pct")))
    };
    let (ours_fleet, b_fleet) = time(|| fleet(true));
    let (ours_host, b_host) = time(|| host_tl(true));
    let (raw_fleet, c_fleet) = time(|| fleet(false));
    let (raw_host, c_host) = time(|| host_tl(false));
    let peak = peak_rss_mib();
    // Its window sorts every sample of the month: past the default
    // 256 MiB a query is refused (413), so this one runs with 1 GiB, as
    // an operator would set `query_memory_mib` for it.
    let refused = rt
        .block_on(q.sql(
            &p95,
            kanade_queries::SqlLimits {
                rows: 100_000,
                memory_bytes: super::sql::MEMORY,
            },
            kanade_queries::SqlExtras::default(),
        ))
        .is_err();
    let (ours_p95, mine_p95) = time(|| {
        super::sql::our_rows_within(
            &rt,
            &q,
            &p95,
            &kanade_queries::SqlExtras::default(),
            1 << 30,
        )
    });
    assert!(!theirs_p95.is_empty(), "p95: SQLite answered no rows");
    assert_eq!(mine_p95, theirs_p95, "p95: both must answer the same rows");
    let (_, read) = q.host_timeline_read(&pc, from, end, 3_600).unwrap();
    eprintln!("30-day host timeline read {read:?}");

    host.persist().unwrap();
    let duck = duckdb_side(&ours_dir, &pc, &pc, end, DAYS, "month");

    for (name, sqlite, ours, raw) in [
        (FLEET, a_fleet, b_fleet, c_fleet),
        (HOST, a_host, b_host, c_host),
    ] {
        assert!(
            sqlite.rows > 0,
            "{name}: the SQLite design answered no rows"
        );
        assert!(
            sqlite.same(&ours),
            "{name}: SQLite {sqlite:?}, ours {ours:?}"
        );
        assert!(
            raw.same(&ours),
            "{name}: raw rows {raw:?}, rollups {ours:?}"
        );
        if let Some(d) = &duck {
            let (_, answer) = &d.answers[name];
            assert!(
                answer.same(&ours),
                "{name}: DuckDB {answer:?}, ours {ours:?}"
            );
        }
    }
    eprintln!("30-day fleet: every side gave the same 2 answers");

    // A restart: opening the table refills the fleet windows from the
    // files of their 8 days; the fleet chart is then answered from memory.
    drop(q);
    let host = Arc::try_unwrap(host).expect("the queries are gone");
    drop(host);
    let t = Instant::now();
    let host = Arc::new(TimeSeriesTable::open(&HOST_PERF, &ours_dir, config).unwrap());
    let reopen = t.elapsed();
    let process = Arc::new(
        TimeSeriesTable::open(&PROCESS_PERF, &ours_dir, TimeSeriesConfig::default()).unwrap(),
    );
    let q = PerfQueries::new(
        Arc::clone(&host),
        process,
        RelationalStore::open(&ours_dir).unwrap(),
    )
    .unwrap();
    let day = end - chrono::Duration::days(1);
    let (after_restart, a_restart) = time(|| {
        let points = rt
            .block_on(q.fleet_series(HostMetric::CpuPct, Aggregate::Avg, day, end, 300))
            .unwrap();
        Answer::of(points.iter().map(|p| p.value))
    });
    let stored = rt
        .block_on(q.fleet_series_stored(HostMetric::CpuPct, Aggregate::Avg, day, end, 300))
        .unwrap();
    assert!(a_restart.same(&Answer::of(stored.iter().map(|p| p.value))));
    assert!(
        q.fleet_answers_from_memory() > 0,
        "the refilled windows answered"
    );

    let duck_time = |name: &str| duck.as_ref().map(|d| d.answers[name].0);
    let mut r = Report { rows: vec![] };
    let rate = |d: Duration| format!("{:.0}", rows / d.as_secs_f64().max(1e-9));
    r.line(
        "ingest + compaction + rollups (rows/s)",
        rate(sqlite_ingest),
        rate(ours_ingest),
        format!(
            "{:.1}×",
            sqlite_ingest.as_secs_f64() / ours_ingest.as_secs_f64()
        ),
    );
    r.time3(
        "fleet avg cpu 30 d @ 2 h",
        sqlite_fleet,
        duck_time(FLEET),
        ours_fleet,
    );
    r.time3(
        "host timeline 30 d @ 1 h, one PC",
        sqlite_host,
        duck_time(HOST),
        ours_host,
    );
    r.time(
        &format!(
            "POST /api/query: fleet CPU p95 per hour, 30 d ({} rows; ours with 1 GiB{})",
            theirs_p95.len(),
            if refused {
                ", refused (413) within the default 256 MiB"
            } else {
                ", within the default 256 MiB too"
            }
        ),
        sqlite_p95,
        ours_p95,
    );
    r.line(
        "  ours from raw rows only (DataFusion SQL), fleet / one PC",
        String::new(),
        format!("{} / {}", super::ms(raw_fleet), super::ms(raw_host)),
        String::new(),
    );
    r.line(
        "  open after a restart (fleet windows refilled from 8 days), then fleet 24 h",
        String::new(),
        format!("{} + {}", super::ms(reopen), super::ms(after_restart)),
        String::new(),
    );
    r.line(
        "peak RSS of ours (load + compaction + rollups + queries)",
        String::new(),
        peak.map_or("n/a".into(), |m| format!("{m:.0} MiB")),
        String::new(),
    );
    r.print_titled(&format!(
        "{} scale: a 30-day fleet, {} PCs × {DAYS} d host @60 s",
        scale.name, s.pcs
    ));
}
