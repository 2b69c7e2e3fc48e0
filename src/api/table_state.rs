//! The per-column sort and filter state the 0.101 dashboard sends with a
//! table (`?table={"sort":{"id","dir"},"filters":{"<id>":{"contains","values"}}}`)
//! and the checklist candidates of one column (`?distinct=<id>`): parsed
//! and bounded once here, evaluated over rows already in memory by the
//! list that owns the columns.
//!
//! The rules follow the reference's SQL so a saved URL filters the same:
//! `contains` is a substring match with ASCII letters folded (SQLite's
//! `LIKE '%…%'`), also over a column's secondary text; `values` is an exact
//! match on the cell's text, `null` matching an empty cell; sorting puts
//! empty cells last in both directions and breaks ties by `pc_id`;
//! candidates are grouped by text, counted, ordered by value with the
//! empty cell last, and more than [`MAX_CANDIDATES`] report `overflow`.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use super::error::ApiError;

/// Distinct values listed before a checklist gives way to a text box.
pub const MAX_CANDIDATES: usize = 200;
/// Checklist selections one filter may carry.
pub const MAX_VALUES: usize = 200;
/// The largest `table` state accepted.
const MAX_STATE_BYTES: usize = 64 * 1024;
/// The most column filters one state may carry.
const MAX_FILTERS: usize = 64;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    sort: Option<RawSort>,
    #[serde(default)]
    filters: BTreeMap<String, Filter>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSort {
    id: String,
    dir: String,
}

/// One column's filter.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    contains: Option<String>,
    values: Option<Vec<Option<String>>>,
}

/// A parsed `table` parameter: column ids not yet resolved against the
/// owner's registry (the owner names unknown ones).
#[derive(Debug, Default)]
pub struct TableState {
    /// Column id and whether descending.
    pub sort: Option<(String, bool)>,
    /// Column id and its filter, in id order.
    pub filters: Vec<(String, Filter)>,
}

impl TableState {
    /// Parse the `table` parameter (absent or blank: no state).
    pub fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        let Some(raw) = raw.map(str::trim).filter(|s| !s.is_empty()) else {
            return Ok(Self::default());
        };
        if raw.len() > MAX_STATE_BYTES {
            return Err(ApiError::bad_param(
                "table",
                format!(
                    "table state is {} bytes; at most {MAX_STATE_BYTES}",
                    raw.len()
                ),
            ));
        }
        let state: RawState = serde_json::from_str(raw)
            .map_err(|e| ApiError::bad_param("table", format!("invalid table state: {e}")))?;
        if state.filters.len() > MAX_FILTERS {
            return Err(ApiError::bad_param(
                "table",
                format!(
                    "{} column filters; at most {MAX_FILTERS}",
                    state.filters.len()
                ),
            ));
        }
        for (id, f) in &state.filters {
            if let Some(n) = f.values.as_ref().map(Vec::len).filter(|n| *n > MAX_VALUES) {
                return Err(ApiError::bad_param(
                    "table",
                    format!("filter `{id}` has {n} checklist values; at most {MAX_VALUES}"),
                ));
            }
        }
        let sort = match state.sort {
            None => None,
            Some(s) => Some((s.id, parse_dir("table", &s.dir)?)),
        };
        Ok(Self {
            sort,
            filters: state.filters.into_iter().collect(),
        })
    }
}

/// `asc` / `desc` → descending?
pub fn parse_dir(param: &'static str, dir: &str) -> Result<bool, ApiError> {
    match dir.trim() {
        "asc" => Ok(false),
        "desc" => Ok(true),
        other => Err(ApiError::bad_param(
            param,
            format!("sort direction must be asc or desc, got `{other}`"),
        )),
    }
}

/// `haystack LIKE '%needle%'` as SQLite has it: ASCII case folded only.
pub fn like_contains(haystack: &str, needle: &str) -> bool {
    haystack
        .to_ascii_lowercase()
        .contains(&needle.to_ascii_lowercase())
}

