//! `/api/agents` and `/api/agents/{pc_id}`.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::Json;
use chrono::{DateTime, Duration, Utc};
use kanade_storage::AgentRecord;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::params::ApiQuery;
use crate::api::state::AppState;

/// An agent whose last heartbeat is older than this is offline (stale).
pub const ALIVE_THRESHOLD: Duration = Duration::minutes(2);

#[derive(Serialize)]
pub struct AgentRow {
    pc_id: String,
    hostname: Option<String>,
    os_family: Option<String>,
    agent_version: Option<String>,
    last_heartbeat: Option<DateTime<Utc>>,
    updated_at: Option<DateTime<Utc>>,
    agent_cpu_pct: Option<f64>,
    agent_rss_bytes: Option<i64>,
    agent_disk_read_bytes: Option<i64>,
    agent_disk_written_bytes: Option<i64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    quarantined_versions: Vec<String>,
    last_logon_user: Option<String>,
    last_logon_display_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    agent_arch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    command_keys: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    enforcing: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    command_protocols: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deploy_capabilities: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deploy_capabilities_received_at: Option<i64>,
}

impl From<AgentRecord> for AgentRow {
    fn from(a: AgentRecord) -> Self {
        Self {
            pc_id: a.pc_id,
            hostname: a.hostname,
            os_family: a.os_family,
            agent_version: a.agent_version,
            last_heartbeat: a.last_heartbeat,
            updated_at: a.updated_at,
            agent_cpu_pct: a.agent_cpu_pct,
            agent_rss_bytes: a.agent_rss_bytes,
            agent_disk_read_bytes: a.agent_disk_read_bytes,
            agent_disk_written_bytes: a.agent_disk_written_bytes,
            quarantined_versions: a.quarantined_versions,
            last_logon_user: a.reported.last_logon_user.filter(|s| !s.is_empty()),
            last_logon_display_name: a.reported.last_logon_display_name.filter(|s| !s.is_empty()),
            agent_arch: a.reported.agent_arch,
            command_keys: a.reported.command_keys,
            enforcing: a.reported.enforcing,
            command_protocols: a.reported.command_protocols,
            deploy_capabilities: a.reported.deploy_capabilities,
            deploy_capabilities_received_at: a.reported.deploy_capabilities_received_at,
        }
    }
}

#[derive(Deserialize)]
pub struct ListParams {
    q: Option<String>,
    status: Option<String>,
    limit: Option<String>,
    offset: Option<String>,
}

#[derive(Clone, Copy, PartialEq)]
enum Liveness {
    Online,
    Offline,
}

fn parse_u32(param: &'static str, raw: Option<&str>) -> Result<Option<u32>, ApiError> {
    raw.map(|s| {
        s.trim()
            .parse::<u32>()
            .map_err(|_| ApiError::bad_param(param, format!("{s:?} is not a non-negative integer")))
    })
    .transpose()
}

fn is_online(a: &AgentRecord, cutoff: DateTime<Utc>) -> bool {
    a.last_heartbeat.is_some_and(|hb| hb >= cutoff)
}

