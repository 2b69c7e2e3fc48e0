//! The agents' lifecycle, on the housekeeping timer: rows of agents silent
//! for `server_settings.agent_prune_days` are pruned, and the heartbeat
//! watchdog reports each PC going quiet (`agent_offline`) and coming back
//! (`agent_online`) as observation events on `obs.<pc_id>`, so they land in
//! `obs_events` through the same projector as the agents' own and any
//! backend reading the stream sees them.
//!
//! The watchdog remembers open outages; after a restart it takes them back
//! from the stored events, so a PC offline across the restart gets one
//! `agent_online` when it returns, never a second `agent_offline`. A
//! transition is forgotten only once its event is stored by the broker:
//! one that failed to publish is tried again on the next pass.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kanade_shared::kv::{BUCKET_SERVER_SETTINGS, KEY_SERVER_SETTINGS};
use kanade_shared::wire::{ObsEvent, ServerSettings};
use kanade_storage::ObsScan;
use tokio::sync::watch;

use crate::control::Control;

/// A heartbeat older than this is an agent gone quiet.
pub const STALE_AFTER: chrono::Duration = chrono::Duration::minutes(2);
/// `source` of the events the watchdog emits.
pub const SOURCE: &str = "backend:heartbeat-watchdog";
pub const KIND_OFFLINE: &str = "agent_offline";
pub const KIND_ONLINE: &str = "agent_online";

/// Registers the lifecycle task, run every `interval`.
pub fn register(runner: &mut super::Runner, control: &Control, interval: Duration) {
    let control = control.clone();
    runner.spawn("agents lifecycle", move |stop| run(control, interval, stop));
}

async fn run(control: Control, interval: Duration, mut stop: watch::Receiver<bool>) {
    let mut watchdog = Watchdog::new(Utc::now());
    match restore(&control) {
        Ok(open) => watchdog.outages = open,
        Err(e) => tracing::warn!(error = %e, "open agent outages not restored"),
    }
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        prune(&control).await;
        sweep(&control, &mut watchdog).await;
    }
}

/// Removes agents whose last heartbeat is older than the setting (off
/// when unset).
async fn prune(control: &Control) {
    let settings = match control
        .get_json::<ServerSettings>(BUCKET_SERVER_SETTINGS, KEY_SERVER_SETTINGS)
        .await
    {
        Ok(s) => s.unwrap_or_default(),
        Err(e) => {
            tracing::debug!(error = %e, "server settings unreadable; no agent pruning this pass");
            return;
        }
    };
    let days = settings.effective_agent_prune_days();
    if days == 0 {
        return;
    }
    let cutoff = Utc::now() - chrono::Duration::days(i64::from(days));
    let store = control.store.clone();
    let pruned = tokio::task::spawn_blocking(move || -> kanade_storage::Result<usize> {
        let mut n = 0;
        for pc in store.agents_heartbeat_before(cutoff)? {
            n += usize::from(store.delete_agent(&pc)?);
        }
        Ok(n)
    })
    .await;
    match pruned {
        Ok(Ok(0)) => {}
        Ok(Ok(n)) => tracing::info!(
            pruned = n,
            days,
            "agents silent past agent_prune_days removed"
        ),
        Ok(Err(e)) => tracing::warn!(error = %e, "agent pruning failed"),
        Err(e) => tracing::warn!(error = %e, "agent pruning panicked"),
    }
}

/// The outages the stored events leave open: PCs whose newest watchdog
/// event is `agent_offline`, with the heartbeat it reported.
fn restore(control: &Control) -> kanade_storage::Result<BTreeMap<String, DateTime<Utc>>> {
    let mut newest: BTreeMap<String, (DateTime<Utc>, bool, DateTime<Utc>)> = BTreeMap::new();
    for kind in [KIND_OFFLINE, KIND_ONLINE] {
        control
            .store
            .scan_obs_events_desc(ObsScan::Kind(kind), None, None, |e| {
                if e.source == SOURCE {
                    let since = e.payload["last_heartbeat"]
                        .as_str()
                        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                        .map_or(e.at, |t| t.with_timezone(&Utc));
                    let slot = newest.entry(e.pc_id.clone()).or_insert((
                        e.at,
                        kind == KIND_OFFLINE,
                        since,
                    ));
                    if e.at > slot.0 {
                        *slot = (e.at, kind == KIND_OFFLINE, since);
                    }
                }
                true
            })?;
    }
    Ok(newest
        .into_iter()
        .filter(|(_, (_, offline, _))| *offline)
        .map(|(pc, (_, _, since))| (pc, since))
        .collect())
}

/// One pass: decide, publish, and keep what was stored.
async fn sweep(control: &Control, watchdog: &mut Watchdog) {
    let agents = match control.store.agents() {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e, "agents unreadable; watchdog pass skipped");
            return;
        }
    };
    let beats: Vec<(String, DateTime<Utc>)> = agents
        .into_iter()
        .filter_map(|a| Some((a.pc_id, a.last_heartbeat?)))
        .collect();
    for t in watchdog.decide(&beats, Utc::now()) {
        match publish(control, &t).await {
            Ok(()) => watchdog.apply(&t),
            Err(e) => {
                tracing::warn!(pc_id = %t.pc_id, kind = t.kind, error = %e, "watchdog event not stored; retried next pass")
            }
        }
    }
}

