//! Process perf questions: a PC's latest tick, its stacked per-process
//! timeline, and which PCs are under investigation right now.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{
    Array, Float64Array, Int64Array, StringArray, TimestampMicrosecondArray,
};
use datafusion::common::JoinType;
use datafusion::functions_aggregate::expr_fn::{avg, max};
use datafusion::prelude::{col, lit, when};

use crate::metric::ProcessMetric;
use crate::session::{
    bucket_expr, collect, column, f64_expr, frame, lit_ts, opt_f64, secs_to_time, ts,
};
use crate::{Error, PerfQueries, Result};

const TABLE: &str = "process_perf";

/// Label of the series that collects every process outside the top-N.
pub const OTHER: &str = "other";

/// One process row of a tick.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessRow {
    pub pid: i64,
    pub name: String,
    pub cpu_pct: f64,
    pub rss_bytes: i64,
    pub disk_read_bytes_per_sec: Option<f64>,
    pub disk_written_bytes_per_sec: Option<f64>,
}

/// A PC's most recent tick (`latest_at` is `None` when it has none).
#[derive(Debug, Clone, PartialEq)]
pub struct LatestTick {
    pub latest_at: Option<DateTime<Utc>>,
    pub processes: Vec<ProcessRow>,
}

/// One bucket of the stacked timeline: series name → AVG of the metric.
#[derive(Debug, Clone, PartialEq)]
pub struct TimelinePoint {
    pub at: DateTime<Utc>,
    pub values: HashMap<String, f64>,
}

/// The stacked per-process timeline of one PC.
#[derive(Debug, Clone, PartialEq)]
pub struct Timeline {
    /// Top-N names in rank order, then `other` if any bucket has it.
    pub names: Vec<String>,
    pub points: Vec<TimelinePoint>,
}

/// A PC that published process samples recently.
#[derive(Debug, Clone, PartialEq)]
pub struct ActiveInvestigation {
    pub pc_id: String,
    /// From the agents table; `None` when the PC never sent a heartbeat.
    pub hostname: Option<String>,
    pub latest_at: DateTime<Utc>,
}

impl PerfQueries {
    /// Every process of the PC's latest tick, highest cpu first.
    pub async fn latest_tick(&self, pc_id: &str) -> Result<LatestTick> {
        let Some(latest) = self.latest_process_at(pc_id).await? else {
            return Ok(LatestTick {
                latest_at: None,
                processes: vec![],
            });
        };
        let end = latest + chrono::Duration::microseconds(1);
        let snapshot = self.process.snapshot(Some((latest, end)));
        let ctx = self.session();
        let df = frame(&ctx, TABLE, &snapshot)
            .await?
            .filter(
                col("pc_id")
                    .eq(lit(pc_id))
                    .and(col("at").eq(lit_ts(latest))),
            )
            .and_then(|df| {
                df.sort(vec![
                    col("cpu_pct").sort(false, false),
                    col("pid").sort(true, false),
                ])
            })
            .map_err(Error::df(TABLE))?;
        let mut processes = Vec::new();
        for batch in collect(TABLE, df).await? {
            let pid = column::<Int64Array>(TABLE, &batch, "pid")?;
            let name = column::<StringArray>(TABLE, &batch, "name")?;
            let cpu = column::<Float64Array>(TABLE, &batch, "cpu_pct")?;
            let rss = column::<Int64Array>(TABLE, &batch, "rss_bytes")?;
            let dr = column::<Float64Array>(TABLE, &batch, "disk_read_bytes_per_sec")?;
            let dw = column::<Float64Array>(TABLE, &batch, "disk_written_bytes_per_sec")?;
            for i in 0..batch.num_rows() {
                processes.push(ProcessRow {
                    pid: pid.value(i),
                    name: name.value(i).to_string(),
                    cpu_pct: cpu.value(i),
                    rss_bytes: rss.value(i),
                    disk_read_bytes_per_sec: opt_f64(dr, i),
                    disk_written_bytes_per_sec: opt_f64(dw, i),
                });
            }
        }
        drop(snapshot);
        Ok(LatestTick {
            latest_at: Some(latest),
            processes,
        })
    }

