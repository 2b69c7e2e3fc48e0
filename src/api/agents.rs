//! `/api/agents` and `/api/agents/{pc_id}`.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::Json;
use chrono::{DateTime, Duration, Utc};
use kanade_storage::AgentRecord;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::params::{compile_regex_nocase, ApiQuery};
use crate::api::state::AppState;
use kanade_shared::kv::BUCKET_AGENT_META;
use kanade_shared::wire::{AgentMeta, MetaEntry};
use std::collections::HashMap;

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
    user: Option<String>,
    version: Option<String>,
    quarantined: Option<String>,
    status: Option<String>,
    limit: Option<String>,
    offset: Option<String>,
    meta_key: Option<String>,
    meta_value: Option<String>,
    meta_any: Option<String>,
    sort: Option<String>,
    dir: Option<String>,
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

/// How a metadata condition compares (`meta.<key>.<op>=<value>`).
#[derive(Clone, Copy, Debug, PartialEq)]
enum MetaOp {
    Contains,
    Eq,
    Neq,
    Starts,
    Empty,
    Set,
    Absent,
}

impl MetaOp {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "contains" => Self::Contains,
            "eq" => Self::Eq,
            "neq" => Self::Neq,
            "starts" => Self::Starts,
            "empty" => Self::Empty,
            "set" => Self::Set,
            "absent" => Self::Absent,
            _ => return None,
        })
    }

    fn wants_value(self) -> bool {
        matches!(self, Self::Contains | Self::Eq | Self::Neq | Self::Starts)
    }
}

#[derive(Clone, Debug, PartialEq)]
struct MetaCond {
    key: String,
    op: MetaOp,
    value: String,
}

impl MetaCond {
    /// Whether a PC with `meta` passes. Text matches as the reference's
    /// SQLite `LIKE` does: ASCII letters without regard to case.
    fn holds(&self, meta: Option<&[MetaEntry]>) -> bool {
        let found = meta
            .unwrap_or_default()
            .iter()
            .find(|e| e.key == self.key)
            .map(|e| e.value.as_str());
        match (self.op, found) {
            (MetaOp::Absent, v) => v.is_none(),
            (_, None) => false,
            (MetaOp::Set, Some(_)) => true,
            (MetaOp::Empty, Some(v)) => v.is_empty(),
            (MetaOp::Eq, Some(v)) => v == self.value,
            (MetaOp::Neq, Some(v)) => v != self.value,
            (MetaOp::Contains, Some(v)) => like_contains(v, &self.value),
            (MetaOp::Starts, Some(v)) => {
                v.len() >= self.value.len()
                    && v.is_char_boundary(self.value.len())
                    && v[..self.value.len()].eq_ignore_ascii_case(&self.value)
            }
        }
    }
}

/// `haystack LIKE '%needle%'` as SQLite has it: ASCII case folded only.
fn like_contains(haystack: &str, needle: &str) -> bool {
    haystack
        .to_ascii_lowercase()
        .contains(&needle.to_ascii_lowercase())
}

/// The `meta.<key>.<op>=<value>` conditions of the query, in order (a key
/// with dots splits at its last one); a value-taking condition with a
/// blank value is an unfinished filter row and is left out. The legacy
/// `meta_key` (+ `meta_value`) is one more condition.
fn meta_conditions(raw: &[(String, String)], p: &ListParams) -> Result<Vec<MetaCond>, ApiError> {
    let mut out = Vec::new();
    for (k, v) in raw {
        let Some(rest) = k.strip_prefix("meta.") else {
            continue;
        };
        let Some((key, op)) = rest.rsplit_once('.') else {
            return Err(ApiError::BadRequest(format!(
                "malformed meta filter `{k}`: expected meta.<key>.<op>"
            )));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(ApiError::BadRequest(format!(
                "meta filter `{k}` has an empty key"
            )));
        }
        let op = MetaOp::parse(op).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "unknown meta filter operator `{op}` in `{k}` (contains, eq, neq, starts, empty, set, absent)"
            ))
        })?;
        let value = v.trim().to_string();
        if op.wants_value() && value.is_empty() {
            continue;
        }
        out.push(MetaCond {
            key: key.to_string(),
            op,
            value,
        });
    }
    let trimmed = |s: &Option<String>| {
        s.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    if let Some(key) = trimmed(&p.meta_key) {
        let value = trimmed(&p.meta_value);
        out.push(MetaCond {
            key,
            op: if value.is_some() {
                MetaOp::Contains
            } else {
                MetaOp::Set
            },
            value: value.unwrap_or_default(),
        });
    }
    Ok(out)
}

/// What the list is ordered by.
#[derive(Clone, Debug, PartialEq)]
enum SortField {
    PcId,
    Hostname,
    Os,
    Version,
    LastHeartbeat,
    LastLogon,
    UpdatedAt,
    Meta(String),
}

