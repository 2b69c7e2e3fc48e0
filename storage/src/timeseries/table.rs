//! The time-series tables: each one's columns (declared once, see
//! [`super::catalog`]), key, retention and rollups.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, LazyLock};

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{
    Array, BooleanArray, Int64Array, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;

use super::catalog::{rows, ts_type};
use super::config::TimeSeriesConfig;
use crate::{Error, Result};

/// Static description of one time-series table.
#[derive(Debug)]
pub struct TableSpec {
    /// Table name: also the directory under the data directory.
    pub name: &'static str,
    schema: &'static LazyLock<SchemaRef>,
    /// The third key column after (pc_id, at), if any: `pid` of a
    /// process sample, `seq` of an inventory change.
    seq: Option<&'static str>,
    /// Whether the table keeps each PC's latest rows in memory
    /// (see `latest.rs`): the process table, for the latest tick.
    pub(crate) tracks_latest: bool,
    /// Days of partitions kept, from the `[storage]` settings.
    pub(crate) retention_days: fn(&TimeSeriesConfig) -> u32,
    /// The coarser tables derived from this one (see `rollup.rs`): the
    /// per-PC levels finest first, then the fleet-wide ones.
    pub(crate) rollups: &'static [&'static TableSpec],
    /// For a rollup table: the seconds of one window (0 for raw tables).
    pub window_secs: i64,
    /// For a rollup table: whether a row summarises every PC's rows of
    /// its window (pc_id "") instead of one PC's. Only a fleet-wide
    /// question reads such a level; a PC's question never does.
    pub fleet: bool,
    /// For a rollup table: the raw table's text column its rows are also
    /// grouped by, after the PC and the window (`name`: one row per
    /// process name); `None` for one row per PC per window.
    pub group: Option<&'static str>,
    /// Seconds of every PC's newest rows kept in memory (see
    /// `recent.rs`); 0 for none.
    pub(crate) recent_secs: i64,
    /// Seconds of fleet-wide 1-minute windows kept in memory (see
    /// `fleet.rs`); 0 for none.
    pub(crate) fleet_secs: i64,
}

/// The time zone every `at` column carries.
pub const UTC: &str = "UTC";

rows! {
    /// One host sample as the projector hands it to storage.
    /// `[charted]` columns are what a PC's host timeline averages.
    HostPerfRow in HOST_PERF as HOST_SCHEMA {
        pc_id: String,
        at: DateTime<Utc>,
        cpu_pct: Option<f64> [charted],
        cpu_count: Option<i64>,
        mem_used_bytes: Option<i64> [charted],
        mem_total_bytes: Option<i64> [charted],
        swap_used_bytes: Option<i64> [charted],
        swap_total_bytes: Option<i64> [charted],
        disk_read_bytes_per_sec: Option<f64> [charted],
        disk_written_bytes_per_sec: Option<f64> [charted],
        net_rx_bytes_per_sec: Option<f64> [charted],
        net_tx_bytes_per_sec: Option<f64> [charted],
    }
}

rows! {
    /// One process of one tick as the projector hands it to storage.
    /// The API answers a tick's rows under the PC and the tick, so a
    /// row serialises without them.
    ProcessPerfRow in PROCESS_PERF as PROCESS_SCHEMA {
        #[serde(skip)]
        pc_id: String,
        #[serde(skip)]
        at: DateTime<Utc>,
        pid: i64,
        name: String,
        cpu_pct: f64,
        rss_bytes: i64,
        disk_read_bytes_per_sec: Option<f64>,
        disk_written_bytes_per_sec: Option<f64>,
    }
}

/// Host samples: one row per PC per tick, keyed by (pc_id, at).
pub static HOST_PERF: TableSpec = TableSpec {
    name: "host_perf",
    schema: &HOST_SCHEMA,
    seq: None,
    tracks_latest: false,
    retention_days: |c| c.host_perf_retention_days,
    rollups: &[&HOST_PERF_5M, &HOST_PERF_1H, &HOST_PERF_FLEET_1M],
    window_secs: 0,
    fleet: false,
    group: None,
    recent_secs: RECENT_SECS,
    fleet_secs: 8 * 86_400,
};

/// Two hours of each PC's newest host and process rows stay in memory:
/// the last hour, the view operators open most, reads no file.
const RECENT_SECS: i64 = 7_200;

static HOST_ROLLUP_SCHEMA: LazyLock<SchemaRef> =
    LazyLock::new(|| rollup_schema(&HOST_SCHEMA, None, None));

