//! The cron scheduler: fires the schedules of the `schedules` KV bucket
//! at the fleet through the exec pipeline.
//!
//! Every backend keeps the schedules in step with the bucket (a watch
//! armed before each full listing, so nothing is missed across a reopen),
//! but only the holder of the lease in [`STATE_BUCKET`] fires: two of our
//! backends on one broker fire each tick once, and a crashed leader's
//! lease expires so another takes over. `[scheduler] enabled = false`
//! keeps a backend out of the election (e.g. beside a reference backend
//! during a migration).
//!
//! Calendar schedules keep a cursor (the last tick handled) in the same
//! bucket, claimed by compare-and-set before the fire: a tick fires at
//! most once whoever leads, the next tick is computed from the cursor with
//! the time zone's rules of that day (`Local` follows DST), and a tick
//! missed while no backend ran fires once at start-up if it is still
//! inside the schedule's `starting_deadline`; older ones are logged as
//! skipped. Reconcile shapes (`per_pc`, `per_target`) are polled every
//! `reconcile_interval_secs` against completions from the per-job index.

mod lease;
pub(crate) mod policy;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::kv;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use kanade_shared::kv::{BUCKET_FLEET_CONFIG, BUCKET_JOBS, BUCKET_SCHEDULES, KEY_FREEZE};
use kanade_shared::manifest::{ExecMode, Freeze, Manifest, RunsOn, Schedule};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::control::exec::Initiator;
use crate::control::Control;

pub use lease::Lease;

/// Our bucket: the leader lease and the calendar cursors.
pub const STATE_BUCKET: &str = "kanade_scheduler";

/// `[scheduler]` of `backend.toml`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerConfig {
    /// Whether this backend takes part in the leader election and fires
    /// schedules. Default true.
    pub enabled: bool,
    /// Seconds between reconcile passes of `per_pc` / `per_target`
    /// schedules. Default 60 (the reference's cadence).
    pub reconcile_interval_secs: u64,
    /// Seconds a leader lease lasts unless renewed. Default 15.
    pub lease_ttl_secs: u64,
    /// Seconds late a calendar tick without `starting_deadline` may
    /// still fire (a leader change-over, a slow pass). Default 60.
    pub misfire_grace_secs: u64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            reconcile_interval_secs: 60,
            lease_ttl_secs: 15,
            misfire_grace_secs: 60,
        }
    }
}

impl SchedulerConfig {
    /// Rejects values the scheduler cannot run with.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.reconcile_interval_secs >= 1,
            "scheduler.reconcile_interval_secs must be at least 1"
        );
        anyhow::ensure!(
            self.lease_ttl_secs >= 2,
            "scheduler.lease_ttl_secs must be at least 2"
        );
        Ok(())
    }

    /// Tiny intervals for tests.
    pub fn for_tests() -> Self {
        Self {
            enabled: true,
            reconcile_interval_secs: 1,
            lease_ttl_secs: 3,
            misfire_grace_secs: 60,
        }
    }
}

/// How often the scheduler looks at the clock.
const PASS: Duration = Duration::from_secs(1);

/// The schedules as the bucket holds them, by id.
type Schedules = Arc<RwLock<BTreeMap<String, Schedule>>>;

/// Registers the schedule watch and (when enabled) the firing loop.
pub fn register(runner: &mut super::Runner, control: &Control, config: &SchedulerConfig) {
    if !config.enabled {
        tracing::info!(
            "scheduler disabled by [scheduler] enabled = false: this backend never fires schedules"
        );
        return;
    }
    let schedules: Schedules = Arc::default();
    let (c, s) = (control.clone(), Arc::clone(&schedules));
    runner.supervise("schedule watch", move |stop| {
        watch_schedules(c.clone(), Arc::clone(&s), stop)
    });
    let (c, cfg) = (control.clone(), config.clone());
    // Supervised: a panic in a pass (whatever a schedule holds) is logged
    // and the scheduler starts again, instead of no schedule firing again.
    runner.supervise("scheduler", move |stop| {
        run(c.clone(), Arc::clone(&schedules), cfg.clone(), stop)
    });
}

