//! `inventory_facts`: the latest inventory of each (PC, manifest) — the
//! raw JSON stdout of the job's last successful run, with the manifest's
//! display and summary columns as they were then — keyed (pc_id,
//! manifest_id); the index (manifest_id, pc_id) serves one job's fleet
//! list.

use chrono::{DateTime, Utc};
use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::codec::{decode, encode};
use super::RelationalStore;
use crate::{Error, Result};

const FACTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("inventory_facts");
const BY_JOB: TableDefinition<(&str, &str), ()> = TableDefinition::new("inventory_facts_by_job");
const NAME: &str = "inventory_facts";

/// One PC's latest inventory for one manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct InventoryFactRecord {
    pub pc_id: String,
    pub manifest_id: String,
    /// The run's stdout as the agent sent it (valid JSON).
    pub facts_json: String,
    /// The manifest's `display` columns when it was stored (JSON array).
    pub display_json: String,
    /// Its `summary` columns (JSON array), if it had any.
    pub summary_json: Option<String>,
    /// When the run finished (the agent's clock): the newer run wins.
    pub collected_at: DateTime<Utc>,
    /// When this backend stored it.
    pub recorded_at: DateTime<Utc>,
}

pub(super) fn ensure_tables(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(FACTS).map_err(Error::redb_op)?;
    txn.open_table(BY_JOB).map_err(Error::redb_op)?;
    Ok(())
}

/// Upserts inside the caller's transaction. A run that finished earlier
/// never replaces one that finished later, whatever order they arrive in
/// (an agent's outbox drained after a week offline does not overwrite
/// this morning's scan). Returns how many rows changed.
pub(super) fn upsert(txn: &WriteTransaction, facts: &[InventoryFactRecord]) -> Result<usize> {
    let mut t = txn.open_table(FACTS).map_err(Error::redb_op)?;
    let mut by_job = txn.open_table(BY_JOB).map_err(Error::redb_op)?;
    let mut changed = 0;
    for f in facts {
        let key = (f.pc_id.as_str(), f.manifest_id.as_str());
        let newer = match t.get(key).map_err(Error::redb_op)? {
            Some(v) => {
                let old = decode::<InventoryFactRecord>(NAME, v.value())?;
                old.collected_at <= f.collected_at && old != *f
            }
            None => true,
        };
        if newer {
            changed += 1;
            t.insert(key, encode(NAME, f)?.as_slice())
                .map_err(Error::redb_op)?;
            by_job
                .insert((f.manifest_id.as_str(), f.pc_id.as_str()), ())
                .map_err(Error::redb_op)?;
        }
    }
    Ok(changed)
}

/// A page of one manifest's fleet list.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InventoryPage {
    pub rows: Vec<InventoryFactRecord>,
    /// Rows matching the filter, before paging.
    pub total: u64,
}

impl RelationalStore {
    /// Stores facts (imports; the projector writes them with the
    /// result); returns how many rows changed.
    pub fn put_inventory_facts(&self, facts: &[InventoryFactRecord]) -> Result<usize> {
        let txn = self.db.begin_write().map_err(Error::redb_op)?;
        let changed = upsert(&txn, facts)?;
        txn.commit().map_err(Error::redb_op)?;
        Ok(changed)
    }

    /// Every manifest's latest facts of one PC, by manifest id.
    pub fn inventory_for_pc(&self, pc_id: &str) -> Result<Vec<InventoryFactRecord>> {
        let txn = self.db.begin_read().map_err(Error::redb_op)?;
        let t = txn.open_table(FACTS).map_err(Error::redb_op)?;
        let mut out = Vec::new();
        for e in t.range((pc_id, "")..).map_err(Error::redb_op)? {
            let (k, v) = e.map_err(Error::redb_op)?;
            if k.value().0 != pc_id {
                break;
            }
            out.push(decode(NAME, v.value())?);
        }
        Ok(out)
    }

    /// One manifest's facts across the fleet, by pc_id: the PCs `keep`
    /// accepts, `limit` of them after `offset`, and how many matched.
    pub fn inventory_for_job(
        &self,
        manifest_id: &str,
        keep: impl Fn(&str) -> bool,
        offset: usize,
        limit: usize,
    ) -> Result<InventoryPage> {
        let txn = self.db.begin_read().map_err(Error::redb_op)?;
        let t = txn.open_table(FACTS).map_err(Error::redb_op)?;
        let by_job = txn.open_table(BY_JOB).map_err(Error::redb_op)?;
        let mut page = InventoryPage::default();
        for e in by_job.range((manifest_id, "")..).map_err(Error::redb_op)? {
            let (k, _) = e.map_err(Error::redb_op)?;
            let (job, pc) = k.value();
            if job != manifest_id {
                break;
            }
            if !keep(pc) {
                continue;
            }
            page.total += 1;
            if page.total as usize > offset && page.rows.len() < limit {
                if let Some(v) = t.get((pc, job)).map_err(Error::redb_op)? {
                    page.rows.push(decode(NAME, v.value())?);
                }
            }
        }
        Ok(page)
    }

    /// One PC's latest facts of one manifest.
    pub fn inventory_fact(
        &self,
        pc_id: &str,
        manifest_id: &str,
    ) -> Result<Option<InventoryFactRecord>> {
        let txn = self.db.begin_read().map_err(Error::redb_op)?;
        let t = txn.open_table(FACTS).map_err(Error::redb_op)?;
        let got = t.get((pc_id, manifest_id)).map_err(Error::redb_op)?;
        got.map(|v| decode(NAME, v.value())).transpose()
    }

    /// Up to `limit` of one manifest's facts by pc_id, from the first PC
    /// after `after` (keyset paging, for streaming a whole job through
    /// bounded memory).
    pub fn inventory_facts_after(
        &self,
        manifest_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<InventoryFactRecord>> {
        let txn = self.db.begin_read().map_err(Error::redb_op)?;
        let t = txn.open_table(FACTS).map_err(Error::redb_op)?;
        let by_job = txn.open_table(BY_JOB).map_err(Error::redb_op)?;
        let mut out = Vec::new();
        let start = after.unwrap_or("");
        for e in by_job
            .range((manifest_id, start)..)
            .map_err(Error::redb_op)?
        {
            let (k, _) = e.map_err(Error::redb_op)?;
            let (job, pc) = k.value();
            if job != manifest_id || out.len() >= limit {
                break;
            }
            if after == Some(pc) {
                continue;
            }
            if let Some(v) = t.get((pc, job)).map_err(Error::redb_op)? {
                out.push(decode(NAME, v.value())?);
            }
        }
        Ok(out)
    }
}
