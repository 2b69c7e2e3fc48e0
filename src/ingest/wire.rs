//! Checks of what agents send, made before any of it names a KV key, an
//! object or a subject, or creates a partition: a value past the broker's
//! limits (a 5,000-character id makes a protocol line the broker closes
//! the whole connection over) or a sample from a broken clock is refused,
//! counted and logged, never stored.

use chrono::{DateTime, Utc};
use kanade_storage::TimeSeriesTable;

use crate::control::abbreviated;

/// An id that becomes a KV key or a subject token (`pc_id`,
/// `manifest_id`, `exec_id`): the API's rule for keys.
pub fn key(field: &str, value: &str) -> Result<(), String> {
    crate::control::check_key(field, value).map_err(|e| e.to_string())
}

/// As [`key`], for an id the wire may leave empty.
pub fn optional_key(field: &str, value: Option<&str>) -> Result<(), String> {
    match value {
        Some(v) if !v.is_empty() => key(field, v),
        _ => Ok(()),
    }
}

/// An opaque id (`result_id`, `request_id`, an object name): at most 256
/// bytes, no control characters.
pub fn opaque(field: &str, value: Option<&str>) -> Result<(), String> {
    match value {
        Some(v) if v.len() > 256 || v.chars().any(char::is_control) => Err(format!(
            "invalid `{field}`: {} must be at most 256 bytes without control characters",
            abbreviated(v)
        )),
        _ => Ok(()),
    }
}

/// A sample's time: inside the partitions `table` keeps and not further
/// ahead of `now` than the allowed clock skew.
pub fn sample_time(
    table: &TimeSeriesTable,
    at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), String> {
    let (oldest, newest) = table.accepted_times(now);
    if at < oldest {
        Err(format!(
            "`at` {at} is older than {} keeps ({oldest} on)",
            table.spec().name
        ))
    } else if at > newest {
        Err(format!(
            "`at` {at} is ahead of the backend's clock by more than `storage.max_future_secs` (after {newest})"
        ))
    } else {
        Ok(())
    }
}
