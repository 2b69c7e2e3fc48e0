//! `POST /api/query` against SQLite as the oracle: a database in the
//! reference schema is filled with seeded rows, imported with
//! `import-sqlite`, and 200 generated SELECTs (projections, filters,
//! `LIKE`, SQLite's functions, aggregates, joins, subqueries, CTEs,
//! `ORDER BY` with NULLs, `LIMIT`) must give the same rows from our
//! backend as from SQLite reading the source file.
//!
//! Values are compared as SQLite would show them: numbers by value, a
//! timestamp by the instant it names (SQLite hands back the stored text,
//! we give RFC 3339). The generator only writes SQL whose answer is
//! determined (an `ORDER BY` that decides the order, else the rows are
//! compared as a multiset).

use std::path::Path;

use chrono::{DateTime, Duration, NaiveDateTime, TimeZone, Utc};
use reqwest::Method;
use rusqlite::{params, Connection};
use serde_json::{json, Value};

use crate::common::{Backend, Nats, TOKEN};

/// A small deterministic generator (xorshift64*), so a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

const PCS: usize = 24;
const HOSTS: [&str; 5] = ["alpha", "Beta", "gamma-01", "DELTA", "epsilon"];
const OSES: [&str; 3] = ["windows", "linux", "macos"];
const VERSIONS: [&str; 4] = ["0.43.56", "0.101.0", "0.100.2", "0.99.1"];
const JOBS: [&str; 4] = ["inventory", "patch-Tuesday", "cleanup", "audit_disk"];
const ACTORS: [&str; 4] = ["admin", "ann", "Bob", "carol"];
const ACTIONS: [&str; 5] = [
    "exec.create",
    "job.update",
    "account.create",
    "schedule.delete",
    "agent_delete",
];
const KINDS: [&str; 3] = ["logon", "crash", "usb"];
const SOURCES: [&str; 3] = ["Security", "Application", "System"];
const CHECKS: [&str; 3] = ["disk", "av", "firewall"];
const STATUSES: [&str; 3] = ["ok", "fail", "unknown"];

fn pc(i: usize) -> String {
    format!("PC-{i:02}")
}

/// A time in SQLite's own text form (UTC, whole seconds), so text order
/// is time order on both sides.
fn stamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

fn base() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 20, 0, 0, 0).unwrap()
}

