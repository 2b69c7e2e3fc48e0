//! The 0.101 dashboard's fleet inventory table:
//! `GET /api/inventory/by-job/{manifest_id}` with the column state
//! (`table=`), `format=page` or `distinct=`. Columns are `pcId`,
//! `lastLogon` ("Display (user)"), `collectedAt` (alias `collected`),
//! `meta:<key>` and `f:<field>` for each field the job's current
//! manifest shows (its `summary`, else its `display`), typed by the
//! field's `type`: number / bytes / integer / real compare as numbers,
//! timestamp as times, table as the array's length, the rest as text
//! without regard to ASCII case (as the reference's `COLLATE NOCASE`).
//! A value of the wrong kind is an empty cell: last in either order,
//! selected by `null`.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use kanade_shared::kv::BUCKET_AGENT_META;
use kanade_shared::manifest::DisplayField;
use kanade_shared::wire::{AgentMeta, MetaEntry};
use kanade_storage::{AgentRecord, InventoryFactRecord};
use serde_json::{json, Value};

use super::error::ApiError;
use super::offload;
use super::table_state::{self, Filter, SortKey, TableState};
use crate::api::state::AppState;

/// Rows per page: default and most.
const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1_000;
/// Metadata columns one request may name.
const MAX_META_COLUMNS: usize = 32;

/// How a field's values compare.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Text,
    Number,
    Time,
    Array,
}

impl Kind {
    fn of(field: &DisplayField) -> Self {
        match field.kind.as_deref() {
            Some("number" | "bytes" | "integer" | "real") => Self::Number,
            Some("timestamp") => Self::Time,
            Some("table") => Self::Array,
            _ => Self::Text,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Col {
    PcId,
    LastLogon,
    Collected,
    Meta(String),
    Field(String, Kind),
}

impl Col {
    fn resolve(
        param: &'static str,
        id: &str,
        fields: &[DisplayField],
        meta: &HashMap<String, Vec<MetaEntry>>,
    ) -> Result<Col, ApiError> {
        Ok(match id {
            "pcId" => Col::PcId,
            "lastLogon" => Col::LastLogon,
            "collectedAt" | "collected" => Col::Collected,
            _ => {
                if let Some(key) = id.strip_prefix("meta:") {
                    if key.is_empty() || !meta.values().flatten().any(|e| e.key == key) {
                        return Err(ApiError::bad_param(
                            param,
                            format!("unknown metadata column `{id}`: no PC carries the key"),
                        ));
                    }
                    Col::Meta(key.to_string())
                } else if let Some(f) = id
                    .strip_prefix("f:")
                    .and_then(|name| fields.iter().find(|f| f.field == name))
                {
                    Col::Field(f.field.clone(), Kind::of(f))
                } else {
                    return Err(ApiError::bad_param(
                        param,
                        format!(
                            "unknown table column `{id}` (pcId, lastLogon, collectedAt, \
                             meta:<key>, f:<field> of the job's columns)"
                        ),
                    ));
                }
            }
        })
    }

    fn kind(&self) -> Kind {
        match self {
            Col::Collected => Kind::Time,
            Col::Field(_, k) => *k,
            _ => Kind::Text,
        }
    }
}

/// The value at a `$.a.b` path of the facts.
fn at_path<'v>(facts: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.')
        .try_fold(facts, |v, part| v.get(part))
        .filter(|v| !v.is_null())
}

/// A JSON value as SQLite's `json_extract` gives it as text.
fn json_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(if *b { "1" } else { "0" }.into()),
        Value::Number(n) if n.is_f64() => n.as_f64().map(table_state::real_text),
        other => Some(other.to_string()),
    }
}

/// A number as the reference reads one: a JSON number, a boolean (1 / 0)
/// or a string holding a number.
fn json_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        Value::String(s) => s.trim().parse::<serde_json::Number>().ok()?.as_f64(),
        _ => None,
    }
}

/// A time in any of the forms SQLite's `julianday` reads.
fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            [
                "%Y-%m-%d %H:%M:%S%.f",
                "%Y-%m-%dT%H:%M:%S%.f",
                "%Y-%m-%d %H:%M",
                "%Y-%m-%dT%H:%M",
            ]
            .iter()
            .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
            .map(|n| n.and_utc())
        })
        .or_else(|| {
            NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|n| n.and_utc())
        })
}

/// One row with what its cells read.
struct Row {
    record: InventoryFactRecord,
    facts: Value,
}

/// What a request's cells read besides the row.
struct Lookup {
    agents: HashMap<String, AgentRecord>,
    meta: HashMap<String, Vec<MetaEntry>>,
}