async fn publish(control: &Control, t: &Transition) -> Result<(), String> {
    let event = ObsEvent {
        pc_id: t.pc_id.clone(),
        at: t.at,
        kind: t.kind.to_string(),
        source: SOURCE.to_string(),
        event_record_id: Some(format!("{}:{}", t.kind, t.since.timestamp_millis())),
        payload: serde_json::json!({
            "last_heartbeat": t.since,
            "threshold_secs": STALE_AFTER.num_seconds(),
        }),
    };
    let body = serde_json::to_vec(&event).map_err(|e| e.to_string())?;
    let ack = control
        .js
        .publish(kanade_shared::subject::obs(&t.pc_id), body.into())
        .await
        .map_err(|e| e.to_string())?;
    tokio::time::timeout(Duration::from_secs(5), ack)
        .await
        .map_err(|_| "not acknowledged within 5 s".to_string())?
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// A PC going quiet or coming back.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub pc_id: String,
    pub kind: &'static str,
    /// When it happened: the last heartbeat before the silence, or the
    /// heartbeat that ended it.
    pub at: DateTime<Utc>,
    /// The last heartbeat before the outage (names the outage).
    pub since: DateTime<Utc>,
}

/// The open outages, and when watching began.
#[derive(Debug)]
pub struct Watchdog {
    pub outages: BTreeMap<String, DateTime<Utc>>,
    observed_since: DateTime<Utc>,
}

impl Watchdog {
    pub fn new(now: DateTime<Utc>) -> Self {
        Self {
            outages: BTreeMap::new(),
            observed_since: now - STALE_AFTER,
        }
    }

    /// What changed since the last pass. An agent silent since before
    /// watching began is not reported (we did not see it go), unless an
    /// outage of it is open.
    pub fn decide(&self, beats: &[(String, DateTime<Utc>)], now: DateTime<Utc>) -> Vec<Transition> {
        let mut out = Vec::new();
        for (pc, last) in beats {
            let fresh = *last > now - STALE_AFTER;
            let open = self.outages.get(pc);
            let online = |since: DateTime<Utc>| Transition {
                pc_id: pc.clone(),
                kind: KIND_ONLINE,
                at: *last,
                since,
            };
            let offline = Transition {
                pc_id: pc.clone(),
                kind: KIND_OFFLINE,
                at: *last,
                since: *last,
            };
            match (fresh, open) {
                (true, Some(since)) => out.push(online(*since)),
                (false, None) if *last >= self.observed_since => out.push(offline),
                // Back and gone again between two passes.
                (false, Some(since)) if last != since => {
                    out.push(online(*since));
                    out.push(offline);
                }
                _ => {}
            }
        }
        out
    }

    /// Records a transition whose event was stored.
    pub fn apply(&mut self, t: &Transition) {
        if t.kind == KIND_OFFLINE {
            self.outages.insert(t.pc_id.clone(), t.since);
        } else {
            self.outages.remove(&t.pc_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_then_back_then_gone_again_is_reported_once_each() {
        let t0 = Utc::now();
        let mut w = Watchdog::new(t0);
        let m = chrono::Duration::minutes;
        // Beating: nothing.
        let beats = [("PC-1".to_string(), t0)];
        assert!(w.decide(&beats, t0 + m(1)).is_empty());
        // Quiet: offline once, at its last heartbeat.
        let quiet = w.decide(&beats, t0 + m(5));
        assert_eq!(quiet.len(), 1);
        assert_eq!((quiet[0].kind, quiet[0].at), (KIND_OFFLINE, t0));
        w.apply(&quiet[0]);
        assert!(w.decide(&beats, t0 + m(6)).is_empty(), "reported once");
        // Back: online, naming the outage.
        let back = [("PC-1".to_string(), t0 + m(7))];
        let online = w.decide(&back, t0 + m(7));
        assert_eq!(online.len(), 1);
        assert_eq!((online[0].kind, online[0].since), (KIND_ONLINE, t0));
        w.apply(&online[0]);
        // Back and gone again between passes: both.
        let mut w2 = Watchdog::new(t0);
        w2.apply(&quiet[0]);
        let both = w2.decide(&back, t0 + m(20));
        assert_eq!(
            both.iter().map(|t| t.kind).collect::<Vec<_>>(),
            [KIND_ONLINE, KIND_OFFLINE]
        );
        // A failed publish (not applied) is decided again.
        assert_eq!(w2.decide(&back, t0 + m(21)).len(), 2);
    }

    #[test]
    fn an_agent_silent_before_watching_began_is_not_reported() {
        let t0 = Utc::now();
        let w = Watchdog::new(t0);
        let old = [("PC-OLD".to_string(), t0 - chrono::Duration::days(3))];
        assert!(w.decide(&old, t0 + chrono::Duration::minutes(5)).is_empty());
    }
}