fn build(path: &Path, rng: &mut Rng) {
    let c = Connection::open(path).unwrap();
    c.execute_batch(crate::import_sqlite::SCHEMA).unwrap();
    c.execute_batch(
        "CREATE TABLE check_status (pc_id TEXT NOT NULL, check_name TEXT NOT NULL,
           status TEXT NOT NULL, detail TEXT, recorded_at TIMESTAMP NOT NULL, label TEXT,
           PRIMARY KEY (pc_id, check_name));",
    )
    .unwrap();
    let t = |rng: &mut Rng| stamp(base() + Duration::minutes(rng.below(14 * 24 * 60) as i64));
    for i in 0..PCS {
        let host = rng.chance(85).then(|| format!("{}-{i}", rng.pick(&HOSTS)));
        let os = rng.chance(90).then(|| *rng.pick(&OSES));
        let version = rng.chance(90).then(|| *rng.pick(&VERSIONS));
        let cpu = rng.chance(70).then(|| (rng.below(4000) as f64) / 100.0);
        let rss = rng.chance(70).then(|| (rng.below(500) * 1_000_000) as i64);
        let hb = t(rng);
        c.execute(
            "INSERT INTO agents (pc_id, hostname, last_heartbeat, agent_version, os_family, updated_at, agent_cpu_pct, agent_rss_bytes) VALUES (?1, ?2, ?3, ?4, ?5, ?3, ?6, ?7)",
            params![pc(i), host, hb, version, os, cpu, rss],
        )
        .unwrap();
    }
    for e in 0..12 {
        let job = rng.pick(&JOBS);
        let targets = 1 + rng.below(6);
        let ok = rng.below(targets + 1);
        c.execute(
            "INSERT INTO executions (exec_id, job_id, version, initiated_by, initiated_at, target_count, success_count, failure_count, status) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                format!("ex-{e:02}"),
                job,
                (1 + rng.below(5)).to_string(),
                rng.pick(&ACTORS),
                t(rng),
                targets as i64,
                ok as i64,
                (targets - ok) as i64,
                // Not `pending`: housekeeping expires old pending runs.
                *rng.pick(&["completed", "running", "failed"]),
            ],
        )
        .unwrap();
    }
    for r in 0..300 {
        let started = base() + Duration::minutes(rng.below(14 * 24 * 60) as i64);
        let finished = rng
            .chance(85)
            .then(|| stamp(started + Duration::seconds(rng.below(600) as i64)));
        let code: Option<i64> = finished
            .as_ref()
            .map(|_| *rng.pick(&[0, 0, 0, 1, 2, -1, 127]));
        c.execute(
            "INSERT INTO execution_results (result_id, request_id, exec_id, pc_id, exit_code, stdout, stderr, started_at, finished_at, recorded_at, job_id, version) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?8, ?10, ?11)",
            params![
                format!("r-{r:03}"),
                format!("req-{}", r % 40),
                rng.chance(90).then(|| format!("ex-{:02}", rng.below(12))),
                pc(rng.below(PCS)),
                code,
                *rng.pick(&["", "OK", "done: 3 files", "Error: Access denied", "ok"]),
                *rng.pick(&["", "", "warn", "WARNING: disk"]),
                stamp(started),
                finished,
                rng.pick(&JOBS),
                (1 + rng.below(5)).to_string(),
            ],
        )
        .unwrap();
    }
    for a in 0..120 {
        c.execute(
            "INSERT INTO audit_log (actor, action, target, payload, occurred_at, stream_seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                rng.pick(&ACTORS),
                rng.pick(&ACTIONS),
                rng.chance(80).then(|| pc(rng.below(PCS))),
                rng.chance(50).then(|| format!("{{\"n\":{a}}}")),
                t(rng),
                a as i64 + 1,
            ],
        )
        .unwrap();
    }
    for o in 0..200 {
        c.execute(
            "INSERT INTO obs_events (pc_id, at, kind, source, event_record_id, payload) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                pc(rng.below(PCS)),
                t(rng),
                rng.pick(&KINDS),
                rng.pick(&SOURCES),
                format!("{o}"),
                rng.chance(60).then(|| format!("{{\"user\":\"u{}\"}}", o % 7)),
            ],
        )
        .unwrap();
    }
    for i in 0..PCS {
        for check in CHECKS {
            if rng.chance(70) {
                c.execute(
                    "INSERT INTO check_status (pc_id, check_name, status, detail, recorded_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![
                        pc(i),
                        check,
                        rng.pick(&STATUSES),
                        rng.chance(50).then(|| format!("{check} at {}%", rng.below(100))),
                        t(rng),
                    ],
                )
                .unwrap();
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Ty {
    Text,
    Int,
    Real,
    Time,
}

struct Table {
    name: &'static str,
    /// A column set that identifies a row (for a total order).
    key: &'static str,
    columns: &'static [(&'static str, Ty)],
}

