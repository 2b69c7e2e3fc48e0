//! Agent releases and rollout: `GET /api/agents/releases`,
//! `POST /api/agents/publish`, `DELETE /api/agents/releases/{version}`
//! and `POST /api/agents/rollout`, over the `agent_releases` object store
//! and the `target_version` of the `agent_config` scopes the agents watch.
//!
//! A release is named by the version inside the binary (its PE
//! `VERSIONINFO`), never by a label the operator types, so a release can
//! not claim a version it is not. Setting a target is a compare-and-set
//! retried on conflict, so it never loses a concurrent config edit; a
//! release still targeted by a scope cannot be deleted.

use axum::extract::{Multipart, Path, State};
use axum::http::StatusCode;
use axum::Json;
use bytes::BytesMut;
use chrono::{DateTime, Utc};
use kanade_shared::kv::{
    agent_config_group_key, agent_config_pc_key, parse_agent_config_group_key,
    parse_agent_config_pc_key, BUCKET_AGENT_CONFIG, KEY_AGENT_CONFIG_GLOBAL,
};
use kanade_shared::wire::ConfigScope;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::jobs::audit;
use super::objects::{
    check_segment, live_objects, modified, multipart_error, open, too_large, AGENT_RELEASES,
};
use super::params::YamlOrJson;
use crate::audit::Caller;
use crate::control::{check_key, check_token, parse_duration};
use crate::state::AppState;

#[derive(Serialize)]
pub struct Release {
    version: String,
    size: u64,
    digest: Option<String>,
    modified: Option<DateTime<Utc>>,
}

/// `GET /api/agents/releases`: every release, newest first.
pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<Release>>, ApiError> {
    let mut out: Vec<Release> = live_objects(&state, &AGENT_RELEASES)
        .await?
        .into_iter()
        .map(|o| Release {
            modified: modified(&o),
            size: o.size as u64,
            version: o.name,
            digest: o.digest,
        })
        .collect();
    out.sort_by(|a, b| {
        b.modified
            .cmp(&a.modified)
            .then_with(|| a.version.cmp(&b.version))
    });
    Ok(Json(out))
}

#[derive(Serialize)]
pub struct Published {
    version: String,
    size: u64,
    digest: Option<String>,
}

/// `POST /api/agents/publish`: the multipart field `file` (a Windows
/// agent binary, 64 MiB at most) stored under the version its
/// `VERSIONINFO` carries. A `version` field, sent by older clients, is
/// ignored: the binary names itself.
pub async fn publish(
    State(state): State<AppState>,
    caller: Caller,
    mut multipart: Multipart,
) -> Result<Json<Published>, ApiError> {
    let kind = &AGENT_RELEASES;
    let mut binary = None;
    while let Some(mut field) = multipart.next_field().await.map_err(multipart_error)? {
        let is_file = field.name() == Some("file");
        if is_file && binary.is_some() {
            return Err(ApiError::BadRequest(
                "multipart body has more than one 'file' field".into(),
            ));
        }
        // The version must be read from the whole image before anything
        // is stored; the cap keeps that buffer bounded.
        let mut buf = BytesMut::new();
        while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
            if !is_file {
                continue;
            }
            if (buf.len() + chunk.len()) as u64 > kind.max_bytes {
                return Err(too_large(kind));
            }
            buf.extend_from_slice(&chunk);
        }
        if is_file {
            binary = Some(buf.freeze());
        }
    }
    let binary = binary.ok_or_else(|| ApiError::BadRequest("missing 'file' field".into()))?;
    if binary.is_empty() {
        return Err(ApiError::bad_param("file", "the file is empty"));
    }
    let image = binary.clone();
    let version =
        tokio::task::spawn_blocking(move || kanade_shared::exe_version::extract_pe_version(&image))
            .await
            .map_err(|e| ApiError::Internal(format!("read the binary's version: {e}")))?
            .ok_or_else(|| {
                ApiError::bad_param(
                    "file",
                    "not a Windows PE with a VERSIONINFO resource carrying ProductVersion or \
             FileVersion (kanade-agent builds embed one)",
                )
            })?;
    check_segment("version", &version).map_err(|e| {
        ApiError::bad_param(
            "file",
            format!("the binary's version {version:?} cannot name a release ({e})"),
        )
    })?;
    let size = binary.len() as u64;
    let store = open(&state, kind).await?;
    let info = store
        .put(version.as_str(), &mut std::io::Cursor::new(binary))
        .await
        .map_err(|e| ApiError::BadGateway(format!("store release {version}: {e}")))?;
    tracing::info!(%version, size, "agent release published");
    audit(
        &state.control,
        &caller,
        "agent_publish",
        &version,
        serde_json::json!({"size": size, "digest": info.digest}),
    )
    .await;
    Ok(Json(Published {
        version,
        size,
        digest: info.digest,
    }))
}

/// How errors and answers name a scope of `agent_config`.
fn scope_label(key: &str) -> String {
    if key == KEY_AGENT_CONFIG_GLOBAL {
        "global".into()
    } else if let Some(g) = parse_agent_config_group_key(key) {
        format!("group:{g}")
    } else if let Some(pc) = parse_agent_config_pc_key(key) {
        format!("pc:{pc}")
    } else {
        key.into()
    }
}

