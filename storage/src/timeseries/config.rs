//! Knobs of the time-series engine.

use std::time::Duration;

use serde::Deserialize;

use crate::{Error, Result};

/// Settings of the time-series engine (the `[storage]` section of
/// `backend.toml`, apart from the data directory).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TimeSeriesConfig {
    /// Days of `host_perf` partitions kept, counting back from today (UTC).
    /// Default 30.
    pub host_perf_retention_days: u32,
    /// Days of `host_perf_5m` partitions (the 5-minute rollup of
    /// `host_perf`) kept. Default 90.
    pub host_perf_5m_retention_days: u32,
    /// Days of `host_perf_1h` partitions (the hourly rollup) kept.
    /// Default 400.
    pub host_perf_1h_retention_days: u32,
    /// Days of `process_perf` partitions kept. Default 7.
    pub process_perf_retention_days: u32,
    /// Days of `process_perf_5m` partitions (the 5-minute rollup of
    /// `process_perf`, per process name) kept. Default 30.
    pub process_perf_5m_retention_days: u32,
    /// Days of `process_perf_1h` partitions (the hourly rollup per
    /// process name) kept. Default 90.
    pub process_perf_1h_retention_days: u32,
    /// Days of `inventory_history` partitions kept. Default 90.
    pub inventory_history_retention_days: u32,
    /// Seconds between persists of the head buffer to Parquet. Default 300.
    pub persist_interval_secs: u64,
    /// Rows in the head buffer that trigger a persist before the interval
    /// is up. Default 500,000. A write that leaves twice this many in the
    /// head persists inline (the head's hard cap).
    pub persist_max_rows: usize,
    /// Bytes of Arrow memory in the head (per table) that trigger a
    /// persist, whichever of this and `persist_max_rows` comes first.
    /// Default 16,777,216 (16 MiB). Twice this is the head's hard cap: a
    /// write that leaves more persists inline, so the head stays bounded
    /// when the persist pass falls behind.
    pub persist_max_bytes: usize,
    /// Files in today's partition that trigger its compaction (closed
    /// partitions are compacted as soon as they hold two files). Default 8.
    pub compaction_min_files: usize,
    /// Seconds between compaction and retention passes. Default 600.
    pub maintenance_interval_secs: u64,
    /// Rows per Parquet row group. Default 65,536.
    pub row_group_rows: usize,
    /// Zstd level of Parquet pages (1–22). Default 3.
    pub zstd_level: i32,
    /// Seconds of recently persisted keys remembered to drop repeats that
    /// arrive after their first copy was persisted. Default 7,200.
    pub dedup_window_secs: u64,
    /// Seconds a sample's `at` may be ahead of the backend's clock before
    /// ingest refuses it (an agent with a broken clock). Default 86,400.
    pub max_future_secs: u64,
}

impl Default for TimeSeriesConfig {
    fn default() -> Self {
        Self {
            host_perf_retention_days: 30,
            host_perf_5m_retention_days: 90,
            host_perf_1h_retention_days: 400,
            process_perf_retention_days: 7,
            process_perf_5m_retention_days: 30,
            process_perf_1h_retention_days: 90,
            inventory_history_retention_days: 90,
            persist_interval_secs: 300,
            persist_max_rows: 500_000,
            persist_max_bytes: 16 << 20,
            compaction_min_files: 8,
            maintenance_interval_secs: 600,
            row_group_rows: 65_536,
            zstd_level: 3,
            dedup_window_secs: 7_200,
            max_future_secs: 86_400,
        }
    }
}

impl TimeSeriesConfig {
    /// Tiny thresholds so tests exercise every stage quickly.
    pub fn for_tests() -> Self {
        Self {
            persist_interval_secs: 1,
            persist_max_rows: 100,
            compaction_min_files: 2,
            maintenance_interval_secs: 1,
            row_group_rows: 16,
            ..Self::default()
        }
    }

    /// Rejects settings the engine cannot run with.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::InvalidConfig(m.to_string()));
        if self.host_perf_retention_days == 0 {
            return bad("storage.host_perf_retention_days must be at least 1");
        }
        if self.host_perf_5m_retention_days == 0 {
            return bad("storage.host_perf_5m_retention_days must be at least 1");
        }
        if self.host_perf_1h_retention_days == 0 {
            return bad("storage.host_perf_1h_retention_days must be at least 1");
        }
        if self.process_perf_retention_days == 0 {
            return bad("storage.process_perf_retention_days must be at least 1");
        }
        if self.process_perf_5m_retention_days == 0 {
            return bad("storage.process_perf_5m_retention_days must be at least 1");
        }
        if self.process_perf_1h_retention_days == 0 {
            return bad("storage.process_perf_1h_retention_days must be at least 1");
        }
        if self.inventory_history_retention_days == 0 {
            return bad("storage.inventory_history_retention_days must be at least 1");
        }
        if self.persist_interval_secs == 0 {
            return bad("storage.persist_interval_secs must be at least 1");
        }
        if self.persist_max_rows == 0 {
            return bad("storage.persist_max_rows must be at least 1");
        }
        if self.persist_max_bytes == 0 {
            return bad("storage.persist_max_bytes must be at least 1");
        }
        if self.compaction_min_files < 2 {
            return bad("storage.compaction_min_files must be at least 2");
        }
        if self.maintenance_interval_secs == 0 {
            return bad("storage.maintenance_interval_secs must be at least 1");
        }
        if self.row_group_rows == 0 {
            return bad("storage.row_group_rows must be at least 1");
        }
        if !(1..=22).contains(&self.zstd_level) {
            return bad("storage.zstd_level must be between 1 and 22");
        }
        Ok(())
    }

    pub fn persist_interval(&self) -> Duration {
        Duration::from_secs(self.persist_interval_secs)
    }

    pub fn maintenance_interval(&self) -> Duration {
        Duration::from_secs(self.maintenance_interval_secs)
    }
}
