//! `kanade-backend import-sqlite <backend.db>`: migrates a reference
//! kanade-backend database (0.43.x schema) into this store. Perf samples go
//! through the same path the projectors use (WAL, head, persist) and are
//! then compacted, so the partitions look as if the projectors had written
//! them; relational tables go into redb, each row only if its key is not
//! stored yet, so a second run adds nothing.
//!
//! The source is opened read-only and checked (it is SQLite, it is intact,
//! it has the kanade tables, nobody holds a write lock on it) before the
//! store is touched at all: a file that fails any check leaves the store
//! as it was. All reads happen in one read transaction, one consistent
//! snapshot of the source.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chrono::{DateTime, NaiveDateTime, Utc};
use kanade_storage::{
    AgentRecord, AgentReported, AuditRecord, ExecutionRecord, InventoryFactRecord,
    InventoryHistoryRow, ObsRecord, PartitionDate, PasskeyRecord, PermissionGroupRecord,
    RelationalStore, ResultRecord, RunOutcome, TableSpec, TimeSeriesTable, UserRecord, HOST_PERF,
    INVENTORY_HISTORY, PROCESS_PERF,
};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, Row};

use crate::config::Config;

/// Ids of imported audit and obs rows start here, above any stream
/// sequence the broker will reach, and below 2^53 so browsers read them
/// exactly.
pub const IMPORTED_ID_BASE: u64 = 1 << 52;

/// Rows per redb transaction / per write into a time-series table.
const RELATIONAL_BATCH: usize = 1_000;
const PERF_BATCH: usize = 50_000;

#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// The reference backend's SQLite file (`[db] sqlite_path`). It is only
    /// read; stop the reference backend first.
    pub source: PathBuf,
}

/// What one table's import did.
#[derive(Debug, Clone, Default)]
pub struct TableImport {
    pub table: &'static str,
    /// Rows read from the source.
    pub read: u64,
    /// Rows added to this store (perf: rows stored after compaction minus
    /// before, so rows already there count as nothing).
    pub added: u64,
    /// Rows not imported, with the first reason.
    pub skipped: u64,
    pub first_skip: Option<String>,
    pub elapsed: Duration,
}

impl TableImport {
    /// The one-line summary printed per table.
    fn report(&self) {
        eprintln!(
            "{}: read {}, added {}, skipped {} in {:.1} s ({:.0} rows/s){}",
            self.table,
            self.read,
            self.added,
            self.skipped,
            self.elapsed.as_secs_f64(),
            self.read as f64 / self.elapsed.as_secs_f64().max(1e-9),
            self.first_skip
                .as_deref()
                .map(|r| format!("; first skipped row: {r}"))
                .unwrap_or_default()
        );
    }
}

/// Every table's outcome.
#[derive(Debug, Clone, Default)]
pub struct ImportSummary {
    pub tables: Vec<TableImport>,
    /// Source tables left out, and why.
    pub not_imported: Vec<(String, &'static str)>,
}

/// The tables and columns a kanade-backend 0.43 database has. Columns a
/// later migration added are optional. The perf tables are not listed:
/// their columns are those of our own tables ([`PERF_TABLES`]).
const REQUIRED: &[(&str, &[&str])] = &[
    (
        "agents",
        &[
            "pc_id",
            "hostname",
            "last_heartbeat",
            "agent_version",
            "os_family",
            "updated_at",
        ],
    ),
    (
        "execution_results",
        &[
            "result_id",
            "request_id",
            "exec_id",
            "pc_id",
            "exit_code",
            "stdout",
            "stderr",
            "started_at",
            "finished_at",
            "recorded_at",
            "job_id",
            "version",
            "reaped",
        ],
    ),
    (
        "executions",
        &[
            "exec_id",
            "job_id",
            "version",
            "initiated_by",
            "initiated_at",
            "target_count",
            "success_count",
            "failure_count",
            "status",
        ],
    ),
    (
        "audit_log",
        &["id", "actor", "action", "target", "payload", "occurred_at"],
    ),
    (
        "obs_events",
        &[
            "id",
            "pc_id",
            "at",
            "kind",
            "source",
            "event_record_id",
            "payload",
        ],
    ),
    (
        "users",
        &[
            "username",
            "password_hash",
            "role",
            "disabled",
            "must_change_pw",
            "created_at",
            "updated_at",
        ],
    ),
];

/// Opens `path` read-only and checks it is an intact, unlocked kanade
/// database; returns the connection inside an open read transaction.
pub fn open_source(path: &Path) -> Result<Connection> {
    if !path.is_file() {
        bail!("{}: no such file", path.display());
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("{}: cannot open as SQLite", path.display()))?;
    conn.busy_timeout(Duration::from_secs(2))?;
    let describe = |e: rusqlite::Error| -> anyhow::Error {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::NotADatabase) => {
                anyhow::anyhow!("{} is not a SQLite database", path.display())
            }
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                anyhow::anyhow!(
                    "{} is locked by another process (stop the backend that uses it, then retry)",
                    path.display()
                )
            }
            Some(rusqlite::ErrorCode::DatabaseCorrupt) => {
                anyhow::anyhow!("{} is damaged or truncated: {e}", path.display())
            }
            _ => anyhow::anyhow!("{}: {e}", path.display()),
        }
    };
    // One read transaction for the checks and every table: a snapshot.
    conn.execute_batch("BEGIN DEFERRED").map_err(describe)?;
    let verdict: Vec<String> = {
        let mut stmt = conn.prepare("PRAGMA quick_check").map_err(describe)?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(describe)?;
        rows.collect::<std::result::Result<_, _>>()
            .map_err(describe)?
    };
    if verdict != ["ok"] {
        bail!(
            "{} is damaged or truncated: {}",
            path.display(),
            verdict.into_iter().take(3).collect::<Vec<_>>().join("; ")
        );
    }
    let perf = PERF_TABLES
        .iter()
        .map(|(table, spec)| (*table, spec.schema()))
        .collect::<Vec<_>>();
    let perf = perf.iter().map(|(table, schema)| {
        let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        (*table, columns)
    });
    let required = REQUIRED
        .iter()
        .map(|(t, c)| (*t, c.to_vec()))
        .chain(perf)
        .collect::<Vec<_>>();
    for (table, columns) in &required {
        let present = table_columns(&conn, table).map_err(describe)?;
        if present.is_empty() {
            bail!(
                "{} is not a kanade-backend database: it has no table `{table}`",
                path.display()
            );
        }
        if let Some(missing) = columns.iter().find(|c| !present.iter().any(|p| p == *c)) {
            bail!(
                "{} is not a kanade-backend 0.43 database: table `{table}` has no column `{missing}`",
                path.display()
            );
        }
    }
    Ok(conn)
}

