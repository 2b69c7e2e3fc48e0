//! The newest rows of each PC: for every `pc_id`, the largest `at` the
//! table holds and the rows that carry it (a process tick). It answers
//! "the latest tick" without a scan, the question an operator asks of a
//! PC under investigation every few seconds.
//!
//! Invariant: an entry marked `complete` holds the largest `at` of its PC
//! over every row the table holds. Rows written through the table since
//! it opened maintain that on their own; rows that were already in
//! Parquet files when it opened are unknown to the index, so an entry
//! created after such an open starts incomplete, and becomes complete when
//! a reader that scanned the files reports what it found
//! ([`LatestIndex::record_scan`]). Retention evicts entries whose rows
//! it dropped.

use std::collections::HashMap;

use datafusion::arrow::array::UInt32Array;
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::record_batch::RecordBatch;

use super::table::{string_column, ts_column};
use crate::{Error, Result};

/// The rows of one PC at its latest `at`.
#[derive(Debug, Clone)]
pub struct LatestRows {
    pub at_micros: i64,
    /// Copies of the written rows (slices of one copy per write, which
    /// holds only latest rows: never of the write batch itself).
    pub batches: Vec<RecordBatch>,
}

#[derive(Debug)]
struct Entry {
    rows: LatestRows,
    complete: bool,
}

/// Per-PC latest rows (see the module docs for when they are complete).
#[derive(Debug)]
pub(crate) struct LatestIndex {
    table: &'static str,
    entries: HashMap<String, Entry>,
    /// Whether rows existed before this process (files at open): then new
    /// entries start incomplete.
    files_predate_index: bool,
}

impl LatestIndex {
    pub(crate) fn new(table: &'static str, files_predate_index: bool) -> Self {
        Self {
            table,
            entries: HashMap::new(),
            files_predate_index,
        }
    }

    /// The PC's latest rows, if the index knows them to be the latest.
    pub(crate) fn get(&self, pc_id: &str) -> Option<LatestRows> {
        self.entries
            .get(pc_id)
            .filter(|e| e.complete)
            .map(|e| e.rows.clone())
    }

    /// Folds freshly committed rows in: per PC, a newer `at` replaces the
    /// entry, the same `at` adds rows, an older one changes nothing.
    pub(crate) fn observe(&mut self, batch: &RecordBatch) -> Result<()> {
        let pc = string_column(batch, "pc_id");
        let at = ts_column(batch);
        // Per PC in this batch: its largest `at` and the rows carrying it.
        let mut newest: HashMap<&str, (i64, Vec<u32>)> = HashMap::new();
        for i in 0..batch.num_rows() {
            let (t, rows) = newest.entry(pc.value(i)).or_insert((i64::MIN, Vec::new()));
            let ts = at.value(i);
            if ts > *t {
                *t = ts;
                rows.clear();
            }
            if ts == *t {
                rows.push(i as u32);
            }
        }
        // One copy for the whole batch (rows grouped by PC), then a
        // zero-copy slice per PC: a write of many PCs' ticks costs one
        // allocation per column, not one per PC.
        let mut order: Vec<(&str, i64, Vec<u32>)> = newest
            .into_iter()
            .map(|(pc, (ts, rows))| (pc, ts, rows))
            .collect();
        order.retain(|(pc, ts, _)| {
            self.entries
                .get(*pc)
                .is_none_or(|e| *ts >= e.rows.at_micros)
        });
        if order.is_empty() {
            return Ok(());
        }
        let indices: Vec<u32> = order
            .iter()
            .flat_map(|(_, _, rows)| rows.iter().copied())
            .collect();
        let taken = take_record_batch(batch, &UInt32Array::from(indices))
            .map_err(Error::arrow(self.table))?;
        let mut offset = 0;
        for (pc_id, ts, rows) in order {
            let slice = taken.slice(offset, rows.len());
            offset += rows.len();
            match self.entries.get_mut(pc_id) {
                Some(e) if ts > e.rows.at_micros => {
                    e.rows = LatestRows {
                        at_micros: ts,
                        batches: vec![slice],
                    }
                }
                Some(e) => e.rows.batches.push(slice),
                None => {
                    self.entries.insert(
                        pc_id.to_string(),
                        Entry {
                            rows: LatestRows {
                                at_micros: ts,
                                batches: vec![slice],
                            },
                            complete: !self.files_predate_index,
                        },
                    );
                }
            }
        }
        Ok(())
    }

