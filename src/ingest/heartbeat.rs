//! `heartbeat.<pc_id>` (core NATS, `Heartbeat`) → redb `agents` upsert.

use std::collections::HashMap;

use chrono::Utc;
use kanade_shared::wire::Heartbeat;
use kanade_storage::{AgentReported, HeartbeatUpdate, RelationalStore};

use super::{Committed, Projection};

/// Projects heartbeats onto the agents table.
pub struct HeartbeatProjection(pub RelationalStore);

impl Projection for HeartbeatProjection {
    type Item = Heartbeat;
    const SUBJECT: &'static str = "heartbeat.>";

    fn decode(payload: &[u8]) -> Result<Heartbeat, serde_json::Error> {
        serde_json::from_slice(payload)
    }

    fn check(&self, hb: &Heartbeat, _now: chrono::DateTime<Utc>) -> Result<(), String> {
        super::wire::key("pc_id", &hb.pc_id)
    }

    /// Only the newest heartbeat of each agent in the batch is written.
    fn commit(&self, items: &[Heartbeat]) -> kanade_storage::Result<Committed> {
        let mut newest: HashMap<&str, &Heartbeat> = HashMap::new();
        for hb in items {
            let slot = newest.entry(hb.pc_id.as_str()).or_insert(hb);
            if hb.at >= slot.at {
                *slot = hb;
            }
        }
        let updates: Vec<HeartbeatUpdate> = newest
            .values()
            .map(|hb| HeartbeatUpdate {
                pc_id: hb.pc_id.clone(),
                at: hb.at,
                hostname: hb.hostname.clone(),
                os_family: hb.os_family.clone(),
                agent_version: hb.agent_version.clone(),
                agent_cpu_pct: hb.agent_cpu_pct,
                agent_rss_bytes: hb.agent_rss_bytes,
                agent_disk_read_bytes: hb.agent_disk_read_bytes,
                agent_disk_written_bytes: hb.agent_disk_written_bytes,
                quarantined_versions: hb.quarantined_versions.clone(),
                reported: AgentReported {
                    agent_arch: hb.agent_arch.clone(),
                    last_logon_user: hb.last_logon_user.clone(),
                    last_logon_display_name: hb.last_logon_display_name.clone(),
                    command_keys: hb.command_keys.clone(),
                    enforcing: hb.enforcing,
                    command_protocols: hb.command_protocols.clone(),
                    deploy_capabilities: hb
                        .deploy_capabilities
                        .as_ref()
                        .and_then(|d| serde_json::to_value(d).ok()),
                    deploy_capabilities_received_at: None,
                },
            })
            .collect();
        self.0.upsert_heartbeats(&updates, Utc::now())?;
        Ok(Committed {
            inserted: updates.len(),
            duplicates: items.len() - updates.len(),
        })
    }
}
