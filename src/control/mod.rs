//! The control plane over the broker: jobs, schedules, the freeze and the
//! exec pipeline. The state lives where the reference keeps it — the
//! broker's KV buckets (`jobs`, `schedules`, `script_current`,
//! `script_status`, `fleet_config`, …) — so the reference backend, the
//! CLI and the agents all see the same thing; redb holds only what we
//! project (executions, results and their per-job indexes) and durable
//! local work (rollout waves still waiting). Both the HTTP API and the
//! scheduler drive the fleet through [`Control`], so an exec from either
//! follows one pipeline.

pub mod exec;
pub mod groups;
pub mod manifests;
pub mod mirror;
pub mod notify;
pub mod roster;
pub mod signing;

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use kanade_storage::RelationalStore;
use serde::de::DeserializeOwned;

/// What the control plane can fail with; the API maps each to a status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The thing asked for does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// The caller's input is unusable; `field` names what (400).
    #[error("invalid `{field}`: {message}")]
    Invalid { field: String, message: String },
    /// The request contradicts the current state (409).
    #[error("{0}")]
    Conflict(String),
    /// A bucket or store the request needs is missing (503).
    #[error("{0}")]
    Unavailable(String),
    /// The broker refused or failed an operation (502).
    #[error("{0}")]
    Broker(String),
    #[error(transparent)]
    Storage(#[from] kanade_storage::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// How long one broker round trip may take before we give up on it.
const BROKER_TIMEOUT: Duration = Duration::from_secs(5);

/// Handle on the broker and the store for control-plane operations.
#[derive(Clone, Debug)]
pub struct Control {
    pub nats: async_nats::Client,
    pub js: jetstream::Context,
    pub store: RelationalStore,
    /// Signs every command, kill and notification we publish.
    pub signer: std::sync::Arc<signing::CommandSigner>,
    /// The buckets listed, each mirrored by one watch.
    pub mirrors: mirror::Mirrors,
}

impl Control {
    pub fn new(
        nats: async_nats::Client,
        store: RelationalStore,
        signer: std::sync::Arc<signing::CommandSigner>,
    ) -> Self {
        let js = jetstream::new(nats.clone());
        Self {
            nats,
            js,
            store,
            signer,
            mirrors: mirror::Mirrors::default(),
        }
    }

    /// Opens a KV bucket; a missing one is [`Error::Unavailable`].
    pub async fn kv(&self, bucket: &str) -> Result<kv::Store> {
        match tokio::time::timeout(BROKER_TIMEOUT, self.js.get_key_value(bucket)).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(Error::Unavailable(format!(
                "KV bucket `{bucket}` unavailable: {e}"
            ))),
            Err(_) => Err(Error::Unavailable(format!(
                "KV bucket `{bucket}`: the broker did not answer"
            ))),
        }
    }

    /// The current entry of `key` (a deleted key is `None`).
    pub async fn entry(&self, store: &kv::Store, key: &str) -> Result<Option<kv::Entry>> {
        let entry = tokio::time::timeout(BROKER_TIMEOUT, store.entry(key))
            .await
            .map_err(|_| Error::Broker(format!("KV get `{key}`: timed out")))?
            .map_err(|e| Error::Broker(format!("KV get `{key}`: {e}")))?;
        Ok(entry.filter(|e| e.operation == kv::Operation::Put))
    }

    /// `key` of `bucket` decoded as JSON; `None` when absent. A stored
    /// value that does not decode is an error naming the key.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<T>> {
        let store = self.kv(bucket).await?;
        match self.entry(&store, key).await? {
            None => Ok(None),
            Some(e) => serde_json::from_slice(&e.value).map(Some).map_err(|err| {
                Error::Broker(format!("stored `{bucket}/{key}` does not decode: {err}"))
            }),
        }
    }

    /// `key` of `bucket` as text; `None` when absent or not UTF-8.
    pub async fn get_text(&self, bucket: &str, key: &str) -> Result<Option<String>> {
        let store = self.kv(bucket).await?;
        Ok(self
            .entry(&store, key)
            .await?
            .and_then(|e| String::from_utf8(e.value.to_vec()).ok()))
    }

    /// The bucket and its live keys, sorted (`None` when the bucket is
    /// missing).
    async fn keys(&self, bucket: &str) -> Result<Option<(kv::Store, Vec<String>)>> {
        let Ok(store) = self.kv(bucket).await else {
            return Ok(None);
        };
        let mut keys: Vec<String> = match store.keys().await {
            Ok(stream) => stream.filter_map(|k| async move { k.ok() }).collect().await,
            Err(e) => return Err(Error::Broker(format!("KV keys of `{bucket}`: {e}"))),
        };
        keys.sort();
        Ok(Some((store, keys)))
    }

    /// Every live value of `bucket` decoded as `T`, sorted by key; values
    /// that do not decode are logged and left out. A missing bucket is
    /// empty.
    pub async fn list_json<T: DeserializeOwned>(&self, bucket: &str) -> Result<Vec<(String, T)>> {
        let mut out = Vec::new();
        for (key, value) in self.list_raw(bucket).await? {
            match serde_json::from_slice(&value) {
                Ok(v) => out.push((key, v)),
                Err(e) => {
                    tracing::warn!(bucket, %key, error = %e, "stored value does not decode; left out")
                }
            }
        }
        Ok(out)
    }

    /// Every live value of `bucket` as text (a missing bucket is empty).
    pub async fn list_text(
        &self,
        bucket: &str,
    ) -> Result<std::collections::BTreeMap<String, String>> {
        Ok(self
            .list_raw(bucket)
            .await?
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect())
    }

    /// Every live entry of `bucket`, sorted by key: from its mirror (no
    /// consumer per call), or, when the mirror cannot answer yet, read
    /// from the bucket. A missing bucket is empty.
    async fn list_raw(&self, bucket: &str) -> Result<Vec<(String, bytes::Bytes)>> {
        if let Some(entries) = self.mirrors.snapshot(&self.js, bucket).await {
            return Ok(entries);
        }
        let Some((store, keys)) = self.keys(bucket).await? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(e) = self.entry(&store, &key).await? {
                out.push((key, e.value));
            }
        }
        Ok(out)
    }

    /// Writes `value` under `key`.
    pub async fn put(
        &self,
        bucket: &str,
        key: &str,
        value: impl Into<bytes::Bytes>,
    ) -> Result<u64> {
        let store = self.kv(bucket).await?;
        self.put_in(&store, bucket, key, value).await
    }

    /// [`Self::put`] into an already opened `store` of `bucket`.
    pub async fn put_in(
        &self,
        store: &kv::Store,
        bucket: &str,
        key: &str,
        value: impl Into<bytes::Bytes>,
    ) -> Result<u64> {
        tokio::time::timeout(BROKER_TIMEOUT, store.put(key, value.into()))
            .await
            .map_err(|_| Error::Broker(format!("KV put `{bucket}/{key}`: timed out")))?
            .map_err(|e| Error::Broker(format!("KV put `{bucket}/{key}`: {e}")))
    }

    /// Deletes `key` (absent is fine).
    pub async fn delete(&self, bucket: &str, key: &str) -> Result<()> {
        let store = self.kv(bucket).await?;
        self.delete_in(&store, bucket, key).await
    }

    /// [`Self::delete`] in an already opened `store` of `bucket`.
    pub async fn delete_in(&self, store: &kv::Store, bucket: &str, key: &str) -> Result<()> {
        tokio::time::timeout(BROKER_TIMEOUT, store.delete(key))
            .await
            .map_err(|_| Error::Broker(format!("KV delete `{bucket}/{key}`: timed out")))?
            .map_err(|e| Error::Broker(format!("KV delete `{bucket}/{key}`: {e}")))
    }

    /// `key` of `bucket` decoded as JSON with its revision (0 when
    /// absent), for a later [`Control::put_if`].
    pub async fn get_json_rev<T: DeserializeOwned>(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<(Option<T>, u64)> {
        let store = self.kv(bucket).await?;
        match self.entry(&store, key).await? {
            None => Ok((None, 0)),
            Some(e) => serde_json::from_slice(&e.value)
                .map(|v| (Some(v), e.revision))
                .map_err(|err| {
                    Error::Broker(format!("stored `{bucket}/{key}` does not decode: {err}"))
                }),
        }
    }

    /// Writes `value` under `key`; with `expected`, only if the key is
    /// still at that revision (0: still absent), else [`Error::Conflict`]
    /// naming the current revision. Returns the new revision.
    pub async fn put_if(
        &self,
        bucket: &str,
        key: &str,
        value: impl Into<bytes::Bytes>,
        expected: Option<u64>,
    ) -> Result<u64> {
        let Some(expected) = expected else {
            return self.put(bucket, key, value).await;
        };
        let store = self.kv(bucket).await?;
        let value = value.into();
        let written = if expected == 0 {
            store.create(key, value).await.map_err(|e| e.to_string())
        } else {
            store
                .update(key, value, expected)
                .await
                .map_err(|e| e.to_string())
        };
        match written {
            Ok(r) => Ok(r),
            Err(e) => Err(self.conflict(&store, bucket, key, expected, &e).await),
        }
    }

    /// Deletes `key`; with `expected`, only if it is still at that
    /// revision.
    pub async fn delete_if(&self, bucket: &str, key: &str, expected: Option<u64>) -> Result<()> {
        let Some(expected) = expected else {
            return self.delete(bucket, key).await;
        };
        let store = self.kv(bucket).await?;
        match store.delete_expect_revision(key, Some(expected)).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self
                .conflict(&store, bucket, key, expected, &e.to_string())
                .await),
        }
    }

    /// The error of a lost compare-and-set: a conflict naming the
    /// revision the key is at now (or the broker's error if it is not
    /// one).
    async fn conflict(
        &self,
        store: &kv::Store,
        bucket: &str,
        key: &str,
        expected: u64,
        cause: &str,
    ) -> Error {
        let current = match store.entry(key).await {
            Ok(Some(e)) if e.operation == kv::Operation::Put => e.revision,
            Ok(_) => 0,
            Err(_) => return Error::Broker(format!("KV write `{bucket}/{key}`: {cause}")),
        };
        if current == expected {
            return Error::Broker(format!("KV write `{bucket}/{key}`: {cause}"));
        }
        Error::Conflict(format!(
            "`{bucket}/{key}` changed since revision {expected} (it is at revision {current}); reload and retry"
        ))
    }

    /// Publishes on core NATS (the EXEC stream captures `commands.>`),
    /// signed with the backend's command key when it has one: this is the
    /// path of every command and kill we send to agents.
    pub async fn publish(&self, subject: String, payload: impl Into<bytes::Bytes>) -> Result<()> {
        let payload = payload.into();
        let sent = match self.signer.headers(&payload) {
            Some(headers) => {
                self.nats
                    .publish_with_headers(subject.clone(), headers, payload)
                    .await
            }
            None => self.nats.publish(subject.clone(), payload).await,
        };
        sent.map_err(|e| Error::Broker(format!("publish to {subject}: {e}")))
    }

    /// Flushes what was published (best effort: the broker may be away).
    pub async fn flush(&self) {
        let _ = tokio::time::timeout(BROKER_TIMEOUT, self.nats.flush()).await;
    }
}

