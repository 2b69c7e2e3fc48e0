//! SQLite's date and time functions for `POST /api/query`, so the
//! reference's queries (`WHERE last_heartbeat > datetime('now', '-1
//! day')`, `strftime('%Y-%m', started_at)`) run unchanged: `datetime`,
//! `date`, `time`, `julianday`, `unixepoch` and `strftime`, each taking a
//! time value and SQLite's modifiers. Written from SQLite's documentation.
//!
//! Time values: `now`, ISO 8601 text (`YYYY-MM-DD`, with ` ` or `T` and
//! `HH:MM[:SS[.fff]]`, an optional `Z` or offset), our timestamp columns,
//! and numbers (a Julian day; unix seconds after `unixepoch`). Modifiers:
//! `±N days|hours|minutes|seconds|months|years`, `start of
//! day|month|year`, `weekday N`, `unixepoch`, and `utc` / `localtime`
//! (no-ops: the backend keeps UTC). Anything unreadable is NULL, as in
//! SQLite. Times are UTC throughout.

use std::sync::Arc;

use chrono::{DateTime, Datelike, Duration, Months, NaiveDate, NaiveDateTime, Timelike, Utc};
use datafusion::arrow::array::{Array, ArrayRef, Float64Array, Int64Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{exec_err, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::SessionContext;

/// Julian day of the unix epoch.
const UNIX_EPOCH_JD: f64 = 2_440_587.5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Datetime,
    Date,
    Time,
    JulianDay,
    UnixEpoch,
    Strftime,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct SqliteTime {
    kind: Kind,
    signature: Signature,
}

impl SqliteTime {
    fn new(kind: Kind) -> Self {
        Self {
            kind,
            // `now` is read once per query, not per row.
            signature: Signature::variadic_any(Volatility::Stable),
        }
    }
}

/// A time value of an argument.
fn parse_value(text: &str, unixepoch: bool) -> Option<DateTime<Utc>> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("now") {
        return Some(Utc::now());
    }
    if let Ok(n) = t.parse::<f64>() {
        let secs = if unixepoch {
            n
        } else {
            (n - UNIX_EPOCH_JD) * 86_400.0
        };
        if !secs.is_finite() {
            return None;
        }
        let micros = (secs * 1e6).round();
        if micros.abs() > i64::MAX as f64 {
            return None;
        }
        return DateTime::from_timestamp_micros(micros as i64);
    }
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Some(d.with_timezone(&Utc));
    }
    let t = t.strip_suffix('Z').unwrap_or(t);
    for f in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(n) = NaiveDateTime::parse_from_str(t, f) {
            return Some(n.and_utc());
        }
    }
    NaiveDate::parse_from_str(t, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|n| n.and_utc())
}

fn start_of(t: DateTime<Utc>, unit: &str) -> Option<DateTime<Utc>> {
    let d = t.date_naive();
    let d = match unit {
        "day" => d,
        "month" => d.with_day(1)?,
        "year" => d.with_day(1)?.with_month(1)?,
        _ => return None,
    };
    Some(d.and_hms_opt(0, 0, 0)?.and_utc())
}

/// Applies one modifier.
fn modify(t: DateTime<Utc>, modifier: &str) -> Option<DateTime<Utc>> {
    let m = modifier.trim().to_ascii_lowercase();
    if m == "utc" || m == "localtime" {
        return Some(t);
    }
    if let Some(unit) = m.strip_prefix("start of ") {
        return start_of(t, unit.trim());
    }
    if let Some(n) = m.strip_prefix("weekday ") {
        let want: u32 = n.trim().parse().ok().filter(|w| *w < 7)?;
        let have = t.weekday().num_days_from_sunday();
        return t.checked_add_signed(Duration::days(i64::from((want + 7 - have) % 7)));
    }
    let (n, unit) = m.split_once(char::is_whitespace)?;
    let n: f64 = n.trim().parse().ok()?;
    let unit = unit.trim().trim_end_matches('s');
    match unit {
        "month" | "year" => {
            if n.fract() != 0.0 || n.abs() > 1e6 {
                return None;
            }
            let months = (n as i64).checked_mul(if unit == "year" { 12 } else { 1 })?;
            let m = Months::new(u32::try_from(months.unsigned_abs()).ok()?);
            if months >= 0 {
                t.checked_add_months(m)
            } else {
                t.checked_sub_months(m)
            }
        }
        _ => {
            let secs_per = match unit {
                "day" => 86_400.0,
                "hour" => 3_600.0,
                "minute" => 60.0,
                "second" => 1.0,
                _ => return None,
            };
            let micros = (n * secs_per * 1e6).round();
            if !micros.is_finite() || micros.abs() > 1e17 {
                return None;
            }
            t.checked_add_signed(Duration::microseconds(micros as i64))
        }
    }
}