/// A JSON array of strings stored as text (`NULL` or unreadable: none).
fn json_list(text: Option<String>) -> Option<Vec<String>> {
    serde_json::from_str(&text?).ok()
}

fn table_columns(conn: &Connection, table: &str) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare(&format!("PRAGMA table_info({table})"))?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(1))?;
    rows.collect()
}

/// A timestamp as the reference stores it: RFC 3339 text (what it writes
/// since its 0.43 migrations), SQLite's `YYYY-MM-DD HH:MM:SS[.fff]` (UTC,
/// `CURRENT_TIMESTAMP` defaults), or integer unix seconds.
pub fn parse_timestamp(v: ValueRef<'_>) -> std::result::Result<DateTime<Utc>, String> {
    match v {
        ValueRef::Text(t) => {
            let s = std::str::from_utf8(t).map_err(|_| "timestamp is not UTF-8".to_string())?;
            let s = s.trim();
            if let Ok(t) = DateTime::parse_from_rfc3339(s) {
                return Ok(t.with_timezone(&Utc));
            }
            for format in [
                "%Y-%m-%d %H:%M:%S%.f",
                "%Y-%m-%dT%H:%M:%S%.f",
                "%Y-%m-%d %H:%M:%S%.f UTC",
            ] {
                if let Ok(t) = NaiveDateTime::parse_from_str(s, format) {
                    return Ok(t.and_utc());
                }
            }
            Err(format!("unreadable timestamp {s:?}"))
        }
        ValueRef::Integer(secs) => DateTime::from_timestamp(secs, 0)
            .ok_or_else(|| format!("timestamp {secs} out of range")),
        ValueRef::Null => Err("timestamp is NULL".into()),
        other => Err(format!("timestamp of type {:?}", other.data_type())),
    }
}

fn ts(row: &Row<'_>, i: usize) -> std::result::Result<DateTime<Utc>, String> {
    parse_timestamp(row.get_ref(i).map_err(|e| e.to_string())?)
}

fn opt_ts(row: &Row<'_>, i: usize) -> std::result::Result<Option<DateTime<Utc>>, String> {
    match row.get_ref(i).map_err(|e| e.to_string())? {
        ValueRef::Null => Ok(None),
        v => parse_timestamp(v).map(Some),
    }
}

fn get<T: rusqlite::types::FromSql>(row: &Row<'_>, i: usize) -> std::result::Result<T, String> {
    row.get(i).map_err(|e| e.to_string())
}

/// A TEXT column holding JSON; text that is not JSON is kept as a string.
fn json(row: &Row<'_>, i: usize) -> std::result::Result<serde_json::Value, String> {
    Ok(match get::<Option<String>>(row, i)? {
        None => serde_json::Value::Null,
        Some(s) => serde_json::from_str(&s).unwrap_or(serde_json::Value::String(s)),
    })
}

/// Reports rows/s: a bar on a terminal, a line every few seconds otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    table: &'static str,
    total: u64,
    done: u64,
    started: Instant,
    last_line: Instant,
}

impl Progress {
    fn new(table: &'static str, total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{prefix:>20} [{bar:30}] {human_pos}/{human_len} rows, {per_sec}, eta {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_prefix(table);
            bar
        });
        Self {
            bar,
            table,
            total,
            done: 0,
            started: Instant::now(),
            last_line: Instant::now(),
        }
    }

    fn rate(&self) -> f64 {
        self.done as f64 / self.started.elapsed().as_secs_f64().max(1e-9)
    }

    fn advance(&mut self, n: u64) {
        self.done += n;
        match &self.bar {
            Some(bar) => bar.set_position(self.done),
            None if self.last_line.elapsed() >= Duration::from_secs(5) => {
                self.last_line = Instant::now();
                eprintln!(
                    "{}: {}/{} rows ({:.0} rows/s)",
                    self.table,
                    self.done,
                    self.total,
                    self.rate()
                );
            }
            None => {}
        }
    }

    fn finish(self) -> Duration {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        self.started.elapsed()
    }
}

