//! Query-parameter extractors shared by the handlers. The window rules
//! (defaults, RFC 3339 times, humantime steps, from < to, the 10,000-bucket
//! ceiling) are written here once.

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use chrono::{DateTime, Duration, Utc};
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Most buckets one window may produce.
pub const MAX_BUCKETS: i64 = 10_000;

/// Longest duration a parameter may name (100 years): arithmetic on
/// times stays far from chrono's limits.
pub const MAX_DURATION_SECS: i64 = 100 * 366 * 86_400;

/// `Query<T>` whose rejection is an [`ApiError`] (JSON), not axum's text.
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|e| ApiError::BadRequest(format!("invalid query string: {}", e.body_text())))
    }
}

/// `Json<T>` whose rejection (bad JSON, wrong content type, missing
/// field) is a 400 with a JSON error naming the problem.
pub struct ApiJson<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        axum::Json::<T>::from_request(req, state)
            .await
            .map(|axum::Json(v)| ApiJson(v))
            .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {}", e.body_text())))
    }
}

/// Media types the CLI and the dashboard send YAML bodies with.
const YAML_TYPES: [&str; 4] = [
    "application/yaml",
    "text/yaml",
    "application/x-yaml",
    "text/x-yaml",
];

/// A body sent as YAML (by its `Content-Type`) or JSON, decoded
/// strictly: a key the type does not know is a 400 naming its path, so a
/// typo never silently falls back to a default. `yaml` keeps the text as
/// sent, for the `*_yaml` mirror buckets.
pub struct YamlOrJson<T> {
    pub value: T,
    pub yaml: Option<String>,
}

impl<T, S> axum::extract::FromRequest<S> for YamlOrJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_yaml = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .is_some_and(|m| YAML_TYPES.contains(&m.as_str()));
        let body = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                ApiError::BadRequest(format!("cannot read the body: {}", e.body_text()))
            })?;
        if is_yaml {
            let text = std::str::from_utf8(&body)
                .map_err(|e| ApiError::BadRequest(format!("YAML body is not UTF-8: {e}")))?;
            let value = decode_strict("YAML", serde_yaml::Deserializer::from_str(text))?;
            Ok(Self {
                value,
                yaml: Some(text.to_string()),
            })
        } else {
            let mut de = serde_json::Deserializer::from_slice(&body);
            let value = decode_strict("JSON", &mut de)?;
            de.end()
                .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?;
            Ok(Self { value, yaml: None })
        }
    }
}

/// Deserializes with every unknown key collected and refused.
fn decode_strict<'de, T: DeserializeOwned, D: serde::Deserializer<'de>>(
    kind: &str,
    de: D,
) -> Result<T, ApiError>
where
    D::Error: std::fmt::Display,
{
    let mut unknown = std::collections::BTreeSet::new();
    let mut note = |path: serde_ignored::Path<'_>| {
        unknown.insert(path.to_string());
    };
    let de = serde_ignored::Deserializer::new(de, &mut note);
    // The failing field's path leads the message (`scope.type: unknown
    // variant ...`), so a caller sees which value to fix.
    let value = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            ApiError::BadRequest(format!("invalid {kind} body: {}", e.inner()))
        } else {
            ApiError::BadRequest(format!("invalid {kind} body at `{path}`: {}", e.inner()))
        }
    })?;
    if !unknown.is_empty() {
        return Err(ApiError::BadRequest(format!(
            "invalid {kind} body: unknown field(s): {}",
            unknown.into_iter().collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(value)
}

/// The `If-Match` header as a KV revision (`"12"` or `12`): the revision
/// a client read and wants to overwrite. Absent → `None` (a blind write,
/// as the reference does).
pub struct IfMatch(pub Option<u64>);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let Some(v) = parts.headers.get(axum::http::header::IF_MATCH) else {
            return Ok(Self(None));
        };
        let raw = v.to_str().unwrap_or("").trim();
        let rev = raw.trim_start_matches("W/").trim_matches('"');
        rev.parse::<u64>().map(|r| Self(Some(r))).map_err(|_| {
            ApiError::BadRequest(format!(
                "invalid `If-Match`: {raw:?} is not a revision (send back the ETag of the GET)"
            ))
        })
    }
}

/// The `ETag` header of a KV value at `revision`.
pub fn etag(revision: u64) -> [(axum::http::HeaderName, String); 1] {
    [(axum::http::header::ETAG, format!("\"{revision}\""))]
}

/// Parses `true` / `false` (absent → `default`).
/// A list of page (feature) keys as given, canonical (each known, in the
/// catalogue's order, once); a 400 naming `param` and the unknown key.
pub fn feature_list(param: &'static str, keys: &[String]) -> Result<Vec<String>, ApiError> {
    crate::auth::features::canonical(keys)
        .map_err(|k| ApiError::bad_param(param, format!("unknown feature: {k}")))
}

pub fn parse_bool(param: &'static str, raw: Option<&str>, default: bool) -> Result<bool, ApiError> {
    match raw.map(str::trim) {
        None | Some("") => Ok(default),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(s) => Err(ApiError::bad_param(
            param,
            format!("{s:?} is not true or false"),
        )),
    }
}

/// A validated `[from, to)` window cut into `step_secs` buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeWindow {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub step_secs: i64,
}

