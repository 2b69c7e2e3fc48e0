//! Check alerts, as kanade 0.101 sends them: when a fleet check's status
//! moves *into* one of its manifest's `check.alert.on` statuses (ok →
//! fail fires; fail → fail and warn → fail within `on` do not), a
//! notification goes to the PC's user (`notify_user`) and the operator
//! groups (`notify_groups`), and with `email: true` one mail to the
//! groups' contact addresses through the server settings' `mail`.
//!
//! The status change comes from the commit of `check_status` itself, so
//! a result redelivered after a crash (already committed) fires nothing
//! twice, and an old result that does not replace a newer state fires
//! nothing. Results older than [`LIVE_WINDOW`] (a backlog drained after
//! a long outage, a replay) change the state but alert nobody, as
//! upstream. Sending runs beside the projector, never in its way: a
//! broker or SMTP relay that hangs delays only its own alert.

use chrono::{DateTime, Duration, Utc};
use kanade_shared::ipc::notifications::Notification;
use kanade_shared::manifest::{CheckAlert, CheckHint};
use kanade_shared::subject;
use kanade_storage::CheckChange;

use crate::control::Control;

/// How recent a result must be to alert.
pub const LIVE_WINDOW: Duration = Duration::minutes(15);

/// Whether `change` enters `alert.on` from outside it, recently enough.
pub fn fires(alert: &CheckAlert, change: &CheckChange, now: DateTime<Utc>) -> bool {
    let alerting = |s: &str| alert.on.iter().any(|on| on.as_str() == s);
    now - change.now.recorded_at < LIVE_WINDOW
        && alerting(&change.now.status)
        && !change.prior.as_deref().is_some_and(alerting)
}

/// What a template's placeholders stand for.
pub struct Fill<'a> {
    pub pc_id: &'a str,
    pub hint: &'a CheckHint,
    pub status: &'a str,
    pub detail: &'a str,
    pub last_logon: &'a str,
}

