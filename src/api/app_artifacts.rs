//! `/api/app-artifacts*`: kanade 0.101's immutable app artifacts, stored
//! in the `app_packages` object store under their canonical identity key
//! `<role>/<version>/<os>-<arch>-<distro_abi>.<format>` with the
//! publication (identity and integrity) in the object's metadata.
//! Integrity only: no signature, alias or admission is implied, and as
//! upstream nothing dispatches them (deploy plans reference them).
//!
//! A publication is written once: the bytes are staged under a private
//! name, checked against the declared size and SHA-256, and then the
//! canonical entry is created with `Nats-Expected-Last-Subject-Sequence:
//! 0`, so two publishers cannot both take a key and a published artifact
//! never changes. The same publication again is accepted (200); other
//! bytes or metadata under a taken identity are a 409. Reads verify the
//! bytes against the publication before answering.

use async_nats::jetstream::object_store::{ObjectInfo, ObjectStore};
use axum::body::Body;
use axum::extract::{Multipart, Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE;
use base64::Engine;
use futures::{StreamExt, TryStreamExt};
use kanade_shared::artifact::{ArtifactIdentity, ArtifactIntegrity, ArtifactSha256};
use kanade_shared::kv::OBJECT_APP_PACKAGES;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::error::ApiError;
use super::objects::{self, multipart_error, APP_PACKAGES};
use crate::api::state::AppState;
use crate::audit::Caller;

/// Object metadata key holding the publication.
const RECORD: &str = "kanade.artifact.v1";
/// The opt-in upstream requires before it publishes identities.
const ENABLE: &str = "KANADE_APP_ARTIFACT_PUBLICATION";
const METADATA_MAX: usize = 4096;

/// What a publisher declares, and what the API answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Publication {
    pub identity: ArtifactIdentity,
    pub integrity: ArtifactIntegrity,
}

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    ApiError::Unavailable(e.to_string())
}

fn invalid(e: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest(e.to_string())
}

fn key_of(p: &Publication) -> Result<String, ApiError> {
    p.identity.app_package_key().map_err(invalid)
}

fn meta_subject(key: &str) -> String {
    format!("$O.{OBJECT_APP_PACKAGES}.M.{}", URL_SAFE.encode(key))
}

/// The publication an entry carries, checked against the entry itself
/// (name, size, digest, no link, not deleted).
fn record(info: &ObjectInfo) -> Result<Publication, ApiError> {
    let raw = info
        .metadata
        .get(RECORD)
        .ok_or_else(|| unavailable("artifact record missing"))?;
    let p: Publication = serde_json::from_str(raw).map_err(unavailable)?;
    let consistent = !info.deleted
        && info.bucket == OBJECT_APP_PACKAGES
        && key_of(&p).ok().as_deref() == Some(info.name.as_str())
        && info.size as u64 == p.integrity.size_bytes
        && info.digest.as_deref() == Some(p.integrity.sha256.to_object_store_digest().as_str())
        && info.options.as_ref().is_none_or(|o| o.link.is_none());
    if consistent {
        Ok(p)
    } else {
        Err(unavailable("artifact metadata integrity mismatch"))
    }
}

/// Reads `reader` to its end, refusing anything but exactly `expected`.
async fn verify(
    reader: &mut (impl AsyncRead + Unpin),
    expected: &ArtifactIntegrity,
) -> Result<(), ApiError> {
    let mut hash = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0; 128 * 1024];
    loop {
        let n = reader.read(&mut buf).await.map_err(invalid)?;
        if n == 0 {
            break;
        }
        size = size
            .checked_add(n as u64)
            .filter(|s| *s <= expected.size_bytes)
            .ok_or_else(|| invalid("artifact size or SHA-256 mismatch"))?;
        hash.update(&buf[..n]);
    }
    if size != expected.size_bytes
        || ArtifactSha256::from_bytes(hash.finalize().into()) != expected.sha256
    {
        return Err(invalid("artifact size or SHA-256 mismatch"));
    }
    Ok(())
}

/// The store, after checking it keeps what it is given (no expiry, no
/// eviction, new writes refused when full).
async fn store(state: &AppState) -> Result<ObjectStore, ApiError> {
    let js = &state.control.js;
    let mut stream = js
        .get_stream(format!("OBJ_{OBJECT_APP_PACKAGES}"))
        .await
        .map_err(unavailable)?;
    let config = &stream.info().await.map_err(unavailable)?.config;
    if !config.max_age.is_zero()
        || config.discard != async_nats::jetstream::stream::DiscardPolicy::New
        || config.max_messages > 0
        || config.max_messages_per_subject > 0
    {
        return Err(unavailable(
            "artifact storage requires no expiry/eviction and discard-new",
        ));
    }
    js.get_object_store(OBJECT_APP_PACKAGES)
        .await
        .map_err(unavailable)
}

