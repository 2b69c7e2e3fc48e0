//! Rollout waves still waiting for their delay, published when due. They
//! are kept in redb by the exec pipeline, so a backend restarted before a
//! wave's time still fires it (the reference keeps them in memory and
//! loses them).

use std::time::Duration;

use chrono::Utc;
use tokio::sync::watch;

use crate::control::Control;

/// How often due waves are looked for.
const CHECK: Duration = Duration::from_secs(1);

/// Registers the wave publisher.
pub fn register(runner: &mut super::Runner, control: &Control) {
    let control = control.clone();
    runner.spawn("rollout waves", move |stop| run(control, stop));
}

async fn run(control: Control, mut stop: watch::Receiver<bool>) {
    match control.store.pending_waves() {
        Ok(w) if !w.is_empty() => tracing::info!(
            waves = w.len(),
            "rollout waves waiting from before start-up"
        ),
        _ => {}
    }
    let mut tick = tokio::time::interval(CHECK);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        // Publishing waits on the broker; stopping never waits on it.
        tokio::select! {
            _ = publish_due(&control) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Publishes every wave due now; one that fails stays for the next pass.
async fn publish_due(control: &Control) {
    let due = match control.store.due_waves(Utc::now()) {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "rollout waves unreadable");
            return;
        }
    };
    for wave in due {
        if let Err(e) = control
            .publish(wave.subject.clone(), wave.payload.clone())
            .await
        {
            tracing::warn!(exec_id = %wave.exec_id, subject = %wave.subject, error = %e, "rollout wave not published; retrying");
            continue;
        }
        control.flush().await;
        tracing::info!(exec_id = %wave.exec_id, wave = wave.wave, subject = %wave.subject, "rollout wave published");
        if let Err(e) = control.store.remove_wave(&wave) {
            tracing::error!(exec_id = %wave.exec_id, error = %e, "published rollout wave not removed");
        }
    }
}
