//! Exploded inventory rows, columnar: one Parquet file per (manifest,
//! explode field) holding every PC's rows, typed by the manifest's current
//! spec, searched with DataFusion.
//!
//! The PCs' latest inventories (`inventory_facts` in redb) are the truth;
//! a dataset's file is built from them, streaming a few hundred PCs at a
//! time. PCs whose inventory changed since the file was built are *dirty*:
//! a search reads the file without them plus their rows built from redb
//! at that moment, so an answer is never older than the last commit. The
//! maintenance pass rebuilds a dataset once enough PCs are dirty or the
//! oldest dirty PC has waited long enough; a changed spec (new column,
//! new type) rebuilds it at once, from the stored JSON, so no spec change
//! ever needs a migration.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{
    Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::ScalarValue;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::logical_expr::expr::Like;
use datafusion::logical_expr::{ident, Expr};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};
use datafusion::prelude::{lit, DataFrame, ParquetReadOptions, SessionContext};
use kanade_storage::{InventoryFactRecord, RelationalStore};
use serde_json::{Map, Value};

use super::layout::{Kind, Layout, Typed};
use crate::{Error, Result};

const TABLE: &str = "inventory explode";
/// PCs read from redb per step of a build.
const BUILD_CHUNK: usize = 1_024;
/// Rows per row group: more than a build step ever holds, so each step
/// is one row group.
const ROW_GROUP_ROWS: usize = 1 << 20;
/// Rows per data page (the unit the page index prunes).
const PAGE_ROWS: usize = 2_048;

/// When the maintenance pass folds dirty PCs into a new file.
#[derive(Debug, Clone, Copy)]
pub struct RefreshPolicy {
    /// This many dirty PCs …
    pub max_dirty: usize,
    /// … or the oldest dirty PC waiting this long.
    pub max_wait: Duration,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        Self {
            max_dirty: 64,
            max_wait: Duration::from_secs(60),
        }
    }
}

/// One comparison of a search.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Contains,
    Prefix,
    Suffix,
}

impl Op {
    fn parse(raw: &str) -> Option<Op> {
        Some(match raw {
            "eq" => Op::Eq,
            "ne" => Op::Ne,
            "lt" => Op::Lt,
            "le" => Op::Le,
            "gt" => Op::Gt,
            "ge" => Op::Ge,
            "contains" => Op::Contains,
            "prefix" => Op::Prefix,
            "suffix" => Op::Suffix,
            _ => return None,
        })
    }
}

/// A checked filter of a search: `column` (or `column__op`) = value.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    column: String,
    op: Op,
    value: ScalarValue,
}

impl Filter {
    /// Parses one query parameter against the layout: the column must be
    /// declared, the operator known, and a comparison of a numeric column
    /// needs a number. The error names the parameter.
    pub fn parse(layout: &Layout, key: &str, value: &str) -> std::result::Result<Filter, String> {
        let (column, op) = match key.split_once("__") {
            Some((c, o)) => (c, o),
            None => (key, "eq"),
        };
        let kind = layout.kind(column).ok_or_else(|| {
            let known: Vec<&str> = layout.columns.iter().map(|(c, _)| c.as_str()).collect();
            format!(
                "unknown column for filter: {column:?} (columns of {:?}: {})",
                layout.field,
                known.join(", ")
            )
        })?;
        let op = Op::parse(op).ok_or_else(|| {
            format!(
                "unknown filter operator {op:?} in {key:?} (expected eq, ne, lt, le, gt, ge, contains, prefix or suffix)"
            )
        })?;
        let like = matches!(op, Op::Contains | Op::Prefix | Op::Suffix);
        let value = match (kind, like) {
            (Kind::Text, _) | (_, true) => ScalarValue::Utf8(Some(value.to_string())),
            (Kind::Integer, false) => match value.trim().parse::<i64>() {
                Ok(i) => ScalarValue::Int64(Some(i)),
                // 1.5 against an integer column compares as a real.
                Err(_) => ScalarValue::Float64(Some(number(key, value, kind)?)),
            },
            (Kind::Real, false) => ScalarValue::Float64(Some(number(key, value, kind)?)),
        };
        Ok(Filter {
            column: column.to_string(),
            op,
            value,
        })
    }

