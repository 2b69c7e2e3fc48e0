//! `kanade-backend import-sqlite` against a database in the reference
//! schema built here with rusqlite: every row reachable through the API
//! with the same values, a second run adds nothing, bad files leave the
//! store exactly as it was.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::{eventually, parquet_files, Backend, Nats, TOKEN};
use chrono::{DateTime, Duration, DurationRound, Utc};
use reqwest::Method;
use rusqlite::{params, Connection};
use serde_json::json;

/// The reference 0.43 tables the import reads (with the columns its later
/// migrations added).
pub(crate) const SCHEMA: &str = "
CREATE TABLE agents (pc_id TEXT PRIMARY KEY, hostname TEXT, last_heartbeat TIMESTAMP,
  agent_version TEXT, os_family TEXT, updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
  agent_cpu_pct REAL, agent_rss_bytes INTEGER, agent_disk_read_bytes INTEGER,
  agent_disk_written_bytes INTEGER, quarantined_versions TEXT);
CREATE TABLE audit_log (id INTEGER PRIMARY KEY AUTOINCREMENT, actor TEXT NOT NULL,
  action TEXT NOT NULL, target TEXT, payload TEXT,
  occurred_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, stream_seq INTEGER);
CREATE TABLE execution_results (result_id TEXT PRIMARY KEY, request_id TEXT NOT NULL,
  exec_id TEXT, pc_id TEXT NOT NULL, exit_code INTEGER, stdout TEXT NOT NULL DEFAULT '',
  stderr TEXT NOT NULL DEFAULT '', started_at TIMESTAMP NOT NULL, finished_at TIMESTAMP,
  recorded_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, job_id TEXT, version TEXT,
  reaped INTEGER NOT NULL DEFAULT 0);
CREATE TABLE executions (exec_id TEXT PRIMARY KEY, job_id TEXT NOT NULL, version TEXT NOT NULL,
  initiated_by TEXT NOT NULL, initiated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
  target_count INTEGER NOT NULL, success_count INTEGER NOT NULL DEFAULT 0,
  failure_count INTEGER NOT NULL DEFAULT 0, status TEXT NOT NULL DEFAULT 'pending');
CREATE TABLE host_perf_samples (pc_id TEXT NOT NULL, at TIMESTAMP NOT NULL, cpu_pct REAL,
  cpu_count INTEGER, mem_used_bytes INTEGER, mem_total_bytes INTEGER, swap_used_bytes INTEGER,
  swap_total_bytes INTEGER, disk_read_bytes_per_sec REAL, disk_written_bytes_per_sec REAL,
  net_rx_bytes_per_sec REAL, net_tx_bytes_per_sec REAL, PRIMARY KEY (pc_id, at));
CREATE TABLE obs_events (id INTEGER PRIMARY KEY AUTOINCREMENT, pc_id TEXT NOT NULL,
  at TIMESTAMP NOT NULL, kind TEXT NOT NULL, source TEXT NOT NULL, event_record_id TEXT,
  payload TEXT, UNIQUE(pc_id, source, event_record_id));
CREATE TABLE process_perf_samples (pc_id TEXT NOT NULL, at TIMESTAMP NOT NULL,
  pid INTEGER NOT NULL, name TEXT NOT NULL, cpu_pct REAL NOT NULL, rss_bytes INTEGER NOT NULL,
  disk_read_bytes_per_sec REAL, disk_written_bytes_per_sec REAL, PRIMARY KEY (pc_id, at, pid));
CREATE TABLE users (username TEXT PRIMARY KEY, password_hash TEXT NOT NULL,
  role TEXT NOT NULL CHECK(role IN ('viewer','operator','admin')),
  disabled INTEGER NOT NULL DEFAULT 0, must_change_pw INTEGER NOT NULL DEFAULT 0,
  created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
  updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP);
CREATE INDEX idx_host_perf_samples_at ON host_perf_samples(at);
CREATE TABLE inventory_facts (pc_id TEXT NOT NULL, job_id TEXT NOT NULL, facts_json TEXT NOT NULL,
  display_json TEXT, summary_json TEXT, collected_at TIMESTAMP,
  recorded_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, PRIMARY KEY (pc_id, job_id));
CREATE TABLE inventory_history (id INTEGER PRIMARY KEY AUTOINCREMENT, pc_id TEXT NOT NULL,
  job_id TEXT NOT NULL, field_path TEXT NOT NULL, identity_json TEXT,
  change_kind TEXT NOT NULL CHECK (change_kind IN ('added','removed','changed')),
  before_json TEXT, after_json TEXT, observed_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP);
CREATE TABLE \"inventory_hw_disks\" (pc_id TEXT NOT NULL, job_id TEXT NOT NULL,
  collected_at TIMESTAMP, \"model\" TEXT, \"size_gb\" INTEGER,
  PRIMARY KEY (pc_id, job_id, \"model\"));
";

const ANN_PW: &str = "imported-pa55word";

fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339()
}

