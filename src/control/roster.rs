//! Which PCs a target means: the live roster (heartbeat within
//! [`ALIVE_WITHIN`]) for exec's `target_count` and the scheduler, the full
//! roster (offline PCs too) for coverage. Groups come from the
//! `agent_groups` KV bucket and the declared groups' `agent_groups_derived`;
//! listed PCs count as given.

use std::collections::BTreeSet;

use async_nats::jetstream::kv;
use chrono::Utc;
use futures::StreamExt;
use kanade_shared::kv::{BUCKET_AGENT_GROUPS, BUCKET_AGENT_GROUPS_DERIVED};
use kanade_shared::manifest::Target;
use kanade_shared::wire::AgentGroups;

use super::{Control, Result};

/// An agent whose last heartbeat is younger than this is alive.
pub const ALIVE_WITHIN: chrono::Duration = chrono::Duration::minutes(2);

/// Group-membership reads in flight at once.
const GROUP_READS: usize = 16;

impl Control {
    /// The PCs `target` resolves to, sorted and deduplicated. With
    /// `alive_only`, `all` and `groups` keep only live agents; listed
    /// `pcs` are always included.
    pub async fn roster(&self, target: &Target, alive_only: bool) -> Result<Vec<String>> {
        let mut out = BTreeSet::new();
        if target.all || !target.groups.is_empty() {
            let known = if alive_only {
                self.store
                    .agents_heartbeat_since(Utc::now() - ALIVE_WITHIN)?
            } else {
                self.store.agents()?.into_iter().map(|a| a.pc_id).collect()
            };
            if target.all {
                out.extend(known);
            } else {
                out.extend(self.members_of(&target.groups, known).await);
            }
        }
        out.extend(target.pcs.iter().cloned());
        Ok(out.into_iter().collect())
    }

    /// Those of `candidates` that belong to one of `groups`: set by hand
    /// (`agent_groups`) or declared (`agent_groups_derived`), as an agent
    /// takes the union of the two.
    async fn members_of(&self, groups: &[String], candidates: Vec<String>) -> Vec<String> {
        let Ok(manual) = self.kv(BUCKET_AGENT_GROUPS).await else {
            tracing::warn!("agent_groups bucket unavailable: group targets resolve to nobody");
            return Vec::new();
        };
        let derived = self.kv(BUCKET_AGENT_GROUPS_DERIVED).await.ok();
        let (manual, derived) = (&manual, derived.as_ref());
        futures::stream::iter(candidates)
            .map(|pc| async move {
                if self.in_groups(manual, &pc, groups).await {
                    return Some(pc);
                }
                (self.in_groups(derived?, &pc, groups).await).then_some(pc)
            })
            .buffer_unordered(GROUP_READS)
            .filter_map(|pc| async move { pc })
            .collect()
            .await
    }

    /// Whether `store` lists `pc` in one of `groups`.
    async fn in_groups(&self, store: &kv::Store, pc: &str, groups: &[String]) -> bool {
        let Ok(Some(entry)) = self.entry(store, pc).await else {
            return false;
        };
        serde_json::from_slice::<AgentGroups>(&entry.value)
            .is_ok_and(|m| groups.iter().any(|g| m.contains(g)))
    }
}
