//! Mail, as kanade 0.101 sends it: SMTP with the server settings' `mail`
//! section (`host`, `port`, `encryption` starttls / tls / none, `from`,
//! `username`), the password from `KANADE_MAIL_PASSWORD`. Unlike the
//! reference, the settings are read at each send, so an edit applies
//! without a restart.

use std::time::Duration;

use kanade_shared::config::{MailEncryption, MailSection};
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

/// How long one SMTP exchange may take.
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

/// A message to send (one message, every recipient on its `To`).
pub struct Mail {
    pub to: Vec<String>,
    pub subject: String,
    pub body: String,
}

/// Sends `mail` through `settings`; the error says what failed (never the
/// password).
pub async fn send(settings: &MailSection, mail: Mail) -> Result<(), String> {
    let from: Mailbox = settings
        .from
        .trim()
        .parse()
        .map_err(|e| format!("mail.from {:?}: {e}", settings.from))?;
    if mail.to.is_empty() {
        return Err("no recipient".into());
    }
    let mut message = Message::builder().from(from);
    for to in &mail.to {
        let to: Mailbox = to
            .trim()
            .parse()
            .map_err(|e| format!("recipient {to:?}: {e}"))?;
        message = message.to(to);
    }
    let message = message
        .subject(mail.subject)
        .body(mail.body)
        .map_err(|e| format!("composing the message: {e}"))?;
    let host = settings.host.trim();
    let builder = match settings.encryption {
        MailEncryption::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host),
        MailEncryption::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host),
        MailEncryption::None => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
            host,
        )),
    }
    .map_err(|e| format!("SMTP relay {host}: {e}"))?
    .port(settings.port)
    .timeout(Some(SMTP_TIMEOUT));
    let username = settings
        .username
        .as_deref()
        .map(str::trim)
        .filter(|u| !u.is_empty());
    let builder = match username {
        None => builder,
        Some(user) => match std::env::var("KANADE_MAIL_PASSWORD")
            .ok()
            .filter(|p| !p.is_empty())
        {
            Some(password) => builder.credentials(Credentials::new(user.to_string(), password)),
            None => {
                tracing::warn!(
                    username = user,
                    "mail.username is set but KANADE_MAIL_PASSWORD is not: sending without SMTP AUTH"
                );
                builder
            }
        },
    };
    builder
        .build()
        .send(message)
        .await
        .map(|_| ())
        .map_err(|e| format!("SMTP {host}:{}: {e}", settings.port))
}

/// Whether `s` is a bare address a message can go to (`local@domain`),
/// as the reference checks an account's.
pub fn is_address(s: &str) -> bool {
    s.trim().parse::<lettre::Address>().is_ok()
}

/// Whether `s` is a sender [`send`] accepts: an address, or
/// `Name <local@domain>` (checked by the parser sending uses, so a saved
/// setting never fails only when a mail goes out).
pub fn is_mailbox(s: &str) -> bool {
    s.trim().parse::<Mailbox>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sender_is_what_sending_accepts() {
        for ok in [
            "ops@example.com",
            " ops@example.com ",
            "Ops Desk <ops@example.com>",
        ] {
            assert!(is_mailbox(ok), "{ok:?}");
        }
        for bad in [
            "",
            "not-an-address",
            "ops..desk@example.com",
            "Ops <ops@example.com",
            "ops@exa mple.com",
        ] {
            assert!(!is_mailbox(bad), "{bad:?}");
        }
    }
}
