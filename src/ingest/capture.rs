//! The capture stream: the broker keeps the agents' perf samples until we
//! have stored them.
//!
//! Agents publish `host_perf.<pc>` / `process_perf.<pc>` on core NATS,
//! which keeps nothing while no backend subscribes (a restart, an upgrade,
//! a crash). With `[capture] enabled` (the default) a JetStream stream
//! ([`STREAM`]) holds those subjects for `max_age_secs` (6 h) within
//! `max_bytes`, and a durable pull consumer per table applies them like
//! the other stream projectors: a batch is fsynced to the table's
//! write-ahead log, then its stream position is recorded in redb, then the
//! batch is acknowledged. A crash between the two leaves a batch that is
//! redelivered and dropped by the table's key dedup (the rows are still in
//! the log, whose keys are always known), so replays are exact.
//!
//! Until the stream can be made (a broker still starting, JetStream
//! refusing the limits), samples are taken over core NATS as before
//! and a warning names why; once the consumers run, the core
//! subscription stops (samples seen by both are duplicates, dropped).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use kanade_storage::{RelationalStore, StreamPosition};
use serde::Deserialize;
use tokio::sync::watch;

use super::stream::StreamProjection;
use super::{Committed, HostPerfProjection, ProcessPerfProjection, Projection};

/// The stream's name (ours: the reference backend has none).
pub const STREAM: &str = "COLUMNAR_PERF";

/// `[capture]` of `backend.toml`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CaptureConfig {
    /// Whether perf samples go through the stream. Default true; false
    /// subscribes on core NATS (samples sent while no backend runs are
    /// lost).
    pub enabled: bool,
    /// How long the broker keeps a sample. Default 21,600 (6 h).
    pub max_age_secs: u64,
    /// The stream's size cap; the oldest samples go first. Default 1 GiB.
    pub max_bytes: u64,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_age_secs: 6 * 3600,
            max_bytes: 1 << 30,
        }
    }
}

impl CaptureConfig {
    /// Rejects limits the broker cannot take.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (60..=30 * 86_400).contains(&self.max_age_secs),
            "capture.max_age_secs must be between 60 and 2592000 (30 days), not {}",
            self.max_age_secs
        );
        anyhow::ensure!(
            (1 << 20..=i64::MAX as u64).contains(&self.max_bytes),
            "capture.max_bytes must be at least 1048576 (1 MiB) and at most {}, not {}",
            i64::MAX,
            self.max_bytes
        );
        Ok(())
    }

    /// The stream these limits describe.
    pub fn stream(&self) -> jetstream::stream::Config {
        jetstream::stream::Config {
            name: STREAM.to_string(),
            description: Some(
                "kanade perf samples kept until the columnar backend has stored them".into(),
            ),
            subjects: vec![
                HostPerfProjection::SUBJECT.to_string(),
                ProcessPerfProjection::SUBJECT.to_string(),
            ],
            retention: jetstream::stream::RetentionPolicy::Limits,
            discard: jetstream::stream::DiscardPolicy::Old,
            storage: jetstream::stream::StorageType::File,
            max_age: Duration::from_secs(self.max_age_secs),
            max_bytes: i64::try_from(self.max_bytes).unwrap_or(i64::MAX),
            ..Default::default()
        }
    }
}

/// Creates the stream, or brings an existing one to the configured
/// limits.
pub async fn ensure_stream(js: &jetstream::Context, config: &CaptureConfig) -> anyhow::Result<()> {
    let wanted = config.stream();
    match js.get_stream(STREAM).await {
        Ok(mut stream) => {
            let have = &stream.info().await?.config;
            if have.subjects != wanted.subjects
                || have.max_age != wanted.max_age
                || have.max_bytes != wanted.max_bytes
            {
                js.update_stream(&wanted)
                    .await
                    .map_err(|e| anyhow::anyhow!("update stream {STREAM}: {e}"))?;
                tracing::info!(
                    stream = STREAM,
                    max_age_secs = config.max_age_secs,
                    max_bytes = config.max_bytes,
                    "capture stream limits updated"
                );
            }
        }
        Err(_) => {
            js.create_stream(wanted)
                .await
                .map_err(|e| anyhow::anyhow!("create stream {STREAM}: {e}"))?;
            tracing::info!(
                stream = STREAM,
                max_age_secs = config.max_age_secs,
                max_bytes = config.max_bytes,
                "capture stream created"
            );
        }
    }
    Ok(())
}

/// A perf projection taken from the capture stream, with its durable.
pub trait Captured: Projection {
    const DURABLE: &'static str;
}