/// `host_perf` per PC per 5-minute window: sum, count, min and max of
/// every metric, keyed by (pc_id, at = the window's start).
pub static HOST_PERF_5M: TableSpec = TableSpec {
    name: "host_perf_5m",
    schema: &HOST_ROLLUP_SCHEMA,
    seq: None,
    tracks_latest: false,
    retention_days: |c| c.host_perf_5m_retention_days,
    rollups: &[],
    window_secs: 300,
    fleet: false,
    group: None,
    recent_secs: 0,
    fleet_secs: 0,
};

/// `host_perf` per PC per hour, as [`HOST_PERF_5M`].
pub static HOST_PERF_1H: TableSpec = TableSpec {
    name: "host_perf_1h",
    schema: &HOST_ROLLUP_SCHEMA,
    seq: None,
    tracks_latest: false,
    retention_days: |c| c.host_perf_1h_retention_days,
    rollups: &[],
    window_secs: 3_600,
    fleet: false,
    group: None,
    recent_secs: 0,
    fleet_secs: 0,
};

/// `host_perf` over every PC per minute: sum, count, min and max of
/// every metric across the fleet, keyed by (pc_id = "", at = the
/// window's start). About 1,440 rows a day whatever the fleet's size, so
/// a fleet chart of any whole-minute range, or of a month, reads that
/// instead of a row per PC. Kept as long as the hourly rollup.
pub static HOST_PERF_FLEET_1M: TableSpec = TableSpec {
    name: "host_perf_fleet_1m",
    schema: &HOST_ROLLUP_SCHEMA,
    seq: None,
    tracks_latest: false,
    retention_days: |c| c.host_perf_1h_retention_days,
    rollups: &[],
    window_secs: 60,
    fleet: true,
    group: None,
    recent_secs: 0,
    fleet_secs: 0,
};

/// The numeric columns of a schema outside pc_id and at.
fn numeric_columns(raw: &Schema) -> Vec<&str> {
    raw.fields()
        .iter()
        .filter(|f| !matches!(f.name().as_str(), "pc_id" | "at"))
        .filter(|f| matches!(f.data_type(), DataType::Float64 | DataType::Int64))
        .map(|f| f.name().as_str())
        .collect()
}

/// The columns of a rollup of `raw` (whose third key column is `seq`):
/// pc_id, at (the window's start), the `group` column if any, and per
/// metric `<m>_sum`, `<m>_count`, `<m>_min`, `<m>_max` (min and max null
/// when the window holds no value of the metric). AVG over any set of
/// windows is Σsum / Σcount, exact.
fn rollup_schema(raw: &Schema, seq: Option<&str>, group: Option<&str>) -> SchemaRef {
    let mut fields = vec![
        Field::new("pc_id", DataType::Utf8, false),
        Field::new("at", ts_type(), false),
    ];
    fields.extend(group.map(|g| Field::new(g, DataType::Utf8, false)));
    let metrics = numeric_columns(raw).into_iter().filter(|c| Some(*c) != seq);
    for m in metrics {
        fields.push(Field::new(format!("{m}_sum"), DataType::Float64, false));
        fields.push(Field::new(format!("{m}_count"), DataType::Int64, false));
        fields.push(Field::new(format!("{m}_min"), DataType::Float64, true));
        fields.push(Field::new(format!("{m}_max"), DataType::Float64, true));
    }
    Arc::new(Schema::new(fields))
}

/// Process samples: one row per process per tick, keyed by (pc_id, at, pid).
pub static PROCESS_PERF: TableSpec = TableSpec {
    name: "process_perf",
    schema: &PROCESS_SCHEMA,
    seq: Some("pid"),
    tracks_latest: true,
    retention_days: |c| c.process_perf_retention_days,
    rollups: &[&PROCESS_PERF_5M, &PROCESS_PERF_1H],
    window_secs: 0,
    fleet: false,
    group: None,
    recent_secs: RECENT_SECS,
    fleet_secs: 0,
};

static PROCESS_ROLLUP_SCHEMA: LazyLock<SchemaRef> =
    LazyLock::new(|| rollup_schema(&PROCESS_SCHEMA, Some("pid"), Some("name")));

