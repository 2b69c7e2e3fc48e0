//! `/api/health/fleet`, `/api/health/scan_durations` and
//! `/api/jetstream/status`.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Duration, Utc};
use kanade_shared::kv::{
    BUCKET_AGENTS_STATE, BUCKET_AGENT_CONFIG, BUCKET_AGENT_GROUPS, BUCKET_SCHEDULES,
    BUCKET_SCRIPT_CURRENT, BUCKET_SCRIPT_STATUS, OBJECT_AGENT_RELEASES, STREAM_AUDIT,
    STREAM_EVENTS, STREAM_EXEC, STREAM_INVENTORY, STREAM_RESULTS,
};
use serde::{Deserialize, Serialize};

use super::agents::ALIVE_THRESHOLD;
use super::error::ApiError;
use super::params::{parse_time, ApiQuery};
use crate::state::AppState;

const RECENT_WINDOW: Duration = Duration::hours(24);
/// How long one JetStream probe may take before it counts as missing.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

const STREAMS: [&str; 5] = [
    STREAM_INVENTORY,
    STREAM_RESULTS,
    STREAM_EXEC,
    STREAM_EVENTS,
    STREAM_AUDIT,
];
const KV_BUCKETS: [&str; 6] = [
    BUCKET_SCRIPT_CURRENT,
    BUCKET_SCRIPT_STATUS,
    BUCKET_AGENTS_STATE,
    BUCKET_AGENT_CONFIG,
    BUCKET_AGENT_GROUPS,
    BUCKET_SCHEDULES,
];
const OBJECT_STORES: [&str; 1] = [OBJECT_AGENT_RELEASES];

#[derive(Serialize, Clone)]
pub struct ResourceProbe {
    name: String,
    exists: bool,
}

#[derive(Serialize)]
pub struct JetstreamSnapshot {
    streams: Vec<ResourceProbe>,
    kv_buckets: Vec<ResourceProbe>,
    object_stores: Vec<ResourceProbe>,
}

async fn probe<F, T, E>(name: &str, fut: F) -> ResourceProbe
where
    F: std::future::Future<Output = Result<T, E>>,
{
    let exists = matches!(tokio::time::timeout(PROBE_TIMEOUT, fut).await, Ok(Ok(_)));
    ResourceProbe {
        name: name.to_string(),
        exists,
    }
}

/// Probes every resource at once, so a broker that does not answer costs
/// one probe timeout, not one per resource.
async fn snapshot(nats: &async_nats::Client) -> JetstreamSnapshot {
    use futures::future::join_all;
    let js = async_nats::jetstream::new(nats.clone());
    let (streams, kv_buckets, object_stores) = tokio::join!(
        join_all(STREAMS.map(|n| probe(n, js.get_stream(n)))),
        join_all(KV_BUCKETS.map(|n| probe(n, js.get_key_value(n)))),
        join_all(OBJECT_STORES.map(|n| probe(n, js.get_object_store(n)))),
    );
    JetstreamSnapshot {
        streams,
        kv_buckets,
        object_stores,
    }
}

/// `GET /api/jetstream/status`: which resources exist on the broker.
pub async fn jetstream_status(State(state): State<AppState>) -> Json<JetstreamSnapshot> {
    Json(snapshot(&state.nats).await)
}

#[derive(Serialize, PartialEq, Eq, Debug, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Ok,
    Unknown,
    Degraded,
}

#[derive(Serialize)]
pub struct FleetHealth {
    status: HealthStatus,
    agents: AgentsHealth,
    jetstream: JetstreamHealth,
    recent_results: RecentResults,
    observed_at: DateTime<Utc>,
}

#[derive(Serialize)]
pub struct AgentsHealth {
    known: i64,
    active: i64,
    stale: i64,
}

#[derive(Serialize)]
pub struct JetstreamHealth {
    all_ok: bool,
    healthy: usize,
    total: usize,
    missing: Vec<String>,
}

#[derive(Serialize)]
pub struct RecentResults {
    window_hours: i64,
    total: i64,
    failed: i64,
}

/// The rule: degraded when a JetStream resource is missing or an agent
/// is stale; unknown when there are no agents yet; ok otherwise.
fn status_of(jetstream_ok: bool, known: i64, stale: i64) -> HealthStatus {
    if !jetstream_ok || stale > 0 {
        HealthStatus::Degraded
    } else if known == 0 {
        HealthStatus::Unknown
    } else {
        HealthStatus::Ok
    }
}

