//! `/api/schedules*`: schedules in the `schedules` KV bucket (YAML mirror
//! in `schedules_yaml`), which the scheduler watches; previews, status and
//! coverage read the per-job result indexes.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use kanade_shared::kv::{
    BUCKET_JOBS, BUCKET_SCHEDULES, BUCKET_SCHEDULES_YAML, BUCKET_SCRIPT_STATUS,
    SCRIPT_STATUS_REVOKED,
};
use kanade_shared::manifest::{Manifest, RunsOn, Schedule, When};
use kanade_storage::JobPcStanding;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::jobs::{audit, kill_job_runs, put_with_yaml};
use super::params::{parse_bool, parse_clamped, ApiQuery, YamlOrJson};
use crate::api::state::AppState;
use crate::audit::Caller;
use crate::control::{check_key, Control};

/// Hours `status.recent` looks back.
const STATUS_WINDOW_HOURS: i64 = 24;

/// `GET /api/schedules`: every schedule, sorted by id.
pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<Schedule>>, ApiError> {
    let all = state
        .control
        .list_json::<Schedule>(BUCKET_SCHEDULES)
        .await?;
    Ok(Json(all.into_iter().map(|(_, s)| s).collect()))
}

#[derive(Serialize)]
pub struct ScheduleSummary {
    id: String,
    when: String,
    enabled: bool,
    job_id: String,
}

/// `POST /api/schedules` (JSON or YAML): validate, check the job exists,
/// upsert the schedule and its YAML.
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    body: YamlOrJson<Schedule>,
) -> Result<Json<ScheduleSummary>, ApiError> {
    let s = body.value;
    check_key("id", &s.id)?;
    s.validate()
        .map_err(|e| ApiError::BadRequest(format!("invalid schedule: {e}")))?;
    crate::tasks::scheduler::policy::starting_deadline(&s)
        .map_err(|e| ApiError::BadRequest(format!("invalid schedule: {e}")))?;
    check_key("job_id", &s.job_id)?;
    if state
        .control
        .get_json::<Manifest>(BUCKET_JOBS, &s.job_id)
        .await
        .ok()
        .flatten()
        .is_none()
    {
        return Err(ApiError::BadRequest(format!(
            "invalid `job_id`: unknown job_id '{}' — register the job first (kanade job create)",
            s.job_id
        )));
    }
    put_with_yaml(
        &state.control,
        (BUCKET_SCHEDULES, BUCKET_SCHEDULES_YAML),
        &s.id,
        &s,
        body.yaml,
    )
    .await?;
    let when = s.when.to_string();
    audit(
        &state.control,
        &caller,
        "schedule_upsert",
        &s.id,
        serde_json::json!({
            "when": when, "job_id": s.job_id, "enabled": s.enabled,
        }),
    )
    .await;
    Ok(Json(ScheduleSummary {
        id: s.id,
        when,
        enabled: s.enabled,
        job_id: s.job_id,
    }))
}

