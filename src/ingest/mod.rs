//! Projectors: NATS subjects → storage. One file per subject family; the
//! micro-batching loop they share lives here.
//!
//! Core-NATS perf subjects are buffered and committed once a second or
//! every 1,000 messages, one storage commit per batch. A payload that does
//! not decode is counted and logged with its subject, and the loop goes
//! on. A commit that fails keeps its batch for the next attempt (bounded),
//! so a transient disk error loses nothing.

mod audit;
pub mod capture;
pub mod check_alerts;
mod events;
mod heartbeat;
mod host_perf;
mod notification_acks;
mod obs_events;
mod process_perf;
mod results;
pub mod stream;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use prometheus_client::metrics::counter::Counter;
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

impl Committed {
    /// `n` items, every one inserted.
    pub fn all(n: usize) -> Self {
        Self {
            inserted: n,
            duplicates: 0,
        }
    }
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

/// Counters of one projector, in the process's metrics
/// (`kanade_ingest_messages_total{source, outcome}`).
#[derive(Debug, Clone)]
pub struct ProjectorStats {
    pub received: Counter,
    pub malformed: Counter,
    /// Decoded but refused by a `check`.
    pub rejected: Counter,
    pub inserted: Counter,
    pub duplicates: Counter,
    pub commit_failures: Counter,
}

impl ProjectorStats {
    /// The counters of `source` (a subject filter or a stream).
    pub fn of(source: &'static str) -> Self {
        let m = crate::metrics::get();
        Self {
            received: m.ingest(source, "received"),
            malformed: m.ingest(source, "malformed"),
            rejected: m.ingest(source, "rejected"),
            inserted: m.ingest(source, "inserted"),
            duplicates: m.ingest(source, "duplicate"),
            commit_failures: m.ingest(source, "commit_failure"),
        }
    }
}

/// Subscribes to `D::SUBJECT` and commits decoded messages in
/// micro-batches until `stop` turns true; then commits what is buffered
/// and returns. The NATS client re-subscribes by itself after a
/// reconnect.
pub async fn run<D: Projection>(
    client: async_nats::Client,
    table: Arc<D>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let stats = ProjectorStats::of(D::SUBJECT);
    let mut sub = client.subscribe(D::SUBJECT).await?;
    tracing::info!(subject = D::SUBJECT, "projector started");
    let mut buf: Vec<D::Item> = Vec::new();
    let mut tick = tokio::time::interval(FLUSH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = sub.next() => match msg {
                Some(msg) => {
                    stats.received.inc();
                    match D::decode(&msg.payload) {
                        Ok(item) => match table.check(&item, chrono::Utc::now()) {
                            Ok(()) => buf.push(item),
                            Err(e) => {
                                stats.rejected.inc();
                                tracing::warn!(subject = %crate::control::abbreviated(msg.subject.as_str()), error = %e, "message refused");
                            }
                        },
                        Err(e) => {
                            stats.malformed.inc();
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
        received = stats.received.get(),
        inserted = stats.inserted.get(),
        duplicates = stats.duplicates.get(),
        malformed = stats.malformed.get(),
        rejected = stats.rejected.get(),
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
            stats.inserted.inc_by(outcome.inserted as u64);
            stats.duplicates.inc_by(outcome.duplicates as u64);
        }
        Ok((items, Err(e))) => {
            stats.commit_failures.inc();
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
            stats.commit_failures.inc();
            tracing::error!(subject = D::SUBJECT, error = %e, "commit task panicked");
        }
    }
}
