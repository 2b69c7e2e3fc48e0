//! Stream `RESULTS` (`ExecResult`) → `execution_results`: creates the row
//! or finishes the in-flight one. A result of a job whose manifest (KV
//! `jobs`) declares a fleet health check also updates `check_status`, and
//! a successful run of one with an `inventory` hint its PC's
//! `inventory_facts`, in the same transaction.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kanade_queries::inventory::{element_changes, scalar_changes, ExplodeIndex};
use kanade_shared::manifest::{CheckHint, Manifest};
use kanade_shared::wire::ExecResult;
use kanade_storage::{
    CheckStatusRecord, FinishedRun, InventoryFactRecord, InventoryHistoryRow, RelationalStore,
    RunOutcome, StreamPosition, TimeSeriesTable,
};
use serde_json::Value;

use super::stream::StreamProjection;
use super::Committed;
use crate::control::manifests::{layouts, Manifests};

/// Applies agents' results.
pub struct ResultsProjection {
    js: async_nats::jetstream::Context,
    runtime: tokio::runtime::Handle,
    manifests: Arc<Manifests>,
    /// `inventory_history`: what changed between a PC's inventories.
    history: Arc<TimeSeriesTable>,
    /// Told which PCs' inventories changed, after they are committed.
    explode: Arc<ExplodeIndex>,
    /// Publishes the check alerts a commit raises.
    control: crate::control::Control,
}

/// A successful inventory run: its facts, and the manifest it ran under.
struct Inventory {
    fact: InventoryFactRecord,
    manifest: Arc<Manifest>,
}

impl ResultsProjection {
    /// Must be called inside the runtime (manifest lookups use it).
    pub fn new(
        client: async_nats::Client,
        manifests: Arc<Manifests>,
        history: Arc<TimeSeriesTable>,
        explode: Arc<ExplodeIndex>,
        control: crate::control::Control,
    ) -> Self {
        Self {
            js: async_nats::jetstream::new(client),
            runtime: tokio::runtime::Handle::current(),
            manifests,
            history,
            explode,
            control,
        }
    }

    /// Sends the alerts `changes` raise (each beside the projector).
    fn alert(
        &self,
        store: &RelationalStore,
        changes: &[kanade_storage::CheckChange],
        hints: &HashMap<(String, String), CheckHint>,
    ) {
        let now = Utc::now();
        for change in changes {
            let key = (change.now.pc_id.clone(), change.now.check_name.clone());
            let Some(hint) = hints.get(&key) else {
                continue;
            };
            let Some(alert) = hint.alert.as_ref() else {
                continue;
            };
            if !super::check_alerts::fires(alert, change, now) {
                continue;
            }
            let last_logon = store
                .agent(&change.now.pc_id)
                .ok()
                .flatten()
                .and_then(|a| {
                    a.reported
                        .last_logon_display_name
                        .or(a.reported.last_logon_user)
                })
                .unwrap_or_default();
            let alert = super::check_alerts::Alert::new(hint, alert, change, &last_logon);
            self.runtime.spawn(alert.send(self.control.clone()));
        }
    }

