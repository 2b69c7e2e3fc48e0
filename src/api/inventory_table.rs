//! The 0.101 dashboard's inventory tables: the column state (`table=`),
//! `format=page` and `distinct=` on `GET /api/inventory/by-job/{id}` (the
//! fleet list), `GET /api/inventory/{id}/search-scalars` (the scalar
//! search) and `GET /api/inventory/{id}/search/{field}` (exploded rows).
//! Columns are `pcId`, `lastLogon` ("Display (user)"), `collectedAt`
//! (alias `collected`), `meta:<key>` and `f:<field>`: for the fleet list
//! each field the job's current manifest shows (its `summary`, else its
//! `display`), for the scalar search the display fields but tables, for
//! exploded rows the declared columns. A field is typed by its `type`:
//! number / bytes / integer / real compare as numbers, timestamp as
//! times, table as the array's length, the rest as text without regard
//! to ASCII case (as the reference's `COLLATE NOCASE`). A value of the
//! wrong kind is an empty cell: last in either order, selected by `null`.
//! Every other parameter is a `<field>[__op]=value` filter (`pc_id` the
//! PC), as the reference's.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use kanade_queries::inventory::{Kind as ExplodeKind, Layout};
use kanade_shared::manifest::{DisplayField, InventoryHint};
use kanade_shared::wire::MetaEntry;
use kanade_storage::AgentRecord;
use serde_json::{json, Value};

use super::error::ApiError;
use super::offload;
use super::params::parse_clamped;
use super::table_state::{self, Filter, SortKey, TableState};
use crate::api::state::AppState;

