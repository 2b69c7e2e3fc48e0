//! App packages (`app_packages`) and script objects (`scripts`): the two
//! object-store resources, served by one module. Uploads stream from the
//! request into the store in chunks (an 8 GB package never sits in
//! memory) and are capped per kind (413 past it); downloads stream back
//! with `ETag`, `If-Match` and single `Range` support (416 when it cannot
//! be served).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Multipart, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use kanade_shared::kv::{
    OBJECT_AGENT_RELEASES, OBJECT_APP_PACKAGES, OBJECT_COLLECTIONS, OBJECT_SCRIPTS,
};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt};

use super::error::ApiError;
use super::jobs::audit;
use crate::api::state::AppState;
use crate::audit::Caller;

/// One object-store resource.
pub struct Kind {
    pub(super) bucket: &'static str,
    /// How errors name an object (`app package`).
    pub(super) label: &'static str,
    /// Audit action prefix (`app_package`).
    pub(super) audit: &'static str,
    /// Largest object accepted, in bytes.
    pub max_bytes: u64,
}

/// Installers and binaries (8 GiB each at most, as the reference).
pub const APP_PACKAGES: Kind = Kind {
    bucket: OBJECT_APP_PACKAGES,
    label: "app package",
    audit: "app_package",
    max_bytes: 8 << 30,
};

/// Manifest script bodies (4 MiB each at most, as the reference).
pub const SCRIPTS: Kind = Kind {
    bucket: OBJECT_SCRIPTS,
    label: "script object",
    audit: "script_object",
    max_bytes: 4 << 20,
};

/// Agent binaries for the staged self-update (64 MiB each at most, as
/// the reference), named by the bare version read from the binary.
pub const AGENT_RELEASES: Kind = Kind {
    bucket: OBJECT_AGENT_RELEASES,
    label: "agent release",
    audit: "agent_release",
    max_bytes: 64 << 20,
};

/// Bundles agents collected (`collect:` jobs); written only by agents.
pub const COLLECTIONS: Kind = Kind {
    bucket: OBJECT_COLLECTIONS,
    label: "bundle",
    audit: "collect_bundle",
    max_bytes: 0,
};

/// Checks a `name` / `version` path segment (printable ASCII, no `/`,
/// `"` or `\`).
pub(super) fn check_segment(label: &'static str, s: &str) -> Result<(), ApiError> {
    let bad = if s.is_empty() {
        Some("must be non-empty".to_string())
    } else if s.contains('/') {
        Some("must not contain '/'".into())
    } else if s.len() > 255 {
        Some("must be at most 255 characters".into())
    } else {
        s.chars().find_map(|c| {
            if !c.is_ascii() {
                Some(format!("must be printable ASCII (rejected {c:?})"))
            } else if c.is_ascii_control() {
                Some("must not contain control characters".into())
            } else if matches!(c, '"' | '\\') {
                Some("must not contain '\"' or '\\'".into())
            } else {
                None
            }
        })
    };
    match bad {
        Some(m) => Err(ApiError::bad_param(label, m)),
        None => Ok(()),
    }
}

pub(super) async fn open(
    state: &AppState,
    kind: &Kind,
) -> Result<async_nats::jetstream::object_store::ObjectStore, ApiError> {
    state
        .control
        .js
        .get_object_store(kind.bucket)
        .await
        .map_err(|e| {
            ApiError::Unavailable(format!("object store '{}' unavailable: {e}", kind.bucket))
        })
}

#[derive(Serialize)]
pub struct Listed {
    name: String,
    version: String,
    size: u64,
    digest: Option<String>,
    modified: Option<DateTime<Utc>>,
}

/// Every live object of a kind.
pub(super) async fn live_objects(
    state: &AppState,
    kind: &Kind,
) -> Result<Vec<async_nats::jetstream::object_store::ObjectInfo>, ApiError> {
    let store = open(state, kind).await?;
    let broker =
        |e: &dyn std::fmt::Display| ApiError::BadGateway(format!("list {}: {e}", kind.bucket));
    let mut objects = store.list().await.map_err(|e| broker(&e))?;
    let mut out = Vec::new();
    while let Some(o) = objects.next().await {
        let o = o.map_err(|e| broker(&e))?;
        if !o.deleted {
            out.push(o);
        }
    }
    Ok(out)
}