impl Captured for HostPerfProjection {
    const DURABLE: &'static str = "columnar-host-perf-capture";
}

impl Captured for ProcessPerfProjection {
    const DURABLE: &'static str = "columnar-process-perf-capture";
}

/// A [`Captured`] projection driven by the stream projector; the stream
/// is made again if the broker lost it (a broker whose storage was wiped).
pub struct Capture<D> {
    pub projection: Arc<D>,
    pub stream: jetstream::stream::Config,
}

impl<D: Captured> StreamProjection for Capture<D> {
    type Item = D::Item;
    const STREAM: &'static str = STREAM;
    const DURABLE: &'static str = D::DURABLE;
    const FILTER: Option<&'static str> = Some(D::SUBJECT);
    const BATCH: usize = super::FLUSH_MAX_MESSAGES;

    fn stream_config(&self) -> Option<jetstream::stream::Config> {
        Some(self.stream.clone())
    }

    fn decode(_subject: &str, _seq: u64, payload: &[u8]) -> Result<D::Item, String> {
        D::decode(payload).map_err(|e| e.to_string())
    }

    fn check(&self, item: &D::Item) -> Result<(), String> {
        self.projection.check(item, chrono::Utc::now())
    }

    fn apply(
        &self,
        store: &RelationalStore,
        items: &[D::Item],
        pos: StreamPosition<'_>,
    ) -> kanade_storage::Result<Committed> {
        // The rows are in the fsynced log before the position moves.
        let committed = self.projection.commit(items)?;
        store.record_position(pos)?;
        Ok(committed)
    }
}

/// The durables of the capture stream.
pub fn consumers() -> [(&'static str, &'static str); 2] {
    [
        (STREAM, HostPerfProjection::DURABLE),
        (STREAM, ProcessPerfProjection::DURABLE),
    ]
}

/// Runs perf ingest until `stop`: from the capture stream when enabled
/// (core NATS until the stream exists), else over core NATS.
pub async fn run(
    client: async_nats::Client,
    store: RelationalStore,
    host: HostPerfProjection,
    process: ProcessPerfProjection,
    config: CaptureConfig,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let (host, process) = (Arc::new(host), Arc::new(process));
    let (core_stop, core_stopped) = watch::channel(false);
    let core = |client: &async_nats::Client| {
        [
            tokio::spawn(super::run(
                client.clone(),
                Arc::clone(&host),
                core_stopped.clone(),
            )),
            tokio::spawn(super::run(
                client.clone(),
                Arc::clone(&process),
                core_stopped.clone(),
            )),
        ]
    };
    if !config.enabled {
        let tasks = core(&client);
        let _ = stop.wait_for(|s| *s).await;
        let _ = core_stop.send(true);
        return join(tasks).await;
    }
    let js = jetstream::new(client.clone());
    let mut fallback = None;
    let mut wait = Duration::from_secs(1);
    loop {
        match ensure_stream(&js, &config).await {
            Ok(()) => break,
            Err(e) => {
                if fallback.is_none() {
                    tracing::warn!(error = format!("{e:#}"), "capture stream unavailable; perf samples taken over core NATS (lost while no backend runs) until it can be made");
                    fallback = Some(core(&client));
                }
            }
        }
        let stopping = tokio::select! {
            _ = tokio::time::sleep(wait) => false,
            _ = stop.wait_for(|s| *s) => true,
        };
        if stopping {
            let _ = core_stop.send(true);
            return match fallback {
                Some(tasks) => join(tasks).await,
                None => Ok(()),
            };
        }
        wait = (wait * 2).min(Duration::from_secs(60));
    }
    let captured = [
        tokio::spawn(super::stream::run(
            js.clone(),
            store.clone(),
            Arc::new(Capture {
                projection: host,
                stream: config.stream(),
            }),
            stop.clone(),
        )),
        tokio::spawn(super::stream::run(
            js,
            store,
            Arc::new(Capture {
                projection: process,
                stream: config.stream(),
            }),
            stop.clone(),
        )),
    ];
    if let Some(tasks) = fallback {
        tracing::info!(
            stream = STREAM,
            "capture stream ready; core NATS perf subscription stopped"
        );
        let _ = core_stop.send(true);
        join(tasks).await?;
    }
    join(captured).await
}

async fn join(tasks: [tokio::task::JoinHandle<anyhow::Result<()>>; 2]) -> anyhow::Result<()> {
    for task in tasks {
        task.await??;
    }
    Ok(())
}
