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
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use kanade_storage::{RelationalStore, SqlTable};
use serde_json::Value;

use crate::{Error, Result};

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

/// One scan of one table.
#[derive(Debug)]
struct Scan {
    table: SqlTable,
    schema: SchemaRef,
    store: RelationalStore,
}

impl PartitionStream for Scan {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<datafusion::error::Result<RecordBatch>>(2);
        let (table, schema, store) = (self.table, Arc::clone(&self.schema), self.store.clone());
        tokio::task::spawn_blocking(move || {
            let cols = columns(table);
            let mut builders: Vec<Builder> = cols.iter().map(|(_, k)| Builder::new(*k)).collect();
            let mut rows = 0usize;
            let flush = |builders: &mut Vec<Builder>| {
                let arrays: Vec<ArrayRef> = builders.iter_mut().map(Builder::finish).collect();
                RecordBatch::try_new(Arc::clone(&schema), arrays).map_err(DataFusionError::from)
            };
            let mut open = true;
            let scanned = store.scan_sql_table(table, &mut |bytes| {
                let doc: Value = match serde_json::from_slice(bytes) {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::warn!(table = table.name(), error = %e, "a stored row does not decode; left out of SQL");
                        return true;
                    }
                };
                for ((name, _), b) in cols.iter().zip(builders.iter_mut()) {
                    b.push(doc.get(field(table, name)));
                }
                rows += 1;
                if rows == BATCH_ROWS {
                    rows = 0;
                    open = tx.blocking_send(flush(&mut builders)).is_ok();
                }
                open
            });
            if let Err(e) = scanned {
                let _ = tx.blocking_send(Err(DataFusionError::External(Box::new(e))));
            } else if open && rows > 0 {
                let _ = tx.blocking_send(flush(&mut builders));
            }
        });
        let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
        Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            stream,
        ))
    }
}

/// The SQL table over `table` of `store`.
pub(crate) fn sql_table(store: &RelationalStore, table: SqlTable) -> Result<StreamingTable> {
    let schema = schema(table);
    let scan = Scan {
        table,
        schema: Arc::clone(&schema),
        store: store.clone(),
    };
    StreamingTable::try_new(schema, vec![Arc::new(scan)]).map_err(Error::df(table.name()))
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
        // A LIMIT stops the read early and still answers.
        let limited = rows(&ctx, "SELECT id FROM audit_log LIMIT 2").await;
        assert_eq!(limited.len(), 6, "{limited:#?}");
    }
}
