//! `/api/collect/bundles*`: the zip bundles agents upload for `collect:`
//! jobs into the `collections` object store, keyed
//! `<pc_id>/<job_id>/[<label>__]<timestamp>.zip`. Listed from the store
//! itself (so a bundle that aged out of it is never listed), named from
//! the job's `collect:` block while the job exists; downloads stream
//! (`If-Match`, one `Range`); deletes are for operators and audited.
//! Retention is the store's own `max_age` (`collect_retention_days`).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use serde::Serialize;

use super::error::ApiError;
use super::objects::{delete_key, download_key, live_objects, modified, Served, COLLECTIONS};
use crate::api::state::AppState;
use crate::audit::Caller;

/// One bundle.
#[derive(Serialize)]
pub struct Bundle {
    key: String,
    pc_id: String,
    job_id: String,
    /// The agent's UTC timestamp from the name (`20260625T220000.123Z`),
    /// else when the store took it.
    collected_at: Option<String>,
    label: Option<String>,
    size: u64,
    digest: Option<String>,
    name: Option<String>,
    description: Option<String>,
}

/// `(pc_id, job_id, label, timestamp)` of a bundle key; `None` for a key
/// not of that shape.
pub fn parse_key(key: &str) -> Option<(&str, &str, Option<&str>, &str)> {
    let mut parts = key.split('/');
    let (pc, job, file) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || pc.is_empty() || job.is_empty() {
        return None;
    }
    let stem = file.strip_suffix(".zip").filter(|s| !s.is_empty())?;
    Some(match stem.rsplit_once("__") {
        Some((label, ts)) if !label.is_empty() && !ts.is_empty() => (pc, job, Some(label), ts),
        _ => (pc, job, None, stem),
    })
}

/// `GET /api/collect/bundles`: every bundle, newest first.
pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<Bundle>>, ApiError> {
    let objects = live_objects(&state, &COLLECTIONS).await?;
    let mut out = Vec::with_capacity(objects.len());
    for o in objects {
        let Some((pc, job, label, ts)) = parse_key(&o.name) else {
            tracing::warn!(key = %o.name, "collections object not named as a bundle; not listed");
            continue;
        };
        let hint = state
            .inventory
            .manifests
            .get(job)
            .await
            .and_then(|m| m.collect.clone());
        out.push(Bundle {
            pc_id: pc.to_string(),
            job_id: job.to_string(),
            label: label.map(str::to_string),
            collected_at: Some(ts.to_string())
                .filter(|t| !t.is_empty())
                .or_else(|| modified(&o).map(|m| m.to_rfc3339())),
            size: o.size as u64,
            digest: o.digest.clone(),
            name: hint.as_ref().map(|h| h.name.clone()),
            description: hint.and_then(|h| h.description),
            key: o.name,
        });
    }
    out.sort_by(|a, b| {
        b.collected_at
            .cmp(&a.collected_at)
            .then_with(|| a.key.cmp(&b.key))
    });
    Ok(Json(out))
}

/// A key from the path: non-empty printable ASCII, at most 1024 bytes.
fn check_key(key: &str) -> Result<(), ApiError> {
    if key.trim().is_empty() {
        return Err(ApiError::bad_param("key", "bundle key must be non-empty"));
    }
    if key.len() > 1024 || key.chars().any(|c| !c.is_ascii() || c.is_ascii_control()) {
        return Err(ApiError::bad_param(
            "key",
            "bundle key must be printable ASCII, at most 1024 bytes",
        ));
    }
    Ok(())
}

/// `GET /api/collect/bundles/{*key}`: the zip, streamed.
pub async fn download(
    State(state): State<AppState>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_key(&key)?;
    let served = Served {
        filename: key.replace('/', "-").replace(['\\', '"'], "_"),
        content_type: "application/zip",
    };
    download_key(&state, &COLLECTIONS, &key, &served, &headers).await
}

/// `DELETE /api/collect/bundles/{*key}` (operator).
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
) -> Result<StatusCode, ApiError> {
    check_key(&key)?;
    let payload = serde_json::json!({ "key": key });
    delete_key(&state, &COLLECTIONS, &caller, &key, payload).await
}

#[cfg(test)]
mod tests {
    use super::parse_key;

    #[test]
    fn bundle_keys_split_into_pc_job_label_and_time() {
        assert_eq!(
            parse_key("PC1/shots/20260101__20260625T220000.123Z.zip"),
            Some(("PC1", "shots", Some("20260101"), "20260625T220000.123Z"))
        );
        assert_eq!(
            parse_key("PC1/shots/20260625T220000.123Z-r1.zip"),
            Some(("PC1", "shots", None, "20260625T220000.123Z-r1"))
        );
        assert_eq!(
            parse_key("PC1/shots/__x.zip"),
            Some(("PC1", "shots", None, "__x"))
        );
        for bad in [
            "PC1/shots.zip",
            "a/b/c/d.zip",
            "/b/c.zip",
            "a/b/.zip",
            "a/b/c.txt",
        ] {
            assert_eq!(parse_key(bad), None, "{bad}");
        }
    }
}
