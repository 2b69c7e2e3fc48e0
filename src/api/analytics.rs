//! `GET /api/analytics`: every analytics widget rendered for a window —
//! jobs' `aggregate:` widgets and views' `widgets:` (rollups of
//! observation events), then views' `sql_widgets:` (read-only SQL over the
//! catalog), in kanade 0.101's shapes.
//!
//! Parameters: `from` (default `to` − 24 h) and `to` (default now),
//! `tz_offset_minutes` (the browser's offset, held to ±900, for hour
//! buckets), `pc_id` (present: the PC page's widgets, `scope: pc`; absent:
//! the fleet's), `pinned=true` (only widgets pinned to the dashboard).
//!
//! Aggregates are computed from the redb observation indexes on the
//! blocking pool within `[server] scan_budget_secs`, walking only the
//! widget's kind (fleet) or PC (per-PC) in the window. SQL widgets run
//! through `crate::sql` (its caps) and are kept for their `refresh`.
//! Where upstream drops a widget that failed, we answer it as
//! `{"render": "error", "error": ...}` so the page says why; and a
//! numeric or boolean `group_by` value is a label (upstream drops it).

use std::collections::HashMap;

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Duration, Timelike, Utc};
use kanade_queries::SqlAnswer;
use kanade_shared::manifest::{
    AggregateAgg, AggregateRender, AggregateScope, AggregateTimeBucket, AggregateTransform,
    AggregateWidget, Placement, RenderKind, RenderSpec, WidgetWidth,
};
use kanade_storage::{ObsRecord, ObsScan, RelationalStore};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::error::ApiError;
use super::params::{parse_bool, parse_clamped, parse_time, ApiQuery};
use crate::api::state::AppState;

/// Bars a widget shows when it sets no `limit`.
const DEFAULT_BARS: usize = 10;
/// Rows a SQL widget reads at most.
const SQL_WIDGET_ROWS: usize = 1_000;
/// Kinds of the operating timeline without a swimlane of their own.
const OP_MARKERS: [&str; 2] = ["agent_offline", "agent_online"];

#[derive(Deserialize)]
pub struct Params {
    from: Option<String>,
    to: Option<String>,
    tz_offset_minutes: Option<String>,
    pc_id: Option<String>,
    pinned: Option<String>,
}

/// One rendered widget.
#[derive(Serialize)]
pub struct WidgetResult {
    dashboard: String,
    title: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    scope: &'static str,
    pin_dashboard: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    width: Option<WidgetWidth>,
    #[serde(flatten)]
    body: Value,
}

/// The request's window and audience.
#[derive(Clone)]
struct Ask {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    tz: Duration,
    pc: Option<String>,
    pinned: bool,
}

impl Ask {
    fn scope(&self) -> &'static str {
        if self.pc.is_some() {
            "pc"
        } else {
            "fleet"
        }
    }

    fn result(
        &self,
        title: &str,
        description: &Option<String>,
        p: &Placement,
        body: Value,
    ) -> WidgetResult {
        WidgetResult {
            dashboard: p.tab().to_string(),
            title: title.to_string(),
            description: description.clone(),
            scope: self.scope(),
            pin_dashboard: p.is_pinned(),
            width: p.width_for(self.pinned),
            body,
        }
    }
}

fn parse(p: Params) -> Result<Ask, ApiError> {
    let to = match p.to.as_deref() {
        Some(t) => parse_time("to", t)?,
        None => Utc::now(),
    };
    let from = match p.from.as_deref() {
        Some(f) => parse_time("from", f)?,
        None => to - Duration::hours(24),
    };
    if from >= to {
        return Err(ApiError::bad_param("from", "must be before `to`"));
    }
    let tz = parse_clamped(
        "tz_offset_minutes",
        p.tz_offset_minutes.as_deref(),
        0,
        -900,
        900,
    )?;
    if let Some(pc) = p.pc_id.as_deref().filter(|pc| !pc.is_empty()) {
        crate::control::check_key("pc_id", pc)?;
    }
    Ok(Ask {
        from,
        to,
        tz: Duration::minutes(tz),
        pc: p.pc_id,
        pinned: parse_bool("pinned", p.pinned.as_deref(), false)?,
    })
}

