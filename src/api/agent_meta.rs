//! Agent metadata (`kanade meta`), as kanade 0.101 has it: free-form
//! key/value pairs per PC that operators keep (owner, site, asset tag …),
//! one `AgentMeta` JSON per PC in the KV bucket `agent_meta`, keyed by
//! PC id. Keys are trimmed, unique and ordered as first given (the shared
//! wire type's rules); single-key edits are compare-and-set, so two
//! operators editing different keys of one PC both land.
//!
//! - `GET /api/agents/{pc_id}/meta` → `{entries: [{key, value}]}` (empty
//!   for a PC with none);
//! - `PUT /api/agents/{pc_id}/meta` (operator) replaces them all;
//! - `PUT /api/agents/{pc_id}/meta/key {key, value}`, `DELETE
//!   /api/agents/{pc_id}/meta/key?key=` (operator) → `{meta, changed}`;
//! - `GET /api/agents/meta?pcs=a,b` → `{pc_id: [{key, value}]}` (PCs with
//!   some only; 1,000 PCs at most), `GET /api/agents/meta-keys` → every
//!   key in use, sorted. Both answer from the bucket's mirror.

use axum::extract::{Path, State};
use axum::Json;
use kanade_shared::kv::BUCKET_AGENT_META;
use kanade_shared::wire::{AgentMeta, MetaEntry, MetaUpdate};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::error::ApiError;
use super::params::{ApiJson, ApiQuery};
use crate::api::state::AppState;
use crate::audit::{self, Caller};
use crate::control::check_key;

/// PCs one bulk read may name.
pub const MAX_BULK_PCS: usize = 1_000;
/// Longest key, in characters.
pub const MAX_KEY_CHARS: usize = 128;
/// Longest value, in characters.
pub const MAX_VALUE_CHARS: usize = 4_096;
/// Keys one PC may have.
pub const MAX_KEYS: usize = 256;

fn pc_param(pc_id: &str) -> Result<(), ApiError> {
    check_key("pc_id", pc_id).map_err(ApiError::from)
}

/// Checks what an edit would store: a 400 naming the key or the limit.
fn bounded(meta: &AgentMeta) -> Result<(), ApiError> {
    if meta.entries.len() > MAX_KEYS {
        return Err(ApiError::bad_param(
            "entries",
            format!("{} keys; a PC may have {MAX_KEYS}", meta.entries.len()),
        ));
    }
    for e in &meta.entries {
        if e.key.chars().count() > MAX_KEY_CHARS {
            return Err(ApiError::bad_param(
                "key",
                format!(
                    "{} is longer than {MAX_KEY_CHARS} characters",
                    crate::control::abbreviated(&e.key)
                ),
            ));
        }
        if e.value.chars().count() > MAX_VALUE_CHARS {
            return Err(ApiError::bad_param(
                "value",
                format!(
                    "the value of {:?} is longer than {MAX_VALUE_CHARS} characters",
                    e.key
                ),
            ));
        }
    }
    Ok(())
}

/// `GET /api/agents/{pc_id}/meta`.
pub async fn get_meta(
    State(state): State<AppState>,
    Path(pc_id): Path<String>,
) -> Result<Json<AgentMeta>, ApiError> {
    pc_param(&pc_id)?;
    let meta = state
        .control
        .get_json::<AgentMeta>(BUCKET_AGENT_META, &pc_id)
        .await?;
    Ok(Json(meta.unwrap_or_default()))
}

/// `PUT /api/agents/{pc_id}/meta` (operator): the PC's whole metadata.
pub async fn put_meta(
    State(state): State<AppState>,
    Path(pc_id): Path<String>,
    caller: Caller,
    ApiJson(meta): ApiJson<AgentMeta>,
) -> Result<Json<AgentMeta>, ApiError> {
    pc_param(&pc_id)?;
    bounded(&meta)?;
    let bytes = serde_json::to_vec(&meta).map_err(|e| ApiError::Internal(e.to_string()))?;
    state.control.put(BUCKET_AGENT_META, &pc_id, bytes).await?;
    audit::record(
        &state.nats,
        "operator",
        "agent_meta_put",
        Some(&pc_id),
        Some(&caller),
        serde_json::json!({ "count": meta.entries.len() }),
    )
    .await;
    Ok(Json(meta))
}

/// The key a single-key edit names: trimmed, not empty.
fn key_param(raw: &str) -> Result<String, ApiError> {
    let key = raw.trim();
    if key.is_empty() {
        return Err(ApiError::bad_param("key", "metadata key must not be empty"));
    }
    Ok(key.to_string())
}

