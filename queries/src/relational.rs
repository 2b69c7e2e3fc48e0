//! Relational questions over redb snapshots: the `agents` table joins the
//! perf rankings for hostnames (DataFusion), and the finished runs feed the
//! scan-duration percentiles (computed directly).

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::prelude::{DataFrame, SessionContext};
use kanade_storage::RelationalStore;

use crate::session::{collect, column};
use crate::{Error, PerfQueries, Result};

const TABLE: &str = "execution_results";

/// One job's run-time distribution (milliseconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanDurations {
    pub job_id: String,
    pub count: i64,
    pub min_ms: i64,
    pub p50_ms: i64,
    pub p95_ms: i64,
    pub p99_ms: i64,
    pub max_ms: i64,
    pub mean_ms: i64,
    /// The slowest run (the earliest finished one among equals).
    pub max_result_id: Option<String>,
}

/// The `agents(agent_pc_id, hostname)` table of a redb snapshot, ready to
/// be LEFT JOINed on `pc_id = agent_pc_id`.
pub(crate) fn agents_frame(ctx: &SessionContext, store: &RelationalStore) -> Result<DataFrame> {
    let agents = store.agents().map_err(crate::Error::storage("agents"))?;
    let schema = Arc::new(Schema::new(vec![
        Field::new("agent_pc_id", DataType::Utf8, false),
        Field::new("hostname", DataType::Utf8, true),
    ]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(StringArray::from_iter_values(
                agents.iter().map(|a| a.pc_id.as_str()),
            )) as ArrayRef,
            Arc::new(
                agents
                    .iter()
                    .map(|a| a.hostname.as_deref())
                    .collect::<StringArray>(),
            ),
        ],
    )
    .map_err(|e| Error::df("agents")(e.into()))?;
    let table = MemTable::try_new(schema, vec![vec![batch]]).map_err(Error::df("agents"))?;
    ctx.read_table(Arc::new(table)).map_err(Error::df("agents"))
}

/// Nearest rank `ceil(pct/100 · n)` as SQL integer arithmetic, at least 1.
fn rank_sql(pct: u32) -> String {
    format!("CASE WHEN ({pct} * n + 99) / 100 < 1 THEN 1 ELSE ({pct} * n + 99) / 100 END")
}

/// Nearest rank `ceil(pct/100 · n)`, at least 1.
fn rank(pct: i64, n: usize) -> usize {
    (((pct * n as i64) + 99) / 100).max(1) as usize
}

impl PerfQueries {
    /// Per job over runs finished since `since`: count, min, nearest-rank
    /// p50/p95/p99, max, integer mean and the slowest run; slowest p95
    /// first. Durations are exact integer milliseconds, negatives as 0.
    /// Computed directly: a sort per job, no SQL planner.
    pub async fn scan_durations(&self, since: DateTime<Utc>) -> Result<Vec<ScanDurations>> {
        let runs = self
            .store
            .run_times_finished_since(since)
            .map_err(crate::Error::storage(TABLE))?;
        // Per job: (duration, order finished) of each run.
        let mut per_job: HashMap<String, Vec<(i64, usize, String)>> = HashMap::new();
        for (seq, r) in runs.into_iter().enumerate() {
            let (Some(job), Some(finished)) = (r.job_id, r.finished_at) else {
                continue;
            };
            let ms = (finished - r.started_at).num_milliseconds().max(0);
            per_job.entry(job).or_default().push((ms, seq, r.result_id));
        }
        let mut out: Vec<ScanDurations> = per_job
            .into_iter()
            .map(|(job_id, mut runs)| {
                // Shortest first; among equals the later finished first, so
                // the last is the slowest run that finished earliest.
                runs.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
                let n = runs.len();
                let at = |pct: i64| runs[rank(pct, n) - 1].0;
                let sum: i64 = runs.iter().map(|r| r.0).sum();
                ScanDurations {
                    count: n as i64,
                    min_ms: runs[0].0,
                    p50_ms: at(50),
                    p95_ms: at(95),
                    p99_ms: at(99),
                    max_ms: runs[n - 1].0,
                    mean_ms: sum / n as i64,
                    max_result_id: Some(runs[n - 1].2.clone()),
                    job_id,
                }
            })
            .collect();
        out.sort_by(|a, b| b.p95_ms.cmp(&a.p95_ms).then(a.job_id.cmp(&b.job_id)));
        Ok(out)
    }