impl Lookup {
    fn logon(&self, pc: &str) -> (Option<String>, Option<String>) {
        self.agents.get(pc).map_or((None, None), |a| {
            (
                a.reported.last_logon_user.clone(),
                a.reported.last_logon_display_name.clone(),
            )
        })
    }

    /// The cell as text and what it sorts by.
    fn cell(&self, row: &Row, col: &Col) -> (Option<String>, Option<SortKey>) {
        let pc = row.record.pc_id.as_str();
        match col {
            Col::PcId => (Some(pc.to_string()), Some(SortKey::NoCase(pc.to_string()))),
            Col::LastLogon => {
                let (user, display) = self.logon(pc);
                let nonblank = |s: &Option<String>| s.clone().filter(|s| !s.trim().is_empty());
                let text = match (nonblank(&display), nonblank(&user)) {
                    (Some(d), Some(u)) if d.trim() != u.trim() => Some(format!("{d} ({u})")),
                    (Some(d), _) => Some(d),
                    (None, u) => u,
                };
                (text.clone(), text.map(SortKey::NoCase))
            }
            Col::Collected => (
                Some(table_state::time_text(row.record.collected_at)),
                Some(SortKey::Time(row.record.collected_at.timestamp_micros())),
            ),
            Col::Meta(key) => {
                let v = self
                    .meta
                    .get(pc)
                    .and_then(|es| es.iter().find(|e| &e.key == key))
                    .map(|e| e.value.clone());
                (v.clone(), v.map(SortKey::NoCase))
            }
            Col::Field(name, kind) => {
                let v = at_path(&row.facts, name);
                match kind {
                    Kind::Text => {
                        let t = v.and_then(json_text);
                        (t.clone(), t.map(SortKey::NoCase))
                    }
                    Kind::Number => {
                        let n = v.and_then(json_number);
                        (n.map(table_state::real_text), n.map(SortKey::Number))
                    }
                    Kind::Time => match v
                        .and_then(Value::as_str)
                        .and_then(|s| parse_time(s).map(|t| (s.to_string(), t)))
                    {
                        Some((s, t)) => (Some(s), Some(SortKey::Time(t.timestamp_micros()))),
                        None => (None, None),
                    },
                    Kind::Array => {
                        let n = v.and_then(Value::as_array).map(Vec::len);
                        (
                            n.map(|n| n.to_string()),
                            n.map(|n| SortKey::Number(n as f64)),
                        )
                    }
                }
            }
        }
    }
}

/// Whether a by-job request asks for the table (`table`, `distinct` or
/// `format=page`).
pub fn wanted(pairs: &[(String, String)]) -> bool {
    pairs
        .iter()
        .any(|(k, v)| k == "table" || k == "distinct" || (k == "format" && v == "page"))
}