    fn expr(&self) -> Expr {
        let c = ident(&self.column);
        let pattern = |s: &str| {
            let escaped = s
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            match self.op {
                Op::Contains => format!("%{escaped}%"),
                Op::Prefix => format!("{escaped}%"),
                _ => format!("%{escaped}"),
            }
        };
        match (&self.op, &self.value) {
            (Op::Contains | Op::Prefix | Op::Suffix, ScalarValue::Utf8(Some(s))) => {
                Expr::Like(Like::new(
                    false,
                    Box::new(datafusion::prelude::cast(c, DataType::Utf8)),
                    Box::new(lit(pattern(s))),
                    Some('\\'),
                    true,
                ))
            }
            (op, v) => {
                let v = lit(v.clone());
                let c = match (&self.value, self.op.clone()) {
                    // An integer column against a fraction.
                    (ScalarValue::Float64(_), _) => datafusion::prelude::cast(c, DataType::Float64),
                    _ => c,
                };
                match op {
                    Op::Eq => c.eq(v),
                    Op::Ne => c.not_eq(v),
                    Op::Lt => c.lt(v),
                    Op::Le => c.lt_eq(v),
                    Op::Gt => c.gt(v),
                    _ => c.gt_eq(v),
                }
            }
        }
    }
}

fn number(key: &str, value: &str, kind: Kind) -> std::result::Result<f64, String> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .ok_or_else(|| {
            format!(
                "{key}: {value:?} is not a number (the column is {})",
                kind.name()
            )
        })
}

/// One built file of a dataset; removed from disk when the last search
/// reading it is done and a newer file replaced it.
#[derive(Debug)]
struct BaseFile {
    path: PathBuf,
    layout: Layout,
    rows: u64,
}

impl Drop for BaseFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[derive(Debug, Default)]
struct SetState {
    base: Option<Arc<BaseFile>>,
    /// Dirty PCs, with the stamp of their latest change.
    dirty: HashMap<String, u64>,
    stamp: u64,
    dirty_since: Option<Instant>,
}

#[derive(Debug, Default)]
struct Dataset {
    /// Held while a file is built, so two builds never race.
    build: Mutex<()>,
    state: Mutex<SetState>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What one search saw.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchPage {
    /// Rows as the API returns them: pc_id, collected_at, the columns.
    pub rows: Vec<Map<String, Value>>,
}

/// Statistics of a dataset, for tests and the benchmark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetStats {
    pub file_rows: u64,
    pub dirty_pcs: usize,
}

/// The exploded datasets of every inventory manifest.
#[derive(Debug)]
pub struct ExplodeIndex {
    root: PathBuf,
    store: RelationalStore,
    runtime: Arc<RuntimeEnv>,
    sets: Mutex<HashMap<(String, String), Arc<Dataset>>>,
    generation: AtomicU64,
}

impl ExplodeIndex {
    /// Datasets under `<data_dir>/inventory`; files a previous run left
    /// there are removed (they are rebuilt from redb when first needed).
    pub fn open(data_dir: &Path, store: RelationalStore) -> Result<Self> {
        let root = data_dir.join("inventory");
        if root.exists() {
            std::fs::remove_dir_all(&root).map_err(io_err(&root))?;
        }
        std::fs::create_dir_all(&root).map_err(io_err(&root))?;
        let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
            .build_arc()
            .map_err(Error::df(TABLE))?;
        Ok(Self {
            root,
            store,
            runtime,
            sets: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
        })
    }

    fn dataset(&self, layout: &Layout) -> Arc<Dataset> {
        let key = (layout.manifest_id.clone(), layout.field.clone());
        Arc::clone(lock(&self.sets).entry(key).or_default())
    }