impl Filter {
    /// Whether a cell passes: `text` is the cell as text (`None`: empty),
    /// `also` the secondary text `contains` searches too.
    pub fn holds(&self, text: Option<&str>, also: Option<&str>) -> bool {
        self.holds_folded(text, also, false)
    }

    /// As [`Filter::holds`]; with `fold`, a checklist value also matches
    /// without regard to ASCII case (a text column the reference compares
    /// `COLLATE NOCASE`).
    pub fn holds_folded(&self, text: Option<&str>, also: Option<&str>, fold: bool) -> bool {
        if let Some(needle) = self
            .contains
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let hit = |t: Option<&str>| t.is_some_and(|t| like_contains(t, needle));
            if !(hit(text) || hit(also)) {
                return false;
            }
        }
        match &self.values {
            None => true,
            Some(values) => values.iter().any(|v| match (v.as_deref(), text) {
                (Some(v), Some(t)) if fold => v.eq_ignore_ascii_case(t),
                (v, t) => v == t,
            }),
        }
    }
}

/// What a cell sorts by.
#[derive(Clone, Debug, PartialEq)]
pub enum SortKey {
    /// Text without regard to ASCII case (SQLite's `COLLATE NOCASE`).
    NoCase(String),
    /// Text as stored (binary order).
    Exact(String),
    Number(f64),
    Time(i64),
}

impl SortKey {
    /// How two keys of one column order.
    pub fn cmp_same(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Self::NoCase(a), Self::NoCase(b)) => a
                .bytes()
                .map(|c| c.to_ascii_lowercase())
                .cmp(b.bytes().map(|c| c.to_ascii_lowercase())),
            (Self::Exact(a), Self::Exact(b)) => a.cmp(b),
            (Self::Number(a), Self::Number(b)) => a.total_cmp(b),
            (Self::Time(a), Self::Time(b)) => a.cmp(b),
            // One column yields one kind; a mix orders by kind.
            _ => self.rank().cmp(&other.rank()),
        }
    }

    fn rank(&self) -> u8 {
        match self {
            Self::Number(_) => 0,
            Self::Time(_) => 1,
            Self::NoCase(_) | Self::Exact(_) => 2,
        }
    }
}

/// Order rows by `key` (empty cells last in both directions), ties by
/// `tiebreak` ascending.
pub fn sort_rows<R>(
    rows: &mut [R],
    desc: bool,
    key: impl Fn(&R) -> Option<SortKey>,
    tiebreak: impl Fn(&R) -> &str,
) {
    let mut keyed: Vec<(Option<SortKey>, usize)> =
        rows.iter().enumerate().map(|(i, r)| (key(r), i)).collect();
    keyed.sort_by(|(ka, ia), (kb, ib)| {
        let by = match (ka, kb) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(a), Some(b)) if desc => b.cmp_same(a),
            (Some(a), Some(b)) => a.cmp_same(b),
        };
        by.then_with(|| tiebreak(&rows[*ia]).cmp(tiebreak(&rows[*ib])))
    });
    let order: Vec<usize> = keyed.into_iter().map(|(_, i)| i).collect();
    permute(rows, &order);
}

/// Reorder `rows` so position `n` holds what was at `order[n]`.
fn permute<R>(rows: &mut [R], order: &[usize]) {
    let mut target: Vec<usize> = vec![0; order.len()];
    for (to, from) in order.iter().enumerate() {
        target[*from] = to;
    }
    for i in 0..rows.len() {
        while target[i] != i {
            let j = target[i];
            rows.swap(i, j);
            target.swap(i, j);
        }
    }
}

/// One checklist candidate.
#[derive(Debug, Serialize, PartialEq)]
pub struct Candidate {
    pub value: Option<String>,
    pub count: u64,
}

/// The `distinct` answer: the candidates, or none and `overflow` when there
/// are more than [`MAX_CANDIDATES`].
#[derive(Debug, Serialize)]
pub struct Candidates {
    pub values: Vec<Candidate>,
    pub overflow: bool,
}

