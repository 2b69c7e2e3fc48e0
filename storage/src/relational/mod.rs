//! Relational projections in redb: one table per entity, each value a
//! self-describing JSON document (a field added later reads as its default
//! from rows written before it existed), and index tables for every order
//! the API sorts or filters by, written in the same transaction as the row.
//! redb gives one writer and many MVCC readers: a reader never waits for
//! the projectors.

mod agents;
mod audit;
mod check_status;
mod codec;
mod completions;
mod deploy_plans;
mod executions;
mod install_attempts;
mod inventory;
mod notification_acks;
mod obs_events;
mod passkeys;
mod positions;
mod results;
mod rollout;
mod sql_scan;
mod users;

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableTable, TableDefinition, WriteTransaction};

use crate::{Error, Result};

pub use agents::{AgentRecord, AgentReported, HeartbeatUpdate};
pub use audit::AuditRecord;
pub use check_status::{CheckChange, CheckStatusRecord};
pub use completions::CompletionRow;
pub use deploy_plans::DeployPlanRecord;
pub use executions::ExecutionRecord;
pub use install_attempts::{InstallAttempt, InstallEvent, Reported};
pub use inventory::{InventoryFactRecord, InventoryPage};
pub use notification_acks::{AckEvent, NotificationAckRecord};
pub use obs_events::{ObsRecord, ObsScan};
pub use passkeys::{PasskeyAdd, PasskeyRecord};
pub use positions::StreamPosition;
pub use results::{
    FinishedRun, JobPcStanding, LatestRun, ResultRecord, RunOutcome, RunTime, StartedRun,
};
pub use rollout::PendingWave;
pub use sql_scan::SqlTable;
pub use users::{
    PasswordSetupRecord, PermissionGroupRecord, SetupLookup, UserChange, UserRecord, UserUpdate,
    ADMIN_ROLE,
};

/// The redb database of the backend (`<data_dir>/kanade.redb`).
#[derive(Clone)]
pub struct RelationalStore {
    db: Arc<Database>,
    /// The database file, for [`RelationalStore::backup_to`].
    path: Arc<Path>,
}

impl std::fmt::Debug for RelationalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelationalStore").finish_non_exhaustive()
    }
}

/// File name of the database inside the data directory.
pub const FILE_NAME: &str = "kanade.redb";

impl RelationalStore {
    /// Opens (or creates) the database in `data_dir` and makes sure every
    /// table exists, so readers never meet a missing table.
    pub fn open(data_dir: &Path) -> Result<Self> {
        let path = data_dir.join(FILE_NAME);
        let db = Database::create(&path).map_err(|e| Error::redb(&path, e))?;
        let store = Self {
            db: Arc::new(db),
            path: path.into(),
        };
        store.ensure_tables()?;
        Ok(store)
    }

    /// Copies the database as of its last commit into the data directory
    /// `dest` (as `kanade.redb`), returning its size. Writers wait while the
    /// file is copied (an empty write transaction holds them off; redb
    /// writes nothing between commits); readers do not. The copy is then
    /// opened once, which checks every page's checksum and leaves it
    /// cleanly closed. (The file copy needs advisory locks: on Windows,
    /// whose locks are mandatory, it fails rather than copy a live file.)
    pub fn backup_to(&self, dest: &Path) -> Result<u64> {
        std::fs::create_dir_all(dest).map_err(Error::io(dest))?;
        let to = dest.join(FILE_NAME);
        let partial = dest.join(format!("{FILE_NAME}.partial"));
        let bytes = {
            let _writers_wait = self.db.begin_write().map_err(Error::redb_op)?;
            let bytes = std::fs::copy(&self.path, &partial).map_err(Error::io(&partial))?;
            std::fs::File::open(&partial)
                .and_then(|f| f.sync_all())
                .map_err(Error::io(&partial))?;
            bytes
        };
        let copy = Database::open(&partial).map_err(|e| Error::redb(&partial, e))?;
        drop(copy);
        std::fs::rename(&partial, &to).map_err(Error::io(&to))?;
        crate::timeseries::fsync_dir(dest)?;
        Ok(bytes)
    }

    /// Every table and its row count (reads a snapshot).
    pub fn table_rows(&self) -> Result<Vec<(String, u64)>> {
        use redb::{ReadableDatabase, ReadableTableMetadata, TableHandle};
        let txn = self.db.begin_read().map_err(Error::redb_op)?;
        let mut out = Vec::new();
        for handle in txn.list_tables().map_err(Error::redb_op)? {
            let name = handle.name().to_string();
            let table = txn.open_untyped_table(handle).map_err(Error::redb_op)?;
            out.push((name, table.len().map_err(Error::redb_op)?));
        }
        out.sort();
        Ok(out)
    }

    fn ensure_tables(&self) -> Result<()> {
        let txn = self.db.begin_write().map_err(Error::redb_op)?;
        agents::ensure_tables(&txn)?;
        audit::ensure_tables(&txn)?;
        check_status::ensure_tables(&txn)?;
        inventory::ensure_tables(&txn)?;
        install_attempts::ensure_tables(&txn)?;
        executions::ensure_tables(&txn)?;
        notification_acks::ensure_tables(&txn)?;
        obs_events::ensure_tables(&txn)?;
        positions::ensure_tables(&txn)?;
        results::ensure_tables(&txn)?;
        users::ensure_tables(&txn)?;
        passkeys::ensure_tables(&txn)?;
        rollout::ensure_tables(&txn)?;
        completions::ensure_tables(&txn)?;
        deploy_plans::ensure_tables(&txn)?;
        build_index_once(&txn, "results_by_job", results::build_job_indexes)?;
        build_index_once(&txn, "results_run_times", results::build_run_times)?;
        build_index_once(&txn, "job_completions", completions::build)?;
        build_index_once(
            &txn,
            "executions_by_job_status",
            executions::build_job_index,
        )?;
        txn.commit().map_err(Error::redb_op)
    }
}

/// Index tables added after a database was first written, by name → the
/// build that filled them.
const INDEX_BUILDS: TableDefinition<&str, u32> = TableDefinition::new("index_builds");

/// Runs `build` unless `name` is recorded as built, then records it: an
/// index added in a later version is filled once from the existing rows.
fn build_index_once(
    txn: &WriteTransaction,
    name: &str,
    build: fn(&WriteTransaction) -> Result<bool>,
) -> Result<()> {
    let mut builds = txn.open_table(INDEX_BUILDS).map_err(Error::redb_op)?;
    if builds.get(name).map_err(Error::redb_op)?.is_some() {
        return Ok(());
    }
    if build(txn)? {
        tracing::info!(index = name, "index built from existing rows");
    }
    builds.insert(name, 1).map_err(Error::redb_op)?;
    Ok(())
}