async fn entry(store: &ObjectStore, key: &str) -> Result<Option<ObjectInfo>, ApiError> {
    match store.info(key).await {
        Ok(info) if !info.deleted => Ok(Some(info)),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == async_nats::jetstream::object_store::InfoErrorKind::NotFound => {
            Ok(None)
        }
        Err(e) => Err(unavailable(e)),
    }
}

/// An existing entry answers the same publication, or it is a 409.
fn same(info: &ObjectInfo, p: &Publication) -> Result<Publication, ApiError> {
    let accepted = record(info)?;
    if accepted == *p {
        Ok(accepted)
    } else {
        Err(ApiError::Conflict(
            "identity already has different bytes or metadata".into(),
        ))
    }
}

/// Drops a staging entry and its chunks (nothing references them).
async fn discard(store: &ObjectStore, stage: &str) {
    if let Err(e) = store.delete(stage).await {
        tracing::warn!(error = %e, %stage, "cannot remove a staged artifact upload");
    }
}

/// Drops only a staging entry's metadata: its chunks now belong to the
/// canonical entry.
async fn forget(state: &AppState, stage: &str) {
    let purged = async {
        state
            .control
            .js
            .get_stream(format!("OBJ_{OBJECT_APP_PACKAGES}"))
            .await
            .map_err(|e| e.to_string())?
            .purge()
            .filter(meta_subject(stage))
            .await
            .map_err(|e| e.to_string())
    }
    .await;
    if let Err(e) = purged {
        tracing::warn!(error = %e, %stage, "cannot purge a staged artifact entry");
    }
}

/// Creates the canonical entry pointing at the staged chunks, once.
async fn commit(
    state: &AppState,
    store: &ObjectStore,
    stage: &str,
    mut info: ObjectInfo,
    p: &Publication,
) -> Result<Publication, ApiError> {
    info.name = key_of(p)?;
    info.metadata.insert(
        RECORD.into(),
        serde_json::to_string(p).map_err(|e| ApiError::Internal(e.to_string()))?,
    );
    let body = serde_json::to_vec(&info).map_err(|e| ApiError::Internal(e.to_string()))?;
    for _ in 0..2 {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Expected-Last-Subject-Sequence", "0");
        let created = async {
            state
                .control
                .js
                .publish_with_headers(meta_subject(&info.name), headers, body.clone().into())
                .await
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())
        }
        .await;
        if created.is_ok() {
            forget(state, stage).await;
            return Ok(p.clone());
        }
        // Refused (taken meanwhile) or the answer was lost: the entry
        // says which.
        if let Some(existing) = entry(store, &info.name).await? {
            record(&existing)?;
            if existing.nuid == info.nuid {
                forget(state, stage).await;
            } else {
                discard(store, stage).await;
            }
            return same(&existing, p);
        }
    }
    Err(unavailable(
        "publication outcome unknown; staging retained; retry the same publication",
    ))
}

async fn read_publication(multipart: &mut Multipart) -> Result<Publication, ApiError> {
    let mut field = multipart
        .next_field()
        .await
        .map_err(multipart_error)?
        .filter(|f| f.name() == Some("metadata"))
        .ok_or_else(|| invalid("metadata must precede file"))?;
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        if bytes.len() + chunk.len() > METADATA_MAX {
            return Err(invalid(format!("metadata exceeds {METADATA_MAX} bytes")));
        }
        bytes.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&bytes).map_err(|e| invalid(format!("invalid metadata: {e}")))
}