/// The raw window parameters as the caller sent them.
#[derive(Debug, Default, serde::Deserialize)]
pub struct WindowParams {
    pub from: Option<String>,
    pub to: Option<String>,
    pub step: Option<String>,
}

impl TimeWindow {
    /// Applies the defaults (`to` = now, `from` = `to` − `default_span`,
    /// `step` = `default_step`) and the rules; names the bad parameter.
    pub fn try_from_params(
        p: &WindowParams,
        now: DateTime<Utc>,
        default_span: Duration,
        default_step_secs: i64,
    ) -> Result<Self, ApiError> {
        let to = match &p.to {
            Some(s) => parse_time("to", s)?,
            None => now,
        };
        let from = match &p.from {
            Some(s) => parse_time("from", s)?,
            None => to - default_span,
        };
        let step_secs = match &p.step {
            Some(s) => parse_duration_secs("step", s)?,
            None => default_step_secs,
        };
        if from >= to {
            return Err(ApiError::bad_param(
                "from",
                format!("from ({from}) must be before to ({to})"),
            ));
        }
        let buckets = (to - from).num_seconds() / step_secs;
        if buckets > MAX_BUCKETS {
            return Err(ApiError::bad_param(
                "step",
                format!("{buckets} buckets requested, at most {MAX_BUCKETS}: widen step or narrow the window"),
            ));
        }
        Ok(Self {
            from,
            to,
            step_secs,
        })
    }
}

/// Parses an RFC 3339 time. A `+` that a query string turned into a space
/// is taken back.
pub fn parse_time(param: &'static str, raw: &str) -> Result<DateTime<Utc>, ApiError> {
    let s = raw.trim().replace(' ', "+");
    let t = DateTime::parse_from_rfc3339(&s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            ApiError::bad_param(
                param,
                format!("{raw:?} is not an RFC 3339 time like 2026-05-24T01:00:00Z ({e})"),
            )
        })?;
    // Arithmetic on a time far outside the data's era could overflow.
    if !(1970..=9999).contains(&chrono::Datelike::year(&t)) {
        return Err(ApiError::bad_param(
            param,
            format!("{raw:?} is outside the years 1970-9999"),
        ));
    }
    Ok(t)
}

/// Parses a humantime duration (`30s`, `5m`, `1h`) into whole seconds ≥ 1.
pub fn parse_duration_secs(param: &'static str, raw: &str) -> Result<i64, ApiError> {
    let d = humantime::parse_duration(raw.trim()).map_err(|e| {
        ApiError::bad_param(
            param,
            format!("{raw:?} is not a duration like 30s, 5m or 1h ({e})"),
        )
    })?;
    let secs = i64::try_from(d.as_secs())
        .ok()
        .filter(|s| *s <= MAX_DURATION_SECS)
        .ok_or_else(|| {
            ApiError::bad_param(param, format!("{raw:?} is too long (at most 100 years)"))
        })?;
    if secs < 1 {
        return Err(ApiError::bad_param(
            param,
            format!("{raw:?} is shorter than 1s"),
        ));
    }
    Ok(secs)
}

/// Parses `limit` (a non-negative integer) or takes `default`.
pub fn parse_limit(raw: Option<&str>, default: u32) -> Result<usize, ApiError> {
    let n = match raw {
        None => default,
        Some(s) => s.trim().parse::<u32>().map_err(|_| {
            ApiError::bad_param("limit", format!("{s:?} is not a non-negative integer"))
        })?,
    };
    Ok(n as usize)
}

/// Longest regex filter accepted, in bytes.
const MAX_REGEX_LEN: usize = 1_000;
/// Compiled size a regex filter may reach (the library's default is 10
/// MiB); past it the pattern is refused rather than run.
const MAX_REGEX_COMPILED: usize = 1 << 20;

/// Compiles a regex filter; an empty or absent value means no filter. A
/// pattern too long or too large once compiled is a 400.
pub fn compile_regex(
    param: &'static str,
    raw: Option<&str>,
) -> Result<Option<regex::Regex>, ApiError> {
    build_regex(param, raw, false)
}

/// As [`compile_regex`], matching without regard to case; surrounding
/// blanks are no part of the pattern.
pub fn compile_regex_nocase(
    param: &'static str,
    raw: Option<&str>,
) -> Result<Option<regex::Regex>, ApiError> {
    build_regex(param, raw.map(str::trim), true)
}