    async fn latest_process_at(&self, pc_id: &str) -> Result<Option<DateTime<Utc>>> {
        let snapshot = self.process.snapshot(None);
        let ctx = self.session();
        let df = frame(&ctx, TABLE, &snapshot)
            .await?
            .filter(col("pc_id").eq(lit(pc_id)))
            .and_then(|df| df.aggregate(vec![], vec![max(col("at")).alias("latest")]))
            .map_err(Error::df(TABLE))?;
        let batches = collect(TABLE, df).await?;
        drop(snapshot);
        let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) else {
            return Ok(None);
        };
        let latest = column::<TimestampMicrosecondArray>(TABLE, batch, "latest")?;
        Ok(ts(latest, 0))
    }

    /// The stacked timeline of `pc_id` over `[from, to)`: the `top` names
    /// with the highest AVG(`metric`) over the whole window keep their own
    /// series in every bucket; every other row of a bucket is averaged
    /// into `other`.
    pub async fn process_timeline(
        &self,
        pc_id: &str,
        metric: ProcessMetric,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        step_secs: i64,
        top: usize,
    ) -> Result<Timeline> {
        let snapshot = self.process.snapshot(Some((from, to)));
        let ctx = self.session();
        let window = col("pc_id")
            .eq(lit(pc_id))
            .and(col("at").gt_eq(lit_ts(from)))
            .and(col("at").lt(lit_ts(to)));
        let base = frame(&ctx, TABLE, &snapshot)
            .await?
            .filter(window)
            .map_err(Error::df(TABLE))?;
        let value = f64_expr(metric.column());

        let ranked = base
            .clone()
            .filter(col(metric.column()).is_not_null())
            .and_then(|df| df.aggregate(vec![col("name")], vec![avg(value.clone()).alias("v")]))
            .and_then(|df| {
                df.sort(vec![
                    col("v").sort(false, false),
                    col("name").sort(true, false),
                ])
            })
            .and_then(|df| df.limit(0, Some(top)))
            .map_err(Error::df(TABLE))?;
        let mut names = Vec::new();
        for batch in collect(TABLE, ranked).await? {
            let n = column::<StringArray>(TABLE, &batch, "name")?;
            names.extend((0..batch.num_rows()).map(|i| n.value(i).to_string()));
        }
        if names.is_empty() {
            return Ok(Timeline {
                names,
                points: vec![],
            });
        }

        let in_top = col("name").in_list(names.iter().map(|n| lit(n.as_str())).collect(), false);
        let series = when(in_top, col("name"))
            .otherwise(lit(OTHER))
            .map_err(Error::df(TABLE))?;
        let bucketed = base
            .aggregate(
                vec![
                    bucket_expr(step_secs).alias("bucket"),
                    series.alias("series"),
                ],
                vec![avg(value).alias("v")],
            )
            .and_then(|df| df.sort(vec![col("bucket").sort(true, false)]))
            .map_err(Error::df(TABLE))?;
        let mut points: Vec<TimelinePoint> = Vec::new();
        let mut has_other = false;
        for batch in collect(TABLE, bucketed).await? {
            let bucket = column::<Int64Array>(TABLE, &batch, "bucket")?;
            let series = column::<StringArray>(TABLE, &batch, "series")?;
            let v = column::<Float64Array>(TABLE, &batch, "v")?;
            for i in 0..batch.num_rows() {
                let Some(value) = opt_f64(v, i) else { continue };
                let name = series.value(i).to_string();
                has_other |= name == OTHER && !names.contains(&name);
                let at = secs_to_time(bucket.value(i));
                match points.last_mut() {
                    Some(p) if p.at == at => {
                        p.values.insert(name, value);
                    }
                    _ => points.push(TimelinePoint {
                        at,
                        values: HashMap::from([(name, value)]),
                    }),
                }
            }
        }
        drop(snapshot);
        if has_other {
            names.push(OTHER.to_string());
        }
        Ok(Timeline { names, points })
    }

    /// PCs with process samples newer than `since`, newest first.
    pub async fn active_investigations(
        &self,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<ActiveInvestigation>> {
        let snapshot = self
            .process
            .snapshot(Some((since, now + chrono::Duration::days(1))));
        let ctx = self.session();
        let agents = crate::relational::agents_frame(&ctx, &self.store)?;
        let df = frame(&ctx, TABLE, &snapshot)
            .await?
            .filter(col("at").gt(lit_ts(since)))
            .and_then(|df| {
                df.aggregate(vec![col("pc_id")], vec![max(col("at")).alias("latest_at")])
            })
            .and_then(|df| df.join(agents, JoinType::Left, &["pc_id"], &["agent_pc_id"], None))
            .and_then(|df| {
                df.sort(vec![
                    col("latest_at").sort(false, false),
                    col("pc_id").sort(true, false),
                ])
            })
            .map_err(Error::df(TABLE))?;
        let mut rows = Vec::new();
        for batch in collect(TABLE, df).await? {
            let pc = column::<StringArray>(TABLE, &batch, "pc_id")?;
            let latest = column::<TimestampMicrosecondArray>(TABLE, &batch, "latest_at")?;
            let host = column::<StringArray>(TABLE, &batch, "hostname")?;
            for i in 0..batch.num_rows() {
                if let Some(latest_at) = ts(latest, i) {
                    rows.push(ActiveInvestigation {
                        pc_id: pc.value(i).to_string(),
                        hostname: host.is_valid(i).then(|| host.value(i).to_string()),
                        latest_at,
                    });
                }
            }
        }
        drop(snapshot);
        Ok(rows)
    }
}