/// Keeps `schedules` equal to the bucket: arm a watch, list everything,
/// then apply the watch's changes; reopen on any end or error.
async fn watch_schedules(control: Control, schedules: Schedules, mut stop: watch::Receiver<bool>) {
    loop {
        // Every broker call may wait on a broker that is away: stopping
        // must never wait on it.
        let mut inner = stop.clone();
        tokio::select! {
            r = follow_bucket(&control, &schedules, &mut inner) => {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "schedules watch interrupted; reopening");
                }
            }
            _ = stop.wait_for(|s| *s) => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(PASS) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

async fn follow_bucket(
    control: &Control,
    schedules: &Schedules,
    stop: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let store = control.kv(BUCKET_SCHEDULES).await?;
    let mut changes = store.watch_all().await?;
    let listed = control.list_json::<Schedule>(BUCKET_SCHEDULES).await?;
    let n = listed.len();
    *schedules.write().unwrap_or_else(|p| p.into_inner()) = listed.into_iter().collect();
    tracing::info!(schedules = n, "schedules loaded");
    loop {
        let change = tokio::select! {
            c = changes.next() => c,
            _ = stop.wait_for(|s| *s) => return Ok(()),
        };
        let Some(change) = change else {
            anyhow::bail!("watch ended");
        };
        let entry = change?;
        if apply_change(schedules, &entry) {
            // A schedule created again under this id starts afresh
            // instead of catching up ticks of its predecessor.
            let _ = control.delete(STATE_BUCKET, &cursor_key(&entry.key)).await;
        }
    }
}

/// Applies one watched change; `true` when it removed a schedule.
fn apply_change(schedules: &Schedules, entry: &kv::Entry) -> bool {
    let mut map = schedules.write().unwrap_or_else(|p| p.into_inner());
    match entry.operation {
        kv::Operation::Put => match serde_json::from_slice::<Schedule>(&entry.value) {
            Ok(s) => {
                tracing::info!(schedule = %entry.key, when = %s.when, enabled = s.enabled, "schedule registered");
                map.insert(entry.key.clone(), s);
                false
            }
            Err(e) => {
                // A schedule we cannot read must not keep firing as it
                // was before the edit.
                tracing::warn!(schedule = %entry.key, error = %e, "schedule does not decode; unregistered");
                map.remove(&entry.key);
                false
            }
        },
        kv::Operation::Delete | kv::Operation::Purge => {
            tracing::info!(schedule = %entry.key, "schedule unregistered");
            map.remove(&entry.key);
            true
        }
    }
}

/// The firing loop: hold the lease, then each pass check the calendar
/// schedules and, on the reconcile interval, the reconcile shapes.
async fn run(
    control: Control,
    schedules: Schedules,
    config: SchedulerConfig,
    mut stop: watch::Receiver<bool>,
) {
    let mut lease = Lease::new(control.clone(), Duration::from_secs(config.lease_ttl_secs));
    let mut cursors = HashMap::new();
    let mut last_reconcile: Option<tokio::time::Instant> = None;
    let mut dispatch_bucket_ready = false;
    let mut tick = tokio::time::interval(PASS);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        if !dispatch_bucket_ready {
            let ensured = tokio::time::timeout(
                Duration::from_secs(5),
                policy::ensure_dispatch_bucket(&control),
            )
            .await
            .unwrap_or_else(|_| Err("the broker did not answer".into()));
            match ensured {
                Ok(()) => dispatch_bucket_ready = true,
                Err(e) => tracing::debug!(error = %e, "dispatch bucket not ready yet"),
            }
        }
        let pass = one_pass(
            &control,
            &schedules,
            &config,
            &mut lease,
            &mut cursors,
            &mut last_reconcile,
        );
        // A pass waits on the broker; stopping never waits on a pass.
        tokio::select! {
            _ = pass => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(3), lease.release()).await;
}

/// One scheduler pass: hold the lease, then fire what is due.
async fn one_pass(
    control: &Control,
    schedules: &Schedules,
    config: &SchedulerConfig,
    lease: &mut Lease,
    cursors: &mut HashMap<String, Cursor>,
    last_reconcile: &mut Option<tokio::time::Instant>,
) {
    let reconcile_every = Duration::from_secs(config.reconcile_interval_secs);
    {
        if !lease.hold().await {
            cursors.clear();
            *last_reconcile = None;
            return;
        }
        let now = Utc::now();
        let (current, disabled): (Vec<Schedule>, Vec<Schedule>) = schedules
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|s| s.runs_on == RunsOn::Backend)
            .cloned()
            .partition(|s| s.enabled);
        let reconcile_due = last_reconcile.is_none_or(|t| t.elapsed() >= reconcile_every);
        if reconcile_due {
            *last_reconcile = Some(tokio::time::Instant::now());
        }
        let pass = Pass {
            control,
            config,
            now,
            freeze: read_freeze(control).await,
            lease: tokio::sync::Mutex::new(lease),
        };
        for s in &disabled {
            if s.lowered().mode == ExecMode::EveryTick {
                pass.pause(s, cursors).await;
            }
        }
        for s in &current {
            match s.lowered().mode {
                ExecMode::EveryTick => pass.calendar(s, cursors).await,
                ExecMode::OncePerPc | ExecMode::OncePerPcVersion | ExecMode::OncePerTarget
                    if reconcile_due =>
                {
                    pass.reconcile(s).await
                }
                _ => {}
            }
        }
    }
}

