//! Login throttling, with the reference backend's policy and one rule of
//! ours. Every attempt counts against its client address and its username
//! until it succeeds (counting at the start of an attempt, not after it
//! failed, so a burst of parallel guesses cannot slip in before the first
//! failure is recorded); unknown usernames count like real ones, so the
//! answers never tell whether an account exists.
//!
//! - **Per address, the first line**: past `addr_limit` failures within
//!   `addr_window` from one address (any usernames), that address is
//!   refused until its window ends.
//! - **Per account**: `user_limit` consecutive failures lock the username
//!   for `user_lockout`, from whatever address, as the reference does.
//!   Failures older than `user_lockout` are forgotten.
//! - **Never the last admin by strangers**: for the last enabled admin
//!   (the caller says which account that is) the lock is kept per address,
//!   so failures from elsewhere never keep the admin out of the backend;
//!   the address limit still bounds what any one address may try.
//!
//! Past `delay_after` failures each attempt of a username is also slowed.
//! A refusal says whether it is the first of its lock, so the caller can
//! audit a lock once rather than every refused attempt.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The limits.
#[derive(Debug, Clone)]
pub struct ThrottlePolicy {
    /// Consecutive failures of one username that lock it.
    pub user_limit: u32,
    /// How long a lock lasts, from the failure that set it.
    pub user_lockout: Duration,
    /// Failures from one address (any usernames) within `addr_window`
    /// after which the address is refused.
    pub addr_limit: u32,
    pub addr_window: Duration,
    /// Failures of one username after which each attempt is delayed.
    pub delay_after: u32,
    /// First delay; doubles with each further failure.
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// Entries kept at most; the oldest go first.
    pub max_entries: usize,
}

impl Default for ThrottlePolicy {
    /// The reference backend's limits: 5 failures lock an account for
    /// 15 minutes, 30 failures a minute refuse an address.
    fn default() -> Self {
        Self {
            user_limit: 5,
            user_lockout: Duration::from_secs(15 * 60),
            addr_limit: 30,
            addr_window: Duration::from_secs(60),
            delay_after: 3,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(2),
            max_entries: 100_000,
        }
    }
}

impl ThrottlePolicy {
    /// For password-reset mails anyone may ask for: 3 per username an
    /// hour, 10 per address in 15 minutes; no delays.
    pub fn links() -> Self {
        Self {
            user_limit: 3,
            user_lockout: Duration::from_secs(3_600),
            addr_limit: 10,
            addr_window: Duration::from_secs(15 * 60),
            delay_after: u32::MAX,
            ..Self::default()
        }
    }

    /// For passkey ceremonies anyone may start: 20 a minute per address,
    /// every start counted.
    pub fn ceremonies() -> Self {
        Self {
            user_limit: u32::MAX,
            user_lockout: Duration::from_secs(60),
            addr_limit: 20,
            addr_window: Duration::from_secs(60),
            delay_after: u32::MAX,
            ..Self::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    User(String),
    /// The last enabled admin, from one address (`None`: unknown).
    UserFrom(String, Option<IpAddr>),
    Addr(IpAddr),
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    count: u32,
    /// First failure of an address window; last failure of a username.
    since: Instant,
    /// A username's lock.
    locked_until: Option<Instant>,
    /// Whether a refusal of this lock or window was already reported.
    reported: bool,
}

impl Entry {
    fn fresh(now: Instant) -> Self {
        Self {
            count: 0,
            since: now,
            locked_until: None,
            reported: false,
        }
    }
}

/// What to do with an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go ahead after waiting this long (zero for the first few).
    Proceed(Duration),
    /// Refuse; the caller may retry after `after`. `first` is true for the
    /// first refusal of this lock or window (report it; the rest are
    /// counted, not reported).
    Refuse { after: Duration, first: bool },
}

/// Whose account an attempt names, as far as the throttle cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Account {
    /// Any account, or none.
    Any,
    /// The last enabled admin: locked per address only.
    LastAdmin,
}

/// Failure counters per username and per client address.
#[derive(Debug, Default)]
pub struct LoginThrottle {
    policy: ThrottlePolicy,
    entries: Mutex<HashMap<Key, Entry>>,
}

/// Usernames are attacker-chosen: bound what one key may hold.
fn user_key(username: &str, account: Account, addr: Option<IpAddr>) -> Key {
    let name: String = username.chars().take(128).collect();
    match account {
        Account::Any => Key::User(name),
        Account::LastAdmin => Key::UserFrom(name, addr),
    }
}

impl LoginThrottle {
    pub fn new(policy: ThrottlePolicy) -> Self {
        Self {
            policy,
            entries: Mutex::default(),
        }
    }

