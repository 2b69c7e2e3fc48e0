//! `/api/results`, `/api/results/{id}` and `/api/results/{id}/tail`.

use axum::extract::{Path, State};
use axum::Json;
use chrono::{DateTime, Utc};
use kanade_shared::wire::{JobTailReply, JobTailRequest};
use kanade_storage::ResultRecord;
use regex::Regex;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::offload;
use super::params::{compile_regex, parse_limit, parse_time, ApiQuery};
use crate::api::state::AppState;

const DEFAULT_LIMIT: u32 = 50;
/// Characters of stdout/stderr a list row carries.
const PREVIEW_CHARS: usize = 200;
const SNIPPET_CONTEXT_CHARS: usize = 80;
const SNIPPET_MATCH_CHARS: usize = 240;
const TAIL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

#[derive(Serialize, Debug, PartialEq)]
pub struct MatchSnippet {
    before: String,
    matched: String,
    after: String,
    clipped_start: bool,
    clipped_end: bool,
}

#[derive(Serialize)]
pub struct ResultRow {
    result_id: String,
    request_id: String,
    exec_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_result_id: Option<String>,
    pc_id: String,
    exit_code: Option<i64>,
    /// The agent skipped the run on purpose (neither success nor failure).
    skipped: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    collect_object: Option<String>,
    stdout: String,
    stderr: String,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    job_id: Option<String>,
    version: Option<String>,
    stdout_truncated: bool,
    stderr_truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stdout_match: Option<MatchSnippet>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stderr_match: Option<MatchSnippet>,
}

impl ResultRow {
    /// The row with stdout/stderr cut to `preview` characters (all when
    /// `None`).
    fn from_record(r: ResultRecord, preview: Option<usize>) -> Self {
        let cut = |s: &str| match preview {
            Some(n) => {
                let (p, t) = take_prefix(s, n);
                (p.to_string(), t)
            }
            None => (s.to_string(), false),
        };
        let (stdout, stdout_truncated) = cut(&r.stdout);
        let (stderr, stderr_truncated) = cut(&r.stderr);
        Self {
            result_id: r.result_id,
            request_id: r.request_id,
            exec_id: r.exec_id,
            parent_result_id: r.outcome.parent_result_id,
            pc_id: r.pc_id,
            exit_code: r.exit_code,
            skipped: r.outcome.skipped == Some(true),
            collect_object: r.outcome.collect_object,
            stdout,
            stderr,
            started_at: Some(r.started_at),
            finished_at: r.finished_at,
            job_id: r.job_id,
            version: r.version,
            stdout_truncated,
            stderr_truncated,
            stdout_match: None,
            stderr_match: None,
        }
    }
}

#[derive(Deserialize)]
pub struct ListParams {
    limit: Option<String>,
    status: Option<String>,
    since: Option<String>,
    pc_id: Option<String>,
    job_id: Option<String>,
    exec_id: Option<String>,
    stdout: Option<String>,
    stderr: Option<String>,
}

#[derive(Clone, Copy)]
enum Status {
    Success,
    Failure,
    Skipped,
    Running,
}

impl Status {
    /// A skipped run is neither a success nor a failure; exit codes the
    /// agent reports without the skip flag (121 restarted, 123 refused
    /// unsigned) are failures.
    fn matches(self, r: &ResultRecord) -> bool {
        let skipped = r.outcome.skipped == Some(true);
        match self {
            Self::Success => r.exit_code == Some(0),
            Self::Failure => r.exit_code.is_some_and(|c| c != 0) && !skipped,
            Self::Skipped => skipped,
            Self::Running => r.finished_at.is_none(),
        }
    }
}

/// The five regex filters; an absent value (NULL) matches as "".
struct Filters {
    pc_id: Option<Regex>,
    job_id: Option<Regex>,
    exec_id: Option<Regex>,
    stdout: Option<Regex>,
    stderr: Option<Regex>,
}

