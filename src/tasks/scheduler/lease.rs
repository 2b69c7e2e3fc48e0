//! The scheduler's leader lease: one key of [`STATE_BUCKET`] holding who
//! leads and until when, written only with a revision compare-and-set, so
//! two backends can never both believe they lead past one renewal. The
//! holder renews every third of the TTL; a holder that stops renewing
//! (crashed, partitioned) is replaced once its lease has expired.

use std::time::Duration;

use async_nats::jetstream::kv;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::STATE_BUCKET;
use crate::control::Control;

const KEY: &str = "leader";

#[derive(Debug, Serialize, Deserialize)]
struct Holder {
    holder: String,
    expires_at: DateTime<Utc>,
}

/// This backend's claim on the scheduler.
pub struct Lease {
    control: Control,
    ttl: Duration,
    me: String,
    /// Revision of our last successful write; 0 when not leading.
    revision: u64,
    renewed: Option<tokio::time::Instant>,
    /// The other holder last logged, so a follower says who leads once.
    seen_holder: Option<String>,
    /// When a failure to reach the lease was last logged.
    warned: Option<tokio::time::Instant>,
}

/// What a try at the lease found.
enum Attempt {
    /// Ours, at this revision.
    Held(u64),
    /// Another backend's, unexpired.
    Other(String),
    /// Someone wrote between our read and our write (or after our last
    /// renewal: the fence).
    Lost,
}

/// How often a backend that cannot reach the lease says so.
const WARN_EVERY: Duration = Duration::from_secs(60);

impl Lease {
    pub fn new(control: Control, ttl: Duration) -> Self {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "backend".into());
        Self {
            control,
            ttl,
            me: format!("{host}-{}", uuid::Uuid::new_v4()),
            revision: 0,
            renewed: None,
            seen_holder: None,
            warned: None,
        }
    }

    /// Whether we lead now: renews our lease when a third of it is used,
    /// takes an absent or expired one, and otherwise follows.
    pub async fn hold(&mut self) -> bool {
        if self.revision != 0 && self.renewed.is_some_and(|t| t.elapsed() < self.ttl / 3) {
            return true;
        }
        match self.try_write().await {
            Ok(Attempt::Held(revision)) => {
                if self.revision == 0 {
                    tracing::info!(holder = %self.me, "this backend now leads the scheduler");
                }
                self.revision = revision;
                self.renewed = Some(tokio::time::Instant::now());
                self.seen_holder = None;
                true
            }
            Ok(Attempt::Other(holder)) => {
                self.step_down("another backend holds the lease");
                if self.seen_holder.as_deref() != Some(holder.as_str()) {
                    tracing::info!(leader = %holder, "another backend leads the scheduler; following");
                    self.seen_holder = Some(holder);
                }
                false
            }
            Ok(Attempt::Lost) => {
                self.step_down("another backend wrote the lease first");
                false
            }
            Err(e) => {
                self.step_down(&e);
                if self.warned.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                    tracing::warn!(error = %e, "cannot reach the scheduler lease: this backend fires nothing until it can");
                    self.warned = Some(tokio::time::Instant::now());
                }
                false
            }
        }
    }

    fn step_down(&mut self, why: &str) {
        if self.revision != 0 {
            tracing::warn!(holder = %self.me, why, "this backend no longer leads the scheduler");
        }
        self.revision = 0;
        self.renewed = None;
    }

    async fn try_write(&self) -> Result<Attempt, String> {
        let store = bucket(&self.control).await?;
        let now = Utc::now();
        let expires_at = chrono::Duration::from_std(self.ttl)
            .ok()
            .and_then(|ttl| now.checked_add_signed(ttl))
            .ok_or_else(|| format!("lease_ttl_secs {:?} is out of range", self.ttl))?;
        let mine = Holder {
            holder: self.me.clone(),
            expires_at,
        };
        let value: bytes::Bytes = serde_json::to_vec(&mine).map_err(|e| e.to_string())?.into();
        // Leading: renew only over our own last write. If anyone wrote
        // since (our lease expired and was taken), this fails: fenced.
        if self.revision != 0 {
            return Ok(match store.update(KEY, value, self.revision).await {
                Ok(r) => Attempt::Held(r),
                Err(_) => Attempt::Lost,
            });
        }
        let entry = self
            .control
            .entry(&store, KEY)
            .await
            .map_err(|e| e.to_string())?;
        let written = match entry {
            None => store.create(KEY, value).await.map_err(|e| e.to_string()),
            Some(e) => {
                let holder = serde_json::from_slice::<Holder>(&e.value).ok();
                if let Some(h) = holder.filter(|h| h.holder != self.me && h.expires_at > now) {
                    return Ok(Attempt::Other(h.holder));
                }
                store
                    .update(KEY, value, e.revision)
                    .await
                    .map_err(|e| e.to_string())
            }
        };
        // A lost compare-and-set means another backend wrote first.
        Ok(written.map_or(Attempt::Lost, Attempt::Held))
    }

    /// Gives the lease up (graceful shutdown), so another backend takes
    /// over at once instead of after the TTL.
    pub async fn release(&mut self) {
        if self.revision == 0 {
            return;
        }
        if let Ok(store) = bucket(&self.control).await {
            let gone = Holder {
                holder: String::new(),
                expires_at: DateTime::<Utc>::UNIX_EPOCH,
            };
            if let Ok(v) = serde_json::to_vec(&gone) {
                let _ = store.update(KEY, v.into(), self.revision).await;
            }
        }
        self.revision = 0;
        tracing::info!("scheduler lease released");
    }
}

/// [`STATE_BUCKET`], created when missing.
pub(super) async fn bucket(control: &Control) -> Result<kv::Store, String> {
    if let Ok(s) = control.kv(STATE_BUCKET).await {
        return Ok(s);
    }
    let create = control.js.create_key_value(kv::Config {
        bucket: STATE_BUCKET.into(),
        history: 1,
        description: "kanade-backend (columnar) scheduler lease and calendar cursors".into(),
        ..Default::default()
    });
    tokio::time::timeout(Duration::from_secs(5), create)
        .await
        .map_err(|_| format!("create KV bucket {STATE_BUCKET}: the broker did not answer"))?
        .map_err(|e| format!("create KV bucket {STATE_BUCKET}: {e}"))
}