/// The fixture database; returns (path, first host sample time).
fn build_source(dir: &Path) -> (PathBuf, DateTime<Utc>) {
    let path = dir.join("backend.db");
    let c = Connection::open(&path).unwrap();
    c.execute_batch(SCHEMA).unwrap();
    let now = Utc::now().duration_trunc(Duration::minutes(1)).unwrap();
    let hash = kanade_backend::auth::password::hash(ANN_PW).unwrap();
    c.execute(
        "INSERT INTO users (username, password_hash, role, created_at, updated_at) VALUES ('ann', ?1, 'operator', '2026-01-02 03:04:05', '2026-01-02 03:04:05')",
        params![hash],
    )
    .unwrap();
    for (i, pc) in ["PC-A", "PC-B", "PC-C"].iter().enumerate() {
        c.execute(
            "INSERT INTO agents (pc_id, hostname, last_heartbeat, agent_version, os_family, updated_at, agent_cpu_pct, quarantined_versions) VALUES (?1, ?2, ?3, '0.43.56', 'windows', ?3, ?4, ?5)",
            params![pc, format!("host-{i}"), rfc(now - Duration::minutes(i as i64)), 1.5 * i as f64, if i == 2 { Some(r#"["0.43.1"]"#) } else { None }],
        )
        .unwrap();
    }
    c.execute(
        "INSERT INTO executions (exec_id, job_id, version, initiated_by, initiated_at, target_count, success_count, failure_count, status) VALUES ('ex1', 'inventory', '3', 'ann', ?1, 3, 2, 1, 'completed')",
        params![rfc(now - Duration::hours(2))],
    )
    .unwrap();
    for (i, (pc, code)) in [("PC-A", Some(0)), ("PC-B", Some(1)), ("PC-C", None)]
        .iter()
        .enumerate()
    {
        let started = now - Duration::hours(2) + Duration::seconds(i as i64);
        let finished = code.map(|_| rfc(started + Duration::milliseconds(1500)));
        c.execute(
            "INSERT INTO execution_results (result_id, request_id, exec_id, pc_id, exit_code, stdout, stderr, started_at, finished_at, recorded_at, job_id, version) VALUES (?1, 'req1', 'ex1', ?2, ?3, ?4, 'warn', ?5, ?6, ?5, 'inventory', '3')",
            params![format!("r{i}"), pc, code, format!("out of {pc}"), rfc(started), finished],
        )
        .unwrap();
    }
    c.execute_batch(&format!(
        "INSERT INTO audit_log (actor, action, target, payload, occurred_at, stream_seq) VALUES
           ('admin', 'account.create', 'ann', '{{\"role\":\"operator\"}}', '{t1}', 7),
           ('ann', 'exec.create', 'inventory', NULL, '{t2}', NULL);
         INSERT INTO obs_events (pc_id, at, kind, source, event_record_id, payload) VALUES
           ('PC-A', '{t1}', 'logon', 'Security', '101', '{{\"user\":\"x\"}}'),
           ('PC-B', '{t2}', 'crash', 'Application', NULL, 'not json');",
        t1 = rfc(now - Duration::minutes(30)),
        t2 = rfc(now - Duration::minutes(20)),
    ))
    .unwrap();
    // Host samples: 2 PCs, every minute for the last 3 hours, and 2 rows
    // from yesterday (another partition); one in SQLite's own format.
    let first = now - Duration::minutes(180);
    let mut stmt = c
        .prepare("INSERT INTO host_perf_samples (pc_id, at, cpu_pct, cpu_count, mem_used_bytes, mem_total_bytes, net_rx_bytes_per_sec) VALUES (?1, ?2, ?3, 8, ?4, 16000, ?5)")
        .unwrap();
    for pc in ["PC-A", "PC-B"] {
        for m in 0..180 {
            let at = first + Duration::minutes(m);
            stmt.execute(params![
                pc,
                rfc(at),
                (m % 100) as f64,
                1000 + m,
                m as f64 * 0.5
            ])
            .unwrap();
        }
        let yesterday = now - Duration::days(1);
        stmt.execute(params![
            pc,
            yesterday.format("%Y-%m-%d %H:%M:%S").to_string(),
            42.0,
            1,
            2.0
        ])
        .unwrap();
    }
    drop(stmt);
    for (tick, at) in [now - Duration::minutes(2), now - Duration::minutes(1)]
        .iter()
        .enumerate()
    {
        for (pid, name, cpu) in [
            (10, "chrome", 50.0),
            (20, "defender", 20.0),
            (30, "idle", 1.0),
        ] {
            c.execute(
                "INSERT INTO process_perf_samples (pc_id, at, pid, name, cpu_pct, rss_bytes) VALUES ('PC-A', ?1, ?2, ?3, ?4, ?5)",
                params![rfc(*at), pid, name, cpu + tick as f64, pid * 1000],
            )
            .unwrap();
        }
    }
    // Inventory facts as the reference stores them: raw stdout, the
    // display snapshot, "+00:00" timestamps (and one legacy space form).
    for (pc, facts, collected) in [
        (
            "PC-A",
            r#"{"hostname": "host-0", "ram_gb": 16, "disks": [{"model": "ssd", "size_gb": 512}, {"model": "hdd", "size_gb": "2000"}]}"#,
            Some(rfc(now - Duration::hours(2))),
        ),
        ("PC-B", r#"{"hostname":"host-1","ram_gb":32}"#, None),
    ] {
        c.execute(
            "INSERT INTO inventory_facts (pc_id, job_id, facts_json, display_json, summary_json, collected_at, recorded_at) VALUES (?1, 'inventory-hw', ?2, ?3, NULL, ?4, '2026-11-02 03:04:05')",
            params![pc, facts, r#"[{"field":"hostname","label":"Host"}]"#, collected],
        )
        .unwrap();
    }
    // The reference's exploded rows of PC-A's disks, and its history.
    for (model, size) in [("ssd", 512), ("hdd", 2000)] {
        c.execute(
            "INSERT INTO inventory_hw_disks (pc_id, job_id, collected_at, model, size_gb) VALUES ('PC-A', 'inventory-hw', ?1, ?2, ?3)",
            params![rfc(now - Duration::hours(2)), model, size],
        )
        .unwrap();
    }
    for (id, field, identity, kind, before, after, ago) in [
        (
            7,
            "disks",
            Some(r#"{"model":"ssd"}"#),
            "added",
            None,
            Some(r#"{"model":"ssd","size_gb":512}"#),
            30,
        ),
        (
            8,
            "ram_gb",
            None,
            "changed",
            Some(r#"{"value":8}"#),
            Some(r#"{"value":16}"#),
            2,
        ),
        // Past the 90-day retention: skipped.
        (
            9,
            "ram_gb",
            None,
            "added",
            None,
            Some(r#"{"value":4}"#),
            24 * 200,
        ),
    ] {
        c.execute(
            "INSERT INTO inventory_history (id, pc_id, job_id, field_path, identity_json, change_kind, before_json, after_json, observed_at) VALUES (?1, 'PC-A', 'inventory-hw', ?2, ?3, ?4, ?5, ?6, ?7)",
            params![id, field, identity, kind, before, after, rfc(now - Duration::hours(ago))],
        )
        .unwrap();
    }
    (path, first)
}

pub(crate) fn config(dir: &Path, data: &Path) -> PathBuf {
    let path = dir.join("import.toml");
    std::fs::write(
        &path,
        format!("[storage]\ndata_dir = \"{}\"\n", data.display()),
    )
    .unwrap();
    path
}

pub(crate) fn import(config: &Path, source: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kanade-backend"))
        .arg("--config")
        .arg(config)
        .arg("import-sqlite")
        .arg(source)
        .env_remove("KANADE_BACKEND_CONFIG")
        .output()
        .unwrap()
}

/// Every file under `dir` with its bytes, for "left exactly as it was".
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

fn added_line(stderr: &str, table: &str) -> u64 {
    let line = stderr
        .lines()
        .find(|l| l.starts_with(&format!("{table}: read")))
        .unwrap_or_else(|| panic!("no summary for {table} in {stderr}"));
    line.split("added ")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reference_database_imports_once_and_answers_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let (source, first) = build_source(dir.path());
    let source_bytes = std::fs::read(&source).unwrap();
    let data = dir.path().join("data");
    let cfg = config(dir.path(), &data);

    let out = import(&cfg, &source);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    for (table, n) in [
        ("users", 1),
        ("agents", 3),
        ("executions", 1),
        ("execution_results", 3),
        ("audit_log", 2),
        ("obs_events", 2),
        ("host_perf_samples", 362),
        ("process_perf_samples", 6),
        ("inventory_facts", 2),
        ("inventory_history", 2),
    ] {
        assert_eq!(added_line(&stderr, table), n, "{table}: {stderr}");
    }
    assert_eq!(
        std::fs::read(&source).unwrap(),
        source_bytes,
        "the source was modified"
    );
    // Each partition holds one sorted file, as compaction leaves it.
    let files = parquet_files(&data);
    let host_files: Vec<_> = files
        .iter()
        .filter(|f| f.starts_with("host_perf/"))
        .collect();
    assert_eq!(host_files.len(), 2, "{files:?}");

    // A second run adds nothing anywhere.
    let out = import(&cfg, &source);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    for table in [
        "users",
        "agents",
        "executions",
        "execution_results",
        "audit_log",
        "obs_events",
        "host_perf_samples",
        "process_perf_samples",
        "inventory_facts",
        "inventory_history",
    ] {
        assert_eq!(added_line(&stderr, table), 0, "{table}: {stderr}");
    }
    let host_files: Vec<_> = parquet_files(&data)
        .into_iter()
        .filter(|f| f.starts_with("host_perf/"))
        .collect();
    assert_eq!(
        host_files.len(),
        2,
        "compaction folded the second copy: {host_files:?}"
    );

    let nats = Nats::start();
    let b = Backend::start_with_env(
        &nats.url,
        &data,
        "",
        &[("KANADE_JWT_SECRET", "s3cret-for-import-s3cret-for-import")],
    );
    let (_, agents) = b.get("/api/agents").await;
    let agents = agents.as_array().unwrap();
    assert_eq!(agents.len(), 3);
    let c = agents.iter().find(|a| a["pc_id"] == "PC-C").unwrap();
    assert_eq!(
        (c["hostname"].as_str(), c["quarantined_versions"].clone()),
        (Some("host-2"), json!(["0.43.1"]))
    );

    let (_, inv) = b.get("/api/inventory/by-job/inventory-hw").await;
    assert_eq!(inv["total"], 2, "{inv}");
    assert_eq!(
        (
            inv["rows"][0]["facts"]["ram_gb"].as_i64(),
            inv["rows"][1]["pc_id"].as_str()
        ),
        (Some(16), Some("PC-B"))
    );
    assert_eq!(inv["display"][0]["label"], "Host");
    assert_eq!(
        inv["rows"][1]["collected_at"], "2026-11-02T03:04:05Z",
        "without the run's time, the recorded time"
    );
    let (_, pc_a) = b.get("/api/inventory/PC-A").await;
    assert_eq!(pc_a[0]["job_id"], "inventory-hw", "{pc_a}");
    let (_, history) = b.get("/api/inventory/inventory-hw/history/pc/PC-A").await;
    let kinds: Vec<(&str, &str)> = history
        .as_array()
        .unwrap_or_else(|| panic!("{history}"))
        .iter()
        .map(|e| {
            (
                e["field_path"].as_str().unwrap(),
                e["change_kind"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [("ram_gb", "changed"), ("disks", "added")],
        "newest first, the expired one left out: {history}"
    );
    // The reference's explode table answers the same once the manifest
    // is registered: the rows come from the imported facts.
    let manifest = json!({
        "id": "inventory-hw", "version": "1",
        "execute": {"shell": "powershell", "script": "Get-Hw", "timeout": "1m"},
        "inventory": {
            "display": [{"field": "hostname", "label": "Host"}],
            "explode": [{"field": "disks", "table": "inventory_hw_disks", "primary_key": ["model"],
                         "columns": [{"field": "model"}, {"field": "size_gb", "type": "integer"}]}],
        },
    });
    eventually("the manifest registered", || async {
        let r = b
            .call(
                Method::POST,
                "/api/jobs",
                Some(TOKEN),
                Some(manifest.clone()),
            )
            .await;
        (r.0 == 200).then_some(())
    })
    .await;
    let reference: Vec<(String, String, i64)> = {
        let c = Connection::open(&source).unwrap();
        let mut stmt = c
            .prepare("SELECT pc_id, model, size_gb FROM inventory_hw_disks ORDER BY pc_id, model")
            .unwrap();
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap();
        rows.map(Result::unwrap).collect()
    };
    let (status, disks) = b.get("/api/inventory/inventory-hw/search/disks").await;
    assert_eq!(status, 200, "{disks}");
    let ours: Vec<(String, String, i64)> = disks
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["pc_id"].as_str().unwrap().to_string(),
                r["model"].as_str().unwrap().to_string(),
                r["size_gb"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(reference.len(), 2);
    assert_eq!(ours, reference);

    let (_, r0) = b.get("/api/results/r0").await;
    assert_eq!(
        (
            r0["stdout"].as_str(),
            r0["exit_code"].as_i64(),
            r0["exec_id"].as_str()
        ),
        (Some("out of PC-A"), Some(0), Some("ex1"))
    );
    let (_, running) = b.get("/api/results?status=running").await;
    assert_eq!(running.as_array().unwrap().len(), 1);
    let (_, ex) = b.get("/api/executions/ex1").await;
    assert_eq!(ex["execution"]["status"], "completed", "{ex}");
    assert_eq!(ex["results"].as_array().unwrap().len(), 3);
    let (_, audit) = b.get("/api/audit").await;
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["exec.create", "account.create"]);
    let (_, obs) = b.get("/api/obs_events").await;
    let obs = obs["events"].as_array().unwrap();
    assert_eq!(obs.len(), 2);
    assert_eq!(
        obs[0]["payload"], "not json",
        "non-JSON payload kept as text"
    );
    assert_eq!(obs[1]["payload"]["user"], "x");

    // Host samples, one per minute, read back at 1-minute buckets.
    let from = first.to_rfc3339();
    let to = (first + Duration::minutes(180)).to_rfc3339();
    let (status, perf) = b
        .get(&format!(
            "/api/agents/PC-B/perf?from={}&to={}&step=1m",
            crate::common::urlencode(&from),
            crate::common::urlencode(&to)
        ))
        .await;
    assert_eq!(status, 200, "{perf}");
    let points = perf["points"].as_array().unwrap();
    assert_eq!(points.len(), 180);
    for (m, p) in points.iter().enumerate() {
        assert_eq!(p["cpu_pct"].as_f64(), Some((m % 100) as f64));
        assert_eq!(p["mem_used_bytes"].as_f64(), Some(1000.0 + m as f64));
        assert_eq!(p["net_rx_bytes_per_sec"].as_f64(), Some(m as f64 * 0.5));
    }
    let (_, procs) = b.get("/api/agents/PC-A/processes").await;
    let names: Vec<(&str, f64)> = procs["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["cpu_pct"].as_f64().unwrap()))
        .collect();
    assert_eq!(names, [("chrome", 51.0), ("defender", 21.0), ("idle", 2.0)]);

    // The imported account logs in with its old password.
    let (status, _, login) = b
        .call(
            Method::POST,
            "/api/auth/login",
            None,
            Some(json!({"username": "ann", "password": ANN_PW})),
        )
        .await;
    assert_eq!(
        (status, login["role"].as_str()),
        (200, Some("operator")),
        "{login}"
    );
}

#[test]
fn bad_sources_fail_cleanly_and_leave_the_store_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let (good, _) = build_source(dir.path());
    let data = dir.path().join("data");
    let cfg = config(dir.path(), &data);
    assert!(import(&cfg, &good).status.success());
    let before = tree(&data);
    assert!(!before.is_empty());

    // Another application's SQLite database.
    let other = dir.path().join("other.db");
    Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT); INSERT INTO notes (body) VALUES ('hi');")
        .unwrap();
    // Not SQLite at all.
    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![0x5a; 64 * 1024]).unwrap();
    // The good file cut in half.
    let truncated = dir.path().join("truncated.db");
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();

    for (file, expected) in [
        (
            &other,
            "is not a kanade-backend database: it has no table `agents`",
        ),
        (&garbage, "is not a SQLite database"),
        (&truncated, "damaged or truncated"),
        (&dir.path().join("missing.db"), "no such file"),
    ] {
        let out = import(&cfg, file);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{}: {stderr}", file.display());
        assert!(stderr.contains(expected), "{}: {stderr}", file.display());
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(
            tree(&data) == before,
            "{} changed the store",
            file.display()
        );
    }

    // A database another process holds a write lock on.
    let locked = dir.path().join("locked.db");
    std::fs::copy(&good, &locked).unwrap();
    let holder = Connection::open(&locked).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let out = import(&cfg, &locked);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("is locked by another process"), "{stderr}");
    assert!(tree(&data) == before);
    holder.execute_batch("ROLLBACK").unwrap();
}

/// A 0.101 database's deploy plans (and the targets each was applied to)
/// come over with their lifecycle as stored.
#[test]
fn deploy_plans_of_a_0101_database_are_imported() {
    let dir = tempfile::tempdir().unwrap();
    let (source, _) = build_source(dir.path());
    Connection::open(&source)
        .unwrap()
        .execute_batch(
            "CREATE TABLE deploy_plans (plan_id TEXT PRIMARY KEY, record_version INTEGER NOT NULL,
               plan_digest TEXT NOT NULL, content TEXT NOT NULL, job_manifest TEXT NOT NULL,
               job_id TEXT NOT NULL, role TEXT NOT NULL, not_before INTEGER NOT NULL,
               expires_at INTEGER NOT NULL, state TEXT NOT NULL, revision INTEGER NOT NULL,
               created_by TEXT NOT NULL, created_at INTEGER NOT NULL, approved_by TEXT,
               approved_at INTEGER, revoked_by TEXT, revoked_at INTEGER, revoke_reason TEXT);
             CREATE TABLE deploy_plan_applications (plan_id TEXT NOT NULL, pc_id TEXT NOT NULL,
               exec_id TEXT NOT NULL, applied_at INTEGER NOT NULL, PRIMARY KEY (plan_id, pc_id));
             INSERT INTO deploy_plans VALUES ('p1', 1, 'aa', '{\"plan_id\":\"p1\"}', '{\"id\":\"j\"}',
               'j', 'client', 10, 20, 'approved', 1, 'alice', 5, 'bob', 6, NULL, NULL, NULL);
             INSERT INTO deploy_plans VALUES ('p2', 1, 'bb', '{}', '{}', 'j', 'cli', 10, 20,
               'revoked', 2, 'alice', 7, NULL, NULL, 'carol', 8, 'wrong build');
             INSERT INTO deploy_plan_applications VALUES ('p1', 'PC-B', 'e1', 9), ('p1', 'PC-A', 'e1', 9);",
        )
        .unwrap();
    let data = dir.path().join("data");
    let out = import(&config(dir.path(), &data), &source);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(added_line(&stderr, "deploy_plans"), 2, "{stderr}");
    let store = kanade_storage::RelationalStore::open(&data).unwrap();
    let plans = store.deploy_plans().unwrap();
    let ids: Vec<&str> = plans.iter().map(|p| p.plan_id.as_str()).collect();
    assert_eq!(ids, ["p2", "p1"], "newest first");
    let p1 = &plans[1];
    assert_eq!(
        (
            p1.state.as_str(),
            p1.revision,
            p1.approved_by.as_deref(),
            p1.approved_at
        ),
        ("approved", 1, Some("bob"), Some(6))
    );
    assert_eq!(p1.content, "{\"plan_id\":\"p1\"}");
    assert_eq!(p1.applied_targets, ["PC-A", "PC-B"]);
    let p2 = &plans[0];
    assert_eq!(
        (p2.revoked_by.as_deref(), p2.revoke_reason.as_deref()),
        (Some("carol"), Some("wrong build"))
    );
    assert!(p2.applied_targets.is_empty());
}

/// An account of a 0.101 database with a TOTP second factor keeps it:
/// the secret comes over as stored, the password alone answers
/// `mfa_required`, the password and a current code log in.
#[tokio::test(flavor = "multi_thread")]
async fn an_imported_account_keeps_its_second_factor() {
    const SECRET: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
    let dir = tempfile::tempdir().unwrap();
    let (source, _) = build_source(dir.path());
    Connection::open(&source)
        .unwrap()
        .execute_batch(&format!(
            "ALTER TABLE users ADD COLUMN totp_secret TEXT;
             UPDATE users SET totp_secret = '{SECRET}' WHERE username = 'ann';"
        ))
        .unwrap();
    let data = dir.path().join("data");
    let out = import(&config(dir.path(), &data), &source);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let nats = Nats::start();
    let b = Backend::start(&nats.url, &data, "");
    let login = |code: Option<String>| {
        let mut body = json!({"username": "ann", "password": ANN_PW});
        if let Some(c) = code {
            body["totp_code"] = c.into();
        }
        b.call(Method::POST, "/api/auth/login", None, Some(body))
    };
    let (status, _, body) = login(None).await;
    assert_eq!((status, body), (200, json!({"mfa_required": true})));
    let now = u64::try_from(Utc::now().timestamp()).unwrap();
    let code = kanade_backend::auth::mfa::code_at(SECRET, now).unwrap();
    let (status, _, body) = login(Some(code)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["token"].is_string(), "{body}");
}

/// An account of a 0.101 database with a passkey keeps it: the credential
/// (webauthn-rs's JSON, as the reference stores it in `user_passkeys`)
/// comes over with its user handle, and the authenticator signs in to the
/// backend serving the imported store; the account's password still works.
#[tokio::test(flavor = "multi_thread")]
async fn an_imported_account_keeps_its_passkey() {
    use crate::common::soft_passkey::SoftPasskey;
    use webauthn_rs::prelude::{RegisterPublicKeyCredential, Url, Uuid, WebauthnBuilder};
    const ORIGIN: &str = "http://localhost:8080";

    // The credential as the reference made it: webauthn-rs's own
    // registration, answered by the software authenticator.
    let origin = Url::parse(ORIGIN).unwrap();
    let webauthn = WebauthnBuilder::new("localhost", &origin)
        .unwrap()
        .build()
        .unwrap();
    let handle = Uuid::new_v4();
    let (ccr, state) = webauthn
        .start_passkey_registration(handle, "ann", "ann", None)
        .unwrap();
    let (mut key, answer) = SoftPasskey::register(&serde_json::to_value(&ccr).unwrap(), ORIGIN);
    let answer: RegisterPublicKeyCredential = serde_json::from_value(answer).unwrap();
    let passkey = webauthn
        .finish_passkey_registration(&answer, &state)
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let (source, _) = build_source(dir.path());
    let conn = Connection::open(&source).unwrap();
    conn.execute_batch(
        "CREATE TABLE user_passkeys (id INTEGER PRIMARY KEY AUTOINCREMENT,
           username TEXT NOT NULL, user_uuid TEXT NOT NULL, credential_id TEXT NOT NULL UNIQUE,
           passkey TEXT NOT NULL, name TEXT NOT NULL,
           created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP, last_used_at TEXT);",
    )
    .unwrap();
    conn.execute(
        "INSERT INTO user_passkeys (id, username, user_uuid, credential_id, passkey, name)
         VALUES (7, 'ann', ?1, ?2, ?3, 'yubikey')",
        params![
            handle.to_string(),
            base64_url(passkey.cred_id().as_ref()),
            serde_json::to_string(&passkey).unwrap()
        ],
    )
    .unwrap();
    drop(conn);
    let data = dir.path().join("data");
    let out = import(&config(dir.path(), &data), &source);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(added_line(&stderr, "user_passkeys"), 1, "{stderr}");

    let nats = Nats::start();
    let b = Backend::start_configured(
        &nats.url,
        &data,
        "[server.webauthn]\nrp_id = \"localhost\"\nrp_origins = [\"http://localhost:8080\"]",
        "",
        &[],
    );
    let (status, _, start) = b
        .call(
            Method::POST,
            "/api/auth/passkey/login/start",
            None,
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 200, "{start}");
    let body = json!({
        "challenge_id": start["challenge_id"],
        "credential": key.sign_in(&start["options"]),
    });
    let (status, _, login) = b
        .call(
            Method::POST,
            "/api/auth/passkey/login/finish",
            None,
            Some(body),
        )
        .await;
    assert_eq!(status, 200, "{login}");
    let token = login["token"].as_str().unwrap();
    let (status, _, listed) = b
        .call(Method::GET, "/api/auth/passkeys", Some(token), None)
        .await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed[0]["name"], "yubikey", "{listed}");
    assert!(listed[0]["last_used_at"].is_string(), "{listed}");
    let (status, _, _) = b
        .call(
            Method::POST,
            "/api/auth/login",
            None,
            Some(json!({"username": "ann", "password": ANN_PW})),
        )
        .await;
    assert_eq!(status, 200);
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The 0.101 tables with a home here come over (check states, acks and
/// their history, completions, install attempts), idempotently; the rest
/// are named with the reason.
#[test]
fn the_0101_tables_come_over_once_and_the_rest_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let (source, _) = build_source(dir.path());
    let now = Utc::now();
    let recent = now.timestamp() - 600;
    let t = |m: i64| rfc(now - chrono::Duration::minutes(m));
    Connection::open(&source)
        .unwrap()
        .execute_batch(&format!(
            "CREATE TABLE check_status (pc_id TEXT NOT NULL, check_name TEXT NOT NULL, status TEXT NOT NULL,
               detail TEXT, recorded_at TIMESTAMP NOT NULL, label TEXT, PRIMARY KEY (pc_id, check_name));
             INSERT INTO check_status VALUES ('pc1', 'disk', 'fail', 'C: 99%', '{c}', 'Disk');
             CREATE TABLE notification_acks (notification_id TEXT NOT NULL, pc_id TEXT NOT NULL,
               user_sid TEXT NOT NULL, acked_at TIMESTAMP NOT NULL, recorded_at TIMESTAMP NOT NULL,
               account TEXT, unacked_at TIMESTAMP, PRIMARY KEY (notification_id, pc_id, user_sid));
             INSERT INTO notification_acks VALUES ('n1', 'pc1', 'S-1', '{a1}', '{a1}', 'CORP\\ann', NULL);
             CREATE TABLE notification_ack_events (notification_id TEXT NOT NULL, pc_id TEXT NOT NULL,
               user_sid TEXT NOT NULL, kind TEXT NOT NULL, occurred_at TIMESTAMP NOT NULL,
               recorded_at TIMESTAMP NOT NULL, account TEXT);
             INSERT INTO notification_ack_events VALUES
               ('n1', 'pc1', 'S-1', 'acked', '{a1}', '{a1}', 'CORP\\ann'),
               ('n1', 'pc2', 'S-2', 'acked', '{a2}', '{a2}', 'CORP\\bob'),
               ('n1', 'pc2', 'S-2', 'unacked', '{a3}', '{a3}', NULL);
             CREATE TABLE job_completions (job_id TEXT NOT NULL, pc_id TEXT NOT NULL,
               last_success_at TIMESTAMP NOT NULL, PRIMARY KEY (job_id, pc_id));
             INSERT INTO job_completions VALUES ('patch', 'pc9', '{c}');
             CREATE TABLE job_version_completions (job_id TEXT NOT NULL, pc_id TEXT NOT NULL,
               version TEXT NOT NULL, last_success_at TIMESTAMP NOT NULL, PRIMARY KEY (job_id, version, pc_id));
             INSERT INTO job_version_completions VALUES ('patch', 'pc9', '7', '{c}');
             CREATE TABLE install_attempts (id TEXT PRIMARY KEY, issuer TEXT NULL, os TEXT NOT NULL,
               key_hash TEXT NOT NULL, created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL,
               status TEXT NOT NULL DEFAULT 'unreported', download_claimed INTEGER NOT NULL DEFAULT 0,
               seq INTEGER NOT NULL DEFAULT 0);
             INSERT INTO install_attempts VALUES ('att-1', 'ann', 'linux', 'h1', {recent}, {recent} + 3600, 'failed', 1, 2),
               ('att-old', 'ann', 'linux', 'h2', {old}, {old} + 3600, 'succeeded', 1, 1);
             CREATE TABLE install_events (attempt_id TEXT NOT NULL, seq INTEGER, stage TEXT, outcome TEXT,
               exit_code INTEGER, received_at INTEGER, error_kind TEXT NULL, PRIMARY KEY(attempt_id, seq));
             INSERT INTO install_events VALUES ('att-1', 1, 'download', 'progress', 0, {recent}, NULL),
               ('att-1', 2, 'extract', 'failed', 2, {recent}, 'invalid_archive');
             CREATE TABLE agent_meta (pc_id TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL);
             CREATE TABLE feeds (id TEXT);",
            c = t(30),
            a1 = t(20),
            a2 = t(15),
            a3 = t(10),
            old = now.timestamp() - 40 * 86_400,
        ))
        .unwrap();
    let data = dir.path().join("data");
    let cfg = config(dir.path(), &data);
    let out = import(&cfg, &source);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    assert_eq!(added_line(&stderr, "check_status"), 1, "{stderr}");
    assert_eq!(
        added_line(&stderr, "install_attempts"),
        1,
        "older than 30 days left out: {stderr}"
    );
    assert!(
        stderr.contains("agent_meta: not imported: a copy of the broker's agent_meta bucket"),
        "{stderr}"
    );
    assert!(stderr.contains("feeds: not imported"), "{stderr}");
    assert!(!stderr.contains("install_events: not imported"), "{stderr}");
    // Again: nothing new.
    let again = import(&cfg, &source);
    let stderr = String::from_utf8_lossy(&again.stderr).to_string();
    assert!(again.status.success(), "{stderr}");
    assert_eq!(added_line(&stderr, "install_attempts"), 0, "{stderr}");
    assert_eq!(added_line(&stderr, "job_completions"), 0, "{stderr}");
    assert_eq!(added_line(&stderr, "check_status"), 0, "{stderr}");

    let store = kanade_storage::RelationalStore::open(&data).unwrap();
    let checks = store.check_status_by_name("disk").unwrap();
    assert_eq!(
        (
            checks.len(),
            checks[0].status.as_str(),
            checks[0].detail.as_deref()
        ),
        (1, "fail", Some("C: 99%"))
    );
    let acks = store.notification_acks("n1").unwrap();
    let state: Vec<(&str, Option<&str>, bool)> = acks
        .iter()
        .map(|a| {
            (
                a.pc_id.as_str(),
                a.account.as_deref(),
                a.unacked_at.is_some(),
            )
        })
        .collect();
    assert_eq!(
        state,
        [
            ("pc1", Some("CORP\\ann"), false),
            ("pc2", Some("CORP\\bob"), true)
        ]
    );
    assert_eq!(store.job_completions("patch", None).unwrap().len(), 1);
    assert_eq!(
        store
            .job_completions("patch", Some("7"))
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["pc9"]
    );
    let a = store.install_attempt("att-1").unwrap().unwrap();
    assert_eq!((a.status.as_str(), a.seq, a.events.len()), ("failed", 2, 2));
    assert_eq!(a.events[1].error_kind.as_deref(), Some("invalid_archive"));
    assert!(store.install_attempt("att-old").unwrap().is_none());
}

/// A database written by the real kanade-backend 0.101.0 (two real 0.101
/// agents, jobs run and failed and skipped, a check, a schedule, metadata,
/// an operator account; `scripts/build-0101-fixture.sh` makes it) imports
/// whole: every row of every relational table reads back through
/// `POST /api/query` as SQLite reads it from the file, the perf samples
/// are all there, the operator logs in, a second run adds nothing, and
/// what has no home here is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_written_by_kanade_0101_imports_whole() {
    use crate::query_oracle::{canonical_rows, sqlite_rows};
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("kanade-0101.db");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kanade-0101.db"),
        &source,
    )
    .unwrap();
    let data = dir.path().join("data");
    let cfg = config(dir.path(), &data);
    let out = import(&cfg, &source);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    for table in [
        "agents",
        "executions",
        "execution_results",
        "audit_log",
        "users",
    ] {
        assert!(added_line(&stderr, table) > 0, "{table}: {stderr}");
    }
    for skipped in ["agent_meta", "nats_auth_occurrences", "backend_notices"] {
        assert!(
            stderr.contains(&format!("{skipped}: not imported")),
            "{skipped}: {stderr}"
        );
    }
    let again = import(&cfg, &source);
    let again_err = String::from_utf8_lossy(&again.stderr).to_string();
    assert!(again.status.success(), "{again_err}");
    for table in [
        "agents",
        "executions",
        "execution_results",
        "audit_log",
        "obs_events",
    ] {
        assert_eq!(added_line(&again_err, table), 0, "{table}: {again_err}");
    }

    let nats = Nats::start();
    // Keep the reaper off the fixture's runs, whatever today's date.
    let b = Backend::start_configured(
        &nats.url,
        &data,
        "",
        "[housekeeping]\nreap_after_hours = 100000",
        &[],
    );
    let oracle = Connection::open(&source).unwrap();
    let mut compared = 0;
    for (table, columns) in [
        (
            "agents",
            "pc_id, hostname, os_family, agent_version, last_heartbeat, agent_cpu_pct, \
             agent_rss_bytes, agent_disk_read_bytes, agent_disk_written_bytes, agent_arch, \
             last_logon_user, last_logon_display_name",
        ),
        (
            "executions",
            "exec_id, job_id, version, initiated_by, initiated_at, target_count, success_count, \
             failure_count, status",
        ),
        (
            "execution_results",
            "result_id, request_id, exec_id, pc_id, exit_code, stdout, stderr, started_at, \
             finished_at, job_id, version, skipped",
        ),
        ("audit_log", "actor, action, target, payload, occurred_at"),
        (
            "obs_events",
            "pc_id, at, kind, source, event_record_id, payload",
        ),
        (
            "check_status",
            "pc_id, check_name, status, detail, recorded_at",
        ),
        (
            "host_perf_samples",
            "pc_id, at, cpu_pct, mem_used_bytes, mem_total_bytes",
        ),
        (
            "process_perf_samples",
            "pc_id, at, pid, name, cpu_pct, rss_bytes",
        ),
    ] {
        let sql = format!("SELECT {columns} FROM {table}");
        let expected = sqlite_rows(&oracle, &sql);
        assert!(!expected.is_empty(), "the fixture has {table} rows");
        let (status, _, answer) = b
            .call(
                Method::POST,
                "/api/query",
                Some(TOKEN),
                Some(json!({"sql": sql, "limit": 10_000})),
            )
            .await;
        assert_eq!(status, 200, "{sql}: {answer}");
        let got: Vec<Vec<serde_json::Value>> =
            serde_json::from_value(answer["rows"].clone()).unwrap();
        assert_eq!(
            canonical_rows(&got, false),
            canonical_rows(&expected, false),
            "{table} differs from the 0.101 database"
        );
        compared += got.len();
    }
    // 2 agents, 5 runs, 12 results, 21 audit rows, 4 events, 2 checks,
    // 26 host and 240 process samples.
    assert_eq!(compared, 312);
    let (status, _, login) = b
        .call(
            Method::POST,
            "/api/auth/login",
            None,
            Some(json!({"username": "alice", "password": "fixture-alice-pw-123"})),
        )
        .await;
    assert_eq!(
        (status, login["role"].as_str()),
        (200, Some("operator")),
        "{login}"
    );
}
