//! The JetStream side: durable pull consumers that apply a stream to redb.
//!
//! Each batch is decoded, committed in one redb transaction together with
//! the stream sequence it ends at, and only then acked. On start the
//! durable consumer is (re)created to deliver from the sequence after the
//! recorded one, so a restart resumes without applying a message twice and
//! an empty data directory replays the stream from its first message. A
//! stream shorter than the recorded position (a broker wiped or restored
//! from a backup) is read from its start, its sequences numbered after
//! ours so ids derived from them never meet old ones. The
//! durable names carry a `columnar-` prefix so this backend and the
//! reference one can consume the same broker side by side.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use kanade_storage::{RelationalStore, StreamPosition};
use tokio::sync::watch;

use super::Committed;

/// A stream projected into redb.
pub trait StreamProjection: Send + Sync + 'static {
    type Item: Send + Sync + 'static;
    /// Stream name, e.g. `RESULTS`.
    const STREAM: &'static str;
    /// Durable consumer name (distinct from the reference backend's).
    const DURABLE: &'static str;
    /// Subject filter inside the stream, if any.
    const FILTER: Option<&'static str>;
    /// The stream's configuration when this projector makes the stream
    /// itself (if missing); `None`: another task makes it.
    fn stream_config(&self) -> Option<jetstream::stream::Config> {
        None
    }
    /// Decodes the message at stream sequence `seq`.
    fn decode(subject: &str, seq: u64, payload: &[u8]) -> Result<Self::Item, String>;
    /// Refuses a decoded message whose values may not be stored (see
    /// `ingest::wire`).
    fn check(&self, _item: &Self::Item) -> Result<(), String> {
        Ok(())
    }
    /// Applies `items` and records `pos` (in one transaction, or the
    /// rows durably first: a redelivery must then be a duplicate).
    /// Blocking.
    fn apply(
        &self,
        store: &RelationalStore,
        items: &[Self::Item],
        pos: StreamPosition<'_>,
    ) -> kanade_storage::Result<Committed>;
    /// Messages fetched and committed together at most.
    const BATCH: usize = 256;
}
const RETRY: Duration = Duration::from_secs(2);

/// When each durable last committed a batch (its start counts as one),
/// for readiness: a projector with messages pending that has not moved
/// for a while is stalled.
static ADVANCED: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<&'static str, std::time::Instant>>,
> = std::sync::LazyLock::new(Default::default);

fn advanced(durable: &'static str, start: bool) {
    let mut map = ADVANCED.lock().unwrap_or_else(|p| p.into_inner());
    if start {
        map.entry(durable).or_insert_with(std::time::Instant::now);
    } else {
        map.insert(durable, std::time::Instant::now());
    }
}

/// How long ago `durable` last committed a batch (or started); `None`
/// before it ever ran.
pub fn since_advanced(durable: &str) -> Option<Duration> {
    ADVANCED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(durable)
        .map(|t| t.elapsed())
}

/// Runs the consumer until `stop`; reconnects (and recreates the
/// consumer) after any broker error.
pub async fn run<P: StreamProjection>(
    js: jetstream::Context,
    store: RelationalStore,
    projection: Arc<P>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let stats = super::ProjectorStats::of(P::FILTER.unwrap_or(P::STREAM));
    advanced(P::DURABLE, true);
    loop {
        let result = tokio::select! {
            r = consume(&js, &store, &projection, &stats) => r,
            _ = stop.wait_for(|s| *s) => return Ok(()),
        };
        if let Err(e) = result {
            tracing::warn!(
                stream = P::STREAM,
                error = format!("{e:#}"),
                "stream consumer interrupted; retrying"
            );
        }
        tokio::select! {
            _ = tokio::time::sleep(RETRY) => {}
            _ = stop.wait_for(|s| *s) => return Ok(()),
        }
    }
}