fn build_regex(
    param: &'static str,
    raw: Option<&str>,
    nocase: bool,
) -> Result<Option<regex::Regex>, ApiError> {
    let Some(s) = raw.filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    if s.len() > MAX_REGEX_LEN {
        return Err(ApiError::bad_param(
            param,
            format!(
                "the regex is {} bytes; at most {MAX_REGEX_LEN} are accepted",
                s.len()
            ),
        ));
    }
    regex::RegexBuilder::new(s)
        .case_insensitive(nocase)
        .size_limit(MAX_REGEX_COMPILED)
        .dfa_size_limit(MAX_REGEX_COMPILED)
        .build()
        .map(Some)
        .map_err(|e| {
            let why = match e {
                regex::Error::CompiledTooBig(_) => format!(
                    "the regex compiles past the {MAX_REGEX_COMPILED}-byte limit; use a simpler pattern"
                ),
                e => e.to_string(),
            };
            ApiError::bad_param(param, format!("invalid regex `{s}`: {why}"))
        })
}

/// Parses an integer parameter and clamps it into `[lo, hi]`.
pub fn parse_clamped(
    param: &'static str,
    raw: Option<&str>,
    default: i64,
    lo: i64,
    hi: i64,
) -> Result<i64, ApiError> {
    let v = match raw {
        None => default,
        Some(s) => s
            .trim()
            .parse::<i64>()
            .map_err(|_| ApiError::bad_param(param, format!("{s:?} is not an integer")))?,
    };
    Ok(v.clamp(lo, hi))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 5, 24, 12, 0, 0).unwrap()
    }

    fn window(
        from: Option<&str>,
        to: Option<&str>,
        step: Option<&str>,
    ) -> Result<TimeWindow, ApiError> {
        let p = WindowParams {
            from: from.map(Into::into),
            to: to.map(Into::into),
            step: step.map(Into::into),
        };
        TimeWindow::try_from_params(&p, now(), Duration::hours(1), 300)
    }

    #[test]
    fn defaults() {
        let w = window(None, None, None).unwrap();
        assert_eq!(w.to, now());
        assert_eq!(w.from, now() - Duration::hours(1));
        assert_eq!(w.step_secs, 300);
    }

    #[test]
    fn accepted_forms() {
        let w = window(
            Some("2026-05-24T10:00:00Z"),
            Some("2026-05-24T11:00:00 00:00"),
            Some("1m"),
        )
        .unwrap();
        assert_eq!(w.step_secs, 60);
        assert_eq!(w.to, Utc.with_ymd_and_hms(2026, 5, 24, 11, 0, 0).unwrap());
        let w = window(Some("2026-05-24T10:00:00.123+09:00"), None, Some("1h")).unwrap();
        assert_eq!(w.from.timestamp_subsec_millis(), 123);
    }

    #[test]
    fn every_bad_parameter_is_named() {
        type Case<'a> = (Option<&'a str>, Option<&'a str>, Option<&'a str>, &'a str);
        let cases: &[Case] = &[
            (Some("yesterday"), None, None, "from"),
            (None, Some("2026-13-01T00:00:00Z"), None, "to"),
            (None, None, Some("fast"), "step"),
            (None, None, Some("0s"), "step"),
            (None, None, Some("500ms"), "step"),
            (
                Some("2026-05-24T12:00:00Z"),
                Some("2026-05-24T11:00:00Z"),
                None,
                "from",
            ),
            (
                Some("2026-05-24T12:00:00Z"),
                Some("2026-05-24T12:00:00Z"),
                None,
                "from",
            ),
            (Some("2025-05-24T12:00:00Z"), None, Some("1s"), "step"),
            // Absurd values are refused, never overflow into a panic.
            (None, None, Some("1000000y"), "step"),
            (Some("0001-01-01T00:00:00Z"), None, None, "from"),
            (None, Some("9999-12-31T23:59:59-23:00"), None, "to"),
        ];
        for (from, to, step, param) in cases {
            let err = window(*from, *to, *step).unwrap_err();
            assert!(
                matches!(&err, ApiError::BadParam { param: p, .. } if p == param),
                "{from:?} {to:?} {step:?}: {err}"
            );
        }
    }

    #[test]
    fn ten_thousand_buckets_is_the_ceiling() {
        let from = "2026-05-24T00:00:00Z";
        assert!(window(Some(from), Some("2026-05-24T02:46:40Z"), Some("1s")).is_ok());
        assert!(window(Some(from), Some("2026-05-24T02:46:41Z"), Some("1s")).is_err());
    }

    #[test]
    fn clamps() {
        assert_eq!(parse_clamped("limit", None, 5, 1, 50).unwrap(), 5);
        assert_eq!(parse_clamped("limit", Some("0"), 5, 1, 50).unwrap(), 1);
        assert_eq!(parse_clamped("limit", Some("500"), 5, 1, 50).unwrap(), 50);
        assert!(parse_clamped("limit", Some("five"), 5, 1, 50).is_err());
    }
}