/// `GET /api/analytics`.
pub async fn analytics(
    State(state): State<AppState>,
    ApiQuery(p): ApiQuery<Params>,
) -> Result<Json<Vec<WidgetResult>>, ApiError> {
    let ask = parse(p)?;
    let views = super::views::all(&state).await?;
    let scope = if ask.pc.is_some() {
        AggregateScope::Pc
    } else {
        AggregateScope::Fleet
    };
    let mut widgets: Vec<AggregateWidget> = state
        .inventory
        .manifests
        .all()
        .iter()
        .flat_map(|m| m.aggregate.clone().unwrap_or_default())
        .chain(views.iter().flat_map(|v| v.widgets.clone()))
        .filter(|w| w.scope == scope && (!ask.pinned || w.placement.is_pinned()))
        .collect();
    widgets.sort_by(|a, b| {
        (a.order.unwrap_or(0), a.placement.tab(), &a.title).cmp(&(
            b.order.unwrap_or(0),
            b.placement.tab(),
            &b.title,
        ))
    });

    let store = state.store.clone();
    let a = ask.clone();
    let bodies = super::offload::budgeted_scan(
        state.scan_budget,
        "ask for a shorter window",
        move |in_time| {
            widgets
                .into_iter()
                .map(|w| {
                    let body = aggregate(&store, &w, &a, in_time)?;
                    Ok(body.map(|b| (w, b)))
                })
                .collect::<Result<Vec<_>, ApiError>>()
        },
    )
    .await?;
    let mut out: Vec<WidgetResult> = bodies
        .into_iter()
        .flatten()
        .map(|(w, body)| ask.result(&w.title, &w.description, &w.placement, body))
        .collect();

    for view in &views {
        for (idx, w) in view.sql_widgets.iter().enumerate() {
            let per_pc = crate::sql::bind_pc_id(&w.query, None).1 > 0;
            if per_pc != ask.pc.is_some() || (ask.pinned && !w.placement.is_pinned()) {
                continue;
            }
            let answer = state
                .view_answers
                .answer(
                    &state.sql,
                    &view.id,
                    idx,
                    w,
                    ask.pc.as_deref(),
                    SQL_WIDGET_ROWS,
                )
                .await;
            let mut body = match answer.answer.and_then(|a| render_sql(&w.render, &a)) {
                Ok(body) => body,
                Err(e) => {
                    tracing::warn!(view = %view.id, widget = idx, error = %e, "SQL widget not rendered");
                    json!({"render": "error", "error": e})
                }
            };
            body["computed_at"] = json!(answer.computed_at);
            out.push(ask.result(&w.title, &w.description, &w.placement, body));
        }
    }
    Ok(Json(out))
}

/// A value at a dotted path of a payload (`a.b`), as `json_extract`.
fn at_path<'a>(payload: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(payload, |v, seg| v.as_object()?.get(seg))
        .filter(|v| !v.is_null())
}

/// Whether a flag counts as set (`true` or 1, as SQLite's `= 1`).
fn truthy(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64() == Some(1.0),
        _ => false,
    }
}

/// A group's label: text as it is, other values as JSON; blank is none.
fn label(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// A summed value: numbers, and text that reads as one.
fn number(v: Option<&Value>) -> Option<f64> {
    match v? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        _ => None,
    }
}

