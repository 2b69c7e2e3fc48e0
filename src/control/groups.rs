//! Declared groups (`group_defs`) and the membership they derive
//! (`agent_groups_derived`, read by 0.101 agents beside `agent_groups`).
//!
//! The derived bucket holds, per PC, the declared groups that list it:
//! membership set by hand stays in `agent_groups`, and consumers (agents,
//! the roster) take the union. The writer is idempotent: a pass puts a
//! PC's key only when its set changed and deletes it when the PC left
//! every declared group, so agents' watches wake only on real changes.

use std::collections::{BTreeMap, BTreeSet};

use futures::StreamExt;
use kanade_shared::kv::{BUCKET_AGENT_GROUPS_DERIVED, BUCKET_GROUP_DEFS};
use kanade_shared::manifest::GroupDef;
use kanade_shared::wire::AgentGroups;

use super::{Control, Result};

/// Writes in flight at once while reconciling.
const WRITES: usize = 16;

/// What one reconcile pass changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    pub written: usize,
    pub deleted: usize,
    pub unchanged: usize,
}

/// A declared group's members as a pass found them; `None` when they
/// are unknown (a dynamic group whose query failed), so the PCs it had
/// keep it.
pub type Membership = (String, Option<BTreeSet<String>>);

/// The members of a static group, as declared (`None` for a dynamic one).
pub fn static_members(def: &GroupDef) -> Option<BTreeSet<String>> {
    if def.dynamic_query().is_some() {
        return None;
    }
    Some(def.members.iter().map(|m| m.trim().to_string()).collect())
}

/// pc → declared groups; the ids of groups whose members are unknown come
/// back separately.
pub fn derive(groups: &[Membership]) -> (BTreeMap<String, BTreeSet<String>>, BTreeSet<String>) {
    let mut by_pc: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut unresolved = BTreeSet::new();
    for (id, members) in groups {
        match members {
            Some(members) => {
                for pc in members {
                    by_pc.entry(pc.clone()).or_default().insert(id.clone());
                }
            }
            None => {
                unresolved.insert(id.clone());
            }
        }
    }
    (by_pc, unresolved)
}

impl Control {
    /// Every declared group, sorted by id (a missing bucket is none).
    pub async fn group_defs(&self) -> Result<Vec<GroupDef>> {
        Ok(self
            .list_json::<GroupDef>(BUCKET_GROUP_DEFS)
            .await?
            .into_iter()
            .map(|(_, d)| d)
            .collect())
    }

    /// Brings `agent_groups_derived` in line with `groups` (every declared
    /// group with its members). A group whose members are unknown keeps
    /// the PCs it had.
    pub async fn reconcile_derived_groups(&self, groups: &[Membership]) -> Result<Reconciled> {
        let (desired, unresolved) = derive(groups);
        let current: BTreeMap<String, AgentGroups> = self
            .list_json::<AgentGroups>(BUCKET_AGENT_GROUPS_DERIVED)
            .await?
            .into_iter()
            .collect();
        let store = self.kv(BUCKET_AGENT_GROUPS_DERIVED).await?;
        let pcs: BTreeSet<&String> = desired.keys().chain(current.keys()).collect();
        let considered = pcs.len();
        let plan: Vec<(String, Option<AgentGroups>)> = pcs
            .into_iter()
            .filter_map(|pc| {
                let old = current.get(pc);
                let mut target: BTreeSet<String> = desired.get(pc).cloned().unwrap_or_default();
                if let Some(old) = old {
                    target.extend(
                        old.groups
                            .iter()
                            .filter(|g| unresolved.contains(*g))
                            .cloned(),
                    );
                }
                let next = (!target.is_empty()).then(|| AgentGroups::new(target));
                (next.as_ref() != old).then(|| (pc.clone(), next))
            })
            .collect();
        let mut done = Reconciled {
            unchanged: considered - plan.len(),
            ..Default::default()
        };
        let store = &store;
        let results: Vec<Result<bool>> = futures::stream::iter(plan)
            .map(|(pc, next)| async move {
                match next {
                    Some(groups) => {
                        let json = serde_json::to_vec(&groups)
                            .map_err(|e| super::Error::Broker(e.to_string()))?;
                        self.put_in(store, BUCKET_AGENT_GROUPS_DERIVED, &pc, json)
                            .await
                            .map(|_| true)
                    }
                    None => self
                        .delete_in(store, BUCKET_AGENT_GROUPS_DERIVED, &pc)
                        .await
                        .map(|_| false),
                }
            })
            .buffer_unordered(WRITES)
            .collect()
            .await;
        for r in results {
            if r? {
                done.written += 1;
            } else {
                done.deleted += 1;
            }
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(yaml: &str) -> Membership {
        let def: GroupDef = serde_yaml::from_str(yaml).unwrap();
        (def.id.clone(), static_members(&def))
    }

    #[test]
    fn static_groups_invert_to_pcs_and_unknown_ones_stay_unresolved() {
        let defs = [
            def("id: clients\nmembers: [PC-1, PC-2]"),
            def("id: canary\nmembers: [PC-2]"),
            def("id: windows\nquery: SELECT pc_id FROM agents"),
        ];
        let (by_pc, unresolved) = derive(&defs);
        assert_eq!(by_pc.len(), 2);
        assert_eq!(
            by_pc["PC-2"].iter().collect::<Vec<_>>(),
            ["canary", "clients"]
        );
        assert_eq!(by_pc["PC-1"].iter().collect::<Vec<_>>(), ["clients"]);
        assert_eq!(unresolved.into_iter().collect::<Vec<_>>(), ["windows"]);
    }
}
