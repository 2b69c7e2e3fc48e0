//! `deploy_plans`: kanade 0.101's deployment plan records, keyed by plan
//! id. The store keeps what the API validated (the canonical content, the
//! job, the lifecycle columns) and owns the two rules that must hold
//! across writers: a plan id is taken once, and every state change is
//! decided and written in one transaction (redb serialises writers), so
//! two approvals or an approval racing a revoke cannot both land.

use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::codec::{decode, encode};
use super::RelationalStore;
use crate::{Error, Result};

const PLANS: TableDefinition<&str, &[u8]> = TableDefinition::new("deploy_plans");
const NAME: &str = "deploy_plans";

/// One plan as stored. Times are Unix seconds, as upstream keeps them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct DeployPlanRecord {
    pub plan_id: String,
    pub plan_digest: String,
    /// The plan content as canonical JSON (the digest's input).
    pub content: String,
    /// The typed job the plan binds, as JSON.
    pub job_manifest: String,
    /// `pending`, `approved` or `revoked`.
    pub state: String,
    pub revision: i64,
    pub created_by: String,
    pub created_at: i64,
    pub approved_by: Option<String>,
    pub approved_at: Option<i64>,
    pub revoked_by: Option<String>,
    pub revoked_at: Option<i64>,
    pub revoke_reason: Option<String>,
    /// Targets consumed under the single-use policy (nothing consumes a
    /// plan yet; an imported database may carry them).
    pub applied_targets: Vec<String>,
}

pub(super) fn ensure_tables(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(PLANS).map_err(Error::redb_op)?;
    Ok(())
}

impl RelationalStore {
    /// One plan.
    pub fn deploy_plan(&self, plan_id: &str) -> Result<Option<DeployPlanRecord>> {
        let txn = self.db.begin_read().map_err(Error::redb_op)?;
        let t = txn.open_table(PLANS).map_err(Error::redb_op)?;
        t.get(plan_id)
            .map_err(Error::redb_op)?
            .map(|v| decode(NAME, v.value()))
            .transpose()
    }

    /// Every plan, newest first (ties by plan id).
    pub fn deploy_plans(&self) -> Result<Vec<DeployPlanRecord>> {
        let txn = self.db.begin_read().map_err(Error::redb_op)?;
        let t = txn.open_table(PLANS).map_err(Error::redb_op)?;
        let mut out: Vec<DeployPlanRecord> = Vec::new();
        for e in t.iter().map_err(Error::redb_op)? {
            let (_, v) = e.map_err(Error::redb_op)?;
            out.push(decode(NAME, v.value())?);
        }
        out.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| a.plan_id.cmp(&b.plan_id))
        });
        Ok(out)
    }

    /// Adds a plan; `false` (and nothing written) when the id is taken.
    pub fn insert_deploy_plan(&self, plan: &DeployPlanRecord) -> Result<bool> {
        let txn = self.db.begin_write().map_err(Error::redb_op)?;
        let inserted = {
            let mut t = txn.open_table(PLANS).map_err(Error::redb_op)?;
            if t.get(plan.plan_id.as_str())
                .map_err(Error::redb_op)?
                .is_some()
            {
                false
            } else {
                t.insert(plan.plan_id.as_str(), encode(NAME, plan)?.as_slice())
                    .map_err(Error::redb_op)?;
                true
            }
        };
        txn.commit().map_err(Error::redb_op)?;
        Ok(inserted)
    }

    /// Decides a change of one plan in a single write transaction:
    /// `change` sees the stored record and edits it in place, answering
    /// whether to write it. A written change moves `revision` up by one.
    /// Returns the record as it stands afterwards and whether it was
    /// written; `None` when there is no such plan.
    pub fn change_deploy_plan(
        &self,
        plan_id: &str,
        change: impl FnOnce(&mut DeployPlanRecord) -> bool,
    ) -> Result<Option<(DeployPlanRecord, bool)>> {
        let txn = self.db.begin_write().map_err(Error::redb_op)?;
        let out = {
            let mut t = txn.open_table(PLANS).map_err(Error::redb_op)?;
            let stored: Option<DeployPlanRecord> = t
                .get(plan_id)
                .map_err(Error::redb_op)?
                .map(|v| decode(NAME, v.value()))
                .transpose()?;
            match stored {
                None => None,
                Some(mut plan) => {
                    let before = plan.clone();
                    // A revision at i64::MAX cannot move: the change is refused.
                    let next = before.revision.checked_add(1);
                    if let (true, Some(next)) = (change(&mut plan), next) {
                        plan.revision = next;
                        t.insert(plan_id, encode(NAME, &plan)?.as_slice())
                            .map_err(Error::redb_op)?;
                        Some((plan, true))
                    } else {
                        Some((before, false))
                    }
                }
            }
        };
        txn.commit().map_err(Error::redb_op)?;
        Ok(out)
    }

    /// Writes plans as an import found them (replacing same ids).
    pub fn import_deploy_plans(&self, plans: &[DeployPlanRecord]) -> Result<usize> {
        let txn = self.db.begin_write().map_err(Error::redb_op)?;
        {
            let mut t = txn.open_table(PLANS).map_err(Error::redb_op)?;
            for p in plans {
                t.insert(p.plan_id.as_str(), encode(NAME, p)?.as_slice())
                    .map_err(Error::redb_op)?;
            }
        }
        txn.commit().map_err(Error::redb_op)?;
        Ok(plans.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(id: &str, at: i64) -> DeployPlanRecord {
        DeployPlanRecord {
            plan_id: id.into(),
            plan_digest: "d".into(),
            state: "pending".into(),
            created_at: at,
            ..Default::default()
        }
    }

    #[test]
    fn ids_are_taken_once_and_changes_bump_the_revision() {
        let dir = tempfile::tempdir().unwrap();
        let store = RelationalStore::open(dir.path()).unwrap();
        assert!(store.insert_deploy_plan(&plan("a", 1)).unwrap());
        assert!(store.insert_deploy_plan(&plan("b", 2)).unwrap());
        let mut again = plan("a", 9);
        again.plan_digest = "other".into();
        assert!(!store.insert_deploy_plan(&again).unwrap());
        assert_eq!(store.deploy_plan("a").unwrap().unwrap().plan_digest, "d");
        let ids: Vec<String> = store
            .deploy_plans()
            .unwrap()
            .into_iter()
            .map(|p| p.plan_id)
            .collect();
        assert_eq!(ids, ["b", "a"], "newest first");

        let (p, written) = store
            .change_deploy_plan("a", |p| {
                p.state = "approved".into();
                true
            })
            .unwrap()
            .unwrap();
        assert!(written);
        assert_eq!((p.state.as_str(), p.revision), ("approved", 1));
        let (p, written) = store
            .change_deploy_plan("a", |p| {
                p.state = "lost".into();
                false
            })
            .unwrap()
            .unwrap();
        assert!(!written);
        assert_eq!(
            (p.state.as_str(), p.revision),
            ("approved", 1),
            "a refused change writes nothing"
        );
        assert_eq!(store.deploy_plan("a").unwrap().unwrap().state, "approved");
        assert!(store.change_deploy_plan("zz", |_| true).unwrap().is_none());
    }
}
