//! The relational tables of `POST /api/query` as streaming DataFusion
//! tables: each scan reads the redb table on a blocking thread in one
//! read transaction and hands batches of [`BATCH_ROWS`] rows through a
//! two-batch channel, so a query holds a few batches, never a copy of the
//! table, and a query that stops early (a row cap, a `LIMIT`) stops the
//! read. Columns are upstream's names; each table's are declared once,
//! here, and decoded from the stored JSON documents.

use std::sync::Arc;

use chrono::DateTime;
use datafusion::arrow::array::{
    ArrayRef, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::catalog::Session;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::LexOrdering;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::physical_plan::streaming::StreamingTableExec;
use datafusion::physical_plan::ExecutionPlan;
use kanade_storage::{RelationalStore, SqlTable};
use serde_json::Value;

use crate::Result;

/// Rows per batch a scan hands on.
const BATCH_ROWS: usize = 4096;

#[derive(Debug, Clone, Copy)]
enum Kind {
    /// Text; any other JSON value as its JSON text (payloads).
    Text,
    /// Integers; booleans as 0/1, as the reference's SQLite stores them.
    Int,
    /// RFC 3339 text as a UTC timestamp.
    Time,
}

/// Each table's columns: upstream's names, in upstream's order; a
/// column whose stored field is named otherwise says so in [`field`].
fn columns(table: SqlTable) -> &'static [(&'static str, Kind)] {
    use Kind::{Int, Text, Time};
    match table {
        SqlTable::ExecutionResults => &[
            ("result_id", Text),
            ("request_id", Text),
            ("exec_id", Text),
            ("pc_id", Text),
            ("exit_code", Int),
            ("stdout", Text),
            ("stderr", Text),
            ("started_at", Time),
            ("finished_at", Time),
            ("recorded_at", Time),
            ("job_id", Text),
            ("version", Text),
            ("reaped", Int),
            ("skipped", Int),
            ("parent_result_id", Text),
            ("collect_object", Text),
        ],
        SqlTable::Executions => &[
            ("exec_id", Text),
            ("job_id", Text),
            ("version", Text),
            ("initiated_by", Text),
            ("initiated_at", Time),
            ("target_count", Int),
            ("success_count", Int),
            ("failure_count", Int),
            ("status", Text),
        ],
        SqlTable::AuditLog => &[
            ("id", Int),
            ("actor", Text),
            ("action", Text),
            ("target", Text),
            ("payload", Text),
            ("occurred_at", Time),
        ],
        SqlTable::ObsEvents => &[
            ("id", Int),
            ("pc_id", Text),
            ("at", Time),
            ("kind", Text),
            ("source", Text),
            ("event_record_id", Text),
            ("payload", Text),
        ],
        SqlTable::CheckStatus => &[
            ("pc_id", Text),
            ("check_name", Text),
            ("status", Text),
            ("detail", Text),
            ("recorded_at", Time),
        ],
        SqlTable::InventoryFacts => &[
            ("pc_id", Text),
            ("job_id", Text),
            ("facts_json", Text),
            ("display_json", Text),
            ("summary_json", Text),
            ("collected_at", Time),
            ("recorded_at", Time),
        ],
        SqlTable::NotificationAcks => &[
            ("notification_id", Text),
            ("pc_id", Text),
            ("user_sid", Text),
            ("account", Text),
            ("acked_at", Time),
            ("recorded_at", Time),
            ("unacked_at", Time),
        ],
    }
}

/// The stored field a column reads (its own name but for these).
fn field(table: SqlTable, column: &'static str) -> &'static str {
    match (table, column) {
        (SqlTable::InventoryFacts, "job_id") => "manifest_id",
        _ => column,
    }
}

fn schema(table: SqlTable) -> SchemaRef {
    Arc::new(Schema::new(
        columns(table)
            .iter()
            .map(|(name, kind)| {
                let ty = match kind {
                    Kind::Text => DataType::Utf8,
                    Kind::Int => DataType::Int64,
                    Kind::Time => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                };
                Field::new(*name, ty, true)
            })
            .collect::<Vec<_>>(),
    ))
}

enum Builder {
    Text(StringBuilder),
    Int(Int64Builder),
    Time(TimestampMicrosecondBuilder),
}

impl Builder {
    fn new(kind: Kind) -> Self {
        match kind {
            Kind::Text => Self::Text(StringBuilder::new()),
            Kind::Int => Self::Int(Int64Builder::new()),
            Kind::Time => Self::Time(TimestampMicrosecondBuilder::new().with_timezone("UTC")),
        }
    }

    fn push(&mut self, v: Option<&Value>) {
        let v = v.filter(|v| !v.is_null());
        match self {
            Self::Text(b) => b.append_option(v.map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })),
            Self::Int(b) => b.append_option(v.and_then(|v| match v {
                Value::Bool(x) => Some(i64::from(*x)),
                other => other.as_i64(),
            })),
            Self::Time(b) => b.append_option(
                v.and_then(Value::as_str)
                    .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                    .map(|t| t.timestamp_micros()),
            ),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Self::Text(b) => Arc::new(b.finish()),
            Self::Int(b) => Arc::new(b.finish()),
            Self::Time(b) => Arc::new(b.finish().with_timezone("UTC")),
        }
    }
}