    /// Counts an attempt and says whether it may proceed.
    pub fn begin(
        &self,
        username: &str,
        account: Account,
        addr: Option<IpAddr>,
        now: Instant,
    ) -> Verdict {
        let p = &self.policy;
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let user = user_key(username, account, addr);
        let mut by_user = entries
            .get(&user)
            .copied()
            .filter(|e| match e.locked_until {
                Some(until) => now < until,
                None => now.saturating_duration_since(e.since) < p.user_lockout,
            })
            .unwrap_or(Entry::fresh(now));
        let addr_key = addr.map(Key::Addr);
        let mut by_addr = addr_key.as_ref().map(|k| {
            entries
                .get(k)
                .copied()
                .filter(|e| now.saturating_duration_since(e.since) < p.addr_window)
                .unwrap_or(Entry::fresh(now))
        });

        let mut refusal: Option<(Duration, bool)> = None;
        let mut refuse = |after: Duration, entry: &mut Entry| {
            let first = !entry.reported;
            entry.reported = true;
            let (a, f) = refusal.unwrap_or((Duration::ZERO, false));
            refusal = Some((a.max(after), f || first));
        };
        if let Some(until) = by_user.locked_until {
            refuse(until.saturating_duration_since(now), &mut by_user);
        }
        if let Some(a) = by_addr.as_mut() {
            if a.count >= p.addr_limit {
                let after = p
                    .addr_window
                    .saturating_sub(now.saturating_duration_since(a.since));
                refuse(after, a);
            }
        }
        if let Some((after, first)) = refusal {
            entries.insert(user, by_user);
            if let (Some(k), Some(a)) = (addr_key, by_addr) {
                entries.insert(k, a);
            }
            return Verdict::Refuse {
                after: after.max(Duration::from_secs(1)),
                first,
            };
        }

        let delay = match by_user.count.checked_sub(p.delay_after) {
            None => Duration::ZERO,
            Some(n) => p
                .base_delay
                .saturating_mul(1u32 << n.min(16))
                .min(p.max_delay),
        };
        if entries.len() + 2 > p.max_entries {
            entries.retain(|_, e| {
                e.locked_until.is_some_and(|t| now < t)
                    || now.saturating_duration_since(e.since) < p.user_lockout
            });
            while entries.len() + 2 > p.max_entries {
                let oldest = entries
                    .iter()
                    .min_by_key(|(_, e)| e.since)
                    .map(|(k, _)| k.clone());
                match oldest {
                    Some(k) => entries.remove(&k),
                    None => break,
                };
            }
        }
        by_user.count += 1;
        by_user.since = now;
        if by_user.count >= p.user_limit {
            by_user.locked_until = Some(now + p.user_lockout);
            by_user.reported = false;
        }
        entries.insert(user, by_user);
        if let (Some(k), Some(mut a)) = (addr_key, by_addr) {
            a.count += 1;
            entries.insert(k, a);
        }
        Verdict::Proceed(delay)
    }

    /// Counts an attempt that names no account (a passkey sign-in before
    /// its answer verifies): limited per client address only, by both
    /// the username rules and the address rules of the policy, so made-up
    /// answers lock out their sender and nobody else.
    pub fn begin_anonymous(&self, addr: Option<IpAddr>, now: Instant) -> Verdict {
        self.begin("", Account::LastAdmin, addr, now)
    }

    /// An anonymous attempt ([`Self::begin_anonymous`]) succeeded.
    pub fn succeeded_anonymous(&self, addr: Option<IpAddr>) {
        self.succeeded("", Account::LastAdmin, addr);
    }

    /// The attempt was no failure but not a login either (a right
    /// password still waiting for its second factor): take it back from
    /// the username and the address without forgetting earlier failures,
    /// and lift a lock only this attempt set.
    pub fn refund(&self, username: &str, account: Account, addr: Option<IpAddr>) {
        let p = &self.policy;
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = entries.get_mut(&user_key(username, account, addr)) {
            e.count = e.count.saturating_sub(1);
            if e.count < p.user_limit {
                e.locked_until = None;
            }
        }
        if let Some(a) = addr {
            if let Some(e) = entries.get_mut(&Key::Addr(a)) {
                e.count = e.count.saturating_sub(1);
            }
        }
    }

