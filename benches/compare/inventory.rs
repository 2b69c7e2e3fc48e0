//! Fleet-wide inventory search, side by side: the reference's explode
//! table in SQLite (its DDL, an index on `name`, DELETE + INSERT of a PC's
//! rows per scan, its search SQL) and ours (facts in redb, the exploded
//! Parquet file built from them, DataFusion). Full scale: 3,000 PCs × 300
//! installed applications.

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use kanade_queries::inventory::{ExplodeIndex, Filter, Kind, Layout, RefreshPolicy};
use kanade_storage::{InventoryFactRecord, RelationalStore};
use rusqlite::{params, Connection};
use serde_json::{json, Value};

use super::{noise, pc_name as pc, time, Report};

pub struct InventoryScale {
    pub pcs: usize,
    pub apps: usize,
}

pub const FULL: InventoryScale = InventoryScale {
    pcs: 3_000,
    apps: 300,
};
pub const QUICK: InventoryScale = InventoryScale { pcs: 40, apps: 30 };

const JOB: &str = "inventory-sw";
/// Applications every PC is drawn from; the first few are on almost all.
const CATALOG: u64 = 4_000;

/// One PC's installed applications: a few common ones (Chrome on ~90 %,
/// at versions 110–125) and the rest from a long tail.
fn apps(pc_index: usize, n: usize) -> Vec<Value> {
    let seed = pc_index as u64;
    let mut out = Vec::with_capacity(n);
    let mut seen = std::collections::HashSet::new();
    if noise(seed, 1) < 0.9 {
        let minor = 110 + (noise(seed, 2) * 16.0) as u64;
        out.push(json!({"name": "Google Chrome", "publisher": "Google LLC",
                        "version": format!("{minor}.0.{}", (noise(seed, 3) * 6000.0) as u64),
                        "size_mb": 300 + (noise(seed, 4) * 200.0) as u64}));
        seen.insert(0);
    }
    let mut k = 0u64;
    while out.len() < n {
        k += 1;
        let id = 1 + (noise(seed, 100 + k).powi(3) * CATALOG as f64) as u64;
        if !seen.insert(id) {
            continue;
        }
        out.push(json!({"name": format!("App {id:04}"), "publisher": format!("Vendor {}", id % 97),
                        "version": format!("{}.{}.{}", id % 9 + 1, (noise(seed, 200 + k) * 30.0) as u64, id % 13),
                        "size_mb": (noise(seed, 300 + k) * 2000.0) as u64}));
    }
    out
}

fn layout() -> Layout {
    Layout {
        manifest_id: JOB.into(),
        field: "apps".into(),
        table: "inventory_sw_apps".into(),
        columns: vec![
            ("name".into(), Kind::Text),
            ("publisher".into(), Kind::Text),
            ("version".into(), Kind::Text),
            ("size_mb".into(), Kind::Integer),
        ],
        primary_key: vec!["name".into()],
        track_history: false,
    }
}

/// One search: its label, our filters, the reference's WHERE clause and
/// its values.
type Search = (
    &'static str,
    Vec<(&'static str, &'static str)>,
    &'static str,
    Vec<String>,
);

/// The searches both sides answer.
fn searches() -> Vec<Search> {
    vec![
        (
            "name = Google Chrome and version < 120",
            vec![("name", "Google Chrome"), ("version__lt", "120")],
            "name = ?2 AND version < ?3",
            vec!["Google Chrome".into(), "120".into()],
        ),
        (
            "name contains \"app 01\"",
            vec![("name__contains", "app 01")],
            "name LIKE ?2 ESCAPE '\\'",
            vec!["%app 01%".into()],
        ),
        (
            "size_mb > 1990",
            vec![("size_mb__gt", "1990")],
            "size_mb > ?2",
            vec!["1990".into()],
        ),
    ]
}

type Row = (String, String, String);