/// One scan of one table: the columns it reads (by their index in
/// [`columns`]) and their schema.
#[derive(Debug)]
struct Scan {
    table: SqlTable,
    schema: SchemaRef,
    store: RelationalStore,
    read: Vec<usize>,
}

/// The fields a scan reads out of a stored document, by stored name;
/// every other field is skipped unread (no allocation for a `stdout`
/// nobody selected).
struct Wanted<'a>(&'a [&'static str]);

/// Which wanted field a key is.
struct KeyOf<'a>(&'a [&'static str]);

impl<'de> serde::de::DeserializeSeed<'de> for KeyOf<'_> {
    type Value = Option<usize>;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> serde::de::Visitor<'de> for KeyOf<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> std::result::Result<Self::Value, E> {
        Ok(self.0.iter().position(|n| *n == key))
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Wanted<'_> {
    type Value = Vec<Option<Value>>;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Wanted<'_> {
    type Value = Vec<Option<Value>>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a stored row")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let mut out = vec![None; self.0.len()];
        while let Some(key) = map.next_key_seed(KeyOf(self.0))? {
            match key {
                Some(i) => out[i] = Some(map.next_value::<Value>()?),
                None => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(out)
    }
}

impl PartitionStream for Scan {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<datafusion::error::Result<RecordBatch>>(2);
        let (table, schema, store) = (self.table, Arc::clone(&self.schema), self.store.clone());
        let read = self.read.clone();
        tokio::task::spawn_blocking(move || {
            let all = columns(table);
            let cols: Vec<(&'static str, Kind)> = read.iter().map(|i| all[*i]).collect();
            let fields: Vec<&'static str> = cols.iter().map(|(n, _)| field(table, n)).collect();
            let mut builders: Vec<Builder> = cols.iter().map(|(_, k)| Builder::new(*k)).collect();
            let mut rows = 0usize;
            // The row count rides along: a scan reading no column
            // (`count(*)`) still hands on how many rows it saw.
            let flush = |builders: &mut Vec<Builder>, n: usize| {
                let arrays: Vec<ArrayRef> = builders.iter_mut().map(Builder::finish).collect();
                let options = RecordBatchOptions::new().with_row_count(Some(n));
                RecordBatch::try_new_with_options(Arc::clone(&schema), arrays, &options)
                    .map_err(DataFusionError::from)
            };
            let mut open = true;
            let mut each = |bytes: &[u8]| {
                use serde::de::DeserializeSeed;
                let mut de = serde_json::Deserializer::from_slice(bytes);
                let values = match Wanted(&fields).deserialize(&mut de) {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::warn!(table = table.name(), error = %e, "a stored row does not decode; left out of SQL");
                        return true;
                    }
                };
                for (v, b) in values.iter().zip(builders.iter_mut()) {
                    b.push(v.as_ref());
                }
                rows += 1;
                if rows == BATCH_ROWS {
                    open = tx.blocking_send(flush(&mut builders, rows)).is_ok();
                    rows = 0;
                }
                open
            };
            let scanned = store.scan_sql_table(table, &mut each);
            if let Err(e) = scanned {
                let _ = tx.blocking_send(Err(DataFusionError::External(Box::new(e))));
            } else if open && rows > 0 {
                let _ = tx.blocking_send(flush(&mut builders, rows));
            }
        });
        let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
        Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            stream,
        ))
    }
}

/// The SQL table over `table` of `store`: a scan reads and decodes only
/// the columns the query uses.
#[derive(Debug)]
pub(crate) struct RelTable {
    table: SqlTable,
    schema: SchemaRef,
    store: RelationalStore,
}

#[async_trait::async_trait]
impl TableProvider for RelTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let read: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.schema.fields().len()).collect(),
        };
        let schema = Arc::new(self.schema.project(&read)?);
        let scan = Scan {
            table: self.table,
            schema: Arc::clone(&schema),
            store: self.store.clone(),
            read,
        };
        Ok(Arc::new(StreamingTableExec::try_new(
            schema,
            vec![Arc::new(scan)],
            None,
            Vec::<LexOrdering>::new(),
            false,
            limit,
        )?))
    }
}