    /// The attempt succeeded: forget the username's failures (and lock:
    /// the attempt that set it was this one), and take the attempt back
    /// from the address.
    pub fn succeeded(&self, username: &str, account: Account, addr: Option<IpAddr>) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.remove(&user_key(username, account, addr));
        if let Some(a) = addr {
            if let Some(e) = entries.get_mut(&Key::Addr(a)) {
                e.count = e.count.saturating_sub(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(n: u8) -> Option<IpAddr> {
        Some(IpAddr::from([10, 0, 0, n]))
    }

    fn refused(v: Verdict) -> bool {
        matches!(v, Verdict::Refuse { .. })
    }

    #[test]
    fn five_failures_lock_an_account_from_every_address_for_15_minutes() {
        let t = LoginThrottle::default();
        let now = Instant::now();
        let verdicts: Vec<Verdict> = (0..6u8)
            .map(|i| t.begin("ann", Account::Any, addr(i), now))
            .collect();
        assert_eq!(
            verdicts,
            [
                Verdict::Proceed(Duration::ZERO),
                Verdict::Proceed(Duration::ZERO),
                Verdict::Proceed(Duration::ZERO),
                Verdict::Proceed(Duration::from_millis(250)),
                Verdict::Proceed(Duration::from_millis(500)),
                Verdict::Refuse {
                    after: Duration::from_secs(15 * 60),
                    first: true
                },
            ]
        );
        // Reported once; refused from any address meanwhile.
        assert_eq!(
            t.begin("ann", Account::Any, addr(7), now),
            Verdict::Refuse {
                after: Duration::from_secs(15 * 60),
                first: false
            }
        );
        // Another user from the same addresses is unaffected.
        assert_eq!(
            t.begin("bob", Account::Any, addr(1), now),
            Verdict::Proceed(Duration::ZERO)
        );
        // The lock ends 15 minutes after the failure that set it.
        let later = now + Duration::from_secs(15 * 60 + 1);
        assert_eq!(
            t.begin("ann", Account::Any, addr(1), later),
            Verdict::Proceed(Duration::ZERO)
        );
    }

    #[test]
    fn strangers_never_lock_the_last_admin_out() {
        let t = LoginThrottle::default();
        let now = Instant::now();
        for i in 0..5 {
            assert!(
                !refused(t.begin("root", Account::LastAdmin, addr(66), now)),
                "{i}"
            );
        }
        assert!(refused(t.begin("root", Account::LastAdmin, addr(66), now)));
        // The admin's own address, and an unknown one, still get through.
        assert_eq!(
            t.begin("root", Account::LastAdmin, addr(1), now),
            Verdict::Proceed(Duration::ZERO)
        );
        assert_eq!(
            t.begin("root", Account::LastAdmin, None, now),
            Verdict::Proceed(Duration::ZERO)
        );
        // Spread over many addresses, no address locks the admin either.
        for i in 100..200 {
            assert!(!refused(t.begin("root", Account::LastAdmin, addr(i), now)));
        }
        assert!(!refused(t.begin("root", Account::LastAdmin, addr(2), now)));
    }

    #[test]
    fn success_clears_the_user_and_one_address_count() {
        let t = LoginThrottle::default();
        let now = Instant::now();
        for _ in 0..4 {
            t.begin("ann", Account::Any, addr(1), now);
        }
        t.succeeded("ann", Account::Any, addr(1));
        // The user's failures are gone: no delay (a fifth would be one).
        assert_eq!(
            t.begin("ann", Account::Any, addr(1), now),
            Verdict::Proceed(Duration::ZERO)
        );
        // The address counted 5 attempts, one taken back by the success:
        // 25 more make 29, so one more proceeds (the 30th) and the next is
        // refused. Without the take-back the 30th would already be refused.
        for i in 0..25 {
            assert!(!refused(t.begin(
                &format!("u{i}"),
                Account::Any,
                addr(1),
                now
            )));
        }
        assert!(!refused(t.begin("v", Account::Any, addr(1), now)));
        assert!(refused(t.begin("w", Account::Any, addr(1), now)));
    }

    #[test]
    fn a_refunded_attempt_neither_counts_nor_clears() {
        let t = LoginThrottle::default();
        let now = Instant::now();
        for _ in 0..4 {
            t.begin("ann", Account::Any, addr(1), now);
        }
        // The fifth is a right password waiting for its code: refunded.
        t.begin("ann", Account::Any, addr(1), now);
        t.refund("ann", Account::Any, addr(1));
        // Not locked, yet the four failures still stand: one more locks.
        assert!(!refused(t.begin("ann", Account::Any, addr(1), now)));
        assert!(refused(t.begin("ann", Account::Any, addr(1), now)));
    }

    #[test]
    fn one_address_guessing_many_usernames_is_refused_for_its_window() {
        let t = LoginThrottle::default();
        let now = Instant::now();
        for i in 0..30 {
            assert!(!refused(t.begin(
                &format!("user{i}"),
                Account::Any,
                addr(9),
                now
            )));
        }
        assert_eq!(
            t.begin("fresh", Account::Any, addr(9), now),
            Verdict::Refuse {
                after: Duration::from_secs(60),
                first: true
            }
        );
        assert!(matches!(
            t.begin("other", Account::Any, addr(9), now),
            Verdict::Refuse { first: false, .. }
        ));
        assert!(!refused(t.begin("fresh", Account::Any, addr(8), now)));
        let later = now + Duration::from_secs(61);
        assert!(!refused(t.begin("fresh", Account::Any, addr(9), later)));
    }

    #[test]
    fn the_table_stays_bounded() {
        let t = LoginThrottle::new(ThrottlePolicy {
            max_entries: 10,
            ..Default::default()
        });
        let now = Instant::now();
        for i in 0..100 {
            t.begin(
                &format!("u{i}"),
                Account::Any,
                None,
                now + Duration::from_millis(i),
            );
        }
        assert!(t.entries.lock().unwrap().len() <= 10);
    }
}
