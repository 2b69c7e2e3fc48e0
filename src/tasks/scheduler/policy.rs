//! The scheduler's decisions, pure where they can be: which calendar
//! ticks are due (computed with the zone's rules at each tick, so `Local`
//! follows DST), which PCs a reconcile pass fires at, the dispatch marks
//! that hold a re-fire back until results can have arrived, and the
//! `max_concurrent` cap.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::kv;
use chrono::{DateTime, TimeZone, Utc};
use futures::StreamExt;
use kanade_shared::kv::{
    dispatch_mark_pc_key, dispatch_mark_target_key, BUCKET_SCHEDULER_DISPATCH,
};
use kanade_shared::manifest::{ExecMode, Manifest, Schedule, ScheduleTz};
use kanade_storage::JobPcStanding;

use crate::control::Control;

/// Most past ticks walked when catching up (older ones are not listed).
const MAX_TICKS_WALKED: usize = 10_000;

/// The next raw calendar occurrence strictly after `after`, read in
/// `tz` with that zone's rules at that date.
pub fn next_fire_in<Tz: TimeZone>(
    s: &Schedule,
    after: DateTime<Utc>,
    tz: &Tz,
) -> Option<DateTime<Utc>> {
    let cron = croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(&s.lowered().cron)
        .ok()?;
    // Ticks are whole seconds; a fractional start would carry its
    // fraction into every tick computed from it.
    let after = chrono::SubsecRound::trunc_subsecs(after, 0);
    cron.find_next_occurrence(&after.with_timezone(tz), false)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn next_fire(s: &Schedule, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match s.tz {
        ScheduleTz::Utc => next_fire_in(s, after, &Utc),
        ScheduleTz::Local => next_fire_in(s, after, &chrono::Local),
    }
}

/// The calendar ticks in `(after, now]`: the latest (to fire) and the
/// earlier ones (missed).
pub fn due_ticks(
    s: &Schedule,
    after: DateTime<Utc>,
    now: DateTime<Utc>,
) -> (Option<DateTime<Utc>>, Vec<DateTime<Utc>>) {
    due_ticks_with(after, now, |t| next_fire(s, t))
}

fn due_ticks_with(
    after: DateTime<Utc>,
    now: DateTime<Utc>,
    next: impl Fn(DateTime<Utc>) -> Option<DateTime<Utc>>,
) -> (Option<DateTime<Utc>>, Vec<DateTime<Utc>>) {
    let mut ticks = Vec::new();
    let mut cursor = after;
    while let Some(t) = next(cursor).filter(|t| *t <= now) {
        ticks.push(t);
        cursor = t;
        if ticks.len() >= MAX_TICKS_WALKED {
            break;
        }
    }
    let latest = ticks.pop();
    (latest, ticks)
}

/// The longest `starting_deadline` accepted: ten years. Longer ones mean
/// nothing a fleet can use, and adding them to a time can leave chrono's
/// range (a `1000000y` deadline used to stop the scheduler).
pub const MAX_STARTING_DEADLINE_DAYS: i64 = 3650;

/// A schedule's `starting_deadline`, parsed and bounded; `Err` names what
/// is wrong (the API refuses such a schedule, the scheduler skips it).
pub fn starting_deadline(s: &Schedule) -> Result<Option<chrono::Duration>, String> {
    let Some(raw) = s.starting_deadline.as_deref() else {
        return Ok(None);
    };
    let d =
        humantime::parse_duration(raw).map_err(|e| format!("starting_deadline {raw:?}: {e}"))?;
    chrono::Duration::from_std(d)
        .ok()
        .filter(|d| *d <= chrono::Duration::days(MAX_STARTING_DEADLINE_DAYS))
        .map(Some)
        .ok_or_else(|| {
            format!("starting_deadline {raw:?} is longer than {MAX_STARTING_DEADLINE_DAYS} days")
        })
}

/// How late a calendar tick may fire: its `starting_deadline`, else the
/// misfire grace (saturating: no configured value can overflow).
pub fn allowed_lateness(s: &Schedule, grace_secs: u64) -> chrono::Duration {
    match starting_deadline(s) {
        Ok(Some(d)) => d,
        _ => i64::try_from(grace_secs)
            .ok()
            .and_then(chrono::Duration::try_seconds)
            .unwrap_or(chrono::Duration::MAX),
    }
}

/// `standing` with each PC's last success taken from the permanent
/// completions (they outlive result retention). `version_scoped`: the
/// completions are of the current version only, and an older version's
/// success does not count.
pub fn with_completions(
    mut standing: BTreeMap<String, JobPcStanding>,
    completions: &BTreeMap<String, DateTime<Utc>>,
    version_scoped: bool,
) -> BTreeMap<String, JobPcStanding> {
    if version_scoped {
        for st in standing.values_mut() {
            st.last_success = None;
        }
    }
    for (pc, at) in completions {
        let st = standing.entry(pc.clone()).or_default();
        st.last_success = st.last_success.max(Some(*at));
    }
    standing
}

/// What a reconcile pass does.
#[derive(Debug, PartialEq)]
pub enum Decision {
    Skip,
    /// `per_target`: fire the whole target once.
    Target,
    /// `per_pc`: fire at these PCs.
    Pcs(Vec<String>),
}

/// Which of `expected` still need the job: a PC with no successful run
/// (or whose last one is older than the cooldown) and none in flight.
/// Completions are the job's, from any exec, as in the reference.
pub fn decide(
    s: &Schedule,
    expected: &[String],
    standing: &BTreeMap<String, JobPcStanding>,
    now: DateTime<Utc>,
) -> Decision {
    let lowered = s.lowered();
    let cooldown = match lowered.cooldown.as_deref().map(humantime::parse_duration) {
        None => None,
        Some(Ok(d)) => chrono::Duration::from_std(d).ok(),
        Some(Err(e)) => {
            tracing::warn!(schedule = %s.id, error = %e, "invalid when.every: pass skipped");
            return Decision::Skip;
        }
    };
    let armed = |last: Option<DateTime<Utc>>| match last {
        None => true,
        Some(t) => cooldown.is_some_and(|cd| now - t >= cd),
    };
    let of = |pc: &String| standing.get(pc).cloned().unwrap_or_default();
    match lowered.mode {
        // The version scope is in `standing` (see [`with_completions`]).
        ExecMode::OncePerPc | ExecMode::OncePerPcVersion => {
            let pcs: Vec<String> = expected
                .iter()
                .filter(|pc| {
                    let st = of(pc);
                    st.in_flight == 0 && armed(st.last_success)
                })
                .cloned()
                .collect();
            if pcs.is_empty() {
                Decision::Skip
            } else {
                Decision::Pcs(pcs)
            }
        }
        ExecMode::OncePerTarget => {
            if expected.is_empty() || expected.iter().any(|pc| of(pc).in_flight > 0) {
                return Decision::Skip;
            }
            let latest = expected.iter().filter_map(|pc| of(pc).last_success).max();
            if armed(latest) {
                Decision::Target
            } else {
                Decision::Skip
            }
        }
        _ => Decision::Skip,
    }
}

/// The first PCs that fit under `max_concurrent` given the job's runs
/// already in flight.
pub fn cap(pcs: Vec<String>, max_concurrent: Option<u32>, in_flight: usize) -> Vec<String> {
    match max_concurrent {
        None => pcs,
        Some(max) => {
            let slots = (max as usize).saturating_sub(in_flight);
            pcs.into_iter().take(slots).collect()
        }
    }
}

/// How long the dispatch bucket keeps a mark: the longest window a mark
/// may have (a mark the bucket dropped early would let a PC be fired
/// again inside its window).
pub const MARK_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Raises the dispatch bucket's `max_age` to [`MARK_MAX_AGE`] when it was
/// made shorter (the reference, and our earlier versions, made it 1 h);
/// creates the bucket when missing.
pub async fn ensure_dispatch_bucket(control: &Control) -> Result<(), String> {
    let stream_name = format!("KV_{BUCKET_SCHEDULER_DISPATCH}");
    match control.js.get_stream(&stream_name).await {
        Ok(mut stream) => {
            let mut config = stream
                .info()
                .await
                .map_err(|e| e.to_string())?
                .config
                .clone();
            if !config.max_age.is_zero() && config.max_age < MARK_MAX_AGE {
                let was = config.max_age;
                config.max_age = MARK_MAX_AGE;
                control
                    .js
                    .update_stream(config)
                    .await
                    .map_err(|e| e.to_string())?;
                tracing::info!(bucket = BUCKET_SCHEDULER_DISPATCH, ?was, now = ?MARK_MAX_AGE, "dispatch marks kept as long as their longest window");
            }
            Ok(())
        }
        Err(_) => control
            .js
            .create_key_value(kv::Config {
                bucket: BUCKET_SCHEDULER_DISPATCH.into(),
                history: 1,
                max_age: MARK_MAX_AGE,
                ..Default::default()
            })
            .await
            .map(drop)
            .map_err(|e| e.to_string()),
    }
}

/// How long a dispatch holds back a re-fire: jitter + timeout + 90 s,
/// clamped to [90 s, 30 min], plus the retry budget; at most
/// [`MARK_MAX_AGE`].
pub fn mark_window(s: &Schedule, m: &Manifest) -> chrono::Duration {
    let secs = |d: Option<&str>| {
        d.and_then(|d| humantime::parse_duration(d).ok())
            .map_or(0, |d| d.as_secs())
    };
    let timeout = secs(Some(m.execute.timeout()));
    let base = (secs(s.plan.jitter.as_deref()) + timeout + 90).clamp(90, 30 * 60);
    let retry = s.on_failure.lowered_retry().map_or(0, |r| {
        u64::from(r.max).saturating_mul(timeout + r.backoff_secs)
    });
    chrono::Duration::seconds(base.saturating_add(retry).min(MARK_MAX_AGE.as_secs()) as i64)
}

/// Dispatch marks of one schedule in `scheduler_dispatch` (shared with
/// the reference): when it last dispatched to a PC / its target.
pub struct Marks<'a> {
    store: Option<kv::Store>,
    control: &'a Control,
    schedule_id: String,
    window: chrono::Duration,
    /// Revision of each mark as last read (0: none), for the
    /// compare-and-set that claims it.
    read: std::sync::Mutex<BTreeMap<String, u64>>,
}

