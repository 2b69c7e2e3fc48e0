//! KV buckets as the API lists them: each bucket listed is mirrored by one
//! watch (started on its first listing, kept for the process), so a list
//! opens no consumer of its own and a burst of readers is never refused
//! for the consumers other readers hold.
//!
//! A list answers from the mirror once it has applied everything the
//! bucket's stream held when the list began (one stream-info request, no
//! consumer), so a list right after a write sees the write. A mirror that
//! cannot catch up within [`CATCH_UP`] (its watch down, a broker that
//! does not answer) is not trusted: the caller reads the bucket directly,
//! as before mirrors existed.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::watch;

/// How long a list waits for its mirror to catch up.
const CATCH_UP: Duration = Duration::from_secs(2);
/// Pause before a watch that ended is started again.
const RESTART: Duration = Duration::from_secs(1);

/// One bucket's current entries and the last stream sequence applied.
#[derive(Debug)]
struct Mirror {
    entries: RwLock<BTreeMap<String, Bytes>>,
    /// The last stream sequence applied; reset to 0 while re-syncing.
    applied: watch::Sender<u64>,
}

/// The mirrors of the buckets listed so far.
#[derive(Debug, Default, Clone)]
pub struct Mirrors {
    by_bucket: Arc<Mutex<HashMap<String, Arc<Mirror>>>>,
}

impl Mirrors {
    /// Every live entry of `bucket`, sorted by key, as of now: `None` when
    /// the mirror cannot answer for it (the caller reads the bucket).
    pub async fn snapshot(
        &self,
        js: &jetstream::Context,
        bucket: &str,
    ) -> Option<Vec<(String, Bytes)>> {
        let mirror = self.mirror(js, bucket);
        let answer = async {
            // `get_stream` is itself the stream-info request.
            let stream = js.get_stream(format!("KV_{bucket}")).await.ok()?;
            let last = stream.cached_info().state.last_sequence;
            let mut applied = mirror.applied.subscribe();
            applied.wait_for(|seen| *seen >= last).await.ok()?;
            let entries = mirror.entries.read().unwrap_or_else(|p| p.into_inner());
            Some(
                entries
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            )
        };
        tokio::time::timeout(CATCH_UP, answer).await.ok().flatten()
    }

    /// The mirror of `bucket`, started on first use.
    fn mirror(&self, js: &jetstream::Context, bucket: &str) -> Arc<Mirror> {
        let mut by_bucket = self.by_bucket.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = by_bucket.get(bucket) {
            return Arc::clone(m);
        }
        let mirror = Arc::new(Mirror {
            entries: RwLock::new(BTreeMap::new()),
            applied: watch::channel(0).0,
        });
        by_bucket.insert(bucket.to_string(), Arc::clone(&mirror));
        tokio::spawn(follow(js.clone(), bucket.to_string(), Arc::clone(&mirror)));
        mirror
    }
}

/// Keeps `mirror` in step with `bucket` for the life of the process.
async fn follow(js: jetstream::Context, bucket: String, mirror: Arc<Mirror>) {
    loop {
        if let Err(e) = watch_once(&js, &bucket, &mirror).await {
            tracing::debug!(%bucket, error = %e, "KV mirror watch ended; restarting");
        }
        // Until the next watch has replayed the bucket, nothing is
        // trusted: lists read the bucket directly.
        mirror.applied.send_replace(0);
        tokio::time::sleep(RESTART).await;
    }
}

/// One watch: the bucket's latest entry per key, then every change.
async fn watch_once(js: &jetstream::Context, bucket: &str, mirror: &Mirror) -> Result<(), String> {
    let store = js.get_key_value(bucket).await.map_err(|e| e.to_string())?;
    // What the stream held before the watch: the replay covers all of
    // it (the latest entry of every key), even where the stream's last
    // message itself is gone (expired, purged).
    let before = js
        .get_stream(format!("KV_{bucket}"))
        .await
        .map_err(|e| e.to_string())?
        .cached_info()
        .state
        .clone();
    let mut updates = store
        .watch_with_history(">")
        .await
        .map_err(|e| e.to_string())?;
    let mut fresh = BTreeMap::new();
    let mut synced = false;
    if before.messages == 0 {
        // Nothing to replay.
        *mirror.entries.write().unwrap_or_else(|p| p.into_inner()) = BTreeMap::new();
        mirror.applied.send_replace(before.last_sequence);
        synced = true;
    }
    while let Some(entry) = updates.next().await {
        let entry = entry.map_err(|e| e.to_string())?;
        if synced {
            apply(
                &mut mirror.entries.write().unwrap_or_else(|p| p.into_inner()),
                &entry,
            );
            mirror.applied.send_replace(entry.revision);
        } else {
            apply(&mut fresh, &entry);
            // `delta` 0: the last entry of the replay.
            if entry.delta == 0 {
                *mirror.entries.write().unwrap_or_else(|p| p.into_inner()) =
                    std::mem::take(&mut fresh);
                synced = true;
                mirror
                    .applied
                    .send_replace(entry.revision.max(before.last_sequence));
            }
        }
    }
    Err("the watch ended".into())
}

fn apply(entries: &mut BTreeMap<String, Bytes>, entry: &kv::Entry) {
    match entry.operation {
        kv::Operation::Put => {
            entries.insert(entry.key.clone(), entry.value.clone());
        }
        kv::Operation::Delete | kv::Operation::Purge => {
            entries.remove(&entry.key);
        }
    }
}
