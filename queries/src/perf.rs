//! Host perf questions: one PC's bucketed timeline, the fleet series, and
//! the top PCs of a recent window.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{Array, AsArray, Float64Array, Int64Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::JoinType;
use datafusion::functions_aggregate::expr_fn::{avg, count, max, sum};
use datafusion::prelude::{col, lit};
use kanade_storage::{HostPerfRow, RolledSnapshot, FLEET_WINDOW_SECS};

use crate::fastpath::{at_micros, bucket_of, pc_window, rows, scan, Buckets, ReadStats};
use crate::metric::{Aggregate, HostMetric};
use crate::session::{
    bucket_expr, collect, column, f64_expr, lit_micros, lit_ts, opt_f64, secs_to_time,
};
use crate::{PerfQueries, Result};

const TABLE: &str = "host_perf";
/// Errors of a rollup read name the rollup tables together.
const ROLLUP: &str = "host_perf rollup";
/// Buckets a fleet series accumulates in a dense array (the API allows
/// 10,000); more go through DataFusion.
const DENSE_BUCKETS: i64 = 1 << 20;

/// Per bucket of a fleet series: rows seen, Σ value, number of values,
/// max.
type Slot = (bool, f64, i64, f64);

/// The dense buckets of a fleet series over `[from, to)`.
struct Grid {
    first: i64,
    step: i64,
    slots: Vec<Slot>,
}

impl Grid {
    /// `None` when the buckets are too many for a dense array; inside,
    /// `None` for an empty range.
    fn new(from_us: i64, to_us: i64, step: i64) -> Option<Option<Self>> {
        if from_us >= to_us {
            return Some(None);
        }
        let first = bucket_of(from_us, step);
        let n = (bucket_of(to_us - 1, step) - first) / step + 1;
        if !(0..=DENSE_BUCKETS).contains(&n) {
            return None;
        }
        Some(Some(Self {
            first,
            step,
            slots: vec![(false, 0.0, 0, f64::NEG_INFINITY); n as usize],
        }))
    }

    fn empty(&self) -> Vec<Slot> {
        vec![(false, 0.0, 0, f64::NEG_INFINITY); self.slots.len()]
    }

    /// Adds a window (or row) at `at_micros`.
    fn add(&mut self, at_micros: i64, seen: bool, sum: f64, count: i64, max: f64) {
        let k = ((bucket_of(at_micros, self.step) - self.first) / self.step) as usize;
        let s = &mut self.slots[k];
        s.0 |= seen;
        s.1 += sum;
        s.2 += count;
        s.3 = s.3.max(max);
    }

    /// Adds every row of `batch` (its `at` and `column`).
    fn add_rows(&mut self, batch: &RecordBatch, column: &str) -> Result<()> {
        let shape = |message: String| crate::Error::Shape {
            table: TABLE,
            message,
        };
        let at = batch
            .column_by_name("at")
            .ok_or_else(|| shape("at missing".into()))?;
        let at = at_micros(TABLE, at)?;
        let at = at.as_primitive::<Int64Type>();
        let v = batch
            .column_by_name(column)
            .ok_or_else(|| shape(format!("{column} missing")))?;
        let v = cast(v, &DataType::Float64).map_err(|e| shape(e.to_string()))?;
        let v = v.as_primitive::<Float64Type>();
        for i in 0..batch.num_rows() {
            let (sum, count, max) = if v.is_valid(i) {
                (v.value(i), 1, v.value(i))
            } else {
                (0.0, 0, f64::NEG_INFINITY)
            };
            self.add(at.value(i), true, sum, count, max);
        }
        Ok(())
    }

    fn points(self, agg: Aggregate) -> Vec<FleetPoint> {
        let (first, step) = (self.first, self.step);
        self.slots
            .into_iter()
            .enumerate()
            .filter(|(_, s)| s.0)
            .map(|(k, (_, sum, count, max))| FleetPoint {
                at: secs_to_time(first + k as i64 * step),
                value: match agg {
                    Aggregate::Avg => (count > 0).then(|| sum / count as f64),
                    Aggregate::Max => (count > 0).then_some(max),
                },
            })
            .collect()
    }
}

