//! The writer of `agent_groups_derived`: one pass at start, then on every
//! change of `group_defs`, at least every minute, and as often as the
//! most eager dynamic group's `refresh` asks, so a definition edited
//! anywhere (our API, upstream's, the KV directly) reaches the agents, a
//! dynamic group follows the fleet, and a pass that failed is retried.
//! Dynamic groups run their SQL through [`GroupMembers`], which keeps each
//! answer for the group's `refresh`; a query that fails leaves the
//! group's PCs as they were.

use std::time::Duration;

use async_nats::jetstream::kv::Watch;
use futures::StreamExt;
use kanade_shared::kv::BUCKET_GROUP_DEFS;
use tokio::sync::watch;

use crate::control::groups::Membership;
use crate::control::Control;
use crate::sql::{GroupMembers, SqlRunner};

/// The longest a change can wait for a pass.
const INTERVAL: Duration = Duration::from_secs(60);
/// The wait after a pass that failed (the broker away, a bucket not yet
/// created).
const RETRY: Duration = Duration::from_secs(2);

/// The shortest wait between passes, whatever a group's `refresh` says.
const FLOOR: Duration = Duration::from_secs(1);

/// Registers the derived-membership writer.
pub fn register(
    runner: &mut super::Runner,
    control: &Control,
    sql: &SqlRunner,
    members: &GroupMembers,
) {
    let (control, sql, members) = (control.clone(), sql.clone(), members.clone());
    runner.spawn("declared groups", move |stop| {
        run(control, sql, members, stop)
    });
}

/// One pass: every declared group resolved, the derived bucket brought in
/// line. Answers how long until the next pass is due.
async fn pass(
    control: &Control,
    sql: &SqlRunner,
    members: &GroupMembers,
) -> crate::control::Result<(crate::control::groups::Reconciled, Duration)> {
    let defs = control.group_defs().await?;
    members.retain(&defs.iter().map(|d| d.id.as_str()).collect());
    let mut groups: Vec<Membership> = Vec::with_capacity(defs.len());
    let mut next = INTERVAL;
    for def in &defs {
        if def.dynamic_query().is_some() {
            next = next.min(def.refresh_interval().max(FLOOR));
        }
        groups.push((def.id.clone(), members.resolve(sql, def).await.ok()));
    }
    Ok((control.reconcile_derived_groups(&groups).await?, next))
}

async fn run(
    control: Control,
    sql: SqlRunner,
    members: GroupMembers,
    mut stop: watch::Receiver<bool>,
) {
    let mut changes: Option<Watch> = None;
    loop {
        // Watch first, so a change made during the pass wakes the next.
        if changes.is_none() {
            changes = match control.kv(BUCKET_GROUP_DEFS).await {
                Ok(kv) => kv.watch_all().await.ok(),
                Err(_) => None,
            };
        }
        let wait = match pass(&control, &sql, &members).await {
            Ok((r, next)) => {
                if r.written + r.deleted > 0 {
                    tracing::info!(
                        written = r.written,
                        deleted = r.deleted,
                        "derived group membership updated"
                    );
                }
                next
            }
            Err(e) => {
                tracing::warn!(error = %e, "derived group membership not reconciled; retrying");
                RETRY
            }
        };
        let next_change = async {
            match changes.as_mut() {
                Some(w) => w.next().await.is_some(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            alive = next_change => {
                if !alive {
                    changes = None;
                }
            }
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