const TABLES: &[Table] = &[
    Table {
        name: "agents",
        key: "pc_id",
        columns: &[
            ("pc_id", Ty::Text),
            ("hostname", Ty::Text),
            ("os_family", Ty::Text),
            ("agent_version", Ty::Text),
            ("last_heartbeat", Ty::Time),
            ("agent_cpu_pct", Ty::Real),
            ("agent_rss_bytes", Ty::Int),
        ],
    },
    Table {
        name: "executions",
        key: "exec_id",
        columns: &[
            ("exec_id", Ty::Text),
            ("job_id", Ty::Text),
            ("version", Ty::Text),
            ("initiated_by", Ty::Text),
            ("initiated_at", Ty::Time),
            ("target_count", Ty::Int),
            ("success_count", Ty::Int),
            ("failure_count", Ty::Int),
            ("status", Ty::Text),
        ],
    },
    Table {
        name: "execution_results",
        key: "result_id",
        columns: &[
            ("result_id", Ty::Text),
            ("exec_id", Ty::Text),
            ("pc_id", Ty::Text),
            ("exit_code", Ty::Int),
            ("stdout", Ty::Text),
            ("stderr", Ty::Text),
            ("started_at", Ty::Time),
            ("finished_at", Ty::Time),
            ("job_id", Ty::Text),
            ("version", Ty::Text),
        ],
    },
    Table {
        name: "audit_log",
        key: "id",
        columns: &[
            ("id", Ty::Int),
            ("actor", Ty::Text),
            ("action", Ty::Text),
            ("target", Ty::Text),
            ("payload", Ty::Text),
            ("occurred_at", Ty::Time),
        ],
    },
    Table {
        name: "obs_events",
        key: "pc_id, source, event_record_id",
        columns: &[
            ("pc_id", Ty::Text),
            ("at", Ty::Time),
            ("kind", Ty::Text),
            ("source", Ty::Text),
            ("event_record_id", Ty::Text),
            ("payload", Ty::Text),
        ],
    },
    Table {
        name: "check_status",
        key: "pc_id, check_name",
        columns: &[
            ("pc_id", Ty::Text),
            ("check_name", Ty::Text),
            ("status", Ty::Text),
            ("detail", Ty::Text),
            ("recorded_at", Ty::Time),
        ],
    },
];

