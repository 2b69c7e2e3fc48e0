//! `notification_acks`: which user on which PC acknowledged which
//! notification, keyed (notification_id, pc_id, user_sid). The latest ack
//! wins; a user taking an ack back stamps `unacked_at` (the row stays, so
//! the history of who saw it is kept), and an ack after that stands again.

use chrono::{DateTime, Utc};
use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::codec::{decode, encode};
use super::positions::{record, StreamPosition};
use super::RelationalStore;
use crate::{Error, Result};

const ACKS: TableDefinition<(&str, &str, &str), &[u8]> = TableDefinition::new("notification_acks");
const NAME: &str = "notification_acks";

/// One acknowledgement as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct NotificationAckRecord {
    pub notification_id: String,
    pub pc_id: String,
    pub user_sid: String,
    pub acked_at: DateTime<Utc>,
    pub recorded_at: Option<DateTime<Utc>>,
    /// The account name the agent saw, when it said.
    pub account: Option<String>,
    /// When the user took the ack back (`None`: it stands).
    pub unacked_at: Option<DateTime<Utc>>,
}

/// What a user did with a notification on a PC.
#[derive(Debug, Clone, PartialEq)]
pub enum AckEvent {
    Acked(NotificationAckRecord),
    /// (notification_id, pc_id, user_sid, when).
    Unacked(String, String, String, DateTime<Utc>),
}

pub(super) fn ensure_tables(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(ACKS).map_err(Error::redb_op)?;
    Ok(())
}

impl RelationalStore {
    /// Inserts acknowledgements and records `pos`, in one transaction
    /// (see [`Self::apply_ack_events`]).
    pub fn apply_notification_acks(
        &self,
        acks: &[NotificationAckRecord],
        pos: Option<StreamPosition<'_>>,
    ) -> Result<()> {
        let events: Vec<AckEvent> = acks.iter().cloned().map(AckEvent::Acked).collect();
        self.apply_ack_events(&events, pos)
    }

    /// Applies acks and un-acks in order and records `pos`, in one
    /// transaction. An ack replaces an older one and stands again; an
    /// un-ack older than the ack it would revoke changes nothing (it
    /// was about an earlier ack), so replays and reordering are harmless.
    pub fn apply_ack_events(
        &self,
        events: &[AckEvent],
        pos: Option<StreamPosition<'_>>,
    ) -> Result<()> {
        let txn = self.db.begin_write().map_err(Error::redb_op)?;
        {
            let mut t = txn.open_table(ACKS).map_err(Error::redb_op)?;
            for e in events {
                let (nid, pc, sid) = match e {
                    AckEvent::Acked(a) => (&a.notification_id, &a.pc_id, &a.user_sid),
                    AckEvent::Unacked(n, p, s, _) => (n, p, s),
                };
                let key = (nid.as_str(), pc.as_str(), sid.as_str());
                let old: Option<NotificationAckRecord> = match t.get(key).map_err(Error::redb_op)? {
                    Some(v) => Some(decode(NAME, v.value())?),
                    None => None,
                };
                let new = match (e, old) {
                    (AckEvent::Acked(a), None) => a.clone(),
                    (AckEvent::Acked(a), Some(o)) if a.acked_at >= o.acked_at => {
                        NotificationAckRecord {
                            account: a.account.clone().or(o.account),
                            unacked_at: o.unacked_at.filter(|u| *u > a.acked_at),
                            ..a.clone()
                        }
                    }
                    (AckEvent::Unacked(.., at), Some(o))
                        if o.acked_at <= *at && o.unacked_at.is_none_or(|u| u < *at) =>
                    {
                        NotificationAckRecord {
                            unacked_at: Some(*at),
                            ..o
                        }
                    }
                    _ => continue,
                };
                t.insert(key, encode(NAME, &new)?.as_slice())
                    .map_err(Error::redb_op)?;
            }
        }
        record(&txn, pos)?;
        txn.commit().map_err(Error::redb_op)
    }

