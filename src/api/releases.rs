//! Agent releases and rollout: `GET /api/agents/releases`,
//! `POST /api/agents/publish`, `DELETE /api/agents/releases/{version}`
//! and `POST /api/agents/rollout`, over the `agent_releases` object store
//! and the `target_version` of the `agent_config` scopes the agents watch.
//!
//! A release is named by the release metadata inside the binary
//! (`kanade_shared::agent_metadata`: product, version, platform), never by
//! a label the operator types, so a release can not claim a version or a
//! platform it is not. Setting a target is a compare-and-set
//! retried on conflict, so it never loses a concurrent config edit; a
//! release still targeted by a scope cannot be deleted.

use axum::extract::{Multipart, Path, State};
use axum::http::StatusCode;
use axum::Json;
use bytes::BytesMut;
use chrono::{DateTime, Utc};
use kanade_shared::bin_platform::{base_version_of_key, candidate_keys, platform_of_key};
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
use crate::api::state::AppState;
use crate::audit::Caller;
use crate::control::{check_key, check_token, parse_duration};

#[derive(Serialize)]
pub struct Release {
    /// The object-store key (version plus platform suffix).
    version: String,
    platform: &'static str,
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
            platform: platform_of_key(&o.name),
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
    /// The object-store key: the bare version for Windows, with the
    /// platform suffix (`-linux-x86_64`, `-macos-aarch64`, …) otherwise.
    key: String,
    platform: &'static str,
    size: u64,
    digest: Option<String>,
}

/// The multipart parts of a publish: the binary and the version the
/// client declares (optional; it must match the binary's own).
struct Upload {
    binary: bytes::Bytes,
    declared: Option<String>,
}

/// Reads the parts; `file` is capped at the kind's size while it streams.
async fn read_upload(mut multipart: Multipart) -> Result<Upload, ApiError> {
    let kind = &AGENT_RELEASES;
    let (mut binary, mut declared) = (None, None);
    while let Some(mut field) = multipart.next_field().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or_default().to_string();
        let mut buf = BytesMut::new();
        while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
            let cap = if name == "file" { kind.max_bytes } else { 1024 };
            if (buf.len() + chunk.len()) as u64 > cap {
                return Err(if name == "file" {
                    too_large(kind)
                } else {
                    ApiError::BadRequest(format!("invalid `{name}`: longer than 1 KiB"))
                });
            }
            if name == "file" || name == "version" {
                buf.extend_from_slice(&chunk);
            }
        }
        let slot_taken = match name.as_str() {
            "file" => binary.replace(buf.freeze()).is_some(),
            "version" => {
                let text = String::from_utf8(buf.to_vec())
                    .map_err(|_| ApiError::bad_param("version", "not UTF-8"))?;
                let text = text.trim().to_string();
                declared
                    .replace((!text.is_empty()).then_some(text))
                    .is_some()
            }
            other => {
                tracing::warn!(field = %other, "agent publish: unknown multipart field ignored");
                false
            }
        };
        if slot_taken {
            return Err(ApiError::BadRequest(format!(
                "multipart body has more than one '{name}' field"
            )));
        }
    }
    let binary = binary.ok_or_else(|| ApiError::BadRequest("missing 'file' field".into()))?;
    if binary.is_empty() {
        return Err(ApiError::bad_param("file", "the file is empty"));
    }
    Ok(Upload {
        binary,
        declared: declared.flatten(),
    })
}

/// `POST /api/agents/publish`: the multipart field `file` (a kanade-agent
/// executable for Windows, Linux or macOS, 64 MiB at most) stored under
/// the key its embedded release metadata names, never a label the
/// operator types; an optional `version` field must agree with it.
pub async fn publish(
    State(state): State<AppState>,
    caller: Caller,
    multipart: Multipart,
) -> Result<Json<Published>, ApiError> {
    let Upload { binary, declared } = read_upload(multipart).await?;
    let image = binary.clone();
    let admitted = tokio::task::spawn_blocking(move || {
        kanade_shared::agent_metadata::admit_agent_binary(&image, declared.as_deref())
    })
    .await
    .map_err(|e| ApiError::Internal(format!("read the binary's metadata: {e}")))?
    .map_err(|e| ApiError::BadRequest(format!("agent publish refused: {e} (field `file`)")))?;
    let (key, version) = (admitted.key, admitted.version);
    let platform = admitted.platform.as_str();
    let size = binary.len() as u64;
    let store = open(&state, &AGENT_RELEASES).await?;
    let info = store
        .put(key.as_str(), &mut std::io::Cursor::new(binary))
        .await
        .map_err(|e| ApiError::BadGateway(format!("store release {key}: {e}")))?;
    tracing::info!(%version, %key, platform, size, "agent release published");
    audit(
        &state.control,
        &caller,
        "agent_publish",
        &key,
        serde_json::json!({"version": version, "platform": platform, "size": size, "digest": info.digest}),
    )
    .await;
    Ok(Json(Published {
        version,
        key,
        platform,
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
        .filter(|(_, s)| s.target_version.as_deref() == Some(base_version_of_key(&version)))
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
    // Agents append their own platform suffix to the target: any
    // platform's build makes the version known.
    let version = base_version_of_key(&version).to_string();
    let store = open(&state, &AGENT_RELEASES).await?;
    let mut published = false;
    for key in candidate_keys(&version) {
        if matches!(store.info(key.as_str()).await, Ok(info) if !info.deleted) {
            published = true;
            break;
        }
    }
    if !published {
        return Err(ApiError::NotFound(format!(
            "version '{version}' not found in agent_releases — run `kanade agent publish` first"
        )));
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