/// `POST /api/app-artifacts` (multipart `metadata` then `file`).
pub async fn publish(
    State(state): State<AppState>,
    caller: Caller,
    mut multipart: Multipart,
) -> Result<Json<Publication>, ApiError> {
    if std::env::var(ENABLE).as_deref() != Ok("backend-exclusive") {
        return Err(unavailable(format!(
            "identity publication disabled; backend-exclusive broker authorization must be \
             provisioned first ({ENABLE}=backend-exclusive)"
        )));
    }
    let store = store(&state).await?;
    let p = read_publication(&mut multipart).await?;
    let key = key_of(&p)?;
    if p.integrity.size_bytes == 0 || p.integrity.size_bytes > APP_PACKAGES.max_bytes {
        return Err(invalid("artifact size outside upload limit"));
    }
    let field = multipart
        .next_field()
        .await
        .map_err(multipart_error)?
        .ok_or_else(|| invalid("missing file"))?;
    if field.name() != Some("file") {
        return Err(invalid("expected file after metadata"));
    }
    // One byte past the declared size is enough to tell it is too long.
    let limit = p.integrity.size_bytes.saturating_add(1);
    let mut reader =
        tokio_util::io::StreamReader::new(field.map_err(std::io::Error::other)).take(limit);
    let existing = match entry(&store, &key).await? {
        Some(info) => {
            let accepted = same(&info, &p)?;
            verify(&mut reader, &p.integrity).await?;
            Some(accepted)
        }
        None => None,
    };
    let stage = format!("__uploads/app/{}/bytes", uuid::Uuid::new_v4());
    let staged = match existing {
        Some(_) => None,
        None => {
            let put = store.put(stage.as_str(), &mut reader).await;
            let checked = match put {
                Ok(info)
                    if info.size as u64 == p.integrity.size_bytes
                        && info.digest.as_deref()
                            == Some(p.integrity.sha256.to_object_store_digest().as_str()) =>
                {
                    Ok(info)
                }
                Ok(_) => Err(invalid("artifact size or SHA-256 mismatch")),
                Err(e) => Err(ApiError::BadGateway(format!("stage {key}: {e}"))),
            };
            match checked {
                Ok(info) => Some(info),
                Err(e) => {
                    discard(&store, &stage).await;
                    return Err(e);
                }
            }
        }
    };
    drop(reader);
    let trailing = multipart.next_field().await.map_err(multipart_error);
    if !matches!(trailing, Ok(None)) {
        if staged.is_some() {
            discard(&store, &stage).await;
        }
        return Err(match trailing {
            Err(e) => e,
            _ => invalid("unexpected extra multipart field"),
        });
    }
    let accepted = match (staged, existing) {
        (Some(info), _) => commit(&state, &store, &stage, info, &p).await?,
        (None, Some(accepted)) => accepted,
        (None, None) => unreachable!("staged when nothing existed"),
    };
    super::jobs::audit(
        &state.control,
        &caller,
        "app_artifact_publish",
        &key,
        serde_json::to_value(&accepted).map_err(|e| ApiError::Internal(e.to_string()))?,
    )
    .await;
    Ok(Json(accepted))
}

/// The canonical key a path names, or a 400 saying what is wrong.
fn path_key((role, version, package): (String, String, String)) -> Result<String, ApiError> {
    ArtifactIdentity::from_app_package_key(&format!("{role}/{version}/{package}"))
        .map_err(invalid)?
        .app_package_key()
        .map_err(invalid)
}

async fn lookup(state: &AppState, key: &str) -> Result<(ObjectInfo, Publication), ApiError> {
    let store = objects::open(state, &APP_PACKAGES).await?;
    let info = entry(&store, key)
        .await?
        .ok_or_else(|| ApiError::NotFound("artifact not found".into()))?;
    let p = record(&info)?;
    Ok((info, p))
}

/// `GET /api/app-artifacts/{role}/{version}/{package}/metadata`.
pub async fn metadata(
    State(state): State<AppState>,
    Path(path): Path<(String, String, String)>,
) -> Result<Json<Publication>, ApiError> {
    Ok(Json(lookup(&state, &path_key(path)?).await?.1))
}

/// `GET /api/app-artifacts/{role}/{version}/{package}`: the bytes, after
/// they were read once and found to be the published ones (a corrupt
/// artifact is a 503, never a 200 that breaks midway).
pub async fn download(
    State(state): State<AppState>,
    Path(path): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let key = path_key(path)?;
    let (info, p) = lookup(&state, &key).await?;
    let mut check =
        tokio_util::io::StreamReader::new(objects::chunks(&state, &APP_PACKAGES, &info).await?);
    verify(&mut check, &p.integrity)
        .await
        .map_err(|e| unavailable(format!("artifact {key}: {e}")))?;
    let body = objects::chunks(&state, &APP_PACKAGES, &info).await?;
    let expected = p.integrity.clone();
    // Checked again while streaming: the stream fails rather than end
    // cleanly if the bytes changed since the check.
    let checked = body.scan(
        (Sha256::new(), 0u64, false),
        move |(hash, size, done), chunk| {
            if *done {
                return futures::future::ready(None);
            }
            let out = match chunk {
                Ok(c) => {
                    *size += c.len() as u64;
                    hash.update(&c);
                    if *size > expected.size_bytes {
                        *done = true;
                        Err(std::io::Error::other("artifact size mismatch"))
                    } else if *size == expected.size_bytes
                        && ArtifactSha256::from_bytes(hash.clone().finalize().into())
                            != expected.sha256
                    {
                        *done = true;
                        Err(std::io::Error::other("artifact integrity mismatch"))
                    } else {
                        Ok(c)
                    }
                }
                Err(e) => {
                    *done = true;
                    Err(e)
                }
            };
            futures::future::ready(Some(out))
        },
    );
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CACHE_CONTROL, "no-store".to_string()),
            (header::CONTENT_LENGTH, p.integrity.size_bytes.to_string()),
        ],
        Body::from_stream(checked),
    )
        .into_response())
}
