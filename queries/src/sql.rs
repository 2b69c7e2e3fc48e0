//! `POST /api/query`'s engine: an operator's read-only SQL over the
//! backend's tables, under upstream's table and column names, with
//! DataFusion.
//!
//! Each query gets a session of its own: a runtime with its own memory
//! pool (a sort, join or aggregate past [`SqlLimits::memory_bytes`] fails
//! naming the cap instead of growing the process), the perf tables as
//! their snapshots (head and Parquet files, pruned by the filters as the
//! charts' scans are), and the relational tables as of the query's start.
//! SQL options allow no DDL, DML or statements, so nothing the text says
//! can create, write, attach or set anything: only queries plan. Rows
//! stream until the row cap; past it the answer says `truncated`.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, Float64Array, Int64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::SQLOptions;
use futures::StreamExt;
use serde_json::Value;

use datafusion::prelude::{DataFrame, SessionContext};

use crate::inventory::{ExplodeIndex, Layout};
use crate::provider::SnapshotTable;
use crate::session::session_with;
use crate::{Error, PerfQueries, Result};

const TABLE: &str = "query";

/// What one query may use.
#[derive(Debug, Clone, Copy)]
pub struct SqlLimits {
    /// Rows answered at most; more make the answer `truncated`. Zero
    /// only plans the query: its columns, nothing run.
    pub rows: usize,
    /// Memory its operators (sorts, joins, aggregates) may hold.
    pub memory_bytes: usize,
}

/// A query's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct SqlAnswer {
    pub columns: Vec<String>,
    /// Each row's cells: numbers, text, booleans, times as RFC 3339 text,
    /// `null`.
    pub rows: Vec<Vec<Value>>,
    /// Whether rows past the cap were left out.
    pub truncated: bool,
}

/// Tables whose rows the caller holds (the broker's KV mirrors) or
/// declares (the inventory manifests' `explode:` tables).
#[derive(Debug, Clone, Default)]
pub struct SqlExtras {
    /// `agent_meta(pc_id, key, value)`.
    pub agent_meta: Vec<(String, String, String)>,
    /// Every valid `explode:` dataset of the registered manifests.
    pub explode: Vec<Layout>,
    /// Where their rows are (none: the tables are not offered).
    pub explode_index: Option<Arc<ExplodeIndex>>,
}

/// The `explode:` tables `statement` names, registered in `ctx` under the
/// name it uses (a table name matches without regard to case, as in
/// SQLite). A built-in table keeps its name. Several datasets declaring
/// one table (one per manifest) read as one when their columns agree.
/// Returns what keeps their files on disk for the query.
async fn register_explode(
    ctx: &SessionContext,
    statement: &datafusion::sql::parser::Statement,
    extras: &SqlExtras,
) -> Result<Vec<Arc<dyn std::any::Any + Send + Sync>>> {
    let mut keep = Vec::new();
    let Some(index) = &extras.explode_index else {
        return Ok(keep);
    };
    let state = ctx.state();
    let refs = state.resolve_table_references(statement).map_err(refused)?;
    for r in refs {
        if ctx.table_exist(r.clone()).map_err(refused)? {
            continue;
        }
        let name = r.table();
        let declared: Vec<&Layout> = extras
            .explode
            .iter()
            .filter(|l| l.table.eq_ignore_ascii_case(name))
            .collect();
        let Some(first) = declared.first() else {
            continue;
        };
        if let Some(other) = declared.iter().find(|l| l.columns != first.columns) {
            return Err(Error::Sql {
                message: format!(
                    "table {name} is declared by manifests {} and {} with different columns",
                    first.manifest_id, other.manifest_id
                ),
                memory: false,
            });
        }
        let mut frame: Option<DataFrame> = None;
        for layout in declared {
            let (df, file) = index.sql_view(layout).await?;
            keep.push(file);
            frame = Some(match frame {
                None => df,
                Some(all) => all.union(df).map_err(Error::df(TABLE))?,
            });
        }
        if let Some(df) = frame {
            ctx.register_table(r, df.into_view())
                .map_err(Error::df(TABLE))?;
        }
    }
    Ok(keep)
}

/// Why a query did not answer: the caller's SQL (`memory`: it needed
/// more than the cap), never the backend.
fn refused(e: DataFusionError) -> Error {
    let memory = matches!(e.find_root(), DataFusionError::ResourcesExhausted(_));
    Error::Sql {
        message: e.to_string(),
        memory,
    }
}

fn text_column(name: &str) -> Field {
    Field::new(name, DataType::Utf8, true)
}

fn time_column(name: &str) -> Field {
    Field::new(
        name,
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        true,
    )
}

