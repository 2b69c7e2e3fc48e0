//! The last hours of every PC's rows in memory: the one-PC questions
//! operators ask most (a PC's last hour) are answered from here without
//! opening a file or scanning the head.
//!
//! The index refers to the write batches themselves (shared, not
//! copied): per PC a list of (at, batch, row). Rows older than the
//! horizon (now minus the table's `recent_secs`) are evicted, and a batch
//! is let go once none of its rows is recent.
//!
//! Invariant: every committed row with `at >= complete_from` and `at >=`
//! the horizon is indexed. Rows written through the table since it
//! opened are indexed as they commit (and the write-ahead log's rows when
//! it opens); rows already in Parquet files at open are not, so
//! `complete_from` starts just after the newest `at` of those files. A
//! window starting before `max(complete_from, horizon)` is not answered.

use std::collections::HashMap;

use datafusion::arrow::compute::interleave_record_batch;
use datafusion::arrow::record_batch::RecordBatch;

use super::table::{string_column, ts_column};
use crate::{Error, Result};

/// Evict at most this often (µs of horizon progress).
const EVICT_EVERY: i64 = 60_000_000;

#[derive(Debug)]
pub(crate) struct RecentIndex {
    table: &'static str,
    keep_micros: i64,
    complete_from: i64,
    horizon: i64,
    next_id: u64,
    /// Write batches with at least one recent row, and their newest `at`.
    batches: HashMap<u64, (RecordBatch, i64)>,
    /// Per PC: (at, batch id, row), in commit order.
    pcs: HashMap<String, Vec<(i64, u64, u32)>>,
}

impl RecentIndex {
    pub fn new(table: &'static str, keep_secs: i64, complete_from: i64) -> Self {
        Self {
            table,
            keep_micros: keep_secs.saturating_mul(1_000_000),
            complete_from,
            horizon: i64::MIN,
            next_id: 0,
            batches: HashMap::new(),
            pcs: HashMap::new(),
        }
    }

    /// Indexes the recent rows of a committed batch, at wall time `now`
    /// (µs).
    pub fn observe(&mut self, batch: &RecordBatch, now: i64) {
        let horizon = now.saturating_sub(self.keep_micros);
        if horizon >= self.horizon.saturating_add(EVICT_EVERY) {
            self.evict(horizon);
        }
        let pc = string_column(batch, "pc_id");
        let at = ts_column(batch);
        let id = self.next_id;
        self.next_id += 1;
        let mut newest = None;
        for i in 0..batch.num_rows() {
            let t = at.value(i);
            if t < self.horizon {
                continue;
            }
            newest = Some(newest.map_or(t, |n: i64| n.max(t)));
            let entries = match self.pcs.get_mut(pc.value(i)) {
                Some(e) => e,
                None => self.pcs.entry(pc.value(i).to_string()).or_default(),
            };
            entries.push((t, id, i as u32));
        }
        if let Some(newest) = newest {
            self.batches.insert(id, (batch.clone(), newest));
        }
    }

    fn evict(&mut self, horizon: i64) {
        self.horizon = horizon;
        self.pcs.retain(|_, rows| {
            rows.retain(|r| r.0 >= horizon);
            !rows.is_empty()
        });
        self.batches.retain(|_, (_, newest)| *newest >= horizon);
    }

    /// The earliest `at` (µs) from which every committed row is indexed;
    /// `None` when the table keeps no recent rows.
    pub fn vouched_from(&self) -> Option<i64> {
        (self.keep_micros > 0).then(|| self.complete_from.max(self.horizon))
    }

    /// The PC's rows with `at` in `[from, to)` (µs) as one batch (`None`
    /// inside when it has none), or `None` when the index cannot vouch
    /// for every row of the window.
    pub fn rows(&self, pc_id: &str, from: i64, to: i64) -> Option<Result<Option<RecordBatch>>> {
        if from < self.complete_from.max(self.horizon) || self.keep_micros == 0 {
            return None;
        }
        let Some(entries) = self.pcs.get(pc_id) else {
            return Some(Ok(None));
        };
        let mut used: Vec<u64> = Vec::new();
        let mut picks = Vec::new();
        for &(t, id, row) in entries {
            if t < from || t >= to {
                continue;
            }
            let slot = match used.iter().position(|u| *u == id) {
                Some(s) => s,
                None => {
                    used.push(id);
                    used.len() - 1
                }
            };
            picks.push((slot, row as usize));
        }
        if picks.is_empty() {
            return Some(Ok(None));
        }
        let batches: Option<Vec<&RecordBatch>> = used
            .iter()
            .map(|id| self.batches.get(id).map(|(b, _)| b))
            .collect();
        let Some(batches) = batches else {
            // An indexed row's batch is always kept while the row is.
            return None;
        };
        Some(
            interleave_record_batch(&batches, &picks)
                .map(Some)
                .map_err(Error::arrow(self.table)),
        )
    }

