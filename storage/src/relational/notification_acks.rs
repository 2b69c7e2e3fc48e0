//! `notification_acks`: which user on which PC acknowledged which
//! notification, keyed (notification_id, pc_id, user_sid); the first ack
//! wins.

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
}

pub(super) fn ensure_tables(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(ACKS).map_err(Error::redb_op)?;
    Ok(())
}

impl RelationalStore {
    /// Inserts acknowledgements (an existing key is left alone) and
    /// records `pos`, in one transaction.
    pub fn apply_notification_acks(
        &self,
        acks: &[NotificationAckRecord],
        pos: Option<StreamPosition<'_>>,
    ) -> Result<()> {
        let txn = self.db.begin_write().map_err(Error::redb_op)?;
        {
            let mut t = txn.open_table(ACKS).map_err(Error::redb_op)?;
            for a in acks {
                let key = (
                    a.notification_id.as_str(),
                    a.pc_id.as_str(),
                    a.user_sid.as_str(),
                );
                if t.get(key).map_err(Error::redb_op)?.is_none() {
                    t.insert(key, encode(NAME, a)?.as_slice())
                        .map_err(Error::redb_op)?;
                }
            }
        }
        record(&txn, pos)?;
        txn.commit().map_err(Error::redb_op)
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

    #[test]
    fn first_ack_wins_and_acks_list_per_notification() {
        let dir = tempfile::tempdir().unwrap();
        let store = RelationalStore::open(dir.path()).unwrap();
        let t = Utc::now();
        let ack = |n: &str, pc: &str, at| NotificationAckRecord {
            notification_id: n.into(),
            pc_id: pc.into(),
            user_sid: "S-1".into(),
            acked_at: at,
            recorded_at: Some(t),
        };
        store
            .apply_notification_acks(
                &[
                    ack("n1", "pc1", t),
                    ack("n1", "pc2", t),
                    ack("n2", "pc1", t),
                ],
                None,
            )
            .unwrap();
        store
            .apply_notification_acks(&[ack("n1", "pc1", t + chrono::Duration::hours(1))], None)
            .unwrap();
        let n1 = store.notification_acks("n1").unwrap();
        assert_eq!(n1.len(), 2);
        assert_eq!(n1[0].acked_at, t, "first ack wins");
        assert_eq!(store.notification_acks("n2").unwrap().len(), 1);
        assert!(store.notification_acks("n").unwrap().is_empty());
    }
}
