//! Every background task of the backend (not the kanade jobs of
//! `api::jobs`) runs under one [`Runner`]: the
//! perf maintenance (persist, compaction, retention), housekeeping of the
//! relational tables, the scheduler, the rollout waves, the writer of the
//! declared groups' membership, and the mirror of
//! the jobs bucket with the inventory datasets built from it. A job is either
//! a periodic blocking pass (run off the async workers, a failure logged
//! and the next pass still run) or a long-lived task that watches the stop
//! signal itself. [`Runner::stop`] signals every job and waits for all of
//! them, so nothing is cut off mid-write at shutdown.

pub mod agents;
pub mod groups;
pub mod housekeeping;
pub mod inventory;
pub mod maintenance;
pub mod scheduler;
pub mod waves;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Owns the background jobs and their common stop signal.
#[derive(Debug)]
pub struct Runner {
    stop_tx: watch::Sender<bool>,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

impl Default for Runner {
    fn default() -> Self {
        Self::new()
    }
}

impl Runner {
    pub fn new() -> Self {
        let (stop_tx, _) = watch::channel(false);
        Self {
            stop_tx,
            tasks: Vec::new(),
        }
    }

    /// A receiver that turns `true` when [`Runner::stop`] is called.
    pub fn stop_signal(&self) -> watch::Receiver<bool> {
        self.stop_tx.subscribe()
    }

    /// Runs `pass` on the blocking pool every `interval` (the first pass
    /// after one interval, or at once when `at_start`), until stopped.
    pub fn every(
        &mut self,
        name: &'static str,
        interval: Duration,
        at_start: bool,
        pass: impl Fn() -> anyhow::Result<()> + Send + Sync + 'static,
    ) {
        let pass = Arc::new(pass);
        let mut stop = self.stop_signal();
        let task = tokio::spawn(async move {
            let start = if at_start {
                tokio::time::Instant::now()
            } else {
                tokio::time::Instant::now() + interval
            };
            let mut tick = tokio::time::interval_at(start, interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                let pass = Arc::clone(&pass);
                match tokio::task::spawn_blocking(move || pass()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!(
                        job = name,
                        error = format!("{e:#}"),
                        "background pass failed"
                    ),
                    Err(e) => tracing::error!(job = name, error = %e, "background pass panicked"),
                }
            }
        });
        self.tasks.push((name, task));
    }

    /// Runs a long-lived job; `job` gets the stop signal and must return
    /// soon after it turns `true`.
    pub fn spawn<F, Fut>(&mut self, name: &'static str, job: F)
    where
        F: FnOnce(watch::Receiver<bool>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let task = tokio::spawn(job(self.stop_signal()));
        self.tasks.push((name, task));
    }

    /// As [`Runner::spawn`], restarted when it panics: the panic is logged
    /// and counted, and the job starts again after a pause that doubles
    /// with each consecutive panic (1 s up to 60 s), until stopped.
    pub fn supervise<F, Fut>(&mut self, name: &'static str, job: F)
    where
        F: Fn(watch::Receiver<bool>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut stop = self.stop_signal();
        let task = tokio::spawn(async move {
            let mut pause = Duration::from_secs(1);
            loop {
                match tokio::spawn(job(stop.clone())).await {
                    Ok(()) => return,
                    Err(e) if e.is_panic() => {
                        crate::metrics::get().job_panics.inc();
                        tracing::error!(job = name, error = %e, restart_in = ?pause, "background job panicked; restarting it");
                    }
                    Err(_) => return,
                }
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                pause = (pause * 2).min(Duration::from_secs(60));
            }
        });
        self.tasks.push((name, task));
    }

    /// Signals every job to stop and waits for each to finish.
    pub async fn stop(self) {
        let _ = self.stop_tx.send(true);
        for (name, task) in self.tasks {
            if let Err(e) = task.await {
                tracing::error!(job = name, error = %e, "background job panicked");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(start_paused = true)]
    async fn a_supervised_job_that_panics_is_started_again() {
        let mut runner = Runner::new();
        let starts = Arc::new(AtomicUsize::new(0));
        let s = Arc::clone(&starts);
        runner.supervise("flaky", move |mut stop| {
            let n = s.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 2 {
                    panic!("pass {n} failed");
                }
                let _ = stop.wait_for(|s| *s).await;
            }
        });
        // Two panics: restarted after 1 s, then after 2 s.
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            tokio::task::yield_now().await;
        }
        assert_eq!(starts.load(Ordering::SeqCst), 3);
        runner.stop().await;
        assert_eq!(
            starts.load(Ordering::SeqCst),
            3,
            "not restarted after a stop"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn passes_run_on_their_interval_and_stop_waits_for_them() {
        let mut runner = Runner::new();
        let count = Arc::new(AtomicUsize::new(0));
        let c = Arc::clone(&count);
        runner.every("count", Duration::from_secs(10), true, move || {
            c.fetch_add(1, Ordering::SeqCst);
            Ok(())
        });
        let ended = Arc::new(AtomicUsize::new(0));
        let e = Arc::clone(&ended);
        runner.spawn("watcher", move |mut stop| async move {
            let _ = stop.wait_for(|s| *s).await;
            e.fetch_add(1, Ordering::SeqCst);
        });
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(10)).await;
            tokio::task::yield_now().await;
        }
        runner.stop().await;
        let passes = count.load(Ordering::SeqCst);
        assert!((5..=6).contains(&passes), "{passes} passes in 50 s at 10 s");
        assert_eq!(ended.load(Ordering::SeqCst), 1);
    }
}