/// Rows per page: default and most (the fleet list); most of a search.
const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1_000;
const MAX_SEARCH_LIMIT: i64 = 5_000;
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
        fields: &[(String, Kind)],
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
                } else if let Some((name, kind)) = id
                    .strip_prefix("f:")
                    .and_then(|name| fields.iter().find(|(f, _)| f == name))
                {
                    Col::Field(name.clone(), *kind)
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

/// One row with what its cells read: the facts (or an exploded row).
struct Row {
    pc_id: String,
    collected_at: DateTime<Utc>,
    values: Value,
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
        let pc = row.pc_id.as_str();
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
                Some(table_state::time_text(row.collected_at)),
                Some(SortKey::Time(row.collected_at.timestamp_micros())),
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
                let v = at_path(&row.values, name);
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

/// Where a table's rows come from.
pub enum Source {
    /// The fleet list: a job's facts per PC, the hint's summary (else
    /// display) fields.
    Fleet(InventoryHint),
    /// The scalar search: a job's facts per PC, the display fields but
    /// tables.
    Scalars(InventoryHint),
    /// One explode dataset's rows.
    Explode(Layout),
}

impl Source {
    fn fields(&self) -> Vec<(String, Kind)> {
        let typed = |fs: &[DisplayField]| -> Vec<(String, Kind)> {
            fs.iter().map(|f| (f.field.clone(), Kind::of(f))).collect()
        };
        match self {
            Source::Fleet(h) => typed(h.summary.as_deref().unwrap_or(&h.display)),
            Source::Scalars(h) => typed(&h.display)
                .into_iter()
                .filter(|(_, k)| *k != Kind::Array)
                .collect(),
            Source::Explode(l) => l
                .columns
                .iter()
                .map(|(name, k)| {
                    let kind = match k {
                        ExplodeKind::Integer | ExplodeKind::Real => Kind::Number,
                        ExplodeKind::Text => Kind::Text,
                    };
                    (name.clone(), kind)
                })
                .collect(),
        }
    }

    /// Rows per page: default and most.
    fn limits(&self, table: bool) -> (i64, i64) {
        match (self, table) {
            (Source::Fleet(_), _) => (DEFAULT_LIMIT, MAX_LIMIT),
            (_, true) => (DEFAULT_LIMIT, MAX_SEARCH_LIMIT),
            (_, false) => (MAX_LIMIT, MAX_SEARCH_LIMIT),
        }
    }
}

/// The manifest's inventory hint: 404 when the manifest or its hint is
/// missing.
pub async fn hint_of(state: &AppState, manifest_id: &str) -> Result<InventoryHint, ApiError> {
    state
        .inventory
        .manifests
        .get(manifest_id)
        .await
        .ok_or_else(|| ApiError::NotFound(format!("manifest {manifest_id:?} not registered")))?
        .inventory
        .clone()
        .ok_or_else(|| {
            ApiError::NotFound(format!("manifest {manifest_id:?} has no inventory hint"))
        })
}

/// Whether a request asks for the table (`table`, `distinct` or
/// `format=page`).
pub fn wanted(pairs: &[(String, String)]) -> bool {
    pairs
        .iter()
        .any(|(k, v)| k == "table" || k == "distinct" || (k == "format" && v == "page"))
}

/// Parameters that are no filter.
const NAMED: [&str; 6] = ["table", "distinct", "format", "limit", "offset", "q"];

/// The last value of `name`.
pub(super) fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Contains,
    Prefix,
    Suffix,
}

/// A `<field>[__op]=value` filter.
struct Legacy {
    col: Col,
    op: Op,
    value: String,
    /// The value as what the column compares by.
    key: SortKey,
}

impl Legacy {
    fn parse(
        name: &str,
        value: &str,
        resolve: impl Fn(&str) -> Result<Col, ApiError>,
    ) -> Result<Self, ApiError> {
        let (field, op) = match name.rsplit_once("__") {
            Some((f, op)) => (f, op),
            None => (name, "eq"),
        };
        let op = match op {
            "eq" => Op::Eq,
            "ne" => Op::Ne,
            "lt" => Op::Lt,
            "le" => Op::Le,
            "gt" => Op::Gt,
            "ge" => Op::Ge,
            "contains" => Op::Contains,
            "prefix" => Op::Prefix,
            "suffix" => Op::Suffix,
            other => {
                return Err(ApiError::BadRequest(format!(
                    "unknown filter operator {other:?} in `{name}` \
                     (eq, ne, lt, le, gt, ge, contains, prefix, suffix)"
                )))
            }
        };
        let col = if field == "pc_id" {
            Col::PcId
        } else {
            resolve(&format!("f:{field}"))?
        };
        let key = match col.kind() {
            Kind::Number | Kind::Array if !matches!(op, Op::Contains | Op::Prefix | Op::Suffix) => {
                let n = value
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|n| n.is_finite())
                    .ok_or_else(|| {
                        ApiError::BadRequest(format!(
                            "filter `{name}` on a numeric column needs a finite number, got {value:?}"
                        ))
                    })?;
                SortKey::Number(n)
            }
            Kind::Time if !matches!(op, Op::Contains | Op::Prefix | Op::Suffix) => {
                let t = parse_time(value).ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "filter `{name}` on a timestamp column needs a time, got {value:?}"
                    ))
                })?;
                SortKey::Time(t.timestamp_micros())
            }
            _ => SortKey::NoCase(value.to_string()),
        };
        Ok(Self {
            col,
            op,
            value: value.to_string(),
            key,
        })
    }

    fn holds(&self, lookup: &Lookup, row: &Row) -> bool {
        let raw_text = || match &self.col {
            Col::Field(name, _) => at_path(&row.values, name).and_then(json_text),
            other => lookup.cell(row, other).0,
        };
        let fold = |s: &str| s.to_ascii_lowercase();
        match self.op {
            Op::Contains => raw_text().is_some_and(|t| fold(&t).contains(&fold(&self.value))),
            Op::Prefix => raw_text().is_some_and(|t| fold(&t).starts_with(&fold(&self.value))),
            Op::Suffix => raw_text().is_some_and(|t| fold(&t).ends_with(&fold(&self.value))),
            op => {
                let Some(have) = lookup.cell(row, &self.col).1 else {
                    return false;
                };
                let ord = have.cmp_same(&self.key);
                match op {
                    Op::Eq => ord.is_eq(),
                    Op::Ne => ord.is_ne(),
                    Op::Lt => ord.is_lt(),
                    Op::Le => ord.is_le(),
                    Op::Gt => ord.is_gt(),
                    _ => ord.is_ge(),
                }
            }
        }
    }
}