/// The host of a URL-ish value, lowercased, without user or port; none
/// for the browser's own pages.
pub fn host_of(value: &str) -> Option<String> {
    const INTERNAL: [&str; 9] = [
        "about:",
        "data:",
        "javascript:",
        "chrome:",
        "chrome-extension:",
        "edge:",
        "brave:",
        "view-source:",
        "file:",
    ];
    let lower = value.trim().to_ascii_lowercase();
    if INTERNAL.iter().any(|p| lower.starts_with(p)) {
        return None;
    }
    let rest = lower.split_once("://").map_or(lower.as_str(), |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if host.starts_with('[') {
        host.find(']').map_or(host, |end| &host[..=end])
    } else {
        host.split(':').next().unwrap_or("")
    };
    let host = host.trim();
    (!host.is_empty()).then(|| host.to_string())
}

/// Walks the widget's rows: its kind in the window, of the PC when one is
/// asked, of its source when it names one.
fn scan(
    store: &RelationalStore,
    w: &AggregateWidget,
    kind: &str,
    ask: &Ask,
    in_time: &mut dyn FnMut() -> bool,
    mut visit: impl FnMut(&ObsRecord),
) -> Result<(), ApiError> {
    let index = match ask.pc.as_deref() {
        Some(pc) => ObsScan::Pc(pc),
        None => ObsScan::Kind(kind),
    };
    store.scan_obs_events_desc(index, Some(ask.from), Some(ask.to), |e| {
        if e.kind == kind && w.source.as_deref().is_none_or(|s| s == e.source) {
            visit(&e);
        }
        in_time()
    })?;
    Ok(())
}

/// Bars: the largest `limit` groups, ties by label.
fn bars(groups: HashMap<String, f64>, limit: usize, sample: Option<u32>) -> Value {
    let mut rows: Vec<(String, f64)> = groups.into_iter().collect();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    rows.truncate(limit);
    let rows: Vec<Value> = rows
        .into_iter()
        .map(|(label, v)| {
            let value = v.round() as i64;
            let mut row = json!({"label": label, "value": value});
            if let Some(m) = sample {
                row["est_minutes"] = json!(value.saturating_mul(i64::from(m)));
            }
            row
        })
        .collect();
    json!({"render": "bar", "rows": rows})
}

/// One aggregate widget's body; `None` for a widget this request cannot
/// render (a value this version does not know, a PC timeline asked for
/// the fleet).
fn aggregate(
    store: &RelationalStore,
    w: &AggregateWidget,
    ask: &Ask,
    in_time: &mut dyn FnMut() -> bool,
) -> Result<Option<Value>, ApiError> {
    if w.render == AggregateRender::Unknown {
        return Ok(None);
    }
    if w.render == AggregateRender::OpTimeline {
        return op_timeline(store, ask, in_time);
    }
    let (Some(kind), Some(agg)) = (w.kind.as_deref(), w.agg) else {
        return Ok(None);
    };
    if agg == AggregateAgg::Unknown
        || w.transform == Some(AggregateTransform::Unknown)
        || w.time_bucket == Some(AggregateTimeBucket::Unknown)
    {
        return Ok(None);
    }
    let sample = w.sample_minutes;
    let est = |n: i64| sample.map(|m| n.saturating_mul(i64::from(m)));

    if w.time_bucket == Some(AggregateTimeBucket::Hour) {
        let mut hours = [(0i64, 0i64); 24];
        scan(store, w, kind, ask, in_time, |e| {
            let Some(local) = e.at.checked_add_signed(ask.tz) else {
                return;
            };
            let h = local.hour() as usize;
            hours[h].0 += 1;
            let active = match w.bool_path.as_deref() {
                Some(p) => truthy(at_path(&e.payload, p)),
                None => true,
            };
            hours[h].1 += i64::from(active);
        })?;
        let buckets: Vec<Value> = hours
            .iter()
            .enumerate()
            .filter(|(_, (total, _))| *total > 0)
            .map(|(h, (total, active))| json!({"hour": h, "total": total, "active": active}))
            .collect();
        let metric = if w.bool_path.is_some() {
            "ratio"
        } else {
            "count"
        };
        return Ok(Some(
            json!({"render": "timeline", "metric": metric, "buckets": buckets}),
        ));
    }

    match agg {
        AggregateAgg::Ratio => {
            let path = w.bool_path.as_deref().unwrap_or_default();
            let (mut total, mut active) = (0i64, 0i64);
            let (mut first, mut last): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) =
                (None, None);
            scan(store, w, kind, ask, in_time, |e| {
                total += 1;
                if truthy(at_path(&e.payload, path)) {
                    active += 1;
                    first = Some(first.map_or(e.at, |f| f.min(e.at)));
                    last = Some(last.map_or(e.at, |l| l.max(e.at)));
                }
            })?;
            let ratio = if total > 0 {
                active as f64 / total as f64
            } else {
                0.0
            };
            let mut body =
                json!({"render": "gauge", "total": total, "active": active, "ratio": ratio});
            if let Some(m) = est(active) {
                body["est_minutes"] = json!(m);
            }
            if let (Some(f), Some(l)) = (first, last) {
                body["first"] = json!(f);
                body["last"] = json!(l);
            }
            Ok(Some(body))
        }
        AggregateAgg::Count | AggregateAgg::Sum => {
            let value = |e: &ObsRecord| -> Option<f64> {
                match agg {
                    AggregateAgg::Count => Some(1.0),
                    _ => number(at_path(&e.payload, w.value_path.as_deref()?)),
                }
            };
            let sample = (agg == AggregateAgg::Count).then_some(sample).flatten();
            let Some(group_by) = w.group_by.as_deref() else {
                let mut sum = 0.0;
                scan(store, w, kind, ask, in_time, |e| {
                    sum += value(e).unwrap_or(0.0);
                })?;
                let value = sum.round() as i64;
                let mut body = json!({"render": "stat", "value": value});
                if let Some(m) = sample.map(|m| value.saturating_mul(i64::from(m))) {
                    body["est_minutes"] = json!(m);
                }
                return Ok(Some(body));
            };
            let mut groups: HashMap<String, f64> = HashMap::new();
            scan(store, w, kind, ask, in_time, |e| {
                let key = if group_by == "pc_id" {
                    Some(e.pc_id.clone())
                } else {
                    let l = label(at_path(&e.payload, group_by));
                    match w.transform {
                        Some(AggregateTransform::Host) => l.as_deref().and_then(host_of),
                        _ => l,
                    }
                };
                let Some(key) = key else { return };
                if w.exclude.contains(&key) {
                    return;
                }
                let v = value(e);
                if agg == AggregateAgg::Sum && v.is_none() && group_by != "pc_id" {
                    return;
                }
                *groups.entry(key).or_default() += v.unwrap_or(0.0);
            })?;
            let limit = w.limit.map_or(DEFAULT_BARS, |l| l as usize);
            Ok(Some(bars(groups, limit, sample)))
        }
        // A value a later version adds.
        _ => Ok(None),
    }
}