/// Checks an id that becomes a KV key (job and schedule ids): what the
/// broker accepts as a key, and short enough for a subject line.
pub fn check_key(field: &str, id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 256
        && !id.starts_with('.')
        && !id.ends_with('.')
        && !id.contains("..")
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '=' | '/' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!(
                "{} must be 1-256 characters of A-Z a-z 0-9 - _ = / . without an empty `.`-separated part",
                abbreviated(id)
            ),
        ))
    }
}

/// `s` quoted, cut to its first 64 characters (naming its length) so a
/// hostile 60 KB value never lands whole in an error or a log line.
pub fn abbreviated(s: &str) -> String {
    const SHOWN: usize = 64;
    match s.char_indices().nth(SHOWN) {
        None => format!("{s:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes)", &s[..cut], s.len()),
    }
}

/// Checks a name that becomes one token of a subject (groups, PCs).
pub fn check_token(field: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '.' | '*' | '>'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!(
                "{} must be 1-128 printable ASCII characters without `.`, `*`, `>` or spaces",
                abbreviated(name)
            ),
        ))
    }
}

/// Parses a humantime duration of a caller-supplied field.
pub fn parse_duration(field: &str, s: &str) -> Result<Duration> {
    humantime::parse_duration(s.trim())
        .map_err(|e| Error::invalid(field, format!("{s:?} is not a duration: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_tokens_are_checked_before_they_reach_the_broker() {
        for good in ["inventory-hw", "a_b=c/d.e", "X"] {
            check_key("id", good).unwrap();
        }
        for bad in ["", ".a", "a.", "a b", "ü", &"x".repeat(257)] {
            let err = check_key("id", bad).unwrap_err().to_string();
            assert!(err.contains("`id`"), "{err}");
        }
        for good in ["PC-01", "canary", "a@b"] {
            check_token("target.pcs", good).unwrap();
        }
        for bad in ["", "a.b", "a b", "*", ">", &"p".repeat(129)] {
            assert!(check_token("target.pcs", bad).is_err(), "{bad:?}");
        }
    }
}