    /// What a reader found by scanning every row of the PC (`None`: it
    /// has none): the entry becomes complete. A newer entry written
    /// meanwhile wins, as it is newer than anything the scan saw.
    pub(crate) fn record_scan(&mut self, pc_id: &str, found: Option<LatestRows>) {
        match (self.entries.get_mut(pc_id), found) {
            (Some(e), Some(found)) if found.at_micros > e.rows.at_micros => {
                e.rows = found;
                e.complete = true;
            }
            (Some(e), _) => e.complete = true,
            (None, Some(found)) => {
                self.entries.insert(
                    pc_id.to_string(),
                    Entry {
                        rows: found,
                        complete: true,
                    },
                );
            }
            // No rows anywhere: nothing to remember (absent PCs are not
            // cached, so the index stays bounded by the PCs that exist).
            (None, None) => {}
        }
    }

    /// Forgets entries older than `cutoff_micros` (their rows were dropped).
    pub(crate) fn evict_before(&mut self, cutoff_micros: i64) {
        self.entries
            .retain(|_, e| e.rows.at_micros >= cutoff_micros);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeseries::test_util::process_tick;
    use chrono::{DateTime, Utc};

    fn tick(pc: &str, secs: i64, pids: &[i64]) -> RecordBatch {
        process_tick(pc, DateTime::<Utc>::from_timestamp(secs, 0).unwrap(), pids)
    }

    fn rows(l: &LatestRows) -> usize {
        l.batches.iter().map(RecordBatch::num_rows).sum()
    }

    #[test]
    fn newer_ticks_replace_older_ones_and_late_ones_are_ignored() {
        let mut idx = LatestIndex::new("process_perf", false);
        idx.observe(&tick("a", 60, &[1, 2, 3])).unwrap();
        idx.observe(&tick("b", 60, &[1])).unwrap();
        idx.observe(&tick("a", 120, &[4, 5])).unwrap();
        idx.observe(&tick("a", 30, &[9])).unwrap();
        let a = idx.get("a").unwrap();
        assert_eq!((a.at_micros, rows(&a)), (120_000_000, 2));
        // A tick split over two writes is one tick.
        idx.observe(&tick("a", 120, &[6])).unwrap();
        assert_eq!(rows(&idx.get("a").unwrap()), 3);
        assert_eq!(rows(&idx.get("b").unwrap()), 1);
        assert!(idx.get("c").is_none());
        idx.evict_before(100_000_000);
        assert!(idx.get("b").is_none());
        assert!(idx.get("a").is_some());
    }

    #[test]
    fn with_older_files_an_entry_waits_for_a_scan() {
        let mut idx = LatestIndex::new("process_perf", true);
        idx.observe(&tick("a", 60, &[1])).unwrap();
        assert!(idx.get("a").is_none(), "files may hold a later tick");
        // The scan found a later tick in the files: it wins.
        let files = LatestRows {
            at_micros: 90_000_000,
            batches: vec![tick("a", 90, &[7, 8])],
        };
        idx.record_scan("a", Some(files));
        let a = idx.get("a").unwrap();
        assert_eq!((a.at_micros, rows(&a)), (90_000_000, 2));
        // A scan older than what was written meanwhile keeps the write.
        idx.observe(&tick("b", 200, &[1])).unwrap();
        let stale = LatestRows {
            at_micros: 100_000_000,
            batches: vec![tick("b", 100, &[2, 3])],
        };
        idx.record_scan("b", Some(stale));
        assert_eq!(idx.get("b").unwrap().at_micros, 200_000_000);
        idx.record_scan("zz", None);
        assert!(idx.get("zz").is_none());
    }
}
