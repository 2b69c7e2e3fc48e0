//! `GET /metrics` (token-protected like `/api`) and the middleware that
//! counts every request by route and status.

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::offload;
use crate::api::state::AppState;
use crate::metrics::{self, ConsumerLabels, RequestLabels, RouteLabels};

/// How long a scrape waits on the broker for a consumer's pending count.
const STREAM_INFO_TIMEOUT: Duration = Duration::from_secs(1);

/// Counts the request and its latency under its route template.
pub async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "fallback".to_string(), |p| route_label(p.as_str()));
    let method = request.method().as_str().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let m = metrics::get();
    m.http_seconds
        .get_or_create(&RouteLabels {
            method: method.clone(),
            route: route.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    m.http_requests
        .get_or_create(&RequestLabels {
            method,
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

/// A route template as a label value: `{param}` written `:param`, since
/// common exposition parsers split label sets at the first `}`.
fn route_label(template: &str) -> String {
    template.replace('{', ":").replace('}', "")
}

/// `GET /metrics`: OpenMetrics text. Sizes and positions are read now.
pub async fn scrape(State(state): State<AppState>) -> Result<Response, ApiError> {
    let m = metrics::get();
    let (tables, store) = (state.tables.clone(), state.store.clone());
    let consumers = crate::ingest::stream::consumers();
    let (stats, positions) = offload::blocking(move || {
        let mut stats = Vec::new();
        for t in tables.each() {
            stats.push((t.spec().name, t.stats()?));
        }
        let mut positions = Vec::with_capacity(consumers.len());
        for (stream, durable) in consumers {
            positions.push((stream, durable, store.consumer_position(durable)?));
        }
        Ok((stats, positions))
    })
    .await?;
    for (table, s) in &stats {
        m.table(table, s);
    }
    m.queries(&state.queries);
    for (stream, consumer, applied) in positions {
        let labels = ConsumerLabels { stream, consumer };
        m.consumer_position
            .get_or_create(&labels)
            .set(i64::try_from(applied).unwrap_or(i64::MAX));
        // The broker's count for the durable, so a filtered consumer's lag
        // counts only the messages it will receive.
        let pending = tokio::time::timeout(STREAM_INFO_TIMEOUT, async {
            let s = state.control.js.get_stream(stream).await.ok()?;
            let info = s.consumer_info(consumer).await.ok()?;
            Some(info.num_pending + info.num_ack_pending as u64)
        })
        .await
        .ok()
        .flatten();
        if let Some(pending) = pending {
            m.consumer_lag
                .get_or_create(&labels)
                .set(i64::try_from(pending).unwrap_or(i64::MAX));
        }
    }
    let up = state.nats.connection_state() == async_nats::connection::State::Connected;
    m.nats_connected.set(i64::from(up));
    m.ready
        .set(i64::from(super::ready::reasons(&state).await.is_empty()));
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    #[test]
    fn route_labels_have_no_braces() {
        assert_eq!(
            super::route_label("/api/agents/{pc_id}/groups/{group}"),
            "/api/agents/:pc_id/groups/:group"
        );
    }
}
