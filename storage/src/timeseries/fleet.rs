//! Every PC's rows summed per 1-minute window, in memory: the fleet
//! series (the dashboard's fleet chart) over the last days reads a few
//! thousand windows instead of every PC's rows. A minute, not five: a
//! question's ragged ends (whatever of its range is not whole windows)
//! must be read from rows, and across a fleet a time slice of the
//! PC-sorted files touches a page of every PC however short it is.
//!
//! Per window: the rows committed, and per metric the sum, count, min and
//! max of its values. The windows are exact over the committed rows
//! (every write is deduplicated before it is observed), so AVG =
//! Σsum / Σcount over any whole windows is the raw answer.
//!
//! Invariant: every committed row with `at >= complete_from` and `at >=`
//! the horizon is counted; a window starting before
//! [`FleetWindows::vouched_from`] is not answered from here. The table
//! fills the windows from its files' rows within the horizon when it
//! opens (then `complete_from` is unbounded); should a file be
//! unreadable, it starts them empty with `complete_from` just after the
//! newest stored `at`, as `recent.rs` does.

use std::collections::BTreeMap;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type};
use datafusion::arrow::record_batch::RecordBatch;

use super::table::ts_column;

/// The window, in seconds.
pub const FLEET_WINDOW_SECS: i64 = 60;
const WINDOW_MICROS: i64 = FLEET_WINDOW_SECS * 1_000_000;

/// One metric over one window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowAcc {
    pub sum: f64,
    pub count: i64,
    pub min: f64,
    pub max: f64,
}

impl Default for WindowAcc {
    fn default() -> Self {
        Self {
            sum: 0.0,
            count: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }
}

#[derive(Debug, Clone)]
struct Window {
    rows: u64,
    metrics: Vec<WindowAcc>,
}

#[derive(Debug)]
pub(crate) struct FleetWindows {
    metrics: Vec<&'static str>,
    keep_micros: i64,
    complete_from: i64,
    horizon: i64,
    /// By window start (µs).
    windows: BTreeMap<i64, Window>,
}

impl FleetWindows {
    pub fn new(metrics: Vec<&'static str>, keep_secs: i64, complete_from: i64) -> Self {
        Self {
            metrics,
            keep_micros: keep_secs.saturating_mul(1_000_000),
            complete_from,
            horizon: i64::MIN,
            windows: BTreeMap::new(),
        }
    }

    /// Adds the rows of a committed batch, at wall time `now` (µs).
    pub fn observe(&mut self, batch: &RecordBatch, now: i64) {
        if self.keep_micros == 0 {
            return;
        }
        let horizon = window_of(now.saturating_sub(self.keep_micros));
        if horizon > self.horizon {
            self.horizon = horizon;
            self.windows = self.windows.split_off(&horizon);
        }
        let floor = self.vouched_from();
        let at = ts_column(batch);
        let values: Vec<Option<_>> = self
            .metrics
            .iter()
            .map(|m| {
                batch
                    .column_by_name(m)
                    .and_then(|c| cast(c, &DataType::Float64).ok())
            })
            .collect();
        let n = self.metrics.len();
        for i in 0..batch.num_rows() {
            let t = at.value(i);
            if t < floor {
                continue;
            }
            let w = self.windows.entry(window_of(t)).or_insert_with(|| Window {
                rows: 0,
                metrics: vec![WindowAcc::default(); n],
            });
            w.rows += 1;
            for (acc, v) in w.metrics.iter_mut().zip(&values) {
                let Some(v) = v else { continue };
                let v = v.as_primitive::<Float64Type>();
                if v.is_valid(i) {
                    let x = v.value(i);
                    acc.sum += x;
                    acc.count += 1;
                    acc.min = acc.min.min(x);
                    acc.max = acc.max.max(x);
                }
            }
        }
    }

    /// The first window start (µs) from which every window is complete.
    pub fn vouched_from(&self) -> i64 {
        let complete = self.complete_from.saturating_add(WINDOW_MICROS - 1);
        window_of(complete).max(self.horizon)
    }

