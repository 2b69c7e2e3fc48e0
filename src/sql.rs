//! The one place an operator's SQL runs: `POST /api/query`, dynamic
//! (`query:`) groups and views' SQL widgets all go through [`SqlRunner`],
//! so each is held to the same caps (`[server] query_budget_secs`,
//! `query_memory_mib`, a row cap) and runs on the query runtime, never on
//! the workers that answer `/health` or feed ingest.
//!
//! [`GroupMembers`] keeps each dynamic group's last answer for its
//! `refresh` (default 10 min, as upstream): the writer of
//! `agent_groups_derived` and `GET /api/group-defs/{id}/members` share
//! it, so neither runs a group's SQL more often than the group asks. An
//! edited definition is a new entry (its text is part of the key), and a
//! failure is kept as well as a success, with the time and the reason.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, Utc};
use kanade_queries::{SqlAnswer, SqlExtras, SqlLimits};
use kanade_shared::kv::BUCKET_AGENT_META;
use kanade_shared::manifest::GroupDef;
use kanade_shared::wire::AgentMeta;
use serde::Serialize;

use crate::api::ApiError;
use crate::config::QueryLimits;
use crate::control::Control;

/// Rows a dynamic group may resolve to; a query past it keeps the
/// group's last membership rather than a cut one.
pub const GROUP_ROW_CAP: usize = 100_000;

/// Runs read-only SQL over the catalog within the configured caps.
#[derive(Clone, Debug)]
pub struct SqlRunner {
    queries: kanade_queries::PerfQueries,
    control: Control,
    limits: QueryLimits,
    /// The registered manifests and their `explode:` rows.
    inventory: crate::api::state::Inventory,
}

impl SqlRunner {
    pub fn new(
        queries: kanade_queries::PerfQueries,
        control: Control,
        limits: QueryLimits,
        inventory: crate::api::state::Inventory,
    ) -> Self {
        Self {
            queries,
            control,
            limits,
            inventory,
        }
    }

    /// Every `explode:` dataset the registered manifests declare that SQL
    /// can name (an unusable spec is left out, and logged).
    fn explode_layouts(&self) -> Vec<kanade_queries::inventory::Layout> {
        self.inventory
            .manifests
            .with_explode()
            .iter()
            .flat_map(|m| crate::control::manifests::layouts(m))
            .filter_map(|l| match l {
                Ok(l) => Some(l),
                Err(e) => {
                    tracing::debug!(error = %e, "explode spec left out of SQL");
                    None
                }
            })
            .collect()
    }

    /// The configured caps.
    pub fn limits(&self) -> QueryLimits {
        self.limits
    }

    /// Runs `sql`, answering at most `rows` rows (0: plans it and answers
    /// its columns only). Past the time budget
    /// 408, past the memory cap 413, SQL the planner refuses 400: each
    /// names what to change.
    pub async fn run(&self, sql: &str, rows: usize) -> Result<SqlAnswer, ApiError> {
        let limits = SqlLimits {
            rows,
            memory_bytes: self.limits.memory_bytes,
        };
        let extras = SqlExtras {
            agent_meta: self
                .control
                .list_json::<AgentMeta>(BUCKET_AGENT_META)
                .await?
                .into_iter()
                .flat_map(|(pc, m)| {
                    m.entries
                        .into_iter()
                        .map(move |e| (pc.clone(), e.key, e.value))
                })
                .collect(),
            explode: self.explode_layouts(),
            explode_index: Some(std::sync::Arc::clone(&self.inventory.explode)),
        };
        let queries = self.queries.clone();
        let budget = self.limits.budget;
        let sql = sql.to_string();
        // The budget runs inside the query's task: past it the query is
        // dropped there (its scans stop), not just no longer awaited here.
        let run = crate::api::offload::query(async move {
            match tokio::time::timeout(budget, queries.sql(&sql, limits, extras)).await {
                Ok(answer) => answer.map(Some),
                Err(_) => Ok(None),
            }
        });
        match run.await {
            Ok(Some(answer)) => Ok(answer),
            Ok(None) => Err(ApiError::RequestTimeout(format!(
                "query exceeded the {}s budget; narrow it",
                budget.as_secs()
            ))),
            Err(ApiError::Query(kanade_queries::Error::Sql { message, memory })) => {
                Err(if memory {
                    ApiError::PayloadTooLarge(format!(
                        "query needs more than the {} MiB a query may hold; narrow it ({message})",
                        limits.memory_bytes >> 20
                    ))
                } else {
                    ApiError::BadRequest(format!("query failed: {message}"))
                })
            }
            Err(e) => Err(e),
        }
    }
}