    /// Every PC's rows with `at` in `[from, to)` (µs) as one batch (`None`
    /// inside when there are none), or `None` when the index cannot vouch
    /// for every row of the window.
    pub fn all_rows(&self, from: i64, to: i64) -> Option<Result<Option<RecordBatch>>> {
        if from < self.complete_from.max(self.horizon) || self.keep_micros == 0 {
            return None;
        }
        let mut slots: HashMap<u64, usize> = HashMap::new();
        let mut batches: Vec<&RecordBatch> = Vec::new();
        let mut picks = Vec::new();
        for entries in self.pcs.values() {
            for &(t, id, row) in entries {
                if t < from || t >= to {
                    continue;
                }
                let slot = match slots.get(&id) {
                    Some(&s) => s,
                    None => {
                        // An indexed row's batch is kept while the row is.
                        let (b, _) = self.batches.get(&id)?;
                        batches.push(b);
                        slots.insert(id, batches.len() - 1);
                        batches.len() - 1
                    }
                };
                picks.push((slot, row as usize));
            }
        }
        if picks.is_empty() {
            return Some(Ok(None));
        }
        Some(
            interleave_record_batch(&batches, &picks)
                .map(Some)
                .map_err(Error::arrow(self.table)),
        )
    }

    /// Rows and batches held.
    #[cfg(test)]
    pub fn size(&self) -> (usize, usize) {
        (self.pcs.values().map(Vec::len).sum(), self.batches.len())
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::RecentIndex;
    use crate::timeseries::test_util::host_row;
    use crate::HostPerfRow;

    fn batch(rows: &[(&str, i64)]) -> datafusion::arrow::record_batch::RecordBatch {
        let rows: Vec<HostPerfRow> = rows
            .iter()
            .map(|(pc, secs)| HostPerfRow {
                cpu_pct: Some(*secs as f64),
                ..host_row(pc, *secs)
            })
            .collect();
        HostPerfRow::to_batch(&rows).unwrap()
    }

    const S: i64 = 1_000_000;

    #[test]
    fn recent_rows_are_answered_evicted_and_vouched_for_only_after_complete_from() {
        let t0 = Utc
            .with_ymd_and_hms(2026, 11, 30, 12, 0, 0)
            .unwrap()
            .timestamp();
        // Keep an hour; everything before t0 - 10 min was stored earlier.
        let mut idx = RecentIndex::new("host_perf", 3_600, (t0 - 600) * S);
        idx.observe(
            &batch(&[("a", t0 - 7_200), ("a", t0 - 60), ("b", t0 - 30)]),
            t0 * S,
        );
        // The two-hour-old row is past the horizon: not indexed.
        assert_eq!(idx.size(), (2, 1));
        let rows = |idx: &RecentIndex, pc: &str, from: i64, to: i64| {
            idx.rows(pc, from * S, to * S)
                .map(|r| r.unwrap().map_or(0, |b| b.num_rows()))
        };
        assert_eq!(rows(&idx, "a", t0 - 300, t0), Some(1));
        assert_eq!(rows(&idx, "b", t0 - 300, t0 - 31), Some(0));
        assert_eq!(rows(&idx, "c", t0 - 300, t0), Some(0));
        // Before complete_from (stored rows the index never saw) or the
        // horizon: not vouched for.
        assert_eq!(rows(&idx, "a", t0 - 900, t0), None);
        let all = |idx: &RecentIndex, from: i64, to: i64| {
            idx.all_rows(from * S, to * S)
                .map(|r| r.unwrap().map_or(0, |b| b.num_rows()))
        };
        assert_eq!(all(&idx, t0 - 300, t0), Some(2));
        assert_eq!(all(&idx, t0 - 45, t0), Some(1));
        assert_eq!(all(&idx, t0 - 900, t0), None);
        // Rows from two writes come back together.
        idx.observe(&batch(&[("a", t0 + 30), ("b", t0 + 30)]), (t0 + 30) * S);
        assert_eq!(rows(&idx, "a", t0 - 300, t0 + 60), Some(2));
        // An hour and a half later the first write's rows are evicted and
        // its batch let go.
        idx.observe(&batch(&[("a", t0 + 5_400)]), (t0 + 5_400) * S);
        assert_eq!(idx.size(), (1, 1));
        assert_eq!(rows(&idx, "a", t0 - 300, t0 + 6_000), None);
        assert_eq!(rows(&idx, "a", t0 + 1_900, t0 + 6_000), Some(1));
    }
}