/// The SQL table over `table` of `store`.
pub(crate) fn sql_table(store: &RelationalStore, table: SqlTable) -> Result<RelTable> {
    Ok(RelTable {
        table,
        schema: schema(table),
        store: store.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use datafusion::prelude::SessionContext;
    use kanade_storage::{AuditRecord, InventoryFactRecord};

    async fn rows(ctx: &SessionContext, sql: &str) -> Vec<String> {
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// A scan reading some columns only: the bound's own row included
    /// with `>=` and left out with `>`, filters on unread columns too.
    #[tokio::test]
    async fn projected_scans_filter_as_full_ones() {
        use kanade_storage::FinishedRun;
        let dir = tempfile::tempdir().unwrap();
        let store = RelationalStore::open(dir.path()).unwrap();
        let t0 = Utc::now() - chrono::Duration::hours(5);
        let runs: Vec<FinishedRun> = (0..5)
            .map(|i| FinishedRun {
                result_id: format!("r{i}"),
                request_id: "q".into(),
                pc_id: format!("PC-{i}"),
                exit_code: i % 2,
                started_at: t0 + chrono::Duration::hours(i),
                finished_at: t0 + chrono::Duration::hours(i) + chrono::Duration::seconds(1),
                ..Default::default()
            })
            .collect();
        store.apply_finished(&runs, Utc::now(), None).unwrap();
        let ctx = SessionContext::new();
        let table = sql_table(&store, SqlTable::ExecutionResults).unwrap();
        ctx.register_table("execution_results", Arc::new(table))
            .unwrap();
        let bound = (t0 + chrono::Duration::hours(2) + chrono::Duration::seconds(1)).to_rfc3339();
        let ids = |sql: String| {
            let ctx = &ctx;
            async move {
                let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
                let mut out = Vec::new();
                for b in &batches {
                    let a = b
                        .column(0)
                        .as_any()
                        .downcast_ref::<datafusion::arrow::array::StringArray>()
                        .unwrap();
                    out.extend(
                        (0..datafusion::arrow::array::Array::len(a))
                            .map(|i| a.value(i).to_string()),
                    );
                }
                out.sort();
                out
            }
        };
        assert_eq!(
            ids(format!(
                "SELECT result_id FROM execution_results WHERE finished_at >= '{bound}'"
            ))
            .await,
            ["r2", "r3", "r4"]
        );
        assert_eq!(
            ids(format!("SELECT result_id FROM execution_results WHERE finished_at > '{bound}' AND exit_code = 1")).await,
            ["r3"]
        );
        assert_eq!(
            ids("SELECT result_id FROM execution_results".into())
                .await
                .len(),
            5
        );
    }

    #[tokio::test]
    async fn tables_read_stored_rows_under_upstream_names_across_batches() {
        let dir = tempfile::tempdir().unwrap();
        let store = RelationalStore::open(dir.path()).unwrap();
        let now = Utc::now();
        store
            .put_inventory_facts(&[InventoryFactRecord {
                pc_id: "PC-1".into(),
                manifest_id: "hw".into(),
                facts_json: r#"{"cpu":"x"}"#.into(),
                display_json: "[]".into(),
                summary_json: None,
                collected_at: now,
                recorded_at: now,
            }])
            .unwrap();
        // More rows than one batch holds, payloads of every JSON shape.
        let n = BATCH_ROWS * 2 + 7;
        let entries: Vec<AuditRecord> = (0..n)
            .map(|i| AuditRecord {
                id: i as u64 + 1,
                actor: "operator".into(),
                action: if i % 2 == 0 { "run" } else { "exec" }.into(),
                target: (i % 3 == 0).then(|| format!("PC-{i}")),
                payload: match i % 3 {
                    0 => serde_json::json!({"k": i}),
                    1 => serde_json::json!("text"),
                    _ => Value::Null,
                },
                occurred_at: Some(now),
            })
            .collect();
        assert_eq!(store.apply_audit(&entries, None).unwrap(), n);
        let ctx = SessionContext::new();
        for t in [SqlTable::InventoryFacts, SqlTable::AuditLog] {
            ctx.register_table(t.name(), Arc::new(sql_table(&store, t).unwrap()))
                .unwrap();
        }
        let facts = rows(
            &ctx,
            "SELECT job_id, pc_id, facts_json FROM inventory_facts",
        )
        .await;
        assert!(
            facts[3].contains("| hw     | PC-1  | {\"cpu\":\"x\"} |"),
            "{facts:#?}"
        );
        let counts = rows(
            &ctx,
            "SELECT count(*) AS n, count(target) AS targeted, \
             sum(CASE WHEN payload = '{\"k\":0}' THEN 1 ELSE 0 END) AS first \
             FROM audit_log",
        )
        .await;
        let cells: Vec<String> = counts[3]
            .split('|')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect();
        let targeted = (0..n).filter(|i| i % 3 == 0).count();
        assert_eq!(
            cells,
            [n.to_string(), targeted.to_string(), "1".into()],
            "{counts:#?}"
        );
        // A scan that reads no column still counts every row (across
        // batches).
        let only = rows(&ctx, "SELECT count(*) AS n FROM audit_log").await;
        assert!(only[3].contains(&n.to_string()), "{only:#?}");
        // A LIMIT stops the read early and still answers.
        let limited = rows(&ctx, "SELECT id FROM audit_log LIMIT 2").await;
        assert_eq!(limited.len(), 6, "{limited:#?}");
    }
}
