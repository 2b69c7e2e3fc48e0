//! `/api/obs_events`, `/kinds`, `/sources`, `/recent`.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use kanade_storage::{ObsRecord, ObsScan};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::params::{parse_time, ApiQuery};
use crate::api::state::AppState;

const DEFAULT_LIMIT: i64 = 200;
const DEFAULT_RECENT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 5_000;

#[derive(Serialize)]
pub struct EventRow {
    id: u64,
    pc_id: String,
    at: DateTime<Utc>,
    kind: String,
    source: String,
    event_record_id: Option<String>,
    payload: serde_json::Value,
}

impl From<ObsRecord> for EventRow {
    fn from(e: ObsRecord) -> Self {
        Self {
            id: e.id,
            pc_id: e.pc_id,
            at: e.at,
            kind: e.kind,
            source: e.source,
            event_record_id: e.event_record_id,
            payload: e.payload,
        }
    }
}

#[derive(Serialize)]
pub struct ListResponse {
    events: Vec<EventRow>,
}

#[derive(Deserialize)]
pub struct ListParams {
    pc_id: Option<String>,
    from: Option<String>,
    to: Option<String>,
    kind: Option<String>,
    source: Option<String>,
    logon_type: Option<String>,
    kinds: Option<String>,
    kinds_ex: Option<String>,
    sources: Option<String>,
    sources_ex: Option<String>,
    payload_key: Option<String>,
    payload_value: Option<String>,
    limit: Option<String>,
}

fn parse_limit(raw: Option<&str>, default: i64) -> Result<usize, ApiError> {
    let n = match raw {
        None => default,
        Some(s) => s
            .trim()
            .parse::<i64>()
            .map_err(|_| ApiError::bad_param("limit", format!("{s:?} is not an integer")))?,
    };
    if !(1..=MAX_LIMIT).contains(&n) {
        return Err(ApiError::bad_param(
            "limit",
            format!("{n} is not between 1 and {MAX_LIMIT}"),
        ));
    }
    Ok(n as usize)
}

fn csv(raw: Option<&str>) -> Option<Vec<String>> {
    let v: Vec<String> = raw?
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    (!v.is_empty()).then_some(v)
}

/// Whether a JSON value equals a query value given as text: a string
/// equal to it, or a number (or boolean as 0/1) equal to it as a number.
fn json_equals(v: &serde_json::Value, text: &str) -> bool {
    let num = text.trim().parse::<f64>().ok();
    match v {
        serde_json::Value::String(s) => s == text,
        serde_json::Value::Number(n) => num.is_some_and(|x| n.as_f64() == Some(x)),
        serde_json::Value::Bool(b) => num.is_some_and(|x| x == f64::from(u8::from(*b))),
        _ => false,
    }
}

struct Filter {
    kind: Option<String>,
    source: Option<String>,
    logon_type: Option<i64>,
    kinds: Option<Vec<String>>,
    kinds_ex: Option<Vec<String>>,
    sources: Option<Vec<String>>,
    sources_ex: Option<Vec<String>>,
    payload: Option<(String, String)>,
}

impl Filter {
    fn matches(&self, e: &ObsRecord) -> bool {
        let inn = |list: &Option<Vec<String>>, v: &str| {
            list.as_ref().is_none_or(|l| l.iter().any(|x| x == v))
        };
        let out = |list: &Option<Vec<String>>, v: &str| {
            list.as_ref().is_none_or(|l| !l.iter().any(|x| x == v))
        };
        self.kind.as_deref().is_none_or(|k| e.kind == k)
            && self.source.as_deref().is_none_or(|s| e.source == s)
            && self
                .logon_type
                .is_none_or(|n| json_equals(&e.payload["logon_type"], &n.to_string()))
            && inn(&self.kinds, &e.kind)
            && out(&self.kinds_ex, &e.kind)
            && inn(&self.sources, &e.source)
            && out(&self.sources_ex, &e.source)
            && self
                .payload
                .as_ref()
                .is_none_or(|(k, v)| json_equals(&e.payload[k.as_str()], v))
    }
}

/// `GET /api/obs_events`: newest first (then id descending), with the
/// reference's filters; `limit` 1–5,000 (default 200).
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(p): ApiQuery<ListParams>,
) -> Result<Json<ListResponse>, ApiError> {
    let limit = parse_limit(p.limit.as_deref(), DEFAULT_LIMIT)?;
    let from = p
        .from
        .as_deref()
        .map(|s| parse_time("from", s))
        .transpose()?;
    let to = p.to.as_deref().map(|s| parse_time("to", s)).transpose()?;
    let logon_type = p
        .logon_type
        .as_deref()
        .map(|s| {
            s.trim()
                .parse::<i64>()
                .map_err(|_| ApiError::bad_param("logon_type", format!("{s:?} is not an integer")))
        })
        .transpose()?;
    let key = match p.payload_key.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(k) if k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => Some(k.to_string()),
        Some(k) => {
            return Err(ApiError::bad_param(
                "payload_key",
                format!("{k:?} may hold only letters, digits and _"),
            ))
        }
    };
    let filter = Filter {
        kind: p.kind.clone(),
        source: p.source.clone(),
        logon_type,
        kinds: csv(p.kinds.as_deref()),
        kinds_ex: csv(p.kinds_ex.as_deref()),
        sources: csv(p.sources.as_deref()),
        sources_ex: csv(p.sources_ex.as_deref()),
        payload: key.zip(p.payload_value.clone()),
    };
    let scan = match (&p.pc_id, &p.kind) {
        (Some(pc), _) => ObsScan::Pc(pc),
        (None, Some(kind)) => ObsScan::Kind(kind),
        (None, None) => ObsScan::All,
    };
    let mut events = Vec::new();
    state.store.scan_obs_events_desc(scan, from, to, |e| {
        if p.pc_id.as_deref().is_none_or(|pc| e.pc_id == pc) && filter.matches(&e) {
            events.push(EventRow::from(e));
        }
        events.len() < limit
    })?;
    Ok(Json(ListResponse { events }))
}

