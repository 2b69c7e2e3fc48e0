//! Inventory upkeep: the watch that mirrors the `jobs` bucket, and the
//! pass that builds every explode dataset of every inventory manifest
//! (at start, when a spec changes) and folds changed PCs into new files.

use std::sync::Arc;
use std::time::Duration;

use kanade_queries::inventory::RefreshPolicy;

use super::Runner;
use crate::api::state::Inventory;
use crate::control::manifests::layouts;

/// How often the datasets are looked at.
const REFRESH_EVERY: Duration = Duration::from_secs(5);

pub fn register(runner: &mut Runner, inventory: &Inventory) {
    let manifests = Arc::clone(&inventory.manifests);
    runner.spawn("jobs bucket watch", move |stop| manifests.watch(stop));
    let (manifests, explode) = (
        Arc::clone(&inventory.manifests),
        Arc::clone(&inventory.explode),
    );
    runner.every("inventory datasets", REFRESH_EVERY, true, move || {
        for m in manifests.with_explode() {
            for layout in layouts(&m) {
                match layout {
                    Ok(l) => {
                        explode.refresh(&l, RefreshPolicy::default())?;
                    }
                    Err(e) => {
                        tracing::debug!(manifest_id = %m.id, error = %e, "explode spec skipped")
                    }
                }
            }
        }
        Ok(())
    });
}