/// The time of one row's arguments (time value, then modifiers).
fn evaluate(args: &[Option<&str>]) -> Option<DateTime<Utc>> {
    let (value, modifiers) = args.split_first()?;
    let value = (*value)?;
    let unixepoch = modifiers
        .first()
        .and_then(|m| *m)
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("unixepoch"));
    let mut t = parse_value(value, unixepoch)?;
    for (i, m) in modifiers.iter().enumerate() {
        let m = (*m)?;
        if i == 0 && unixepoch {
            continue;
        }
        t = modify(t, m)?;
    }
    Some(t)
}

fn julian_day(t: DateTime<Utc>) -> f64 {
    t.timestamp_micros() as f64 / 86_400e6 + UNIX_EPOCH_JD
}

/// SQLite's `strftime` conversions.
fn strftime(format: &str, t: DateTime<Utc>) -> Option<String> {
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            'd' => out.push_str(&format!("{:02}", t.day())),
            'e' => out.push_str(&format!("{:2}", t.day())),
            'f' => out.push_str(&format!(
                "{:02}.{:03}",
                t.second(),
                t.timestamp_subsec_millis()
            )),
            'F' => out.push_str(&t.format("%Y-%m-%d").to_string()),
            'H' => out.push_str(&format!("{:02}", t.hour())),
            'I' => out.push_str(&t.format("%I").to_string()),
            'j' => out.push_str(&format!("{:03}", t.ordinal())),
            'J' => out.push_str(&julian_day(t).to_string()),
            'm' => out.push_str(&format!("{:02}", t.month())),
            'M' => out.push_str(&format!("{:02}", t.minute())),
            'p' => out.push_str(&t.format("%p").to_string()),
            's' => out.push_str(&t.timestamp().to_string()),
            'S' => out.push_str(&format!("{:02}", t.second())),
            'T' => out.push_str(&t.format("%H:%M:%S").to_string()),
            'u' => out.push_str(&t.weekday().number_from_monday().to_string()),
            'w' => out.push_str(&t.weekday().num_days_from_sunday().to_string()),
            'W' => out.push_str(&t.format("%W").to_string()),
            'Y' => out.push_str(&format!("{:04}", t.year())),
            '%' => out.push('%'),
            _ => return None,
        }
    }
    Some(out)
}