    /// Marks PCs whose inventory of `manifest_id` changed (called after
    /// the change is committed).
    pub fn note_changed<'a>(&self, manifest_id: &str, pcs: impl IntoIterator<Item = &'a str>) {
        let sets: Vec<Arc<Dataset>> = lock(&self.sets)
            .iter()
            .filter(|((m, _), _)| m == manifest_id)
            .map(|(_, d)| Arc::clone(d))
            .collect();
        if sets.is_empty() {
            return;
        }
        let pcs: Vec<&str> = pcs.into_iter().collect();
        for d in sets {
            let mut s = lock(&d.state);
            s.stamp += 1;
            let stamp = s.stamp;
            for pc in &pcs {
                s.dirty.insert((*pc).to_string(), stamp);
            }
            s.dirty_since.get_or_insert_with(Instant::now);
        }
    }

    pub fn stats(&self, layout: &Layout) -> DatasetStats {
        let d = self.dataset(layout);
        let s = lock(&d.state);
        DatasetStats {
            file_rows: s.base.as_ref().map_or(0, |b| b.rows),
            dirty_pcs: s.dirty.len(),
        }
    }

    /// The maintenance pass: builds the dataset if it has no file for
    /// this layout, rebuilds it when the policy says so. Blocking.
    pub fn refresh(&self, layout: &Layout, policy: RefreshPolicy) -> Result<bool> {
        let d = self.dataset(layout);
        let due = {
            let s = lock(&d.state);
            match &s.base {
                Some(b) if b.layout == *layout => {
                    !s.dirty.is_empty()
                        && (s.dirty.len() >= policy.max_dirty
                            || s.dirty_since
                                .is_some_and(|t| t.elapsed() >= policy.max_wait))
                }
                _ => true,
            }
        };
        if due {
            self.build(&d, layout, true)?;
        }
        Ok(due)
    }

    /// A file for this layout exists afterwards. Blocking.
    fn ensure(&self, d: &Dataset, layout: &Layout) -> Result<()> {
        let current = |s: &SetState| s.base.as_ref().is_some_and(|b| b.layout == *layout);
        if current(&lock(&d.state)) {
            return Ok(());
        }
        self.build(d, layout, false)
    }

    fn build(&self, d: &Dataset, layout: &Layout, force: bool) -> Result<()> {
        let _building = lock(&d.build);
        let stamp = {
            let s = lock(&d.state);
            let current = s.base.as_ref().is_some_and(|b| b.layout == *layout);
            if current && !force {
                return Ok(());
            }
            s.stamp
        };
        let started = Instant::now();
        let dir = self
            .root
            .join(escape(&layout.manifest_id))
            .join(escape(&layout.field));
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let gen = self.generation.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("{gen:08}.parquet"));
        let tmp = dir.join(format!("{gen:08}.parquet.tmp"));
        let schema = layout.schema();
        // Each step of PCs is one row group sorted by the first primary
        // key column, in pages of a few thousand rows: the page index then
        // lets a search by name (or any prefix of it) read a page or two
        // per row group instead of every row.
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .set_data_page_row_count_limit(PAGE_ROWS)
            .set_write_batch_size(PAGE_ROWS)
            .set_statistics_enabled(EnabledStatistics::Page)
            .build();
        let file = File::create(&tmp).map_err(io_err(&tmp))?;
        let mut writer =
            ArrowWriter::try_new(file, Arc::clone(&schema), Some(props)).map_err(parquet_err)?;
        let mut rows = 0u64;
        let mut after: Option<String> = None;
        loop {
            let facts = self
                .store
                .inventory_facts_after(&layout.manifest_id, after.as_deref(), BUILD_CHUNK)
                .map_err(storage_err)?;
            let Some(last) = facts.last() else { break };
            after = Some(last.pc_id.clone());
            let batch = sorted_by_key(layout, rows_of(layout, &schema, &facts)?)?;
            rows += batch.num_rows() as u64;
            if batch.num_rows() > 0 {
                writer.write(&batch).map_err(parquet_err)?;
                writer.flush().map_err(parquet_err)?;
            }
        }
        let file = writer.into_inner().map_err(parquet_err)?;
        file.sync_all().map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
        let mut s = lock(&d.state);
        s.base = Some(Arc::new(BaseFile {
            path,
            layout: layout.clone(),
            rows,
        }));
        s.dirty.retain(|_, changed| *changed > stamp);
        s.dirty_since = (!s.dirty.is_empty()).then(Instant::now);
        tracing::info!(
            manifest_id = %layout.manifest_id,
            field = %layout.field,
            rows,
            secs = started.elapsed().as_secs_f64(),
            "inventory dataset built"
        );
        Ok(())
    }

    fn session(&self) -> SessionContext {
        crate::session::session_on(&self.runtime)
    }

    /// The dataset's current rows (file minus dirty PCs, plus the dirty
    /// PCs' rows from redb) as one frame, and the file it reads.
    /// Blocking parts run inline: call from the query runtime.
    async fn frame(&self, layout: &Layout) -> Result<(SessionContext, DataFrame, Arc<BaseFile>)> {
        let d = self.dataset(layout);
        self.ensure(&d, layout)?;
        let (base, dirty) = {
            let s = lock(&d.state);
            let base = s.base.clone().ok_or_else(|| Error::Shape {
                table: TABLE,
                message: "dataset has no file after its build".into(),
            })?;
            (base, s.dirty.keys().cloned().collect::<Vec<_>>())
        };
        let schema = layout.schema();
        let ctx = self.session();
        let path = base.path.display().to_string();
        let mut df = ctx
            .read_parquet(path, ParquetReadOptions::default().schema(&schema))
            .await
            .map_err(Error::df(TABLE))?;
        if !dirty.is_empty() {
            let mut facts = Vec::with_capacity(dirty.len());
            for pc in &dirty {
                if let Some(f) = self
                    .store
                    .inventory_fact(pc, &layout.manifest_id)
                    .map_err(storage_err)?
                {
                    facts.push(f);
                }
            }
            let list = dirty.iter().map(|p| lit(p.as_str())).collect();
            let delta = ctx
                .read_batch(rows_of(layout, &schema, &facts)?)
                .map_err(Error::df(TABLE))?;
            df = df
                .filter(ident("pc_id").in_list(list, true))
                .and_then(|df| df.union(delta))
                .map_err(Error::df(TABLE))?;
        }
        Ok((ctx, df, base))
    }

    /// The dataset as an operator's SQL reads it, under the reference's
    /// columns: `pc_id`, `job_id` (the manifest), `collected_at`, then
    /// the declared ones. The second value keeps the file it reads on
    /// disk: hold it until the query is done.
    pub async fn sql_view(
        &self,
        layout: &Layout,
    ) -> Result<(DataFrame, Arc<dyn std::any::Any + Send + Sync>)> {
        let (_ctx, df, base) = self.frame(layout).await?;
        let mut columns = vec![
            ident("pc_id"),
            lit(layout.manifest_id.as_str()).alias("job_id"),
            ident("collected_at"),
        ];
        columns.extend(layout.columns.iter().map(|(name, _)| ident(name.as_str())));
        let df = df.select(columns).map_err(Error::df(TABLE))?;
        Ok((df, base))
    }

    /// Rows matching every filter, by pc_id then primary key, `limit`
    /// after `offset`.
    pub async fn search(
        &self,
        layout: &Layout,
        filters: &[Filter],
        offset: usize,
        limit: usize,
    ) -> Result<SearchPage> {
        let (_ctx, df, _base) = self.frame(layout).await?;
        let df = filtered(layout, df, filters)?
            .limit(offset, Some(limit))
            .map_err(Error::df(TABLE))?;
        let batches = df.collect().await.map_err(Error::df(TABLE))?;
        let mut rows = Vec::new();
        for b in &batches {
            rows.extend(json_rows(layout, b)?);
        }
        Ok(SearchPage { rows })
    }

    /// Every row of the dataset, by pc_id then primary key.
    pub async fn all(&self, layout: &Layout) -> Result<Vec<Map<String, Value>>> {
        let (_ctx, df, _base) = self.frame(layout).await?;
        let batches = filtered(layout, df, &[])?
            .collect()
            .await
            .map_err(Error::df(TABLE))?;
        let mut rows = Vec::new();
        for b in &batches {
            rows.extend(json_rows(layout, b)?);
        }
        Ok(rows)
    }

    /// Every row matching the filters, streamed (for CSV and Parquet
    /// downloads).
    pub async fn export(&self, layout: &Layout, filters: &[Filter]) -> Result<crate::ExportStream> {
        let (_ctx, df, base) = self.frame(layout).await?;
        let df = filtered(layout, df, filters)?;
        let batches = df.execute_stream().await.map_err(Error::df(TABLE))?;
        Ok(crate::ExportStream {
            schema: layout.schema(),
            batches,
            keep: Box::new(base),
        })
    }
}

