//! `/api/deploy-plans*`: kanade 0.101's deployment plans, kept as
//! authorization records and nothing more. A plan binds one typed job
//! (`kind: typed_operation`), the artifact it installs, exact target PCs
//! and a validity window under a digest; an operator registers it, a
//! second look approves the digest and revision they reviewed, anyone
//! with exec rights may revoke it. As upstream, nothing dispatches a
//! plan: exec and the scheduler refuse typed jobs, so approval authorises
//! no delivery yet.
//!
//! Plans are immutable (a change is a new id); each state change is
//! decided in one redb write transaction against the stored state,
//! digest, revision and expiry, so a stale or racing approval cannot land.
//! The digest is recomputed from the stored content on every read; a
//! record that disagrees with itself is reported, never served as good.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use kanade_shared::artifact::ArtifactSha256;
use kanade_shared::deploy_plan::{
    canonical_json, job_manifest_digest, ExecutionPolicy, PlanArtifact, PlanContent, PlanState,
    MAX_PLAN_VALIDITY_SECS, PLAN_RECORD_VERSION,
};
use kanade_shared::manifest::Manifest;
use kanade_storage::DeployPlanRecord;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::offload::store as blocking;
use super::params::ApiJson;
use crate::api::state::AppState;
use crate::audit::Caller;

/// `POST /api/deploy-plans`: no actor, state or approval in the body; the
/// server derives who and starts every plan pending.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatePlan {
    plan_id: String,
    /// The digest the operator computed; recomputed and compared.
    plan_digest: ArtifactSha256,
    /// The typed job, naming this plan's id and digest.
    job: serde_json::Value,
    artifact: PlanArtifact,
    /// Registered pc_ids, matched case-sensitively.
    targets: Vec<String>,
    not_before: i64,
    expires_at: i64,
    execution_policy: ExecutionPolicy,
}

/// `POST /api/deploy-plans/{id}/approve`: what the approver reviewed.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovePlan {
    plan_digest: ArtifactSha256,
    revision: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokePlan {
    #[serde(default)]
    reason: Option<String>,
}

/// A plan as the API shows it.
#[derive(Serialize, Debug)]
pub struct PlanView {
    plan_id: String,
    plan_digest: String,
    state: PlanState,
    /// `now` is at or past `expires_at` (a fact, not a state).
    expired: bool,
    revision: i64,
    content: PlanContent,
    job: serde_json::Value,
    created_by: String,
    created_at: i64,
    approved_by: Option<String>,
    approved_at: Option<i64>,
    revoked_by: Option<String>,
    revoked_at: Option<i64>,
    revoke_reason: Option<String>,
    applied_targets: Vec<String>,
}

const PENDING: &str = "pending";
const APPROVED: &str = "approved";
const REVOKED: &str = "revoked";

