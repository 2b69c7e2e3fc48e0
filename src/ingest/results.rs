//! Stream `RESULTS` (`ExecResult`) → `execution_results`: creates the row
//! or finishes the in-flight one. A result of a job whose manifest (KV
//! `jobs`) declares a fleet health check also updates `check_status`, and
//! a successful run of one with an `inventory` hint its PC's
//! `inventory_facts`, in the same transaction.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use kanade_shared::manifest::{CheckHint, Manifest};
use kanade_shared::wire::ExecResult;
use kanade_storage::{
    CheckStatusRecord, FinishedRun, InventoryFactRecord, RelationalStore, StreamPosition,
};

use super::stream::StreamProjection;

/// How long a manifest lookup is trusted before KV is asked again.
const MANIFEST_TTL: Duration = Duration::from_secs(60);
const KV_TIMEOUT: Duration = Duration::from_secs(2);

/// Manifests by id, with when they were read (`None`: not registered).
type ManifestCache = HashMap<String, (Instant, Option<Arc<Manifest>>)>;

/// Applies agents' results.
pub struct ResultsProjection {
    js: async_nats::jetstream::Context,
    runtime: tokio::runtime::Handle,
    manifests: Mutex<ManifestCache>,
}

impl ResultsProjection {
    /// Must be called inside the runtime (manifest lookups use it).
    pub fn new(client: async_nats::Client) -> Self {
        Self {
            js: async_nats::jetstream::new(client),
            runtime: tokio::runtime::Handle::current(),
            manifests: Mutex::new(HashMap::new()),
        }
    }

    /// The registered manifest of a job (cached for [`MANIFEST_TTL`]).
    /// Blocking.
    fn manifest(&self, manifest_id: &str) -> Option<Arc<Manifest>> {
        // A job id that cannot name a KV key has no manifest to look up.
        crate::control::check_key("manifest_id", manifest_id).ok()?;
        let mut cache = self.manifests.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, m)) = cache.get(manifest_id) {
            if at.elapsed() < MANIFEST_TTL {
                return m.clone();
            }
        }
        let manifest = self.runtime.block_on(async {
            let kv = self
                .js
                .get_key_value(kanade_shared::kv::BUCKET_JOBS)
                .await
                .ok()?;
            let entry = tokio::time::timeout(KV_TIMEOUT, kv.get(manifest_id))
                .await
                .ok()?
                .ok()??;
            match serde_json::from_slice::<Manifest>(&entry) {
                Ok(m) => Some(Arc::new(m)),
                Err(e) => {
                    tracing::warn!(manifest_id, error = %e, "manifest in KV does not decode");
                    None
                }
            }
        });
        cache.insert(manifest_id.to_string(), (Instant::now(), manifest.clone()));
        manifest
    }

    /// The fleet check a manifest declares, if any.
    fn check_hint(&self, manifest_id: &str) -> Option<CheckHint> {
        self.manifest(manifest_id)?
            .check
            .clone()
            .filter(|c| c.fleet)
    }

    /// The inventory facts a successful run of an inventory job carries:
    /// its stdout, which must be JSON (else it is logged and left out,
    /// and the PC keeps its previous facts).
    fn inventory_fact(&self, r: &ExecResult) -> Option<InventoryFactRecord> {
        if r.exit_code != 0 {
            return None;
        }
        let manifest_id = r.manifest_id.as_deref()?;
        let manifest = self.manifest(manifest_id)?;
        let hint = manifest.inventory.as_ref()?;
        if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&r.stdout) {
            tracing::warn!(pc_id = %r.pc_id, manifest_id, result_id = %r.result_id, error = %e, "inventory stdout is not JSON; facts left as they were");
            return None;
        }
        Some(InventoryFactRecord {
            pc_id: r.pc_id.clone(),
            manifest_id: manifest_id.to_string(),
            facts_json: r.stdout.clone(),
            display_json: serde_json::to_string(&hint.display).unwrap_or_else(|_| "[]".into()),
            summary_json: hint
                .summary
                .as_ref()
                .and_then(|s| serde_json::to_string(s).ok()),
            collected_at: r.finished_at,
            recorded_at: Utc::now(),
        })
    }
}

/// Most bytes of offloaded output read back into a result row.
const MAX_OFFLOADED: usize = 64 * 1024 * 1024;
const OBJECT_TIMEOUT: Duration = Duration::from_secs(30);

impl ResultsProjection {
    /// The result with output the agent offloaded to the `result_output`
    /// object store (`stdout_object` / `stderr_object`) read back inline,
    /// so the row shows it as if it had been sent inline. Output that
    /// cannot be read leaves a note naming the object instead of an empty
    /// field. Blocking.
    fn with_offloaded_output(&self, r: &ExecResult) -> ExecResult {
        let mut out = r.clone();
        for (object, field) in [
            (r.stdout_object.as_deref(), &mut out.stdout),
            (r.stderr_object.as_deref(), &mut out.stderr),
        ] {
            let Some(key) = object else { continue };
            *field = match self.runtime.block_on(read_object(&self.js, key)) {
                Ok(text) => text,
                Err(e) => {
                    tracing::warn!(pc_id = %r.pc_id, result_id = %r.result_id, object = key, error = %e, "offloaded output unreadable");
                    format!(
                        "[backend: output offloaded to result_output/{key} could not be read: {e}]"
                    )
                }
            };
        }
        out
    }
}