/// `sort` and `dir`: the reference's fields (and their short names) or
/// `meta:<key>`; default `updated_at`, which alone defaults to
/// descending.
fn parse_sort(sort: Option<&str>, dir: Option<&str>) -> Result<(SortField, bool), ApiError> {
    let field = match sort.map(str::trim).filter(|s| !s.is_empty()) {
        None => SortField::UpdatedAt,
        Some(s) => match s.strip_prefix("meta:") {
            Some(key) if key.trim().is_empty() => {
                return Err(ApiError::bad_param(
                    "sort",
                    "sort=meta: needs a key (meta:<key>)",
                ))
            }
            Some(key) => SortField::Meta(key.trim().to_string()),
            None => match s {
                "pc_id" => SortField::PcId,
                "hostname" => SortField::Hostname,
                "os_family" | "os" => SortField::Os,
                "agent_version" | "agent" => SortField::Version,
                "last_heartbeat" => SortField::LastHeartbeat,
                "last_logon_user" | "last_logon" => SortField::LastLogon,
                "updated_at" => SortField::UpdatedAt,
                other => {
                    return Err(ApiError::bad_param(
                        "sort",
                        format!(
                            "unknown sort field `{other}` (pc_id, hostname, os_family, \
                             agent_version, last_heartbeat, last_logon_user, updated_at, meta:<key>)"
                        ),
                    ))
                }
            },
        },
    };
    let desc = match dir.map(str::trim).filter(|s| !s.is_empty()) {
        None => field == SortField::UpdatedAt,
        Some("asc") => false,
        Some("desc") => true,
        Some(other) => {
            return Err(ApiError::bad_param(
                "dir",
                format!("sort direction must be asc or desc, got `{other}`"),
            ))
        }
    };
    Ok((field, desc))
}

/// The text a row sorts by (`None` sorts first ascending, as SQLite's
/// NULLs do).
fn sort_key(
    a: &AgentRecord,
    field: &SortField,
    meta: &HashMap<String, Vec<MetaEntry>>,
) -> Option<String> {
    let stamp = |t: Option<DateTime<Utc>>| t.map(|t| format!("{:020}", t.timestamp_micros()));
    match field {
        SortField::PcId => Some(a.pc_id.clone()),
        SortField::Hostname => a.hostname.clone(),
        SortField::Os => a.os_family.clone(),
        SortField::Version => a.agent_version.clone(),
        SortField::LastHeartbeat => stamp(a.last_heartbeat),
        SortField::LastLogon => a.reported.last_logon_user.clone(),
        SortField::UpdatedAt => stamp(a.updated_at),
        SortField::Meta(key) => meta
            .get(&a.pc_id)
            .and_then(|es| es.iter().find(|e| &e.key == key))
            .map(|e| e.value.clone()),
    }
}

/// `GET /api/agents`, with kanade 0.101's filters: `q` (regex over pc_id
/// or hostname), `user` (over the last logon's user or display name),
/// `version` — regexes matched without regard to case, so 0.43's plain
/// substring searches still work — `quarantined` (a version the agent
/// rolled back), `status` (online / offline), metadata conditions
/// (`meta.<key>.<op>=<value>`, `meta_key`/`meta_value`, `meta_any` over
/// every value), `sort`/`dir`, `limit`/`offset`. `X-Total-Count` carries
/// the number of matches; with `limit`, `X-Online-Count` and
/// `X-Offline-Count` split the matches before `status` by liveness.
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(p): ApiQuery<ListParams>,
    ApiQuery(raw): ApiQuery<Vec<(String, String)>>,
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
    let q = compile_regex_nocase("q", p.q.as_deref())?;
    let user = compile_regex_nocase("user", p.user.as_deref())?;
    let version = compile_regex_nocase("version", p.version.as_deref())?;
    let quarantined = p
        .quarantined
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let conditions = meta_conditions(&raw, &p)?;
    let meta_any = p
        .meta_any
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let (field, desc) = parse_sort(p.sort.as_deref(), p.dir.as_deref())?;
    let cutoff = Utc::now() - ALIVE_THRESHOLD;

    let needs_meta =
        !conditions.is_empty() || meta_any.is_some() || matches!(field, SortField::Meta(_));
    let meta: HashMap<String, Vec<MetaEntry>> = if needs_meta {
        state
            .control
            .list_json::<AgentMeta>(BUCKET_AGENT_META)
            .await?
            .into_iter()
            .map(|(pc, m)| (pc, m.entries))
            .collect()
    } else {
        HashMap::new()
    };
    let hits = |re: &Option<regex::Regex>, texts: &[Option<&str>]| {
        re.as_ref()
            .is_none_or(|re| texts.iter().flatten().any(|t| re.is_match(t)))
    };
    let mut matched: Vec<AgentRecord> = state
        .store
        .agents()?
        .into_iter()
        .filter(|a| {
            let entries = meta.get(&a.pc_id).map(Vec::as_slice);
            hits(&q, &[Some(a.pc_id.as_str()), a.hostname.as_deref()])
                && hits(
                    &user,
                    &[
                        a.reported.last_logon_user.as_deref(),
                        a.reported.last_logon_display_name.as_deref(),
                    ],
                )
                && hits(&version, &[a.agent_version.as_deref()])
                && quarantined.is_none_or(|v| a.quarantined_versions.iter().any(|q| q == v))
                && conditions.iter().all(|c| c.holds(entries))
                && meta_any.is_none_or(|text| {
                    entries
                        .unwrap_or_default()
                        .iter()
                        .any(|e| like_contains(&e.value, text))
                })
        })
        .collect();
    let online = matched.iter().filter(|a| is_online(a, cutoff)).count();
    let offline = matched.len() - online;
    if let Some(s) = status {
        matched.retain(|a| is_online(a, cutoff) == (s == Liveness::Online));
    }
    let mut keyed: Vec<(Option<String>, AgentRecord)> = matched
        .into_iter()
        .map(|a| (sort_key(&a, &field, &meta), a))
        .collect();
    keyed.sort_by(|(ka, a), (kb, b)| {
        let by = if desc { kb.cmp(ka) } else { ka.cmp(kb) };
        by.then_with(|| a.pc_id.cmp(&b.pc_id))
    });
    let total = keyed.len();
    let page: Vec<AgentRow> = keyed
        .into_iter()
        .skip(offset)
        .take(limit.map_or(usize::MAX, |l| l as usize))
        .map(|(_, a)| AgentRow::from(a))
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