fn filtered(layout: &Layout, df: DataFrame, filters: &[Filter]) -> Result<DataFrame> {
    let mut df = df;
    for f in filters {
        df = df.filter(f.expr()).map_err(Error::df(TABLE))?;
    }
    let mut order = vec![ident("pc_id").sort(true, false)];
    order.extend(
        layout
            .primary_key
            .iter()
            .map(|k| ident(k).sort(true, false)),
    );
    df.sort(order).map_err(Error::df(TABLE))
}

/// The batch sorted by the first primary key column, then pc_id.
fn sorted_by_key(layout: &Layout, batch: RecordBatch) -> Result<RecordBatch> {
    use datafusion::arrow::compute::{lexsort_to_indices, take_record_batch, SortColumn};
    let shape = |e: datafusion::arrow::error::ArrowError| Error::Shape {
        table: TABLE,
        message: e.to_string(),
    };
    let mut keys = Vec::new();
    for name in layout
        .primary_key
        .iter()
        .take(1)
        .map(String::as_str)
        .chain(["pc_id"])
    {
        if let Some(c) = batch.column_by_name(name) {
            keys.push(SortColumn {
                values: Arc::clone(c),
                options: None,
            });
        }
    }
    let order = lexsort_to_indices(&keys, None).map_err(shape)?;
    take_record_batch(&batch, &order).map_err(shape)
}

