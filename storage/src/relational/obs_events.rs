//! `obs_events`: agent observations from the OBS_EVENTS stream, keyed by
//! stream sequence and unique on (pc_id, source, event_record_id) when the
//! agent gives a record id. Indexes by time, by (pc_id, time) and by
//! (kind, time), plus the distinct kinds and sources, all kept in the same
//! transaction as the row.

use chrono::{DateTime, Utc};
use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::codec::{decode, encode};
use super::positions::{record, StreamPosition};
use super::RelationalStore;
use crate::{Error, Result};

const OBS: TableDefinition<u64, &[u8]> = TableDefinition::new("obs_events");
const UNIQUE: TableDefinition<(&str, &str, &str), u64> = TableDefinition::new("obs_events_unique");
const BY_AT: TableDefinition<(i64, u64), ()> = TableDefinition::new("obs_events_by_at");
const BY_PC: TableDefinition<(&str, i64, u64), ()> = TableDefinition::new("obs_events_by_pc_at");
const BY_KIND: TableDefinition<(&str, i64, u64), ()> =
    TableDefinition::new("obs_events_by_kind_at");
const KINDS: TableDefinition<&str, u64> = TableDefinition::new("obs_events_kinds");
const SOURCES: TableDefinition<&str, u64> = TableDefinition::new("obs_events_sources");
const NAME: &str = "obs_events";

/// One observation as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ObsRecord {
    pub id: u64,
    pub pc_id: String,
    pub at: DateTime<Utc>,
    pub kind: String,
    pub source: String,
    pub event_record_id: Option<String>,
    pub payload: serde_json::Value,
}

