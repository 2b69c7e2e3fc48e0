//! Request/reply with one agent: `POST /api/run` (an ad-hoc command,
//! waiting for its result), `POST /api/agents/{pc_id}/ping` and
//! `GET /api/agents/{pc_id}/logs`. Every wait is bounded: an agent that
//! is absent or silent is a 504 with a JSON error, never a hang.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use kanade_shared::subject;
use kanade_shared::wire::{Command, ExecResult, Heartbeat, LogsRequest, RunAs, Shell};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::jobs::audit;
use super::params::{parse_clamped, ApiQuery, YamlOrJson};
use crate::api::state::AppState;
use crate::audit::Caller;
use crate::control::check_token;

/// Longest script run `POST /api/run` waits for (24 h).
const MAX_RUN_SECS: u64 = 86_400;
/// What a run waits beyond its own timeout for the result to arrive.
const RESULT_SLACK: Duration = Duration::from_secs(10);
/// How long a logs request waits.
const LOGS_WAIT: Duration = Duration::from_secs(10);

fn default_shell() -> String {
    "powershell".into()
}

fn default_timeout() -> u64 {
    60
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunBody {
    pc_id: String,
    script: String,
    #[serde(default = "default_shell")]
    shell: String,
    #[serde(default = "default_timeout")]
    timeout_secs: u64,
    #[serde(default, alias = "job_id")]
    exec_id: Option<String>,
    #[serde(default)]
    jitter_secs: Option<u64>,
    #[serde(default)]
    run_as: RunAs,
}

fn parse_shell(s: &str) -> Result<Shell, ApiError> {
    match s.trim().to_ascii_lowercase().as_str() {
        "powershell" | "ps" => Ok(Shell::Powershell),
        "pwsh" => Ok(Shell::Pwsh),
        "cmd" => Ok(Shell::Cmd),
        "sh" => Ok(Shell::Sh),
        other => Err(ApiError::bad_param(
            "shell",
            format!("unknown shell {other:?} (use powershell, pwsh, cmd or sh)"),
        )),
    }
}

/// `POST /api/run`: one command to one PC; answers its `ExecResult`.
pub async fn run(
    State(state): State<AppState>,
    caller: Caller,
    body: YamlOrJson<RunBody>,
) -> Result<Json<ExecResult>, ApiError> {
    let b = body.value;
    check_token("pc_id", &b.pc_id)?;
    if b.script.trim().is_empty() {
        return Err(ApiError::bad_param("script", "must not be empty"));
    }
    if !(1..=MAX_RUN_SECS).contains(&b.timeout_secs) {
        return Err(ApiError::bad_param(
            "timeout_secs",
            format!("must be 1..={MAX_RUN_SECS}"),
        ));
    }
    let request_id = uuid::Uuid::new_v4().to_string();
    let cmd = Command {
        id: "adhoc-run".into(),
        version: "0.0.0".into(),
        request_id: request_id.clone(),
        exec_id: b.exec_id.clone(),
        command_kind: Default::default(),
        bypass_local_limit: false,
        shell: parse_shell(&b.shell)?,
        script: b.script.clone(),
        script_object: None,
        script_object_sha256: None,
        timeout_secs: b.timeout_secs,
        jitter_secs: b.jitter_secs,
        run_as: b.run_as,
        cwd: None,
        deadline_at: None,
        staleness: Default::default(),
        emit: None,
        check: None,
        collect: None,
        retry: None,
        finalize: None,
    };
    let c = &state.control;
    let mut results = c
        .nats
        .subscribe(subject::results(&request_id))
        .await
        .map_err(|e| ApiError::BadGateway(format!("subscribe to results: {e}")))?;
    let payload = serde_json::to_vec(&cmd).map_err(|e| ApiError::Internal(e.to_string()))?;
    c.publish(subject::commands_pc(&b.pc_id), payload).await?;
    c.flush().await;
    audit(
        c,
        &caller,
        "run",
        &b.pc_id,
        serde_json::json!({
            "request_id": request_id, "exec_id": b.exec_id, "shell": b.shell,
            "script": b.script.chars().take(500).collect::<String>(),
        }),
    )
    .await;
    let wait = Duration::from_secs(b.timeout_secs + b.jitter_secs.unwrap_or(0)) + RESULT_SLACK;
    let msg = tokio::time::timeout(wait, results.next())
        .await
        .map_err(|_| {
            ApiError::GatewayTimeout(format!(
                "no result from {} within {} s (results.{request_id})",
                b.pc_id,
                wait.as_secs()
            ))
        })?
        .ok_or_else(|| ApiError::BadGateway("result subscription closed".into()))?;
    let result: ExecResult = serde_json::from_slice(&msg.payload)
        .map_err(|e| ApiError::BadGateway(format!("the agent's result does not decode: {e}")))?;
    Ok(Json(result))
}

#[derive(Deserialize)]
pub struct PingParams {
    wait_secs: Option<String>,
}

#[derive(Serialize)]
pub struct Pong {
    heartbeat: Heartbeat,
}

/// Sends a request to one agent and waits up to `wait` for its reply.
async fn ask(
    state: &AppState,
    pc: &str,
    subject: String,
    payload: Vec<u8>,
    wait: Duration,
) -> Result<bytes::Bytes, ApiError> {
    let request = async_nats::Request::new()
        .payload(payload.into())
        .timeout(Some(wait));
    match state
        .control
        .nats
        .send_request(subject.clone(), request)
        .await
    {
        Ok(msg) => Ok(msg.payload),
        Err(e) => Err(match e.kind() {
            async_nats::RequestErrorKind::NoResponders => ApiError::GatewayTimeout(format!(
                "agent '{pc}' is not connected (no responder on {subject})"
            )),
            async_nats::RequestErrorKind::TimedOut => ApiError::GatewayTimeout(format!(
                "agent '{pc}' did not answer within {} s",
                wait.as_secs()
            )),
            _ => ApiError::BadGateway(format!("{subject}: {e}")),
        }),
    }
}

/// `POST /api/agents/{pc_id}/ping?wait_secs=` (1..=30, default 5).
pub async fn ping(
    State(state): State<AppState>,
    Path(pc): Path<String>,
    ApiQuery(p): ApiQuery<PingParams>,
) -> Result<Json<Pong>, ApiError> {
    check_token("pc_id", &pc)?;
    let wait = parse_clamped("wait_secs", p.wait_secs.as_deref(), 5, 1, 30)? as u64;
    let reply = ask(
        &state,
        &pc,
        subject::ping(&pc),
        Vec::new(),
        Duration::from_secs(wait),
    )
    .await?;
    let heartbeat = serde_json::from_slice(&reply).map_err(|e| {
        ApiError::BadGateway(format!("the agent's ping reply does not decode: {e}"))
    })?;
    Ok(Json(Pong { heartbeat }))
}

#[derive(Deserialize)]
pub struct LogsParams {
    tail: Option<String>,
}

/// `GET /api/agents/{pc_id}/logs?tail=` (1..=100000 lines, default 500):
/// the agent's log tail as text.
pub async fn logs(
    State(state): State<AppState>,
    Path(pc): Path<String>,
    ApiQuery(p): ApiQuery<LogsParams>,
) -> Result<Response, ApiError> {
    check_token("pc_id", &pc)?;
    let tail = parse_clamped("tail", p.tail.as_deref(), 500, 1, 100_000)? as u32;
    let payload = serde_json::to_vec(&LogsRequest { tail_lines: tail })
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let reply = ask(&state, &pc, subject::logs_fetch(&pc), payload, LOGS_WAIT).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], reply).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shells_are_named_as_the_reference_accepts_them() {
        for (s, want) in [
            ("powershell", Shell::Powershell),
            ("ps", Shell::Powershell),
            // PowerShell 7 is its own shell, not an alias.
            ("PWSH", Shell::Pwsh),
            ("cmd", Shell::Cmd),
            ("sh", Shell::Sh),
        ] {
            assert_eq!(parse_shell(s).unwrap(), want);
        }
        assert!(parse_shell("bash")
            .unwrap_err()
            .to_string()
            .contains("shell"));
    }
}
