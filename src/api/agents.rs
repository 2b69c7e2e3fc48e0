//! `/api/agents` and `/api/agents/{pc_id}`.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::Json;
use chrono::{DateTime, Duration, Utc};
use kanade_storage::AgentRecord;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::params::{compile_regex_nocase, ApiQuery};
use super::table_state::{self, like_contains, SortKey, TableState};
use crate::api::state::AppState;
use kanade_shared::wire::MetaEntry;
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
    #[serde(skip_serializing_if = "Vec::is_empty")]
    meta: Vec<MetaEntry>,
}

impl AgentRow {
    fn with_meta(mut self, meta: Vec<MetaEntry>) -> Self {
        self.meta = meta;
        self
    }
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
            meta: Vec::new(),
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
    table: Option<String>,
    distinct: Option<String>,
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

/// A column of the 0.101 Agents table (`table` state, `distinct`, and
/// the `?sort=` tokens the first sort list lacked): the builtin ids or
/// `meta:<key>` for a key some PC carries.
#[derive(Clone, Debug, PartialEq)]
enum Col {
    Status,
    PcId,
    Os,
    Agent,
    LastHeartbeat,
    LastLogon,
    /// The broker credential a PC connects with; not tracked here (the
    /// reference reads it from the broker's monitor), so always empty.
    Credential,
    Cpu,
    Rss,
    Meta(String),
}

impl Col {
    const BUILTIN: [(&'static str, Col); 9] = [
        ("status", Col::Status),
        ("pcId", Col::PcId),
        ("os", Col::Os),
        ("agent", Col::Agent),
        ("lastHeartbeat", Col::LastHeartbeat),
        ("lastLogon", Col::LastLogon),
        ("credential", Col::Credential),
        ("cpu", Col::Cpu),
        ("rss", Col::Rss),
    ];

    /// Resolve a column id; a metadata key no PC carries is unknown.
    fn resolve(
        param: &'static str,
        id: &str,
        meta: &HashMap<String, Vec<MetaEntry>>,
    ) -> Result<Col, ApiError> {
        if let Some(key) = id.strip_prefix("meta:") {
            let known = !key.is_empty() && meta.values().flatten().any(|e| e.key == key);
            if !known {
                return Err(ApiError::bad_param(
                    param,
                    format!("unknown metadata column `{id}`: no PC carries the key"),
                ));
            }
            return Ok(Col::Meta(key.to_string()));
        }
        Self::BUILTIN
            .iter()
            .find(|(name, _)| *name == id)
            .map(|(_, c)| c.clone())
            .ok_or_else(|| {
                ApiError::bad_param(
                    param,
                    format!(
                        "unknown table column `{id}` (status, pcId, os, agent, lastHeartbeat, \
                         lastLogon, credential, cpu, rss, meta:<key>)"
                    ),
                )
            })
    }

    /// The `?sort=` tokens that name a table column.
    fn legacy(token: &str) -> Option<Col> {
        Some(match token {
            "status" => Col::Status,
            "nats_user" | "credential" => Col::Credential,
            "agent_cpu_pct" | "cpu" => Col::Cpu,
            "agent_rss_bytes" | "rss" => Col::Rss,
            _ => return None,
        })
    }

    /// The cell as text: what `contains`, checklists and candidates see.
    fn text(
        &self,
        a: &AgentRecord,
        meta: Option<&[MetaEntry]>,
        cutoff: DateTime<Utc>,
    ) -> Option<String> {
        let nonblank = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
        match self {
            Col::Status => Some(
                if is_online(a, cutoff) {
                    "online"
                } else {
                    "offline"
                }
                .into(),
            ),
            Col::PcId => Some(a.pc_id.clone()),
            Col::Os => a.os_family.clone(),
            Col::Agent => a.agent_version.clone(),
            Col::LastHeartbeat => a.last_heartbeat.map(table_state::time_text),
            Col::LastLogon => nonblank(&a.reported.last_logon_display_name)
                .or_else(|| nonblank(&a.reported.last_logon_user)),
            Col::Credential => None,
            Col::Cpu => a.agent_cpu_pct.map(table_state::real_text),
            Col::Rss => a.agent_rss_bytes.map(|v| v.to_string()),
            Col::Meta(key) => meta
                .unwrap_or_default()
                .iter()
                .find(|e| &e.key == key)
                .map(|e| e.value.clone()),
        }
    }

    /// The second text `contains` searches (what the cell shows beneath).
    fn also(&self, a: &AgentRecord) -> Option<String> {
        match self {
            Col::PcId => a.hostname.clone(),
            Col::LastLogon => a.reported.last_logon_user.clone(),
            _ => None,
        }
    }

    fn sort_key(
        &self,
        a: &AgentRecord,
        meta: Option<&[MetaEntry]>,
        cutoff: DateTime<Utc>,
    ) -> Option<SortKey> {
        match self {
            Col::Cpu => a.agent_cpu_pct.map(SortKey::Number),
            Col::Rss => a.agent_rss_bytes.map(|v| SortKey::Number(v as f64)),
            Col::LastHeartbeat => a
                .last_heartbeat
                .map(|t| SortKey::Time(t.timestamp_micros())),
            // The identifier keeps its case-sensitive order, as before.
            Col::PcId | Col::Status => self.text(a, meta, cutoff).map(SortKey::Exact),
            _ => self.text(a, meta, cutoff).map(SortKey::NoCase),
        }
    }
}

/// How the page is ordered.
enum Order {
    /// The first `?sort=` list (empty cells first ascending).
    Field(SortField, bool),
    /// A table column (empty cells last both ways).
    Column(Col, bool),
}

/// A request's filters, parsed once.
struct Parsed {
    status: Option<Liveness>,
    q: Option<regex::Regex>,
    user: Option<regex::Regex>,
    version: Option<regex::Regex>,
    quarantined: Option<String>,
    conditions: Vec<MetaCond>,
    meta_any: Option<String>,
    filters: Vec<(Col, table_state::Filter)>,
    order: Order,
    cutoff: DateTime<Utc>,
}

impl Parsed {
    /// Whether an agent passes every filter but the liveness one, leaving
    /// out `skip`'s own (the column whose candidates are listed).
    fn matches(&self, a: &AgentRecord, meta: Option<&[MetaEntry]>, skip: Option<&Col>) -> bool {
        let hits = |re: &Option<regex::Regex>, texts: &[Option<&str>]| {
            re.as_ref()
                .is_none_or(|re| texts.iter().flatten().any(|t| re.is_match(t)))
        };
        let skipping = |c: Col| skip == Some(&c);
        (skipping(Col::PcId) || hits(&self.q, &[Some(a.pc_id.as_str()), a.hostname.as_deref()]))
            && (skipping(Col::LastLogon)
                || hits(
                    &self.user,
                    &[
                        a.reported.last_logon_user.as_deref(),
                        a.reported.last_logon_display_name.as_deref(),
                    ],
                ))
            && (skipping(Col::Agent) || hits(&self.version, &[a.agent_version.as_deref()]))
            && self
                .quarantined
                .as_ref()
                .is_none_or(|v| a.quarantined_versions.iter().any(|q| q == v))
            && self.conditions.iter().all(|c| c.holds(meta))
            && self.meta_any.as_deref().is_none_or(|text| {
                meta.unwrap_or_default()
                    .iter()
                    .any(|e| like_contains(&e.value, text))
            })
            && self.filters.iter().all(|(col, f)| {
                Some(col) == skip
                    || f.holds(
                        col.text(a, meta, self.cutoff).as_deref(),
                        col.also(a).as_deref(),
                    )
            })
    }

