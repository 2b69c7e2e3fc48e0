//! The broker's half of a backup: the KV buckets and object stores that
//! hold the control plane (jobs, schedules, config, groups, views,
//! settings, packages, scripts, agent releases), written under `broker/`
//! of the backup beside the data directory's copy.
//!
//! A bucket is one JSON line per key (`{"key", "value"}`, the value in
//! base64) at its latest revision; an object store is one file per object
//! with its name, description, metadata, size and SHA-256 in the manifest.
//! Each keeps the limits of its stream (description, age, size, history,
//! value size) so a restore makes it as it was. Agent-owned state (who is
//! online, script run status), results' output and collected files are not
//! part of it: agents report the first again, the others are results.
//!
//! `restore` writes into a broker that holds none of it (a bucket or store
//! with any entry is refused, naming it, before anything is written);
//! `verify` checks every file against the manifest.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use async_nats::jetstream::{self, kv, object_store};
use base64::Engine;
use futures::{StreamExt, TryStreamExt};
use kanade_shared::kv as names;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The folder of the broker's half inside a backup.
pub const DIR: &str = "broker";

/// The KV buckets a backup holds.
pub const BUCKETS: [&str; 18] = [
    names::BUCKET_JOBS,
    names::BUCKET_JOBS_YAML,
    names::BUCKET_SCHEDULES,
    names::BUCKET_SCHEDULES_YAML,
    names::BUCKET_AGENT_CONFIG,
    names::BUCKET_FLEET_CONFIG,
    names::BUCKET_AGENT_GROUPS,
    names::BUCKET_AGENT_GROUPS_DERIVED,
    names::BUCKET_AGENT_META,
    names::BUCKET_GROUP_CONTACTS,
    names::BUCKET_GROUP_DEFS,
    names::BUCKET_GROUP_DEFS_YAML,
    names::BUCKET_VIEWS,
    names::BUCKET_VIEWS_YAML,
    names::BUCKET_SERVER_SETTINGS,
    names::BUCKET_NOTIFICATIONS_READ,
    names::BUCKET_SCRIPT_CURRENT,
    names::BUCKET_SCHEDULER_DISPATCH,
];

/// The object stores a backup holds.
pub const OBJECT_STORES: [&str; 3] = [
    names::OBJECT_AGENT_RELEASES,
    names::OBJECT_APP_PACKAGES,
    names::OBJECT_SCRIPTS,
];

/// What the broker's half holds.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct BrokerManifest {
    pub buckets: Vec<BucketEntry>,
    pub object_stores: Vec<StoreEntry>,
}