/// Applies `edit` to the PC's metadata by compare-and-set (retried on a
/// concurrent write); an edit whose result breaks a bound is not written
/// and answers that bound's 400 (checked on the very value the write
/// would have replaced, so a concurrent writer cannot slip past it).
async fn edit(
    state: &AppState,
    pc_id: &str,
    edit: impl Fn(&mut AgentMeta) -> bool,
) -> Result<MetaUpdate, ApiError> {
    let store = state.control.kv(BUCKET_AGENT_META).await?;
    let mut changed = false;
    let mut refused = None;
    let meta = kanade_shared::kv_cas::read_modify_write(&store, pc_id, |m: &mut AgentMeta| {
        changed = edit(m);
        refused = changed.then(|| bounded(m).err()).flatten();
        changed && refused.is_none()
    })
    .await
    .map_err(|e| ApiError::BadGateway(format!("update agent_meta/{pc_id}: {e:#}")))?;
    if let Some(e) = refused {
        return Err(e);
    }
    Ok(MetaUpdate { meta, changed })
}

/// `PUT /api/agents/{pc_id}/meta/key` (operator): sets one key.
pub async fn set_key(
    State(state): State<AppState>,
    Path(pc_id): Path<String>,
    caller: Caller,
    ApiJson(entry): ApiJson<MetaEntry>,
) -> Result<Json<MetaUpdate>, ApiError> {
    pc_param(&pc_id)?;
    let key = key_param(&entry.key)?;
    let value = entry.value.trim().to_string();
    let update = edit(&state, &pc_id, |m| m.upsert(&key, &value)).await?;
    audit::record(
        &state.nats,
        "operator",
        "agent_meta_set",
        Some(&pc_id),
        Some(&caller),
        serde_json::json!({ "key": key, "value": value, "changed": update.changed }),
    )
    .await;
    Ok(Json(update))
}

#[derive(Deserialize)]
pub struct KeyQuery {
    key: String,
}

/// `DELETE /api/agents/{pc_id}/meta/key?key=` (operator): removes one key
/// (absent: `changed: false`).
pub async fn remove_key(
    State(state): State<AppState>,
    Path(pc_id): Path<String>,
    caller: Caller,
    ApiQuery(q): ApiQuery<KeyQuery>,
) -> Result<Json<MetaUpdate>, ApiError> {
    pc_param(&pc_id)?;
    let key = key_param(&q.key)?;
    let update = edit(&state, &pc_id, |m| m.remove(&key)).await?;
    audit::record(
        &state.nats,
        "operator",
        "agent_meta_rm",
        Some(&pc_id),
        Some(&caller),
        serde_json::json!({ "key": key, "changed": update.changed }),
    )
    .await;
    Ok(Json(update))
}

#[derive(Deserialize)]
pub struct BulkQuery {
    #[serde(default)]
    pcs: String,
}

/// `GET /api/agents/meta?pcs=a,b,c`: the metadata of the PCs a page shows.
pub async fn bulk(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<BulkQuery>,
) -> Result<Json<HashMap<String, Vec<MetaEntry>>>, ApiError> {
    let wanted: BTreeSet<&str> = q
        .pcs
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if wanted.len() > MAX_BULK_PCS {
        return Err(ApiError::bad_param(
            "pcs",
            format!("too many pcs: {} (max {MAX_BULK_PCS})", wanted.len()),
        ));
    }
    if wanted.is_empty() {
        return Ok(Json(HashMap::new()));
    }
    let all = state
        .control
        .list_json::<AgentMeta>(BUCKET_AGENT_META)
        .await?;
    Ok(Json(
        all.into_iter()
            .filter(|(pc, m)| wanted.contains(pc.as_str()) && !m.entries.is_empty())
            .map(|(pc, m)| (pc, m.entries))
            .collect(),
    ))
}

/// Every PC's metadata entries, by PC (from the bucket's mirror).
pub(super) async fn by_pc(state: &AppState) -> Result<HashMap<String, Vec<MetaEntry>>, ApiError> {
    Ok(state
        .control
        .list_json::<AgentMeta>(BUCKET_AGENT_META)
        .await?
        .into_iter()
        .map(|(pc, m)| (pc, m.entries))
        .collect())
}

/// `GET /api/agents/meta-keys`: every key some PC has, sorted.
pub async fn keys(State(state): State<AppState>) -> Result<Json<Vec<String>>, ApiError> {
    let all = state
        .control
        .list_json::<AgentMeta>(BUCKET_AGENT_META)
        .await?;
    let keys: BTreeMap<String, ()> = all
        .into_iter()
        .flat_map(|(_, m)| m.entries.into_iter().map(|e| (e.key, ())))
        .collect();
    Ok(Json(keys.into_keys().collect()))
}
