//! The perf tables' upkeep as runner passes: persist the head on the
//! persist interval (or sooner when a head is full), and retention plus
//! compaction on the maintenance interval.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use kanade_storage::TimeSeriesConfig;

use super::Runner;
use crate::tables::Tables;

/// How often the persist pass looks at the heads: a head that reaches a
/// threshold is persisted within this, beside the writes (a write that
/// finds it at twice the threshold persists inline instead). The look is
/// a sum over the head's chunks.
pub const PERSIST_CHECK: Duration = Duration::from_millis(100);

/// Registers the persist and the compaction/retention passes.
pub fn register(runner: &mut Runner, tables: &Tables, config: &TimeSeriesConfig) {
    let last_persist = Mutex::new(Instant::now());
    let persist_every = config.persist_interval();
    let t = tables.clone();
    runner.every("persist", PERSIST_CHECK, false, move || {
        let mut last = last_persist.lock().unwrap_or_else(|p| p.into_inner());
        let due = last.elapsed() >= persist_every;
        if due || t.each().iter().any(|t| t.wants_persist()) {
            *last = Instant::now();
            t.persist()?;
        }
        Ok(())
    });
    let t = tables.clone();
    runner.every(
        "compaction and retention",
        config.maintenance_interval(),
        false,
        move || t.maintain(),
    );
}