/// `DELETE /api/agents/releases/{version}`: 409 while any scope targets
/// it, 404 when absent.
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(version): Path<String>,
) -> Result<StatusCode, ApiError> {
    let kind = &AGENT_RELEASES;
    check_segment("version", &version)?;
    let scopes = state
        .control
        .list_json::<ConfigScope>(BUCKET_AGENT_CONFIG)
        .await?;
    let targeting: Vec<String> = scopes
        .iter()
        .filter(|(_, s)| s.target_version.as_deref() == Some(version.as_str()))
        .map(|(key, _)| scope_label(key))
        .collect();
    if !targeting.is_empty() {
        return Err(ApiError::Conflict(format!(
            "release '{version}' is the target_version of scope {} — roll those scopes to \
             another version or clear their target first",
            targeting
                .iter()
                .map(|l| format!("'{l}'"))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let store = open(&state, kind).await?;
    match store.info(version.as_str()).await {
        Ok(info) if !info.deleted => {}
        _ => {
            return Err(ApiError::NotFound(format!(
                "agent release '{version}' not in the object store"
            )))
        }
    }
    store
        .delete(version.as_str())
        .await
        .map_err(|e| ApiError::BadGateway(format!("delete release {version}: {e}")))?;
    audit(
        &state.control,
        &caller,
        "agent_release_delete",
        &version,
        serde_json::json!({}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, Debug)]
#[serde(rename_all = "snake_case", tag = "type", content = "value")]
pub enum RolloutScope {
    Global,
    Group(String),
    Pc(String),
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct RolloutBody {
    version: String,
    scope: RolloutScope,
    /// `target_version_jitter` of the same scope; absent leaves it as is.
    #[serde(default)]
    jitter: Option<String>,
}

#[derive(Serialize)]
pub struct RolledOut {
    version: String,
    scope_key: String,
    scope_label: String,
    jitter: Option<String>,
}

/// `POST /api/agents/rollout`: set `target_version` (and optionally its
/// jitter) of one scope to a published release.
pub async fn rollout(
    State(state): State<AppState>,
    caller: Caller,
    body: YamlOrJson<RolloutBody>,
) -> Result<Json<RolledOut>, ApiError> {
    let RolloutBody {
        version,
        scope,
        jitter,
    } = body.value;
    check_segment("version", &version)?;
    let key = match &scope {
        RolloutScope::Global => KEY_AGENT_CONFIG_GLOBAL.to_string(),
        RolloutScope::Group(g) => {
            check_token("scope.value", g)?;
            agent_config_group_key(g)
        }
        RolloutScope::Pc(pc) => {
            check_key("scope.value", pc)?;
            agent_config_pc_key(pc)
        }
    };
    if let Some(j) = &jitter {
        parse_duration("jitter", j)?;
    }
    let store = open(&state, &AGENT_RELEASES).await?;
    match store.info(version.as_str()).await {
        Ok(info) if !info.deleted => {}
        _ => {
            return Err(ApiError::NotFound(format!(
                "agent release '{version}' has not been published"
            )))
        }
    }
    let kv = state.control.kv(BUCKET_AGENT_CONFIG).await?;
    kanade_shared::kv_cas::read_modify_write(&kv, &key, |s: &mut ConfigScope| {
        let before = s.clone();
        s.target_version = Some(version.clone());
        if let Some(j) = &jitter {
            s.target_version_jitter = Some(j.clone());
        }
        // Rolling out the current target again changes nothing: no
        // write, so agents' watchers are not woken.
        *s != before
    })
    .await
    .map_err(|e| ApiError::BadGateway(format!("set target_version of {key}: {e:#}")))?;
    let label = scope_label(&key);
    tracing::info!(scope = %label, %version, ?jitter, "rollout target set");
    audit(
        &state.control,
        &caller,
        "agent_rollout",
        &key,
        serde_json::json!({"version": version, "scope_label": label, "jitter": jitter}),
    )
    .await;
    Ok(Json(RolledOut {
        version,
        scope_key: key,
        scope_label: label,
        jitter,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_labelled_like_the_reference() {
        assert_eq!(scope_label(KEY_AGENT_CONFIG_GLOBAL), "global");
        assert_eq!(
            scope_label(&agent_config_group_key("canary")),
            "group:canary"
        );
        assert_eq!(scope_label(&agent_config_pc_key("PC-01")), "pc:PC-01");
    }

    #[test]
    fn rollout_bodies_decode_strictly() {
        let b: RolloutBody = serde_json::from_str(
            r#"{"version":"1.2.3","scope":{"type":"group","value":"canary"},"jitter":"5m"}"#,
        )
        .unwrap();
        assert!(matches!(b.scope, RolloutScope::Group(ref g) if g == "canary"));
        let b: RolloutBody =
            serde_json::from_str(r#"{"version":"1.2.3","scope":{"type":"global"}}"#).unwrap();
        assert!(matches!(b.scope, RolloutScope::Global));
        assert!(serde_json::from_str::<RolloutBody>(
            r#"{"version":"1","scope":{"type":"global"},"jiter":"5m"}"#
        )
        .is_err());
        assert!(
            serde_json::from_str::<RolloutBody>(r#"{"version":"1","scope":{"type":"fleet"}}"#)
                .is_err()
        );
    }
}
