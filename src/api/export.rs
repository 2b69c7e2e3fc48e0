//! `GET /api/export/{host_perf|process_perf}?from&to&pc_id`: a Parquet file
//! streamed as it is written. At most one row group (and one Arrow batch)
//! is in memory at a time, so a 30-day export costs no more RAM than a day.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{Duration, Utc};
use futures::StreamExt;
use kanade_queries::ExportTable;
use kanade_storage::parquet::arrow::AsyncArrowWriter;
use kanade_storage::parquet::basic::{Compression, ZstdLevel};
use kanade_storage::parquet::file::properties::WriterProperties;
use serde::Deserialize;

use super::error::ApiError;
use super::offload;
use super::params::{ApiQuery, TimeWindow, WindowParams};
use crate::api::state::AppState;

const DEFAULT_SPAN: Duration = Duration::hours(24);
/// Bytes buffered between the Parquet writer and the HTTP body.
const PIPE_BYTES: usize = 256 * 1024;
const ROW_GROUP_ROWS: usize = 65_536;

#[derive(Deserialize)]
pub struct ExportParams {
    pc_id: Option<String>,
    #[serde(flatten)]
    window: WindowParams,
}

/// Streams the export as `application/vnd.apache.parquet`.
pub async fn export(
    State(state): State<AppState>,
    Path(table): Path<String>,
    ApiQuery(p): ApiQuery<ExportParams>,
) -> Result<Response, ApiError> {
    let table = ExportTable::try_parse(&table).ok_or_else(|| {
        ApiError::bad_param(
            "table",
            format!("unknown table {table:?}; expected host_perf or process_perf"),
        )
    })?;
    // The window rules of the perf API (the step only bounds buckets there,
    // so it is fixed here).
    let window = WindowParams {
        step: Some("1h".into()),
        ..p.window
    };
    let w = TimeWindow::try_from_params(&window, Utc::now(), DEFAULT_SPAN, 3600)?;
    let pc_id = p.pc_id.filter(|s| !s.is_empty());
    let q = state.queries.clone();
    let export =
        offload::query(async move { q.export(table, w.from, w.to, pc_id.as_deref()).await })
            .await?;
    let file_name = format!(
        "{}_{}_{}.parquet",
        table.name(),
        w.from.format("%Y%m%dT%H%M%SZ"),
        w.to.format("%Y%m%dT%H%M%SZ")
    );
    let (writer, reader) = tokio::io::duplex(PIPE_BYTES);
    offload::spawn_query_task(write_parquet(export, writer));
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(reader));
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "application/vnd.apache.parquet".to_string(),
            ),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file_name}\""),
            ),
        ],
        body,
    )
        .into_response())
}

/// Writes the batches into the pipe; an error mid-stream cuts the body
/// short (the client sees a truncated, unreadable file) and is logged.
pub(super) async fn write_parquet(
    mut export: kanade_queries::ExportStream,
    pipe: tokio::io::DuplexStream,
) {
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build();
    let mut writer = match AsyncArrowWriter::try_new(pipe, export.schema.clone(), Some(props)) {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(error = %e, "export: cannot start the Parquet writer");
            return;
        }
    };
    while let Some(batch) = export.batches.next().await {
        let written = match batch {
            Ok(b) => writer.write(&b).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = written {
            tracing::error!(error = %e, "export aborted");
            return;
        }
    }
    if let Err(e) = writer.close().await {
        tracing::error!(error = %e, "export: closing the Parquet file failed");
    }
    drop(export.keep);
}

/// Writes the batches into the pipe as CSV (a header of column names,
/// values in their text form, quoted where needed); an error mid-stream
/// cuts the body short and is logged.
pub(super) async fn write_csv(
    mut export: kanade_queries::ExportStream,
    mut pipe: tokio::io::DuplexStream,
) {
    use kanade_storage::arrow::array::{Array, StringArray};
    use kanade_storage::arrow::compute::cast;
    use kanade_storage::arrow::datatypes::DataType;
    use tokio::io::AsyncWriteExt;
    fn field(out: &mut String, v: &str) {
        if v.contains([',', '"', '\n', '\r']) {
            out.push('"');
            out.push_str(&v.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(v);
        }
    }
    let mut out = String::new();
    for (i, f) in export.schema.fields().iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        field(&mut out, f.name());
    }
    out.push_str("\r\n");
    while let Some(batch) = export.batches.next().await {
        let batch = match batch {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "CSV export aborted");
                return;
            }
        };
        let mut columns = Vec::with_capacity(batch.num_columns());
        for c in batch.columns() {
            match cast(c, &DataType::Utf8) {
                Ok(a) => columns.push(a),
                Err(e) => {
                    tracing::error!(error = %e, "CSV export aborted");
                    return;
                }
            }
        }
        let columns: Vec<&StringArray> = columns
            .iter()
            .filter_map(|a| a.as_any().downcast_ref::<StringArray>())
            .collect();
        for row in 0..batch.num_rows() {
            for (i, c) in columns.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                if c.is_valid(row) {
                    field(&mut out, c.value(row));
                }
            }
            out.push_str("\r\n");
        }
        if pipe.write_all(out.as_bytes()).await.is_err() {
            return;
        }
        out.clear();
    }
    if !out.is_empty() && pipe.write_all(out.as_bytes()).await.is_err() {
        return;
    }
    let _ = pipe.shutdown().await;
    drop(export.keep);
}
