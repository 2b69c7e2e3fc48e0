//! Inventory history (`inventory_history`, a time-series table keyed by
//! pc_id, when the run finished and the change's number): one PC's
//! changes, the fleet's changes and when each PC first showed an element.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{Array, Int64Array, StringArray, TimestampMicrosecondArray};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::prelude::{col, lit, Expr};
use kanade_storage::TimeSeriesTable;
use serde::Serialize;
use serde_json::Value;

use crate::session::{lit_ts, Engine};
use crate::{Error, Result};

const TABLE: &str = "inventory_history";

/// One recorded change, in the reference's shape (`*_json` as JSON
/// text).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryEvent {
    /// Stable across replays: derived from (pc_id, observed_at, seq).
    pub id: i64,
    pub pc_id: String,
    pub job_id: String,
    pub field_path: String,
    pub identity_json: Option<String>,
    pub change_kind: String,
    pub before_json: Option<String>,
    pub after_json: Option<String>,
    /// When the run that saw the change finished.
    pub observed_at: DateTime<Utc>,
}

/// When a PC first showed a change matching a filter.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FirstSeen {
    pub pc_id: String,
    pub first_seen_at: DateTime<Utc>,
}

/// Which changes a question is about.
#[derive(Debug, Clone, Default)]
pub struct HistoryFilter {
    pub job_id: String,
    pub pc_id: Option<String>,
    pub field: Option<String>,
    /// `added`, `removed` or `changed`.
    pub kind: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Identity keys and the value each must have (its text form: `3`
    /// matches the number 3 and the string "3").
    pub identity: Vec<(String, String)>,
}

impl HistoryFilter {
    fn expr(&self) -> Expr {
        let mut e = col("job_id").eq(lit(self.job_id.as_str()));
        if let Some(pc) = &self.pc_id {
            e = e.and(col("pc_id").eq(lit(pc.as_str())));
        }
        if let Some(f) = &self.field {
            e = e.and(col("field_path").eq(lit(f.as_str())));
        }
        if let Some(k) = &self.kind {
            e = e.and(col("change_kind").eq(lit(k.as_str())));
        }
        if let Some(t) = self.since {
            e = e.and(col("at").gt_eq(lit_ts(t)));
        }
        if let Some(t) = self.until {
            e = e.and(col("at").lt(lit_ts(t)));
        }
        if !self.identity.is_empty() {
            e = e.and(col("identity_json").is_not_null());
        }
        e
    }

    fn identity_matches(&self, identity_json: Option<&str>) -> bool {
        if self.identity.is_empty() {
            return true;
        }
        let Some(Value::Object(id)) = identity_json.and_then(|s| serde_json::from_str(s).ok())
        else {
            return false;
        };
        self.identity.iter().all(|(k, want)| match id.get(k) {
            Some(Value::String(s)) => s == want,
            Some(Value::Null) | None => false,
            Some(other) => &other.to_string() == want,
        })
    }

    fn range(&self) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        match (self.since, self.until) {
            (None, None) => None,
            (s, u) => Some((
                s.unwrap_or(DateTime::<Utc>::MIN_UTC),
                u.unwrap_or(DateTime::<Utc>::MAX_UTC),
            )),
        }
    }
}

/// Answers the history questions.
#[derive(Debug, Clone)]
pub struct HistoryQueries {
    table: Arc<TimeSeriesTable>,
    engine: Engine,
}

impl HistoryQueries {
    pub fn new(table: Arc<TimeSeriesTable>) -> Result<Self> {
        Ok(Self {
            table,
            engine: Engine::new(TABLE)?,
        })
    }

    async fn batches(&self, f: &HistoryFilter, fetch: Option<usize>) -> Result<Vec<RecordBatch>> {
        let snapshot = self.table.snapshot(f.range());
        let df = self
            .engine
            .frame(TABLE, &snapshot)?
            .filter(f.expr())
            .and_then(|df| {
                df.sort(vec![
                    col("at").sort(false, false),
                    col("pc_id").sort(true, false),
                    col("seq").sort(true, false),
                ])
            })
            .and_then(|df| df.limit(0, fetch))
            .map_err(Error::df(TABLE))?;
        df.collect().await.map_err(Error::df(TABLE))
    }

    /// Changes matching the filter, newest first, `limit` after `offset`.
    pub async fn events(
        &self,
        f: &HistoryFilter,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<HistoryEvent>> {
        // Identity filters are checked on the decoded JSON, after the scan.
        let fetch = f.identity.is_empty().then(|| offset.saturating_add(limit));
        let mut out = Vec::new();
        let mut skipped = 0;
        for b in self.batches(f, fetch).await? {
            for e in events_of(&b)? {
                if !f.identity_matches(e.identity_json.as_deref()) {
                    continue;
                }
                if skipped < offset {
                    skipped += 1;
                } else if out.len() < limit {
                    out.push(e);
                }
            }
        }
        Ok(out)
    }

    /// Each PC's earliest change matching the filter, earliest first.
    pub async fn first_seen(
        &self,
        f: &HistoryFilter,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<FirstSeen>> {
        let mut first: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
        for b in self.batches(f, None).await? {
            for e in events_of(&b)? {
                if f.identity_matches(e.identity_json.as_deref()) {
                    let t = first.entry(e.pc_id).or_insert(e.observed_at);
                    *t = (*t).min(e.observed_at);
                }
            }
        }
        let mut rows: Vec<FirstSeen> = first
            .into_iter()
            .map(|(pc_id, first_seen_at)| FirstSeen {
                pc_id,
                first_seen_at,
            })
            .collect();
        rows.sort_by(|a, b| {
            a.first_seen_at
                .cmp(&b.first_seen_at)
                .then(a.pc_id.cmp(&b.pc_id))
        });
        Ok(rows.into_iter().skip(offset).take(limit).collect())
    }
}

fn events_of(b: &RecordBatch) -> Result<Vec<HistoryEvent>> {
    let shape = |m: String| Error::Shape {
        table: TABLE,
        message: m,
    };
    let text = |name: &str| crate::session::text_column(TABLE, b, name);
    let opt = |a: &StringArray, i: usize| a.is_valid(i).then(|| a.value(i).to_string());
    let (pc, job, field, identity, kind, before, after) = (
        text("pc_id")?,
        text("job_id")?,
        text("field_path")?,
        text("identity_json")?,
        text("change_kind")?,
        text("before_json")?,
        text("after_json")?,
    );
    let at = b
        .column_by_name("at")
        .and_then(|c| c.as_any().downcast_ref::<TimestampMicrosecondArray>())
        .ok_or_else(|| shape("at missing".into()))?;
    let seq = b
        .column_by_name("seq")
        .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
        .ok_or_else(|| shape("seq missing".into()))?;
    Ok((0..b.num_rows())
        .map(|i| HistoryEvent {
            id: event_id(pc.value(i), at.value(i), seq.value(i)),
            pc_id: pc.value(i).to_string(),
            job_id: job.value(i).to_string(),
            field_path: field.value(i).to_string(),
            identity_json: opt(&identity, i),
            change_kind: kind.value(i).to_string(),
            before_json: opt(&before, i),
            after_json: opt(&after, i),
            observed_at: DateTime::<Utc>::from_timestamp_micros(at.value(i)).unwrap_or_default(),
        })
        .collect())
}

/// A positive id from the change's key, the same on every replay of
/// the stream.
fn event_id(pc_id: &str, at: i64, seq: i64) -> i64 {
    let key = pc_id
        .bytes()
        .chain(at.to_le_bytes())
        .chain(seq.to_le_bytes());
    (kanade_storage::stable_hash(key) >> 1) as i64
}
