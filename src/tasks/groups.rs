//! The writer of `agent_groups_derived`: one pass at start, then on every
//! change of `group_defs` and at least every minute, so a definition
//! edited anywhere (our API, upstream's, the KV directly) reaches the
//! agents, and a pass that failed is retried.

use std::time::Duration;

use async_nats::jetstream::kv::Watch;
use futures::StreamExt;
use kanade_shared::kv::BUCKET_GROUP_DEFS;
use tokio::sync::watch;

use crate::control::Control;

/// The longest a change can wait for a pass.
const INTERVAL: Duration = Duration::from_secs(60);
/// The wait after a pass that failed (the broker away, a bucket not yet
/// created).
const RETRY: Duration = Duration::from_secs(2);

/// Registers the derived-membership writer.
pub fn register(runner: &mut super::Runner, control: &Control) {
    let control = control.clone();
    runner.spawn("declared groups", move |stop| run(control, stop));
}

async fn run(control: Control, mut stop: watch::Receiver<bool>) {
    let mut changes: Option<Watch> = None;
    loop {
        // Watch first, so a change made during the pass wakes the next.
        if changes.is_none() {
            changes = match control.kv(BUCKET_GROUP_DEFS).await {
                Ok(kv) => kv.watch_all().await.ok(),
                Err(_) => None,
            };
        }
        let wait = match control.reconcile_derived_groups().await {
            Ok(r) => {
                if r.written + r.deleted > 0 {
                    tracing::info!(
                        written = r.written,
                        deleted = r.deleted,
                        "derived group membership updated"
                    );
                }
                INTERVAL
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