/// `DELETE /api/schedules/{id}`: the schedule and its YAML.
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    check_key("id", &id)?;
    state.control.delete(BUCKET_SCHEDULES, &id).await?;
    state.control.delete(BUCKET_SCHEDULES_YAML, &id).await?;
    audit(
        &state.control,
        &caller,
        "schedule_delete",
        &id,
        serde_json::json!({}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/schedules/{id}/enable`.
pub async fn enable(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let s = set_enabled(&state.control, &id, true).await?;
    if let Some(s) = s {
        audit(
            &state.control,
            &caller,
            "schedule_enable",
            &id,
            serde_json::json!({"job_id": s.job_id}),
        )
        .await;
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub struct DisableParams {
    cascade: Option<String>,
    cascade_kill: Option<String>,
}

/// `POST /api/schedules/{id}/disable?cascade=&cascade_kill=`: disable;
/// `cascade` also revokes the job's script (queued runs are skipped by
/// agents), `cascade_kill` kills its runs in flight.
pub async fn disable(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(p): ApiQuery<DisableParams>,
) -> Result<StatusCode, ApiError> {
    let cascade = parse_bool("cascade", p.cascade.as_deref(), false)?;
    let cascade_kill = parse_bool("cascade_kill", p.cascade_kill.as_deref(), false)?;
    let schedule = match set_enabled(&state.control, &id, false).await? {
        Some(s) => s,
        None => load(&state.control, &id).await?,
    };
    if cascade {
        state
            .control
            .put(
                BUCKET_SCRIPT_STATUS,
                &schedule.job_id,
                SCRIPT_STATUS_REVOKED,
            )
            .await?;
    }
    let killed = if cascade_kill {
        kill_job_runs(&state.control, &schedule.job_id).await?
    } else {
        0
    };
    audit(&state.control, &caller, "schedule_disable", &id, serde_json::json!({
        "cascade": cascade, "cascade_kill": cascade_kill, "killed_execs": killed, "job_id": schedule.job_id,
    }))
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// Sets `enabled` with a revision compare-and-set (a concurrent edit is
/// a 409, never overwritten) and mirrors it into the YAML. `None` when it
/// already had that value.
async fn set_enabled(
    control: &Control,
    id: &str,
    enabled: bool,
) -> Result<Option<Schedule>, ApiError> {
    check_key("id", id)?;
    let store = control.kv(BUCKET_SCHEDULES).await?;
    let entry = control
        .entry(&store, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("schedule '{id}' not found")))?;
    let mut s: Schedule = serde_json::from_slice(&entry.value)
        .map_err(|e| ApiError::Internal(format!("stored schedule '{id}' does not decode: {e}")))?;
    if s.enabled == enabled {
        return Ok(None);
    }
    s.enabled = enabled;
    let json = serde_json::to_vec(&s).map_err(|e| ApiError::Internal(e.to_string()))?;
    store
        .update(id, json.into(), entry.revision)
        .await
        .map_err(|e| {
            ApiError::Conflict(format!("schedule '{id}' changed meanwhile; retry: {e}"))
        })?;
    if let Ok(Some(yaml)) = control.get_text(BUCKET_SCHEDULES_YAML, id).await {
        if let Err(e) = control
            .put(BUCKET_SCHEDULES_YAML, id, set_yaml_enabled(&yaml, enabled))
            .await
        {
            tracing::warn!(schedule = id, error = %e, "YAML mirror not updated");
        }
    }
    Ok(Some(s))
}

/// `yaml` with its top-level `enabled:` set (appended when absent).
fn set_yaml_enabled(yaml: &str, enabled: bool) -> String {
    let mut done = false;
    let mut out = String::with_capacity(yaml.len() + 16);
    for line in yaml.lines() {
        if !done && line.starts_with("enabled:") {
            out.push_str(&format!("enabled: {enabled}\n"));
            done = true;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !done {
        out.push_str(&format!("enabled: {enabled}\n"));
    }
    out
}

/// The schedule `id`, or 404.
async fn load(control: &Control, id: &str) -> Result<Schedule, ApiError> {
    check_key("id", id)?;
    control
        .get_json::<Schedule>(BUCKET_SCHEDULES, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("schedule '{id}' not found")))
}

/// `GET /api/schedules/{id}/yaml`.
pub async fn yaml(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    check_key("id", &id)?;
    let text = match state
        .control
        .get_text(BUCKET_SCHEDULES_YAML, &id)
        .await
        .ok()
        .flatten()
    {
        Some(t) => t,
        None => serde_yaml::to_string(&load(&state.control, &id).await?)
            .map_err(|e| ApiError::Internal(e.to_string()))?,
    };
    Ok(([(header::CONTENT_TYPE, "application/yaml")], text).into_response())
}

#[derive(Deserialize)]
pub struct PreviewParams {
    count: Option<String>,
}

#[derive(Serialize)]
pub struct Preview {
    id: String,
    when: String,
    tz: &'static str,
    enabled: bool,
    fires: Vec<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

/// `GET /api/schedules/{id}/preview?count=` (1..=50, default 5).
pub async fn preview(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(p): ApiQuery<PreviewParams>,
) -> Result<Json<Preview>, ApiError> {
    let count = parse_clamped("count", p.count.as_deref(), 5, 1, 50)? as usize;
    let s = load(&state.control, &id).await?;
    let fires = s.preview_fires(whole_seconds(Utc::now()), count);
    let when = s.when.to_string();
    let note = fires.is_empty().then(|| match s.when {
        When::Calendar(_) => "no upcoming fires — a past one-shot, or the fire time is excluded by the active window / constraints.window".to_string(),
        _ => format!("reconcile cadence ({when}) polls every minute gated by cooldown — no discrete fire times to preview"),
    });
    Ok(Json(Preview {
        id: s.id,
        when,
        tz: s.tz.as_str(),
        enabled: s.enabled,
        fires,
        note,
    }))
}

#[derive(Serialize)]
pub struct LastRun {
    pc_id: String,
    exit_code: Option<i64>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
}

#[derive(Serialize)]
pub struct Recent {
    window_hours: i64,
    ok: u64,
    fail: u64,
}

#[derive(Serialize)]
pub struct Status {
    id: String,
    when: String,
    tz: &'static str,
    enabled: bool,
    next_run: Option<DateTime<Utc>>,
    last_run: Option<LastRun>,
    recent: Recent,
}

/// `GET /api/schedules/{id}/status`: next fire, last run of its job and
/// the job's outcomes over the last 24 h.
pub async fn status(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Status>, ApiError> {
    let s = load(&state.control, &id).await?;
    let now = whole_seconds(Utc::now());
    let since = now - chrono::Duration::hours(STATUS_WINDOW_HOURS);
    let (last, ok, fail) = state.store.job_recent_runs(&s.job_id, since)?;
    Ok(Json(Status {
        next_run: s.preview_fires(now, 1).into_iter().next(),
        last_run: last.map(|r| LastRun {
            pc_id: r.pc_id,
            exit_code: r.exit_code,
            started_at: Some(r.started_at),
            finished_at: r.finished_at,
        }),
        recent: Recent {
            window_hours: STATUS_WINDOW_HOURS,
            ok,
            fail,
        },
        id: s.id,
        when: s.when.to_string(),
        tz: s.tz.as_str(),
        enabled: s.enabled,
    }))
}

#[derive(Serialize, Default)]
pub struct Counts {
    total: usize,
    ok: usize,
    fail: usize,
    running: usize,
    pending: usize,
}

#[derive(Serialize)]
pub struct AgentCoverage {
    pc_id: String,
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finished_at: Option<DateTime<Utc>>,
}

#[derive(Serialize)]
pub struct Coverage {
    id: String,
    when: String,
    job_id: String,
    runs_on: &'static str,
    #[serde(flatten)]
    counts: Counts,
    agents: Vec<AgentCoverage>,
}

/// `GET /api/schedules/{id}/coverage`: every PC of the target (offline
/// too) as running / ok / fail (its latest finished run) / pending.
pub async fn coverage(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Coverage>, ApiError> {
    let s = load(&state.control, &id).await?;
    let roster = state.control.roster(&s.plan.target, false).await?;
    let standing = state.store.job_standing_by_pc(&s.job_id)?;
    let mut counts = Counts::default();
    let mut agents = Vec::with_capacity(roster.len());
    for pc in roster {
        let (st, latest) = classify(standing.get(&pc));
        counts.add(st);
        let version = match latest {
            Some(l) => state.store.result(&l.result_id)?.and_then(|r| r.version),
            None => None,
        };
        agents.push(AgentCoverage {
            pc_id: pc,
            state: st,
            version,
            finished_at: latest.map(|l| l.finished_at),
        });
    }
    Ok(Json(Coverage {
        id: s.id,
        when: s.when.to_string(),
        job_id: s.job_id,
        runs_on: runs_on(s.runs_on),
        counts,
        agents,
    }))
}

#[derive(Serialize)]
pub struct CoverageSummary {
    id: String,
    #[serde(flatten)]
    counts: Counts,
}

/// `GET /api/schedules/coverage`: the counts of every schedule, sorted
/// by id (each job's indexes and each distinct target read once).
pub async fn coverage_all(
    State(state): State<AppState>,
) -> Result<Json<Vec<CoverageSummary>>, ApiError> {
    let schedules = state
        .control
        .list_json::<Schedule>(BUCKET_SCHEDULES)
        .await?;
    let mut rosters = BTreeMap::new();
    let mut standings = BTreeMap::new();
    let mut out = Vec::with_capacity(schedules.len());
    for (_, s) in schedules {
        let key = serde_json::to_string(&s.plan.target).unwrap_or_default();
        if !rosters.contains_key(&key) {
            let roster = state.control.roster(&s.plan.target, false).await?;
            rosters.insert(key.clone(), roster);
        }
        if !standings.contains_key(&s.job_id) {
            standings.insert(s.job_id.clone(), state.store.job_standing_by_pc(&s.job_id)?);
        }
        let standing = &standings[&s.job_id];
        let mut counts = Counts::default();
        for pc in &rosters[&key] {
            counts.add(classify(standing.get(pc)).0);
        }
        out.push(CoverageSummary { id: s.id, counts });
    }
    Ok(Json(out))
}

impl Counts {
    fn add(&mut self, state: &str) {
        self.total += 1;
        match state {
            "running" => self.running += 1,
            "ok" => self.ok += 1,
            "fail" => self.fail += 1,
            _ => self.pending += 1,
        }
    }
}

/// A PC's coverage state: in flight wins, then its latest finished run.
fn classify(s: Option<&JobPcStanding>) -> (&'static str, Option<&kanade_storage::LatestRun>) {
    match s {
        Some(s) if s.in_flight > 0 => ("running", None),
        Some(JobPcStanding {
            latest: Some(l), ..
        }) => (if l.exit_code == 0 { "ok" } else { "fail" }, Some(l)),
        _ => ("pending", None),
    }
}

/// `t` without its fraction: cron ticks are whole seconds, and a fire
/// computed from a fractional `now` would carry the fraction along.
fn whole_seconds(t: DateTime<Utc>) -> DateTime<Utc> {
    chrono::SubsecRound::trunc_subsecs(t, 0)
}

fn runs_on(r: RunsOn) -> &'static str {
    match r {
        RunsOn::Backend => "backend",
        RunsOn::Agent => "agent",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_mirror_flips_only_the_top_level_enabled() {
        let y = "id: a\nconstraints:\n  enabled: true\nenabled: true # on\njob_id: j\n";
        assert_eq!(
            set_yaml_enabled(y, false),
            "id: a\nconstraints:\n  enabled: true\nenabled: false\njob_id: j\n"
        );
        assert_eq!(
            set_yaml_enabled("id: a\n", false),
            "id: a\nenabled: false\n"
        );
    }
}

#[derive(Deserialize)]
pub struct UpcomingParams {
    limit: Option<String>,
}

#[derive(Serialize, Debug, PartialEq)]
pub struct Upcoming {
    id: String,
    job_id: String,
    when: String,
    next_run: DateTime<Utc>,
}

/// `GET /api/schedules/upcoming?limit=`: the next fire of each enabled
/// calendar schedule, soonest first, at most `limit` (default 5, 1-50).
pub async fn upcoming(
    State(state): State<AppState>,
    ApiQuery(p): ApiQuery<UpcomingParams>,
) -> Result<Json<Vec<Upcoming>>, ApiError> {
    let limit = parse_clamped("limit", p.limit.as_deref(), 5, 1, 50)? as usize;
    let now = whole_seconds(Utc::now());
    let mut out: Vec<Upcoming> = state
        .control
        .list_json::<Schedule>(BUCKET_SCHEDULES)
        .await?
        .into_iter()
        .filter(|(_, s)| s.enabled)
        .filter_map(|(_, s)| {
            let next_run = s.preview_fires(now, 1).into_iter().next()?;
            Some(Upcoming {
                when: s.when.to_string(),
                id: s.id,
                job_id: s.job_id,
                next_run,
            })
        })
        .collect();
    out.sort_by(|a, b| a.next_run.cmp(&b.next_run).then_with(|| a.id.cmp(&b.id)));
    out.truncate(limit);
    Ok(Json(out))
}