    /// The same question as [`Self::scan_durations`] in DataFusion SQL:
    /// what the direct computation is checked against.
    #[doc(hidden)]
    pub async fn scan_durations_sql(&self, since: DateTime<Utc>) -> Result<Vec<ScanDurations>> {
        let runs = self
            .store
            .results_finished_since(since)
            .map_err(crate::Error::storage(TABLE))?;
        let runs: Vec<(String, String, i64)> = runs
            .into_iter()
            .filter_map(|r| {
                let ms = (r.finished_at? - r.started_at).num_milliseconds().max(0);
                Some((r.job_id?, r.result_id, ms))
            })
            .collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("job_id", DataType::Utf8, false),
            Field::new("result_id", DataType::Utf8, false),
            Field::new("dur_ms", DataType::Int64, false),
            Field::new("seq", DataType::Int64, false),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(StringArray::from_iter_values(
                    runs.iter().map(|r| r.0.as_str()),
                )) as ArrayRef,
                Arc::new(StringArray::from_iter_values(
                    runs.iter().map(|r| r.1.as_str()),
                )),
                Arc::new(Int64Array::from_iter_values(runs.iter().map(|r| r.2))),
                Arc::new(Int64Array::from_iter_values(0..runs.len() as i64)),
            ],
        )
        .map_err(|e| Error::df(TABLE)(e.into()))?;
        let ctx = self.engine.private_session();
        let table = MemTable::try_new(schema, vec![vec![batch]]).map_err(Error::df(TABLE))?;
        ctx.register_table("runs", Arc::new(table))
            .map_err(Error::df(TABLE))?;
        let pick = |pct: u32| format!("MAX(CASE WHEN rn = {} THEN dur_ms END)", rank_sql(pct));
        let sql = format!(
            "WITH ranked AS (
                 SELECT job_id, result_id, dur_ms,
                        ROW_NUMBER() OVER (PARTITION BY job_id ORDER BY dur_ms ASC, seq DESC) AS rn,
                        COUNT(*) OVER (PARTITION BY job_id) AS n
                 FROM runs)
             SELECT job_id,
                    MAX(n) AS count,
                    MIN(dur_ms) AS min_ms,
                    {p50} AS p50_ms,
                    {p95} AS p95_ms,
                    {p99} AS p99_ms,
                    MAX(dur_ms) AS max_ms,
                    CAST(SUM(dur_ms) / MAX(n) AS BIGINT) AS mean_ms,
                    MAX(CASE WHEN rn = n THEN result_id END) AS max_result_id
             FROM ranked
             GROUP BY job_id
             ORDER BY p95_ms DESC, job_id ASC",
            p50 = pick(50),
            p95 = pick(95),
            p99 = pick(99),
        );
        let df = ctx.sql(&sql).await.map_err(Error::df(TABLE))?;
        let mut out = Vec::new();
        for b in collect(TABLE, df).await? {
            let job = column::<StringArray>(TABLE, &b, "job_id")?;
            let ints = |name: &str| column::<Int64Array>(TABLE, &b, name);
            let (count, min, p50, p95, p99, max, mean) = (
                ints("count")?,
                ints("min_ms")?,
                ints("p50_ms")?,
                ints("p95_ms")?,
                ints("p99_ms")?,
                ints("max_ms")?,
                ints("mean_ms")?,
            );
            let slowest = column::<StringArray>(TABLE, &b, "max_result_id")?;
            for i in 0..b.num_rows() {
                out.push(ScanDurations {
                    job_id: job.value(i).to_string(),
                    count: count.value(i),
                    min_ms: min.value(i),
                    p50_ms: p50.value(i),
                    p95_ms: p95.value(i),
                    p99_ms: p99.value(i),
                    max_ms: max.value(i),
                    mean_ms: mean.value(i),
                    max_result_id: Some(slowest.value(i).to_string()),
                });
            }
        }
        Ok(out)
    }
}