    fn live(&self, a: &AgentRecord) -> bool {
        self.status
            .is_none_or(|s| is_online(a, self.cutoff) == (s == Liveness::Online))
    }
}

fn parse_request(
    p: &ListParams,
    raw: &[(String, String)],
    meta: &HashMap<String, Vec<MetaEntry>>,
) -> Result<Parsed, ApiError> {
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
    let table = TableState::parse(p.table.as_deref())?;
    let filters = table
        .filters
        .iter()
        .map(|(id, f)| Ok((Col::resolve("table", id, meta)?, f.clone())))
        .collect::<Result<Vec<_>, ApiError>>()?;
    let token = p.sort.as_deref().map(str::trim).unwrap_or_default();
    let order = match (&table.sort, Col::legacy(token)) {
        (Some((id, desc)), _) => Order::Column(Col::resolve("table", id, meta)?, *desc),
        (None, Some(col)) => {
            let dir = p.dir.as_deref().map(str::trim).filter(|s| !s.is_empty());
            Order::Column(
                col,
                dir.map(|d| table_state::parse_dir("dir", d))
                    .transpose()?
                    .unwrap_or(false),
            )
        }
        (None, None) => {
            let (field, desc) = parse_sort(p.sort.as_deref(), p.dir.as_deref())?;
            Order::Field(field, desc)
        }
    };
    Ok(Parsed {
        status,
        q: compile_regex_nocase("q", p.q.as_deref())?,
        user: compile_regex_nocase("user", p.user.as_deref())?,
        version: compile_regex_nocase("version", p.version.as_deref())?,
        quarantined: p
            .quarantined
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        conditions: meta_conditions(raw, p)?,
        meta_any: p
            .meta_any
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        filters,
        order,
        cutoff: Utc::now() - ALIVE_THRESHOLD,
    })
}

/// `GET /api/agents`, with kanade 0.101's filters: `q` (regex over pc_id
/// or hostname), `user` (over the last logon's user or display name),
/// `version` — regexes matched without regard to case, so 0.43's plain
/// substring searches still work — `quarantined` (a version the agent
/// rolled back), `status` (online / offline), metadata conditions
/// (`meta.<key>.<op>=<value>`, `meta_key`/`meta_value`, `meta_any` over
/// every value), the table's column state (`table`), `sort`/`dir`,
/// `limit`/`offset`. `X-Total-Count` carries the number of matches; with
/// `limit`, `X-Online-Count` and `X-Offline-Count` split the matches
/// before `status` by liveness. Each row carries its metadata (`meta`).
///
/// With `distinct=<column>` the answer is that column's checklist
/// candidates instead (`{values: [{value, count}], overflow}`) over the
/// rows every other filter keeps.
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(p): ApiQuery<ListParams>,
    ApiQuery(raw): ApiQuery<Vec<(String, String)>>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let limit = parse_u32("limit", p.limit.as_deref())?;
    let offset = parse_u32("offset", p.offset.as_deref())?.unwrap_or(0) as usize;
    let meta: HashMap<String, Vec<MetaEntry>> = super::agent_meta::by_pc(&state).await?;
    let parsed = parse_request(&p, &raw, &meta)?;
    let agents = state.store.agents()?;
    let meta_of = |a: &AgentRecord| meta.get(&a.pc_id).map(Vec::as_slice);