/// `template` with `{pc_id}`, `{name}`, `{label}`, `{status}`, `{detail}`
/// and `{last_logon}` filled in, in one pass (a value that itself reads
/// `{status}` stays as it is).
pub fn render(template: &str, fill: &Fill<'_>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let tail = &rest[open..];
        let Some(close) = tail.find('}') else {
            rest = tail;
            break;
        };
        let value = match &tail[1..close] {
            "pc_id" => Some(fill.pc_id),
            "name" => Some(fill.hint.name.as_str()),
            "label" => Some(fill.hint.label.as_deref().unwrap_or(&fill.hint.name)),
            "status" => Some(fill.status),
            "detail" => Some(fill.detail),
            "last_logon" => Some(fill.last_logon),
            _ => None,
        };
        match value {
            Some(v) => {
                out.push_str(v);
                rest = &tail[close + 1..];
            }
            None => {
                out.push('{');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// One alert to send.
pub struct Alert {
    pub alert: CheckAlert,
    pub check: String,
    pub pc_id: String,
    pub title: String,
    pub body: String,
}

impl Alert {
    /// The alert `change` raises under `hint`, its text filled in.
    pub fn new(
        hint: &CheckHint,
        alert: &CheckAlert,
        change: &CheckChange,
        last_logon: &str,
    ) -> Self {
        let fill = Fill {
            pc_id: &change.now.pc_id,
            hint,
            status: &change.now.status,
            detail: change.now.detail.as_deref().unwrap_or(""),
            last_logon,
        };
        Self {
            title: render(&alert.title, &fill),
            body: alert
                .body
                .as_deref()
                .map(|b| render(b, &fill))
                .unwrap_or_default(),
            alert: alert.clone(),
            check: hint.name.clone(),
            pc_id: change.now.pc_id.clone(),
        }
    }

    /// Publishes the notification and, when asked and mail is set up,
    /// mails the groups' contacts. Failures are logged, never raised.
    pub async fn send(self, control: Control) {
        let mut subjects = Vec::new();
        if self.alert.notify_user {
            subjects.push(subject::notifications_pc(&self.pc_id));
        }
        subjects.extend(
            self.alert
                .notify_groups
                .iter()
                .map(|g| subject::notifications_group(g)),
        );
        let n = Notification {
            id: uuid::Uuid::new_v4().to_string(),
            priority: self.alert.priority,
            require_ack: self.alert.require_ack,
            title: self.title.clone(),
            body: self.body.clone(),
            toast: self.alert.toast,
            issued_at: Utc::now(),
            issued_by: Some(format!("compliance:{}", self.check)),
            expires_at: None,
            acked_at: None,
            edited_at: None,
            acks_reset_at: None,
        };
        match control.publish_notification(&n, &subjects).await {
            Ok(()) => {
                tracing::info!(pc_id = %self.pc_id, check = %self.check, notification_id = %n.id, ?subjects, "check alert published")
            }
            Err(e) => {
                tracing::warn!(pc_id = %self.pc_id, check = %self.check, error = %e, "check alert not published")
            }
        }
        if self.alert.email {
            self.mail(&control, &n.id).await;
        }
    }

    async fn mail(&self, control: &Control, notification_id: &str) {
        let settings = match crate::api::server_settings_current(control).await {
            Ok(s) => s.mail,
            Err(e) => {
                tracing::warn!(check = %self.check, error = %e, "check alert not mailed: server settings unreadable");
                return;
            }
        };
        let Some(settings) = settings else {
            tracing::warn!(check = %self.check, "check alert asks for mail, but mail is not set up");
            return;
        };
        let to = match control.group_emails(&self.alert.notify_groups).await {
            Ok(to) if !to.is_empty() => to,
            Ok(_) => {
                tracing::warn!(check = %self.check, groups = ?self.alert.notify_groups, "check alert not mailed: its groups have no contact address");
                return;
            }
            Err(e) => {
                tracing::warn!(check = %self.check, error = %e, "check alert not mailed: group contacts unreadable");
                return;
            }
        };
        let recipients = to.len();
        let mail = crate::mail::Mail {
            to,
            subject: self.title.clone(),
            body: self.body.clone(),
        };
        match crate::mail::send(&settings, mail).await {
            Ok(()) => {
                tracing::info!(pc_id = %self.pc_id, check = %self.check, recipients, notification_id, "check alert mailed")
            }
            Err(e) => {
                tracing::warn!(pc_id = %self.pc_id, check = %self.check, error = %e, "check alert not mailed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kanade_shared::manifest::CheckAlertStatus;
    use kanade_storage::CheckStatusRecord;

    fn alert(on: Vec<CheckAlertStatus>) -> CheckAlert {
        serde_json::from_value(serde_json::json!({"on": on, "title": "t"})).unwrap()
    }

    fn change(prior: Option<&str>, now: &str, age_min: i64) -> CheckChange {
        CheckChange {
            prior: prior.map(str::to_string),
            now: CheckStatusRecord {
                pc_id: "PC-1".into(),
                check_name: "disk".into(),
                status: now.into(),
                detail: None,
                recorded_at: Utc::now() - Duration::minutes(age_min),
            },
        }
    }

    #[test]
    fn fires_on_entering_the_alert_set_only_and_only_live() {
        let fail = alert(vec![CheckAlertStatus::Fail]);
        let now = Utc::now();
        assert!(fires(&fail, &change(Some("ok"), "fail", 0), now));
        assert!(fires(&fail, &change(None, "fail", 0), now));
        assert!(!fires(&fail, &change(Some("fail"), "fail", 0), now));
        assert!(!fires(&fail, &change(Some("fail"), "ok", 0), now));
        assert!(!fires(&fail, &change(Some("ok"), "warn", 0), now));
        assert!(!fires(&fail, &change(Some("ok"), "fail", 30), now));
        let both = alert(vec![CheckAlertStatus::Warn, CheckAlertStatus::Fail]);
        assert!(fires(&both, &change(Some("ok"), "warn", 0), now));
        assert!(!fires(&both, &change(Some("warn"), "fail", 0), now));
    }

    #[test]
    fn templates_fill_each_placeholder_once() {
        let hint: CheckHint = serde_json::from_value(serde_json::json!({
            "name": "bitlocker", "label": "BitLocker"
        }))
        .unwrap();
        let fill = Fill {
            pc_id: "PC1",
            hint: &hint,
            status: "fail",
            detail: "{status} D: unprotected",
            last_logon: "Yamada",
        };
        assert_eq!(
            render(
                "{label} on {pc_id} is {status}: {detail} ({last_logon}) {other} {",
                &fill
            ),
            "BitLocker on PC1 is fail: {status} D: unprotected (Yamada) {other} {"
        );
        let bare: CheckHint = serde_json::from_value(serde_json::json!({"name": "disk"})).unwrap();
        let fill = Fill {
            hint: &bare,
            ..fill
        };
        assert_eq!(render("{label}/{name}", &fill), "disk/disk");
    }
}