/// When an object was stored.
pub(super) fn modified(
    o: &async_nats::jetstream::object_store::ObjectInfo,
) -> Option<DateTime<Utc>> {
    o.modified
        .and_then(|t| DateTime::from_timestamp(t.unix_timestamp(), t.nanosecond()))
}

/// Every object as `{name, version, size, digest, modified}`, newest first.
pub async fn list(state: &AppState, kind: &Kind) -> Result<Json<Vec<Listed>>, ApiError> {
    let mut out: Vec<Listed> = live_objects(state, kind)
        .await?
        .into_iter()
        .filter_map(|o| {
            let (name, version) = o.name.rsplit_once('/')?;
            Some(Listed {
                name: name.into(),
                version: version.into(),
                size: o.size as u64,
                modified: modified(&o),
                digest: o.digest,
            })
        })
        .collect();
    out.sort_by(|a, b| {
        b.modified
            .cmp(&a.modified)
            .then_with(|| a.name.cmp(&b.name))
            .then_with(|| a.version.cmp(&b.version))
    });
    Ok(Json(out))
}

#[derive(Serialize)]
pub struct Stored {
    name: String,
    version: String,
    size: u64,
    digest: Option<String>,
}

/// Streams the multipart field `file` into the store under
/// `name/version` (replacing it; an empty file is refused before anything
/// is written).
pub async fn upload(
    state: &AppState,
    kind: &Kind,
    caller: &Caller,
    (name, version): (String, String),
    mut multipart: Multipart,
) -> Result<Json<Stored>, ApiError> {
    check_segment("name", &name)?;
    check_segment("version", &version)?;
    let key = format!("{name}/{version}");
    let store = open(state, kind).await?;
    let mut stored = None;
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        if field.name() != Some("file") {
            let mut field = field;
            while field.chunk().await.map_err(multipart_error)?.is_some() {}
            continue;
        }
        if stored.is_some() {
            return Err(ApiError::BadRequest(
                "multipart body has more than one 'file' field".into(),
            ));
        }
        let too_big = Arc::new(AtomicBool::new(false));
        let (flag, max) = (Arc::clone(&too_big), kind.max_bytes);
        let mut seen = 0u64;
        let chunks = field.map(move |chunk| {
            let chunk = chunk.map_err(std::io::Error::other)?;
            seen += chunk.len() as u64;
            if seen > max {
                flag.store(true, Ordering::SeqCst);
                return Err(std::io::Error::other("the file is over the size limit"));
            }
            Ok(chunk)
        });
        let mut reader = tokio_util::io::StreamReader::new(chunks);
        let first = reader.fill_buf().await;
        if too_big.load(Ordering::SeqCst) {
            return Err(too_large(kind));
        }
        match first {
            Ok([]) => return Err(ApiError::BadRequest("'file' field is empty".into())),
            Ok(_) => {}
            Err(e) => return Err(ApiError::BadRequest(format!("read file field: {e}"))),
        }
        let info = store.put(key.as_str(), &mut reader).await;
        if too_big.load(Ordering::SeqCst) {
            return Err(too_large(kind));
        }
        stored = Some(info.map_err(|e| ApiError::BadGateway(format!("store {key}: {e}")))?);
    }
    let info = stored.ok_or_else(|| ApiError::BadRequest("missing 'file' field".into()))?;
    let out = Stored {
        name,
        version,
        size: info.size as u64,
        digest: info.digest,
    };
    audit(
        &state.control,
        caller,
        &format!("{}_publish", kind.audit),
        &key,
        serde_json::json!({
            "name": out.name, "version": out.version, "size": out.size, "digest": out.digest,
        }),
    )
    .await;
    Ok(Json(out))
}

pub(super) fn too_large(kind: &Kind) -> ApiError {
    ApiError::PayloadTooLarge(format!(
        "a {} may be at most {} bytes",
        kind.label, kind.max_bytes
    ))
}

pub(super) fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge(e.body_text())
    } else {
        ApiError::BadRequest(format!("invalid multipart body: {}", e.body_text()))
    }
}

