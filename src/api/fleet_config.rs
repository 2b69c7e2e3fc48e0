//! Agent configuration and group membership: `/api/config`,
//! `/api/groups/{name}/config`, `/api/pcs/{pc_id}/config`,
//! `/api/agents/{pc_id}/effective_config`, `/api/groups` and
//! `/api/agents/{pc_id}/groups*`, over the `agent_config` and
//! `agent_groups` KV buckets the agents watch.
//!
//! Unlike the reference, two operators editing the same key never
//! silently overwrite each other: every GET answers an `ETag` (the KV
//! revision) and a write carrying `If-Match` is a compare-and-set, the
//! loser getting a 409 naming the current revision. Adding or removing one
//! group is a compare-and-set retried on conflict, so it never loses a
//! concurrent change.

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use kanade_shared::config_field::{apply_field, FieldUpdate};
use kanade_shared::kv::{
    agent_config_group_key, agent_config_pc_key, BUCKET_AGENT_CONFIG, BUCKET_AGENT_GROUPS,
    BUCKET_AGENT_GROUPS_DERIVED, BUCKET_GROUP_CONTACTS, KEY_AGENT_CONFIG_GLOBAL,
    PREFIX_AGENT_CONFIG_GROUPS,
};
use kanade_shared::wire::{
    resolve, AgentGroups, ConfigScope, EffectiveConfig, GroupContacts, ResolutionWarning,
};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::jobs::audit;
use super::params::{etag, IfMatch, YamlOrJson};
use crate::api::state::AppState;
use crate::audit::Caller;
use crate::control::{check_key, check_token, parse_duration, Control};

/// A scope's key in `agent_config`, after checking the name in the path.
fn scope_key(kind: &str, name: &str) -> Result<String, ApiError> {
    match kind {
        "group" => {
            check_token("group", name)?;
            Ok(agent_config_group_key(name))
        }
        _ => {
            check_key("pc_id", name)?;
            Ok(agent_config_pc_key(name))
        }
    }
}

/// Checks the values a scope sets (the reference stores any string).
fn check_scope(s: &ConfigScope) -> Result<(), ApiError> {
    for (field, v) in [
        ("target_version_jitter", &s.target_version_jitter),
        ("heartbeat_interval", &s.heartbeat_interval),
        ("host_perf_interval", &s.host_perf_interval),
    ] {
        if let Some(v) = v {
            parse_duration(field, v)?;
        }
    }
    if s.target_version
        .as_deref()
        .is_some_and(|v| v.trim().is_empty())
    {
        return Err(ApiError::bad_param(
            "target_version",
            "must not be empty when set",
        ));
    }
    Ok(())
}

async fn get_scope(control: &Control, key: &str) -> Result<Response, ApiError> {
    let (scope, rev) = control
        .get_json_rev::<ConfigScope>(BUCKET_AGENT_CONFIG, key)
        .await?;
    Ok((etag(rev), Json(scope.unwrap_or_default())).into_response())
}

async fn put_scope(
    state: &AppState,
    caller: &Caller,
    key: &str,
    scope: ConfigScope,
    if_match: Option<u64>,
) -> Result<Response, ApiError> {
    check_scope(&scope)?;
    let json = serde_json::to_vec(&scope).map_err(|e| ApiError::Internal(e.to_string()))?;
    let rev = state
        .control
        .put_if(BUCKET_AGENT_CONFIG, key, json, if_match)
        .await?;
    audit(
        &state.control,
        caller,
        "config_set",
        key,
        serde_json::json!({
            "scope": key, "config": scope, "revision": rev,
        }),
    )
    .await;
    Ok((etag(rev), Json(scope)).into_response())
}

