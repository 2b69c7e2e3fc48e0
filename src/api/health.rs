//! `/api/health/fleet`, `/api/health/scan_durations` and
//! `/api/jetstream/status`.

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
use super::offload;
use super::params::{parse_time, ApiQuery};
use crate::api::state::AppState;

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
/// one probe timeout, not one per resource; with no connection at all
/// there is nothing to ask, and every resource is reported missing at once
/// (a dashboard with the broker down does not wait out the timeout).
async fn snapshot(nats: &async_nats::Client) -> JetstreamSnapshot {
    use futures::future::join_all;
    if nats.connection_state() != async_nats::connection::State::Connected {
        let missing = |names: &[&str]| {
            names
                .iter()
                .map(|n| ResourceProbe {
                    name: n.to_string(),
                    exists: false,
                })
                .collect()
        };
        return JetstreamSnapshot {
            streams: missing(&STREAMS),
            kv_buckets: missing(&KV_BUCKETS),
            object_stores: missing(&OBJECT_STORES),
        };
    }
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
/// since `since` (default 24 h ago), slowest p95 first, computed by
/// DataFusion over the finished runs (see `PerfQueries::scan_durations`).
pub async fn scan_durations(
    State(state): State<AppState>,
    ApiQuery(p): ApiQuery<ScanDurationParams>,
) -> Result<Json<Vec<ScanDurationStats>>, ApiError> {
    let since = match p.since.as_deref() {
        Some(s) => parse_time("since", s)?,
        None => Utc::now() - Duration::hours(24),
    };
    let q = state.queries.clone();
    let stats = offload::query(async move { q.scan_durations(since).await }).await?;
    Ok(Json(
        stats
            .into_iter()
            .map(|s| ScanDurationStats {
                job_id: s.job_id,
                count: s.count,
                min_ms: s.min_ms,
                p50_ms: s.p50_ms,
                p95_ms: s.p95_ms,
                p99_ms: s.p99_ms,
                max_ms: s.max_ms,
                mean_ms: s.mean_ms,
                max_result_id: s.max_result_id,
            })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_rules() {
        assert_eq!(status_of(true, 3, 0), HealthStatus::Ok);
        assert_eq!(status_of(true, 0, 0), HealthStatus::Unknown);
        assert_eq!(status_of(true, 3, 1), HealthStatus::Degraded);
        assert_eq!(status_of(false, 0, 0), HealthStatus::Degraded);
    }
}
