//! Checks of what agents send, made before any of it names a KV key, an
//! object or a subject, or creates a partition: a value past the broker's
//! limits (a 5,000-character id makes a protocol line the broker closes
//! the whole connection over) or a sample from a broken clock is refused,
//! counted and logged, never stored.

use chrono::{DateTime, Utc};
use kanade_storage::TimeSeriesTable;

use crate::control::abbreviated;

/// An id that becomes part of a subject (`commands.pc.<pc_id>`,
/// `kill.<exec_id>`) or is looked up as a key (`manifest_id`): 1-256
/// bytes, no whitespace or control characters, no wildcard (`*`, `>`),
/// no empty `.`-separated part. (Whether it can also name a KV key is
/// checked where one is built.)
pub fn key(field: &str, value: &str) -> Result<(), String> {
    let ok = !value.is_empty()
        && value.len() <= 256
        && !value
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '*' | '>'))
        && value.split('.').all(|part| !part.is_empty());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid `{field}`: {} must be 1-256 bytes without whitespace, `*`, `>` or an empty `.`-separated part",
            abbreviated(value)
        ))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_would_break_a_subject_are_refused() {
        for ok in ["PC-01", "web%01", "host.example", "inventory-hw", "a/b=c"] {
            key("pc_id", ok).unwrap();
        }
        let long = "x".repeat(257);
        for bad in [
            "",
            "a b",
            "a\tb",
            "a*",
            ">",
            "a..b",
            ".a",
            "a.",
            long.as_str(),
        ] {
            let e = key("pc_id", bad).unwrap_err();
            assert!(e.contains("`pc_id`"), "{bad:?}: {e}");
            assert!(e.len() < 300, "the value is abbreviated: {e}");
        }
        optional_key("exec_id", None).unwrap();
        optional_key("exec_id", Some("")).unwrap();
        assert!(optional_key("exec_id", Some("a b")).is_err());
        opaque("result_id", Some("any thing / é")).unwrap();
        assert!(opaque("result_id", Some(&long)).is_err());
        assert!(opaque("result_id", Some("a\nb")).is_err());
    }
}