    /// The registered manifest of a job. Blocking.
    fn manifest(&self, manifest_id: &str) -> Option<Arc<Manifest>> {
        self.manifests.get_blocking(&self.runtime, manifest_id)
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
    fn inventory(&self, r: &ExecResult) -> Option<Inventory> {
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
        let fact = InventoryFactRecord {
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
        };
        Some(Inventory { fact, manifest })
    }

    /// What each inventory changed against the PC's previous one (stored,
    /// or earlier in this batch), as history rows. A run older than the
    /// stored one changes nothing (its facts are refused too).
    fn history_rows(
        &self,
        store: &RelationalStore,
        runs: &[Inventory],
    ) -> kanade_storage::Result<Vec<InventoryHistoryRow>> {
        let mut seen: HashMap<(String, String), (DateTime<Utc>, Value)> = HashMap::new();
        let mut rows = Vec::new();
        for Inventory { fact, manifest } in runs {
            let Some(hint) = manifest.inventory.as_ref() else {
                continue;
            };
            let scalars = hint.history_scalars.as_deref().unwrap_or(&[]);
            let tracked = hint.explode.iter().flatten().any(|e| e.track_history);
            // Nothing of this job is tracked: no previous facts to read.
            if scalars.is_empty() && !tracked {
                continue;
            }
            let key = (fact.pc_id.clone(), fact.manifest_id.clone());
            let prior = match seen.remove(&key) {
                Some(p) => Some(p),
                None => store
                    .inventory_fact(&fact.pc_id, &fact.manifest_id)?
                    .map(|p| {
                        let json = serde_json::from_str(&p.facts_json).unwrap_or(Value::Null);
                        (p.collected_at, json)
                    }),
            };
            if let Some((at, json)) = &prior {
                if *at > fact.collected_at {
                    seen.insert(key, (*at, json.clone()));
                    continue;
                }
            }
            let new: Value = serde_json::from_str(&fact.facts_json).unwrap_or(Value::Null);
            let before = prior.as_ref().map(|(_, j)| j);
            let mut changes = scalar_changes(scalars, before, &new);
            for layout in layouts(manifest) {
                match layout {
                    Ok(l) if l.track_history => changes.extend(element_changes(&l, before, &new)),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(manifest_id = %fact.manifest_id, error = %e, "explode spec skipped")
                    }
                }
            }
            let base = seq_base(&fact.manifest_id);
            for (i, c) in changes.into_iter().enumerate() {
                let text = |v: Option<Value>| v.map(|v| v.to_string());
                rows.push(InventoryHistoryRow {
                    pc_id: fact.pc_id.clone(),
                    at: fact.collected_at,
                    seq: base | (i as i64 & SEQ_INDEX_MASK),
                    job_id: fact.manifest_id.clone(),
                    field_path: c.field_path,
                    identity_json: text(c.identity),
                    change_kind: c.kind.to_string(),
                    before_json: text(c.before),
                    after_json: text(c.after),
                });
            }
            seen.insert(key, (fact.collected_at, new));
        }
        Ok(rows)
    }
}

/// The low bits of a change's `seq`: its number within the run.
const SEQ_INDEX_MASK: i64 = (1 << 20) - 1;

/// The high bits of a change's `seq`: a hash of the manifest id, so two
/// inventory jobs finishing in the same microsecond on one PC never share
/// a key.
fn seq_base(manifest_id: &str) -> i64 {
    ((kanade_storage::stable_hash(manifest_id.bytes()) >> 34) << 20) as i64
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

    fn check(&self, r: &ExecResult) -> Result<(), String> {
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
    ) -> kanade_storage::Result<Committed> {
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
                outcome: RunOutcome {
                    skipped: r.skipped,
                    parent_result_id: r.parent_result_id.clone(),
                    collect_object: r.collect_object.clone(),
                },
            })
            .collect();
        let mut hints: HashMap<(String, String), CheckHint> = HashMap::new();
        let checks: Vec<CheckStatusRecord> = items
            .iter()
            // A run the agent skipped, or a command it refused unsigned,
            // says nothing about the check.
            .filter(|r| !r.skips_check_projection() && !r.is_signature_refusal())
            .filter_map(|r| {
                let hint = self.check_hint(r.manifest_id.as_deref()?)?;
                let (status, detail) = check_state(r, &hint)?;
                let record = CheckStatusRecord {
                    pc_id: r.pc_id.clone(),
                    check_name: hint.name.clone(),
                    status,
                    detail,
                    recorded_at: r.finished_at,
                };
                hints.insert((r.pc_id.clone(), hint.name.clone()), hint);
                Some(record)
            })
            .collect();
        let inventories: Vec<Inventory> = items.iter().filter_map(|r| self.inventory(r)).collect();
        // Changes first: if the commit below fails, the redelivered
        // results yield the same changes under the same keys, which the
        // table drops as repeats.
        let changes = self.history_rows(store, &inventories)?;
        if !changes.is_empty() {
            let batch = InventoryHistoryRow::to_batch(&changes)?;
            self.history.write(&batch)?;
        }
        let facts: Vec<InventoryFactRecord> = inventories.iter().map(|i| i.fact.clone()).collect();
        let changes = store.apply_finished_with(&runs, &checks, &facts, now, Some(pos))?;
        self.alert(store, &changes, &hints);
        for f in &facts {
            self.explode
                .note_changed(&f.manifest_id, std::iter::once(f.pc_id.as_str()));
        }
        Ok(Committed::all(items.len()))
    }
}