/// The averaged metrics of one bucket of a PC's host timeline: one value
/// per charted column of the host table ([`HostPoint::columns`]), in
/// order. Serialises as `{"at": .., "<column>": ..}`, the reference
/// backend's point.
#[derive(Debug, Clone, PartialEq)]
pub struct HostPoint {
    pub at: DateTime<Utc>,
    pub values: Vec<Option<f64>>,
}

impl HostPoint {
    /// The columns `values` holds, as the host table declares them.
    pub fn columns() -> &'static [&'static str] {
        HostPerfRow::charted()
    }

    /// The value of `column`; `None` when absent or not charted.
    pub fn get(&self, column: &str) -> Option<f64> {
        let k = Self::columns().iter().position(|c| *c == column)?;
        self.values.get(k).copied().flatten()
    }
}

impl serde::Serialize for HostPoint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(1 + self.values.len()))?;
        map.serialize_entry("at", &self.at)?;
        for (column, value) in Self::columns().iter().zip(&self.values) {
            map.serialize_entry(column, value)?;
        }
        map.end()
    }
}

/// `micros` since the epoch as a time (saturating at the ends).
fn micros_to_time(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or(if micros < 0 {
        DateTime::<Utc>::MIN_UTC
    } else {
        DateTime::<Utc>::MAX_UTC
    })
}

/// The host timeline's points from its buckets.
fn host_points(buckets: Buckets) -> Vec<HostPoint> {
    buckets
        .avg()
        .into_iter()
        .map(|(at, values)| HostPoint {
            at: secs_to_time(at),
            values,
        })
        .collect()
}

/// `<m>_sum`, `<m>_count` of every timeline column, in order.
fn rollup_pairs() -> Vec<String> {
    HostPoint::columns()
        .iter()
        .flat_map(|c| [format!("{c}_sum"), format!("{c}_count")])
        .collect()
}

/// `at` within any of `ranges` (µs, half-open).
fn in_ranges(ranges: &[(i64, i64)]) -> Option<datafusion::prelude::Expr> {
    ranges
        .iter()
        .map(|&(a, b)| {
            col("at")
                .gt_eq(lit_micros(a))
                .and(col("at").lt(lit_micros(b)))
        })
        .reduce(|x, y| x.or(y))
}

/// One bucket of a fleet series.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetPoint {
    pub at: DateTime<Utc>,
    pub value: Option<f64>,
}

/// One PC of a top-N ranking.
#[derive(Debug, Clone, PartialEq)]
pub struct TopRow {
    pub pc_id: String,
    /// From the agents table; `None` when the PC never sent a heartbeat.
    pub hostname: Option<String>,
    pub value: f64,
}

impl PerfQueries {
    /// AVG of every metric of `pc_id` per `step_secs` bucket of
    /// `[from, to)`, oldest first; empty buckets are absent. Answered
    /// without the SQL planner (see `fastpath`); blocking reads of a few
    /// pages, so it is cheap enough to run inline.
    pub async fn host_timeline(
        &self,
        pc_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        step_secs: i64,
    ) -> Result<Vec<HostPoint>> {
        Ok(self.host_timeline_read(pc_id, from, to, step_secs)?.0)
    }

    /// [`Self::host_timeline`] with what it read.
    pub fn host_timeline_read(
        &self,
        pc_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        step_secs: i64,
    ) -> Result<(Vec<HostPoint>, ReadStats)> {
        let sums = rollup_pairs();
        let sums: Vec<&str> = sums.iter().map(String::as_str).collect();
        let window = pc_window(
            (TABLE, ROLLUP),
            &self.host,
            &self.files,
            pc_id,
            (from, to),
            step_secs,
            HostPoint::columns(),
            &sums,
        )?;
        let mut buckets = Buckets::new(step_secs, HostPoint::columns().len());
        for b in &window.raw {
            buckets.add(TABLE, b)?;
        }
        for b in &window.rolled {
            buckets.add_partial(ROLLUP, b)?;
        }
        let stats = window.stats;
        Ok((host_points(buckets), stats))
    }

