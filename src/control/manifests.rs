//! The registered job manifests (KV bucket `jobs`) as the projectors and
//! the inventory API need them: kept in step with the bucket by a watch
//! (a put replaces the entry, a delete or purge drops it), looked up in
//! KV on a miss. While the watch is down, lookups fall back to KV with a
//! short cache, so a stale manifest is never trusted for long.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::Operation;
use futures::StreamExt;
use kanade_queries::inventory::{Kind, Layout};
use kanade_shared::kv::BUCKET_JOBS;
use kanade_shared::manifest::Manifest;
use tokio::sync::watch;

/// How long a lookup is trusted while the watch is down.
const FALLBACK_TTL: Duration = Duration::from_secs(60);
const KV_TIMEOUT: Duration = Duration::from_secs(2);

type Entry = (Instant, Option<Arc<Manifest>>);

/// Manifests by id.
#[derive(Debug)]
pub struct Manifests {
    js: async_nats::jetstream::Context,
    entries: RwLock<HashMap<String, Entry>>,
    /// The watch has delivered the bucket's current state and is live:
    /// entries (and known absences) are current.
    live: AtomicBool,
}

impl Manifests {
    pub fn new(client: async_nats::Client) -> Arc<Self> {
        Arc::new(Self {
            js: async_nats::jetstream::new(client),
            entries: RwLock::new(HashMap::new()),
            live: AtomicBool::new(false),
        })
    }

    fn cached(&self, id: &str) -> Option<Option<Arc<Manifest>>> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let (at, m) = entries.get(id)?;
        (self.live.load(Ordering::Acquire) || at.elapsed() < FALLBACK_TTL).then(|| m.clone())
    }

    fn put(&self, id: &str, m: Option<Arc<Manifest>>) {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        entries.insert(id.to_string(), (Instant::now(), m));
    }

    /// The manifest registered under `id`, if any.
    pub async fn get(&self, id: &str) -> Option<Arc<Manifest>> {
        // An id that cannot name a KV key has no manifest.
        crate::control::check_key("manifest_id", id).ok()?;
        if let Some(m) = self.cached(id) {
            return m;
        }
        let read = async {
            let kv = self.js.get_key_value(BUCKET_JOBS).await.ok()?;
            let entry = tokio::time::timeout(KV_TIMEOUT, kv.get(id)).await.ok()?;
            entry.ok()
        };
        // A broker that does not answer: no answer, and nothing cached.
        let bytes = read.await?;
        let m = bytes.and_then(|b| decode(id, &b));
        self.put(id, m.clone());
        m
    }

    /// [`Self::get`] from a blocking thread.
    pub fn get_blocking(
        &self,
        runtime: &tokio::runtime::Handle,
        id: &str,
    ) -> Option<Arc<Manifest>> {
        runtime.block_on(self.get(id))
    }

    /// Every cached manifest, by id.
    pub fn all(&self) -> Vec<Arc<Manifest>> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<Arc<Manifest>> = entries.values().filter_map(|(_, m)| m.clone()).collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Every cached manifest with explode specs (the watch has seen every
    /// registered one).
    pub fn with_explode(&self) -> Vec<Arc<Manifest>> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<Arc<Manifest>> = entries
            .values()
            .filter_map(|(_, m)| m.clone())
            .filter(|m| {
                m.inventory
                    .as_ref()
                    .is_some_and(|h| h.explode.as_ref().is_some_and(|e| !e.is_empty()))
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Follows the bucket until stopped: the current values first, then
    /// every change; re-subscribes after a lost connection.
    pub async fn watch(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                r = self.follow() => {
                    self.live.store(false, Ordering::Release);
                    if let Err(e) = r {
                        tracing::warn!(error = %e, "watch of the jobs bucket ended; retrying");
                    }
                }
                _ = stop.wait_for(|s| *s) => return,
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    async fn follow(&self) -> anyhow::Result<()> {
        let kv = self.js.get_key_value(BUCKET_JOBS).await?;
        let mut updates = kv.watch_with_history(">").await?;
        // Entries cached before this point may have missed changes.
        self.entries
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        let mut pending = kv.status().await?.values();
        if pending == 0 {
            self.live.store(true, Ordering::Release);
        }
        while let Some(entry) = updates.next().await {
            let entry = entry?;
            match entry.operation {
                Operation::Put => {
                    let m = decode(&entry.key, &entry.value);
                    self.put(&entry.key, m);
                }
                Operation::Delete | Operation::Purge => self.put(&entry.key, None),
            }
            if !self.live.load(Ordering::Acquire) {
                pending = pending.saturating_sub(1);
                if pending == 0 || entry.delta == 0 {
                    self.live.store(true, Ordering::Release);
                    tracing::debug!("jobs bucket mirrored; following changes");
                }
            }
        }
        anyhow::bail!("watch stream closed")
    }
}

fn decode(id: &str, bytes: &[u8]) -> Option<Arc<Manifest>> {
    match serde_json::from_slice::<Manifest>(bytes) {
        Ok(m) => Some(Arc::new(m)),
        Err(e) => {
            tracing::warn!(manifest_id = id, error = %e, "manifest in KV does not decode");
            None
        }
    }
}

/// The explode specs of a manifest as checked layouts (a spec that does
/// not check is named in the error).
pub fn layouts(m: &Manifest) -> Vec<Result<Layout, String>> {
    let Some(specs) = m.inventory.as_ref().and_then(|h| h.explode.as_ref()) else {
        return Vec::new();
    };
    specs
        .iter()
        .map(|s| {
            let mut columns = Vec::with_capacity(s.columns.len());
            for c in &s.columns {
                let kind = Kind::parse(c.kind.as_deref())
                    .map_err(|e| format!("explode {:?}, column {:?}: {e}", s.field, c.field))?;
                columns.push((c.field.clone(), kind));
            }
            let layout = Layout {
                manifest_id: m.id.clone(),
                field: s.field.clone(),
                table: s.table.clone(),
                columns,
                primary_key: s.primary_key.clone(),
                track_history: s.track_history,
            };
            layout.check()?;
            Ok(layout)
        })
        .collect()
}
