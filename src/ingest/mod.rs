//! Projectors: NATS subjects → storage. One file per subject family; the
//! micro-batching loop they share lives here.
//!
//! Core-NATS perf subjects are buffered and committed once a second or
//! every 1,000 messages, one storage commit per batch. A payload that does
//! not decode is counted and logged with its subject, and the loop goes
//! on. A commit that fails keeps its batch for the next attempt (bounded),
//! so a transient disk error loses nothing.

mod audit;
mod events;
mod heartbeat;
mod host_perf;
mod notification_acks;
mod obs_events;
mod process_perf;
mod results;
pub mod stream;
mod wire;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;

pub use audit::AuditProjection;
pub use events::StartedProjection;
pub use heartbeat::HeartbeatProjection;
pub use host_perf::HostPerfProjection;
pub use notification_acks::NotificationAcksProjection;
pub use obs_events::ObsEventsProjection;
pub use process_perf::ProcessPerfProjection;
pub use results::ResultsProjection;

/// Messages buffered before a commit is forced.
pub const FLUSH_MAX_MESSAGES: usize = 1_000;
/// Longest a message waits in the buffer.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Messages kept across failing commits before the oldest are given up.
const MAX_PENDING_MESSAGES: usize = 200_000;

/// What one commit did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Committed {
    pub inserted: usize,
    pub duplicates: usize,
}

/// One subject family projected into storage.
pub trait Projection: Send + Sync + 'static {
    type Item: Send + Sync + 'static;
    /// The subscription subject, e.g. `host_perf.>`.
    const SUBJECT: &'static str;
    fn decode(payload: &[u8]) -> Result<Self::Item, serde_json::Error>;
    /// Refuses a decoded message whose values may not be stored (see
    /// [`wire`]); `now` is when it arrived.
    fn check(&self, _item: &Self::Item, _now: chrono::DateTime<chrono::Utc>) -> Result<(), String> {
        Ok(())
    }
    /// Commits `items` in one storage transaction. Blocking.
    fn commit(&self, items: &[Self::Item]) -> kanade_storage::Result<Committed>;
}

/// Counters of one projector.
#[derive(Debug, Default)]
pub struct ProjectorStats {
    pub received: AtomicU64,
    pub malformed: AtomicU64,
    /// Decoded but refused by [`Projection::check`].
    pub rejected: AtomicU64,
    pub inserted: AtomicU64,
    pub duplicates: AtomicU64,
    pub commit_failures: AtomicU64,
}

impl ProjectorStats {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Subscribes to `D::SUBJECT` and commits decoded messages in
/// micro-batches until `stop` turns true; then commits what is buffered
/// and returns. The NATS client re-subscribes by itself after a
/// reconnect.
pub async fn run<D: Projection>(
    client: async_nats::Client,
    table: Arc<D>,
    stats: Arc<ProjectorStats>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut sub = client.subscribe(D::SUBJECT).await?;
    tracing::info!(subject = D::SUBJECT, "projector started");
    let mut buf: Vec<D::Item> = Vec::new();
    let mut tick = tokio::time::interval(FLUSH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = sub.next() => match msg {
                Some(msg) => {
                    stats.received.fetch_add(1, Ordering::Relaxed);
                    match D::decode(&msg.payload) {
                        Ok(item) => match table.check(&item, chrono::Utc::now()) {
                            Ok(()) => buf.push(item),
                            Err(e) => {
                                stats.rejected.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(subject = %crate::control::abbreviated(msg.subject.as_str()), error = %e, "message refused");
                            }
                        },
                        Err(e) => {
                            stats.malformed.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(subject = %crate::control::abbreviated(msg.subject.as_str()), error = %e, "undecodable payload skipped");
                        }
                    }
                    if buf.len() >= FLUSH_MAX_MESSAGES {
                        flush::<D>(&table, &stats, &mut buf).await;
                    }
                }
                None => break,
            },
            _ = tick.tick() => flush::<D>(&table, &stats, &mut buf).await,
            _ = stop.changed() => break,
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), sub.unsubscribe()).await;
    flush::<D>(&table, &stats, &mut buf).await;
    tracing::info!(
        subject = D::SUBJECT,
        received = ProjectorStats::get(&stats.received),
        inserted = ProjectorStats::get(&stats.inserted),
        duplicates = ProjectorStats::get(&stats.duplicates),
        malformed = ProjectorStats::get(&stats.malformed),
        rejected = ProjectorStats::get(&stats.rejected),
        "projector stopped"
    );
    Ok(())
}

/// One storage commit for everything buffered. On failure the buffer is
/// kept for the next tick.
async fn flush<D: Projection>(table: &Arc<D>, stats: &ProjectorStats, buf: &mut Vec<D::Item>) {
    if buf.is_empty() {
        return;
    }
    let items = std::mem::take(buf);
    let table2 = Arc::clone(table);
    let result = tokio::task::spawn_blocking(move || {
        let outcome = table2.commit(&items);
        (items, outcome)
    })
    .await;
    match result {
        Ok((_, Ok(outcome))) => {
            stats
                .inserted
                .fetch_add(outcome.inserted as u64, Ordering::Relaxed);
            stats
                .duplicates
                .fetch_add(outcome.duplicates as u64, Ordering::Relaxed);
        }
        Ok((items, Err(e))) => {
            stats.commit_failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(subject = D::SUBJECT, error = %e, pending = items.len(), "commit failed; will retry");
            *buf = items;
            if buf.len() > MAX_PENDING_MESSAGES {
                let excess = buf.len() - MAX_PENDING_MESSAGES;
                tracing::error!(
                    subject = D::SUBJECT,
                    dropped = excess,
                    "pending buffer full; oldest messages given up"
                );
                buf.drain(..excess);
            }
        }
        Err(e) => {
            stats.commit_failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(subject = D::SUBJECT, error = %e, "commit task panicked");
        }
    }
}