/// Group `texts` into candidates (value order, the empty cell last).
pub fn candidates<'a>(texts: impl IntoIterator<Item = Option<&'a str>>) -> Candidates {
    candidates_folded(texts, false)
}

/// As [`candidates`]; with `fold`, values that differ only in ASCII case
/// are one candidate (spelled as first seen), ordered without regard to
/// case.
pub fn candidates_folded<'a>(
    texts: impl IntoIterator<Item = Option<&'a str>>,
    fold: bool,
) -> Candidates {
    // Keyed by the folded text when folding; the value keeps a spelling.
    let mut counts: BTreeMap<String, (&str, u64)> = BTreeMap::new();
    let mut empty = 0u64;
    for t in texts {
        match t {
            Some(t) => {
                let key = if fold {
                    t.to_ascii_lowercase()
                } else {
                    t.to_string()
                };
                counts.entry(key).or_insert((t, 0)).1 += 1;
            }
            None => empty += 1,
        }
    }
    let distinct = counts.len() + usize::from(empty > 0);
    if distinct > MAX_CANDIDATES {
        return Candidates {
            values: Vec::new(),
            overflow: true,
        };
    }
    let mut values: Vec<Candidate> = counts
        .into_values()
        .map(|(v, count)| Candidate {
            value: Some(v.to_string()),
            count,
        })
        .collect();
    if empty > 0 {
        values.push(Candidate {
            value: None,
            count: empty,
        });
    }
    Candidates {
        values,
        overflow: false,
    }
}

/// A REAL as SQLite's `CAST(x AS TEXT)` writes it (15 significant digits,
/// always with a decimal point), so checklist values match the reference's.
pub fn real_text(v: f64) -> String {
    if !v.is_finite() {
        return if v.is_nan() {
            String::new()
        } else if v > 0.0 {
            "Inf".into()
        } else {
            "-Inf".into()
        };
    }
    if v == 0.0 {
        return "0.0".into();
    }
    let exp = v.abs().log10().floor() as i32;
    if !(-4..15).contains(&exp) {
        let s = format!("{v:.14e}");
        let (mantissa, e) = s.split_once('e').unwrap_or((&s, "0"));
        let mut m = mantissa.trim_end_matches('0').to_string();
        if m.ends_with('.') {
            m.push('0');
        }
        let e: i32 = e.parse().unwrap_or(0);
        return format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs());
    }
    let decimals = usize::try_from(14 - exp).unwrap_or(0);
    let s = format!("{v:.decimals$}");
    if !s.contains('.') {
        return format!("{s}.0");
    }
    let s = s.trim_end_matches('0');
    if s.ends_with('.') {
        format!("{s}0")
    } else {
        s.to_string()
    }
}