impl Filters {
    fn try_new(p: &ListParams) -> Result<Self, ApiError> {
        Ok(Self {
            pc_id: compile_regex("pc_id", p.pc_id.as_deref())?,
            job_id: compile_regex("job_id", p.job_id.as_deref())?,
            exec_id: compile_regex("exec_id", p.exec_id.as_deref())?,
            stdout: compile_regex("stdout", p.stdout.as_deref())?,
            stderr: compile_regex("stderr", p.stderr.as_deref())?,
        })
    }

    fn matches(&self, r: &ResultRecord) -> bool {
        let ok = |re: &Option<Regex>, v: &str| re.as_ref().is_none_or(|re| re.is_match(v));
        ok(&self.pc_id, &r.pc_id)
            && ok(&self.job_id, r.job_id.as_deref().unwrap_or(""))
            && ok(&self.exec_id, r.exec_id.as_deref().unwrap_or(""))
            && ok(&self.stdout, &r.stdout)
            && ok(&self.stderr, &r.stderr)
    }
}

/// `GET /api/results`: newest `started_at` first (then `result_id`
/// descending), filtered by `status` (success | failure | skipped | running),
/// `since` (RFC 3339, on started_at) and the regex filters, at most
/// `limit` (default 50) rows with 200-character output previews. Unlike
/// the reference, a regex match is found however old the row is.
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(p): ApiQuery<ListParams>,
) -> Result<Json<Vec<ResultRow>>, ApiError> {
    let limit = parse_limit(p.limit.as_deref(), DEFAULT_LIMIT)?;
    let status = match p.status.as_deref() {
        None | Some("") => None,
        Some("success") => Some(Status::Success),
        Some("failure") => Some(Status::Failure),
        Some("skipped") => Some(Status::Skipped),
        Some("running") => Some(Status::Running),
        Some(other) => {
            return Err(ApiError::bad_param(
                "status",
                format!("{other:?} is not one of success, failure, skipped, running"),
            ))
        }
    };
    let since = p
        .since
        .as_deref()
        .map(|s| parse_time("since", s))
        .transpose()?;
    let filters = Filters::try_new(&p)?;
    if limit == 0 {
        return Ok(Json(Vec::new()));
    }
    let store = state.store.clone();
    let narrow = "narrow it with `since`, `status` or a simpler or more selective filter";
    let out = offload::budgeted_scan(state.scan_budget, narrow, move |in_time| {
        let mut out = Vec::new();
        store.scan_results_by_started_desc(since, |r| {
            if !in_time() {
                return false;
            }
            if status.is_none_or(|s| s.matches(&r)) && filters.matches(&r) {
                let stdout_match = filters
                    .stdout
                    .as_ref()
                    .and_then(|re| match_snippet(re, &r.stdout));
                let stderr_match = filters
                    .stderr
                    .as_ref()
                    .and_then(|re| match_snippet(re, &r.stderr));
                let mut row = ResultRow::from_record(r, Some(PREVIEW_CHARS));
                row.stdout_match = stdout_match;
                row.stderr_match = stderr_match;
                out.push(row);
            }
            out.len() < limit
        })?;
        Ok(out)
    })
    .await?;
    Ok(Json(out))
}

