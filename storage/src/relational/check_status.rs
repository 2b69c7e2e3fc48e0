//! `check_status`: the latest state of each health check on each PC,
//! keyed (pc_id, check_name), written by the results of jobs whose
//! manifest declares a fleet check; index (check_name, pc_id) serves the
//! by-check view.

use chrono::{DateTime, Utc};
use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::codec::{decode, encode};
use super::RelationalStore;
use crate::{Error, Result};

const CHECKS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("check_status");
const BY_NAME: TableDefinition<(&str, &str), ()> = TableDefinition::new("check_status_by_name");
const NAME: &str = "check_status";

/// One check's state on one PC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct CheckStatusRecord {
    pub pc_id: String,
    pub check_name: String,
    /// ok | warn | fail | unknown
    pub status: String,
    pub detail: Option<String>,
    pub recorded_at: DateTime<Utc>,
}

pub(super) fn ensure_tables(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(CHECKS).map_err(Error::redb_op)?;
    txn.open_table(BY_NAME).map_err(Error::redb_op)?;
    Ok(())
}

/// A check whose status a write changed (or set for the first time).
#[derive(Debug, Clone, PartialEq)]
pub struct CheckChange {
    /// The status before (none: the first report of this check on this PC).
    pub prior: Option<String>,
    /// The state as it now stands.
    pub now: CheckStatusRecord,
}

/// Upserts inside the caller's transaction; an older report never
/// replaces a newer one. Answers the states whose status changed, in
/// order (two reports of one check in a batch are two changes if each
/// moved it).
pub(super) fn upsert(
    txn: &WriteTransaction,
    checks: &[CheckStatusRecord],
) -> Result<Vec<CheckChange>> {
    let mut t = txn.open_table(CHECKS).map_err(Error::redb_op)?;
    let mut by_name = txn.open_table(BY_NAME).map_err(Error::redb_op)?;
    let mut changes = Vec::new();
    for c in checks {
        let key = (c.pc_id.as_str(), c.check_name.as_str());
        let old = match t.get(key).map_err(Error::redb_op)? {
            Some(v) => Some(decode::<CheckStatusRecord>(NAME, v.value())?),
            None => None,
        };
        let newer = old.as_ref().is_none_or(|o| o.recorded_at <= c.recorded_at);
        if newer && old.as_ref().is_none_or(|o| o.status != c.status) {
            changes.push(CheckChange {
                prior: old.map(|o| o.status),
                now: c.clone(),
            });
        }
        if newer {
            t.insert(key, encode(NAME, c)?.as_slice())
                .map_err(Error::redb_op)?;
            by_name
                .insert((c.check_name.as_str(), c.pc_id.as_str()), ())
                .map_err(Error::redb_op)?;
        }
    }
    Ok(changes)
}

impl RelationalStore {
    /// Merges states of another store (an older one never replaces a
    /// newer); how many changed a status.
    pub fn import_check_status(&self, checks: &[CheckStatusRecord]) -> Result<u64> {
        let txn = self.db.begin_write().map_err(Error::redb_op)?;
        let changed = upsert(&txn, checks)?.len() as u64;
        txn.commit().map_err(Error::redb_op)?;
        Ok(changed)
    }

    /// Every (check, PC) state, by check name then pc_id.
    pub fn check_status_all(&self) -> Result<Vec<CheckStatusRecord>> {
        let txn = self.db.begin_read().map_err(Error::redb_op)?;
        let t = txn.open_table(CHECKS).map_err(Error::redb_op)?;
        let by_name = txn.open_table(BY_NAME).map_err(Error::redb_op)?;
        let mut out = Vec::new();
        for e in by_name.iter().map_err(Error::redb_op)? {
            let (k, _) = e.map_err(Error::redb_op)?;
            let (name, pc) = k.value();
            if let Some(v) = t.get((pc, name)).map_err(Error::redb_op)? {
                out.push(decode(NAME, v.value())?);
            }
        }
        Ok(out)
    }

    /// Every PC's state of one check, by pc_id.
    pub fn check_status_by_name(&self, check_name: &str) -> Result<Vec<CheckStatusRecord>> {
        let txn = self.db.begin_read().map_err(Error::redb_op)?;
        let t = txn.open_table(CHECKS).map_err(Error::redb_op)?;
        let by_name = txn.open_table(BY_NAME).map_err(Error::redb_op)?;
        let mut out = Vec::new();
        for e in by_name.range((check_name, "")..).map_err(Error::redb_op)? {
            let (k, _) = e.map_err(Error::redb_op)?;
            let (name, pc) = k.value();
            if name != check_name {
                break;
            }
            if let Some(v) = t.get((pc, name)).map_err(Error::redb_op)? {
                out.push(decode(NAME, v.value())?);
            }
        }
        Ok(out)
    }
}

impl RelationalStore {
    /// Forgets `check_name` on every PC, or on `pc_id` only; how many
    /// states went. The next result of the check brings its state back.
    pub fn delete_check_status(&self, check_name: &str, pc_id: Option<&str>) -> Result<u64> {
        let txn = self.db.begin_write().map_err(Error::redb_op)?;
        let mut removed = 0;
        {
            let mut t = txn.open_table(CHECKS).map_err(Error::redb_op)?;
            let mut by_name = txn.open_table(BY_NAME).map_err(Error::redb_op)?;
            let pcs: Vec<String> = match pc_id {
                Some(pc) => vec![pc.to_string()],
                None => {
                    let mut pcs = Vec::new();
                    for e in by_name.range((check_name, "")..).map_err(Error::redb_op)? {
                        let (k, _) = e.map_err(Error::redb_op)?;
                        let (name, pc) = k.value();
                        if name != check_name {
                            break;
                        }
                        pcs.push(pc.to_string());
                    }
                    pcs
                }
            };
            for pc in &pcs {
                by_name
                    .remove((check_name, pc.as_str()))
                    .map_err(Error::redb_op)?;
                if t.remove((pc.as_str(), check_name))
                    .map_err(Error::redb_op)?
                    .is_some()
                {
                    removed += 1;
                }
            }
        }
        txn.commit().map_err(Error::redb_op)?;
        Ok(removed)
    }
}