/// The last value of `name`.
fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// `GET /api/inventory/by-job/{manifest_id}` in table mode: the page
/// (`{manifest_id, display, summary, rows, total, limit, offset}`, the
/// columns from the current manifest) or a column's candidates.
pub async fn by_job(
    state: &AppState,
    manifest_id: String,
    pairs: &[(String, String)],
) -> Result<Value, ApiError> {
    let hint = state
        .inventory
        .manifests
        .get(&manifest_id)
        .await
        .ok_or_else(|| ApiError::NotFound(format!("manifest {manifest_id:?} not registered")))?
        .inventory
        .clone()
        .ok_or_else(|| {
            ApiError::NotFound(format!("manifest {manifest_id:?} has no inventory hint"))
        })?;
    let fields: Vec<DisplayField> = hint.summary.clone().unwrap_or_else(|| hint.display.clone());
    let limit =
        super::params::parse_clamped("limit", param(pairs, "limit"), DEFAULT_LIMIT, 1, MAX_LIMIT)?;
    let offset = super::params::parse_clamped("offset", param(pairs, "offset"), 0, 0, i64::MAX)?;
    let q = param(pairs, "q")
        .map(str::trim)
        .unwrap_or_default()
        .to_string();

    let meta: HashMap<String, Vec<MetaEntry>> = state
        .control
        .list_json::<AgentMeta>(BUCKET_AGENT_META)
        .await?
        .into_iter()
        .map(|(pc, m)| (pc, m.entries))
        .collect();
    let table = TableState::parse(param(pairs, "table"))?;
    let named_meta: std::collections::BTreeSet<&str> = table
        .filters
        .iter()
        .map(|(id, _)| id.as_str())
        .chain(table.sort.iter().map(|(id, _)| id.as_str()))
        .chain(param(pairs, "distinct"))
        .filter(|id| id.starts_with("meta:"))
        .collect();
    if named_meta.len() > MAX_META_COLUMNS {
        return Err(ApiError::bad_param(
            "table",
            format!(
                "{} metadata columns; at most {MAX_META_COLUMNS}",
                named_meta.len()
            ),
        ));
    }
    let filters = table
        .filters
        .iter()
        .map(|(id, f)| Ok((Col::resolve("table", id, &fields, &meta)?, f.clone())))
        .collect::<Result<Vec<(Col, Filter)>, ApiError>>()?;
    let sort = table
        .sort
        .as_ref()
        .map(|(id, desc)| Ok::<_, ApiError>((Col::resolve("table", id, &fields, &meta)?, *desc)))
        .transpose()?;
    let distinct = param(pairs, "distinct")
        .map(|id| Col::resolve("distinct", id.trim(), &fields, &meta))
        .transpose()?;

    let (store, id) = (state.store.clone(), manifest_id.clone());
    let (records, agents) = offload::blocking(move || {
        let q = q.to_ascii_lowercase();
        let keep = |pc: &str| q.is_empty() || pc.to_ascii_lowercase().contains(&q);
        let rows = store.inventory_for_job(&id, keep, 0, usize::MAX)?.rows;
        Ok((rows, store.agents()?))
    })
    .await?;
    let lookup = Lookup {
        agents: agents.into_iter().map(|a| (a.pc_id.clone(), a)).collect(),
        meta,
    };
    let rows: Vec<Row> = records
        .into_iter()
        .map(|record| Row {
            facts: serde_json::from_str(&record.facts_json).unwrap_or(Value::Null),
            record,
        })
        .collect();
    let passes = |row: &Row, skip: Option<&Col>| {
        filters.iter().all(|(col, f)| {
            Some(col) == skip || {
                let (text, _) = lookup.cell(row, col);
                f.holds_folded(text.as_deref(), None, col.kind() == Kind::Text)
            }
        })
    };

    if let Some(col) = distinct {
        let texts: Vec<Option<String>> = rows
            .iter()
            .filter(|r| passes(r, Some(&col)))
            .map(|r| lookup.cell(r, &col).0)
            .collect();
        let answer = table_state::candidates_folded(
            texts.iter().map(Option::as_deref),
            col.kind() == Kind::Text,
        );
        return Ok(serde_json::to_value(answer).unwrap_or(Value::Null));
    }

    let mut kept: Vec<Row> = rows.into_iter().filter(|r| passes(r, None)).collect();
    if let Some((col, desc)) = &sort {
        table_state::sort_rows(
            &mut kept,
            *desc,
            |r| lookup.cell(r, col).1,
            |r| r.record.pc_id.as_str(),
        );
    }
    let total = kept.len();
    let page: Vec<Value> = kept
        .into_iter()
        .skip(usize::try_from(offset).unwrap_or(usize::MAX))
        .take(usize::try_from(limit).unwrap_or(usize::MAX))
        .map(|r| {
            let (user, display) = lookup.logon(&r.record.pc_id);
            json!({
                "pc_id": r.record.pc_id,
                "collected_at": r.record.collected_at,
                "@account_user": user,
                "@account_display_name": display,
                "last_logon_user": user,
                "last_logon_display_name": display,
                "facts": r.facts,
            })
        })
        .collect();
    Ok(json!({
        "manifest_id": manifest_id,
        "display": hint.display,
        "summary": hint.summary,
        "rows": page,
        "total": total,
        "limit": limit,
        "offset": offset,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_read_facts_as_the_reference_does() {
        let facts = json!({"os": {"name": "Windows 11"}, "ram": "16", "ok": true,
                           "n": 2, "r": 2.5, "apps": [1, 2, 3], "when": "2026-01-01 00:00:00"});
        assert_eq!(at_path(&facts, "os.name"), Some(&json!("Windows 11")));
        assert_eq!(at_path(&facts, "os.none"), None);
        assert_eq!(json_text(&json!(true)).as_deref(), Some("1"));
        assert_eq!(json_text(&json!(10)).as_deref(), Some("10"));
        assert_eq!(json_text(&json!(10.0)).as_deref(), Some("10.0"));
        assert_eq!(json_text(&json!({"a": 1})).as_deref(), Some(r#"{"a":1}"#));
        assert_eq!(json_number(&json!(" 16 ")), Some(16.0));
        assert_eq!(json_number(&json!("sixteen")), None);
        assert_eq!(json_number(&json!(true)), Some(1.0));
        assert!(
            parse_time("2026-01-01T01:00:00+02:00").unwrap()
                < parse_time("2026-01-01").unwrap() + chrono::Duration::hours(1)
        );
        assert!(parse_time("yesterday").is_none());
    }
}
