//! The relational tables SQL reads (`POST /api/query`), scanned as their
//! stored JSON documents, in key order, in one read transaction: the
//! caller decodes the columns it declares and may stop at any row.

use redb::{Key, ReadableDatabase, ReadableTable, TableDefinition};

use super::RelationalStore;
use crate::{Error, Result};

/// A table SQL can read, by its stored name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlTable {
    ExecutionResults,
    Executions,
    AuditLog,
    ObsEvents,
    CheckStatus,
    InventoryFacts,
    NotificationAcks,
}

impl SqlTable {
    pub const ALL: [SqlTable; 7] = [
        Self::ExecutionResults,
        Self::Executions,
        Self::AuditLog,
        Self::ObsEvents,
        Self::CheckStatus,
        Self::InventoryFacts,
        Self::NotificationAcks,
    ];

    /// The redb table's name, which is also upstream's SQL name.
    pub fn name(self) -> &'static str {
        match self {
            Self::ExecutionResults => "execution_results",
            Self::Executions => "executions",
            Self::AuditLog => "audit_log",
            Self::ObsEvents => "obs_events",
            Self::CheckStatus => "check_status",
            Self::InventoryFacts => "inventory_facts",
            Self::NotificationAcks => "notification_acks",
        }
    }
}

fn scan<K: Key + 'static>(
    store: &RelationalStore,
    name: &'static str,
    row: &mut dyn FnMut(&[u8]) -> bool,
) -> Result<()> {
    let def: TableDefinition<K, &[u8]> = TableDefinition::new(name);
    let txn = store.db.begin_read().map_err(Error::redb_op)?;
    let t = txn.open_table(def).map_err(Error::redb_op)?;
    for e in t.iter().map_err(Error::redb_op)? {
        let (_, v) = e.map_err(Error::redb_op)?;
        if !row(v.value()) {
            break;
        }
    }
    Ok(())
}

impl RelationalStore {
    /// Every row of `table` as its JSON document, until `row` says stop.
    pub fn scan_sql_table(
        &self,
        table: SqlTable,
        row: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<()> {
        let name = table.name();
        match table {
            SqlTable::ExecutionResults | SqlTable::Executions => scan::<&str>(self, name, row),
            SqlTable::AuditLog | SqlTable::ObsEvents => scan::<u64>(self, name, row),
            SqlTable::CheckStatus | SqlTable::InventoryFacts => {
                scan::<(&str, &str)>(self, name, row)
            }
            SqlTable::NotificationAcks => scan::<(&str, &str, &str)>(self, name, row),
        }
    }
}