/// `GET /api/health/fleet`: 200 ok / 200 unknown / 503 degraded.
pub async fn fleet(
    State(state): State<AppState>,
) -> Result<(StatusCode, Json<FleetHealth>), ApiError> {
    let now = Utc::now();
    let agents = state.store.agents()?;
    let known = agents.len() as i64;
    let cutoff = now - ALIVE_THRESHOLD;
    let active = agents
        .iter()
        .filter(|a| a.last_heartbeat.is_some_and(|h| h >= cutoff))
        .count() as i64;
    let snap = snapshot(&state.nats).await;
    let missing: Vec<String> = snap
        .streams
        .iter()
        .chain(&snap.kv_buckets)
        .chain(&snap.object_stores)
        .filter(|p| !p.exists)
        .map(|p| p.name.clone())
        .collect();
    let total = STREAMS.len() + KV_BUCKETS.len() + OBJECT_STORES.len();
    let (mut recent, mut failed) = (0, 0);
    state
        .store
        .scan_results_by_started_desc(Some(now - RECENT_WINDOW), |r| {
            recent += 1;
            failed += i64::from(r.exit_code.is_some_and(|c| c != 0));
            true
        })?;
    let status = status_of(missing.is_empty(), known, known - active);
    let code = match status {
        HealthStatus::Ok | HealthStatus::Unknown => StatusCode::OK,
        HealthStatus::Degraded => StatusCode::SERVICE_UNAVAILABLE,
    };
    Ok((
        code,
        Json(FleetHealth {
            status,
            agents: AgentsHealth {
                known,
                active,
                stale: known - active,
            },
            jetstream: JetstreamHealth {
                all_ok: missing.is_empty(),
                healthy: total - missing.len(),
                total,
                missing,
            },
            recent_results: RecentResults {
                window_hours: RECENT_WINDOW.num_hours(),
                total: recent,
                failed,
            },
            observed_at: now,
        }),
    ))
}

#[derive(Serialize, Debug, PartialEq)]
pub struct ScanDurationStats {
    job_id: String,
    count: i64,
    min_ms: i64,
    p50_ms: i64,
    p95_ms: i64,
    p99_ms: i64,
    max_ms: i64,
    mean_ms: i64,
    max_result_id: Option<String>,
}

#[derive(Deserialize)]
pub struct ScanDurationParams {
    since: Option<String>,
}

/// `GET /api/health/scan_durations?since`: per job over results finished
/// since `since` (default 24 h ago), slowest p95 first. Durations are
/// exact integer milliseconds between the two timestamps; negative ones
/// count as 0.
pub async fn scan_durations(
    State(state): State<AppState>,
    ApiQuery(p): ApiQuery<ScanDurationParams>,
) -> Result<Json<Vec<ScanDurationStats>>, ApiError> {
    let since = match p.since.as_deref() {
        Some(s) => parse_time("since", s)?,
        None => Utc::now() - Duration::hours(24),
    };
    let runs = state.store.results_finished_since(since)?;
    let samples = runs.into_iter().filter_map(|r| {
        let job = r.job_id?;
        let ms = (r.finished_at? - r.started_at).num_milliseconds().max(0);
        Some((job, r.result_id, ms))
    });
    Ok(Json(summarize(samples)))
}

/// Groups (job_id, result_id, duration ms) per job.
fn summarize(samples: impl Iterator<Item = (String, String, i64)>) -> Vec<ScanDurationStats> {
    let mut by_job: HashMap<String, (Vec<i64>, String, i64)> = HashMap::new();
    for (job, id, ms) in samples {
        let e = by_job
            .entry(job)
            .or_insert_with(|| (Vec::new(), id.clone(), ms));
        e.0.push(ms);
        if ms > e.2 {
            e.1 = id;
            e.2 = ms;
        }
    }
    let mut out: Vec<ScanDurationStats> = by_job
        .into_iter()
        .map(|(job_id, (mut d, slowest, _))| {
            d.sort_unstable();
            let count = d.len() as i64;
            ScanDurationStats {
                job_id,
                count,
                min_ms: d[0],
                p50_ms: nearest_rank(&d, 50),
                p95_ms: nearest_rank(&d, 95),
                p99_ms: nearest_rank(&d, 99),
                max_ms: d[d.len() - 1],
                mean_ms: d.iter().sum::<i64>() / count,
                max_result_id: Some(slowest),
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.p95_ms
            .cmp(&a.p95_ms)
            .then_with(|| a.job_id.cmp(&b.job_id))
    });
    out
}

/// Nearest-rank percentile of sorted, non-empty `d`: the element at index
/// ceil(pct/100 · n) − 1, in integer arithmetic.
fn nearest_rank(d: &[i64], pct: usize) -> i64 {
    let rank = (pct * d.len()).div_ceil(100);
    d[rank.saturating_sub(1).min(d.len() - 1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let d: Vec<i64> = (1..=10).collect();
        assert_eq!(nearest_rank(&d, 50), 5);
        assert_eq!(nearest_rank(&d, 95), 10);
        assert_eq!(nearest_rank(&d, 99), 10);
        assert_eq!(nearest_rank(&[7], 50), 7);
        let hundred: Vec<i64> = (1..=100).collect();
        assert_eq!(nearest_rank(&hundred, 95), 95);
        assert_eq!(nearest_rank(&hundred, 99), 99);
    }

    #[test]
    fn summary_per_job_sorted_by_p95() {
        let samples = vec![
            ("fast".to_string(), "f1".to_string(), 10),
            ("slow".to_string(), "s1".to_string(), 900),
            ("slow".to_string(), "s2".to_string(), 1000),
        ];
        let out = summarize(samples.into_iter());
        assert_eq!(out[0].job_id, "slow");
        assert_eq!(out[0].max_result_id.as_deref(), Some("s2"));
        assert_eq!(out[0].mean_ms, 950);
        assert_eq!(out[1].count, 1);
    }

    #[test]
    fn status_rules() {
        assert_eq!(status_of(true, 3, 0), HealthStatus::Ok);
        assert_eq!(status_of(true, 0, 0), HealthStatus::Unknown);
        assert_eq!(status_of(true, 3, 1), HealthStatus::Degraded);
        assert_eq!(status_of(false, 0, 0), HealthStatus::Degraded);
    }
}