async fn delete_scope(
    state: &AppState,
    caller: &Caller,
    key: &str,
    if_match: Option<u64>,
) -> Result<StatusCode, ApiError> {
    state
        .control
        .delete_if(BUCKET_AGENT_CONFIG, key, if_match)
        .await?;
    audit(
        &state.control,
        caller,
        "config_clear",
        key,
        serde_json::json!({"scope": key}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/config`.
pub async fn get_global(State(state): State<AppState>) -> Result<Response, ApiError> {
    get_scope(&state.control, KEY_AGENT_CONFIG_GLOBAL).await
}

/// `PUT /api/config`: replace the global scope.
pub async fn put_global(
    State(state): State<AppState>,
    caller: Caller,
    IfMatch(rev): IfMatch,
    body: YamlOrJson<ConfigScope>,
) -> Result<Response, ApiError> {
    put_scope(&state, &caller, KEY_AGENT_CONFIG_GLOBAL, body.value, rev).await
}

/// `GET /api/groups/{name}/config`, `GET /api/pcs/{pc_id}/config`.
pub async fn get_group(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    get_scope(&state.control, &scope_key("group", &name)?).await
}

pub async fn get_pc(
    State(state): State<AppState>,
    Path(pc): Path<String>,
) -> Result<Response, ApiError> {
    get_scope(&state.control, &scope_key("pc", &pc)?).await
}

/// `PUT /api/groups/{name}/config`, `PUT /api/pcs/{pc_id}/config`.
pub async fn put_group(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    IfMatch(rev): IfMatch,
    body: YamlOrJson<ConfigScope>,
) -> Result<Response, ApiError> {
    put_scope(
        &state,
        &caller,
        &scope_key("group", &name)?,
        body.value,
        rev,
    )
    .await
}

pub async fn put_pc(
    State(state): State<AppState>,
    caller: Caller,
    Path(pc): Path<String>,
    IfMatch(rev): IfMatch,
    body: YamlOrJson<ConfigScope>,
) -> Result<Response, ApiError> {
    put_scope(&state, &caller, &scope_key("pc", &pc)?, body.value, rev).await
}

/// `DELETE /api/groups/{name}/config`, `DELETE /api/pcs/{pc_id}/config`.
pub async fn delete_group(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    IfMatch(rev): IfMatch,
) -> Result<StatusCode, ApiError> {
    delete_scope(&state, &caller, &scope_key("group", &name)?, rev).await
}

pub async fn delete_pc(
    State(state): State<AppState>,
    caller: Caller,
    Path(pc): Path<String>,
    IfMatch(rev): IfMatch,
) -> Result<StatusCode, ApiError> {
    delete_scope(&state, &caller, &scope_key("pc", &pc)?, rev).await
}

/// `DELETE /api/config`: clears the global scope.
pub async fn delete_global(
    State(state): State<AppState>,
    caller: Caller,
    IfMatch(rev): IfMatch,
) -> Result<StatusCode, ApiError> {
    delete_scope(&state, &caller, KEY_AGENT_CONFIG_GLOBAL, rev).await
}

/// `GET /api/config/defaults`: what applies where no scope sets a field.
pub async fn defaults() -> Json<EffectiveConfig> {
    Json(EffectiveConfig::builtin_defaults())
}

/// `{"value": "<text>"}` of a field PUT (every field as text, as the CLI
/// sends `kanade config set field=value`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldBody {
    value: String,
}

/// Sets (`Some`) or clears (`None`) one field of the scope at `key`,
/// compare-and-set against concurrent edits; answers the scope and
/// whether it changed (no write when it did not).
async fn edit_field(
    state: &AppState,
    caller: &Caller,
    key: &str,
    field: &str,
    value: Option<&str>,
) -> Result<Json<FieldUpdate>, ApiError> {
    let mut probe = ConfigScope::default();
    apply_field(&mut probe, field, value).map_err(|e| ApiError::BadRequest(format!("{e:#}")))?;
    check_scope(&probe)?;
    let kv = state.control.kv(BUCKET_AGENT_CONFIG).await?;
    let mut changed = false;
    let scope = kanade_shared::kv_cas::read_modify_write(&kv, key, |s: &mut ConfigScope| {
        let before = s.clone();
        changed = apply_field(s, field, value).is_ok() && *s != before;
        changed
    })
    .await
    .map_err(|e| ApiError::BadGateway(format!("update {key}: {e:#}")))?;
    let (action, details) = match value {
        Some(v) => (
            "config_field_set",
            serde_json::json!({"field": field, "value": v, "changed": changed}),
        ),
        None => (
            "config_field_unset",
            serde_json::json!({"field": field, "changed": changed}),
        ),
    };
    audit(&state.control, caller, action, key, details).await;
    Ok(Json(FieldUpdate { scope, changed }))
}

/// `PUT /api/config/fields/{field}`.
pub async fn put_global_field(
    State(state): State<AppState>,
    caller: Caller,
    Path(field): Path<String>,
    body: YamlOrJson<FieldBody>,
) -> Result<Json<FieldUpdate>, ApiError> {
    let v = body.value.value;
    edit_field(&state, &caller, KEY_AGENT_CONFIG_GLOBAL, &field, Some(&v)).await
}

/// `DELETE /api/config/fields/{field}`.
pub async fn delete_global_field(
    State(state): State<AppState>,
    caller: Caller,
    Path(field): Path<String>,
) -> Result<Json<FieldUpdate>, ApiError> {
    edit_field(&state, &caller, KEY_AGENT_CONFIG_GLOBAL, &field, None).await
}

/// `PUT /api/groups/{name}/config/fields/{field}`.
pub async fn put_group_field(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, field)): Path<(String, String)>,
    body: YamlOrJson<FieldBody>,
) -> Result<Json<FieldUpdate>, ApiError> {
    let key = scope_key("group", &name)?;
    let v = body.value.value;
    edit_field(&state, &caller, &key, &field, Some(&v)).await
}

/// `DELETE /api/groups/{name}/config/fields/{field}`.
pub async fn delete_group_field(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, field)): Path<(String, String)>,
) -> Result<Json<FieldUpdate>, ApiError> {
    let key = scope_key("group", &name)?;
    edit_field(&state, &caller, &key, &field, None).await
}

/// `PUT /api/pcs/{pc_id}/config/fields/{field}`.
pub async fn put_pc_field(
    State(state): State<AppState>,
    caller: Caller,
    Path((pc, field)): Path<(String, String)>,
    body: YamlOrJson<FieldBody>,
) -> Result<Json<FieldUpdate>, ApiError> {
    let key = scope_key("pc", &pc)?;
    let v = body.value.value;
    edit_field(&state, &caller, &key, &field, Some(&v)).await
}

/// `DELETE /api/pcs/{pc_id}/config/fields/{field}`.
pub async fn delete_pc_field(
    State(state): State<AppState>,
    caller: Caller,
    Path((pc, field)): Path<(String, String)>,
) -> Result<Json<FieldUpdate>, ApiError> {
    let key = scope_key("pc", &pc)?;
    edit_field(&state, &caller, &key, &field, None).await
}

/// The group scopes by group name.
async fn group_scopes(c: &Control) -> Result<BTreeMap<String, ConfigScope>, ApiError> {
    Ok(c.list_json::<ConfigScope>(BUCKET_AGENT_CONFIG)
        .await?
        .into_iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(PREFIX_AGENT_CONFIG_GROUPS)?.to_string(), v)))
        .collect())
}

/// `GET /api/groups/{name}/config/inherited`: what a group scope builds
/// on (defaults, then the global scope).
pub async fn group_inherited(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<EffectiveConfig>, ApiError> {
    scope_key("group", &name)?;
    let global = state
        .control
        .get_json::<ConfigScope>(BUCKET_AGENT_CONFIG, KEY_AGENT_CONFIG_GLOBAL)
        .await?;
    Ok(Json(
        resolve(global.as_ref(), &BTreeMap::new(), None, &[]).0,
    ))
}

/// `GET /api/pcs/{pc_id}/config/inherited`: what the PC's own scope
/// builds on (defaults, global, its groups).
pub async fn pc_inherited(
    State(state): State<AppState>,
    Path(pc): Path<String>,
) -> Result<Json<EffectiveConfig>, ApiError> {
    check_key("pc_id", &pc)?;
    let c = &state.control;
    let global = c
        .get_json::<ConfigScope>(BUCKET_AGENT_CONFIG, KEY_AGENT_CONFIG_GLOBAL)
        .await?;
    let mut groups = membership(c, &pc).await?.0.groups;
    groups.sort();
    groups.dedup();
    let scopes = group_scopes(c).await?;
    Ok(Json(resolve(global.as_ref(), &scopes, None, &groups).0))
}

#[derive(Serialize)]
pub struct Effective {
    pc_id: String,
    effective: EffectiveConfig,
    warnings: Vec<String>,
    /// The PC's groups, in the order they apply.
    groups: Vec<String>,
    /// The same list under the name 0.101's dashboard reads.
    my_groups: Vec<String>,
    /// Where each field's value comes from: `default`, `global`,
    /// `group:<name>` or `pc`.
    sources: BTreeMap<String, String>,
}

/// `GET /api/agents/{pc_id}/effective_config`: kanade-shared's
/// resolution of default → global → groups (alphabetical) → PC, with
/// where each value comes from.
pub async fn effective(
    State(state): State<AppState>,
    Path(pc): Path<String>,
) -> Result<Json<Effective>, ApiError> {
    check_key("pc_id", &pc)?;
    let c = &state.control;
    let global = c
        .get_json::<ConfigScope>(BUCKET_AGENT_CONFIG, KEY_AGENT_CONFIG_GLOBAL)
        .await?;
    let pc_scope = c
        .get_json::<ConfigScope>(BUCKET_AGENT_CONFIG, &agent_config_pc_key(&pc))
        .await?;
    let group_scopes = group_scopes(c).await?;
    let mut groups = membership(c, &pc).await?.0.groups;
    groups.sort();
    groups.dedup();
    let (effective, warnings) = resolve(global.as_ref(), &group_scopes, pc_scope.as_ref(), &groups);
    let mut layers: Vec<(String, &ConfigScope)> = Vec::new();
    if let Some(g) = &global {
        layers.push(("global".into(), g));
    }
    for g in &groups {
        if let Some(s) = group_scopes.get(g) {
            layers.push((format!("group:{g}"), s));
        }
    }
    if let Some(p) = &pc_scope {
        layers.push(("pc".into(), p));
    }
    Ok(Json(Effective {
        pc_id: pc,
        effective,
        warnings: warnings.iter().map(warning_text).collect(),
        my_groups: groups.clone(),
        groups,
        sources: sources(&layers),
    }))
}

fn warning_text(w: &ResolutionWarning) -> String {
    match w {
        ResolutionWarning::MultiGroupConflict { field, groups } => format!(
            "multi-group conflict on `{field}` — set by [{}]; alphabetical last wins (=> {})",
            groups.join(", "),
            groups.last().map(String::as_str).unwrap_or("")
        ),
    }
}

/// Every field of the effective configuration, as the agents see it
/// (kanade-shared's own list: a field it adds appears here too).
fn effective_fields() -> Vec<String> {
    match serde_json::to_value(EffectiveConfig::builtin_defaults()) {
        Ok(serde_json::Value::Object(m)) => m.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// The fields a scope sets (unset ones are left out of its JSON).
fn set_fields(s: &ConfigScope) -> Vec<String> {
    match serde_json::to_value(s) {
        Ok(serde_json::Value::Object(m)) => m
            .into_iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, _)| k)
            .collect(),
        _ => Vec::new(),
    }
}

/// The last layer that sets each field (layers in application order).
fn sources(layers: &[(String, &ConfigScope)]) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = effective_fields()
        .into_iter()
        .map(|f| (f, "default".to_string()))
        .collect();
    for (name, s) in layers {
        for field in set_fields(s) {
            if let Some(slot) = out.get_mut(&field) {
                *slot = name.clone();
            }
        }
    }
    out
}

#[derive(Serialize)]
pub struct GroupInfo {
    name: String,
    members: Vec<String>,
    has_config: bool,
    /// Who hears about the group (check alerts), as kanade 0.101 lists it.
    emails: Vec<String>,
}

#[derive(Serialize)]
pub struct Groups {
    groups: Vec<GroupInfo>,
}

/// `GET /api/groups`: every group with a member (set by hand or by a
/// declared group), a config scope or contacts.
pub async fn list_groups(State(state): State<AppState>) -> Result<Json<Groups>, ApiError> {
    let c = &state.control;
    let mut members: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for bucket in [BUCKET_AGENT_GROUPS, BUCKET_AGENT_GROUPS_DERIVED] {
        for (pc, g) in c.list_json::<AgentGroups>(bucket).await? {
            for name in g.groups {
                members.entry(name).or_default().insert(pc.clone());
            }
        }
    }
    let with_config: BTreeSet<String> = c
        .list_json::<ConfigScope>(BUCKET_AGENT_CONFIG)
        .await?
        .into_iter()
        .filter_map(|(k, _)| Some(k.strip_prefix(PREFIX_AGENT_CONFIG_GROUPS)?.to_string()))
        .collect();
    for g in &with_config {
        members.entry(g.clone()).or_default();
    }
    let mut contacts: BTreeMap<String, Vec<String>> = c
        .list_json::<GroupContacts>(BUCKET_GROUP_CONTACTS)
        .await?
        .into_iter()
        .filter(|(_, gc)| !gc.is_empty())
        .map(|(g, gc)| (g, gc.emails))
        .collect();
    for g in contacts.keys() {
        members.entry(g.clone()).or_default();
    }
    Ok(Json(Groups {
        groups: members
            .into_iter()
            .map(|(name, m)| GroupInfo {
                has_config: with_config.contains(&name),
                emails: contacts.remove(&name).unwrap_or_default(),
                name,
                members: m.into_iter().collect(),
            })
            .collect(),
    }))
}

/// `GET /api/groups/{name}/email`: the group's contact addresses
/// (`{"emails": []}` when none).
pub async fn get_contacts(
    State(state): State<AppState>,
    Path(group): Path<String>,
) -> Result<Json<GroupContacts>, ApiError> {
    check_token("group", &group)?;
    let found = state
        .control
        .get_json::<GroupContacts>(BUCKET_GROUP_CONTACTS, &group)
        .await?;
    Ok(Json(found.unwrap_or_default()))
}

/// Addresses one group may list.
const MAX_CONTACTS: usize = 100;

/// `PUT /api/groups/{name}/email {"emails": [...]}` (operator): replaces
/// them, normalised as the wire type does (trimmed, lower case, sorted,
/// once); an address mail could not go to is a 400 naming it. An empty
/// list clears them.
pub async fn put_contacts(
    State(state): State<AppState>,
    Path(group): Path<String>,
    caller: Caller,
    super::params::ApiJson(body): super::params::ApiJson<GroupContacts>,
) -> Result<Json<GroupContacts>, ApiError> {
    check_token("group", &group)?;
    let contacts = GroupContacts::new(body.emails);
    if let Some(bad) = contacts.emails.iter().find(|e| !crate::mail::is_address(e)) {
        return Err(ApiError::bad_param(
            "emails",
            format!(
                "not a valid email address: {}",
                crate::control::abbreviated(bad)
            ),
        ));
    }
    if contacts.emails.len() > MAX_CONTACTS {
        return Err(ApiError::bad_param(
            "emails",
            format!(
                "{} addresses; a group may list {MAX_CONTACTS}",
                contacts.emails.len()
            ),
        ));
    }
    let bytes = serde_json::to_vec(&contacts).map_err(|e| ApiError::Internal(e.to_string()))?;
    state
        .control
        .put(BUCKET_GROUP_CONTACTS, &group, bytes)
        .await?;
    audit(
        &state.control,
        &caller,
        "group_contacts_set",
        &group,
        serde_json::json!({ "emails": contacts.emails }),
    )
    .await;
    Ok(Json(contacts))
}

/// A PC's groups and the revision they were read at.
async fn membership(c: &Control, pc: &str) -> Result<(AgentGroups, u64), ApiError> {
    let (g, rev) = c
        .get_json_rev::<AgentGroups>(BUCKET_AGENT_GROUPS, pc)
        .await?;
    Ok((g.unwrap_or_default(), rev))
}

/// `GET /api/agents/{pc_id}/groups`.
pub async fn get_membership(
    State(state): State<AppState>,
    Path(pc): Path<String>,
) -> Result<Response, ApiError> {
    check_key("pc_id", &pc)?;
    let (g, rev) = membership(&state.control, &pc).await?;
    Ok((etag(rev), Json(g)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupsBody {
    groups: Vec<String>,
}

/// `PUT /api/agents/{pc_id}/groups`: replace the list (`If-Match` makes
/// it a compare-and-set).
pub async fn put_membership(
    State(state): State<AppState>,
    caller: Caller,
    Path(pc): Path<String>,
    IfMatch(rev): IfMatch,
    body: YamlOrJson<GroupsBody>,
) -> Result<Response, ApiError> {
    check_key("pc_id", &pc)?;
    for g in &body.value.groups {
        check_token("groups", g)?;
    }
    let groups = AgentGroups::new(body.value.groups);
    let json = serde_json::to_vec(&groups).map_err(|e| ApiError::Internal(e.to_string()))?;
    let rev = state
        .control
        .put_if(BUCKET_AGENT_GROUPS, &pc, json, rev)
        .await?;
    audit(
        &state.control,
        &caller,
        "groups_set",
        &pc,
        serde_json::json!({"groups": groups.groups}),
    )
    .await;
    Ok((etag(rev), Json(groups)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupBody {
    group: String,
}

/// `POST /api/agents/{pc_id}/groups`: add one group.
pub async fn add_group(
    State(state): State<AppState>,
    caller: Caller,
    Path(pc): Path<String>,
    body: YamlOrJson<GroupBody>,
) -> Result<Json<AgentGroups>, ApiError> {
    let group = body.value.group.trim().to_string();
    check_token("group", &group)?;
    edit_membership(&state, &caller, &pc, "group_add", &group, |g| {
        g.insert(group.clone())
    })
    .await
}

/// `DELETE /api/agents/{pc_id}/groups/{group}`: remove one group.
pub async fn remove_group(
    State(state): State<AppState>,
    caller: Caller,
    Path((pc, group)): Path<(String, String)>,
) -> Result<Json<AgentGroups>, ApiError> {
    edit_membership(&state, &caller, &pc, "group_remove", &group, |g| {
        g.remove(&group)
    })
    .await
}

/// One membership change as a compare-and-set retried on conflict.
async fn edit_membership(
    state: &AppState,
    caller: &Caller,
    pc: &str,
    action: &str,
    group: &str,
    change: impl FnMut(&mut AgentGroups) -> bool,
) -> Result<Json<AgentGroups>, ApiError> {
    check_key("pc_id", pc)?;
    let store = state.control.kv(BUCKET_AGENT_GROUPS).await?;
    let groups = kanade_shared::kv_cas::read_modify_write(&store, pc, change)
        .await
        .map_err(|e| ApiError::BadGateway(format!("{action} for {pc}: {e:#}")))?;
    audit(
        &state.control,
        caller,
        action,
        pc,
        serde_json::json!({"group": group, "groups": groups.groups}),
    )
    .await;
    Ok(Json(groups))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_name_the_last_layer_that_sets_each_field() {
        let global = ConfigScope {
            heartbeat_interval: Some("20s".into()),
            target_version: Some("1.0".into()),
            ..Default::default()
        };
        let canary = ConfigScope {
            target_version: Some("1.1".into()),
            ..Default::default()
        };
        let pc = ConfigScope {
            heartbeat_interval: Some("5s".into()),
            ..Default::default()
        };
        let s = sources(&[
            ("global".into(), &global),
            ("group:canary".into(), &canary),
            ("pc".into(), &pc),
        ]);
        assert_eq!(s["target_version"], "group:canary");
        assert_eq!(s["heartbeat_interval"], "pc");
        assert_eq!(s["host_perf_interval"], "default");
        assert_eq!(s["max_local_concurrent"], "default");
        assert_eq!(s["client_display_name"], "default");
        assert_eq!(s.len(), 9);
    }

    #[test]
    fn bad_durations_are_named() {
        let bad = ConfigScope {
            host_perf_interval: Some("often".into()),
            ..Default::default()
        };
        assert!(check_scope(&bad)
            .unwrap_err()
            .to_string()
            .contains("host_perf_interval"));
        check_scope(&ConfigScope::default()).unwrap();
    }
}