/// `process_perf` per PC per process name per 5-minute window: sum,
/// count, min and max of every metric over the rows of that name (every
/// pid of it), keyed by (pc_id, at = the window's start, name).
pub static PROCESS_PERF_5M: TableSpec = TableSpec {
    name: "process_perf_5m",
    schema: &PROCESS_ROLLUP_SCHEMA,
    seq: None,
    tracks_latest: false,
    retention_days: |c| c.process_perf_5m_retention_days,
    rollups: &[],
    window_secs: 300,
    fleet: false,
    group: Some("name"),
    recent_secs: 0,
    fleet_secs: 0,
};

/// `process_perf` per PC per process name per hour, as [`PROCESS_PERF_5M`].
pub static PROCESS_PERF_1H: TableSpec = TableSpec {
    name: "process_perf_1h",
    schema: &PROCESS_ROLLUP_SCHEMA,
    seq: None,
    tracks_latest: false,
    retention_days: |c| c.process_perf_1h_retention_days,
    rollups: &[],
    window_secs: 3_600,
    fleet: false,
    group: Some("name"),
    recent_secs: 0,
    fleet_secs: 0,
};

rows! {
    /// One inventory change as the projector hands it to storage.
    InventoryHistoryRow in INVENTORY_HISTORY as HISTORY_SCHEMA {
        pc_id: String,
        /// When the run that saw the change finished.
        at: DateTime<Utc>,
        /// The change's number within its run (unique per PC and `at`).
        seq: i64,
        /// The manifest id.
        job_id: String,
        /// The explode field or top-level key that changed.
        field_path: String,
        /// The element's primary key as a JSON object; `None` for a
        /// top-level value.
        identity_json: Option<String>,
        /// `added`, `removed` or `changed`.
        change_kind: String,
        before_json: Option<String>,
        after_json: Option<String>,
    }
}

/// Inventory changes: one row per element added, removed or changed (or
/// top-level value added or changed) by a PC's inventory run, keyed by
/// (pc_id, at = when the run finished, seq = the change's number within
/// the run), so a redelivered result adds nothing.
pub static INVENTORY_HISTORY: TableSpec = TableSpec {
    name: "inventory_history",
    schema: &HISTORY_SCHEMA,
    seq: Some("seq"),
    tracks_latest: false,
    retention_days: |c| c.inventory_history_retention_days,
    rollups: &[],
    window_secs: 0,
    fleet: false,
    group: None,
    recent_secs: 0,
    fleet_secs: 0,
};

/// The keys of recent rows (the head's and those persisted within the
/// dedup window): a repeat of a known key is dropped. Per PC (ids
/// interned), the (at µs, sequence) pairs in ascending order. Samples
/// arrive nearly in time order, so a new key is almost always appended
/// at the back of its PC's run, and forgetting old keys pops the front:
/// 16 bytes per key, no hashing per row but the PC's, and a fleet's
/// million keys in contiguous memory instead of a hash table.
#[derive(Debug, Default)]
pub(crate) struct KeySet {
    pcs: HashMap<String, u32>,
    runs: Vec<VecDeque<(i64, i64)>>,
    /// The PC of the previous call: a batch holds a PC's rows together.
    last: Option<(String, u32)>,
}

impl KeySet {
    fn run(&mut self, pc: &str) -> &mut VecDeque<(i64, i64)> {
        let n = match &self.last {
            Some((name, n)) if name == pc => *n,
            _ => {
                let n = match self.pcs.get(pc) {
                    Some(&n) => n,
                    None => {
                        let n = self.runs.len() as u32;
                        self.pcs.insert(pc.to_string(), n);
                        self.runs.push(VecDeque::new());
                        n
                    }
                };
                match &mut self.last {
                    Some((name, id)) => {
                        name.clear();
                        name.push_str(pc);
                        *id = n;
                    }
                    None => self.last = Some((pc.to_string(), n)),
                }
                n
            }
        };
        &mut self.runs[n as usize]
    }

    /// Adds the key; false when it was already known.
    pub fn insert(&mut self, (pc, at_micros, seq): (&str, i64, i64)) -> bool {
        let key = (at_micros, seq);
        let run = self.run(pc);
        if run.back().is_none_or(|last| *last < key) {
            run.push_back(key);
            return true;
        }
        match run.binary_search(&key) {
            Ok(_) => false,
            Err(at) => {
                run.insert(at, key);
                true
            }
        }
    }

    pub fn remove(&mut self, (pc, at_micros, seq): (&str, i64, i64)) {
        let run = self.run(pc);
        if let Ok(at) = run.binary_search(&(at_micros, seq)) {
            run.remove(at);
        }
    }