    /// The windows starting in `[from, to)` (µs, both multiples of the
    /// window and at or after [`Self::vouched_from`]) that hold rows:
    /// (start, rows, the metric's accumulator). `None` for an unknown
    /// metric or a range the windows cannot vouch for.
    pub fn windows(&self, metric: &str, from: i64, to: i64) -> Option<Vec<(i64, u64, WindowAcc)>> {
        let m = self.metrics.iter().position(|c| *c == metric)?;
        if self.keep_micros == 0 || from < self.vouched_from() || from >= to {
            return None;
        }
        Some(
            self.windows
                .range(from..to)
                .map(|(&start, w)| (start, w.rows, w.metrics[m]))
                .collect(),
        )
    }
}

/// The start (µs) of the window holding `t`.
fn window_of(t: i64) -> i64 {
    t.div_euclid(WINDOW_MICROS) * WINDOW_MICROS
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeseries::test_util::host_row;
    use crate::HostPerfRow;

    fn batch(rows: &[(&str, i64, Option<f64>)]) -> RecordBatch {
        let rows: Vec<HostPerfRow> = rows
            .iter()
            .map(|(pc, secs, cpu)| HostPerfRow {
                cpu_pct: *cpu,
                mem_used_bytes: Some(*secs),
                ..host_row(pc, *secs)
            })
            .collect();
        HostPerfRow::to_batch(&rows).unwrap()
    }

    const S: i64 = 1_000_000;

    #[test]
    fn windows_sum_every_row_and_skip_nulls() {
        let mut f = FleetWindows::new(vec!["cpu_pct", "mem_used_bytes"], 3_600, i64::MIN);
        let now = 10_000 * S;
        f.observe(
            &batch(&[
                ("a", 9_000, Some(1.0)),
                ("b", 9_001, Some(3.0)),
                ("c", 9_299, None),
            ]),
            now,
        );
        f.observe(&batch(&[("a", 9_300, Some(5.0))]), now);
        let w = f.windows("cpu_pct", 9_000 * S, 9_600 * S).unwrap();
        assert_eq!(w.len(), 3);
        assert_eq!((w[0].0, w[0].1), (9_000 * S, 2));
        assert_eq!(
            (w[0].2.sum, w[0].2.count, w[0].2.min, w[0].2.max),
            (4.0, 2, 1.0, 3.0)
        );
        // A window of rows without a value of the metric still counts.
        assert_eq!((w[1].0, w[1].1, w[1].2.count), (9_240 * S, 1, 0));
        assert_eq!((w[2].1, w[2].2.sum, w[2].2.count), (1, 5.0, 1));
        let m = f.windows("mem_used_bytes", 9_000 * S, 9_300 * S).unwrap();
        assert_eq!((m[0].2.sum, m[0].2.count), (18_001.0, 2));
        assert!(f.windows("no_such_metric", 9_000 * S, 9_300 * S).is_none());
    }

    #[test]
    fn nothing_before_the_newest_stored_row_or_the_horizon_is_vouched_for() {
        // Files held rows up to 9_100 s at open: the window of 9_060 s may
        // be incomplete, the next one is not.
        let mut f = FleetWindows::new(vec!["cpu_pct"], 3_600, 9_100 * S + 1);
        assert_eq!(f.vouched_from(), 9_120 * S);
        f.observe(
            &batch(&[("a", 9_110, Some(1.0)), ("a", 9_400, Some(2.0))]),
            9_500 * S,
        );
        assert!(f.windows("cpu_pct", 9_060 * S, 9_600 * S).is_none());
        assert_eq!(f.windows("cpu_pct", 9_120 * S, 9_600 * S).unwrap().len(), 1);
        // An hour later the horizon has passed both.
        f.observe(&batch(&[("a", 13_500, Some(1.0))]), 13_500 * S);
        assert_eq!(f.vouched_from(), 9_900 * S);
        assert!(f.windows("cpu_pct", 9_360 * S, 9_600 * S).is_none());
        assert_eq!(
            f.windows("cpu_pct", 9_900 * S, 14_000 * S).unwrap().len(),
            1
        );
    }
}