/// The PC's operating timeline: its lifecycle events in the window, each
/// lane's last state before it, and its last heartbeat.
fn op_timeline(
    store: &RelationalStore,
    ask: &Ask,
    in_time: &mut dyn FnMut() -> bool,
) -> Result<Option<Value>, ApiError> {
    let Some(pc) = ask.pc.as_deref() else {
        return Ok(None);
    };
    let lane = |kind: &str| -> Option<usize> {
        super::obs_events::lane(kind).or_else(|| OP_MARKERS.contains(&kind).then_some(4))
    };
    let mut events: Vec<ObsRecord> = Vec::new();
    store.scan_obs_events_desc(ObsScan::Pc(pc), Some(ask.from), Some(ask.to), |e| {
        if lane(&e.kind).is_some() {
            events.push(e);
        }
        in_time()
    })?;
    let mut seeds: [Option<ObsRecord>; 5] = Default::default();
    store.scan_obs_events_desc(ObsScan::Pc(pc), None, Some(ask.from), |e| {
        if let Some(l) = lane(&e.kind) {
            seeds[l].get_or_insert(e);
        }
        seeds.iter().any(Option::is_none) && in_time()
    })?;
    events.extend(seeds.into_iter().flatten());
    events.sort_by_key(|e| (e.at, e.id));
    let events: Vec<Value> = events
        .into_iter()
        .map(|e| {
            let mut row = json!({"at": e.at, "kind": e.kind, "source": e.source});
            if let Some(b) = e.payload.get("boot_time").filter(|b| !b.is_null()) {
                row["boot_time"] = b.clone();
            }
            row
        })
        .collect();
    let mut body =
        json!({"render": "op_timeline", "from": ask.from, "to": ask.to, "events": events});
    if let Some(hb) = store.agent(pc)?.and_then(|a| a.last_heartbeat) {
        body["last_heartbeat"] = json!(hb);
    }
    Ok(Some(body))
}

/// A cell as a whole number: numbers rounded, numeric text parsed, else 0.
fn int_cell(v: Option<&Value>) -> i64 {
    number(v.filter(|v| !v.is_boolean())).map_or(0, |f| f.round() as i64)
}

/// A SQL widget's answer mapped onto its visual.
pub fn render_sql(spec: &RenderSpec, a: &SqlAnswer) -> Result<Value, String> {
    let col = |name: &Option<String>, what: &str| -> Result<usize, String> {
        let name = name
            .as_deref()
            .ok_or_else(|| format!("render.{what} is required for this kind"))?;
        a.columns.iter().position(|c| c == name).ok_or_else(|| {
            format!(
                "render references column '{name}' which the query does not return (available: {})",
                a.columns.join(", ")
            )
        })
    };
    let first = a.rows.first();
    Ok(match spec.kind {
        RenderKind::Table => {
            let names: Vec<String> = spec.columns.clone().unwrap_or_else(|| a.columns.clone());
            let idx: Vec<usize> = names
                .iter()
                .map(|n| col(&Some(n.clone()), "columns"))
                .collect::<Result<_, _>>()?;
            let labels = spec.labels.clone().unwrap_or_default();
            let headers: Vec<&str> = names
                .iter()
                .map(|n| labels.get(n).map_or(n.as_str(), String::as_str))
                .collect();
            let rows: Vec<Vec<&Value>> = a
                .rows
                .iter()
                .map(|r| idx.iter().map(|i| &r[*i]).collect())
                .collect();
            json!({"render": "table", "columns": headers, "rows": rows})
        }
        RenderKind::Stat => {
            let v = col(&spec.value, "value")?;
            json!({"render": "stat", "value": int_cell(first.map(|r| &r[v]))})
        }
        RenderKind::Bar | RenderKind::Pie => {
            let (l, v) = (col(&spec.label, "label")?, col(&spec.value, "value")?);
            let mut rows: Vec<(String, f64)> = a
                .rows
                .iter()
                .map(|r| {
                    let label = match &r[l] {
                        Value::String(s) => s.clone(),
                        Value::Null => "—".to_string(),
                        other => other.to_string(),
                    };
                    (
                        label,
                        number(Some(&r[v]).filter(|v| !v.is_boolean())).unwrap_or(0.0),
                    )
                })
                .collect();
            if let Some(limit) = spec.limit {
                rows.sort_by(|a, b| b.1.total_cmp(&a.1));
                rows.truncate(limit as usize);
            }
            let rows: Vec<Value> = rows
                .into_iter()
                .map(|(label, value)| json!({"label": label, "value": json_number(value)}))
                .collect();
            if spec.kind == RenderKind::Pie {
                json!({"render": "pie", "rows": rows, "donut": spec.donut.unwrap_or(false)})
            } else {
                json!({"render": "bar", "rows": rows})
            }
        }
        RenderKind::Gauge => match (&spec.value, &spec.num, &spec.den) {
            (Some(_), _, _) => {
                let v = col(&spec.value, "value")?;
                let ratio = number(first.map(|r| &r[v])).unwrap_or(0.0);
                json!({"render": "gauge", "total": 0, "active": 0, "ratio": ratio})
            }
            _ => {
                let (n, d) = (col(&spec.num, "num")?, col(&spec.den, "den")?);
                let active = int_cell(first.map(|r| &r[n]));
                let total = int_cell(first.map(|r| &r[d]));
                let ratio = if total != 0 {
                    active as f64 / total as f64
                } else {
                    0.0
                };
                json!({"render": "gauge", "total": total, "active": active, "ratio": ratio})
            }
        },
        RenderKind::Unknown => return Err("render.kind is not one this backend knows".into()),
    })
}