#[derive(Deserialize)]
pub struct RecentParams {
    limit: Option<String>,
}

/// `GET /api/obs_events/recent?limit` (default 50).
pub async fn recent(
    State(state): State<AppState>,
    ApiQuery(p): ApiQuery<RecentParams>,
) -> Result<Json<ListResponse>, ApiError> {
    let limit = parse_limit(p.limit.as_deref(), DEFAULT_RECENT_LIMIT)?;
    let mut events = Vec::new();
    state
        .store
        .scan_obs_events_desc(ObsScan::All, None, None, |e| {
            events.push(EventRow::from(e));
            events.len() < limit
        })?;
    Ok(Json(ListResponse { events }))
}

#[derive(Serialize)]
pub struct KindsResponse {
    kinds: Vec<String>,
}

/// `GET /api/obs_events/kinds`: distinct kinds, sorted.
pub async fn kinds(State(state): State<AppState>) -> Result<Json<KindsResponse>, ApiError> {
    Ok(Json(KindsResponse {
        kinds: state.store.obs_kinds()?,
    }))
}

#[derive(Serialize)]
pub struct SourcesResponse {
    sources: Vec<String>,
}

/// `GET /api/obs_events/sources`: distinct sources, sorted.
pub async fn sources(State(state): State<AppState>) -> Result<Json<SourcesResponse>, ApiError> {
    Ok(Json(SourcesResponse {
        sources: state.store.obs_sources()?,
    }))
}

/// PCs one `lane_seeds` call may name (a swimlane page's worth).
const MAX_SEED_PCS: usize = 64;

/// The swimlane a kind draws in, as the reference groups them.
pub(super) fn lane(kind: &str) -> Option<usize> {
    Some(match kind {
        "boot"
        | "shutdown"
        | "unexpected_shutdown"
        | "log_service_started"
        | "log_service_stopped" => 0,
        "logon" | "logoff" => 1,
        "sleep" | "resume" => 2,
        "active" | "idle" => 3,
        _ => return None,
    })
}

#[derive(Deserialize)]
pub struct SeedParams {
    pcs: Option<String>,
    before: Option<String>,
}

/// `GET /api/obs_events/lane_seeds?pcs=a,b&before=<time>`: for each PC,
/// the latest event before `before` of each swimlane (power, session,
/// sleep, activity), so a timeline that starts at `before` knows each
/// lane's state; per PC oldest first, PCs in the order given (each once).
/// Walks each PC's events newest first and stops once every lane has its
/// seed, within the scan budget.
pub async fn lane_seeds(
    State(state): State<AppState>,
    ApiQuery(p): ApiQuery<SeedParams>,
) -> Result<Json<ListResponse>, ApiError> {
    let mut pcs: Vec<String> = Vec::new();
    for pc in p
        .pcs
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
    {
        if !pc.is_empty() && !pcs.iter().any(|p| p == pc) {
            pcs.push(pc.to_string());
        }
    }
    if pcs.is_empty() || pcs.len() > MAX_SEED_PCS {
        return Err(ApiError::bad_param(
            "pcs",
            format!("name 1 to {MAX_SEED_PCS} PCs (got {})", pcs.len()),
        ));
    }
    let before = parse_time(
        "before",
        p.before
            .as_deref()
            .ok_or_else(|| ApiError::bad_param("before", "required"))?,
    )?;
    let store = state.store.clone();
    let events = super::offload::budgeted_scan(
        state.scan_budget,
        "ask about fewer PCs or an earlier `before`",
        move |in_time| {
            let mut events = Vec::new();
            for pc in &pcs {
                let mut seeds: [Option<ObsRecord>; 4] = Default::default();
                store.scan_obs_events_desc(ObsScan::Pc(pc), None, Some(before), |e| {
                    if let Some(l) = lane(&e.kind) {
                        seeds[l].get_or_insert(e);
                    }
                    seeds.iter().any(Option::is_none) && in_time()
                })?;
                let mut found: Vec<ObsRecord> = seeds.into_iter().flatten().collect();
                found.sort_by_key(|e| (e.at, e.id));
                events.extend(found.into_iter().map(EventRow::from));
            }
            Ok(events)
        },
    )
    .await?;
    Ok(Json(ListResponse { events }))
}