/// Streams `sql` through `map`, handing batches of `batch` mapped rows to
/// `sink` (which returns how many it added). A row `map` rejects is
/// counted as skipped with its reason.
fn copy_table<T>(
    conn: &Connection,
    table: &'static str,
    sql: &str,
    batch: usize,
    map: impl Fn(&Row<'_>) -> std::result::Result<Option<T>, String>,
    mut sink: impl FnMut(Vec<T>) -> Result<u64>,
) -> Result<TableImport> {
    let total: i64 = conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?;
    let total = total.max(0) as u64;
    let mut progress = Progress::new(table, total);
    let mut outcome = TableImport {
        table,
        ..Default::default()
    };
    let mut stmt = conn.prepare(sql)?;
    let mut rows = stmt.query([])?;
    let mut pending = Vec::with_capacity(batch);
    while let Some(row) = rows
        .next()
        .with_context(|| format!("reading {table} (is the file truncated?)"))?
    {
        outcome.read += 1;
        match map(row) {
            Ok(Some(v)) => pending.push(v),
            Ok(None) => outcome.skipped += 1,
            Err(reason) => {
                outcome.skipped += 1;
                outcome
                    .first_skip
                    .get_or_insert_with(|| format!("row {}: {reason}", outcome.read));
            }
        }
        if pending.len() >= batch {
            let n = pending.len() as u64;
            outcome.added += sink(std::mem::replace(&mut pending, Vec::with_capacity(batch)))?;
            progress.advance(n);
        }
    }
    if !pending.is_empty() {
        let n = pending.len() as u64;
        outcome.added += sink(pending)?;
        progress.advance(n);
    }
    outcome.elapsed = progress.finish();
    Ok(outcome)
}

/// Runs the import into the data directory of `config`.
pub fn run(config: &Config, args: &ImportArgs) -> Result<ImportSummary> {
    let conn = open_source(&args.source)?;
    let data_dir = config.data_dir();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("create data directory {}", data_dir.display()))?;
    let store = RelationalStore::open(&data_dir).with_context(|| {
        format!(
            "open {} (is the backend running on this data directory? stop it first)",
            data_dir.display()
        )
    })?;
    let mut summary = ImportSummary::default();
    let now = Utc::now();
    let agent_cols = table_columns(&conn, "agents")?;
    let has_quarantine = agent_cols.iter().any(|c| c == "quarantined_versions");
    // The columns a 0.101 database has and an older one lacks read as NULL.
    let or_null = |cols: &[String], name: &'static str| {
        if cols.iter().any(|c| c == name) {
            name
        } else {
            "NULL"
        }
    };
    let result_cols = table_columns(&conn, "execution_results")?;
    let user_cols = table_columns(&conn, "users")?;
    let has_stream_seq = table_columns(&conn, "audit_log")?
        .iter()
        .any(|c| c == "stream_seq");

    push(&mut summary, copy_table(
        &conn,
        "users",
        &format!(
            "SELECT username, password_hash, role, disabled, must_change_pw, created_at, updated_at, {}, {}, {}, {} FROM users",
            or_null(&user_cols, "totp_secret"),
            or_null(&user_cols, "email"),
            or_null(&user_cols, "allowed_features"),
            or_null(&user_cols, "permission_group"),
        ),
        RELATIONAL_BATCH,
        |r| {
            Ok(Some(UserRecord {
                username: get(r, 0)?,
                password_hash: get(r, 1)?,
                role: get(r, 2)?,
                disabled: get::<i64>(r, 3)? != 0,
                must_change_pw: get::<i64>(r, 4)? != 0,
                created_at: opt_ts(r, 5)?.unwrap_or(now),
                updated_at: opt_ts(r, 6)?.unwrap_or(now),
                token_epoch: 0,
                // As the reference stored it: the account keeps its
                // authenticator (an empty secret is no second factor).
                totp_secret: get::<Option<String>>(r, 7)?.filter(|s| !s.trim().is_empty()),
                totp_last_step: 0,
                email: get::<Option<String>>(r, 8)?.filter(|s| !s.trim().is_empty()),
                // Stored as JSON text; one that does not parse is no list
                // (every page), as the reference reads it.
                allowed_features: json_list(get(r, 9)?),
                permission_group: get::<Option<String>>(r, 10)?,
                ..Default::default()
            }))
        },
        |batch| Ok(store.import_users(&batch)? as u64),
    )?);
    // After the accounts they belong to. The credential is webauthn-rs's
    // JSON, as the reference stores it with the same library version:
    // imported accounts keep signing in with their passkeys.
    if !table_columns(&conn, "user_passkeys")?.is_empty() {
        push(&mut summary, copy_table(
            &conn,
            "user_passkeys",
            "SELECT id, username, user_uuid, credential_id, passkey, name, created_at, last_used_at FROM user_passkeys ORDER BY id",
            RELATIONAL_BATCH,
            |r| {
                let passkey: String = get(r, 4)?;
                if let Err(e) = serde_json::from_str::<webauthn_rs::prelude::Passkey>(&passkey) {
                    return Err(format!("passkey {} is not a credential: {e}", get::<i64>(r, 0)?));
                }
                Ok(Some(PasskeyRecord {
                    id: get(r, 0)?,
                    username: get(r, 1)?,
                    user_uuid: get(r, 2)?,
                    credential_id: get(r, 3)?,
                    passkey,
                    name: get(r, 5)?,
                    created_at: opt_ts(r, 6)?.unwrap_or(now),
                    last_used_at: opt_ts(r, 7)?,
                }))
            },
            |batch| Ok(store.import_passkeys(&batch)? as u64),
        )?);
    }

    let quarantine_col = if has_quarantine {
        "quarantined_versions"
    } else {
        "NULL"
    };
    push(
        &mut summary,
        copy_table(
            &conn,
            "agents",
            &format!(
                "SELECT pc_id, hostname, os_family, agent_version, last_heartbeat, updated_at, \
             agent_cpu_pct, agent_rss_bytes, agent_disk_read_bytes, agent_disk_written_bytes, \
             {quarantine_col}, {}, {}, {}, {}, {}, {} FROM agents",
                or_null(&agent_cols, "agent_arch"),
                or_null(&agent_cols, "last_logon_user"),
                or_null(&agent_cols, "last_logon_display_name"),
                or_null(&agent_cols, "command_keys"),
                or_null(&agent_cols, "enforcing"),
                or_null(&agent_cols, "command_protocols"),
            ),
            RELATIONAL_BATCH,
            |r| {
                let quarantined: Option<String> = get(r, 10)?;
                Ok(Some(AgentRecord {
                    pc_id: get(r, 0)?,
                    hostname: get(r, 1)?,
                    os_family: get(r, 2)?,
                    agent_version: get(r, 3)?,
                    last_heartbeat: opt_ts(r, 4)?,
                    updated_at: opt_ts(r, 5)?,
                    agent_cpu_pct: get(r, 6)?,
                    agent_rss_bytes: get(r, 7)?,
                    agent_disk_read_bytes: get(r, 8)?,
                    agent_disk_written_bytes: get(r, 9)?,
                    quarantined_versions: quarantined
                        .map(|q| {
                            serde_json::from_str::<Vec<String>>(&q)
                                .map_err(|e| format!("quarantined_versions: {e}"))
                        })
                        .transpose()?
                        .unwrap_or_default(),
                    reported: AgentReported {
                        agent_arch: get(r, 11)?,
                        last_logon_user: get(r, 12)?,
                        last_logon_display_name: get(r, 13)?,
                        command_keys: json_list(get(r, 14)?),
                        enforcing: get::<Option<i64>>(r, 15)?.map(|v| v != 0),
                        command_protocols: json_list(get(r, 16)?),
                        ..Default::default()
                    },
                }))
            },
            |batch| Ok(store.import_agents(&batch)? as u64),
        )?,
    );

    push(
        &mut summary,
        copy_table(
            &conn,
            "executions",
            "SELECT exec_id, job_id, version, initiated_by, initiated_at, target_count, \
         success_count, failure_count, status FROM executions",
            RELATIONAL_BATCH,
            |r| {
                Ok(Some(ExecutionRecord {
                    exec_id: get(r, 0)?,
                    job_id: get(r, 1)?,
                    version: get(r, 2)?,
                    initiated_by: get(r, 3)?,
                    initiated_at: ts(r, 4)?,
                    target_count: get(r, 5)?,
                    success_count: get(r, 6)?,
                    failure_count: get(r, 7)?,
                    status: get(r, 8)?,
                }))
            },
            |batch| Ok(store.import_executions(&batch)? as u64),
        )?,
    );

    push(
        &mut summary,
        copy_table(
            &conn,
            "execution_results",
            &format!(
                "SELECT result_id, request_id, exec_id, pc_id, exit_code, stdout, stderr, started_at, \
                 finished_at, recorded_at, job_id, version, reaped, {}, {} FROM execution_results",
                or_null(&result_cols, "skipped"),
                or_null(&result_cols, "parent_result_id"),
            ),
            RELATIONAL_BATCH,
            |r| {
                Ok(Some(ResultRecord {
                    result_id: get(r, 0)?,
                    request_id: get(r, 1)?,
                    exec_id: get(r, 2)?,
                    pc_id: get(r, 3)?,
                    exit_code: get(r, 4)?,
                    stdout: get::<Option<String>>(r, 5)?.unwrap_or_default(),
                    stderr: get::<Option<String>>(r, 6)?.unwrap_or_default(),
                    started_at: ts(r, 7)?,
                    finished_at: opt_ts(r, 8)?,
                    recorded_at: opt_ts(r, 9)?,
                    job_id: get(r, 10)?,
                    version: get(r, 11)?,
                    reaped: get::<i64>(r, 12)? != 0,
                    outcome: RunOutcome {
                        skipped: get::<Option<i64>>(r, 13)?.map(|v| v != 0),
                        parent_result_id: get(r, 14)?,
                        collect_object: None,
                    },
                }))
            },
            |batch| Ok(store.import_results(&batch)? as u64),
        )?,
    );

    let seq_col = if has_stream_seq { "stream_seq" } else { "NULL" };
    push(
        &mut summary,
        copy_table(
            &conn,
            "audit_log",
            &format!(
                "SELECT id, {seq_col}, actor, action, target, payload, occurred_at FROM audit_log"
            ),
            RELATIONAL_BATCH,
            |r| {
                // The stream sequence when the reference recorded it: the
                // audit projector's replay of that message then lands on the
                // same row instead of adding a copy.
                let id = match get::<Option<i64>>(r, 1)? {
                    Some(seq) if seq > 0 => seq as u64,
                    _ => IMPORTED_ID_BASE + get::<i64>(r, 0)?.max(0) as u64,
                };
                Ok(Some(AuditRecord {
                    id,
                    actor: get(r, 2)?,
                    action: get(r, 3)?,
                    target: get(r, 4)?,
                    payload: json(r, 5)?,
                    occurred_at: Some(ts(r, 6)?),
                }))
            },
            |batch| Ok(store.apply_audit(&batch, None)? as u64),
        )?,
    );

    push(
        &mut summary,
        copy_table(
            &conn,
            "obs_events",
            "SELECT id, pc_id, at, kind, source, event_record_id, payload FROM obs_events",
            RELATIONAL_BATCH,
            |r| {
                Ok(Some(ObsRecord {
                    id: IMPORTED_ID_BASE + get::<i64>(r, 0)?.max(0) as u64,
                    pc_id: get(r, 1)?,
                    at: ts(r, 2)?,
                    kind: get(r, 3)?,
                    source: get(r, 4)?,
                    event_record_id: get(r, 5)?,
                    payload: json(r, 6)?,
                }))
            },
            |batch| Ok(store.apply_obs_events(&batch, None)? as u64),
        )?,
    );
    // Deploy plans (0.101 databases only), with the targets each one was
    // applied to.
    if !table_columns(&conn, "deploy_plans")?.is_empty() {
        let mut applied: std::collections::HashMap<String, Vec<String>> = Default::default();
        if !table_columns(&conn, "deploy_plan_applications")?.is_empty() {
            let mut stmt = conn.prepare(
                "SELECT plan_id, pc_id FROM deploy_plan_applications ORDER BY plan_id, pc_id",
            )?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                applied.entry(r.get(0)?).or_default().push(r.get(1)?);
            }
        }
        push(
            &mut summary,
            copy_table(
                &conn,
                "deploy_plans",
                "SELECT plan_id, plan_digest, content, job_manifest, state, revision, created_by, \
                 created_at, approved_by, approved_at, revoked_by, revoked_at, revoke_reason \
                 FROM deploy_plans",
                RELATIONAL_BATCH,
                |r| {
                    let plan_id: String = get(r, 0)?;
                    Ok(Some(kanade_storage::DeployPlanRecord {
                        applied_targets: applied.get(&plan_id).cloned().unwrap_or_default(),
                        plan_id,
                        plan_digest: get(r, 1)?,
                        content: get(r, 2)?,
                        job_manifest: get(r, 3)?,
                        state: get(r, 4)?,
                        revision: get(r, 5)?,
                        created_by: get(r, 6)?,
                        created_at: get(r, 7)?,
                        approved_by: get(r, 8)?,
                        approved_at: get(r, 9)?,
                        revoked_by: get(r, 10)?,
                        revoked_at: get(r, 11)?,
                        revoke_reason: get(r, 12)?,
                    }))
                },
                |batch| Ok(store.import_deploy_plans(&batch)? as u64),
            )?,
        );
    }
    // Permission groups (0.101): their pages as the JSON list stored.
    if !table_columns(&conn, "permission_groups")?.is_empty() {
        push(
            &mut summary,
            copy_table(
                &conn,
                "permission_groups",
                "SELECT name, features, created_at, updated_at FROM permission_groups",
                RELATIONAL_BATCH,
                |r| {
                    Ok(Some(PermissionGroupRecord {
                        name: get(r, 0)?,
                        features: json_list(get(r, 1)?).unwrap_or_default(),
                        created_at: opt_ts(r, 2)?.unwrap_or(now),
                        updated_at: opt_ts(r, 3)?.unwrap_or(now),
                    }))
                },
                |batch| Ok(store.import_permission_groups(&batch)? as u64),
            )?,
        );
    }
    // Check states, as the projector left them.
    if !table_columns(&conn, "check_status")?.is_empty() {
        push(
            &mut summary,
            copy_table(
                &conn,
                "check_status",
                "SELECT pc_id, check_name, status, detail, recorded_at FROM check_status",
                RELATIONAL_BATCH,
                |r| {
                    Ok(Some(kanade_storage::CheckStatusRecord {
                        pc_id: get(r, 0)?,
                        check_name: get(r, 1)?,
                        status: get(r, 2)?,
                        detail: get(r, 3)?,
                        recorded_at: ts(r, 4)?,
                    }))
                },
                |batch| Ok(store.import_check_status(&batch)?),
            )?,
        );
    }
    // Acknowledgements: the standing ones, then (0.101) every ack and
    // take-back in order, which brings each to where the reference has it.
    let ack_cols = table_columns(&conn, "notification_acks")?;
    if !ack_cols.is_empty() {
        push(
            &mut summary,
            copy_table(
                &conn,
                "notification_acks",
                &format!(
                    "SELECT notification_id, pc_id, user_sid, acked_at, recorded_at, {}, {} FROM notification_acks",
                    or_null(&ack_cols, "account"),
                    or_null(&ack_cols, "unacked_at"),
                ),
                RELATIONAL_BATCH,
                |r| {
                    Ok(Some(kanade_storage::AckEvent::Acked(kanade_storage::NotificationAckRecord {
                        notification_id: get(r, 0)?,
                        pc_id: get(r, 1)?,
                        user_sid: get(r, 2)?,
                        acked_at: ts(r, 3)?,
                        recorded_at: opt_ts(r, 4)?,
                        account: get(r, 5)?,
                        unacked_at: opt_ts(r, 6)?,
                    })))
                },
                |batch| {
                    store.apply_ack_events(&batch, None)?;
                    Ok(batch.len() as u64)
                },
            )?,
        );
    }
    if !table_columns(&conn, "notification_ack_events")?.is_empty() {
        push(
            &mut summary,
            copy_table(
                &conn,
                "notification_ack_events",
                "SELECT notification_id, pc_id, user_sid, kind, occurred_at, recorded_at, account \
                 FROM notification_ack_events ORDER BY occurred_at",
                RELATIONAL_BATCH,
                |r| {
                    let kind: String = get(r, 3)?;
                    let at = ts(r, 4)?;
                    Ok(Some(match kind.as_str() {
                        "acked" => {
                            kanade_storage::AckEvent::Acked(kanade_storage::NotificationAckRecord {
                                notification_id: get(r, 0)?,
                                pc_id: get(r, 1)?,
                                user_sid: get(r, 2)?,
                                acked_at: at,
                                recorded_at: opt_ts(r, 5)?,
                                account: get(r, 6)?,
                                unacked_at: None,
                            })
                        }
                        "unacked" => kanade_storage::AckEvent::Unacked(
                            get(r, 0)?,
                            get(r, 1)?,
                            get(r, 2)?,
                            at,
                        ),
                        other => return Err(format!("unknown kind {other:?}")),
                    }))
                },
                |batch| {
                    store.apply_ack_events(&batch, None)?;
                    Ok(batch.len() as u64)
                },
            )?,
        );
    }
    // When each PC last succeeded with each job (0.101 keeps them past
    // result retention; `once` schedules must not fire again).
    for (table, version) in [
        ("job_completions", "NULL"),
        ("job_version_completions", "version"),
    ] {
        if table_columns(&conn, table)?.is_empty() {
            continue;
        }
        push(
            &mut summary,
            copy_table(
                &conn,
                table,
                &format!("SELECT job_id, {version}, pc_id, last_success_at FROM {table}"),
                RELATIONAL_BATCH,
                |r| Ok(Some((get(r, 0)?, get(r, 1)?, get(r, 2)?, ts(r, 3)?))),
                |batch| Ok(store.import_completions(&batch)?),
            )?,
        );
    }
    // Install attempts with their events (kept 30 days, as there).
    if !table_columns(&conn, "install_attempts")?.is_empty() {
        let event_cols = table_columns(&conn, "install_events")?;
        let mut events: std::collections::HashMap<String, Vec<kanade_storage::InstallEvent>> =
            Default::default();
        if !event_cols.is_empty() {
            let mut stmt = conn.prepare(&format!(
                "SELECT attempt_id, seq, stage, outcome, exit_code, received_at, {} \
                 FROM install_events ORDER BY attempt_id, seq",
                or_null(&event_cols, "error_kind")
            ))?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let received: i64 = r.get(5)?;
                events
                    .entry(r.get(0)?)
                    .or_default()
                    .push(kanade_storage::InstallEvent {
                        seq: u32::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                        stage: r.get(2)?,
                        outcome: r.get(3)?,
                        exit_code: i32::try_from(r.get::<_, i64>(4)?).unwrap_or(1),
                        error_kind: r.get(6)?,
                        received_at: DateTime::from_timestamp(received, 0).unwrap_or(now),
                    });
            }
        }
        let keep = now - chrono::Duration::days(30);
        push(
            &mut summary,
            copy_table(
                &conn,
                "install_attempts",
                "SELECT id, issuer, os, key_hash, created_at, expires_at, status, \
                 download_claimed, seq FROM install_attempts",
                RELATIONAL_BATCH,
                |r| {
                    let secs = |i: usize| -> std::result::Result<DateTime<Utc>, String> {
                        DateTime::from_timestamp(get::<i64>(r, i)?, 0)
                            .ok_or_else(|| format!("column {i}: not a time"))
                    };
                    let created_at = secs(4)?;
                    if created_at < keep {
                        return Ok(None);
                    }
                    let id: String = get(r, 0)?;
                    Ok(Some(kanade_storage::InstallAttempt {
                        events: events.get(&id).cloned().unwrap_or_default(),
                        id,
                        issuer: get(r, 1)?,
                        os: get(r, 2)?,
                        key_hash: get(r, 3)?,
                        created_at,
                        expires_at: secs(5)?,
                        status: get(r, 6)?,
                        download_claimed: get::<i64>(r, 7)? != 0,
                        seq: u32::try_from(get::<i64>(r, 8)?).map_err(|e| e.to_string())?,
                    }))
                },
                |batch| Ok(store.import_install_attempts(&batch)?),
            )?,
        );
    }
    // Inventory facts (tables of a reference older than inventory are
    // simply absent).
    if !table_columns(&conn, "inventory_facts")?.is_empty() {
        push(&mut summary, copy_table(
            &conn,
            "inventory_facts",
            "SELECT pc_id, job_id, facts_json, display_json, summary_json, collected_at, recorded_at \
             FROM inventory_facts",
            RELATIONAL_BATCH,
            |r| {
                let recorded_at = ts(r, 6)?;
                Ok(Some(InventoryFactRecord {
                    pc_id: get(r, 0)?,
                    manifest_id: get(r, 1)?,
                    facts_json: get(r, 2)?,
                    display_json: get::<Option<String>>(r, 3)?.unwrap_or_else(|| "[]".into()),
                    summary_json: get(r, 4)?,
                    // The reference recorded the publish time; a row
                    // without the run's own time sorts by it.
                    collected_at: opt_ts(r, 5)?.unwrap_or(recorded_at),
                    recorded_at,
                }))
            },
            |batch| Ok(store.put_inventory_facts(&batch)? as u64),
        )?);
    }
    drop(store);

    let today = PartitionDate::of(now);
    let storage = &config.storage;
    for (source, spec) in PERF_TABLES {
        summary
            .tables
            .push(copy_perf(&conn, source, spec, &data_dir, storage, today)?);
    }

    // Inventory history, keyed by the reference's row id, so a second
    // import adds nothing. The reference's explode tables need no copy:
    // exploded rows are built from the imported facts, typed by the
    // manifests registered in the jobs bucket.
    if !table_columns(&conn, "inventory_history")?.is_empty() {
        let history = TimeSeriesTable::open(&INVENTORY_HISTORY, &data_dir, storage.clone())?;
        let keep = today.minus_days(storage.inventory_history_retention_days);
        let before = history.stored_rows()?;
        let mut outcome = copy_table(
            &conn,
            "inventory_history",
            "SELECT id, pc_id, job_id, field_path, identity_json, change_kind, before_json, \
             after_json, observed_at FROM inventory_history",
            PERF_BATCH,
            |r| {
                let at = ts(r, 8)?;
                if PartitionDate::of(at) < keep {
                    return Ok(None);
                }
                Ok(Some(InventoryHistoryRow {
                    seq: get(r, 0)?,
                    pc_id: get(r, 1)?,
                    at,
                    job_id: get(r, 2)?,
                    field_path: get(r, 3)?,
                    identity_json: get(r, 4)?,
                    change_kind: get(r, 5)?,
                    before_json: get(r, 6)?,
                    after_json: get(r, 7)?,
                }))
            },
            |rows| {
                let written = history.write(&InventoryHistoryRow::to_batch(&rows)?)?;
                if history.wants_persist() {
                    history.persist()?;
                }
                Ok(written.inserted as u64)
            },
        )?;
        note_retention(&mut outcome, storage.inventory_history_retention_days);
        finish_table(&history)?;
        outcome.added = history.stored_rows()?.saturating_sub(before);
        outcome.report();
        summary.tables.push(outcome);
    }
    summary.not_imported = not_imported(&conn)?;
    for (table, why) in &summary.not_imported {
        eprintln!("{table}: not imported: {why}");
    }
    Ok(summary)
}

