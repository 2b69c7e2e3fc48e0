//! A snapshot of one time-series table as a DataFusion table.
//!
//! The engine already knows every file of the snapshot, and the file
//! cache holds each immutable file's parsed footer and page index, so
//! planning a scan lists nothing and infers nothing: the filters' bounds
//! on `at` and `pc_id` pick the row groups and pages that can hold
//! matching rows (the same plan the fast paths read), each kept file goes
//! to DataFusion's Parquet scan with that access plan and its cached
//! metadata attached, and the head's batches join as a memory scan. File
//! bytes are read through the session's object-store registry.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::common::ScalarValue;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::parquet::{ParquetAccessPlan, RowGroupAccess};
use datafusion::datasource::physical_plan::{
    FileGroup, FileScanConfigBuilder, ParquetFileReaderFactory, ParquetSource,
};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::DataFusionError;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::parquet::arrow::async_reader::AsyncFileReader;
use datafusion::parquet::file::metadata::ParquetMetaData;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::ExecutionPlan;
use kanade_storage::{PersistedFile, Snapshot};
use object_store::ObjectStore;

use crate::footer::{plan_row_groups, FileCache, StoreReader};

/// What the provider planned, summed over every scan of one
/// [`crate::PerfQueries`] (for tests and `/metrics`).
#[derive(Debug, Default)]
pub(crate) struct ScanCounters {
    scans: AtomicU64,
    files_in_snapshots: AtomicU64,
    files_scanned: AtomicU64,
    row_groups_in_files: AtomicU64,
    row_groups_scanned: AtomicU64,
    readers_opened: AtomicU64,
}

/// A reading of [`ScanCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProviderStats {
    /// Table scans planned.
    pub scans: u64,
    /// Files in the scanned snapshots.
    pub files_in_snapshots: u64,
    /// Files handed to the Parquet scan (the rest were pruned).
    pub files_scanned: u64,
    /// Row groups of the files in the snapshots.
    pub row_groups_in_files: u64,
    /// Row groups the scans were allowed to read.
    pub row_groups_scanned: u64,
    /// File readers DataFusion opened while executing.
    pub readers_opened: u64,
}

impl ScanCounters {
    pub(crate) fn read(&self) -> ProviderStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ProviderStats {
            scans: get(&self.scans),
            files_in_snapshots: get(&self.files_in_snapshots),
            files_scanned: get(&self.files_scanned),
            row_groups_in_files: get(&self.row_groups_in_files),
            row_groups_scanned: get(&self.row_groups_scanned),
            readers_opened: get(&self.readers_opened),
        }
    }
}

/// One snapshot of a table, scannable by DataFusion.
#[derive(Debug)]
pub(crate) struct SnapshotTable {
    table: &'static str,
    snapshot: Snapshot,
    files: Arc<FileCache>,
    counters: Arc<ScanCounters>,
}

impl SnapshotTable {
    pub(crate) fn new(
        table: &'static str,
        snapshot: Snapshot,
        files: Arc<FileCache>,
        counters: Arc<ScanCounters>,
    ) -> Self {
        Self {
            table,
            snapshot,
            files,
            counters,
        }
    }
}

/// The bounds the filters put on a scan: `at` in `[from, to)` (micros)
/// and one `pc_id`. Anything not understood leaves a bound open; the
/// filters themselves are still applied above the scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bounds {
    pub from: i64,
    pub to: i64,
    pub pc_id: Option<String>,
}

impl Bounds {
    pub(crate) fn of(filters: &[Expr]) -> Self {
        let mut b = Bounds {
            from: i64::MIN,
            to: i64::MAX,
            pc_id: None,
        };
        for f in filters.iter().flat_map(split_conjunction) {
            b.narrow(f);
        }
        b
    }