fn batch(schema: Schema, columns: Vec<ArrayRef>) -> Result<MemTable> {
    let schema = Arc::new(schema);
    let batch = RecordBatch::try_new(Arc::clone(&schema), columns)
        .map_err(|e| Error::df(TABLE)(e.into()))?;
    MemTable::try_new(schema, vec![vec![batch]]).map_err(Error::df(TABLE))
}

impl PerfQueries {
    /// `agents` as the reference names its columns.
    fn agents_table(&self) -> Result<MemTable> {
        use datafusion::arrow::array::{StringArray, TimestampMicrosecondArray};
        let agents = self.store.agents().map_err(Error::storage("agents"))?;
        let text = |f: &dyn Fn(&kanade_storage::AgentRecord) -> Option<String>| -> ArrayRef {
            Arc::new(agents.iter().map(f).collect::<StringArray>())
        };
        let time = |f: &dyn Fn(&kanade_storage::AgentRecord) -> Option<i64>| -> ArrayRef {
            Arc::new(
                agents
                    .iter()
                    .map(f)
                    .collect::<TimestampMicrosecondArray>()
                    .with_timezone("UTC"),
            )
        };
        batch(
            Schema::new(vec![
                Field::new("pc_id", DataType::Utf8, false),
                text_column("hostname"),
                text_column("os_family"),
                text_column("agent_version"),
                time_column("last_heartbeat"),
                time_column("updated_at"),
                Field::new("agent_cpu_pct", DataType::Float64, true),
                Field::new("agent_rss_bytes", DataType::Int64, true),
                Field::new("agent_disk_read_bytes", DataType::Int64, true),
                Field::new("agent_disk_written_bytes", DataType::Int64, true),
                text_column("quarantined_versions"),
                text_column("agent_arch"),
                text_column("last_logon_user"),
                text_column("last_logon_display_name"),
            ]),
            vec![
                text(&|a| Some(a.pc_id.clone())),
                text(&|a| a.hostname.clone()),
                text(&|a| a.os_family.clone()),
                text(&|a| a.agent_version.clone()),
                time(&|a| a.last_heartbeat.map(|t| t.timestamp_micros())),
                time(&|a| a.updated_at.map(|t| t.timestamp_micros())),
                Arc::new(
                    agents
                        .iter()
                        .map(|a| a.agent_cpu_pct)
                        .collect::<Float64Array>(),
                ),
                Arc::new(
                    agents
                        .iter()
                        .map(|a| a.agent_rss_bytes)
                        .collect::<Int64Array>(),
                ),
                Arc::new(
                    agents
                        .iter()
                        .map(|a| a.agent_disk_read_bytes)
                        .collect::<Int64Array>(),
                ),
                Arc::new(
                    agents
                        .iter()
                        .map(|a| a.agent_disk_written_bytes)
                        .collect::<Int64Array>(),
                ),
                // JSON text, as the reference stores the list.
                text(&|a| {
                    (!a.quarantined_versions.is_empty())
                        .then(|| serde_json::to_string(&a.quarantined_versions).ok())
                        .flatten()
                }),
                text(&|a| a.reported.agent_arch.clone()),
                text(&|a| a.reported.last_logon_user.clone()),
                text(&|a| a.reported.last_logon_display_name.clone()),
            ],
        )
    }