/// A stream's limits, as made again on restore.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Limits {
    pub description: Option<String>,
    pub max_age_secs: u64,
    pub max_bytes: i64,
    /// Values kept per key (KV); 1 for object stores.
    pub history: i64,
    pub max_value_size: i32,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct BucketEntry {
    pub bucket: String,
    pub limits: Limits,
    pub keys: u64,
    /// Relative to the backup.
    pub file: String,
    pub sha256: String,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct StoreEntry {
    pub store: String,
    pub limits: Limits,
    pub objects: Vec<ObjectEntry>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct ObjectEntry {
    pub name: String,
    pub description: Option<String>,
    #[serde(default)]
    pub metadata: HashMap<String, String>,
    /// Relative to the backup.
    pub file: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Serialize, Deserialize)]
struct Line {
    key: String,
    value: String,
}

fn hex(digest: impl AsRef<[u8]>) -> String {
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

async fn limits(js: &jetstream::Context, stream: &str) -> Result<Limits> {
    let mut s = js
        .get_stream(stream)
        .await
        .with_context(|| format!("stream {stream}"))?;
    let c = &s
        .info()
        .await
        .with_context(|| format!("stream {stream}"))?
        .config;
    Ok(Limits {
        description: c.description.clone(),
        max_age_secs: c.max_age.as_secs(),
        max_bytes: c.max_bytes,
        history: c.max_messages_per_subject,
        max_value_size: c.max_message_size,
    })
}

/// Writes the buckets and stores that exist into `dest/broker`.
pub async fn export(js: &jetstream::Context, dest: &Path) -> Result<BrokerManifest> {
    let streams: HashSet<String> = js
        .stream_names()
        .try_collect()
        .await
        .context("list the broker's streams")?;
    let root = dest.join(DIR);
    std::fs::create_dir_all(root.join("kv"))
        .with_context(|| format!("create {}", root.display()))?;
    let mut buckets = Vec::new();
    for bucket in BUCKETS {
        if !streams.contains(&format!("KV_{bucket}")) {
            continue;
        }
        let limits = limits(js, &format!("KV_{bucket}")).await?;
        let store = js
            .get_key_value(bucket)
            .await
            .with_context(|| format!("KV bucket {bucket}"))?;
        let mut keys: Vec<String> = store
            .keys()
            .await
            .with_context(|| format!("keys of {bucket}"))?
            .try_collect()
            .await
            .with_context(|| format!("keys of {bucket}"))?;
        keys.sort();
        let file = format!("{DIR}/kv/{bucket}.jsonl");
        let mut text = Vec::new();
        let mut n = 0;
        for key in keys {
            // A key deleted since it was listed is left out.
            let Some(value) = store
                .get(&key)
                .await
                .with_context(|| format!("{bucket}/{key}"))?
            else {
                continue;
            };
            let line = Line {
                key,
                value: base64::engine::general_purpose::STANDARD.encode(&value),
            };
            serde_json::to_writer(&mut text, &line)?;
            text.push(b'\n');
            n += 1;
        }
        write_synced(&dest.join(&file), &text)?;
        buckets.push(BucketEntry {
            bucket: bucket.to_string(),
            limits,
            keys: n,
            file,
            sha256: hex(Sha256::digest(&text)),
        });
    }
    let mut object_stores = Vec::new();
    for store_name in OBJECT_STORES {
        if !streams.contains(&format!("OBJ_{store_name}")) {
            continue;
        }
        let limits = limits(js, &format!("OBJ_{store_name}")).await?;
        let store = js
            .get_object_store(store_name)
            .await
            .with_context(|| format!("object store {store_name}"))?;
        let mut infos: Vec<object_store::ObjectInfo> = store
            .list()
            .await
            .with_context(|| format!("objects of {store_name}"))?
            .try_collect()
            .await
            .with_context(|| format!("objects of {store_name}"))?;
        infos.retain(|i| !i.deleted);
        infos.sort_by(|a, b| a.name.cmp(&b.name));
        let dir = root.join("objects").join(store_name);
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let mut objects = Vec::new();
        for (i, info) in infos.into_iter().enumerate() {
            let file = format!("{DIR}/objects/{store_name}/{i}.bin");
            let mut object = store
                .get(&info.name)
                .await
                .with_context(|| format!("{store_name}/{}", info.name))?;
            let path = dest.join(&file);
            let mut out = tokio::fs::File::create(&path)
                .await
                .with_context(|| format!("create {}", path.display()))?;
            let (mut hasher, mut size, mut buf) = (Sha256::new(), 0u64, vec![0u8; 64 * 1024]);
            loop {
                let n = object
                    .read(&mut buf)
                    .await
                    .with_context(|| format!("read {store_name}/{}", info.name))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                out.write_all(&buf[..n])
                    .await
                    .with_context(|| format!("write {}", path.display()))?;
                size += n as u64;
            }
            out.sync_all()
                .await
                .with_context(|| format!("sync {}", path.display()))?;
            if size != info.size as u64 {
                bail!(
                    "{store_name}/{}: read {size} bytes, the store says {}",
                    info.name,
                    info.size
                );
            }
            objects.push(ObjectEntry {
                name: info.name,
                description: info.description,
                metadata: info.metadata,
                file,
                size,
                sha256: hex(hasher.finalize()),
            });
        }
        object_stores.push(StoreEntry {
            store: store_name.to_string(),
            limits,
            objects,
        });
    }
    Ok(BrokerManifest {
        buckets,
        object_stores,
    })
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f =
        std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("write {}", path.display()))
}

/// A bucket's lines, checked against its entry.
fn read_bucket(dir: &Path, b: &BucketEntry) -> Result<Vec<(String, Vec<u8>)>> {
    let path = dir.join(&b.file);
    let bytes = std::fs::read(&path).with_context(|| format!("{} missing", path.display()))?;
    let sha = hex(Sha256::digest(&bytes));
    if sha != b.sha256 {
        bail!(
            "{}: SHA-256 {sha}, the manifest says {}",
            path.display(),
            b.sha256
        );
    }
    let mut out = Vec::new();
    for (i, line) in bytes.lines().enumerate() {
        let line = line?;
        let parsed: Line = serde_json::from_str(&line)
            .with_context(|| format!("{} line {}", path.display(), i + 1))?;
        let value = base64::engine::general_purpose::STANDARD
            .decode(parsed.value)
            .with_context(|| format!("{} line {}", path.display(), i + 1))?;
        out.push((parsed.key, value));
    }
    if out.len() as u64 != b.keys {
        bail!(
            "{}: {} keys, the manifest says {}",
            path.display(),
            out.len(),
            b.keys
        );
    }
    Ok(out)
}

/// An object's bytes, checked against its entry.
fn read_object(dir: &Path, store: &str, o: &ObjectEntry) -> Result<Vec<u8>> {
    let path = dir.join(&o.file);
    let bytes = std::fs::read(&path)
        .with_context(|| format!("{store}/{}: {} missing", o.name, path.display()))?;
    let sha = hex(Sha256::digest(&bytes));
    if bytes.len() as u64 != o.size || sha != o.sha256 {
        bail!(
            "{store}/{}: {} holds {} bytes (SHA-256 {sha}), the manifest says {} ({})",
            o.name,
            path.display(),
            bytes.len(),
            o.size,
            o.sha256
        );
    }
    Ok(bytes)
}

/// Keys per bucket and objects per store, every file checked.
pub fn verify(dir: &Path, m: &BrokerManifest) -> Result<BTreeMap<String, u64>> {
    let mut counts = BTreeMap::new();
    for b in &m.buckets {
        let n = read_bucket(dir, b)?.len() as u64;
        counts.insert(format!("kv/{}", b.bucket), n);
    }
    for s in &m.object_stores {
        for o in &s.objects {
            read_object(dir, &s.store, o)?;
        }
        counts.insert(format!("objects/{}", s.store), s.objects.len() as u64);
    }
    Ok(counts)
}

/// Puts the buckets and stores of a backup into a broker that holds none
/// of their entries; returns what was written.
pub async fn restore(
    js: &jetstream::Context,
    dir: &Path,
    m: &BrokerManifest,
) -> Result<BTreeMap<String, u64>> {
    // Every file is checked before anything is written.
    let counts = verify(dir, m)?;
    let mut busy = Vec::new();
    for b in &m.buckets {
        if let Ok(store) = js.get_key_value(&b.bucket).await {
            let mut keys = store
                .keys()
                .await
                .with_context(|| format!("keys of {}", b.bucket))?;
            if keys.next().await.is_some() {
                busy.push(format!("KV bucket {}", b.bucket));
            }
        }
    }
    for s in &m.object_stores {
        if let Ok(store) = js.get_object_store(&s.store).await {
            let mut list = store
                .list()
                .await
                .with_context(|| format!("objects of {}", s.store))?;
            while let Some(info) = list.next().await {
                if !info
                    .with_context(|| format!("objects of {}", s.store))?
                    .deleted
                {
                    busy.push(format!("object store {}", s.store));
                    break;
                }
            }
        }
    }
    if !busy.is_empty() {
        bail!(
            "the broker already holds {}: a restore goes into an empty broker, nothing was written",
            busy.join(", ")
        );
    }
    for b in &m.buckets {
        let store = match js.get_key_value(&b.bucket).await {
            Ok(store) => store,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: b.bucket.clone(),
                    description: b.limits.description.clone().unwrap_or_default(),
                    history: b.limits.history.max(1),
                    max_age: Duration::from_secs(b.limits.max_age_secs),
                    max_bytes: b.limits.max_bytes,
                    max_value_size: b.limits.max_value_size,
                    ..Default::default()
                })
                .await
                .with_context(|| format!("create KV bucket {}", b.bucket))?,
        };
        for (key, value) in read_bucket(dir, b)? {
            store
                .put(&key, value.into())
                .await
                .with_context(|| format!("put {}/{key}", b.bucket))?;
        }
    }
    for s in &m.object_stores {
        let store = match js.get_object_store(&s.store).await {
            Ok(store) => store,
            Err(_) => js
                .create_object_store(object_store::Config {
                    bucket: s.store.clone(),
                    description: s.limits.description.clone(),
                    max_age: Duration::from_secs(s.limits.max_age_secs),
                    max_bytes: s.limits.max_bytes,
                    ..Default::default()
                })
                .await
                .with_context(|| format!("create object store {}", s.store))?,
        };
        for o in &s.objects {
            let bytes = read_object(dir, &s.store, o)?;
            let meta = object_store::ObjectMetadata {
                name: o.name.clone(),
                description: o.description.clone(),
                metadata: o.metadata.clone(),
                ..Default::default()
            };
            store
                .put(meta, &mut bytes.as_slice())
                .await
                .with_context(|| format!("put {}/{}", s.store, o.name))?;
        }
    }
    Ok(counts)
}
