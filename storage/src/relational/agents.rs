//! `agents`: one row per PC, upserted from heartbeats; index
//! `agents_by_heartbeat` orders them by last heartbeat.

use chrono::{DateTime, Utc};
use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::codec::{decode, encode};
use super::RelationalStore;
use crate::{Error, Result};

const AGENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("agents");
/// (last_heartbeat µs, pc_id) → ().
const BY_HEARTBEAT: TableDefinition<(i64, &str), ()> = TableDefinition::new("agents_by_heartbeat");
const NAME: &str = "agents";

/// One agent as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct AgentRecord {
    pub pc_id: String,
    pub hostname: Option<String>,
    pub os_family: Option<String>,
    pub agent_version: Option<String>,
    pub last_heartbeat: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub agent_cpu_pct: Option<f64>,
    pub agent_rss_bytes: Option<i64>,
    pub agent_disk_read_bytes: Option<i64>,
    pub agent_disk_written_bytes: Option<i64>,
    pub quarantined_versions: Vec<String>,
    /// What the 0.101 agents add; a beat without them (a 0.43 agent, a
    /// ping) keeps what an earlier beat said.
    #[serde(flatten)]
    pub reported: AgentReported,
}

/// The optional facts 0.101 heartbeats carry, stored as reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct AgentReported {
    pub agent_arch: Option<String>,
    pub last_logon_user: Option<String>,
    pub last_logon_display_name: Option<String>,
    /// `kid:fingerprint` of each key in the agent's keyring; `Some([])`
    /// is an empty keyring, `None` never reported.
    pub command_keys: Option<Vec<String>>,
    /// Whether the agent refuses unsigned commands.
    pub enforcing: Option<bool>,
    pub command_protocols: Option<Vec<String>>,
    pub deploy_capabilities: Option<serde_json::Value>,
    /// Unix seconds the capabilities above arrived.
    pub deploy_capabilities_received_at: Option<i64>,
}

impl AgentReported {
    /// `newer` over `self`: a field the newer beat left out keeps its
    /// value; the display name follows the user it belongs to.
    fn merged(self, newer: &AgentReported, now: DateTime<Utc>) -> AgentReported {
        let user_reported = newer.last_logon_user.is_some();
        AgentReported {
            agent_arch: newer.agent_arch.clone().or(self.agent_arch),
            last_logon_user: newer.last_logon_user.clone().or(self.last_logon_user),
            last_logon_display_name: if user_reported {
                newer.last_logon_display_name.clone()
            } else {
                self.last_logon_display_name
            },
            command_keys: newer.command_keys.clone().or(self.command_keys),
            enforcing: newer.enforcing.or(self.enforcing),
            command_protocols: newer.command_protocols.clone().or(self.command_protocols),
            deploy_capabilities_received_at: if newer.deploy_capabilities.is_some() {
                Some(now.timestamp())
            } else {
                self.deploy_capabilities_received_at
            },
            deploy_capabilities: newer
                .deploy_capabilities
                .clone()
                .or(self.deploy_capabilities),
        }
    }
}

/// What one heartbeat says about its agent.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HeartbeatUpdate {
    pub pc_id: String,
    pub at: DateTime<Utc>,
    pub hostname: Option<String>,
    pub os_family: Option<String>,
    pub agent_version: String,
    pub agent_cpu_pct: Option<f64>,
    pub agent_rss_bytes: Option<i64>,
    pub agent_disk_read_bytes: Option<i64>,
    pub agent_disk_written_bytes: Option<i64>,
    pub quarantined_versions: Vec<String>,
    pub reported: AgentReported,
}

pub(super) fn ensure_tables(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(AGENTS).map_err(Error::redb_op)?;
    txn.open_table(BY_HEARTBEAT).map_err(Error::redb_op)?;
    Ok(())
}

impl RelationalStore {
    /// Upserts one heartbeat per agent in one transaction. The first
    /// hostname and OS family an agent reported are kept; everything else
    /// takes the newest value. A heartbeat older than the stored one does
    /// not move `last_heartbeat` back.
    pub fn upsert_heartbeats(&self, updates: &[HeartbeatUpdate], now: DateTime<Utc>) -> Result<()> {
        let txn = self.db.begin_write().map_err(Error::redb_op)?;
        {
            let mut agents = txn.open_table(AGENTS).map_err(Error::redb_op)?;
            let mut index = txn.open_table(BY_HEARTBEAT).map_err(Error::redb_op)?;
            for u in updates {
                let old: Option<AgentRecord> =
                    match agents.get(u.pc_id.as_str()).map_err(Error::redb_op)? {
                        Some(v) => Some(decode(NAME, v.value())?),
                        None => None,
                    };
                let merged = merge(old.as_ref(), u, now);
                if let Some(prev) = old.as_ref().and_then(|o| o.last_heartbeat) {
                    index
                        .remove((prev.timestamp_micros(), u.pc_id.as_str()))
                        .map_err(Error::redb_op)?;
                }
                if let Some(hb) = merged.last_heartbeat {
                    index
                        .insert((hb.timestamp_micros(), u.pc_id.as_str()), ())
                        .map_err(Error::redb_op)?;
                }
                agents
                    .insert(u.pc_id.as_str(), encode(NAME, &merged)?.as_slice())
                    .map_err(Error::redb_op)?;
            }
        }
        txn.commit().map_err(Error::redb_op)
    }