/// A time as the rows show it (RFC 3339, UTC).
pub fn time_text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_parses_and_bounds() {
        let s = TableState::parse(Some(
            r#"{"sort":{"id":"os","dir":"desc"},"filters":{"b":{"contains":"x"},"a":{"values":["1",null]}}}"#,
        ))
        .unwrap();
        assert_eq!(s.sort, Some(("os".into(), true)));
        assert_eq!(
            s.filters
                .iter()
                .map(|(id, _)| id.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert!(TableState::parse(Some("  ")).unwrap().sort.is_none());
        for bad in [
            "{",
            r#"{"sort":{"id":"os","dir":"up"}}"#,
            r#"{"filters":{"a":{"regex":"x"}}}"#,
            r#"{"order":1}"#,
        ] {
            let e = TableState::parse(Some(bad)).unwrap_err().to_string();
            assert!(e.contains("table"), "{bad}: {e}");
        }
        let many: Vec<String> = (0..=MAX_VALUES).map(|i| format!("\"{i}\"")).collect();
        let raw = format!(r#"{{"filters":{{"a":{{"values":[{}]}}}}}}"#, many.join(","));
        assert!(TableState::parse(Some(&raw))
            .unwrap_err()
            .to_string()
            .contains("checklist values"));
        let big = format!(
            r#"{{"filters":{{"a":{{"contains":"{}"}}}}}}"#,
            "x".repeat(70_000)
        );
        assert!(TableState::parse(Some(&big))
            .unwrap_err()
            .to_string()
            .contains("bytes"));
    }

    #[test]
    fn filters_match_as_the_reference_does() {
        let contains = Filter {
            contains: Some(" eXa ".into()),
            values: None,
        };
        assert!(contains.holds(Some("An example"), None));
        assert!(contains.holds(None, Some("EXAM")));
        assert!(!contains.holds(Some("other"), Some("none")));
        assert!(!contains.holds(None, None));
        let values = Filter {
            contains: None,
            values: Some(vec![Some("Linux".into()), None]),
        };
        assert!(values.holds(Some("Linux"), None));
        assert!(!values.holds(Some("linux"), None), "checklists are exact");
        assert!(values.holds(None, None), "null selects the empty cell");
        let none = Filter {
            contains: None,
            values: Some(vec![]),
        };
        assert!(
            !none.holds(Some("x"), None),
            "an empty checklist selects nothing"
        );
    }

    #[test]
    fn sorting_puts_empty_cells_last_both_ways_and_breaks_ties_by_id() {
        let rows = vec![
            ("d", None),
            ("c", Some(2.0)),
            ("a", Some(1.0)),
            ("b", Some(2.0)),
        ];
        let mut asc = rows.clone();
        sort_rows(&mut asc, false, |r| r.1.map(SortKey::Number), |r| r.0);
        assert_eq!(asc.iter().map(|r| r.0).collect::<String>(), "abcd");
        let mut desc = rows;
        sort_rows(&mut desc, true, |r| r.1.map(SortKey::Number), |r| r.0);
        assert_eq!(desc.iter().map(|r| r.0).collect::<String>(), "bcad");
        let mut text = vec![("1", "b"), ("2", "A"), ("3", "a")];
        sort_rows(
            &mut text,
            false,
            |r| Some(SortKey::NoCase(r.1.into())),
            |r| r.0,
        );
        assert_eq!(text.iter().map(|r| r.0).collect::<String>(), "231");
    }

    #[test]
    fn candidates_count_order_and_overflow() {
        let c = candidates([Some("b"), None, Some("a"), Some("b")]);
        assert!(!c.overflow);
        assert_eq!(
            c.values,
            [
                Candidate {
                    value: Some("a".into()),
                    count: 1
                },
                Candidate {
                    value: Some("b".into()),
                    count: 2
                },
                Candidate {
                    value: None,
                    count: 1
                },
            ]
        );
        let folded = candidates_folded([Some("apple"), Some("Apple"), Some("b")], true);
        assert_eq!(
            folded.values,
            [
                Candidate {
                    value: Some("apple".into()),
                    count: 2
                },
                Candidate {
                    value: Some("b".into()),
                    count: 1
                },
            ]
        );
        let f = Filter {
            contains: None,
            values: Some(vec![Some("WINDOWS".into())]),
        };
        assert!(f.holds_folded(Some("Windows"), None, true));
        assert!(!f.holds(Some("Windows"), None));
        let many: Vec<String> = (0..=MAX_CANDIDATES).map(|i| i.to_string()).collect();
        let c = candidates(many.iter().map(|s| Some(s.as_str())));
        assert!(c.overflow);
        assert!(c.values.is_empty());
    }

    #[test]
    fn reals_read_as_sqlite_writes_them() {
        assert_eq!(real_text(3.0), "3.0");
        assert_eq!(real_text(12.5), "12.5");
        assert_eq!(real_text(0.1 + 0.2), "0.3");
        assert_eq!(real_text(-0.25), "-0.25");
        assert_eq!(real_text(0.0), "0.0");
        assert_eq!(real_text(1e15), "1.0e+15");
        assert_eq!(real_text(0.00001), "1.0e-05");
        assert_eq!(real_text(123456.0), "123456.0");
    }
}