/// One object of `result_output` as text (invalid UTF-8 replaced), at
/// most [`MAX_OFFLOADED`] bytes.
async fn read_object(js: &async_nats::jetstream::Context, key: &str) -> Result<String, String> {
    use tokio::io::AsyncReadExt;
    let read = async {
        let store = js
            .get_object_store(kanade_shared::kv::OBJECT_RESULT_OUTPUT)
            .await
            .map_err(|e| e.to_string())?;
        let object = store.get(key).await.map_err(|e| e.to_string())?;
        let mut bytes = Vec::new();
        object
            .take(MAX_OFFLOADED as u64 + 1)
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| e.to_string())?;
        let cut = bytes.len() > MAX_OFFLOADED;
        bytes.truncate(MAX_OFFLOADED);
        let mut text = String::from_utf8_lossy(&bytes).into_owned();
        if cut {
            text.push_str("\n[backend: output truncated at 64 MiB]");
        }
        Ok(text)
    };
    tokio::time::timeout(OBJECT_TIMEOUT, read)
        .await
        .map_err(|_| "timed out".to_string())?
}

/// What a check's run says: the status and detail fields of its JSON
/// stdout, or `unknown` with the exit code when the script failed.
fn check_state(r: &ExecResult, hint: &CheckHint) -> Option<(String, Option<String>)> {
    if r.exit_code != 0 {
        let snippet: String = r.stderr.trim().chars().take(200).collect();
        let detail = if snippet.is_empty() {
            format!("check script exited {}", r.exit_code)
        } else {
            format!("check script exited {}: {snippet}", r.exit_code)
        };
        return Some(("unknown".into(), Some(detail)));
    }
    let facts: serde_json::Value = match serde_json::from_str(&r.stdout) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(check = %hint.name, pc_id = %r.pc_id, error = %e, "check stdout is not JSON; state left as it was");
            return None;
        }
    };
    let status = facts
        .get(&hint.status_field)
        .and_then(|v| v.as_str())
        .filter(|s| matches!(*s, "ok" | "warn" | "fail"))
        .unwrap_or("unknown");
    let detail = match facts.get(&hint.detail_field) {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) if s.is_empty() => None,
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(other) => Some(other.to_string()),
    };
    Some((status.to_string(), detail))
}

impl StreamProjection for ResultsProjection {
    type Item = ExecResult;
    const STREAM: &'static str = kanade_shared::kv::STREAM_RESULTS;
    const DURABLE: &'static str = "columnar-results-projector";
    const FILTER: Option<&'static str> = None;

    fn decode(_subject: &str, _seq: u64, payload: &[u8]) -> Result<ExecResult, String> {
        serde_json::from_slice(payload).map_err(|e| e.to_string())
    }

    fn check(r: &ExecResult) -> Result<(), String> {
        use super::wire;
        wire::key("pc_id", &r.pc_id)?;
        wire::optional_key("manifest_id", r.manifest_id.as_deref())?;
        wire::optional_key("exec_id", r.exec_id.as_deref())?;
        wire::opaque("result_id", Some(&r.result_id))?;
        wire::opaque("request_id", Some(&r.request_id))?;
        wire::opaque("stdout_object", r.stdout_object.as_deref())?;
        wire::opaque("stderr_object", r.stderr_object.as_deref())
    }

    fn apply(
        &self,
        store: &RelationalStore,
        items: &[ExecResult],
        pos: StreamPosition<'_>,
    ) -> kanade_storage::Result<()> {
        let now = Utc::now();
        let items: Vec<ExecResult> = items
            .iter()
            .map(|r| {
                if r.stdout_object.is_some() || r.stderr_object.is_some() {
                    self.with_offloaded_output(r)
                } else {
                    r.clone()
                }
            })
            .collect();
        let runs: Vec<FinishedRun> = items
            .iter()
            .map(|r| FinishedRun {
                result_id: r.stable_result_id(),
                request_id: r.request_id.clone(),
                exec_id: r.exec_id.clone(),
                pc_id: r.pc_id.clone(),
                exit_code: i64::from(r.exit_code),
                stdout: r.stdout.clone(),
                stderr: r.stderr.clone(),
                started_at: r.started_at,
                finished_at: r.finished_at,
                job_id: r.manifest_id.clone(),
            })
            .collect();
        let checks: Vec<CheckStatusRecord> = items
            .iter()
            .filter_map(|r| {
                let hint = self.check_hint(r.manifest_id.as_deref()?)?;
                let (status, detail) = check_state(r, &hint)?;
                Some(CheckStatusRecord {
                    pc_id: r.pc_id.clone(),
                    check_name: hint.name.clone(),
                    status,
                    detail,
                    recorded_at: r.finished_at,
                })
            })
            .collect();
        let facts: Vec<InventoryFactRecord> = items
            .iter()
            .filter_map(|r| self.inventory_fact(r))
            .collect();
        store.apply_finished_with(&runs, &checks, &facts, now, Some(pos))
    }
}