    /// One agent, if known.
    pub fn agent(&self, pc_id: &str) -> Result<Option<AgentRecord>> {
        let txn = self.db.begin_read().map_err(Error::redb_op)?;
        let agents = txn.open_table(AGENTS).map_err(Error::redb_op)?;
        match agents.get(pc_id).map_err(Error::redb_op)? {
            Some(v) => Ok(Some(decode(NAME, v.value())?)),
            None => Ok(None),
        }
    }

    /// Removes an agent's row and its index entry; `false` when unknown.
    /// The next heartbeat of that PC brings it back.
    pub fn delete_agent(&self, pc_id: &str) -> Result<bool> {
        let txn = self.db.begin_write().map_err(Error::redb_op)?;
        let removed = {
            let mut agents = txn.open_table(AGENTS).map_err(Error::redb_op)?;
            let mut index = txn.open_table(BY_HEARTBEAT).map_err(Error::redb_op)?;
            let old: Option<AgentRecord> = match agents.remove(pc_id).map_err(Error::redb_op)? {
                Some(v) => Some(decode(NAME, v.value())?),
                None => None,
            };
            if let Some(hb) = old.as_ref().and_then(|o| o.last_heartbeat) {
                index
                    .remove((hb.timestamp_micros(), pc_id))
                    .map_err(Error::redb_op)?;
            }
            old.is_some()
        };
        txn.commit().map_err(Error::redb_op)?;
        Ok(removed)
    }

    /// Every agent (a fleet is thousands of rows, not millions).
    pub fn agents(&self) -> Result<Vec<AgentRecord>> {
        let txn = self.db.begin_read().map_err(Error::redb_op)?;
        let agents = txn.open_table(AGENTS).map_err(Error::redb_op)?;
        let mut out = Vec::new();
        for entry in agents.iter().map_err(Error::redb_op)? {
            let (_, v) = entry.map_err(Error::redb_op)?;
            out.push(decode(NAME, v.value())?);
        }
        Ok(out)
    }

    /// Agents whose last heartbeat is older than `cutoff`, oldest first
    /// (read from the heartbeat index, not a scan of the rows).
    pub fn agents_heartbeat_before(&self, cutoff: DateTime<Utc>) -> Result<Vec<String>> {
        let txn = self.db.begin_read().map_err(Error::redb_op)?;
        let index = txn.open_table(BY_HEARTBEAT).map_err(Error::redb_op)?;
        let mut out = Vec::new();
        let end = (cutoff.timestamp_micros(), "");
        for entry in index.range(..end).map_err(Error::redb_op)? {
            let (k, _) = entry.map_err(Error::redb_op)?;
            out.push(k.value().1.to_string());
        }
        Ok(out)
    }
}

impl RelationalStore {
    /// Agents whose last heartbeat is at or after `cutoff` (the live
    /// roster), sorted by pc_id, from the heartbeat index.
    pub fn agents_heartbeat_since(&self, cutoff: DateTime<Utc>) -> Result<Vec<String>> {
        let txn = self.db.begin_read().map_err(Error::redb_op)?;
        let index = txn.open_table(BY_HEARTBEAT).map_err(Error::redb_op)?;
        let mut out = Vec::new();
        for entry in index
            .range((cutoff.timestamp_micros(), "")..)
            .map_err(Error::redb_op)?
        {
            let (k, _) = entry.map_err(Error::redb_op)?;
            out.push(k.value().1.to_string());
        }
        out.sort();
        Ok(out)
    }
}