    /// Forgets every acknowledgement of one notification (an edit that
    /// asks users to confirm again); how many went.
    pub fn clear_notification_acks(&self, notification_id: &str) -> Result<usize> {
        let txn = self.db.begin_write().map_err(Error::redb_op)?;
        let removed = {
            let mut t = txn.open_table(ACKS).map_err(Error::redb_op)?;
            let mut keys = Vec::new();
            for e in t
                .range((notification_id, "", "")..)
                .map_err(Error::redb_op)?
            {
                let (k, _) = e.map_err(Error::redb_op)?;
                let (n, p, s) = k.value();
                if n != notification_id {
                    break;
                }
                keys.push((p.to_string(), s.to_string()));
            }
            for (p, s) in &keys {
                t.remove((notification_id, p.as_str(), s.as_str()))
                    .map_err(Error::redb_op)?;
            }
            keys.len()
        };
        txn.commit().map_err(Error::redb_op)?;
        Ok(removed)
    }

    /// Every acknowledgement of one notification, by (pc_id, user_sid).
    pub fn notification_acks(&self, notification_id: &str) -> Result<Vec<NotificationAckRecord>> {
        let txn = self.db.begin_read().map_err(Error::redb_op)?;
        let t = txn.open_table(ACKS).map_err(Error::redb_op)?;
        let mut out = Vec::new();
        for e in t
            .range((notification_id, "", "")..)
            .map_err(Error::redb_op)?
        {
            let (k, v) = e.map_err(Error::redb_op)?;
            if k.value().0 != notification_id {
                break;
            }
            out.push(decode(NAME, v.value())?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn ack(n: &str, pc: &str, at: DateTime<Utc>) -> NotificationAckRecord {
        NotificationAckRecord {
            notification_id: n.into(),
            pc_id: pc.into(),
            user_sid: "S-1".into(),
            acked_at: at,
            recorded_at: Some(at),
            account: Some("alice".into()),
            unacked_at: None,
        }
    }

    fn unack(n: &str, pc: &str, at: DateTime<Utc>) -> AckEvent {
        AckEvent::Unacked(n.into(), pc.into(), "S-1".into(), at)
    }

    #[test]
    fn the_latest_ack_wins_and_acks_list_per_notification() {
        let dir = tempfile::tempdir().unwrap();
        let store = RelationalStore::open(dir.path()).unwrap();
        let t = Utc::now();
        let acks = [
            ack("n1", "pc1", t),
            ack("n1", "pc2", t),
            ack("n2", "pc1", t),
        ];
        store.apply_notification_acks(&acks, None).unwrap();
        let later = t + Duration::hours(1);
        store
            .apply_notification_acks(&[ack("n1", "pc1", later)], None)
            .unwrap();
        // A replayed older ack does not move it back.
        store
            .apply_notification_acks(&[ack("n1", "pc1", t)], None)
            .unwrap();
        let n1 = store.notification_acks("n1").unwrap();
        assert_eq!(n1.len(), 2);
        assert_eq!(n1[0].acked_at, later);
        assert_eq!(store.notification_acks("n2").unwrap().len(), 1);
        assert!(store.notification_acks("n").unwrap().is_empty());
    }

    #[test]
    fn an_unack_revokes_the_ack_before_it_and_a_new_ack_stands_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = RelationalStore::open(dir.path()).unwrap();
        let t = Utc::now();
        let (t1, t2, t3) = (
            t + Duration::minutes(1),
            t + Duration::minutes(2),
            t + Duration::minutes(3),
        );
        store
            .apply_ack_events(
                &[
                    // An un-ack of nothing, and one older than the ack: no-ops.
                    unack("n1", "pc9", t),
                    AckEvent::Acked(ack("n1", "pc1", t1)),
                    unack("n1", "pc1", t),
                ],
                None,
            )
            .unwrap();
        let rows = store.notification_acks("n1").unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].unacked_at, None);
        store
            .apply_ack_events(&[unack("n1", "pc1", t2)], None)
            .unwrap();
        assert_eq!(
            store.notification_acks("n1").unwrap()[0].unacked_at,
            Some(t2)
        );
        store
            .apply_ack_events(&[AckEvent::Acked(ack("n1", "pc1", t3))], None)
            .unwrap();
        let row = &store.notification_acks("n1").unwrap()[0];
        assert_eq!((row.acked_at, row.unacked_at), (t3, None));
        assert_eq!(store.clear_notification_acks("n1").unwrap(), 1);
        assert!(store.notification_acks("n1").unwrap().is_empty());
    }
}