    /// The same question as [`Self::host_timeline`] through DataFusion
    /// SQL: what the fast path is checked against.
    #[doc(hidden)]
    pub async fn host_timeline_sql(
        &self,
        pc_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        step_secs: i64,
    ) -> Result<Vec<HostPoint>> {
        let snapshot = self.host.snapshot(Some((from, to)));
        let aggs = HostPoint::columns()
            .iter()
            .map(|c| avg(f64_expr(c)).alias(*c))
            .collect::<Vec<_>>();
        let df = self
            .engine
            .frame(TABLE, &snapshot)?
            .filter(
                col("pc_id")
                    .eq(lit(pc_id))
                    .and(col("at").gt_eq(lit_ts(from)))
                    .and(col("at").lt(lit_ts(to))),
            )
            .and_then(|df| df.aggregate(vec![bucket_expr(step_secs).alias("bucket")], aggs))
            .and_then(|df| df.sort(vec![col("bucket").sort(true, false)]))
            .map_err(crate::Error::df(TABLE))?;
        let mut points = Vec::new();
        for batch in collect(TABLE, df).await? {
            let bucket = column::<Int64Array>(TABLE, &batch, "bucket")?;
            let cols = HostPoint::columns()
                .iter()
                .map(|c| column::<Float64Array>(TABLE, &batch, c))
                .collect::<Result<Vec<_>>>()?;
            for i in 0..batch.num_rows() {
                points.push(HostPoint {
                    at: secs_to_time(bucket.value(i)),
                    values: cols.iter().map(|c| opt_f64(c, i)).collect(),
                });
            }
        }
        drop(snapshot);
        Ok(points)
    }

    /// `agg` of `metric` over every PC per bucket of `[from, to)`. Whole
    /// 5-minute windows of the last days come from the table's in-memory
    /// fleet windows, whole windows of older closed days from the
    /// coarsest rollup whose window divides the step (Σsum / Σcount, max
    /// of maxima: the raw answer), the rest from raw rows.
    pub async fn fleet_series(
        &self,
        metric: HostMetric,
        agg: Aggregate,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        step_secs: i64,
    ) -> Result<Vec<FleetPoint>> {
        if let Some(points) = self.fleet_from_windows(metric, agg, from, to, step_secs)? {
            return Ok(points);
        }
        self.fleet_series_stored(metric, agg, from, to, step_secs)
            .await
    }

    /// [`Self::fleet_series`] from files, rollups and the head alone,
    /// without the in-memory windows: what it reads for days older than
    /// they hold (for the benchmark and tests).
    #[doc(hidden)]
    pub async fn fleet_series_stored(
        &self,
        metric: HostMetric,
        agg: Aggregate,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        step_secs: i64,
    ) -> Result<Vec<FleetPoint>> {
        let (from_us, to_us) = (from.timestamp_micros(), to.timestamp_micros());
        match Grid::new(from_us, to_us, step_secs.max(1)) {
            None => {
                let plan = self.host.rolled_snapshot(from, to, step_secs);
                self.fleet_planned(plan, metric, agg, step_secs).await
            }
            Some(None) => Ok(Vec::new()),
            Some(Some(mut grid)) => {
                self.fleet_stored(metric, from, to, step_secs, &mut grid)?;
                Ok(grid.points(agg))
            }
        }
    }