fn merge(old: Option<&AgentRecord>, u: &HeartbeatUpdate, now: DateTime<Utc>) -> AgentRecord {
    let newer = old
        .and_then(|o| o.last_heartbeat)
        .is_none_or(|prev| u.at >= prev);
    let base = old.cloned().unwrap_or_default();
    if !newer {
        return AgentRecord {
            hostname: base.hostname.or_else(|| u.hostname.clone()),
            os_family: base.os_family.or_else(|| u.os_family.clone()),
            ..base
        };
    }
    AgentRecord {
        pc_id: u.pc_id.clone(),
        hostname: base.hostname.or_else(|| u.hostname.clone()),
        os_family: base.os_family.or_else(|| u.os_family.clone()),
        agent_version: Some(u.agent_version.clone()),
        last_heartbeat: Some(u.at),
        updated_at: Some(now),
        agent_cpu_pct: u.agent_cpu_pct,
        agent_rss_bytes: u.agent_rss_bytes,
        agent_disk_read_bytes: u.agent_disk_read_bytes,
        agent_disk_written_bytes: u.agent_disk_written_bytes,
        quarantined_versions: u.quarantined_versions.clone(),
        reported: base.reported.merged(&u.reported, now),
    }
}

impl RelationalStore {
    /// Adds agents not yet known (a migration from another store); a known
    /// pc_id keeps what it has. Returns how many were added.
    pub fn import_agents(&self, records: &[AgentRecord]) -> Result<usize> {
        let txn = self.db.begin_write().map_err(Error::redb_op)?;
        let mut added = 0;
        {
            let mut agents = txn.open_table(AGENTS).map_err(Error::redb_op)?;
            let mut index = txn.open_table(BY_HEARTBEAT).map_err(Error::redb_op)?;
            for a in records {
                if agents
                    .get(a.pc_id.as_str())
                    .map_err(Error::redb_op)?
                    .is_some()
                {
                    continue;
                }
                if let Some(hb) = a.last_heartbeat {
                    index
                        .insert((hb.timestamp_micros(), a.pc_id.as_str()), ())
                        .map_err(Error::redb_op)?;
                }
                agents
                    .insert(a.pc_id.as_str(), encode(NAME, a)?.as_slice())
                    .map_err(Error::redb_op)?;
                added += 1;
            }
        }
        txn.commit().map_err(Error::redb_op)?;
        Ok(added)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn hb(pc: &str, at: DateTime<Utc>, host: Option<&str>, version: &str) -> HeartbeatUpdate {
        HeartbeatUpdate {
            pc_id: pc.into(),
            at,
            hostname: host.map(Into::into),
            os_family: Some("windows".into()),
            agent_version: version.into(),
            agent_cpu_pct: Some(1.5),
            agent_rss_bytes: Some(1000),
            agent_disk_read_bytes: None,
            agent_disk_written_bytes: None,
            quarantined_versions: vec![],
            reported: Default::default(),
        }
    }

    #[test]
    fn upsert_keeps_first_hostname_and_newest_heartbeat() {
        let dir = tempfile::tempdir().unwrap();
        let store = RelationalStore::open(dir.path()).unwrap();
        let t = Utc::now();
        store
            .upsert_heartbeats(&[hb("a", t, Some("alpha"), "1.0")], t)
            .unwrap();
        store
            .upsert_heartbeats(
                &[hb("a", t + Duration::seconds(30), Some("renamed"), "1.1")],
                t,
            )
            .unwrap();
        store
            .upsert_heartbeats(&[hb("a", t - Duration::hours(1), None, "0.9")], t)
            .unwrap();
        let a = store.agent("a").unwrap().unwrap();
        assert_eq!(a.hostname.as_deref(), Some("alpha"));
        assert_eq!(a.agent_version.as_deref(), Some("1.1"));
        assert_eq!(a.last_heartbeat, Some(t + Duration::seconds(30)));
        assert_eq!(
            store
                .agents_heartbeat_before(t + Duration::minutes(1))
                .unwrap(),
            vec!["a"]
        );
        assert!(
            store.agents_heartbeat_before(t).unwrap().is_empty(),
            "index moved with the row"
        );
    }

    #[test]
    fn rows_of_an_older_shape_still_read() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = RelationalStore::open(dir.path()).unwrap();
            let txn = store.db.begin_write().unwrap();
            {
                let mut t = txn.open_table(AGENTS).unwrap();
                // Written before agent self-perf and quarantine existed,
                // with a field from some future version too.
                let old = br#"{"pc_id":"old","hostname":"legacy","last_heartbeat":"2026-01-01T00:00:00Z","future_field":7}"#;
                t.insert("old", old.as_slice()).unwrap();
            }
            txn.commit().unwrap();
        }
        let store = RelationalStore::open(dir.path()).unwrap();
        let a = store.agent("old").unwrap().unwrap();
        assert_eq!(a.hostname.as_deref(), Some("legacy"));
        assert_eq!(a.agent_cpu_pct, None);
        assert!(a.quarantined_versions.is_empty());
        assert_eq!(store.agents().unwrap().len(), 1);
    }
}
