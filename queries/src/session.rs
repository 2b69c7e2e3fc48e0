//! The DataFusion side: one long-lived session per query object, the
//! parsed footers of the tables' files cached across queries, and each
//! query's snapshot exposed as one table ([`crate::provider`]).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{Array, Float64Array, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::{cast, col, lit, DataFrame, Expr, SessionConfig, SessionContext};
use kanade_storage::{RelationalStore, Snapshot, TimeSeriesTable};

use crate::footer::FileCache;
use crate::provider::{ProviderStats, ScanCounters, SnapshotTable};
use crate::{Error, Result};

/// One session for every query, the metadata cache of the files it
/// reads and what its scans planned.
#[derive(Clone)]
pub(crate) struct Engine {
    ctx: SessionContext,
    pub(crate) files: Arc<FileCache>,
    pub(crate) scans: Arc<ScanCounters>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("session", &self.ctx.session_id())
            .field("scans", &self.scans)
            .finish_non_exhaustive()
    }
}

impl Engine {
    pub(crate) fn new(table: &'static str) -> Result<Self> {
        let runtime = RuntimeEnvBuilder::new()
            .build_arc()
            .map_err(Error::df(table))?;
        Ok(Self {
            ctx: session_on(&runtime),
            files: Arc::default(),
            scans: Arc::default(),
        })
    }

    /// The session (cheap: it shares the engine's state). Its catalog is
    /// shared by every query: read tables with `read_table`, never
    /// register them by name (see [`Self::private_session`]).
    pub(crate) fn session(&self) -> SessionContext {
        self.ctx.clone()
    }

    /// A session of its own on the engine's runtime, for SQL text that
    /// names a table it registers: concurrent queries would otherwise see
    /// each other's tables.
    pub(crate) fn private_session(&self) -> SessionContext {
        session_on(&self.ctx.runtime_env())
    }

    /// The snapshot's head and files as one DataFrame of the session.
    pub(crate) fn frame(&self, table: &'static str, snapshot: &Snapshot) -> Result<DataFrame> {
        let provider = SnapshotTable::new(
            table,
            snapshot.clone(),
            Arc::clone(&self.files),
            Arc::clone(&self.scans),
        );
        self.ctx
            .read_table(Arc::new(provider))
            .map_err(Error::df(table))
    }

    pub(crate) fn provider_stats(&self) -> ProviderStats {
        self.scans.read()
    }
}

/// Answers the perf questions over the two time-series tables.
#[derive(Debug, Clone)]
pub struct PerfQueries {
    pub(crate) host: Arc<TimeSeriesTable>,
    pub(crate) process: Arc<TimeSeriesTable>,
    pub(crate) store: RelationalStore,
    pub(crate) engine: Engine,
    /// Fleet series answered with the table's in-memory windows.
    pub(crate) fleet_from_memory: Arc<std::sync::atomic::AtomicU64>,
    /// Parsed footers and page indexes of the tables' files (the
    /// engine's, shared with the fast paths).
    pub(crate) files: Arc<FileCache>,
}

impl PerfQueries {
    /// Queries over `host` (host_perf), `process` (process_perf) and the
    /// relational `store`.
    pub fn new(
        host: Arc<TimeSeriesTable>,
        process: Arc<TimeSeriesTable>,
        store: RelationalStore,
    ) -> Result<Self> {
        let engine = Engine::new("perf")?;
        Ok(Self {
            host,
            process,
            store,
            files: Arc::clone(&engine.files),
            engine,
            fleet_from_memory: Arc::default(),
        })
    }

    /// How many file footers (with page indexes) the fast paths have
    /// parsed: each file once, while it stays in the cache.
    pub fn file_metadata_loads(&self) -> u64 {
        self.files.loads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many fleet series took their whole 5-minute windows from the
    /// host table's in-memory windows.
    pub fn fleet_answers_from_memory(&self) -> u64 {
        self.fleet_from_memory
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// What the table scans of the SQL paths planned so far.
    pub fn provider_stats(&self) -> ProviderStats {
        self.engine.provider_stats()
    }

    pub(crate) fn session(&self) -> SessionContext {
        self.engine.session()
    }
}

/// A session on `runtime` for small queries: two partitions, filters
/// pushed into the Parquet scan, statistics and the page index used.
pub(crate) fn session_on(runtime: &Arc<RuntimeEnv>) -> SessionContext {
    session_with(runtime, |_| {})
}

/// [`session_on`] with `tweak` applied to its configuration.
pub(crate) fn session_with(
    runtime: &Arc<RuntimeEnv>,
    tweak: impl FnOnce(&mut SessionConfig),
) -> SessionContext {
    let mut config = SessionConfig::new()
        .with_target_partitions(2)
        .with_collect_statistics(true);
    let opts = config.options_mut();
    opts.execution.parquet.pushdown_filters = true;
    opts.execution.parquet.reorder_filters = true;
    opts.execution.parquet.enable_page_index = true;
    tweak(&mut config);
    SessionContext::new_with_config_rt(config, Arc::clone(runtime))
}

/// A UTC timestamp literal comparable with the `at` column.
pub(crate) fn lit_ts(t: DateTime<Utc>) -> Expr {
    lit_micros(t.timestamp_micros())
}

/// A UTC timestamp literal of `micros` since the epoch.
pub(crate) fn lit_micros(micros: i64) -> Expr {
    lit(ScalarValue::TimestampMicrosecond(
        Some(micros),
        Some("UTC".into()),
    ))
}

/// `at` floored to a multiple of `step_secs`, as unix seconds.
pub(crate) fn bucket_expr(step_secs: i64) -> Expr {
    let secs = cast(col("at"), DataType::Int64) / lit(1_000_000_i64);
    (secs / lit(step_secs)) * lit(step_secs)
}

/// A column as f64 (casting integer aggregates).
pub(crate) fn f64_expr(column: &str) -> Expr {
    cast(col(column), DataType::Float64)
}

pub(crate) async fn collect(table: &'static str, df: DataFrame) -> Result<Vec<RecordBatch>> {
    df.collect().await.map_err(Error::df(table))
}

pub(crate) fn column<'a, T: 'static>(
    table: &'static str,
    batch: &'a RecordBatch,
    name: &str,
) -> Result<&'a T> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| Error::Shape {
            table,
            message: format!("column {name} missing or of an unexpected type"),
        })
}

pub(crate) fn opt_f64(a: &Float64Array, i: usize) -> Option<f64> {
    a.is_valid(i).then(|| a.value(i))
}

pub(crate) fn ts(a: &TimestampMicrosecondArray, i: usize) -> Option<DateTime<Utc>> {
    a.is_valid(i)
        .then(|| DateTime::<Utc>::from_timestamp_micros(a.value(i)))
        .flatten()
}

pub(crate) fn secs_to_time(secs: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(secs, 0).unwrap_or_default()
}

/// A column of a result as plain `Utf8` (casting views and dictionaries).
pub(crate) fn text_column(
    table: &'static str,
    batch: &RecordBatch,
    name: &str,
) -> Result<datafusion::arrow::array::StringArray> {
    let shape = |message: String| Error::Shape { table, message };
    let c = batch
        .column_by_name(name)
        .ok_or_else(|| shape(format!("column {name} missing")))?;
    let c =
        datafusion::arrow::compute::cast(c, &DataType::Utf8).map_err(|e| shape(e.to_string()))?;
    c.as_any()
        .downcast_ref::<datafusion::arrow::array::StringArray>()
        .cloned()
        .ok_or_else(|| shape(format!("column {name} is not text")))
}