    if let Some(id) = p.distinct.as_deref().map(str::trim) {
        let col = Col::resolve("distinct", id, &meta)?;
        let texts: Vec<Option<String>> = agents
            .iter()
            .filter(|a| parsed.matches(a, meta_of(a), Some(&col)) && parsed.live(a))
            .map(|a| col.text(a, meta_of(a), parsed.cutoff))
            .collect();
        let answer = table_state::candidates(texts.iter().map(Option::as_deref));
        return Ok(Json(answer).into_response());
    }

    let mut matched: Vec<AgentRecord> = agents
        .into_iter()
        .filter(|a| parsed.matches(a, meta_of(a), None))
        .collect();
    let online = matched
        .iter()
        .filter(|a| is_online(a, parsed.cutoff))
        .count();
    let offline = matched.len() - online;
    matched.retain(|a| parsed.live(a));
    match &parsed.order {
        Order::Column(col, desc) => table_state::sort_rows(
            &mut matched,
            *desc,
            |a| col.sort_key(a, meta_of(a), parsed.cutoff),
            |a| a.pc_id.as_str(),
        ),
        Order::Field(field, desc) => {
            let mut keyed: Vec<(Option<String>, AgentRecord)> = matched
                .into_iter()
                .map(|a| (sort_key(&a, field, &meta), a))
                .collect();
            keyed.sort_by(|(ka, a), (kb, b)| {
                let by = if *desc { kb.cmp(ka) } else { ka.cmp(kb) };
                by.then_with(|| a.pc_id.cmp(&b.pc_id))
            });
            matched = keyed.into_iter().map(|(_, a)| a).collect();
        }
    }
    let total = matched.len();
    let page: Vec<AgentRow> = matched
        .into_iter()
        .skip(offset)
        .take(limit.map_or(usize::MAX, |l| l as usize))
        .map(|a| {
            let mut entries = meta.get(&a.pc_id).cloned().unwrap_or_default();
            entries.sort_by(|x, y| x.key.cmp(&y.key));
            AgentRow::from(a).with_meta(entries)
        })
        .collect();

    let mut headers = HeaderMap::new();
    headers.insert("X-Total-Count", HeaderValue::from(total));
    if limit.is_some() {
        headers.insert("X-Online-Count", HeaderValue::from(online));
        headers.insert("X-Offline-Count", HeaderValue::from(offline));
    }
    Ok((headers, Json(page)).into_response())
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