/// `GET /api/results/{id}`: the whole row, full output.
pub async fn detail(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ResultRow>, ApiError> {
    state
        .store
        .result(&id)?
        .map(|r| Json(ResultRow::from_record(r, None)))
        .ok_or_else(|| ApiError::NotFound(format!("result {id}")))
}

#[derive(Serialize)]
pub struct TailResponse {
    running: bool,
    live: bool,
    stdout: String,
    stderr: String,
    stdout_truncated: bool,
    stderr_truncated: bool,
    exit_code: Option<i64>,
}

impl TailResponse {
    /// In flight, but the agent did not answer (yet).
    fn waiting() -> Self {
        Self {
            running: true,
            live: false,
            stdout: String::new(),
            stderr: String::new(),
            stdout_truncated: false,
            stderr_truncated: false,
            exit_code: None,
        }
    }
}

/// `GET /api/results/{id}/tail`: the stored output of a finished run, or
/// the agent's live output of an in-flight one (`job.tail.<pc_id>`, 3 s).
pub async fn tail(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<TailResponse>, ApiError> {
    let r = state
        .store
        .result(&id)?
        .ok_or_else(|| ApiError::NotFound(format!("result {id}")))?;
    if r.finished_at.is_some() {
        return Ok(Json(TailResponse {
            running: false,
            live: false,
            stdout: r.stdout,
            stderr: r.stderr,
            stdout_truncated: false,
            stderr_truncated: false,
            exit_code: r.exit_code,
        }));
    }
    Ok(Json(live_tail(&state.nats, &r.pc_id, id).await))
}

async fn live_tail(nats: &async_nats::Client, pc_id: &str, result_id: String) -> TailResponse {
    let Ok(payload) = serde_json::to_vec(&JobTailRequest { result_id }) else {
        return TailResponse::waiting();
    };
    let subject = kanade_shared::subject::job_tail(pc_id);
    let reply =
        match tokio::time::timeout(TAIL_TIMEOUT, nats.request(subject, payload.into())).await {
            Ok(Ok(msg)) => msg,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, pc_id, "job.tail request failed");
                return TailResponse::waiting();
            }
            Err(_) => return TailResponse::waiting(),
        };
    match serde_json::from_slice::<JobTailReply>(&reply.payload) {
        Ok(r) if r.found => TailResponse {
            running: r.running,
            live: true,
            stdout: r.stdout,
            stderr: r.stderr,
            stdout_truncated: r.stdout_truncated,
            stderr_truncated: r.stderr_truncated,
            exit_code: None,
        },
        Ok(_) => TailResponse::waiting(),
        Err(e) => {
            tracing::warn!(error = %e, pc_id, "undecodable JobTailReply");
            TailResponse::waiting()
        }
    }
}

fn take_prefix(s: &str, n: usize) -> (&str, bool) {
    match s.char_indices().nth(n) {
        Some((idx, _)) => (&s[..idx], true),
        None => (s, false),
    }
}

fn take_suffix(s: &str, n: usize) -> (&str, bool) {
    if n == 0 {
        return ("", !s.is_empty());
    }
    let mut iter = s.char_indices().rev();
    match iter.nth(n - 1) {
        Some((idx, _)) => (&s[idx..], iter.next().is_some()),
        None => (s, false),
    }
}

/// The first match with some context either side.
fn match_snippet(re: &Regex, hay: &str) -> Option<MatchSnippet> {
    let m = re.find(hay)?;
    let (before, clipped_start) = take_suffix(&hay[..m.start()], SNIPPET_CONTEXT_CHARS);
    let (matched, matched_clipped) = take_prefix(m.as_str(), SNIPPET_MATCH_CHARS);
    let (after, after_clipped) = take_prefix(&hay[m.end()..], SNIPPET_CONTEXT_CHARS);
    Some(MatchSnippet {
        before: before.to_string(),
        matched: matched.to_string(),
        after: after.to_string(),
        clipped_start,
        clipped_end: matched_clipped || after_clipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_and_suffix_count_characters() {
        assert_eq!(take_prefix("héllo", 2), ("hé", true));
        assert_eq!(take_prefix("hé", 5), ("hé", false));
        assert_eq!(take_suffix("héllo", 3), ("llo", true));
        assert_eq!(take_suffix("lo", 3), ("lo", false));
    }

    #[test]
    fn snippet_has_context() {
        let re = Regex::new("(?m)^ERROR.*$").unwrap();
        let s = match_snippet(&re, "ok\nERROR disk full\nbye").unwrap();
        assert_eq!(s.before, "ok\n");
        assert_eq!(s.matched, "ERROR disk full");
        assert_eq!(s.after, "\nbye");
        assert!(!s.clipped_start && !s.clipped_end);
    }
}