/// Tables of the source that have no home here, each with the reason.
fn not_imported(conn: &Connection) -> Result<Vec<(String, &'static str)>> {
    let mut stmt = conn.prepare(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
         AND name NOT LIKE '_sqlx_%' ORDER BY name",
    )?;
    let names: Vec<String> = stmt
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(names
        .into_iter()
        .filter_map(|name| {
            let why = match name.as_str() {
                "agent_meta" => "a copy of the broker's agent_meta bucket, which this backend reads directly",
                "object_store_meta" => "a copy of the broker's object stores' listings, which this backend reads directly",
                "feeds" => "vulnerability feeds are not served by this backend yet",
                "backend_notices" | "nats_auth_evidence" => {
                    "the reference's own operational notes, rebuilt by a running backend"
                }
                "password_setup_tokens" => "outstanding links are not carried over: issue new ones",
                "install_events" | "deploy_plan_applications" | "user_passkeys" => return None,
                n if IMPORTED.contains(&n) || n.starts_with("inventory_") => return None,
                _ => "no table of this backend holds it",
            };
            Some((name, why))
        })
        .collect())
}

/// Source tables an import reads.
const IMPORTED: &[&str] = &[
    "agents",
    "users",
    "executions",
    "execution_results",
    "audit_log",
    "obs_events",
    "host_perf_samples",
    "process_perf_samples",
    "deploy_plans",
    "permission_groups",
    "check_status",
    "notification_acks",
    "notification_ack_events",
    "job_completions",
    "job_version_completions",
    "install_attempts",
];