    fn narrow(&mut self, e: &Expr) {
        match e {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                let (column, op, value) = match (left.as_ref(), right.as_ref()) {
                    (Expr::Column(c), Expr::Literal(v, _)) => (c.name.as_str(), *op, v),
                    (Expr::Literal(v, _), Expr::Column(c)) => match op.swap() {
                        Some(op) => (c.name.as_str(), op, v),
                        None => return,
                    },
                    _ => return,
                };
                match column {
                    "at" => self.narrow_at(op, value),
                    "pc_id" if op == Operator::Eq => {
                        if let Some(pc) = string(value) {
                            self.pc_id = Some(pc);
                        }
                    }
                    _ => {}
                }
            }
            Expr::Between(Between {
                expr,
                negated: false,
                low,
                high,
            }) => {
                if let (Expr::Column(c), Expr::Literal(lo, _), Expr::Literal(hi, _)) =
                    (expr.as_ref(), low.as_ref(), high.as_ref())
                {
                    if c.name == "at" {
                        self.narrow_at(Operator::GtEq, lo);
                        self.narrow_at(Operator::LtEq, hi);
                    }
                }
            }
            Expr::InList(list) if !list.negated && list.list.len() == 1 => {
                if let (Expr::Column(c), Expr::Literal(v, _)) = (list.expr.as_ref(), &list.list[0])
                {
                    if c.name == "pc_id" {
                        if let Some(pc) = string(v) {
                            self.pc_id = Some(pc);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// Micros are floored, so a bound of a finer unit only ever widens.
    fn narrow_at(&mut self, op: Operator, v: &ScalarValue) {
        let Some(t) = micros(v) else { return };
        match op {
            Operator::GtEq | Operator::Gt => self.from = self.from.max(t),
            Operator::Lt | Operator::LtEq => self.to = self.to.min(t.saturating_add(1)),
            Operator::Eq => {
                self.from = self.from.max(t);
                self.to = self.to.min(t.saturating_add(1));
            }
            _ => {}
        }
    }
}

fn string(v: &ScalarValue) -> Option<String> {
    match v {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::Utf8View(Some(s))
        | ScalarValue::LargeUtf8(Some(s)) => Some(s.clone()),
        _ => None,
    }
}

fn micros(v: &ScalarValue) -> Option<i64> {
    Some(match v {
        ScalarValue::TimestampSecond(Some(s), _) => s.checked_mul(1_000_000)?,
        ScalarValue::TimestampMillisecond(Some(m), _) => m.checked_mul(1_000)?,
        ScalarValue::TimestampMicrosecond(Some(u), _) => *u,
        ScalarValue::TimestampNanosecond(Some(n), _) => n.div_euclid(1_000),
        _ => return None,
    })
}

/// Attached to each scanned file: its parsed metadata, and the file
/// itself, which stays on disk while the scan holds it.
#[derive(Debug)]
struct Pinned {
    metadata: Arc<ParquetMetaData>,
    _file: Arc<PersistedFile>,
}

#[async_trait]
impl TableProvider for SnapshotTable {
    fn schema(&self) -> SchemaRef {
        self.snapshot.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::error::Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let schema = self.snapshot.schema();
        let bounds = Bounds::of(filters);
        let c = &self.counters;
        c.scans.fetch_add(1, Ordering::Relaxed);
        let url = ObjectStoreUrl::local_filesystem();
        let store = state.runtime_env().object_store(&url)?;
        let mut groups: [Vec<PartitionedFile>; 2] = [Vec::new(), Vec::new()];
        let mut scanned = 0usize;
        for f in self.snapshot.files() {
            c.files_in_snapshots.fetch_add(1, Ordering::Relaxed);
            let location = location(f.path())?;
            let reader = StoreReader::new(Arc::clone(&store), location.clone(), f.bytes());
            let meta = self
                .files
                .get_from_store(self.table, f.path(), reader)
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            let row_groups = meta.metadata().num_row_groups();
            c.row_groups_in_files
                .fetch_add(row_groups as u64, Ordering::Relaxed);
            let kept = plan_row_groups(&meta, bounds.pc_id.as_deref(), bounds.from, bounds.to);
            if kept.is_empty() {
                continue;
            }
            c.files_scanned.fetch_add(1, Ordering::Relaxed);
            c.row_groups_scanned
                .fetch_add(kept.len() as u64, Ordering::Relaxed);
            // Whole row groups only: DataFusion 55.2 read no rows of a row
            // group given a page-level selection of it (pinned by
            // `the_fast_host_timeline_equals_sql_when_pages_are_selected_in_big_row_groups`);
            // its own page-index pruning of the same predicate selects the pages.
            let mut plan = ParquetAccessPlan::new_none(row_groups);
            for (rg, _, _) in kept {
                plan.set(rg, RowGroupAccess::Scan);
            }
            let file = PartitionedFile::new_from_meta(object_store::ObjectMeta {
                location,
                last_modified: chrono::DateTime::<chrono::Utc>::UNIX_EPOCH,
                size: f.bytes(),
                e_tag: None,
                version: None,
            })
            .with_extension(plan)
            .with_extension(Pinned {
                metadata: Arc::clone(meta.metadata()),
                _file: Arc::clone(f),
            });
            groups[scanned % 2].push(file);
            scanned += 1;
        }
        let head = MemorySourceConfig::try_new_exec(
            &[self.snapshot.head().to_vec()],
            Arc::clone(&schema),
            projection.cloned(),
        )?;
        if scanned == 0 {
            return Ok(head);
        }
        let source = ParquetSource::new(Arc::clone(&schema))
            .with_table_parquet_options(state.table_options().parquet.clone())
            .with_parquet_file_reader_factory(Arc::new(CachedReaders {
                store,
                counters: Arc::clone(&self.counters),
            }));
        let config = FileScanConfigBuilder::new(url, Arc::new(source))
            .with_file_groups(
                groups
                    .into_iter()
                    .filter(|g| !g.is_empty())
                    .map(FileGroup::new)
                    .collect(),
            )
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .build();
        let files: Arc<dyn ExecutionPlan> = DataSourceExec::from_data_source(config);
        UnionExec::try_new(vec![head, files])
    }
}

/// The object-store location of a local file.
fn location(path: &std::path::Path) -> datafusion::error::Result<object_store::path::Path> {
    let absolute = std::path::absolute(path)?;
    object_store::path::Path::from_absolute_path(&absolute)
        .map_err(|e| DataFusionError::External(Box::new(e)))
}

/// Opens the scanned files: bytes from the object store, metadata from
/// the [`Pinned`] extension (parsed once per file, page index included).
#[derive(Debug)]
struct CachedReaders {
    store: Arc<dyn ObjectStore>,
    counters: Arc<ScanCounters>,
}

impl ParquetFileReaderFactory for CachedReaders {
    fn create_reader(
        &self,
        _partition_index: usize,
        file: PartitionedFile,
        _metadata_size_hint: Option<usize>,
        _metrics: &ExecutionPlanMetricsSet,
    ) -> datafusion::error::Result<Box<dyn AsyncFileReader + Send>> {
        let metadata = file
            .extension::<Pinned>()
            .map(|p| Arc::clone(&p.metadata))
            .ok_or_else(|| {
                DataFusionError::Internal(format!(
                    "{} was planned without its metadata",
                    file.object_meta.location
                ))
            })?;
        self.counters.readers_opened.fetch_add(1, Ordering::Relaxed);
        let mut reader = StoreReader::new(
            Arc::clone(&self.store),
            file.object_meta.location.clone(),
            file.object_meta.size,
        );
        reader.metadata = Some(metadata);
        Ok(Box::new(reader))
    }
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::{col, lit};

    use super::*;
    use crate::session::lit_micros;

    #[test]
    fn bounds_come_from_at_and_pc_id_comparisons() {
        let f = col("at")
            .gt_eq(lit_micros(100))
            .and(col("at").lt(lit_micros(200)))
            .and(col("pc_id").eq(lit("pc-7")));
        let b = Bounds::of(&[f]);
        assert_eq!(b.from, 100);
        assert_eq!(b.to, 200 + 1);
        assert_eq!(b.pc_id.as_deref(), Some("pc-7"));
    }

    #[test]
    fn reversed_operands_and_between_narrow_too() {
        let b = Bounds::of(&[
            lit_micros(500).gt(col("at")),
            col("at").between(lit_micros(50), lit_micros(900)),
        ]);
        assert_eq!((b.from, b.to), (50, 501));
        assert_eq!(b.pc_id, None);
    }

    #[test]
    fn unknown_filters_leave_bounds_open() {
        let b = Bounds::of(&[
            col("cpu_pct").gt(lit(5.0)),
            col("pc_id").not_eq(lit("x")),
            col("at").gt_eq(lit(3_i64)),
        ]);
        assert_eq!((b.from, b.to, b.pc_id), (i64::MIN, i64::MAX, None));
    }
}