/// Mark reads and writes in flight at once.
const MARK_IO: usize = 16;

impl<'a> Marks<'a> {
    pub async fn open(control: &'a Control, s: &Schedule, m: &Manifest) -> Marks<'a> {
        let store = match control.kv(BUCKET_SCHEDULER_DISPATCH).await {
            Ok(st) => Some(st),
            Err(_) => {
                let create = control.js.create_key_value(kv::Config {
                    bucket: BUCKET_SCHEDULER_DISPATCH.into(),
                    history: 1,
                    max_age: MARK_MAX_AGE,
                    ..Default::default()
                });
                tokio::time::timeout(Duration::from_secs(5), create)
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
        };
        Self {
            store,
            control,
            schedule_id: s.id.clone(),
            window: mark_window(s, m),
            read: Default::default(),
        }
    }

    /// When `key` was marked, if inside the window; remembers the mark's
    /// revision for [`Marks::claim`].
    async fn marked_at(&self, key: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let store = self.store.as_ref()?;
        let e = self.control.entry(store, key).await.ok()?;
        self.read
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.to_string(), e.as_ref().map_or(0, |e| e.revision));
        let e = e?;
        let at = std::str::from_utf8(&e.value)
            .ok()
            .and_then(|v| DateTime::parse_from_rfc3339(v.trim()).ok())?
            .with_timezone(&Utc);
        (now - at < self.window).then_some(at)
    }

    async fn marked(&self, key: &str, now: DateTime<Utc>) -> bool {
        self.marked_at(key, now).await.is_some()
    }

    pub async fn target_marked(&self, now: DateTime<Utc>) -> bool {
        self.marked(&dispatch_mark_target_key(&self.schedule_id), now)
            .await
    }

    /// `pcs` without those dispatched to inside the window.
    /// Those of `pcs` not held back by a mark. A mark holds until the
    /// PC's result of that dispatch is in: a run finished after the mark
    /// releases it (so a new manifest version reaches a PC that has just
    /// answered the old one).
    pub async fn unmarked(
        &self,
        pcs: Vec<String>,
        standing: &BTreeMap<String, JobPcStanding>,
        now: DateTime<Utc>,
    ) -> Vec<String> {
        let mut out: Vec<String> = futures::stream::iter(pcs)
            .map(|pc| async move {
                let key = dispatch_mark_pc_key(&self.schedule_id, &pc);
                let answered_after = |at: DateTime<Utc>| {
                    standing
                        .get(&pc)
                        .and_then(|st| st.latest.as_ref())
                        .is_some_and(|l| l.finished_at >= at)
                };
                match self.marked_at(&key, now).await {
                    Some(at) if !answered_after(at) => None,
                    _ => Some(pc),
                }
            })
            .buffer_unordered(MARK_IO)
            .filter_map(|pc| async move { pc })
            .collect()
            .await;
        out.sort();
        out
    }

    /// Writes the mark `key` over the one read (compare-and-set): `true`
    /// when it is ours to fire, `false` when another backend marked it
    /// meanwhile. Without the bucket, every claim succeeds (suppression
    /// degrades to the completions alone, never to no firing).
    async fn claim(&self, key: String, now: DateTime<Utc>) -> bool {
        let Some(store) = &self.store else {
            return true;
        };
        let read = self
            .read
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .copied()
            .unwrap_or(0);
        let value: bytes::Bytes = now.to_rfc3339().into();
        let written = if read == 0 {
            store
                .create(&key, value)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        } else {
            store
                .update(&key, value, read)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        };
        match written {
            Ok(()) => true,
            Err(e) => {
                tracing::info!(%key, error = %e, "dispatch mark taken by another backend meanwhile: not firing there");
                false
            }
        }
    }

    /// Takes a claim back after a fire that did not go out, so the next
    /// pass tries again.
    async fn release(&self, key: String) {
        if let Some(store) = &self.store {
            if let Err(e) = store.delete(&key).await {
                tracing::warn!(%key, error = %e, "dispatch mark not released");
            }
        }
    }

    pub async fn claim_target(&self, now: DateTime<Utc>) -> bool {
        self.claim(dispatch_mark_target_key(&self.schedule_id), now)
            .await
    }

    pub async fn release_target(&self) {
        self.release(dispatch_mark_target_key(&self.schedule_id))
            .await;
    }

    /// The PCs of `pcs` whose marks this backend claimed.
    pub async fn claim_pcs(&self, pcs: Vec<String>, now: DateTime<Utc>) -> Vec<String> {
        let mut won: Vec<String> = futures::stream::iter(pcs)
            .map(|pc| async move {
                self.claim(dispatch_mark_pc_key(&self.schedule_id, &pc), now)
                    .await
                    .then_some(pc)
            })
            .buffer_unordered(MARK_IO)
            .filter_map(|pc| async move { pc })
            .collect()
            .await;
        won.sort();
        won
    }

    pub async fn release_pcs(&self, pcs: &[String]) {
        futures::stream::iter(pcs)
            .for_each_concurrent(MARK_IO, |pc| {
                self.release(dispatch_mark_pc_key(&self.schedule_id, pc))
            })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration as D;

    fn schedule(yaml: &str) -> Schedule {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn local_calendar_ticks_follow_dst() {
        // 09:00 Berlin is 08:00 UTC in winter and 07:00 UTC in summer; the
        // tick after the change must move with it (the reference keeps the
        // offset of the day it registered the schedule).
        let s = schedule("id: a\njob_id: j\nwhen: {calendar: {at: '09:00'}}\ntz: local\n");
        let berlin = chrono_tz::Europe::Berlin;
        let before = next_fire_in(&s, at("2026-03-28T12:00:00Z"), &berlin).unwrap();
        assert_eq!(before, at("2026-03-29T07:00:00Z"));
        let winter = next_fire_in(&s, at("2026-03-27T12:00:00Z"), &berlin).unwrap();
        assert_eq!(winter, at("2026-03-28T08:00:00Z"));
        let autumn = next_fire_in(&s, at("2026-10-25T06:00:00Z"), &berlin).unwrap();
        assert_eq!(autumn, at("2026-10-25T08:00:00Z"));
    }

    #[test]
    fn a_missed_tick_is_the_latest_due_and_older_ones_are_listed() {
        let s = schedule("id: a\njob_id: j\nwhen: {calendar: {at: '09:00'}}\ntz: utc\n");
        let (due, missed) = due_ticks(&s, at("2026-06-01T10:00:00.5Z"), at("2026-06-04T09:30:00Z"));
        assert_eq!(due, Some(at("2026-06-04T09:00:00Z")));
        assert_eq!(
            missed,
            vec![at("2026-06-02T09:00:00Z"), at("2026-06-03T09:00:00Z")]
        );
        let (none, missed) = due_ticks(
            &s,
            at("2026-06-04T09:00:00.25Z"),
            at("2026-06-04T09:30:00Z"),
        );
        assert_eq!((none, missed.len()), (None, 0));
        let with_deadline =
            schedule("id: a\njob_id: j\nwhen: {calendar: {at: '09:00'}}\nstarting_deadline: 2h\n");
        assert_eq!(allowed_lateness(&with_deadline, 60), D::hours(2));
        assert_eq!(allowed_lateness(&s, 60), D::seconds(60));
    }

    #[test]
    fn no_deadline_or_grace_overflows() {
        let s = schedule("id: a\njob_id: j\nwhen: {calendar: {at: '09:00'}}\n");
        // Beyond what chrono's seconds() takes (used to panic).
        assert_eq!(allowed_lateness(&s, 1 << 60), D::MAX);
        assert_eq!(allowed_lateness(&s, u64::MAX), D::MAX);
        let huge = schedule(
            "id: a\njob_id: j\nwhen: {calendar: {at: '09:00'}}\nstarting_deadline: 1000000y\n",
        );
        let err = starting_deadline(&huge).unwrap_err();
        assert!(
            err.contains("starting_deadline") && err.contains("3650 days"),
            "{err}"
        );
        assert_eq!(
            allowed_lateness(&huge, 60),
            D::seconds(60),
            "an unusable deadline falls back to the grace"
        );
        let ok = schedule(
            "id: a\njob_id: j\nwhen: {calendar: {at: '09:00'}}\nstarting_deadline: 3650d\n",
        );
        assert_eq!(starting_deadline(&ok), Ok(Some(D::days(3650))));
    }

    fn standing(success: Option<DateTime<Utc>>, in_flight: usize) -> JobPcStanding {
        JobPcStanding {
            latest: None,
            last_success: success,
            in_flight,
        }
    }

    #[test]
    fn per_pc_fires_at_uncovered_pcs_and_respects_cooldown_and_in_flight() {
        let now = at("2026-06-01T12:00:00Z");
        let s = schedule("id: a\njob_id: j\nwhen: {per_pc: {every: 6h}}\ntarget: {all: true}\n");
        let expected: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        let mut st = BTreeMap::new();
        st.insert("a".to_string(), standing(Some(now - D::hours(1)), 0));
        st.insert("b".to_string(), standing(Some(now - D::hours(7)), 0));
        st.insert("c".to_string(), standing(None, 1));
        assert_eq!(
            decide(&s, &expected, &st, now),
            Decision::Pcs(vec!["b".into(), "d".into()])
        );
        let once = schedule("id: a\njob_id: j\nwhen: {per_pc: once}\ntarget: {all: true}\n");
        assert_eq!(
            decide(&once, &expected, &st, now),
            Decision::Pcs(vec!["d".into()])
        );
        assert_eq!(
            cap(vec!["b".into(), "d".into()], Some(2), 1),
            vec!["b".to_string()]
        );
        assert!(cap(vec!["b".into()], Some(1), 3).is_empty());
    }

    #[test]
    fn per_target_fires_once_for_the_target() {
        let now = at("2026-06-01T12:00:00Z");
        let s = schedule("id: a\njob_id: j\nwhen: {per_target: once}\ntarget: {all: true}\n");
        let expected: Vec<String> = vec!["a".into(), "b".into()];
        assert_eq!(
            decide(&s, &expected, &BTreeMap::new(), now),
            Decision::Target
        );
        let mut st = BTreeMap::new();
        st.insert("b".to_string(), standing(Some(now - D::days(30)), 0));
        assert_eq!(decide(&s, &expected, &st, now), Decision::Skip);
        assert_eq!(decide(&s, &[], &BTreeMap::new(), now), Decision::Skip);
    }
}