fn push(summary: &mut ImportSummary, outcome: TableImport) {
    outcome.report();
    summary.tables.push(outcome);
}

/// Rows older than retention are skipped on purpose: say so.
/// The reference's perf tables and ours: same columns, same names.
const PERF_TABLES: [(&str, &TableSpec); 2] = [
    ("host_perf_samples", &HOST_PERF),
    ("process_perf_samples", &PROCESS_PERF),
];

/// Copies the reference's `source` into our table `spec`, column by
/// column as the spec declares them; rows older than the retention are
/// skipped (and counted), as is a row with an unreadable value.
fn copy_perf(
    conn: &Connection,
    source: &'static str,
    spec: &'static TableSpec,
    data_dir: &Path,
    storage: &kanade_storage::TimeSeriesConfig,
    today: PartitionDate,
) -> Result<TableImport> {
    let table = TimeSeriesTable::open(spec, data_dir, storage.clone())?;
    let days = spec.retention(storage);
    let keep = today.minus_days(days);
    let before = table.stored_rows()?;
    let schema = spec.schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let at = schema.index_of("at")?;
    let mut outcome = copy_table(
        conn,
        source,
        &format!("SELECT {} FROM {source}", names.join(", ")),
        PERF_BATCH,
        |r| {
            let cells = schema
                .fields()
                .iter()
                .enumerate()
                .map(|(i, f)| Cell::read(r, i, f))
                .collect::<std::result::Result<Vec<_>, String>>()?;
            let Cell::Time(Some(t)) = cells[at] else {
                return Err("at is NULL".into());
            };
            match PartitionDate::of_micros(t) {
                None => Err(format!("at {t} µs is out of range")),
                Some(d) if d < keep => Ok(None),
                Some(_) => Ok(Some(cells)),
            }
        },
        |rows| {
            let written = table.write(&cells_batch(&schema, rows)?)?;
            if table.wants_persist() {
                table.persist()?;
            }
            Ok(written.inserted as u64)
        },
    )?;
    note_retention(&mut outcome, days);
    finish_table(&table)?;
    outcome.added = table.stored_rows()?.saturating_sub(before);
    outcome.report();
    Ok(outcome)
}