/// Answers one of the inventory tables for `manifest_id` from `source`:
/// the page, or with `distinct` a column's candidates. `table` says
/// whether the dashboard's table mode is asked for (else the scalar
/// search's first form: a plain list).
pub async fn run(
    state: &AppState,
    manifest_id: &str,
    source: Source,
    pairs: &[(String, String)],
    table: bool,
) -> Result<Value, ApiError> {
    let fields = source.fields();
    if !table && matches!(source, Source::Scalars(_)) && fields.is_empty() {
        return Err(ApiError::NotFound(format!(
            "manifest {manifest_id:?} has no scalar display fields to search"
        )));
    }
    let (default_limit, max_limit) = source.limits(table);
    let limit = parse_clamped("limit", param(pairs, "limit"), default_limit, 1, max_limit)?;
    let offset = parse_clamped("offset", param(pairs, "offset"), 0, 0, i64::MAX)?;
    let q = param(pairs, "q")
        .map(str::trim)
        .unwrap_or_default()
        .to_ascii_lowercase();

    let meta: HashMap<String, Vec<MetaEntry>> = super::agent_meta::by_pc(state).await?;
    let resolve = |param: &'static str| {
        let (fields, meta) = (&fields, &meta);
        move |id: &str| Col::resolve(param, id, fields, meta)
    };
    let state_table = TableState::parse(param(pairs, "table"))?;
    let named_meta: std::collections::BTreeSet<&str> = state_table
        .filters
        .iter()
        .map(|(id, _)| id.as_str())
        .chain(state_table.sort.iter().map(|(id, _)| id.as_str()))
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
    let filters = state_table
        .filters
        .iter()
        .map(|(id, f)| Ok((resolve("table")(id)?, f.clone())))
        .collect::<Result<Vec<(Col, Filter)>, ApiError>>()?;
    let sort = state_table
        .sort
        .as_ref()
        .map(|(id, desc)| Ok::<_, ApiError>((resolve("table")(id)?, *desc)))
        .transpose()?;
    let distinct = param(pairs, "distinct")
        .map(|id| resolve("distinct")(id.trim()))
        .transpose()?;
    let legacy = pairs
        .iter()
        .filter(|(k, _)| !NAMED.contains(&k.as_str()))
        .map(|(k, v)| Legacy::parse(k, v, resolve("filter")))
        .collect::<Result<Vec<_>, ApiError>>()?;

    let rows: Vec<Row> = match &source {
        Source::Explode(layout) => {
            let (explode, layout) = (
                std::sync::Arc::clone(&state.inventory.explode),
                layout.clone(),
            );
            offload::query(async move { explode.all(&layout).await })
                .await?
                .into_iter()
                .filter_map(|m| {
                    let pc_id = m.get("pc_id")?.as_str()?.to_string();
                    let collected_at = m
                        .get("collected_at")
                        .and_then(Value::as_str)
                        .and_then(parse_time)?;
                    Some(Row {
                        pc_id,
                        collected_at,
                        values: Value::Object(m),
                    })
                })
                .filter(|r| q.is_empty() || r.pc_id.to_ascii_lowercase().contains(&q))
                .collect()
        }
        Source::Fleet(_) | Source::Scalars(_) => {
            let (store, id, q) = (state.store.clone(), manifest_id.to_string(), q.clone());
            offload::blocking(move || {
                let keep = |pc: &str| q.is_empty() || pc.to_ascii_lowercase().contains(&q);
                Ok(store.inventory_for_job(&id, keep, 0, usize::MAX)?.rows)
            })
            .await?
            .into_iter()
            .map(|r| Row {
                values: serde_json::from_str(&r.facts_json).unwrap_or(Value::Null),
                pc_id: r.pc_id,
                collected_at: r.collected_at,
            })
            .collect()
        }
    };
    let agents = {
        let store = state.store.clone();
        offload::blocking(move || Ok(store.agents()?)).await?
    };
    let lookup = Lookup {
        agents: agents.into_iter().map(|a| (a.pc_id.clone(), a)).collect(),
        meta,
    };
    let passes = |row: &Row, skip: Option<&Col>| {
        legacy.iter().all(|l| l.holds(&lookup, row))
            && filters.iter().all(|(col, f)| {
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
        // Stable: ties keep the PC, then primary-key order they came in.
        table_state::sort_rows(
            &mut kept,
            *desc,
            |r| lookup.cell(r, col).1,
            |r| r.pc_id.as_str(),
        );
    }
    let total = kept.len();
    let page: Vec<Value> = kept
        .into_iter()
        .skip(usize::try_from(offset).unwrap_or(usize::MAX))
        .take(usize::try_from(limit).unwrap_or(usize::MAX))
        .map(|r| {
            let (user, display) = lookup.logon(&r.pc_id);
            let mut out = serde_json::Map::new();
            out.insert("pc_id".into(), json!(r.pc_id));
            out.insert(
                "collected_at".into(),
                if table {
                    json!(r.collected_at)
                } else {
                    json!(r.collected_at.to_rfc3339())
                },
            );
            out.insert("@account_user".into(), json!(user));
            out.insert("@account_display_name".into(), json!(display));
            match &source {
                Source::Fleet(_) => {
                    out.insert("last_logon_user".into(), json!(user));
                    out.insert("last_logon_display_name".into(), json!(display));
                    out.insert("facts".into(), r.values);
                }
                Source::Scalars(_) => {
                    for (name, _) in &fields {
                        let v = match at_path(&r.values, name) {
                            Some(Value::Bool(b)) => json!(i64::from(*b)),
                            Some(v) => v.clone(),
                            None => Value::Null,
                        };
                        out.insert(name.clone(), v);
                    }
                }
                Source::Explode(_) => {
                    if let Value::Object(m) = r.values {
                        for (k, v) in m {
                            if k != "pc_id" && k != "collected_at" {
                                out.insert(k, v);
                            }
                        }
                    }
                }
            }
            Value::Object(out)
        })
        .collect();
    Ok(match &source {
        Source::Fleet(hint) => json!({
            "manifest_id": manifest_id,
            "display": hint.display,
            "summary": hint.summary,
            "rows": page,
            "total": total,
            "limit": limit,
            "offset": offset,
        }),
        _ if param(pairs, "format") == Some("page") => json!({"rows": page, "total": total}),
        _ => Value::Array(page),
    })
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