fn state_of(s: &str) -> Option<PlanState> {
    match s {
        PENDING => Some(PlanState::Pending),
        APPROVED => Some(PlanState::Approved),
        REVOKED => Some(PlanState::Revoked),
        _ => None,
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The caller as the actor of a change: a named, authenticated operator
/// (the route layer checked the role). Without a name (authentication
/// off) nobody can be recorded as the approver, so nobody may change a
/// plan.
fn actor(caller: &Caller) -> Result<String, ApiError> {
    caller.sub.clone().filter(|s| !s.is_empty()).ok_or_else(|| {
        ApiError::Forbidden("an authenticated operator with exec permission is required".into())
    })
}

/// The stored record checked against itself and turned into its view.
fn view_of(r: DeployPlanRecord, now: i64) -> Result<PlanView, ApiError> {
    let corrupt = |m: &str| {
        ApiError::Internal(format!(
            "deploy plan {} failed its integrity check: {m}",
            r.plan_id
        ))
    };
    let content: PlanContent =
        serde_json::from_str(&r.content).map_err(|_| corrupt("plan content does not decode"))?;
    let digest = ArtifactSha256::try_from(r.plan_digest.clone())
        .map_err(|_| corrupt("stored digest is malformed"))?;
    if content.plan_id != r.plan_id {
        return Err(corrupt("stored content names another plan id"));
    }
    if content.digest() != digest {
        return Err(corrupt("stored digest does not match the stored content"));
    }
    let state = state_of(&r.state).ok_or_else(|| corrupt("unknown plan state"))?;
    let job = serde_json::from_str(&r.job_manifest).map_err(|_| corrupt("job does not decode"))?;
    Ok(PlanView {
        plan_id: r.plan_id,
        plan_digest: r.plan_digest,
        state,
        expired: now >= content.expires_at,
        revision: r.revision,
        content,
        job,
        created_by: r.created_by,
        created_at: r.created_at,
        approved_by: r.approved_by,
        approved_at: r.approved_at,
        revoked_by: r.revoked_by,
        revoked_at: r.revoked_at,
        revoke_reason: r.revoke_reason,
        applied_targets: r.applied_targets,
    })
}

/// Builds and checks the plan a create request describes (no I/O).
fn content_of(req: &CreatePlan, now: i64) -> Result<(PlanContent, Manifest), ApiError> {
    let bad = ApiError::BadRequest;
    let job_bytes = serde_json::to_vec(&req.job).map_err(|e| bad(e.to_string()))?;
    let job: Manifest = kanade_shared::strict::from_json_slice(&job_bytes)
        .map_err(|e| bad(format!("invalid job: {e}")))?;
    let typed = job
        .execute
        .typed()
        .ok_or_else(|| bad("the job must be a typed_operation job".into()))?;
    job.validate()
        .map_err(|e| bad(format!("invalid job: {e}")))?;
    let targets = PlanContent::normalize_targets(&req.targets).map_err(bad)?;
    let content = PlanContent {
        record_version: PLAN_RECORD_VERSION,
        plan_id: req.plan_id.clone(),
        job_id: job.id.clone(),
        job_manifest_digest: job_manifest_digest(&job).map_err(bad)?,
        role: typed.operation.expected_role(),
        operation: typed.operation.clone(),
        artifact: req.artifact.clone(),
        targets,
        not_before: req.not_before,
        expires_at: req.expires_at,
        execution_policy: req.execution_policy,
    };
    content.validate().map_err(bad)?;
    if req.expires_at <= now {
        return Err(bad("the plan is already expired".into()));
    }
    // Both are i64 seconds from the caller: checked.
    if req
        .expires_at
        .checked_sub(now)
        .is_none_or(|left| left > MAX_PLAN_VALIDITY_SECS)
    {
        return Err(bad(format!(
            "expires_at is more than {MAX_PLAN_VALIDITY_SECS}s in the future"
        )));
    }
    if content.digest() != req.plan_digest {
        return Err(bad(
            "plan_digest does not match the digest of the submitted plan content".into(),
        ));
    }
    content
        .verify_job(&job)
        .map_err(|e| bad(format!("the job does not match the plan: {e}")))?;
    Ok((content, job))
}

async fn audit(state: &AppState, caller: &Caller, who: &str, action: &str, plan: &PlanView) {
    crate::audit::record(
        &state.nats,
        who,
        action,
        Some(&plan.plan_id),
        Some(caller),
        serde_json::json!({
            "plan_digest": plan.plan_digest,
            "state": plan.state,
            "revision": plan.revision,
            "role": plan.content.role,
            "targets": plan.content.targets,
            "expires_at": plan.content.expires_at,
        }),
    )
    .await;
}

/// `POST /api/deploy-plans`: 201 with the pending plan.
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreatePlan>,
) -> Result<(StatusCode, Json<PlanView>), ApiError> {
    let who = actor(&caller)?;
    let at = now();
    let (content, job) = content_of(&req, at)?;
    let store = state.store.clone();
    let targets = content.targets.clone();
    let missing = blocking(move || {
        let mut missing = Vec::new();
        for t in targets {
            if store.agent(&t)?.is_none() {
                missing.push(t);
            }
        }
        Ok(missing)
    })
    .await?;
    if !missing.is_empty() {
        return Err(ApiError::Unprocessable(format!(
            "targets are not registered agents (pc_id is matched case-sensitively): {missing:?}"
        )));
    }
    let value = serde_json::to_value(&content).map_err(|e| ApiError::Internal(e.to_string()))?;
    let record = DeployPlanRecord {
        plan_id: content.plan_id.clone(),
        plan_digest: String::from(content.digest()),
        content: String::from_utf8(canonical_json(&value))
            .map_err(|e| ApiError::Internal(e.to_string()))?,
        job_manifest: serde_json::to_string(&job).map_err(|e| ApiError::Internal(e.to_string()))?,
        state: PENDING.into(),
        revision: 0,
        created_by: who.clone(),
        created_at: at,
        ..Default::default()
    };
    let store = state.store.clone();
    let stored = record.clone();
    if !blocking(move || store.insert_deploy_plan(&stored)).await? {
        return Err(ApiError::Conflict(
            "a deploy plan with this id already exists (plans are immutable; use a new id)".into(),
        ));
    }
    let view = view_of(record, at)?;
    audit(&state, &caller, &who, "deploy_plan.create", &view).await;
    Ok((StatusCode::CREATED, Json(view)))
}

/// `GET /api/deploy-plans`: newest first; any record failing its
/// integrity check fails the list (as upstream: a list must not hide one).
pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<PlanView>>, ApiError> {
    let store = state.store.clone();
    let at = now();
    let plans = blocking(move || store.deploy_plans()).await?;
    Ok(Json(
        plans
            .into_iter()
            .map(|p| view_of(p, at))
            .collect::<Result<_, _>>()?,
    ))
}

async fn load(state: &AppState, plan_id: &str) -> Result<DeployPlanRecord, ApiError> {
    let store = state.store.clone();
    let id = plan_id.to_string();
    blocking(move || store.deploy_plan(&id))
        .await?
        .ok_or_else(|| ApiError::NotFound("deploy plan not found".into()))
}

/// `GET /api/deploy-plans/{plan_id}`.
pub async fn read(
    State(state): State<AppState>,
    Path(plan_id): Path<String>,
) -> Result<Json<PlanView>, ApiError> {
    Ok(Json(view_of(load(&state, &plan_id).await?, now())?))
}

/// `POST /api/deploy-plans/{plan_id}/approve`: only a pending, unexpired
/// plan whose digest and revision are the ones reviewed.
pub async fn approve(
    State(state): State<AppState>,
    Path(plan_id): Path<String>,
    caller: Caller,
    ApiJson(req): ApiJson<ApprovePlan>,
) -> Result<Json<PlanView>, ApiError> {
    let who = actor(&caller)?;
    let at = now();
    // A record that no longer hashes to its digest, or no longer
    // validates, is never approved.
    let stored = view_of(load(&state, &plan_id).await?, at)?;
    stored
        .content
        .validate()
        .map_err(|e| ApiError::Conflict(format!("stored plan is invalid: {e}")))?;
    let digest = String::from(req.plan_digest);
    let expires_at = stored.content.expires_at;
    let (store, id, approver) = (state.store.clone(), plan_id.clone(), who.clone());
    let changed = blocking(move || {
        store.change_deploy_plan(&id, |p| {
            let ok = p.state == PENDING
                && p.plan_digest == digest
                && p.revision == req.revision
                && expires_at > at;
            if ok {
                p.state = APPROVED.into();
                p.approved_by = Some(approver);
                p.approved_at = Some(at);
            }
            ok
        })
    })
    .await?;
    let (record, written) =
        changed.ok_or_else(|| ApiError::NotFound("deploy plan not found".into()))?;
    let digest = String::from(req.plan_digest);
    if !written {
        // Why, from the stored row (never from the request).
        return Err(match record.state.as_str() {
            REVOKED => ApiError::Conflict("the plan was revoked".into()),
            APPROVED => ApiError::Conflict("the plan is already approved".into()),
            _ if at >= expires_at => ApiError::Gone("the plan expired".into()),
            _ if record.plan_digest != digest => ApiError::Conflict(
                "the plan_digest differs from the stored plan; review the current plan".into(),
            ),
            _ if record.revision != req.revision => {
                ApiError::Conflict("the plan revision moved since it was reviewed".into())
            }
            _ => ApiError::Conflict("the plan could not be approved".into()),
        });
    }
    let view = view_of(record, at)?;
    audit(&state, &caller, &who, "deploy_plan.approve", &view).await;
    Ok(Json(view))
}

/// `POST /api/deploy-plans/{plan_id}/revoke` with an optional
/// `{"reason": ..}` (at most 256 bytes).
pub async fn revoke(
    State(state): State<AppState>,
    Path(plan_id): Path<String>,
    caller: Caller,
    body: Bytes,
) -> Result<Json<PlanView>, ApiError> {
    let who = actor(&caller)?;
    let reason = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        serde_json::from_slice::<RevokePlan>(&body)
            .map_err(|e| ApiError::BadRequest(format!("invalid revoke body: {e}")))?
            .reason
    };
    if reason.as_deref().is_some_and(|r| r.len() > 256) {
        return Err(ApiError::bad_param("reason", "at most 256 bytes"));
    }
    let at = now();
    let (store, id, revoker) = (state.store.clone(), plan_id.clone(), who.clone());
    let changed = blocking(move || {
        store.change_deploy_plan(&id, |p| {
            let ok = p.state == PENDING || p.state == APPROVED;
            if ok {
                p.state = REVOKED.into();
                p.revoked_by = Some(revoker);
                p.revoked_at = Some(at);
                p.revoke_reason = reason;
            }
            ok
        })
    })
    .await?;
    let (record, written) =
        changed.ok_or_else(|| ApiError::NotFound("deploy plan not found".into()))?;
    if !written {
        return Err(ApiError::Conflict("the plan was already revoked".into()));
    }
    let view = view_of(record, at)?;
    audit(&state, &caller, &who, "deploy_plan.revoke", &view).await;
    Ok(Json(view))
}