/// A dynamic group's last resolution, as `GET /api/group-defs` shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Resolution {
    /// When the query last ran.
    pub resolved_at: DateTime<Utc>,
    /// The members it found (absent when it failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<usize>,
    /// Why it failed; the group keeps the members it had.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Rows whose `pc_id` was null or not a usable PC id, left out.
    #[serde(skip_serializing_if = "is_zero")]
    pub skipped: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Debug)]
struct Entry {
    /// The definition's query and refresh, as resolved.
    fingerprint: (String, Option<String>),
    at: Instant,
    resolution: Resolution,
    members: Result<BTreeSet<String>, String>,
}

/// The members of dynamic groups, each kept for its `refresh`.
#[derive(Clone, Debug, Default)]
pub struct GroupMembers {
    entries: Arc<Mutex<HashMap<String, Entry>>>,
}

impl GroupMembers {
    /// The members of `def`: a static group's list as declared, a dynamic
    /// group's query answer (kept for its `refresh`; a changed query or
    /// refresh runs again at once). `Err` says why a query gave none.
    pub async fn resolve(
        &self,
        sql: &SqlRunner,
        def: &GroupDef,
    ) -> Result<BTreeSet<String>, String> {
        let Some(query) = def.dynamic_query() else {
            return Ok(def.members.iter().map(|m| m.trim().to_string()).collect());
        };
        let fingerprint = (query.to_string(), def.refresh.clone());
        if let Some(e) = self.lock().get(&def.id) {
            if e.fingerprint == fingerprint && e.at.elapsed() < def.refresh_interval() {
                return e.members.clone();
            }
        }
        let (members, skipped) = match sql.run(query, GROUP_ROW_CAP).await {
            Ok(answer) => pc_ids(&answer),
            Err(e) => (Err(e.to_string()), 0),
        };
        if let Err(e) = &members {
            tracing::warn!(group = %def.id, error = %e, "dynamic group not resolved; it keeps its members");
        }
        let resolution = Resolution {
            resolved_at: Utc::now(),
            count: members.as_ref().ok().map(BTreeSet::len),
            error: members.as_ref().err().cloned(),
            skipped,
        };
        self.lock().insert(
            def.id.clone(),
            Entry {
                fingerprint,
                at: Instant::now(),
                resolution,
                members: members.clone(),
            },
        );
        members
    }

    /// Checks a dynamic group's query before it is stored: it must plan
    /// and return a `pc_id` column. Nothing runs.
    pub async fn check_query(sql: &SqlRunner, query: &str) -> Result<(), ApiError> {
        let answer = sql.run(query, 0).await?;
        if answer
            .columns
            .iter()
            .any(|c| c.eq_ignore_ascii_case("pc_id"))
        {
            Ok(())
        } else {
            Err(ApiError::BadRequest(format!(
                "invalid group: query must return a `pc_id` column (it returns: {})",
                answer.columns.join(", ")
            )))
        }
    }

    /// The last resolution of dynamic group `id`, if it ran.
    pub fn resolution(&self, id: &str) -> Option<Resolution> {
        self.lock().get(id).map(|e| e.resolution.clone())
    }

