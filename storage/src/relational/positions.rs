//! `consumer_positions`: the last JetStream stream sequence each durable
//! consumer applied, written in the same transaction as the rows it
//! produced. A restart resumes right after it (no row applied twice); an
//! empty database starts from the stream's first message.

use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use super::RelationalStore;
use crate::{Error, Result};

const POSITIONS: TableDefinition<&str, u64> = TableDefinition::new("consumer_positions");

pub(super) fn ensure_tables(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(POSITIONS).map_err(Error::redb_op)?;
    Ok(())
}

/// Where a batch of stream messages ends: recorded with the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamPosition<'a> {
    pub consumer: &'a str,
    pub stream_seq: u64,
}

pub(super) fn record(txn: &WriteTransaction, pos: Option<StreamPosition<'_>>) -> Result<()> {
    let Some(pos) = pos else { return Ok(()) };
    let mut t = txn.open_table(POSITIONS).map_err(Error::redb_op)?;
    let current = t
        .get(pos.consumer)
        .map_err(Error::redb_op)?
        .map(|v| v.value());
    if current.is_none_or(|c| pos.stream_seq > c) {
        t.insert(pos.consumer, pos.stream_seq)
            .map_err(Error::redb_op)?;
    }
    Ok(())
}

impl RelationalStore {
    /// The last stream sequence `consumer` applied (0: none yet).
    pub fn consumer_position(&self, consumer: &str) -> Result<u64> {
        let txn = self.db.begin_read().map_err(Error::redb_op)?;
        let t = txn.open_table(POSITIONS).map_err(Error::redb_op)?;
        Ok(t.get(consumer)
            .map_err(Error::redb_op)?
            .map_or(0, |v| v.value()))
    }

    /// Records that `consumer` applied everything up to `stream_seq` when
    /// a batch produced no rows (e.g. only undecodable messages).
    pub fn record_position(&self, pos: StreamPosition<'_>) -> Result<()> {
        let txn = self.db.begin_write().map_err(Error::redb_op)?;
        record(&txn, Some(pos))?;
        txn.commit().map_err(Error::redb_op)
    }

    /// Sets `consumer`'s entry to `stream_seq`, lower or higher: for
    /// entries that are not positions (e.g. which stream they count in).
    pub fn set_position(&self, pos: StreamPosition<'_>) -> Result<()> {
        let txn = self.db.begin_write().map_err(Error::redb_op)?;
        {
            let mut t = txn.open_table(POSITIONS).map_err(Error::redb_op)?;
            t.insert(pos.consumer, pos.stream_seq)
                .map_err(Error::redb_op)?;
        }
        txn.commit().map_err(Error::redb_op)
    }
}