/// The freeze in force (a stored value that does not decode freezes:
/// fail closed, as the reference does).
async fn read_freeze(control: &Control) -> Option<Freeze> {
    match control
        .get_json::<Freeze>(BUCKET_FLEET_CONFIG, KEY_FREEZE)
        .await
    {
        Ok(f) => f,
        Err(crate::control::Error::Unavailable(_)) => None,
        Err(e) => {
            tracing::warn!(error = %e, "freeze unreadable: treating the fleet as frozen");
            Some(Freeze::default())
        }
    }
}

/// One scheduler pass, as leader.
struct Pass<'a> {
    control: &'a Control,
    config: &'a SchedulerConfig,
    now: DateTime<Utc>,
    freeze: Option<Freeze>,
    /// Checked again before every fire: a slow pass must not outlive it.
    lease: tokio::sync::Mutex<&'a mut Lease>,
}

/// Where a calendar schedule stands: the last tick handled, for the
/// `when` and `tz` it was computed for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Cursor {
    at: DateTime<Utc>,
    when: String,
    tz: String,
    /// Set when a leader saw the schedule disabled: on re-enable the
    /// ticks of the disabled period are skipped, not fired.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    paused: bool,
    #[serde(skip)]
    revision: u64,
}

impl Cursor {
    /// Computed for the schedule as it is now (an edited `when` / `tz`
    /// makes it stale: its ticks are not the new expression's).
    fn matches(&self, s: &Schedule) -> bool {
        self.when == s.when.to_string() && self.tz == s.tz.as_str()
    }
}

fn cursor_key(schedule_id: &str) -> String {
    format!("tick.{}.{schedule_id}", schedule_id.len())
}

