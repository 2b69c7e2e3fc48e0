//! Publishing a notification to agents (`notifications.all|group.G|pc.P`,
//! kept by the NOTIFICATIONS stream), signed when a command key is set,
//! and the addresses a group's contacts list: one home for the API's
//! sends and the check alerts.

use std::collections::BTreeSet;

use kanade_shared::ipc::notifications::Notification;
use kanade_shared::kv::{BUCKET_GROUP_CONTACTS, STREAM_NOTIFICATIONS};
use kanade_shared::wire::GroupContacts;

use super::{Control, Error, Result};

impl Control {
    /// Publishes `n` to each of `subjects`, each acknowledged by the
    /// stream before the next.
    pub async fn publish_notification(&self, n: &Notification, subjects: &[String]) -> Result<()> {
        let payload = serde_json::to_vec(n).map_err(|e| Error::Broker(e.to_string()))?;
        for s in subjects {
            let sent = match self.signer.headers(&payload) {
                Some(h) => {
                    self.js
                        .publish_with_headers(s.clone(), h, payload.clone().into())
                        .await
                }
                None => self.js.publish(s.clone(), payload.clone().into()).await,
            };
            let ack = sent.map_err(|e| Error::Broker(format!("publish to {s}: {e}")))?;
            ack.await.map_err(|e| {
                Error::Broker(format!("{s} not stored by {STREAM_NOTIFICATIONS}: {e}"))
            })?;
        }
        Ok(())
    }

    /// The contact addresses of `groups` (`group_contacts`), each once,
    /// sorted. A group without contacts adds none.
    pub async fn group_emails(&self, groups: &[String]) -> Result<Vec<String>> {
        let mut out = BTreeSet::new();
        for g in groups {
            if let Some(c) = self
                .get_json::<GroupContacts>(BUCKET_GROUP_CONTACTS, g)
                .await?
            {
                out.extend(c.emails.into_iter().map(|e| e.trim().to_string()));
            }
        }
        out.retain(|e| !e.is_empty());
        Ok(out.into_iter().collect())
    }
}