/// Rows of these PCs' inventories as one batch of the layout's schema,
/// appended straight into Arrow builders (one element's values at a time).
fn rows_of(
    layout: &Layout,
    schema: &SchemaRef,
    facts: &[InventoryFactRecord],
) -> Result<RecordBatch> {
    use datafusion::arrow::array::{
        Float64Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
    };
    enum Column {
        Text(StringBuilder),
        Integer(Int64Builder),
        Real(Float64Builder),
    }
    let mut pcs = StringBuilder::new();
    let mut at = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    let mut cols: Vec<Column> = layout
        .columns
        .iter()
        .map(|(_, k)| match k {
            Kind::Text => Column::Text(StringBuilder::new()),
            Kind::Integer => Column::Integer(Int64Builder::new()),
            Kind::Real => Column::Real(Float64Builder::new()),
        })
        .collect();
    for f in facts {
        let Ok(json) = serde_json::from_str::<Value>(&f.facts_json) else {
            continue;
        };
        for e in layout.elements(&json) {
            pcs.append_value(&f.pc_id);
            at.append_value(f.collected_at.timestamp_micros());
            for (col, v) in cols.iter_mut().zip(layout.row(e)) {
                match (col, v) {
                    (Column::Text(b), Typed::Text(s)) => b.append_value(s),
                    (Column::Integer(b), Typed::Int(i)) => b.append_value(i),
                    (Column::Real(b), Typed::Real(x)) => b.append_value(x),
                    (Column::Text(b), _) => b.append_null(),
                    (Column::Integer(b), _) => b.append_null(),
                    (Column::Real(b), _) => b.append_null(),
                }
            }
        }
    }
    let mut arrays: Vec<ArrayRef> = vec![Arc::new(pcs.finish()), Arc::new(at.finish())];
    for c in cols {
        arrays.push(match c {
            Column::Text(mut b) => Arc::new(b.finish()),
            Column::Integer(mut b) => Arc::new(b.finish()),
            Column::Real(mut b) => Arc::new(b.finish()),
        });
    }
    RecordBatch::try_new(Arc::clone(schema), arrays).map_err(|e| Error::Shape {
        table: TABLE,
        message: e.to_string(),
    })
}

/// A result batch as JSON rows (`collected_at` in RFC 3339, null values
/// as null).
pub fn json_rows(layout: &Layout, batch: &RecordBatch) -> Result<Vec<Map<String, Value>>> {
    let shape = |m: String| Error::Shape {
        table: TABLE,
        message: m,
    };
    let pcs = crate::session::text_column(TABLE, batch, "pc_id")?;
    let at = batch
        .column_by_name("collected_at")
        .and_then(|c| c.as_any().downcast_ref::<TimestampMicrosecondArray>())
        .ok_or_else(|| shape("collected_at missing".into()))?;
    let mut rows: Vec<Map<String, Value>> = (0..batch.num_rows())
        .map(|i| {
            let mut m = Map::new();
            m.insert("pc_id".into(), Value::String(pcs.value(i).to_string()));
            let t = DateTime::<Utc>::from_timestamp_micros(at.value(i));
            m.insert(
                "collected_at".into(),
                t.map_or(Value::Null, |t| {
                    Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
                }),
            );
            m
        })
        .collect();
    for (name, kind) in &layout.columns {
        let c = batch
            .column_by_name(name)
            .ok_or_else(|| shape(format!("column {name} missing")))?;
        let c = cast(c, &kind.data_type()).map_err(|e| shape(e.to_string()))?;
        for (i, row) in rows.iter_mut().enumerate() {
            let v = if c.is_null(i) {
                Value::Null
            } else {
                match kind {
                    Kind::Text => c
                        .as_any()
                        .downcast_ref::<StringArray>()
                        .map_or(Value::Null, |a| Value::String(a.value(i).to_string())),
                    Kind::Integer => c
                        .as_any()
                        .downcast_ref::<Int64Array>()
                        .map_or(Value::Null, |a| Value::from(a.value(i))),
                    Kind::Real => c
                        .as_any()
                        .downcast_ref::<Float64Array>()
                        .map_or(Value::Null, |a| Typed::Real(a.value(i)).to_json()),
                }
            };
            row.insert(name.clone(), v);
        }
    }
    Ok(rows)
}

/// A name as one safe path component: `[A-Za-z0-9_-]` kept, every other
/// byte as `%XX`.
fn escape(name: &str) -> String {
    let mut out = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::Shape {
        table: TABLE,
        message: format!("{}: {e}", path.display()),
    }
}

fn parquet_err(e: datafusion::parquet::errors::ParquetError) -> Error {
    Error::Shape {
        table: TABLE,
        message: e.to_string(),
    }
}

fn storage_err(e: kanade_storage::Error) -> Error {
    Error::Storage {
        table: TABLE,
        source: Box::new(e),
    }
}
