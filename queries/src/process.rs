//! Process perf questions: a PC's latest tick, its stacked per-process
//! timeline, and which PCs are under investigation right now.

use std::collections::{BTreeMap, HashMap};

use foldhash::HashMap as FastMap;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::AsArray;
use datafusion::arrow::array::{
    Array, Float64Array, Int64Array, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::JoinType;
use datafusion::functions_aggregate::expr_fn::{count, max, sum};
use datafusion::prelude::{col, lit};
use kanade_storage::{LatestRows, ProcessPerfRow};

use crate::fastpath::{bucket_of, pc_window, ReadStats};
use crate::metric::ProcessMetric;
use crate::session::{bucket_expr, collect, column, f64_expr, lit_ts, secs_to_time, ts};
use crate::{Error, PerfQueries, Result};

const TABLE: &str = "process_perf";

/// Errors of a rollup read name the rollup tables together.
const ROLLUP: &str = "process_perf rollup";

/// Label of the series that collects every process outside the top-N.
pub const OTHER: &str = "other";

/// A PC's most recent tick (`latest_at` is `None` when it has none).
#[derive(Debug, Clone, PartialEq)]
pub struct LatestTick {
    pub latest_at: Option<DateTime<Utc>>,
    pub processes: Vec<ProcessPerfRow>,
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

/// Per (bucket, name) sums and counts of one metric (non-null values
/// only), the names borrowed from the batches read. Each name is hashed
/// as text once per row to its number, and the cells are keyed by
/// (bucket, number): a PC's day is one short-string lookup and one
/// integer-keyed update per row.
struct Cells<'a> {
    step: i64,
    ids: FastMap<&'a str, u32>,
    names: Vec<&'a str>,
    acc: FastMap<(i64, u32), Mean>,
}

impl<'a> Cells<'a> {
    fn new(step_secs: i64) -> Self {
        Self {
            step: step_secs.max(1),
            ids: FastMap::default(),
            names: Vec::new(),
            acc: FastMap::default(),
        }
    }

    /// Adds `sum` over `count` values of `name` to the bucket of `at_micros`.
    fn add(&mut self, at_micros: i64, name: &'a str, sum: f64, count: i64) {
        let id = match self.ids.get(name) {
            Some(id) => *id,
            None => {
                let id = self.names.len() as u32;
                self.ids.insert(name, id);
                self.names.push(name);
                id
            }
        };
        self.acc
            .entry((bucket_of(at_micros, self.step), id))
            .or_default()
            .add(sum, count);
    }

    /// Adds raw rows: (pc_id, at, name, metric) with the metric's non-null
    /// values; `name` is the batch's name column as text.
    fn add_rows(&mut self, b: &RecordBatch, name: &'a StringArray) -> Result<()> {
        let at = column::<TimestampMicrosecondArray>(TABLE, b, "at")?;
        let value = cast(b.column(3), &DataType::Float64).map_err(|e| Error::Shape {
            table: TABLE,
            message: e.to_string(),
        })?;
        let value = value.as_primitive::<Float64Type>();
        for i in 0..b.num_rows() {
            if value.is_valid(i) {
                self.add(at.value(i), name.value(i), value.value(i), 1);
            }
        }
        Ok(())
    }

    /// Adds rollup rows: (pc_id, at = the window's start, name, Σ, count),
    /// exactly what the window's raw rows of that name would have added.
    fn add_partial(&mut self, b: &RecordBatch, name: &'a StringArray) -> Result<()> {
        let at = column::<TimestampMicrosecondArray>(ROLLUP, b, "at")?;
        let sum = b.column(3).as_any().downcast_ref::<Float64Array>();
        let count = b.column(4).as_any().downcast_ref::<Int64Array>();
        let (Some(sum), Some(count)) = (sum, count) else {
            return Err(Error::Shape {
                table: ROLLUP,
                message: "rollup columns are not (sum, count)".into(),
            });
        };
        for i in 0..b.num_rows() {
            if count.value(i) > 0 {
                self.add(at.value(i), name.value(i), sum.value(i), count.value(i));
            }
        }
        Ok(())
    }

    /// Ranks names by their AVG over the window (ties by name), keeps the
    /// `top` ones as series and averages every other row of a bucket into
    /// `other`.
    fn stack(self, top: usize) -> Timeline {
        let mut total = vec![Mean::default(); self.names.len()];
        for (&(_, id), m) in &self.acc {
            total[id as usize].add(m.sum, m.count);
        }
        let mut ranked: Vec<usize> = (0..self.names.len()).collect();
        ranked.sort_by(|&a, &b| {
            total[b]
                .value()
                .total_cmp(&total[a].value())
                .then_with(|| self.names[a].cmp(self.names[b]))
        });
        ranked.truncate(top);
        let mut names: Vec<String> = ranked.iter().map(|&i| self.names[i].to_string()).collect();
        // Each name's series: its rank among the top ones, else `other`
        // (the slot after them, or a top process that is itself named
        // `other`).
        let other = names.iter().position(|n| n == OTHER);
        let other_slot = other.unwrap_or(names.len());
        let mut slot = vec![other_slot; self.names.len()];
        for (rank, &i) in ranked.iter().enumerate() {
            slot[i] = rank;
        }
        let width = names.len() + 1;
        let mut buckets: BTreeMap<i64, Vec<Mean>> = BTreeMap::new();
        for ((bucket, id), m) in self.acc {
            buckets
                .entry(bucket)
                .or_insert_with(|| vec![Mean::default(); width])[slot[id as usize]]
                .add(m.sum, m.count);
        }
        // `other` joins the names when some bucket has it.
        let has_other = other.is_none() && buckets.values().any(|s| s[other_slot].count > 0);
        let label = |k: usize| names.get(k).map_or(OTHER, String::as_str);
        let points = buckets
            .into_iter()
            .map(|(bucket, series)| TimelinePoint {
                at: secs_to_time(bucket),
                values: series
                    .into_iter()
                    .enumerate()
                    .filter(|(_, m)| m.count > 0)
                    .map(|(k, m)| (label(k).to_string(), m.value()))
                    .collect(),
            })
            .collect();
        if has_other {
            names.push(OTHER.to_string());
        }
        Timeline { names, points }
    }
}

/// Running sum and count: an AVG that can be merged.
#[derive(Default, Clone, Copy)]
struct Mean {
    sum: f64,
    count: i64,
}

impl Mean {
    fn add(&mut self, sum: f64, count: i64) {
        self.sum += sum;
        self.count += count;
    }

    fn value(self) -> f64 {
        self.sum / self.count as f64
    }
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
    /// Every process of the PC's latest tick, highest cpu first (ties by
    /// pid). Answered from the table's in-memory latest-rows index; the
    /// first question about a PC whose history predates this process
    /// scans the files once and teaches the index.
    pub async fn latest_tick(&self, pc_id: &str) -> Result<LatestTick> {
        let latest = match self.process.latest_rows(pc_id) {
            Some(rows) => Some(rows),
            None => {
                let found = self.scan_latest_rows(pc_id).await?;
                self.process.record_latest_scan(pc_id, found.clone());
                found
            }
        };
        let Some(latest) = latest else {
            return Ok(LatestTick {
                latest_at: None,
                processes: vec![],
            });
        };
        let mut processes = Vec::new();
        for batch in &latest.batches {
            processes.extend(ProcessPerfRow::from_batch(batch).map_err(Error::storage(TABLE))?);
        }
        processes.sort_by(|a, b| {
            b.cpu_pct
                .total_cmp(&a.cpu_pct)
                .then_with(|| a.pid.cmp(&b.pid))
        });
        Ok(LatestTick {
            latest_at: DateTime::<Utc>::from_timestamp_micros(latest.at_micros),
            processes,
        })
    }

    /// The PC's rows at its largest `at`, by scanning head and files.
    async fn scan_latest_rows(&self, pc_id: &str) -> Result<Option<LatestRows>> {
        let Some(latest) = self.latest_process_at(pc_id).await? else {
            return Ok(None);
        };
        let end = latest + chrono::Duration::microseconds(1);
        let snapshot = self.process.snapshot(Some((latest, end)));
        let df = self
            .engine
            .frame(TABLE, &snapshot)?
            .filter(
                col("pc_id")
                    .eq(lit(pc_id))
                    .and(col("at").eq(lit_ts(latest))),
            )
            .map_err(Error::df(TABLE))?;
        let batches = collect(TABLE, df).await?;
        drop(snapshot);
        Ok(Some(LatestRows {
            at_micros: latest.timestamp_micros(),
            batches,
        }))
    }

    async fn latest_process_at(&self, pc_id: &str) -> Result<Option<DateTime<Utc>>> {
        let snapshot = self.process.snapshot(None);
        let df = self
            .engine
            .frame(TABLE, &snapshot)?
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
    /// into `other`. Answered without the SQL planner (see `fastpath`).
    pub async fn process_timeline(
        &self,
        pc_id: &str,
        metric: ProcessMetric,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        step_secs: i64,
        top: usize,
    ) -> Result<Timeline> {
        Ok(self
            .process_timeline_read(pc_id, metric, from, to, step_secs, top)?
            .0)
    }

    /// [`Self::process_timeline`] with what it read. A window within the
    /// table's recent rows reads only memory; otherwise the whole windows
    /// of closed days come from the coarsest per-name rollup whose window
    /// divides the step (Σsum / Σcount: the raw answer) and the rest from
    /// raw rows.
    pub fn process_timeline_read(
        &self,
        pc_id: &str,
        metric: ProcessMetric,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        step_secs: i64,
        top: usize,
    ) -> Result<(Timeline, ReadStats)> {
        let value = metric.column();
        let columns = ["name", value];
        let (sum, count) = (format!("{value}_sum"), format!("{value}_count"));
        let window = pc_window(
            (TABLE, ROLLUP),
            &self.process,
            &self.files,
            pc_id,
            (from, to),
            step_secs,
            &columns,
            &["name", sum.as_str(), count.as_str()],
        )?;
        let (raw, rolled, stats) = (window.raw, window.rolled, window.stats);
        let names = |table, batches: &[RecordBatch]| -> Result<Vec<StringArray>> {
            batches
                .iter()
                .map(|b| crate::session::text_column(table, b, "name"))
                .collect()
        };
        let (raw_names, rolled_names) = (names(TABLE, &raw)?, names(ROLLUP, &rolled)?);
        let mut cells = Cells::new(step_secs);
        for (b, name) in raw.iter().zip(&raw_names) {
            cells.add_rows(b, name)?;
        }
        for (b, name) in rolled.iter().zip(&rolled_names) {
            cells.add_partial(b, name)?;
        }
        Ok((cells.stack(top), stats))
    }

    /// The same question as [`Self::process_timeline`] through DataFusion
    /// SQL: what the fast path is checked against.
    #[doc(hidden)]
    pub async fn process_timeline_sql(
        &self,
        pc_id: &str,
        metric: ProcessMetric,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        step_secs: i64,
        top: usize,
    ) -> Result<Timeline> {
        let snapshot = self.process.snapshot(Some((from, to)));
        let window = col("pc_id")
            .eq(lit(pc_id))
            .and(col("at").gt_eq(lit_ts(from)))
            .and(col("at").lt(lit_ts(to)));
        let base = self
            .engine
            .frame(TABLE, &snapshot)?
            .filter(window)
            .map_err(Error::df(TABLE))?;
        let value = f64_expr(metric.column());
        // One pass: per (bucket, name) the sum and count of the metric.
        // Ranking over the window and the per-bucket `other` series are
        // both sums of these partial aggregates, so the rows are read once.
        let grouped = base
            .aggregate(
                vec![bucket_expr(step_secs).alias("bucket"), col("name")],
                vec![sum(value.clone()).alias("s"), count(value).alias("n")],
            )
            .map_err(Error::df(TABLE))?;
        let batches = collect(TABLE, grouped).await?;
        drop(snapshot);
        let mut cells = Cells::new(step_secs);
        for batch in &batches {
            let bucket = column::<Int64Array>(TABLE, batch, "bucket")?;
            let name = column::<StringArray>(TABLE, batch, "name")?;
            let s = column::<Float64Array>(TABLE, batch, "s")?;
            let n = column::<Int64Array>(TABLE, batch, "n")?;
            for i in 0..batch.num_rows() {
                if n.value(i) > 0 {
                    let at_micros = bucket.value(i).saturating_mul(1_000_000);
                    cells.add(at_micros, name.value(i), s.value(i), n.value(i));
                }
            }
        }
        Ok(cells.stack(top))
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
        let df = self
            .engine
            .frame(TABLE, &snapshot)?
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