/// A value of `col` as it occurs in the source (so predicates hit).
fn sample(c: &Connection, table: &str, col: &str, rng: &mut Rng) -> Option<Value> {
    let mut stmt = c
        .prepare(&format!(
            "SELECT DISTINCT {col} FROM {table} WHERE {col} IS NOT NULL ORDER BY 1"
        ))
        .unwrap();
    let values: Vec<Value> = stmt
        .query_map([], |r| cell(r, 0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    (!values.is_empty()).then(|| rng.pick(&values).clone())
}

fn literal(v: &Value) -> String {
    match v {
        Value::String(s) => format!("'{}'", s.replace('\'', "''")),
        other => other.to_string(),
    }
}

/// A predicate over one column of `t` (aliased `a`).
fn predicate(c: &Connection, t: &Table, a: &str, rng: &mut Rng) -> String {
    let (col, ty) = *rng.pick(t.columns);
    let col_ref = format!("{a}.{col}");
    let value = sample(c, t.name, col, rng);
    let Some(v) = value else {
        return format!("{col_ref} IS NULL");
    };
    match (ty, rng.below(6)) {
        (_, 0) => format!("{col_ref} IS NOT NULL"),
        (Ty::Text, 1) => {
            // A LIKE with a case-shuffled fragment of a stored value.
            let s = v.as_str().unwrap_or_default();
            let frag: String = s.chars().take(3).collect();
            let frag = if rng.chance(50) {
                frag.to_uppercase()
            } else {
                frag.to_lowercase()
            };
            if rng.chance(50) {
                format!("{col_ref} LIKE '{}%'", frag.replace('\'', "''"))
            } else {
                format!("{col_ref} NOT LIKE '%{}%'", frag.replace('\'', "''"))
            }
        }
        (Ty::Time, _) => {
            let op = rng.pick(&["<", ">=", "="]);
            if rng.chance(50) {
                format!("{col_ref} {op} {}", literal(&v))
            } else {
                format!("julianday({col_ref}) {op} julianday({})", literal(&v))
            }
        }
        (_, 2) => {
            let other = sample(c, t.name, col, rng).unwrap_or(v.clone());
            format!("{col_ref} IN ({}, {})", literal(&v), literal(&other))
        }
        (Ty::Int | Ty::Real, 3) => format!("{col_ref} BETWEEN 0 AND {}", literal(&v)),
        (_, 4) => format!("NOT ({col_ref} = {})", literal(&v)),
        _ => {
            let op = rng.pick(&["=", "<>", "<", "<=", ">", ">="]);
            format!("{col_ref} {op} {}", literal(&v))
        }
    }
}

fn filter(c: &Connection, t: &Table, a: &str, rng: &mut Rng) -> String {
    match rng.below(4) {
        0 => String::new(),
        1 | 2 => format!(" WHERE {}", predicate(c, t, a, rng)),
        _ => {
            let join = rng.pick(&["AND", "OR"]);
            format!(
                " WHERE ({}) {join} ({})",
                predicate(c, t, a, rng),
                predicate(c, t, a, rng)
            )
        }
    }
}

/// An expression over one column: the column, or a SQLite function of it.
fn expression(t: &Table, a: &str, rng: &mut Rng) -> String {
    let (col, ty) = *rng.pick(t.columns);
    let c = format!("{a}.{col}");
    if rng.chance(50) {
        return c;
    }
    match ty {
        Ty::Text => rng
            .pick(&[
                format!("upper({c})"),
                format!("lower({c})"),
                format!("length({c})"),
                format!("ifnull({c}, '-')"),
                format!("coalesce({c}, 'none')"),
                format!("substr({c}, 2, 3)"),
                format!("instr({c}, 'a')"),
                format!("{c} || '!'"),
                format!("replace({c}, 'a', 'A')"),
                format!("trim({c})"),
                format!("CASE WHEN {c} LIKE '%a%' THEN 'has a' ELSE 'none' END"),
            ])
            .clone(),
        Ty::Int => rng
            .pick(&[
                format!("{c} + 1"),
                format!("{c} * 2"),
                format!("abs({c})"),
                format!("ifnull({c}, -9)"),
                format!("{c} > 0"),
                format!("{c} / 2"),
                format!("{c} % 3"),
            ])
            .clone(),
        Ty::Real => rng
            .pick(&[
                format!("round({c}, 1)"),
                format!("{c} * 2"),
                format!("ifnull({c}, 0)"),
                format!("{c} >= 10"),
            ])
            .clone(),
        Ty::Time => rng
            .pick(&[
                format!("datetime({c})"),
                format!("date({c})"),
                format!("strftime('%Y-%m', {c})"),
                format!("strftime('%H', {c})"),
                format!("julianday({c}) - julianday('2026-11-20')"),
                format!("datetime({c}, '+1 day')"),
                format!("date({c}, 'start of month')"),
            ])
            .clone(),
    }
}

/// One generated query and whether its row order is decided.
fn generate(c: &Connection, rng: &mut Rng) -> (String, bool) {
    let t = rng.pick(TABLES);
    let where_ = filter(c, t, "t", rng);
    match rng.below(6) {
        // Projection with a deciding order, maybe a limit.
        0 | 1 => {
            let n = 1 + rng.below(3);
            // Distinct expressions: a repeated unnamed column is refused
            // here (README, "SQL differences"), SQLite names it twice.
            let mut exprs: Vec<String> = Vec::new();
            for _ in 0..n {
                let e = expression(t, "t", rng);
                if !exprs.contains(&e) {
                    exprs.push(e);
                }
            }
            let dir = rng.pick(&["ASC", "DESC"]);
            let (ocol, _) = *rng.pick(t.columns);
            let keys: Vec<String> = t.key.split(", ").map(|k| format!("t.{k} {dir}")).collect();
            let limit = if rng.chance(40) {
                format!(" LIMIT {}", 1 + rng.below(20))
            } else {
                String::new()
            };
            (
                format!(
                    "SELECT {} FROM {} t{where_} ORDER BY t.{ocol} {dir}, {}{limit}",
                    exprs.join(", "),
                    t.name,
                    keys.join(", ")
                ),
                true,
            )
        }
        // Aggregate per group.
        2 | 3 => {
            let text_cols: Vec<&str> = t
                .columns
                .iter()
                .filter(|(_, ty)| *ty == Ty::Text)
                .map(|(n, _)| *n)
                .collect();
            let g = rng.pick(&text_cols);
            let (m, mty) = *rng.pick(t.columns);
            let mut aggs = vec!["count(*) AS n".to_string(), format!("count(t.{m}) AS c")];
            aggs.push(format!("min(t.{m}) AS lo"));
            aggs.push(format!("max(t.{m}) AS hi"));
            if matches!(mty, Ty::Int | Ty::Real) {
                aggs.push(format!("sum(t.{m}) AS s"));
                aggs.push(format!("avg(t.{m}) AS mean"));
            }
            if rng.chance(30) {
                aggs.push(format!("count(DISTINCT t.{m}) AS d"));
            }
            let having = if rng.chance(30) {
                format!(" HAVING count(*) > {}", rng.below(5))
            } else {
                String::new()
            };
            let ordered = rng.chance(50);
            let order = if ordered {
                format!(" ORDER BY t.{g} DESC")
            } else {
                String::new()
            };
            (
                format!(
                    "SELECT t.{g} AS g, {} FROM {} t{where_} GROUP BY t.{g}{having}{order}",
                    aggs.join(", "),
                    t.name
                ),
                ordered,
            )
        }
        // A join through pc_id or exec_id.
        4 => {
            let q = rng.pick(&[
                "SELECT a.pc_id, a.os_family, count(r.result_id) AS runs, \
                 sum(CASE WHEN r.exit_code <> 0 THEN 1 ELSE 0 END) AS failed \
                 FROM agents a LEFT JOIN execution_results r ON r.pc_id = a.pc_id \
                 GROUP BY a.pc_id, a.os_family",
                "SELECT e.job_id, e.status, r.pc_id, r.exit_code FROM executions e \
                 JOIN execution_results r ON r.exec_id = e.exec_id WHERE r.exit_code IS NOT NULL",
                "SELECT c.check_name, a.agent_version, count(*) AS n FROM check_status c \
                 JOIN agents a ON a.pc_id = c.pc_id WHERE c.status = 'fail' \
                 GROUP BY c.check_name, a.agent_version",
                "SELECT o.kind, a.hostname, count(*) AS n FROM obs_events o \
                 LEFT JOIN agents a ON a.pc_id = o.pc_id GROUP BY o.kind, a.hostname",
                "SELECT l.actor, count(*) AS n, max(l.occurred_at) AS last FROM audit_log l \
                 JOIN agents a ON a.pc_id = l.target GROUP BY l.actor",
                "SELECT r.job_id, count(*) AS failures FROM execution_results r \
                 WHERE r.exit_code <> 0 AND julianday(r.finished_at) >= julianday('2026-11-27') \
                 GROUP BY r.job_id",
            ]);
            (q.to_string(), false)
        }
        // Subqueries and CTEs.
        _ => {
            let q = rng.pick(&[
                "SELECT pc_id, hostname FROM agents WHERE pc_id IN \
                 (SELECT pc_id FROM check_status WHERE status = 'fail')",
                "SELECT pc_id FROM agents a WHERE NOT EXISTS \
                 (SELECT 1 FROM execution_results r WHERE r.pc_id = a.pc_id AND r.exit_code = 0)",
                "WITH last AS (SELECT pc_id, max(started_at) AS at FROM execution_results GROUP BY pc_id) \
                 SELECT a.pc_id, last.at FROM agents a JOIN last ON last.pc_id = a.pc_id",
                "WITH f AS (SELECT job_id, count(*) AS n FROM execution_results WHERE exit_code <> 0 GROUP BY job_id) \
                 SELECT job_id, n FROM f WHERE n > 3",
                "SELECT os_family, length(group_concat(pc_id)) AS chars FROM agents GROUP BY os_family",
                "SELECT DISTINCT kind, source FROM obs_events",
                "SELECT pc_id, (SELECT count(*) FROM obs_events o WHERE o.pc_id = a.pc_id) AS events FROM agents a",
                "SELECT status, count(*) FROM check_status GROUP BY status UNION ALL \
                 SELECT 'total', count(*) FROM check_status",
            ]);
            (q.to_string(), false)
        }
    }
}

/// A SQLite cell as JSON (as the reference's `/api/query` gives it).
fn cell(r: &rusqlite::Row, i: usize) -> rusqlite::Result<Value> {
    use rusqlite::types::ValueRef;
    Ok(match r.get_ref(i)? {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(n) => json!(n),
        ValueRef::Real(f) => json!(f),
        ValueRef::Text(t) => json!(String::from_utf8_lossy(t)),
        ValueRef::Blob(b) => json!(format!("{b:?}")),
    })
}

pub(crate) fn sqlite_rows(c: &Connection, sql: &str) -> Vec<Vec<Value>> {
    let mut stmt = c.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    let n = stmt.column_count();
    stmt.query_map([], |r| (0..n).map(|i| cell(r, i)).collect())
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// A cell in a form both sides agree on: an instant for a timestamp, a
/// rounded number, else the text.
fn canonical(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::Number(n) => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            if f.fract() == 0.0 && f.abs() < 1e15 {
                format!("{}", f as i64)
            } else {
                format!("{f:.6}")
            }
        }
        Value::String(s) => {
            let parsed = DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .ok()
                .or_else(|| {
                    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
                        .ok()
                        .map(|n| n.and_utc())
                });
            match parsed {
                Some(t) => format!("@{}", t.timestamp_micros()),
                None => format!("'{s}"),
            }
        }
        other => other.to_string(),
    }
}

pub(crate) fn canonical_rows(rows: &[Vec<Value>], ordered: bool) -> Vec<String> {
    let mut out: Vec<String> = rows
        .iter()
        .map(|r| r.iter().map(canonical).collect::<Vec<_>>().join(" | "))
        .collect();
    if !ordered {
        out.sort();
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_generated_selects_answer_as_sqlite_does() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("backend.db");
    let mut rng = Rng(0x6b61_6e61_6465_0101);
    build(&source, &mut rng);
    let data = dir.path().join("data");
    let cfg = crate::import_sqlite::config(dir.path(), &data);
    let out = crate::import_sqlite::import(&cfg, &source);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let nats = Nats::start();
    // The fixture's runs still in flight are weeks old: keep the reaper
    // from closing them, so both sides hold the same rows.
    let b = Backend::start_configured(
        &nats.url,
        &data,
        "",
        "[housekeeping]\nreap_after_hours = 100000",
        &[],
    );
    let oracle = Connection::open(&source).unwrap();

    let mut checked = 0;
    let mut nonempty = 0;
    let mut shapes = std::collections::BTreeSet::new();
    for n in 0..200 {
        let (sql, ordered) = generate(&oracle, &mut rng);
        let expected = sqlite_rows(&oracle, &sql);
        let (status, _, answer) = b
            .call(
                Method::POST,
                "/api/query",
                Some(TOKEN),
                Some(json!({"sql": sql, "limit": 10_000})),
            )
            .await;
        assert_eq!(status, 200, "query {n}: {sql}\n{answer}");
        assert_eq!(answer["truncated"], false, "query {n}: {sql}");
        let got: Vec<Vec<Value>> = serde_json::from_value(answer["rows"].clone()).unwrap();
        let (ours, theirs) = (
            canonical_rows(&got, ordered),
            canonical_rows(&expected, ordered),
        );
        if ours != theirs {
            let at = ours.iter().zip(&theirs).take_while(|(a, b)| a == b).count();
            panic!(
                "query {n} differs from SQLite: {sql}\n{} rows here, {} in SQLite; \
                 first difference at row {at}: here {:?}, SQLite {:?}",
                ours.len(),
                theirs.len(),
                ours.get(at),
                theirs.get(at)
            );
        }
        checked += 1;
        nonempty += usize::from(!expected.is_empty());
        shapes.insert(sql.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
    }
    assert_eq!(checked, 200);
    // The generator must exercise real answers, not 200 empty sets.
    assert!(nonempty >= 150, "only {nonempty} of 200 queries had rows");
    assert!(shapes.len() >= 20, "only {} query shapes", shapes.len());
}