    /// Forgets the keys older than `horizon` (µs).
    pub fn retain_since(&mut self, horizon: i64) {
        for run in &mut self.runs {
            let old = run.partition_point(|(at, _)| *at < horizon);
            run.drain(..old);
            if run.capacity() > 2 * run.len().max(64) {
                run.shrink_to_fit();
            }
        }
    }

    /// Keys held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.runs.iter().map(VecDeque::len).sum()
    }
}

impl TableSpec {
    /// The Arrow schema of the table (and of every Parquet file of it).
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(self.schema)
    }

    /// Days of partitions kept under `config`.
    pub fn retention(&self, config: &TimeSeriesConfig) -> u32 {
        (self.retention_days)(config)
    }

    /// The metric columns: every numeric column outside the key, in
    /// declared order.
    pub fn metric_columns(&self) -> Vec<&'static str> {
        let schema: &'static Schema = self.schema;
        numeric_columns(schema)
            .into_iter()
            .filter(|c| Some(*c) != self.seq)
            .collect()
    }

    /// The third key column, if any.
    pub(crate) fn seq_column(&self) -> Option<&'static str> {
        self.seq
    }

    /// The key columns: pc_id, at and the sequence column if any.
    pub(crate) fn key_columns(&self) -> Vec<&'static str> {
        let mut k = vec!["pc_id", "at"];
        k.extend(self.seq);
        k
    }

    /// Keys (pc_id, at µs, sequence or 0) of every row of `batch`, in
    /// row order.
    pub(crate) fn keys<'a>(&self, batch: &'a RecordBatch) -> Vec<(&'a str, i64, i64)> {
        let pc = string_column(batch, "pc_id");
        let at = ts_column(batch);
        let seq = self.seq.map(|c| int_column(batch, c));
        (0..batch.num_rows())
            .map(|i| (pc.value(i), at.value(i), seq.map_or(0, |p| p.value(i))))
            .collect()
    }

    /// Keeps the first row of every key (in `batch` order) whose key is not
    /// in `known`, and adds the kept keys to `known`.
    pub(crate) fn retain_new(
        &self,
        batch: &RecordBatch,
        known: &mut KeySet,
    ) -> Result<RecordBatch> {
        let mask: BooleanArray = self
            .keys(batch)
            .into_iter()
            .map(|k| Some(known.insert(k)))
            .collect();
        filter_record_batch(batch, &mask).map_err(Error::arrow(self.name))
    }
}

pub(crate) fn string_column<'a>(batch: &'a RecordBatch, name: &str) -> &'a StringArray {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .expect("schema guarantees a Utf8 column")
}

fn int_column<'a>(batch: &'a RecordBatch, name: &str) -> &'a Int64Array {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
        .expect("schema guarantees an Int64 column")
}

pub(crate) fn ts_column(batch: &RecordBatch) -> &TimestampMicrosecondArray {
    batch
        .column_by_name("at")
        .and_then(|c| c.as_any().downcast_ref::<TimestampMicrosecondArray>())
        .expect("schema guarantees a timestamp column")
}

#[cfg(test)]
mod key_set_tests {
    use super::KeySet;

    #[test]
    fn keys_out_of_order_repeats_removal_and_forgetting() {
        let mut k = KeySet::default();
        // In order, out of order within a PC, two PCs interleaved.
        assert!(k.insert(("a", 10, 0)));
        assert!(k.insert(("a", 30, 0)));
        assert!(k.insert(("b", 20, 0)));
        assert!(k.insert(("a", 20, 5)));
        assert!(k.insert(("a", 20, 1)));
        assert!(k.insert(("a", 5, 0)));
        assert_eq!(k.len(), 6);
        // Every repeat is refused, wherever it sits in its run.
        for key in [
            ("a", 5, 0),
            ("a", 10, 0),
            ("a", 20, 1),
            ("a", 20, 5),
            ("a", 30, 0),
            ("b", 20, 0),
        ] {
            assert!(!k.insert(key), "{key:?} is known");
        }
        assert!(k.insert(("b", 10, 0)), "another PC's key is not a repeat");
        assert_eq!(k.len(), 7);
        k.remove(("a", 20, 1));
        k.remove(("a", 99, 0));
        assert_eq!(k.len(), 6);
        assert!(k.insert(("a", 20, 1)), "a removed key may come again");
        k.retain_since(20);
        assert_eq!(k.len(), 4, "a's 5 and 10, b's 10 forgotten");
        assert!(k.insert(("a", 10, 0)));
        assert!(!k.insert(("a", 20, 5)));
        assert!(!k.insert(("b", 20, 0)));
    }
}