    /// Runs an operator's read-only `sql` over the catalog.
    pub async fn sql(&self, sql: &str, limits: SqlLimits, extras: SqlExtras) -> Result<SqlAnswer> {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(limits.memory_bytes, 1.0)
            .build_arc()
            .map_err(Error::df(TABLE))?;
        // What a sort keeps back for merging its spills: DataFusion's
        // 10 MiB, or an eighth of a smaller pool (else a small pool would
        // refuse every ORDER BY).
        let ctx = session_with(&runtime, |config| {
            config.options_mut().execution.sort_spill_reservation_bytes =
                (limits.memory_bytes / 8).min(10 << 20);
            // NULL is the smallest value, as in SQLite: first when
            // ascending, last when descending.
            config.options_mut().sql_parser.default_null_ordering = "nulls_min".into();
        });
        crate::sqlite_fns::register(&ctx);
        let register = |name: &str, table: Arc<dyn datafusion::datasource::TableProvider>| {
            ctx.register_table(name, table)
                .map(|_| ())
                .map_err(Error::df(TABLE))
        };
        register(
            "host_perf_samples",
            Arc::new(SnapshotTable::new(
                "host_perf_samples",
                self.host.snapshot(None),
                Arc::clone(&self.files),
                Arc::clone(&self.engine.scans),
            )),
        )?;
        register(
            "process_perf_samples",
            Arc::new(SnapshotTable::new(
                "process_perf_samples",
                self.process.snapshot(None),
                Arc::clone(&self.files),
                Arc::clone(&self.engine.scans),
            )),
        )?;
        register("agents", Arc::new(self.agents_table()?))?;
        for table in kanade_storage::SqlTable::ALL {
            register(
                table.name(),
                Arc::new(crate::relational_sql::sql_table(&self.store, table)?),
            )?;
        }
        {
            use datafusion::arrow::array::StringArray;
            let rows = &extras.agent_meta;
            let col = |f: fn(&(String, String, String)) -> &str| -> ArrayRef {
                Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
            };
            register(
                "agent_meta",
                Arc::new(batch(
                    Schema::new(vec![
                        Field::new("pc_id", DataType::Utf8, false),
                        Field::new("key", DataType::Utf8, false),
                        Field::new("value", DataType::Utf8, false),
                    ]),
                    vec![col(|r| &r.0), col(|r| &r.1), col(|r| &r.2)],
                )?),
            )?;
        }

        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let state = ctx.state();
        let dialect = state.config().options().sql_parser.dialect;
        let mut statement = state.sql_to_statement(sql, &dialect).map_err(refused)?;
        crate::sqlite_fns::as_sqlite(&mut statement);
        let _files = register_explode(&ctx, &statement, &extras).await?;
        let state = ctx.state();
        let plan = state.statement_to_plan(statement).await.map_err(refused)?;
        options.verify_plan(&plan).map_err(refused)?;
        let frame = ctx.execute_logical_plan(plan).await.map_err(refused)?;
        let columns: Vec<String> = frame
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        if limits.rows == 0 {
            return Ok(SqlAnswer {
                columns,
                rows: Vec::new(),
                truncated: false,
            });
        }
        let mut stream = frame.execute_stream().await.map_err(refused)?;
        let mut rows = Vec::new();
        let mut truncated = false;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(refused)?;
            let cells = json_columns(&batch)?;
            for i in 0..batch.num_rows() {
                if rows.len() == limits.rows {
                    truncated = true;
                    break;
                }
                rows.push(cells.iter().map(|c| c.value(i)).collect());
            }
            if truncated {
                break;
            }
        }
        Ok(SqlAnswer {
            columns,
            rows,
            truncated,
        })
    }
}

/// One column of a batch, ready to give JSON cells.
enum JsonColumn {
    Int(Int64Array),
    Float(Float64Array),
    Bool(BooleanArray),
    Text(Vec<Option<String>>),
}

impl JsonColumn {
    fn value(&self, i: usize) -> Value {
        match self {
            Self::Int(a) => a.is_valid(i).then(|| a.value(i).into()),
            Self::Float(a) => a
                .is_valid(i)
                .then(|| serde_json::Number::from_f64(a.value(i)).map(Value::Number))
                .flatten(),
            // SQLite has no booleans: a comparison answers 1 or 0.
            Self::Bool(a) => a.is_valid(i).then(|| i64::from(a.value(i)).into()),
            Self::Text(v) => v[i].clone().map(Value::String),
        }
        .unwrap_or(Value::Null)
    }
}

fn json_columns(batch: &RecordBatch) -> Result<Vec<JsonColumn>> {
    let shape = |e: datafusion::arrow::error::ArrowError| Error::df(TABLE)(e.into());
    batch
        .columns()
        .iter()
        .map(|a| {
            Ok(match a.data_type() {
                DataType::Int8
                | DataType::Int16
                | DataType::Int32
                | DataType::Int64
                | DataType::UInt8
                | DataType::UInt16
                | DataType::UInt32 => JsonColumn::Int(
                    cast(a, &DataType::Int64)
                        .map_err(shape)?
                        .as_any()
                        .downcast_ref::<Int64Array>()
                        .cloned()
                        .ok_or_else(|| unexpected("Int64"))?,
                ),
                DataType::Float16 | DataType::Float32 | DataType::Float64 => JsonColumn::Float(
                    cast(a, &DataType::Float64)
                        .map_err(shape)?
                        .as_any()
                        .downcast_ref::<Float64Array>()
                        .cloned()
                        .ok_or_else(|| unexpected("Float64"))?,
                ),
                DataType::Boolean => JsonColumn::Bool(
                    a.as_any()
                        .downcast_ref::<BooleanArray>()
                        .cloned()
                        .ok_or_else(|| unexpected("Boolean"))?,
                ),
                _ => {
                    let options = FormatOptions::default();
                    let f = ArrayFormatter::try_new(a.as_ref(), &options).map_err(shape)?;
                    JsonColumn::Text(
                        (0..a.len())
                            .map(|i| a.is_valid(i).then(|| f.value(i).to_string()))
                            .collect(),
                    )
                }
            })
        })
        .collect()
}

fn unexpected(ty: &str) -> Error {
    Error::Shape {
        table: TABLE,
        message: format!("a cast to {ty} answered another type"),
    }
}