impl ScalarUDFImpl for SqliteTime {
    fn name(&self) -> &str {
        match self.kind {
            Kind::Datetime => "datetime",
            Kind::Date => "date",
            Kind::Time => "time",
            Kind::JulianDay => "julianday",
            Kind::UnixEpoch => "unixepoch",
            Kind::Strftime => "strftime",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(match self.kind {
            Kind::JulianDay => DataType::Float64,
            Kind::UnixEpoch => DataType::Int64,
            _ => DataType::Utf8,
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        if arrays.is_empty() {
            return exec_err!("{}() needs a time value", self.name());
        }
        // Every argument as text: timestamps as RFC 3339, numbers as
        // numbers, text as given.
        let texts: Vec<StringArray> = arrays
            .iter()
            .map(|a| {
                let a: ArrayRef = if matches!(a.data_type(), DataType::Timestamp(_, _)) {
                    cast(
                        &cast(
                            a,
                            &DataType::Timestamp(
                                datafusion::arrow::datatypes::TimeUnit::Microsecond,
                                Some("UTC".into()),
                            ),
                        )?,
                        &DataType::Utf8,
                    )?
                } else {
                    cast(a, &DataType::Utf8)?
                };
                Ok(a.as_any()
                    .downcast_ref::<StringArray>()
                    .cloned()
                    .unwrap_or_else(|| StringArray::new_null(n)))
            })
            .collect::<Result<_>>()?;
        let row = |i: usize| -> Vec<Option<&str>> {
            texts
                .iter()
                .map(|a| a.is_valid(i).then(|| a.value(i)))
                .collect()
        };
        let out: ArrayRef = match self.kind {
            Kind::JulianDay => Arc::new(
                (0..n)
                    .map(|i| evaluate(&row(i)).map(julian_day))
                    .collect::<Float64Array>(),
            ),
            Kind::UnixEpoch => Arc::new(
                (0..n)
                    .map(|i| evaluate(&row(i)).map(|t| t.timestamp()))
                    .collect::<Int64Array>(),
            ),
            Kind::Strftime => Arc::new(
                (0..n)
                    .map(|i| {
                        let r = row(i);
                        let (format, rest) = r.split_first()?;
                        strftime((*format)?, evaluate(rest)?)
                    })
                    .collect::<StringArray>(),
            ),
            kind => {
                let format = match kind {
                    Kind::Date => "%Y-%m-%d",
                    Kind::Time => "%H:%M:%S",
                    _ => "%Y-%m-%d %H:%M:%S",
                };
                Arc::new(
                    (0..n)
                        .map(|i| evaluate(&row(i)).map(|t| t.format(format).to_string()))
                        .collect::<StringArray>(),
                )
            }
        };
        Ok(ColumnarValue::Array(out))
    }
}

/// Registers SQLite's date and time functions in `ctx`.
pub(crate) fn register(ctx: &SessionContext) {
    for kind in [
        Kind::Datetime,
        Kind::Date,
        Kind::Time,
        Kind::JulianDay,
        Kind::UnixEpoch,
        Kind::Strftime,
    ] {
        ctx.register_udf(ScalarUDF::from(SqliteTime::new(kind)));
    }
}

/// SQLite's reading of a query's text where DataFusion's differs, applied
/// to the parsed statement before it is planned: `LIKE` ignores case (as
/// SQLite's does for ASCII; here for all letters), and `group_concat(x[,
/// sep])` is `string_agg(CAST(x AS VARCHAR), sep)` with `,` by default.
pub(crate) fn as_sqlite(statement: &mut datafusion::sql::parser::Statement) {
    use datafusion::sql::sqlparser::ast::{
        visit_expressions_mut, CastKind, DataType as SqlType, Expr, FunctionArg, FunctionArgExpr,
        FunctionArguments, Ident, ObjectName, ObjectNamePart, Value,
    };
    use std::ops::ControlFlow;
    let datafusion::sql::parser::Statement::Statement(statement) = statement else {
        return;
    };
    let _ = visit_expressions_mut(statement.as_mut(), |e| {
        match e {
            Expr::Like {
                negated,
                any,
                expr,
                pattern,
                escape_char,
            } => {
                *e = Expr::ILike {
                    negated: *negated,
                    any: *any,
                    expr: expr.clone(),
                    pattern: pattern.clone(),
                    escape_char: escape_char.clone(),
                };
            }
            Expr::Function(f)
                if f.name.0.len() == 1
                    && matches!(&f.name.0[0], ObjectNamePart::Identifier(id)
                        if id.value.eq_ignore_ascii_case("group_concat")) =>
            {
                if let FunctionArguments::List(list) = &mut f.args {
                    if let Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(first))) =
                        list.args.first_mut()
                    {
                        *first = Expr::Cast {
                            kind: CastKind::Cast,
                            expr: Box::new(first.clone()),
                            data_type: SqlType::Varchar(None),
                            array: false,
                            format: None,
                        };
                    }
                    if list.args.len() == 1 {
                        list.args
                            .push(FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::value(
                                Value::SingleQuotedString(",".into()),
                            ))));
                    }
                    f.name = ObjectName(vec![ObjectNamePart::Identifier(Ident::new("string_agg"))]);
                }
            }
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn time_values_and_modifiers_follow_sqlite() {
        let t = at("2026-03-31T10:20:30Z");
        for (args, want) in [
            (vec!["2026-03-31 10:20:30"], Some(t)),
            (vec!["2026-03-31T10:20:30Z"], Some(t)),
            (vec!["2026-03-31T10:20:30+00:00"], Some(t)),
            (vec!["2026-03-31"], Some(at("2026-03-31T00:00:00Z"))),
            (
                vec!["2026-03-31 10:20:30", "+1 day"],
                Some(at("2026-04-01T10:20:30Z")),
            ),
            (
                vec!["2026-03-31 10:20:30", "-2 hours"],
                Some(at("2026-03-31T08:20:30Z")),
            ),
            (
                vec!["2026-03-31 10:20:30", "+1.5 minutes"],
                Some(at("2026-03-31T10:22:00Z")),
            ),
            (
                vec!["2026-03-31 10:20:30", "start of month"],
                Some(at("2026-03-01T00:00:00Z")),
            ),
            (
                vec!["2026-03-31 10:20:30", "start of year", "+1 month"],
                Some(at("2026-02-01T00:00:00Z")),
            ),
            (
                vec!["2026-01-31", "+1 month"],
                Some(at("2026-02-28T00:00:00Z")),
            ),
            // 2026-03-31 is a Tuesday; weekday 0 is the next Sunday.
            (
                vec!["2026-03-31", "weekday 0"],
                Some(at("2026-04-05T00:00:00Z")),
            ),
            (vec!["1774952430", "unixepoch"], Some(t)),
            (vec!["2461130.93090278"], Some(at("2026-03-31T10:20:30Z"))),
            (vec!["2026-03-31", "+1 fortnight"], None),
            (vec!["yesterday"], None),
        ] {
            let args: Vec<Option<&str>> = args.into_iter().map(Some).collect();
            let got = evaluate(&args);
            match (got, want) {
                (Some(g), Some(w)) => assert!(
                    (g - w).num_milliseconds().abs() < 1_000,
                    "{args:?}: {g} != {w}"
                ),
                (g, w) => assert_eq!(g, w, "{args:?}"),
            }
        }
        assert_eq!(evaluate(&[None]), None);
        assert_eq!(evaluate(&[Some("2026-03-31"), None]), None);
    }

    #[test]
    fn strftime_speaks_sqlite() {
        let t = at("2026-03-31T10:20:30.250Z");
        assert_eq!(
            strftime("%Y-%m-%d %H:%M:%f %j %w %s %%", t).as_deref(),
            Some("2026-03-31 10:20:30.250 090 2 1774952430 %")
        );
        assert_eq!(strftime("%Q", t), None);
        assert!((julian_day(at("2000-01-01T12:00:00Z")) - 2_451_545.0).abs() < 1e-9);
    }
}