/// One value of a reference row, typed by our column.
enum Cell {
    Text(Option<String>),
    Int(Option<i64>),
    Float(Option<f64>),
    /// Microseconds since the epoch.
    Time(Option<i64>),
}

impl Cell {
    fn read(
        row: &Row<'_>,
        i: usize,
        field: &kanade_storage::arrow::datatypes::Field,
    ) -> std::result::Result<Self, String> {
        use kanade_storage::arrow::datatypes::DataType;
        let null = matches!(row.get_ref(i), Ok(ValueRef::Null));
        if null && !field.is_nullable() {
            return Err(format!("{} is NULL", field.name()));
        }
        let named = |e: String| format!("{}: {e}", field.name());
        Ok(match field.data_type() {
            DataType::Utf8 => Cell::Text(get(row, i).map_err(named)?),
            DataType::Int64 => Cell::Int(get(row, i).map_err(named)?),
            DataType::Float64 => Cell::Float(get(row, i).map_err(named)?),
            DataType::Timestamp(..) => {
                Cell::Time(opt_ts(row, i).map_err(named)?.map(|t| t.timestamp_micros()))
            }
            other => return Err(format!("{}: no import for {other}", field.name())),
        })
    }
}

/// Rows of cells as one batch of `schema`.
fn cells_batch(
    schema: &kanade_storage::arrow::datatypes::SchemaRef,
    rows: Vec<Vec<Cell>>,
) -> Result<kanade_storage::arrow::record_batch::RecordBatch> {
    use kanade_storage::arrow::array::{
        ArrayRef, Float64Array, Int64Array, StringArray, TimestampMicrosecondArray,
    };
    use std::sync::Arc;
    let columns = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| -> ArrayRef {
            let cells = rows.iter().map(|r| &r[i]);
            match f.data_type() {
                kanade_storage::arrow::datatypes::DataType::Utf8 => Arc::new(
                    cells
                        .map(|c| match c {
                            Cell::Text(v) => v.as_deref(),
                            _ => None,
                        })
                        .collect::<StringArray>(),
                ),
                kanade_storage::arrow::datatypes::DataType::Int64 => Arc::new(
                    cells
                        .map(|c| match c {
                            Cell::Int(v) => *v,
                            _ => None,
                        })
                        .collect::<Int64Array>(),
                ),
                kanade_storage::arrow::datatypes::DataType::Timestamp(_, tz) => Arc::new(
                    cells
                        .map(|c| match c {
                            Cell::Time(v) => *v,
                            _ => None,
                        })
                        .collect::<TimestampMicrosecondArray>()
                        .with_timezone_opt(tz.clone()),
                ),
                _ => Arc::new(
                    cells
                        .map(|c| match c {
                            Cell::Float(v) => *v,
                            _ => None,
                        })
                        .collect::<Float64Array>(),
                ),
            }
        })
        .collect::<Vec<_>>();
    Ok(kanade_storage::arrow::record_batch::RecordBatch::try_new(
        Arc::clone(schema),
        columns,
    )?)
}