/// `GET /api/agents?q&status&limit&offset`: newest updated first.
/// `q` matches pc_id or hostname as a case-insensitive substring (no
/// wildcards: `%` and `_` are plain characters). `X-Total-Count` carries
/// the number of matches; with `limit`, `X-Online-Count` and
/// `X-Offline-Count` split the `q` matches by liveness.
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(p): ApiQuery<ListParams>,
) -> Result<(HeaderMap, Json<Vec<AgentRow>>), ApiError> {
    let status = match p.status.as_deref().map(str::trim) {
        None | Some("") => None,
        Some("online") => Some(Liveness::Online),
        Some("offline") => Some(Liveness::Offline),
        Some(other) => {
            return Err(ApiError::bad_param(
                "status",
                format!("{other:?} is not one of online, offline"),
            ))
        }
    };
    let limit = parse_u32("limit", p.limit.as_deref())?;
    let offset = parse_u32("offset", p.offset.as_deref())?.unwrap_or(0) as usize;
    let needle =
        p.q.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_lowercase);
    let cutoff = Utc::now() - ALIVE_THRESHOLD;

    let mut matched: Vec<AgentRecord> = state
        .store
        .agents()?
        .into_iter()
        .filter(|a| {
            needle.as_deref().is_none_or(|n| {
                a.pc_id.to_lowercase().contains(n)
                    || a.hostname
                        .as_deref()
                        .is_some_and(|h| h.to_lowercase().contains(n))
            })
        })
        .collect();
    let online = matched.iter().filter(|a| is_online(a, cutoff)).count();
    let offline = matched.len() - online;
    if let Some(s) = status {
        matched.retain(|a| is_online(a, cutoff) == (s == Liveness::Online));
    }
    matched.sort_by(|a, b| {
        b.updated_at
            .cmp(&a.updated_at)
            .then_with(|| a.pc_id.cmp(&b.pc_id))
    });
    let total = matched.len();
    let page: Vec<AgentRow> = matched
        .into_iter()
        .skip(offset)
        .take(limit.map_or(usize::MAX, |l| l as usize))
        .map(AgentRow::from)
        .collect();

    let mut headers = HeaderMap::new();
    headers.insert("X-Total-Count", HeaderValue::from(total));
    if limit.is_some() {
        headers.insert("X-Online-Count", HeaderValue::from(online));
        headers.insert("X-Offline-Count", HeaderValue::from(offline));
    }
    Ok((headers, Json(page)))
}

/// `GET /api/agents/{pc_id}`: 404 when the agent never sent a heartbeat.
pub async fn detail(
    State(state): State<AppState>,
    Path(pc_id): Path<String>,
) -> Result<Json<AgentRow>, ApiError> {
    state
        .store
        .agent(&pc_id)?
        .map(|a| Json(AgentRow::from(a)))
        .ok_or_else(|| ApiError::NotFound(format!("agent {pc_id}")))
}

/// One agent version and how many PCs run it.
#[derive(Serialize, Debug, PartialEq)]
pub struct VersionCount {
    version: Option<String>,
    total: i64,
    active: i64,
}

/// `GET /api/agents/versions`: agents per reported version (`active`:
/// heartbeat within [`ALIVE_THRESHOLD`]), most common first.
pub async fn versions(State(state): State<AppState>) -> Result<Json<Vec<VersionCount>>, ApiError> {
    let cutoff = Utc::now() - ALIVE_THRESHOLD;
    let mut counts: std::collections::BTreeMap<Option<String>, (i64, i64)> = Default::default();
    for a in state.store.agents()? {
        let online = is_online(&a, cutoff);
        let slot = counts
            .entry(a.agent_version.filter(|v| !v.is_empty()))
            .or_default();
        slot.0 += 1;
        slot.1 += i64::from(online);
    }
    let mut out: Vec<VersionCount> = counts
        .into_iter()
        .map(|(version, (total, active))| VersionCount {
            version,
            total,
            active,
        })
        .collect();
    // Stable: ties keep the version order of the map (null first).
    out.sort_by_key(|v| std::cmp::Reverse(v.total));
    Ok(Json(out))
}

/// `DELETE /api/agents/{pc_id}`: forgets the agent's row (its next
/// heartbeat brings it back); 204 whether or not it was known, audited
/// only when a row went.
pub async fn delete(
    State(state): State<AppState>,
    caller: crate::audit::Caller,
    Path(pc_id): Path<String>,
) -> Result<axum::http::StatusCode, ApiError> {
    let removed = {
        let store = state.store.clone();
        let pc = pc_id.clone();
        super::offload::store(move || store.delete_agent(&pc)).await?
    };
    if removed {
        super::jobs::audit(
            &state.control,
            &caller,
            "agent_delete",
            &pc_id,
            serde_json::json!({ "pc_id": pc_id }),
        )
        .await;
    }
    Ok(axum::http::StatusCode::NO_CONTENT)
}