/// Which index a scan walks (newest first).
#[derive(Debug, Clone, Copy)]
pub enum ObsScan<'a> {
    All,
    Pc(&'a str),
    Kind(&'a str),
}

pub(super) fn ensure_tables(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(OBS).map_err(Error::redb_op)?;
    txn.open_table(UNIQUE).map_err(Error::redb_op)?;
    txn.open_table(BY_AT).map_err(Error::redb_op)?;
    txn.open_table(BY_PC).map_err(Error::redb_op)?;
    txn.open_table(BY_KIND).map_err(Error::redb_op)?;
    txn.open_table(KINDS).map_err(Error::redb_op)?;
    txn.open_table(SOURCES).map_err(Error::redb_op)?;
    Ok(())
}

fn bump(t: &mut redb::Table<&str, u64>, key: &str) -> Result<()> {
    let n = t.get(key).map_err(Error::redb_op)?.map_or(0, |v| v.value());
    t.insert(key, n + 1).map_err(Error::redb_op)?;
    Ok(())
}

fn unbump(t: &mut redb::Table<&str, u64>, key: &str) -> Result<()> {
    let n = t.get(key).map_err(Error::redb_op)?.map_or(0, |v| v.value());
    if n <= 1 {
        t.remove(key).map_err(Error::redb_op)?;
    } else {
        t.insert(key, n - 1).map_err(Error::redb_op)?;
    }
    Ok(())
}

impl RelationalStore {
    /// Inserts observations (first writer wins on id and on the unique
    /// key) and records `pos`, in one transaction; returns how many were added.
    pub fn apply_obs_events(
        &self,
        events: &[ObsRecord],
        pos: Option<StreamPosition<'_>>,
    ) -> Result<usize> {
        let mut added = 0;
        let txn = self.db.begin_write().map_err(Error::redb_op)?;
        {
            let mut rows = txn.open_table(OBS).map_err(Error::redb_op)?;
            let mut unique = txn.open_table(UNIQUE).map_err(Error::redb_op)?;
            let mut by_at = txn.open_table(BY_AT).map_err(Error::redb_op)?;
            let mut by_pc = txn.open_table(BY_PC).map_err(Error::redb_op)?;
            let mut by_kind = txn.open_table(BY_KIND).map_err(Error::redb_op)?;
            let mut kinds = txn.open_table(KINDS).map_err(Error::redb_op)?;
            let mut sources = txn.open_table(SOURCES).map_err(Error::redb_op)?;
            for e in events {
                if rows.get(e.id).map_err(Error::redb_op)?.is_some() {
                    continue;
                }
                if let Some(rec) = e.event_record_id.as_deref() {
                    let key = (e.pc_id.as_str(), e.source.as_str(), rec);
                    if unique.get(key).map_err(Error::redb_op)?.is_some() {
                        continue;
                    }
                    unique.insert(key, e.id).map_err(Error::redb_op)?;
                }
                let at = e.at.timestamp_micros();
                by_at.insert((at, e.id), ()).map_err(Error::redb_op)?;
                by_pc
                    .insert((e.pc_id.as_str(), at, e.id), ())
                    .map_err(Error::redb_op)?;
                by_kind
                    .insert((e.kind.as_str(), at, e.id), ())
                    .map_err(Error::redb_op)?;
                bump(&mut kinds, &e.kind)?;
                bump(&mut sources, &e.source)?;
                rows.insert(e.id, encode(NAME, e)?.as_slice())
                    .map_err(Error::redb_op)?;
                added += 1;
            }
        }
        record(&txn, pos)?;
        txn.commit().map_err(Error::redb_op)?;
        Ok(added)
    }

    /// Deletes at most `max` observations older than `cutoff`, oldest first,
    /// with every index entry, in one transaction; returns how many went.
    pub fn prune_obs_events_before(&self, cutoff: DateTime<Utc>, max: usize) -> Result<usize> {
        let txn = self.db.begin_write().map_err(Error::redb_op)?;
        let mut n = 0;
        {
            let mut rows = txn.open_table(OBS).map_err(Error::redb_op)?;
            let mut unique = txn.open_table(UNIQUE).map_err(Error::redb_op)?;
            let mut by_at = txn.open_table(BY_AT).map_err(Error::redb_op)?;
            let mut by_pc = txn.open_table(BY_PC).map_err(Error::redb_op)?;
            let mut by_kind = txn.open_table(BY_KIND).map_err(Error::redb_op)?;
            let mut kinds = txn.open_table(KINDS).map_err(Error::redb_op)?;
            let mut sources = txn.open_table(SOURCES).map_err(Error::redb_op)?;
            let keys: Vec<(i64, u64)> = by_at
                .range(..(cutoff.timestamp_micros(), 0u64))
                .map_err(Error::redb_op)?
                .take(max)
                .map(|e| e.map(|(k, _)| k.value()).map_err(Error::redb_op))
                .collect::<Result<_>>()?;
            for (at, id) in keys {
                by_at.remove((at, id)).map_err(Error::redb_op)?;
                let Some(e) = rows
                    .remove(id)
                    .map_err(Error::redb_op)?
                    .map(|v| decode::<ObsRecord>(NAME, v.value()))
                else {
                    continue;
                };
                let e = e?;
                by_pc
                    .remove((e.pc_id.as_str(), at, id))
                    .map_err(Error::redb_op)?;
                by_kind
                    .remove((e.kind.as_str(), at, id))
                    .map_err(Error::redb_op)?;
                if let Some(rec) = e.event_record_id.as_deref() {
                    unique
                        .remove((e.pc_id.as_str(), e.source.as_str(), rec))
                        .map_err(Error::redb_op)?;
                }
                unbump(&mut kinds, &e.kind)?;
                unbump(&mut sources, &e.source)?;
                n += 1;
            }
        }
        txn.commit().map_err(Error::redb_op)?;
        Ok(n)
    }

    /// Walks observations with `at` in `[from, to)` newest first (ties:
    /// higher id first) along `scan`'s index until `visit` returns false.
    pub fn scan_obs_events_desc(
        &self,
        scan: ObsScan<'_>,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        mut visit: impl FnMut(ObsRecord) -> bool,
    ) -> Result<()> {
        let txn = self.db.begin_read().map_err(Error::redb_op)?;
        let rows = txn.open_table(OBS).map_err(Error::redb_op)?;
        let lo = from.map_or(i64::MIN, |t| t.timestamp_micros());
        let hi = to.map_or(i64::MAX, |t| t.timestamp_micros());
        let mut ids: Box<dyn Iterator<Item = Result<u64>>> = match scan {
            ObsScan::All => {
                let t = txn.open_table(BY_AT).map_err(Error::redb_op)?;
                let r = t.range((lo, 0u64)..(hi, 0u64)).map_err(Error::redb_op)?;
                Box::new(
                    r.rev()
                        .map(|e| e.map(|(k, _)| k.value().1).map_err(Error::redb_op)),
                )
            }
            ObsScan::Pc(pc) => {
                let t = txn.open_table(BY_PC).map_err(Error::redb_op)?;
                let r = t
                    .range((pc, lo, 0u64)..(pc, hi, 0u64))
                    .map_err(Error::redb_op)?;
                Box::new(
                    r.rev()
                        .map(|e| e.map(|(k, _)| k.value().2).map_err(Error::redb_op)),
                )
            }
            ObsScan::Kind(kind) => {
                let t = txn.open_table(BY_KIND).map_err(Error::redb_op)?;
                let r = t
                    .range((kind, lo, 0u64)..(kind, hi, 0u64))
                    .map_err(Error::redb_op)?;
                Box::new(
                    r.rev()
                        .map(|e| e.map(|(k, _)| k.value().2).map_err(Error::redb_op)),
                )
            }
        };
        for id in &mut ids {
            if let Some(v) = rows.get(id?).map_err(Error::redb_op)? {
                if !visit(decode(NAME, v.value())?) {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Distinct kinds, sorted.
    pub fn obs_kinds(&self) -> Result<Vec<String>> {
        self.distinct(KINDS)
    }

    /// Distinct sources, sorted.
    pub fn obs_sources(&self) -> Result<Vec<String>> {
        self.distinct(SOURCES)
    }

    fn distinct(&self, def: TableDefinition<&str, u64>) -> Result<Vec<String>> {
        let txn = self.db.begin_read().map_err(Error::redb_op)?;
        let t = txn.open_table(def).map_err(Error::redb_op)?;
        let mut out = Vec::new();
        for e in t.iter().map_err(Error::redb_op)? {
            out.push(e.map_err(Error::redb_op)?.0.value().to_string());
        }
        Ok(out)
    }
}