/// A single `Range: bytes=N-` / `bytes=N-M` within `size`.
fn parse_range(raw: &str, size: u64) -> Option<(u64, u64)> {
    let spec = raw.trim().strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let start: u64 = a.trim().parse().ok()?;
    let end: u64 = if b.trim().is_empty() {
        size.checked_sub(1)?
    } else {
        b.trim().parse().ok()?
    };
    (start <= end && end < size).then_some((start, end))
}

/// Streams `name/version` back, honouring `If-Match` and one `Range`.
pub async fn download(
    state: &AppState,
    kind: &Kind,
    (name, version): (String, String),
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    check_segment("name", &name)?;
    check_segment("version", &version)?;
    let key = format!("{name}/{version}");
    let served = Served {
        filename: format!("{name}-{version}"),
        content_type: "application/octet-stream",
    };
    download_key(state, kind, &key, &served, headers).await
}

/// How a download is labelled.
pub(super) struct Served {
    pub filename: String,
    pub content_type: &'static str,
}

/// Streams the object `key` back, honouring `If-Match` and one `Range`.
pub(super) async fn download_key(
    state: &AppState,
    kind: &Kind,
    key: &str,
    served: &Served,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let store = open(state, kind).await?;
    let info = match store.info(key).await {
        Ok(info) if !info.deleted => info,
        _ => {
            return Err(ApiError::NotFound(format!(
                "{} '{key}' not found",
                kind.label
            )))
        }
    };
    let size = info.size as u64;
    let etag = info.digest.as_ref().map(|d| format!("\"{d}\""));
    if let (Some(want), Some(have)) = (
        headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()),
        &etag,
    ) {
        if want.trim() != "*" && want.trim() != have {
            return Err(ApiError::PreconditionFailed(format!(
                "If-Match {want} does not match the current ETag {have}"
            )));
        }
    }
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        None => None,
        Some(raw) => match parse_range(raw, size) {
            Some(r) => Some(r),
            None => {
                let body = serde_json::json!({"error": format!("invalid `Range` {raw:?} for an object of {size} bytes (one bytes=N- or bytes=N-M range)")});
                return Ok((
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    [(header::CONTENT_RANGE, format!("bytes */{size}"))],
                    Json(body),
                )
                    .into_response());
            }
        },
    };
    let (start, len) = range.map_or((0, size), |(s, e)| (s, e - s + 1));
    let mut object = tokio_util::io::StreamReader::new(chunks(state, kind, &info).await?);
    if start > 0 {
        tokio::io::copy(&mut (&mut object).take(start), &mut tokio::io::sink())
            .await
            .map_err(|e| ApiError::BadGateway(format!("read {key}: {e}")))?;
    }
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(object.take(len)));
    let mut response = Response::builder()
        .status(if range.is_some() {
            StatusCode::PARTIAL_CONTENT
        } else {
            StatusCode::OK
        })
        .header(header::CONTENT_TYPE, served.content_type)
        .header(header::CONTENT_LENGTH, len)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{}\"", served.filename),
        );
    if let Some(t) = &etag {
        response = response.header(header::ETAG, t);
    }
    if let Some((s, e)) = range {
        response = response.header(header::CONTENT_RANGE, format!("bytes {s}-{e}/{size}"));
    }
    response
        .body(body)
        .map_err(|e| ApiError::Internal(e.to_string()))
}

/// Chunks of an object read back in a bounded window: a pull consumer
/// fetching a few chunks at a time, where the client library's
/// object reader uses a push consumer whose flow-control window let tens
/// of MB pile up in memory while a slow client downloads.
pub(super) async fn chunks(
    state: &AppState,
    kind: &Kind,
    info: &async_nats::jetstream::object_store::ObjectInfo,
) -> Result<impl futures::Stream<Item = std::io::Result<bytes::Bytes>>, ApiError> {
    use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
    /// Chunks (128 KiB each by default) asked for per pull.
    const WINDOW: usize = 4;
    let unavailable = |e: &dyn std::fmt::Display| {
        ApiError::BadGateway(format!("read {} '{}': {e}", kind.bucket, info.name))
    };
    let stream = state
        .control
        .js
        .get_stream(format!("OBJ_{}", kind.bucket))
        .await
        .map_err(|e| unavailable(&e))?;
    let consumer = stream
        .create_consumer(pull::Config {
            filter_subject: format!("$O.{}.C.{}", kind.bucket, info.nuid),
            ack_policy: AckPolicy::None,
            deliver_policy: DeliverPolicy::All,
            memory_storage: true,
            inactive_threshold: std::time::Duration::from_secs(30),
            ..Default::default()
        })
        .await
        .map_err(|e| unavailable(&e))?;
    let messages = consumer
        .stream()
        .max_messages_per_batch(WINDOW)
        .messages()
        .await
        .map_err(|e| unavailable(&e))?;
    Ok(messages
        .take(info.chunks)
        .map(|m| m.map(|m| m.payload.clone()).map_err(std::io::Error::other)))
}