    /// Adds the fleet's rows of `metric` in `[from, to)` to `grid` from
    /// storage: the fleet-wide rollup's windows (one row per minute for
    /// the whole fleet) wherever it answers, and the rest (the ragged
    /// ends, days it does not hold) planned again per PC.
    fn fleet_stored(
        &self,
        metric: HostMetric,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        step_secs: i64,
        grid: &mut Grid,
    ) -> Result<()> {
        let fleet = self.host.rolled_fleet_snapshot(from, to, step_secs);
        if fleet.window_secs == 0 {
            let plan = self.host.rolled_snapshot(from, to, step_secs);
            return self.fleet_accumulate(&plan, metric, grid);
        }
        let rest = fleet.raw_ranges.clone();
        let rolled = RolledSnapshot {
            raw_ranges: Vec::new(),
            ..fleet
        };
        self.fleet_accumulate(&rolled, metric, grid)?;
        for (a, b) in rest {
            let plan = self
                .host
                .rolled_snapshot(micros_to_time(a), micros_to_time(b), step_secs);
            self.fleet_accumulate(&plan, metric, grid)?;
        }
        Ok(())
    }

    /// [`Self::fleet_series`] with its whole 1-minute windows since the
    /// table's fleet windows vouch for them taken from memory, and only
    /// the rest (the ragged ends, anything older) read. `None` when the
    /// step is not a multiple of the window, the buckets are too many for
    /// a dense array, or no whole window is in memory.
    fn fleet_from_windows(
        &self,
        metric: HostMetric,
        agg: Aggregate,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        step_secs: i64,
    ) -> Result<Option<Vec<FleetPoint>>> {
        const W: i64 = FLEET_WINDOW_SECS * 1_000_000;
        if step_secs <= 0 || step_secs % FLEET_WINDOW_SECS != 0 {
            return Ok(None);
        }
        let (from_us, to_us) = (from.timestamp_micros(), to.timestamp_micros());
        let Some(Some(mut grid)) = Grid::new(from_us, to_us, step_secs) else {
            return Ok(None);
        };
        let first_window = from_us.saturating_add(W - 1).div_euclid(W) * W;
        let start = first_window.max(self.host.fleet_vouched_from());
        let end = to_us.div_euclid(W) * W;
        if start >= end {
            return Ok(None);
        }
        let Some(windows) = self.host.fleet_windows(metric.column(), start, end) else {
            return Ok(None);
        };
        for (at, rows, acc) in windows {
            grid.add(at, rows > 0, acc.sum, acc.count, acc.max);
        }
        // The ragged ends: from the recent rows in memory when they hold
        // them (the end of a range reaching now), else from storage.
        for (a, b) in [(from_us, start), (end, to_us)] {
            if a >= b {
                continue;
            }
            let (a, b) = (micros_to_time(a), micros_to_time(b));
            match self.host.recent_fleet_rows(a, b) {
                Some(rows) => {
                    if let Some(batch) = rows.map_err(crate::Error::storage(TABLE))? {
                        grid.add_rows(&batch, metric.column())?;
                    }
                }
                None => self.fleet_stored(metric, a, b, step_secs, &mut grid)?,
            }
        }
        self.fleet_from_memory
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Some(grid.points(agg)))
    }

    /// Adds the plan's raw rows and rollup rows of `metric` to `grid`.
    fn fleet_accumulate(
        &self,
        plan: &RolledSnapshot,
        metric: HostMetric,
        grid: &mut Grid,
    ) -> Result<()> {
        let m = metric.column();
        let empty = || grid.empty();
        let (first, step) = (grid.first, grid.step);
        let slot_of = move |at: i64| ((bucket_of(at, step) - first) / step) as usize;
        let shape = |table: &'static str| {
            move |e: datafusion::arrow::error::ArrowError| crate::Error::Shape {
                table,
                message: e.to_string(),
            }
        };
        let mut parts = Vec::new();
        let raw_reads = plan.raw_reads();
        let raw_reads = raw_reads
            .iter()
            .flat_map(|(snapshot, ranges)| ranges.iter().map(move |r| (*snapshot, *r)));
        for (snapshot, range) in raw_reads {
            let sink = |slots: &mut Vec<Slot>, batch: &RecordBatch| {
                let at = at_micros(TABLE, batch.column(0))?;
                let v = cast(batch.column(1), &DataType::Float64).map_err(shape(TABLE))?;
                let at = at.as_primitive::<Int64Type>();
                let v = v.as_primitive::<Float64Type>();
                for i in 0..batch.num_rows() {
                    let slot = &mut slots[slot_of(at.value(i))];
                    slot.0 = true;
                    if v.is_valid(i) {
                        let x = v.value(i);
                        slot.1 += x;
                        slot.2 += 1;
                        slot.3 = slot.3.max(x);
                    }
                }
                Ok(())
            };
            parts.extend(scan(TABLE, &self.files, snapshot, None, range, &[m], empty, sink)?.0);
        }
        let cols = [format!("{m}_sum"), format!("{m}_count"), format!("{m}_max")];
        let cols: Vec<&str> = cols.iter().map(String::as_str).collect();
        for &(a, b) in &plan.rolled_ranges {
            let sink = |slots: &mut Vec<Slot>, batch: &RecordBatch| {
                let at = at_micros(ROLLUP, batch.column(0))?;
                let at = at.as_primitive::<Int64Type>();
                let sum = batch.column(1).as_primitive::<Float64Type>();
                let count = batch.column(2).as_primitive::<Int64Type>();
                let max = batch.column(3).as_primitive::<Float64Type>();
                for i in 0..batch.num_rows() {
                    let slot = &mut slots[slot_of(at.value(i))];
                    slot.0 = true;
                    slot.1 += sum.value(i);
                    slot.2 += count.value(i);
                    if max.is_valid(i) {
                        slot.3 = slot.3.max(max.value(i));
                    }
                }
                Ok(())
            };
            let range = (a, b);
            parts.extend(
                scan(
                    ROLLUP,
                    &self.files,
                    &plan.rollup,
                    None,
                    range,
                    &cols,
                    empty,
                    sink,
                )?
                .0,
            );
        }
        for part in parts {
            for (s, p) in grid.slots.iter_mut().zip(part) {
                s.0 |= p.0;
                s.1 += p.1;
                s.2 += p.2;
                s.3 = s.3.max(p.3);
            }
        }
        Ok(())
    }

    /// [`Self::fleet_series`] through DataFusion, for bucket counts too
    /// large for the dense array of [`Self::fleet_stored`].
    async fn fleet_planned(
        &self,
        plan: RolledSnapshot,
        metric: HostMetric,
        agg: Aggregate,
        step_secs: i64,
    ) -> Result<Vec<FleetPoint>> {
        let m = metric.column();
        // Per bucket: Σ value, number of values, max.
        let mut acc: BTreeMap<i64, (f64, i64, Option<f64>)> = BTreeMap::new();
        let raw_aggs = || [sum(f64_expr(m)), count(col(m)), max(f64_expr(m))];
        let parts = [
            (TABLE, &plan.raw, &plan.raw_ranges, raw_aggs()),
            (TABLE, &plan.unseen, &plan.rolled_ranges, raw_aggs()),
            (
                ROLLUP,
                &plan.rollup,
                &plan.rolled_ranges,
                [
                    sum(col(format!("{m}_sum"))),
                    sum(col(format!("{m}_count"))),
                    max(col(format!("{m}_max"))),
                ],
            ),
        ];
        for (name, snapshot, ranges, [s, n, mx]) in parts {
            let Some(within) = in_ranges(ranges) else {
                continue;
            };
            let df = self
                .engine
                .frame(name, snapshot)?
                .filter(within)
                .and_then(|df| {
                    df.aggregate(
                        vec![bucket_expr(step_secs).alias("bucket")],
                        vec![s.alias("s"), n.alias("n"), mx.alias("mx")],
                    )
                })
                .map_err(crate::Error::df(name))?;
            for batch in collect(name, df).await? {
                let bucket = column::<Int64Array>(name, &batch, "bucket")?;
                let s = column::<Float64Array>(name, &batch, "s")?;
                let n = column::<Int64Array>(name, &batch, "n")?;
                let mx = column::<Float64Array>(name, &batch, "mx")?;
                for i in 0..batch.num_rows() {
                    let slot = acc.entry(bucket.value(i)).or_insert((0.0, 0, None));
                    slot.0 += opt_f64(s, i).unwrap_or(0.0);
                    slot.1 += if n.is_valid(i) { n.value(i) } else { 0 };
                    if let Some(v) = opt_f64(mx, i) {
                        slot.2 = Some(slot.2.map_or(v, |m: f64| m.max(v)));
                    }
                }
            }
        }
        drop(plan);
        Ok(acc
            .into_iter()
            .map(|(at, (s, n, mx))| FleetPoint {
                at: secs_to_time(at),
                value: match agg {
                    Aggregate::Avg => (n > 0).then(|| s / n as f64),
                    Aggregate::Max => mx,
                },
            })
            .collect())
    }

    /// The same question as [`Self::fleet_series`] over raw rows only
    /// through DataFusion SQL: what the rollups are checked against.
    #[doc(hidden)]
    pub async fn fleet_series_sql(
        &self,
        metric: HostMetric,
        agg: Aggregate,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        step_secs: i64,
    ) -> Result<Vec<FleetPoint>> {
        let snapshot = self.host.snapshot(Some((from, to)));
        let value = f64_expr(metric.column());
        let agg_expr = match agg {
            Aggregate::Avg => avg(value),
            Aggregate::Max => max(value),
        };
        let df = self
            .engine
            .frame(TABLE, &snapshot)?
            .filter(col("at").gt_eq(lit_ts(from)).and(col("at").lt(lit_ts(to))))
            .and_then(|df| {
                df.aggregate(
                    vec![bucket_expr(step_secs).alias("bucket")],
                    vec![agg_expr.alias("value")],
                )
            })
            .and_then(|df| df.sort(vec![col("bucket").sort(true, false)]))
            .map_err(crate::Error::df(TABLE))?;
        let mut points = Vec::new();
        for batch in collect(TABLE, df).await? {
            let bucket = column::<Int64Array>(TABLE, &batch, "bucket")?;
            let value = column::<Float64Array>(TABLE, &batch, "value")?;
            for i in 0..batch.num_rows() {
                points.push(FleetPoint {
                    at: secs_to_time(bucket.value(i)),
                    value: opt_f64(value, i),
                });
            }
        }
        drop(snapshot);
        Ok(points)
    }

    /// PCs ranked by AVG(`metric`) over samples with `at > since`,
    /// highest first (ties by pc_id), at most `limit`. Answered without
    /// the SQL planner: the window's rows (the head, and the pages of the
    /// newest files whose `at` range reaches it) are averaged per PC in
    /// one pass and only the winners' hostnames looked up.
    pub async fn top_pcs(
        &self,
        metric: HostMetric,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<TopRow>> {
        let m = metric.column();
        let from = since.timestamp_micros().saturating_add(1);
        let until = now + chrono::Duration::days(1);
        // The last minutes are in memory (the recent rows) unless the
        // window reaches back further than they vouch for.
        let in_memory = self
            .host
            .recent_fleet_rows(micros_to_time(from), until)
            .transpose()
            .map_err(crate::Error::storage(TABLE))?;
        let snapshot = self.host.snapshot(Some((since, until)));
        let batches: Vec<RecordBatch> = match in_memory {
            Some(found) => found
                .map(|b| crate::fastpath::project(TABLE, &b, &["at", "pc_id", m]))
                .transpose()?
                .into_iter()
                .collect(),
            None => {
                let columns = ["pc_id", m];
                rows(
                    TABLE,
                    &self.files,
                    &snapshot,
                    None,
                    from,
                    i64::MAX,
                    &columns,
                )?
                .0
            }
        };
        let mut by_pc: HashMap<String, (f64, u64)> = HashMap::new();
        for batch in &batches {
            let pc = batch.column(1).as_string::<i32>();
            let v = cast(batch.column(2), &DataType::Float64).map_err(|e| crate::Error::Shape {
                table: TABLE,
                message: e.to_string(),
            })?;
            let v = v.as_primitive::<Float64Type>();
            for i in 0..batch.num_rows() {
                if v.is_null(i) {
                    continue;
                }
                let slot = match by_pc.get_mut(pc.value(i)) {
                    Some(slot) => slot,
                    None => by_pc.entry(pc.value(i).to_string()).or_default(),
                };
                slot.0 += v.value(i);
                slot.1 += 1;
            }
        }
        drop(snapshot);
        let mut ranked: Vec<(String, f64)> = by_pc
            .into_iter()
            .map(|(pc, (sum, n))| (pc, sum / n as f64))
            .collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        ranked.truncate(limit);
        ranked
            .into_iter()
            .map(|(pc_id, value)| {
                let hostname = self
                    .store
                    .agent(&pc_id)
                    .map_err(crate::Error::storage("agents"))?
                    .and_then(|a| a.hostname);
                Ok(TopRow {
                    pc_id,
                    hostname,
                    value,
                })
            })
            .collect()
    }

    /// The same question as [`Self::top_pcs`] through DataFusion SQL:
    /// what the direct answer is checked against.
    #[doc(hidden)]
    pub async fn top_pcs_sql(
        &self,
        metric: HostMetric,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<TopRow>> {
        let snapshot = self
            .host
            .snapshot(Some((since, now + chrono::Duration::days(1))));
        let ctx = self.session();
        let df = self
            .engine
            .frame(TABLE, &snapshot)?
            .filter(
                col("at")
                    .gt(lit_ts(since))
                    .and(col(metric.column()).is_not_null()),
            )
            .and_then(|df| {
                df.aggregate(
                    vec![col("pc_id")],
                    vec![avg(f64_expr(metric.column())).alias("value")],
                )
            })
            .and_then(|df| {
                df.sort(vec![
                    col("value").sort(false, false),
                    col("pc_id").sort(true, false),
                ])
            })
            .and_then(|df| df.limit(0, Some(limit)))
            .map_err(crate::Error::df(TABLE))?;
        let agents = crate::relational::agents_frame(&ctx, &self.store)?;
        let df = df
            .join(agents, JoinType::Left, &["pc_id"], &["agent_pc_id"], None)
            .and_then(|df| {
                df.sort(vec![
                    col("value").sort(false, false),
                    col("pc_id").sort(true, false),
                ])
            })
            .map_err(crate::Error::df(TABLE))?;
        let mut rows = Vec::new();
        for batch in collect(TABLE, df).await? {
            let pc = column::<StringArray>(TABLE, &batch, "pc_id")?;
            let host = column::<StringArray>(TABLE, &batch, "hostname")?;
            let value = column::<Float64Array>(TABLE, &batch, "value")?;
            for i in 0..batch.num_rows() {
                rows.push(TopRow {
                    pc_id: pc.value(i).to_string(),
                    hostname: host.is_valid(i).then(|| host.value(i).to_string()),
                    value: opt_f64(value, i).unwrap_or(0.0),
                });
            }
        }
        drop(snapshot);
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A point answers as the reference backend's: `at`, then each
    /// charted column by name (`cpu_count` is not charted).
    #[test]
    fn a_host_point_serialises_by_the_declared_columns() {
        let at = secs_to_time(1_800_000_000);
        let mut values = vec![None; HostPoint::columns().len()];
        values[1] = Some(2.5);
        let json = serde_json::to_value(HostPoint { at, values }).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        let mut expected = vec!["at"];
        expected.extend(HostPoint::columns());
        assert_eq!(keys.len(), 10);
        assert_eq!(
            keys.iter().collect::<std::collections::BTreeSet<_>>(),
            expected.iter().collect()
        );
        assert_eq!(json["mem_used_bytes"], 2.5);
        assert!(json.get("cpu_count").is_none());
        assert_eq!(json["at"], "2027-01-15T08:00:00Z");
    }
}