    /// Forgets groups no longer declared.
    pub fn retain(&self, ids: &BTreeSet<&str>) {
        self.lock().retain(|id, _| ids.contains(id.as_str()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding the map leaves nothing half-written in it.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The `pc_id` column of a group query's answer (found by name, in any
/// case) and how many rows were left out (null, blank, or not a usable
/// key). A query without the column, or past the row cap, is an error.
fn pc_ids(answer: &SqlAnswer) -> (Result<BTreeSet<String>, String>, usize) {
    let Some(col) = answer
        .columns
        .iter()
        .position(|c| c.eq_ignore_ascii_case("pc_id"))
    else {
        return (
            Err(format!(
                "a group query must return a `pc_id` column (it returned: {})",
                answer.columns.join(", ")
            )),
            0,
        );
    };
    if answer.truncated {
        return (
            Err(format!(
                "the query returned more than {GROUP_ROW_CAP} rows; narrow it"
            )),
            0,
        );
    }
    let mut skipped = 0;
    let mut out = BTreeSet::new();
    for row in &answer.rows {
        let id = match row.get(col) {
            Some(serde_json::Value::String(s)) => s.trim().to_string(),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            _ => String::new(),
        };
        if crate::control::check_key("pc_id", &id).is_ok() {
            out.insert(id);
        } else {
            skipped += 1;
        }
    }
    (Ok(out), skipped)
}

/// `sql` with each real `:pc_id` parameter (outside string literals,
/// quoted identifiers and comments, a whole token: `:pc_idx` is not one)
/// replaced by `pc` as a string literal, and how many there were (a
/// widget with any is per-PC). `None` leaves the text as it is.
pub fn bind_pc_id(sql: &str, pc: Option<&str>) -> (String, usize) {
    let literal = pc.map(|p| format!("'{}'", p.replace('\'', "''")));
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut count = 0;
    let mut i = 0;
    let mut copied = 0;
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    while i < bytes.len() {
        match bytes[i] {
            q @ (b'\'' | b'"') => {
                i += 1;
                while i < bytes.len() {
                    if bytes[i] == q {
                        if bytes.get(i + 1) == Some(&q) {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i < bytes.len() && !(bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/')) {
                    i += 1;
                }
                i += 2;
            }
            b':' if sql[i..].starts_with(kanade_shared::manifest::PC_ID_PARAM)
                && !bytes
                    .get(i + kanade_shared::manifest::PC_ID_PARAM.len())
                    .is_some_and(|b| word(*b)) =>
            {
                count += 1;
                if let Some(lit) = &literal {
                    out.push_str(&sql[copied..i]);
                    out.push_str(lit);
                    copied = i + kanade_shared::manifest::PC_ID_PARAM.len();
                }
                i += kanade_shared::manifest::PC_ID_PARAM.len();
            }
            _ => i += 1,
        }
    }
    out.push_str(&sql[copied.min(sql.len())..]);
    (out, count)
}

/// A SQL widget's answer as last computed.
#[derive(Debug, Clone)]
pub struct WidgetAnswer {
    pub computed_at: DateTime<Utc>,
    pub answer: Result<SqlAnswer, String>,
}

/// Views' SQL widget answers, each kept for its widget's `refresh`
/// (default 1 h, as upstream), keyed by view, widget and PC; an edited
/// query, render or refresh is a new answer at once. Failures are kept
/// too, so a broken widget is not re-run on every page load.
#[derive(Clone, Debug, Default)]
pub struct ViewAnswers {
    entries: Arc<Mutex<WidgetAnswers>>,
}

/// (view, widget, PC) → (fingerprint, when, answer).
type WidgetAnswers = HashMap<(String, usize, String), (String, Instant, WidgetAnswer)>;

/// Answers kept at most; past it the oldest go.
const VIEW_ANSWERS_CAP: usize = 4096;

impl ViewAnswers {
    /// The answer of widget `idx` of view `view` for `pc` (fleet: none).
    pub async fn answer(
        &self,
        sql: &SqlRunner,
        view: &str,
        idx: usize,
        widget: &kanade_shared::manifest::SqlWidget,
        pc: Option<&str>,
        rows: usize,
    ) -> WidgetAnswer {
        let fingerprint = serde_json::to_string(&(&widget.query, &widget.render, &widget.refresh))
            .unwrap_or_default();
        let key = (view.to_string(), idx, pc.unwrap_or_default().to_string());
        if let Some((f, at, answer)) = self.lock().get(&key) {
            if *f == fingerprint && at.elapsed() < widget.refresh_interval() {
                return answer.clone();
            }
        }
        let (query, _) = bind_pc_id(&widget.query, pc);
        let answer = WidgetAnswer {
            computed_at: Utc::now(),
            answer: sql.run(&query, rows).await.map_err(|e| e.to_string()),
        };
        let mut entries = self.lock();
        if entries.len() >= VIEW_ANSWERS_CAP {
            if let Some(oldest) = entries
                .iter()
                .min_by_key(|(_, (_, at, _))| *at)
                .map(|(k, _)| k.clone())
            {
                entries.remove(&oldest);
            }
        }
        entries.insert(key, (fingerprint, Instant::now(), answer.clone()));
        answer
    }

    /// Forgets every answer of `view` (edited or deleted).
    pub fn forget_view(&self, view: &str) {
        self.lock().retain(|(v, _, _), _| v != view);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WidgetAnswers> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn answer(columns: &[&str], rows: Vec<Vec<serde_json::Value>>, truncated: bool) -> SqlAnswer {
        SqlAnswer {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows,
            truncated,
        }
    }

    #[test]
    fn pc_ids_are_found_by_name_in_any_case_and_bad_ones_counted() {
        let a = answer(
            &["hostname", "PC_ID"],
            vec![
                vec![json!("h1"), json!("PC-2")],
                vec![json!("h2"), json!("PC-1")],
                vec![json!("h3"), json!(null)],
                vec![json!("h4"), json!("bad id*")],
                vec![json!("h5"), json!(" PC-1 ")],
            ],
            false,
        );
        let (ids, skipped) = pc_ids(&a);
        assert_eq!(
            ids.unwrap().into_iter().collect::<Vec<_>>(),
            ["PC-1", "PC-2"]
        );
        assert_eq!(skipped, 2);
    }

    #[test]
    fn pc_id_parameters_are_bound_outside_literals_and_comments_only() {
        let sql = "SELECT ':pc_id', \":pc_id\" FROM t -- :pc_id\n/* :pc_id */ WHERE pc_id = :pc_id AND x = :pc_idx OR y=:pc_id";
        let (bound, n) = bind_pc_id(sql, Some("PC-1"));
        assert_eq!(n, 2);
        assert_eq!(
            bound,
            "SELECT ':pc_id', \":pc_id\" FROM t -- :pc_id\n/* :pc_id */ WHERE pc_id = 'PC-1' AND x = :pc_idx OR y='PC-1'"
        );
        // Counted as kanade-shared counts them (what makes a widget per-PC).
        for q in [
            sql,
            "SELECT 1",
            "SELECT 'it''s :pc_id' , :pc_id",
            "SELECT :pc_id/*",
        ] {
            assert_eq!(
                bind_pc_id(q, None).1,
                kanade_shared::manifest::rewrite_pc_id_param(q).1,
                "{q}"
            );
            assert_eq!(bind_pc_id(q, None).0, q);
        }
        assert_eq!(bind_pc_id("x = :pc_id", Some("a'b")).0, "x = 'a''b'");
    }

    #[test]
    fn no_pc_id_column_or_a_cut_answer_is_an_error() {
        let (e, _) = pc_ids(&answer(&["hostname"], vec![vec![json!("h")]], false));
        assert!(e.unwrap_err().contains("`pc_id` column"));
        let (e, _) = pc_ids(&answer(&["pc_id"], vec![vec![json!("PC-1")]], true));
        assert!(e.unwrap_err().contains("more than"));
    }
}
