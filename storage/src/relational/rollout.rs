//! `rollout_waves`: waves of a rollout exec that are still waiting for
//! their delay. They are durable local work: a restart of the backend
//! fires them when due instead of losing them.

use chrono::{DateTime, Utc};
use redb::{ReadableDatabase, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::codec::{decode, encode};
use super::RelationalStore;
use crate::{Error, Result};

/// (due_at µs, exec_id, wave index) → [`PendingWave`].
const WAVES: TableDefinition<(i64, &str, u32), &[u8]> = TableDefinition::new("rollout_waves");
const NAME: &str = "rollout_waves";

/// One wave waiting to be published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct PendingWave {
    pub exec_id: String,
    /// Position of the wave in the rollout (0-based).
    pub wave: u32,
    pub due_at: DateTime<Utc>,
    /// Where it goes (`commands.group.<g>`).
    pub subject: String,
    /// The encoded command to publish, as built when the exec was accepted.
    pub payload: String,
}

impl PendingWave {
    fn key(&self) -> (i64, &str, u32) {
        (
            self.due_at.timestamp_micros(),
            self.exec_id.as_str(),
            self.wave,
        )
    }
}

pub(super) fn ensure_tables(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(WAVES).map_err(Error::redb_op)?;
    Ok(())
}

impl RelationalStore {
    /// Stores waves to publish later; durable once this returns.
    pub fn insert_pending_waves(&self, waves: &[PendingWave]) -> Result<()> {
        let txn = self.db.begin_write().map_err(Error::redb_op)?;
        {
            let mut t = txn.open_table(WAVES).map_err(Error::redb_op)?;
            for w in waves {
                t.insert(w.key(), encode(NAME, w)?.as_slice())
                    .map_err(Error::redb_op)?;
            }
        }
        txn.commit().map_err(Error::redb_op)
    }

    /// Waves due at or before `now`, soonest first.
    pub fn due_waves(&self, now: DateTime<Utc>) -> Result<Vec<PendingWave>> {
        let txn = self.db.begin_read().map_err(Error::redb_op)?;
        let t = txn.open_table(WAVES).map_err(Error::redb_op)?;
        let mut out = Vec::new();
        for e in t
            .range(..=(now.timestamp_micros(), "\u{10FFFF}", u32::MAX))
            .map_err(Error::redb_op)?
        {
            let (_, v) = e.map_err(Error::redb_op)?;
            out.push(decode(NAME, v.value())?);
        }
        Ok(out)
    }

    /// Every wave still waiting, soonest first.
    pub fn pending_waves(&self) -> Result<Vec<PendingWave>> {
        self.due_waves(DateTime::<Utc>::MAX_UTC)
    }

    /// Forgets a wave once it was published.
    pub fn remove_wave(&self, wave: &PendingWave) -> Result<()> {
        let txn = self.db.begin_write().map_err(Error::redb_op)?;
        {
            let mut t = txn.open_table(WAVES).map_err(Error::redb_op)?;
            t.remove(wave.key()).map_err(Error::redb_op)?;
        }
        txn.commit().map_err(Error::redb_op)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    #[test]
    fn waves_survive_a_reopen_and_come_due_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let now = Utc::now();
        let wave = |i: u32, secs: i64| PendingWave {
            exec_id: "e1".into(),
            wave: i,
            due_at: now + Duration::seconds(secs),
            subject: format!("commands.group.g{i}"),
            payload: format!("{{\"n\":{i}}}"),
        };
        {
            let store = RelationalStore::open(dir.path()).unwrap();
            store
                .insert_pending_waves(&[wave(2, 60), wave(1, 30)])
                .unwrap();
        }
        let store = RelationalStore::open(dir.path()).unwrap();
        assert!(store.due_waves(now).unwrap().is_empty());
        let due = store.due_waves(now + Duration::seconds(45)).unwrap();
        assert_eq!(due, vec![wave(1, 30)]);
        store.remove_wave(&due[0]).unwrap();
        let left = store.pending_waves().unwrap();
        assert_eq!(left, vec![wave(2, 60)]);
    }
}