/// Deletes `name/version` (404 when absent).
pub async fn delete(
    state: &AppState,
    kind: &Kind,
    caller: &Caller,
    (name, version): (String, String),
) -> Result<StatusCode, ApiError> {
    check_segment("name", &name)?;
    check_segment("version", &version)?;
    let key = format!("{name}/{version}");
    let payload = serde_json::json!({"name": name, "version": version});
    delete_key(state, kind, caller, &key, payload).await
}

/// Deletes the object `key` (404 when absent) and audits it with `payload`.
pub(super) async fn delete_key(
    state: &AppState,
    kind: &Kind,
    caller: &Caller,
    key: &str,
    payload: serde_json::Value,
) -> Result<StatusCode, ApiError> {
    let store = open(state, kind).await?;
    let gone = || ApiError::NotFound(format!("{} '{key}' not in the object store", kind.label));
    match store.info(key).await {
        Ok(info) if !info.deleted => {}
        _ => return Err(gone()),
    }
    store
        .delete(key)
        .await
        .map_err(|e| ApiError::BadGateway(format!("delete {key}: {e}")))?;
    audit(
        &state.control,
        caller,
        &format!("{}_delete", kind.audit),
        key,
        payload,
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// The routes of one kind, as handlers axum can take.
macro_rules! object_routes {
    ($kind:expr, $list:ident, $upload:ident, $download:ident, $delete:ident) => {
        pub async fn $list(State(state): State<AppState>) -> Result<Json<Vec<Listed>>, ApiError> {
            list(&state, &$kind).await
        }
        pub async fn $upload(
            State(state): State<AppState>,
            caller: Caller,
            Path(key): Path<(String, String)>,
            multipart: Multipart,
        ) -> Result<Json<Stored>, ApiError> {
            upload(&state, &$kind, &caller, key, multipart).await
        }
        pub async fn $download(
            State(state): State<AppState>,
            Path(key): Path<(String, String)>,
            headers: HeaderMap,
        ) -> Result<Response, ApiError> {
            download(&state, &$kind, key, &headers).await
        }
        pub async fn $delete(
            State(state): State<AppState>,
            caller: Caller,
            Path(key): Path<(String, String)>,
        ) -> Result<StatusCode, ApiError> {
            delete(&state, &$kind, &caller, key).await
        }
    };
}

object_routes!(
    APP_PACKAGES,
    list_packages,
    upload_package,
    download_package,
    delete_package
);
object_routes!(
    SCRIPTS,
    list_scripts,
    upload_script,
    download_script,
    delete_script
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_within_the_object_only() {
        assert_eq!(parse_range("bytes=0-", 10), Some((0, 9)));
        assert_eq!(parse_range("bytes=2-5", 10), Some((2, 5)));
        for bad in [
            "bytes=-3",
            "bytes=5-2",
            "bytes=0-10",
            "bytes=10-",
            "items=0-1",
            "bytes=0-1,3-4",
            "bytes=x-",
        ] {
            assert_eq!(parse_range(bad, 10), None, "{bad}");
        }
        assert_eq!(parse_range("bytes=0-", 0), None);
    }

    #[test]
    fn segments_are_checked() {
        check_segment("name", "kanade-client").unwrap();
        check_segment("version", "0.41.0-beta 2").unwrap();
        for bad in ["", "a/b", "é", "a\"b", "a\\b", "a\nb"] {
            assert!(
                check_segment("name", bad)
                    .unwrap_err()
                    .to_string()
                    .contains("`name`"),
                "{bad:?}"
            );
        }
    }
}
