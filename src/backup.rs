//! Online backups of the whole system and their check.
//!
//! A backup is a data directory of its own plus, under `broker/`, the KV
//! buckets and object stores of the control plane (see [`broker`]). It is
//! taken by the running backend, the one process that may open its
//! files, while ingest goes on: each perf table's write-ahead log and
//! file list together (its files hard-linked), then the redb database as
//! of its last commit, then the broker's buckets and stores, then the
//! manifest. `kanade-backend restore` puts the broker's half into an
//! empty broker and copies the data into an empty data directory.

pub mod broker;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use kanade_storage::{RelationalStore, TableBackup, TimeSeriesConfig, TimeSeriesTable};
use serde::Serialize;

use crate::tables::Tables;

/// Written last into a backup: what it holds.
pub const MANIFEST: &str = "backup.json";

#[derive(Debug, Serialize, serde::Deserialize)]
pub struct Manifest {
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub backend_version: String,
    pub relational_bytes: u64,
    pub tables: Vec<TableEntry>,
    /// The broker's half; absent in backups of the data directory alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<broker::BrokerManifest>,
}

#[derive(Debug, Serialize, serde::Deserialize)]
pub struct TableEntry {
    pub table: String,
    pub files: u64,
    pub file_bytes: u64,
    pub wal_bytes: u64,
}

/// Refuses a destination that holds anything: a backup never overwrites.
pub fn check_empty(dest: &Path) -> std::result::Result<(), String> {
    match dest.read_dir().map(|mut d| d.next().is_some()) {
        Ok(true) => Err(format!(
            "{} is not empty; a backup never overwrites",
            dest.display()
        )),
        _ => Ok(()),
    }
}

/// Copies the data directory into `dest`, which must not exist or be
/// empty; the manifest is not written yet (see [`finish`]).
pub fn take_data(tables: &Tables, store: &RelationalStore, dest: &Path) -> Result<Manifest> {
    check_empty(dest).map_err(anyhow::Error::msg)?;
    std::fs::create_dir_all(dest).with_context(|| format!("create {}", dest.display()))?;
    let created_at = chrono::Utc::now();
    let mut entries = Vec::new();
    for t in tables.each() {
        let b: TableBackup = t
            .backup_to(dest)
            .with_context(|| format!("back up {}", t.spec().name))?;
        entries.push(TableEntry {
            table: t.spec().name.into(),
            files: b.files,
            file_bytes: b.file_bytes,
            wal_bytes: b.wal_bytes,
        });
    }
    let relational_bytes = store.backup_to(dest).context("back up the redb database")?;
    let manifest = Manifest {
        created_at,
        backend_version: env!("CARGO_PKG_VERSION").into(),
        relational_bytes,
        tables: entries,
        broker: None,
    };
    Ok(manifest)
}

/// Writes the manifest, last: a backup without one is unfinished.
pub fn finish(dest: &Path, manifest: &Manifest) -> Result<()> {
    let path = dest.join(MANIFEST);
    let mut f =
        std::fs::File::create(&path).with_context(|| format!("create {}", path.display()))?;
    std::io::Write::write_all(&mut f, &serde_json::to_vec_pretty(manifest)?)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("write {}", path.display()))
}

/// Reads the manifest of a finished backup.
pub fn manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST);
    let text = std::fs::read(&path)
        .with_context(|| format!("{} missing: not a finished backup", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("{} is not a manifest", path.display()))
}

/// What a check of a backup found.
#[derive(Debug, Serialize)]
pub struct Verified {
    pub dir: PathBuf,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// Rows per perf table, every file decoded.
    pub perf_rows: Vec<(String, u64)>,
    /// Rows per redb table.
    pub relational_rows: Vec<(String, u64)>,
    /// Keys per KV bucket (`kv/<bucket>`) and objects per store
    /// (`objects/<store>`), every file checked; absent for a backup of
    /// the data directory alone.
    pub broker: Option<std::collections::BTreeMap<String, u64>>,
}

/// Checks a backup: its manifest, every perf file decoded and every
/// write-ahead log record replayed, the redb database opened (every page
/// checksum was checked when the backup was taken) and its tables read,
/// every bucket file and object of the broker's half against its size
/// and SHA-256.
pub fn verify(dir: &Path) -> Result<Verified> {
    let manifest = manifest(dir)?;
    let mut perf_rows = Vec::new();
    let specs = [
        &kanade_storage::HOST_PERF,
        &kanade_storage::PROCESS_PERF,
        &kanade_storage::INVENTORY_HISTORY,
    ];
    for spec in specs {
        let entry = match manifest.tables.iter().find(|t| t.table == spec.name) {
            Some(e) => e,
            // Backups taken before the table existed do not list it.
            None if spec.name == kanade_storage::INVENTORY_HISTORY.name => continue,
            None => bail!("the manifest lists no {}", spec.name),
        };
        // Opening applies no retention: the backup is checked as taken.
        let table = TimeSeriesTable::open(spec, dir, TimeSeriesConfig::default())
            .with_context(|| format!("open {}", spec.name))?;
        let files = table.snapshot(None).files().len() as u64;
        if files != entry.files {
            bail!(
                "{}: {files} files in the backup, {} in its manifest",
                spec.name,
                entry.files
            );
        }
        let rows = table
            .verify()
            .with_context(|| format!("read every row of {}", spec.name))?;
        perf_rows.push((spec.name.to_string(), rows));
    }
    let store = RelationalStore::open(dir).context("open the redb database")?;
    let relational_rows = store.table_rows().context("read the redb tables")?;
    let broker = match &manifest.broker {
        Some(b) => Some(broker::verify(dir, b).context("the broker's half")?),
        None => None,
    };
    Ok(Verified {
        dir: dir.to_path_buf(),
        created_at: manifest.created_at,
        perf_rows,
        relational_rows,
        broker,
    })
}
