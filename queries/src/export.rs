//! Export: the rows of one table in a window (optionally one PC) as a
//! stream of Arrow batches, for a Parquet download that never holds the
//! whole result in memory.

use chrono::{DateTime, Utc};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::prelude::{col, lit};

use crate::session::lit_ts;
use crate::{Error, PerfQueries, Result};

/// The exportable tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportTable {
    HostPerf,
    ProcessPerf,
}

impl ExportTable {
    /// `host_perf` or `process_perf`; `None` otherwise.
    pub fn try_parse(s: &str) -> Option<Self> {
        match s {
            "host_perf" => Some(Self::HostPerf),
            "process_perf" => Some(Self::ProcessPerf),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::HostPerf => "host_perf",
            Self::ProcessPerf => "process_perf",
        }
    }
}

/// A running export: the batches, and what holds the files they are read
/// from on disk (a snapshot) until the stream is drained.
pub struct ExportStream {
    pub schema: SchemaRef,
    pub batches: SendableRecordBatchStream,
    pub keep: Box<dyn std::any::Any + Send + Sync>,
}

impl PerfQueries {
    /// Rows of `table` with `at` in `[from, to)` (and `pc_id`, if given),
    /// sorted by (pc_id, at), streamed batch by batch.
    pub async fn export(
        &self,
        table: ExportTable,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        pc_id: Option<&str>,
    ) -> Result<ExportStream> {
        let source = match table {
            ExportTable::HostPerf => &self.host,
            ExportTable::ProcessPerf => &self.process,
        };
        let name = table.name();
        let snapshot = source.snapshot(Some((from, to)));
        let mut filter = col("at").gt_eq(lit_ts(from)).and(col("at").lt(lit_ts(to)));
        if let Some(pc) = pc_id {
            filter = filter.and(col("pc_id").eq(lit(pc)));
        }
        let df = self
            .engine
            .frame(name, &snapshot)?
            .filter(filter)
            .and_then(|df| {
                df.sort(vec![
                    col("pc_id").sort(true, false),
                    col("at").sort(true, false),
                ])
            })
            .map_err(Error::df(name))?;
        let batches = df.execute_stream().await.map_err(Error::df(name))?;
        Ok(ExportStream {
            schema: snapshot.schema(),
            batches,
            keep: Box::new(snapshot),
        })
    }
}