async fn consume<P: StreamProjection>(
    js: &jetstream::Context,
    store: &RelationalStore,
    projection: &Arc<P>,
    stats: &super::ProjectorStats,
) -> anyhow::Result<()> {
    let stream = match projection.stream_config() {
        Some(config) => js.get_or_create_stream(config).await?,
        None => js.get_stream(P::STREAM).await?,
    };
    // Our positions (and the ids some projections derive from them) run
    // on across broker generations: `base` is where the current stream's
    // sequence 0 sits in them, `created` names that stream.
    let applied = store.consumer_position(P::DURABLE)?;
    let (base_key, stream_key) = (
        format!("{}#base", P::DURABLE),
        format!("{}#stream", P::DURABLE),
    );
    let mut base = store.consumer_position(&base_key)?.min(applied);
    let info = stream.cached_info();
    let created = u64::try_from(info.created.unix_timestamp_nanos()).unwrap_or(0);
    let known = store.consumer_position(&stream_key)?;
    // Another stream than the one we read (a broker wiped, or restored
    // from a backup), or one shorter than what we applied of it: all of
    // it is new to us, numbered after what we have.
    let recreated = (known != 0 && known != created) || applied - base > info.state.last_sequence;
    if recreated && applied > base {
        tracing::warn!(
            stream = P::STREAM,
            durable = P::DURABLE,
            applied = applied - base,
            stream_last = info.state.last_sequence,
            "not the stream we read (recreated); reading it from its start"
        );
        base = applied;
        store.record_position(StreamPosition {
            consumer: &base_key,
            stream_seq: base,
        })?;
    }
    if known != created {
        store.set_position(StreamPosition {
            consumer: &stream_key,
            stream_seq: created,
        })?;
    }
    let deliver_policy = match applied - base {
        0 => consumer::DeliverPolicy::All,
        seq => consumer::DeliverPolicy::ByStartSequence {
            start_sequence: seq + 1,
        },
    };
    // The broker's view of the durable may be ahead of or behind ours
    // (e.g. a wiped data directory): ours wins.
    let _ = stream.delete_consumer(P::DURABLE).await;
    let consumer: consumer::PullConsumer = stream
        .get_or_create_consumer(
            P::DURABLE,
            consumer::pull::Config {
                durable_name: Some(P::DURABLE.into()),
                // One ack per batch, for the batch's last message.
                ack_policy: consumer::AckPolicy::All,
                max_ack_pending: i64::try_from(P::BATCH)
                    .unwrap_or(i64::MAX)
                    .saturating_mul(2),
                deliver_policy,
                filter_subject: P::FILTER.unwrap_or_default().into(),
                ..Default::default()
            },
        )
        .await?;
    tracing::info!(
        stream = P::STREAM,
        durable = P::DURABLE,
        after_seq = applied - base,
        "stream consumer started"
    );
    loop {
        let mut batch = consumer
            .batch()
            .max_messages(P::BATCH)
            .expires(Duration::from_secs(1))
            .messages()
            .await?;
        let mut msgs = Vec::new();
        while let Some(m) = batch.next().await {
            msgs.push(m.map_err(|e| anyhow::anyhow!(e))?);
        }
        if msgs.is_empty() {
            continue;
        }
        apply_batch(store, projection, stats, base, &msgs).await?;
        if let Some(last) = msgs.last() {
            last.ack().await.map_err(|e| anyhow::anyhow!(e))?;
        }
    }
}

async fn apply_batch<P: StreamProjection>(
    store: &RelationalStore,
    projection: &Arc<P>,
    stats: &super::ProjectorStats,
    base: u64,
    msgs: &[jetstream::Message],
) -> anyhow::Result<()> {
    stats.received.inc_by(msgs.len() as u64);
    let mut items = Vec::with_capacity(msgs.len());
    let mut last_seq = 0;
    for m in msgs {
        let seq = m.info().map_err(|e| anyhow::anyhow!(e))?.stream_sequence;
        let seq = base
            .checked_add(seq)
            .ok_or_else(|| anyhow::anyhow!("stream sequence {seq} past {base} overflows"))?;
        last_seq = last_seq.max(seq);
        let subject = crate::control::abbreviated(m.subject.as_str());
        match P::decode(m.subject.as_str(), seq, &m.payload) {
            Ok(item) => match projection.check(&item) {
                Ok(()) => items.push(item),
                Err(e) => {
                    stats.rejected.inc();
                    tracing::warn!(stream = P::STREAM, %subject, seq, error = %e, "message refused")
                }
            },
            Err(e) => {
                stats.malformed.inc();
                tracing::warn!(stream = P::STREAM, %subject, seq, error = %e, "undecodable payload skipped")
            }
        }
    }
    let (store, projection) = (store.clone(), Arc::clone(projection));
    let committed = tokio::task::spawn_blocking(move || {
        let pos = StreamPosition {
            consumer: P::DURABLE,
            stream_seq: last_seq,
        };
        if items.is_empty() {
            store.record_position(pos).map(|()| Committed::default())
        } else {
            projection.apply(&store, &items, pos)
        }
    })
    .await
    .map_err(anyhow::Error::from)
    .and_then(|r| r.map_err(anyhow::Error::from))
    // Not applied, not acked: redelivered when the consumer restarts.
    .inspect_err(|_| {
        stats.commit_failures.inc();
    })?;
    advanced(P::DURABLE, false);
    stats.inserted.inc_by(committed.inserted as u64);
    stats.duplicates.inc_by(committed.duplicates as u64);
    Ok(())
}

/// Every projected stream and its durable consumer.
pub fn consumers() -> [(&'static str, &'static str); 7] {
    fn of<P: StreamProjection>() -> (&'static str, &'static str) {
        (P::STREAM, P::DURABLE)
    }
    let [host, process] = super::capture::consumers();
    [
        host,
        process,
        of::<super::ResultsProjection>(),
        of::<super::StartedProjection>(),
        of::<super::AuditProjection>(),
        of::<super::ObsEventsProjection>(),
        of::<super::NotificationAcksProjection>(),
    ]
}