fn note_retention(outcome: &mut TableImport, days: u32) {
    if outcome.skipped > 0 && outcome.first_skip.is_none() {
        outcome.first_skip = Some(format!("older than the {days}-day retention"));
    }
}

/// Persists what is left in the head and compacts every partition with
/// more than one file, so each ends as one sorted, deduplicated file.
fn finish_table(table: &TimeSeriesTable) -> Result<()> {
    table.persist()?;
    let far_future = PartitionDate::of(Utc::now() + chrono::Duration::days(36_500));
    table.compact(far_future)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_timestamp_form_the_reference_writes() {
        let expect = DateTime::parse_from_rfc3339("2026-11-20T10:05:00Z").unwrap();
        for text in [
            "2026-11-20T10:05:00+00:00",
            "2026-11-20T10:05:00.000000000+00:00",
            "2026-11-20T19:05:00+09:00",
            "2026-11-20 10:05:00",
            "2026-11-20T10:05:00.000",
        ] {
            assert_eq!(
                parse_timestamp(ValueRef::Text(text.as_bytes())).unwrap(),
                expect,
                "{text}"
            );
        }
        assert_eq!(
            parse_timestamp(ValueRef::Integer(expect.timestamp())).unwrap(),
            expect
        );
        assert!(parse_timestamp(ValueRef::Text(b"yesterday")).is_err());
        assert!(parse_timestamp(ValueRef::Null).is_err());
    }
}
