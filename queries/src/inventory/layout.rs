//! How an explode spec turns one inventory's JSON into typed rows, and
//! what counts as a change between two inventories.
//!
//! Types come only from the manifest (`text`, the default, `integer`,
//! `real`), and both sides of every comparison go through the same
//! conversion, so an element whose `version` is the number `120` in a
//! text column equals the stored `"120"`, a missing key equals `null`,
//! and `5` equals `5.0` in a real column: none of these is a change.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde_json::{Map, Value};

/// A declared column type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Text,
    Integer,
    Real,
}

impl Kind {
    /// The manifest's `type` of an explode column (`None`: text).
    pub fn parse(raw: Option<&str>) -> Result<Kind, String> {
        match raw {
            None | Some("text") => Ok(Kind::Text),
            Some("integer") => Ok(Kind::Integer),
            Some("real") => Ok(Kind::Real),
            Some(other) => Err(format!(
                "unknown column type {other:?} (expected text, integer or real)"
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Text => "text",
            Kind::Integer => "integer",
            Kind::Real => "real",
        }
    }

    pub(crate) fn data_type(self) -> DataType {
        match self {
            Kind::Text => DataType::Utf8,
            Kind::Integer => DataType::Int64,
            Kind::Real => DataType::Float64,
        }
    }

    /// A JSON value as this type; `Null` for what does not convert (a
    /// fraction in an integer column, a word in a real one). Text takes
    /// anything: strings as they are, everything else as compact JSON.
    pub fn convert(self, v: Option<&Value>) -> Typed {
        match (self, v) {
            (_, None | Some(Value::Null)) => Typed::Null,
            (Kind::Text, Some(Value::String(s))) => Typed::Text(s.clone()),
            (Kind::Text, Some(other)) => Typed::Text(other.to_string()),
            (Kind::Integer, Some(Value::Number(n))) => match n.as_i64() {
                Some(i) => Typed::Int(i),
                None => n
                    .as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                    .map_or(Typed::Null, |f| Typed::Int(f as i64)),
            },
            (Kind::Integer, Some(Value::String(s))) => {
                s.trim().parse().map_or(Typed::Null, Typed::Int)
            }
            (Kind::Real, Some(Value::Number(n))) => n
                .as_f64()
                .filter(|f| f.is_finite())
                .map_or(Typed::Null, Typed::Real),
            (Kind::Real, Some(Value::String(s))) => s
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .map_or(Typed::Null, Typed::Real),
            _ => Typed::Null,
        }
    }
}

/// A value converted to its column's type.
#[derive(Debug, Clone, PartialEq)]
pub enum Typed {
    Null,
    Text(String),
    Int(i64),
    Real(f64),
}

impl Typed {
    pub fn to_json(&self) -> Value {
        match self {
            Typed::Null => Value::Null,
            Typed::Text(s) => Value::String(s.clone()),
            Typed::Int(i) => Value::from(*i),
            Typed::Real(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        }
    }
}

/// One explode spec of one manifest, checked: where rows come from, their
/// columns and types, and their identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Layout {
    pub manifest_id: String,
    /// The top-level array of the inventory JSON.
    pub field: String,
    /// The operator's table name (shown, and the export's file name).
    pub table: String,
    pub columns: Vec<(String, Kind)>,
    pub primary_key: Vec<String>,
    pub track_history: bool,
}

/// Columns every exploded row has before the declared ones.
pub const FIXED_COLUMNS: [&str; 2] = ["pc_id", "collected_at"];

impl Layout {
    /// Checks what the reference only finds out at projection time: a
    /// non-empty primary key made of declared columns, no column declared
    /// twice or named like a fixed one.
    pub fn check(&self) -> Result<(), String> {
        if self.field.is_empty() {
            return Err("explode field is empty".into());
        }
        if self.columns.is_empty() {
            return Err(format!("explode {:?} declares no columns", self.field));
        }
        let mut seen = std::collections::HashSet::new();
        for (c, _) in &self.columns {
            if c.is_empty() || FIXED_COLUMNS.contains(&c.as_str()) {
                return Err(format!(
                    "explode {:?}: column name {c:?} is not allowed",
                    self.field
                ));
            }
            if !seen.insert(c.as_str()) {
                return Err(format!(
                    "explode {:?}: column {c:?} declared twice",
                    self.field
                ));
            }
        }
        if self.primary_key.is_empty() {
            return Err(format!("explode {:?}: primary_key is empty", self.field));
        }
        for k in &self.primary_key {
            if !seen.contains(k.as_str()) {
                return Err(format!(
                    "explode {:?}: primary_key {k:?} is not a declared column",
                    self.field
                ));
            }
        }
        Ok(())
    }

    /// The declared type of a column.
    pub fn kind(&self, column: &str) -> Option<Kind> {
        self.columns
            .iter()
            .find(|(c, _)| c == column)
            .map(|(_, k)| *k)
    }

    /// The Arrow schema of the rows: pc_id, collected_at, the columns.
    pub fn schema(&self) -> SchemaRef {
        let mut fields = vec![
            Field::new("pc_id", DataType::Utf8, false),
            Field::new(
                "collected_at",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
        ];
        for (c, k) in &self.columns {
            fields.push(Field::new(c, k.data_type(), true));
        }
        Arc::new(Schema::new(fields))
    }

    /// The elements of an inventory: its `field` array (none when the
    /// field is missing or not an array), each identity once, the first
    /// occurrence winning.
    pub fn elements<'a>(&self, facts: &'a Value) -> Vec<&'a Value> {
        let Some(Value::Array(items)) = facts.get(&self.field) else {
            return Vec::new();
        };
        let mut seen = std::collections::HashSet::new();
        items
            .iter()
            .filter(|e| seen.insert(self.identity_key(e)))
            .collect()
    }

    /// An element's declared columns, converted.
    pub fn row(&self, element: &Value) -> Vec<Typed> {
        self.columns
            .iter()
            .map(|(c, k)| k.convert(element.get(c)))
            .collect()
    }

    /// The element's primary key as one comparable string.
    pub fn identity_key(&self, element: &Value) -> String {
        self.identity(element).to_string()
    }

    /// The element's primary key as a JSON object of typed values.
    pub fn identity(&self, element: &Value) -> Value {
        let mut m = Map::new();
        for k in &self.primary_key {
            let kind = self.kind(k).unwrap_or(Kind::Text);
            m.insert(k.clone(), kind.convert(element.get(k)).to_json());
        }
        Value::Object(m)
    }
}

/// One change between two inventories of one PC.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub field_path: String,
    /// `None` for a top-level value.
    pub identity: Option<Value>,
    pub kind: &'static str,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

/// The element changes of one tracked explode spec from `before` (the
/// PC's previous inventory, if any) to `after`: added and changed in the
/// new array's order, then removed in the old one's. An element changed
/// when one of its declared columns did; `before`/`after` carry whole
/// elements.
pub fn element_changes(layout: &Layout, before: Option<&Value>, after: &Value) -> Vec<Change> {
    let old: Vec<&Value> = before.map(|b| layout.elements(b)).unwrap_or_default();
    let new = layout.elements(after);
    let old_by_key: HashMap<String, &Value> =
        old.iter().map(|e| (layout.identity_key(e), *e)).collect();
    let mut out = Vec::new();
    let mut matched = std::collections::HashSet::new();
    for e in &new {
        let key = layout.identity_key(e);
        match old_by_key.get(&key) {
            None => out.push(Change {
                field_path: layout.field.clone(),
                identity: Some(layout.identity(e)),
                kind: "added",
                before: None,
                after: Some((*e).clone()),
            }),
            Some(prev) => {
                matched.insert(key);
                if layout.row(prev) != layout.row(e) {
                    out.push(Change {
                        field_path: layout.field.clone(),
                        identity: Some(layout.identity(e)),
                        kind: "changed",
                        before: Some((*prev).clone()),
                        after: Some((*e).clone()),
                    });
                }
            }
        }
    }
    for e in &old {
        if !matched.contains(&layout.identity_key(e)) {
            out.push(Change {
                field_path: layout.field.clone(),
                identity: Some(layout.identity(e)),
                kind: "removed",
                before: Some((*e).clone()),
                after: None,
            });
        }
    }
    out
}

/// Changes of the listed top-level values: `added` when the previous
/// inventory lacked the key, `changed` when it differed (numbers by
/// value: `16` and `16.0` are equal); a key the new inventory lacks is
/// no change.
pub fn scalar_changes(fields: &[String], before: Option<&Value>, after: &Value) -> Vec<Change> {
    let mut out = Vec::new();
    for f in fields {
        let Some(new) = after.get(f) else { continue };
        let wrap = |v: &Value| serde_json::json!({ "value": v });
        match before.and_then(|b| b.get(f)) {
            None => out.push(Change {
                field_path: f.clone(),
                identity: None,
                kind: "added",
                before: None,
                after: Some(wrap(new)),
            }),
            Some(old) if !same_value(old, new) => out.push(Change {
                field_path: f.clone(),
                identity: None,
                kind: "changed",
                before: Some(wrap(old)),
                after: Some(wrap(new)),
            }),
            Some(_) => {}
        }
    }
    out
}

fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i == j,
            _ => x.as_f64() == y.as_f64(),
        },
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn apps() -> Layout {
        Layout {
            manifest_id: "inv-sw".into(),
            field: "apps".into(),
            table: "inventory_sw_apps".into(),
            columns: vec![
                ("name".into(), Kind::Text),
                ("version".into(), Kind::Text),
                ("size".into(), Kind::Integer),
            ],
            primary_key: vec!["name".into()],
            track_history: true,
        }
    }

    #[test]
    fn type_drift_that_the_reference_reports_every_scan_is_no_change() {
        let l = apps();
        let before = json!({"apps": [{"name": "chrome", "version": "120", "size": 5}]});
        // version now a number, size a float with no fraction, an extra
        // undeclared key: the declared values are the same.
        let after = json!({"apps": [{"name": "chrome", "version": 120, "size": 5.0, "x": 1}]});
        assert_eq!(element_changes(&l, Some(&before), &after), vec![]);
    }

    #[test]
    fn added_changed_removed_each_once_in_a_stable_order() {
        let l = apps();
        let before = json!({"apps": [
            {"name": "a", "version": "1"}, {"name": "b", "version": "1"}, {"name": "c"}
        ]});
        let after = json!({"apps": [
            {"name": "d", "version": "1"}, {"name": "b", "version": "2"}, {"name": "a", "version": "1"},
            {"name": "d", "version": "ignored duplicate"}
        ]});
        let got: Vec<(&str, Value)> = element_changes(&l, Some(&before), &after)
            .into_iter()
            .map(|c| (c.kind, c.identity.unwrap()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("added", json!({"name": "d"})),
                ("changed", json!({"name": "b"})),
                ("removed", json!({"name": "c"})),
            ]
        );
    }

    #[test]
    fn conversions_follow_the_declared_type() {
        assert_eq!(Kind::Integer.convert(Some(&json!("42"))), Typed::Int(42));
        assert_eq!(Kind::Integer.convert(Some(&json!(4.5))), Typed::Null);
        assert_eq!(Kind::Real.convert(Some(&json!(5))), Typed::Real(5.0));
        assert_eq!(
            Kind::Text.convert(Some(&json!(true))),
            Typed::Text("true".into())
        );
        assert_eq!(
            Kind::Text.convert(Some(&json!({"a": 1}))),
            Typed::Text("{\"a\":1}".into())
        );
        assert_eq!(Kind::Text.convert(None), Typed::Null);
        assert!(Kind::parse(Some("blob")).is_err());
    }

    #[test]
    fn scalars_compare_numbers_by_value_and_never_report_removal() {
        let fields = vec!["ram".to_string(), "os".to_string(), "gone".to_string()];
        let before = json!({"ram": 16, "gone": 1});
        let after = json!({"ram": 16.0, "os": "11"});
        let got = scalar_changes(&fields, Some(&before), &after);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!((got[0].field_path.as_str(), got[0].kind), ("os", "added"));
        let later = json!({"ram": 32, "os": "11"});
        let got = scalar_changes(&fields, Some(&after), &later);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].before, Some(json!({"value": 16.0})));
        assert_eq!(got[0].kind, "changed");
    }
}