/// A whole number as an integer, else as a float.
fn json_number(v: f64) -> Value {
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        json!(v as i64)
    } else {
        json!(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_fold_as_the_reference_folds_them() {
        for (url, host) in [
            (
                "https://User@Example.COM:8443/path?q#x",
                Some("example.com"),
            ),
            ("http://[::1]:80/", Some("[::1]")),
            ("example.org/a", Some("example.org")),
            ("chrome://settings", None),
            ("about:blank", None),
            ("https:///nohost", None),
        ] {
            assert_eq!(host_of(url).as_deref(), host, "{url}");
        }
    }

    fn answer(columns: &[&str], rows: Vec<Vec<Value>>) -> SqlAnswer {
        SqlAnswer {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows,
            truncated: false,
        }
    }

    fn spec(v: Value) -> RenderSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn sql_answers_map_onto_each_visual() {
        let a = answer(
            &["app", "pcs", "share"],
            vec![
                vec![json!("zip"), json!(3), json!(0.25)],
                vec![json!(null), json!(9), json!("0.5")],
                vec![json!("7z"), json!(5), json!(1)],
            ],
        );
        assert_eq!(
            render_sql(
                &spec(
                    json!({"kind": "table", "columns": ["pcs", "app"], "labels": {"pcs": "PCs"}})
                ),
                &a
            )
            .unwrap(),
            json!({"render": "table", "columns": ["PCs", "app"], "rows": [[3, "zip"], [9, null], [5, "7z"]]})
        );
        assert_eq!(
            render_sql(
                &spec(json!({"kind": "bar", "label": "app", "value": "pcs", "limit": 2})),
                &a
            )
            .unwrap(),
            json!({"render": "bar", "rows": [{"label": "—", "value": 9}, {"label": "7z", "value": 5}]})
        );
        assert_eq!(
            render_sql(
                &spec(json!({"kind": "pie", "label": "app", "value": "share"})),
                &a
            )
            .unwrap()["rows"][1],
            json!({"label": "—", "value": 0.5})
        );
        assert_eq!(
            render_sql(&spec(json!({"kind": "stat", "value": "share"})), &a).unwrap(),
            json!({"render": "stat", "value": 0})
        );
        assert_eq!(
            render_sql(
                &spec(json!({"kind": "gauge", "num": "pcs", "den": "pcs"})),
                &a
            )
            .unwrap(),
            json!({"render": "gauge", "total": 3, "active": 3, "ratio": 1.0})
        );
        let e = render_sql(&spec(json!({"kind": "stat", "value": "nope"})), &a).unwrap_err();
        assert!(e.contains("'nope'") && e.contains("app, pcs, share"), "{e}");
        assert_eq!(
            render_sql(
                &spec(json!({"kind": "stat", "value": "pcs"})),
                &answer(&["pcs"], vec![])
            )
            .unwrap(),
            json!({"render": "stat", "value": 0})
        );
    }
}