fn sqlite_search(conn: &Connection, clause: &str, values: &[String]) -> Vec<Row> {
    let sql = format!(
        "SELECT pc_id, collected_at, name, publisher, version, size_mb FROM inventory_sw_apps \
         WHERE job_id = ?1 AND {clause} ORDER BY pc_id, collected_at DESC LIMIT 5000"
    );
    let mut stmt = conn.prepare_cached(&sql).unwrap();
    let mut binds: Vec<&dyn rusqlite::ToSql> = vec![&JOB];
    for v in values {
        binds.push(v);
    }
    let rows = stmt
        .query_map(binds.as_slice(), |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(4)?,
            ))
        })
        .unwrap();
    let mut out: Vec<Row> = rows.map(Result::unwrap).collect();
    out.sort();
    out
}

/// Runs both sides and adds their rows to `r`; panics if they disagree.
pub fn run(s: &InventoryScale, dir: &Path, r: &mut Report) {
    let collected: DateTime<Utc> = Utc::now();
    let scans: Vec<(String, String)> = (0..s.pcs)
        .map(|i| {
            (
                pc(i),
                json!({"os": "11", "apps": apps(i, s.apps)}).to_string(),
            )
        })
        .collect();
    let rows = (s.pcs * s.apps) as f64;

    // SQLite: the reference's table, DELETE + INSERT per PC per scan.
    let conn = Connection::open(dir.join("inventory.db")).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
         CREATE TABLE inventory_sw_apps (pc_id TEXT NOT NULL, job_id TEXT NOT NULL,
           collected_at TIMESTAMP, \"name\" TEXT, \"publisher\" TEXT, \"version\" TEXT,
           \"size_mb\" INTEGER, PRIMARY KEY (pc_id, job_id, \"name\"));
         CREATE INDEX idx_inventory_sw_apps_name ON inventory_sw_apps(\"name\");",
    )
    .unwrap();
    let t = Instant::now();
    for (pc_id, stdout) in &scans {
        let v: Value = serde_json::from_str(stdout).unwrap();
        let tx = conn.unchecked_transaction().unwrap();
        tx.execute(
            "DELETE FROM inventory_sw_apps WHERE pc_id = ?1 AND job_id = ?2",
            params![pc_id, JOB],
        )
        .unwrap();
        {
            let mut ins = tx
                .prepare_cached(
                    "INSERT INTO inventory_sw_apps (pc_id, job_id, collected_at, name, publisher, version, size_mb) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .unwrap();
            for a in v["apps"].as_array().unwrap() {
                ins.execute(params![
                    pc_id,
                    JOB,
                    collected.to_rfc3339(),
                    a["name"].as_str(),
                    a["publisher"].as_str(),
                    a["version"].as_str(),
                    a["size_mb"].as_i64()
                ])
                .unwrap();
            }
        }
        tx.commit().unwrap();
    }
    let sqlite_load = t.elapsed();
    let sqlite_bytes = super::sqlite_bytes(&dir.join("inventory.db"));

    // Ours: facts in redb (what the projector writes), then the dataset.
    let ours_dir = dir.join("ours-inventory");
    std::fs::create_dir_all(&ours_dir).unwrap();
    let store = RelationalStore::open(&ours_dir).unwrap();
    let t = Instant::now();
    for chunk in scans.chunks(100) {
        let facts: Vec<InventoryFactRecord> = chunk
            .iter()
            .map(|(pc_id, stdout)| InventoryFactRecord {
                pc_id: pc_id.clone(),
                manifest_id: JOB.into(),
                facts_json: stdout.clone(),
                display_json: "[]".into(),
                summary_json: None,
                collected_at: collected,
                recorded_at: collected,
            })
            .collect();
        store.put_inventory_facts(&facts).unwrap();
    }
    let facts_load = t.elapsed();
    let index = std::sync::Arc::new(ExplodeIndex::open(&ours_dir, store.clone()).unwrap());
    let l = layout();
    super::reset_peak_rss();
    let rss_before = super::peak_rss_mib();
    let t = Instant::now();
    index
        .refresh(&l, RefreshPolicy::default())
        .expect("build the dataset");
    let build = t.elapsed();
    let rss_build = super::peak_rss_mib();
    let parquet_bytes = super::dir_bytes(&ours_dir.join("inventory"));
    assert_eq!(
        index.stats(&l).file_rows as f64,
        rows,
        "every app row in the file"
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1e3);
    r.line(
        &format!("inventory load, {} PCs × {} apps", s.pcs, s.apps),
        format!("{} (explode table)", ms(sqlite_load)),
        format!("{} facts + {} Parquet build", ms(facts_load), ms(build)),
        String::new(),
    );
    let mib = |m: Option<f64>| m.map_or("n/a".into(), |m| format!("{m:.0} MiB"));
    r.line(
        "  peak RSS of the process: before the build, during it",
        String::new(),
        format!("{}, {}", mib(rss_before), mib(rss_build)),
        String::new(),
    );
    r.line(
        "inventory rows on disk (per row)",
        format!(
            "{:.1} MB ({:.0} B)",
            sqlite_bytes as f64 / 1e6,
            sqlite_bytes as f64 / rows
        ),
        format!(
            "{:.1} MB ({:.1} B) Parquet",
            parquet_bytes as f64 / 1e6,
            parquet_bytes as f64 / rows
        ),
        format!("1/{:.1}", sqlite_bytes as f64 / parquet_bytes.max(1) as f64),
    );
    for (label, ours, clause, values) in searches() {
        let filters: Vec<Filter> = ours
            .iter()
            .map(|(k, v)| Filter::parse(&l, k, v).unwrap())
            .collect();
        let (a, theirs) = time(|| sqlite_search(&conn, clause, &values));
        let (b, page) = time(|| rt.block_on(index.search(&l, &filters, 0, 5000)).unwrap());
        let mut mine: Vec<Row> = page
            .rows
            .iter()
            .map(|m| {
                let s = |k: &str| m[k].as_str().unwrap_or_default().to_string();
                (s("pc_id"), s("name"), s("version"))
            })
            .collect();
        mine.sort();
        assert!(
            !theirs.is_empty(),
            "{label}: the SQLite design found nothing"
        );
        assert_eq!(
            mine, theirs,
            "{label}: both designs must find the same rows"
        );
        r.time(
            &format!("inventory search: {label} ({} rows)", theirs.len()),
            a,
            b,
        );
    }
    // The operator's SQL over the same table: software on at least a
    // third of the PCs.
    let q = super::sql::engine(&ours_dir, store);
    let extras = kanade_queries::SqlExtras {
        explode: vec![l.clone()],
        explode_index: Some(std::sync::Arc::clone(&index)),
        ..Default::default()
    };
    super::sql::compare(
        r,
        &format!("software on ≥ {} PCs", s.pcs / 3),
        &conn,
        &rt,
        &q,
        &extras,
        &format!(
            "SELECT name, count(DISTINCT pc_id) AS pcs FROM inventory_sw_apps \
             GROUP BY name HAVING count(DISTINCT pc_id) >= {} ORDER BY pcs DESC, name",
            s.pcs / 3
        ),
    );

    // A changed PC is read from redb until the next build: the cost of a
    // search right after a fleet-wide rescan of 64 PCs.
    index.note_changed(JOB, scans.iter().take(64).map(|(p, _)| p.as_str()));
    let filters: Vec<Filter> = searches()[0]
        .1
        .iter()
        .map(|(k, v)| Filter::parse(&l, k, v).unwrap())
        .collect();
    let (dirty, _) = time(|| rt.block_on(index.search(&l, &filters, 0, 5000)).unwrap());
    r.line(
        "  same first search with 64 PCs rescanned since the build",
        String::new(),
        format!("{:.2} ms", dirty.as_secs_f64() * 1e3),
        String::new(),
    );
}