impl Pass<'_> {
    /// Whether a fire now passes the freeze, `active` and `constraints`.
    fn gates_open(&self, s: &Schedule) -> bool {
        if let Some(f) = self.freeze.as_ref().filter(|f| f.is_active(self.now)) {
            tracing::info!(schedule = %s.id, reason = f.reason.as_deref().unwrap_or(""), "fleet change-freeze active: tick skipped");
            return false;
        }
        if !s.active.contains(self.now, s.tz) {
            tracing::debug!(schedule = %s.id, "outside its active window: tick skipped");
            return false;
        }
        if !s.constraints.allows(self.now, s.tz) {
            tracing::info!(schedule = %s.id, "outside constraints (window / skip_dates): tick skipped");
            return false;
        }
        true
    }

    /// Fires the latest due tick of a calendar schedule once.
    async fn calendar(&self, s: &Schedule, cursors: &mut HashMap<String, Cursor>) {
        let cached = cursors
            .get(&s.id)
            .filter(|c| c.matches(s) && !c.paused)
            .cloned();
        let cursor = match cached {
            Some(c) => c,
            None => match self.load_cursor(s).await {
                Some(c) => c,
                None => return,
            },
        };
        let (due, missed) = policy::due_ticks(s, cursor.at, self.now);
        let Some(tick) = due else {
            cursors.insert(s.id.clone(), cursor);
            return;
        };
        for m in &missed {
            tracing::warn!(schedule = %s.id, tick = %m, "calendar tick missed (no backend led the scheduler then): skipped");
        }
        let claimed = Cursor {
            at: tick,
            ..cursor.clone()
        };
        let Some(revision) = self.claim(s, &claimed, cursor.revision).await else {
            cursors.remove(&s.id);
            return;
        };
        cursors.insert(
            s.id.clone(),
            Cursor {
                revision,
                ..claimed
            },
        );
        let late = self.now - tick;
        let allowed = policy::allowed_lateness(s, self.config.misfire_grace_secs);
        if late > allowed {
            tracing::warn!(schedule = %s.id, %tick, late_secs = late.num_seconds(), "calendar tick missed beyond its starting_deadline: skipped");
            return;
        }
        if late > chrono::Duration::seconds(5) {
            tracing::info!(schedule = %s.id, %tick, late_secs = late.num_seconds(), "firing a calendar tick missed while down (inside its starting_deadline)");
        }
        if self.gates_open(s) {
            self.fire(s, s.plan.clone(), tick, "calendar tick").await;
        }
    }

    /// The stored cursor, or a new one at `now` (a schedule first seen,
    /// or whose `when` / `tz` changed, never fires ticks of the past).
    async fn load_cursor(&self, s: &Schedule) -> Option<Cursor> {
        let store = lease::bucket(self.control).await.ok()?;
        let key = cursor_key(&s.id);
        let entry = match self.control.entry(&store, &key).await {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(schedule = %s.id, error = %e, "calendar cursor unreadable");
                return None;
            }
        };
        let fresh = Cursor {
            at: self.now,
            when: s.when.to_string(),
            tz: s.tz.as_str().to_string(),
            paused: false,
            revision: 0,
        };
        if let Some(e) = entry {
            match serde_json::from_slice::<Cursor>(&e.value) {
                Ok(c) if c.matches(s) && !c.paused => {
                    return Some(Cursor {
                        revision: e.revision,
                        ..c
                    });
                }
                Ok(c) if c.paused => {
                    tracing::info!(schedule = %s.id, disabled_since = %c.at, "re-enabled: the ticks of the disabled period are skipped");
                }
                Ok(_) => {
                    tracing::info!(schedule = %s.id, "when / tz changed: counting ticks of the new expression from now");
                }
                Err(_) => {}
            }
            let revision = self.claim(s, &fresh, e.revision).await?;
            return Some(Cursor { revision, ..fresh });
        }
        let revision = self.claim(s, &fresh, 0).await?;
        Some(Cursor { revision, ..fresh })
    }

    /// Writes `cursor` if the stored one is still at `revision` (0: must
    /// not exist); the new revision, or `None` when another wrote first.
    async fn claim(&self, s: &Schedule, cursor: &Cursor, revision: u64) -> Option<u64> {
        let store = lease::bucket(self.control).await.ok()?;
        let key = cursor_key(&s.id);
        let value: bytes::Bytes = serde_json::to_vec(cursor).ok()?.into();
        let written = if revision == 0 {
            store.create(&key, value).await.map_err(|e| e.to_string())
        } else {
            store
                .update(&key, value, revision)
                .await
                .map_err(|e| e.to_string())
        };
        match written {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::info!(schedule = %s.id, error = %e, "calendar cursor moved by another backend; not firing");
                None
            }
        }
    }

    /// Marks the cursor of a disabled calendar schedule paused (once), so
    /// re-enabling it does not fire a tick of the disabled period.
    async fn pause(&self, s: &Schedule, cursors: &mut HashMap<String, Cursor>) {
        if cursors.get(&s.id).is_some_and(|c| c.paused) {
            return;
        }
        let Ok(store) = lease::bucket(self.control).await else {
            return;
        };
        let entry = match self.control.entry(&store, &cursor_key(&s.id)).await {
            Ok(Some(e)) => e,
            // Never seen enabled: there is nothing to skip on re-enable.
            _ => return,
        };
        let Ok(mut c) = serde_json::from_slice::<Cursor>(&entry.value) else {
            return;
        };
        if !c.paused {
            c.paused = true;
            c.at = self.now;
            if self.claim(s, &c, entry.revision).await.is_none() {
                return;
            }
            tracing::info!(schedule = %s.id, "disabled: its ticks are skipped until it is enabled again");
        }
        cursors.insert(s.id.clone(), Cursor { revision: 0, ..c });
    }

    /// A reconcile pass of a `per_pc` / `per_target` schedule.
    async fn reconcile(&self, s: &Schedule) {
        if !self.gates_open(s) {
            return;
        }
        let Some(manifest) = self.manifest(s).await else {
            return;
        };
        let expected = match self.control.roster(&s.plan.target, true).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(schedule = %s.id, error = %e, "target unresolved; pass skipped");
                return;
            }
        };
        let version =
            (s.lowered().mode == ExecMode::OncePerPcVersion).then_some(manifest.version.as_str());
        let store = &self.control.store;
        let read = store.job_standing_by_pc(&s.job_id).and_then(|st| {
            let done = store.job_completions(&s.job_id, version)?;
            Ok(policy::with_completions(st, &done, version.is_some()))
        });
        let standing = match read {
            Ok(st) => st,
            Err(e) => {
                tracing::warn!(schedule = %s.id, error = %e, "completions unreadable; pass skipped");
                return;
            }
        };
        let marks = policy::Marks::open(self.control, s, &manifest).await;
        match policy::decide(s, &expected, &standing, self.now) {
            policy::Decision::Skip => {}
            policy::Decision::Target => {
                if marks.target_marked(self.now).await {
                    tracing::debug!(schedule = %s.id, "dispatched recently; waiting for its results");
                } else if marks.claim_target(self.now).await
                    && !self
                        .fire(s, s.plan.clone(), self.now, "per_target armed")
                        .await
                {
                    marks.release_target().await;
                }
            }
            policy::Decision::Pcs(pcs) => {
                let pcs = marks.unmarked(pcs, &standing, self.now).await;
                let in_flight = standing.values().map(|st| st.in_flight).sum();
                let pcs = policy::cap(pcs, s.constraints.max_concurrent, in_flight);
                // Claimed before the fire: two backends that read the same
                // marks cannot both fire at a PC.
                let pcs = marks.claim_pcs(pcs, self.now).await;
                if pcs.is_empty() {
                    return;
                }
                let mut plan = s.plan.clone();
                plan.target = kanade_shared::manifest::Target {
                    pcs: pcs.clone(),
                    ..Default::default()
                };
                plan.rollout = None;
                tracing::info!(schedule = %s.id, pcs = pcs.len(), "per_pc: firing at the PCs still to cover");
                if !self.fire(s, plan, self.now, "per_pc").await {
                    marks.release_pcs(&pcs).await;
                }
            }
        }
    }

    async fn manifest(&self, s: &Schedule) -> Option<Manifest> {
        match self
            .control
            .get_json::<Manifest>(BUCKET_JOBS, &s.job_id)
            .await
        {
            Ok(Some(m)) => Some(m),
            Ok(None) | Err(crate::control::Error::Unavailable(_)) => {
                tracing::warn!(schedule = %s.id, job = %s.job_id, "job not in the catalog: fire skipped");
                None
            }
            Err(e) => {
                tracing::warn!(schedule = %s.id, error = %e, "job catalog unreadable: fire skipped");
                None
            }
        }
    }

    /// Execs the schedule's job at `plan`; whether it was accepted.
    async fn fire(
        &self,
        s: &Schedule,
        mut plan: kanade_shared::manifest::FanoutPlan,
        base: DateTime<Utc>,
        why: &str,
    ) -> bool {
        if !self.lease.lock().await.hold().await {
            tracing::warn!(schedule = %s.id, why, "the scheduler lease was lost during the pass: not firing");
            return false;
        }
        let Some(manifest) = self.manifest(s).await else {
            return false;
        };
        // The deadline counts from the tick that fired (a late calendar
        // tick has less of it left), from now for the other kinds.
        match policy::starting_deadline(s) {
            Ok(None) => {}
            Ok(Some(d)) => match base.checked_add_signed(d) {
                Some(at) => plan.deadline_at = Some(at),
                None => {
                    tracing::warn!(schedule = %s.id, %base, "starting_deadline past the end of time: fire skipped");
                    return false;
                }
            },
            Err(e) => {
                tracing::warn!(schedule = %s.id, error = %e, "invalid starting_deadline: fire skipped");
                return false;
            }
        }
        let by = Initiator {
            actor: "scheduler",
            caller: None,
        };
        match self
            .control
            .exec(&manifest, &plan, by, s.on_failure.lowered_retry())
            .await
        {
            Ok(o) => {
                tracing::info!(schedule = %s.id, exec_id = %o.exec_id, why, subjects = ?o.subjects, "scheduler fired");
                crate::metrics::get().scheduler_fires.inc();
                true
            }
            Err(e) => {
                tracing::warn!(schedule = %s.id, error = %e, why, "scheduler exec failed");
                crate::metrics::get().scheduler_fire_failures.inc();
                false
            }
        }
    }
}
