//! Housekeeping of the relational projections, on a timer: executions
//! still pending after 1 h expire, runs still in flight after 24 h are
//! reaped, and results, audit entries and
//! observations past retention are deleted in bounded batches (one short
//! write transaction each) so the projectors are never stalled for long.

use std::time::Duration;

use chrono::Utc;
use kanade_storage::RelationalStore;
use serde::Deserialize;

/// Appended to the stderr of a reaped run.
pub const REAPED_NOTE: &str = "[backend: reaped — no ExecResult within 24h; agent likely died mid-run or hit the pre-v0.43.14 kill-hang (#330)]";
/// Rows deleted per transaction.
const BATCH: usize = 10_000;
/// Transactions per table per pass; the rest waits for the next pass.
const MAX_BATCHES: usize = 10;

/// `[housekeeping]` of `backend.toml`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HousekeepingConfig {
    /// Seconds between passes. Default 300.
    pub interval_secs: u64,
    /// Hours after which a run with no result is reaped. Default 24.
    pub reap_after_hours: i64,
    /// Days of execution results kept. Default 90.
    pub results_retention_days: i64,
    /// Days of audit entries kept. Default 365.
    pub audit_retention_days: i64,
    /// Days of observation events kept. Default 90.
    pub obs_events_retention_days: i64,
}

impl Default for HousekeepingConfig {
    fn default() -> Self {
        Self {
            interval_secs: 300,
            reap_after_hours: 24,
            results_retention_days: 90,
            audit_retention_days: 365,
            obs_events_retention_days: 90,
        }
    }
}

impl HousekeepingConfig {
    /// Rejects values the housekeeper cannot run with.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.interval_secs >= 1,
            "housekeeping.interval_secs must be at least 1"
        );
        anyhow::ensure!(
            self.reap_after_hours >= 1,
            "housekeeping.reap_after_hours must be at least 1"
        );
        for (name, v) in [
            ("results_retention_days", self.results_retention_days),
            ("audit_retention_days", self.audit_retention_days),
            ("obs_events_retention_days", self.obs_events_retention_days),
        ] {
            anyhow::ensure!(v >= 1, "housekeeping.{name} must be at least 1");
        }
        Ok(())
    }
}

/// Registers the housekeeping pass: at once, then every `interval_secs`.
pub fn register(runner: &mut super::Runner, store: &RelationalStore, config: &HousekeepingConfig) {
    let (store, config) = (store.clone(), config.clone());
    runner.every(
        "housekeeping",
        Duration::from_secs(config.interval_secs),
        true,
        move || Ok(pass(&store, &config)?),
    );
}

/// One pass: reap, then prune each table.
pub fn pass(store: &RelationalStore, config: &HousekeepingConfig) -> kanade_storage::Result<()> {
    let now = Utc::now();
    let expired = store.expire_pending_executions(now - chrono::Duration::hours(1))?;
    if expired > 0 {
        tracing::info!(expired, "pending executions expired");
    }
    let reaped = store.reap_in_flight(
        now - chrono::Duration::hours(config.reap_after_hours),
        now,
        REAPED_NOTE,
    )?;
    if reaped > 0 {
        tracing::info!(reaped, "reaped runs with no result");
    }
    let days = chrono::Duration::days;
    prune("execution_results", |n| {
        store.prune_results_before(now - days(config.results_retention_days), n)
    })?;
    prune("executions", |n| {
        store.prune_executions_before(now - days(config.results_retention_days), n)
    })?;
    prune("audit_log", |n| {
        store.prune_audit_before(now - days(config.audit_retention_days), n)
    })?;
    prune("obs_events", |n| {
        store.prune_obs_events_before(now - days(config.obs_events_retention_days), n)
    })?;
    Ok(())
}

fn prune(
    table: &'static str,
    mut batch: impl FnMut(usize) -> kanade_storage::Result<usize>,
) -> kanade_storage::Result<()> {
    let mut total = 0;
    for _ in 0..MAX_BATCHES {
        let n = batch(BATCH)?;
        total += n;
        if n < BATCH {
            break;
        }
    }
    if total > 0 {
        tracing::info!(table, rows = total, "pruned rows past retention");
    }
    Ok(())
}
