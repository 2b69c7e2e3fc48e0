//! The time-series tables (`host_perf`, `process_perf` and
//! `inventory_history`), opened together at start-up and kept up by the
//! maintenance passes of `jobs::maintenance`.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use crate::metrics;
use anyhow::{Context, Result};
use chrono::Utc;
use kanade_storage::{
    PartitionDate, TimeSeriesConfig, TimeSeriesTable, HOST_PERF, INVENTORY_HISTORY, PROCESS_PERF,
};

/// The time-series tables.
#[derive(Debug, Clone)]
pub struct Tables {
    pub host: Arc<TimeSeriesTable>,
    pub process: Arc<TimeSeriesTable>,
    pub history: Arc<TimeSeriesTable>,
}

impl Tables {
    /// Opens both tables under `data_dir` and applies retention once.
    pub fn try_open(data_dir: &Path, config: &TimeSeriesConfig) -> Result<Self> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("create data directory {}", data_dir.display()))?;
        let host = TimeSeriesTable::open(&HOST_PERF, data_dir, config.clone())?;
        let process = TimeSeriesTable::open(&PROCESS_PERF, data_dir, config.clone())?;
        let history = TimeSeriesTable::open(&INVENTORY_HISTORY, data_dir, config.clone())?;
        let tables = Self {
            host: Arc::new(host),
            process: Arc::new(process),
            history: Arc::new(history),
        };
        tables.drop_expired()?;
        Ok(tables)
    }

    /// Every table, in a fixed order.
    pub fn each(&self) -> [&Arc<TimeSeriesTable>; 3] {
        [&self.host, &self.process, &self.history]
    }

    /// Persists every head.
    pub fn persist(&self) -> Result<()> {
        for t in self.each() {
            let started = Instant::now();
            let out = t
                .persist()
                .with_context(|| format!("persist {}", t.spec().name))?;
            if out.rows > 0 {
                metrics::get().pass(
                    t.spec().name,
                    "persist",
                    started.elapsed().as_secs_f64(),
                    Some(out.rows as u64),
                );
            }
        }
        Ok(())
    }

    /// Retention for today: expired partitions go whole.
    pub fn drop_expired(&self) -> Result<()> {
        let today = PartitionDate::of(Utc::now());
        for t in self.each() {
            let started = Instant::now();
            let dropped = t
                .drop_expired(today)
                .with_context(|| format!("retention of {}", t.spec().name))?;
            if !dropped.is_empty() {
                let m = metrics::get();
                m.pass(
                    t.spec().name,
                    "retention",
                    started.elapsed().as_secs_f64(),
                    None,
                );
                m.partitions_dropped
                    .get_or_create(&metrics::TableLabels {
                        table: t.spec().name,
                    })
                    .inc_by(dropped.len() as u64);
            }
        }
        Ok(())
    }

    /// Retention, then compaction, for today (the maintenance timer's
    /// pass; start-up only applies retention, so it never waits on
    /// rewriting partitions).
    pub fn maintain(&self) -> Result<()> {
        self.drop_expired()?;
        let today = PartitionDate::of(Utc::now());
        for t in self.each() {
            let started = Instant::now();
            let done = t
                .compact(today)
                .with_context(|| format!("compaction of {}", t.spec().name))?;
            if !done.is_empty() {
                let rows = done.iter().map(|c| c.output_rows as u64).sum();
                let secs = started.elapsed().as_secs_f64();
                metrics::get().pass(t.spec().name, "compaction", secs, Some(rows));
            }
        }
        Ok(())
    }
}
