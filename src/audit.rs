//! Audit events this backend emits (account changes, login failures).
//! They go where every audit event goes: published on `audit.{actor}.
//! {action}[.{target}]` into the AUDIT stream, from which the audit
//! projector writes `audit_log`, so the API shows them with all the rest.
//! The publish waits for the stream's acknowledgement; a broker that is
//! away is logged, never fails the request that already happened.

use std::time::Duration;

use serde::Serialize;

/// Header the CLI and the dashboard send to say where a call came from.
pub const SOURCE_HEADER: &str = "x-kanade-source";

/// Who made the request, for the audit payload (extracted from a request
/// by `api::auth`).
#[derive(Debug, Clone, Default)]
pub struct Caller {
    pub sub: Option<String>,
    pub source: Option<String>,
}

#[derive(Serialize)]
struct Event<'a> {
    actor: &'a str,
    action: &'a str,
    target: Option<&'a str>,
    payload: serde_json::Value,
    occurred_at: chrono::DateTime<chrono::Utc>,
}

/// Whether `s` can stand as one token of a NATS subject.
fn subject_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '@'))
}

/// The subject of an event; a target that cannot be a subject token stays
/// in the body only.
fn subject(actor: &str, action: &str, target: Option<&str>) -> String {
    // An actor may be a username (deploy plans audit under the caller's
    // name); one that cannot be a token is named in the body only.
    let actor = if subject_token(actor) { actor } else { "user" };
    match target {
        Some(t) if subject_token(t) => format!("audit.{actor}.{action}.{t}"),
        _ => format!("audit.{actor}.{action}"),
    }
}

/// Characters of a caller-chosen name that logs and audit events keep.
const SHOWN_CHARS: usize = 64;

/// A name the caller chose (a login's username) as logs and audit events
/// show it: at most 64 characters, control and other unprintable
/// characters escaped, and the original length named when it was cut, so
/// a caller can neither fill the log nor forge lines in it.
pub fn shown(raw: &str) -> String {
    let mut out: String = raw
        .chars()
        .take(SHOWN_CHARS)
        .flat_map(char::escape_debug)
        .collect();
    let total = raw.chars().count();
    if total > SHOWN_CHARS {
        out.push_str(&format!("… ({total} characters)"));
    }
    out
}

/// Publishes one audit event. `caller`'s subject and source join the
/// payload unless it already has those keys.
pub async fn record(
    nats: &async_nats::Client,
    actor: &str,
    action: &str,
    target: Option<&str>,
    caller: Option<&Caller>,
    mut payload: serde_json::Value,
) {
    if let (Some(c), Some(obj)) = (caller, payload.as_object_mut()) {
        if let Some(sub) = &c.sub {
            obj.entry("sub").or_insert_with(|| sub.clone().into());
        }
        if let Some(src) = &c.source {
            obj.entry("source").or_insert_with(|| src.clone().into());
        }
    }
    let subject = subject(actor, action, target);
    let body = match serde_json::to_vec(&Event {
        actor,
        action,
        target,
        payload,
        occurred_at: chrono::Utc::now(),
    }) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, %subject, "cannot encode an audit event");
            return;
        }
    };
    let js = async_nats::jetstream::new(nats.clone());
    let published = tokio::time::timeout(Duration::from_secs(5), async {
        js.publish(subject.clone(), body.into())
            .await
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    match published {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, %subject, "audit event not stored"),
        Err(_) => tracing::warn!(%subject, "audit event not acknowledged within 5 s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_that_would_break_the_subject_stay_out_of_it() {
        assert_eq!(
            subject("admin", "account.create", Some("alice")),
            "audit.admin.account.create.alice"
        );
        assert_eq!(
            subject("ann.o'hara", "deploy_plan.create", Some("p1")),
            "audit.user.deploy_plan.create.p1"
        );
        for bad in ["a.b", "a b", "*", ">", "", "ü"] {
            assert_eq!(
                subject("auth", "login.failure", Some(bad)),
                "audit.auth.login.failure"
            );
        }
    }

    #[test]
    fn a_chosen_name_is_shown_bounded_and_escaped() {
        assert_eq!(shown("alice"), "alice");
        assert_eq!(
            shown("a\nFAKE login ok\u{1b}[0m"),
            "a\\nFAKE login ok\\u{1b}[0m"
        );
        let long = "x".repeat(10_000);
        let s = shown(&long);
        assert!(
            s.starts_with(&"x".repeat(64)) && s.ends_with("… (10000 characters)"),
            "{s}"
        );
        assert!(s.chars().count() < 100);
    }
}
