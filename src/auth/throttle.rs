//! Login throttling. Every attempt counts against its username and its
//! client address until it succeeds; within a window, attempts past a few
//! failures are delayed, and past a limit refused (429) until the window
//! ends. Unknown usernames are counted like real ones, so the answers never
//! tell whether an account exists. Counting at the start of an attempt
//! (not after it failed) means a burst of parallel guesses cannot slip in
//! before the first failure is recorded.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The limits.
#[derive(Debug, Clone)]
pub struct ThrottlePolicy {
    /// How long failures are remembered, from the first one.
    pub window: Duration,
    /// Failures of one username after which each attempt is delayed.
    pub delay_after: u32,
    /// First delay; doubles with each further failure.
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// Failures of one username after which attempts are refused.
    pub user_limit: u32,
    /// Failures from one address (any usernames) after which attempts are
    /// refused; higher, since many people may share an address.
    pub addr_limit: u32,
    /// Entries kept at most; the oldest go first.
    pub max_entries: usize,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(15 * 60),
            delay_after: 3,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(2),
            user_limit: 5,
            addr_limit: 20,
            max_entries: 100_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    User(String),
    Addr(IpAddr),
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    count: u32,
    since: Instant,
}

/// What to do with an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go ahead after waiting this long (zero for the first few).
    Proceed(Duration),
    /// Refuse; the caller may retry after this long.
    Refuse(Duration),
}

/// Failure counters per username and per client address.
#[derive(Debug, Default)]
pub struct LoginThrottle {
    policy: ThrottlePolicy,
    entries: Mutex<HashMap<Key, Entry>>,
}

/// Usernames are attacker-chosen: bound what one key may hold.
fn user_key(username: &str) -> Key {
    Key::User(username.chars().take(128).collect())
}

impl LoginThrottle {
    pub fn new(policy: ThrottlePolicy) -> Self {
        Self {
            policy,
            entries: Mutex::default(),
        }
    }

    /// Counts an attempt and says whether it may proceed.
    pub fn begin(&self, username: &str, addr: Option<IpAddr>, now: Instant) -> Verdict {
        let p = &self.policy;
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let live = |e: &Entry| now.saturating_duration_since(e.since) < p.window;
        let current = |entries: &HashMap<Key, Entry>, key: &Key| {
            entries.get(key).copied().filter(live).unwrap_or(Entry {
                count: 0,
                since: now,
            })
        };
        let user = user_key(username);
        let by_user = current(&entries, &user);
        let by_addr = addr.map(|a| (Key::Addr(a), current(&entries, &Key::Addr(a))));

        let retry = |e: &Entry| {
            p.window
                .saturating_sub(now.saturating_duration_since(e.since))
        };
        let mut refuse = None;
        if by_user.count >= p.user_limit {
            refuse = Some(retry(&by_user));
        }
        if let Some((_, a)) = &by_addr {
            if a.count >= p.addr_limit {
                refuse = Some(refuse.unwrap_or_default().max(retry(a)));
            }
        }
        if let Some(after) = refuse {
            return Verdict::Refuse(after.max(Duration::from_secs(1)));
        }

        let delay = match by_user.count.checked_sub(p.delay_after) {
            None => Duration::ZERO,
            Some(n) => p
                .base_delay
                .saturating_mul(1u32 << n.min(16))
                .min(p.max_delay),
        };
        if entries.len() + 2 > p.max_entries {
            entries.retain(|_, e| live(e));
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
        entries.insert(
            user,
            Entry {
                count: by_user.count + 1,
                ..by_user
            },
        );
        if let Some((key, a)) = by_addr {
            entries.insert(
                key,
                Entry {
                    count: a.count + 1,
                    ..a
                },
            );
        }
        Verdict::Proceed(delay)
    }

    /// The attempt succeeded: forget the username's failures, and take the
    /// attempt back from the address.
    pub fn succeeded(&self, username: &str, addr: Option<IpAddr>) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.remove(&user_key(username));
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

    #[test]
    fn failures_of_one_user_are_delayed_then_refused_until_the_window_ends() {
        let t = LoginThrottle::default();
        let now = Instant::now();
        let verdicts: Vec<Verdict> = (0..6).map(|_| t.begin("ann", addr(1), now)).collect();
        assert_eq!(
            verdicts,
            [
                Verdict::Proceed(Duration::ZERO),
                Verdict::Proceed(Duration::ZERO),
                Verdict::Proceed(Duration::ZERO),
                Verdict::Proceed(Duration::from_millis(250)),
                Verdict::Proceed(Duration::from_millis(500)),
                Verdict::Refuse(Duration::from_secs(15 * 60)),
            ]
        );
        // Another user from the same address is unaffected.
        assert_eq!(
            t.begin("bob", addr(1), now),
            Verdict::Proceed(Duration::ZERO)
        );
        // The same user from another address is still refused.
        assert!(matches!(t.begin("ann", addr(2), now), Verdict::Refuse(_)));
        // After the window it starts over.
        let later = now + Duration::from_secs(15 * 60 + 1);
        assert_eq!(
            t.begin("ann", addr(1), later),
            Verdict::Proceed(Duration::ZERO)
        );
    }

    #[test]
    fn success_clears_the_user_and_one_address_count() {
        let t = LoginThrottle::default();
        let now = Instant::now();
        for _ in 0..4 {
            t.begin("ann", addr(1), now);
        }
        t.succeeded("ann", addr(1));
        // The user's failures are gone: no delay (a fifth would be one).
        assert_eq!(
            t.begin("ann", addr(1), now),
            Verdict::Proceed(Duration::ZERO)
        );
        // The address counted 5 attempts, one taken back by the success:
        // 15 more make 19, so one more proceeds (the 20th) and the next is
        // refused. Without the take-back the 20th would already be refused.
        for i in 0..15 {
            assert!(matches!(
                t.begin(&format!("u{i}"), addr(1), now),
                Verdict::Proceed(_)
            ));
        }
        assert!(matches!(t.begin("v", addr(1), now), Verdict::Proceed(_)));
        assert!(matches!(t.begin("w", addr(1), now), Verdict::Refuse(_)));
    }

    #[test]
    fn one_address_guessing_many_usernames_is_refused() {
        let t = LoginThrottle::default();
        let now = Instant::now();
        for i in 0..20 {
            assert!(matches!(
                t.begin(&format!("user{i}"), addr(9), now),
                Verdict::Proceed(_)
            ));
        }
        assert!(matches!(t.begin("fresh", addr(9), now), Verdict::Refuse(_)));
        assert!(matches!(
            t.begin("fresh", addr(8), now),
            Verdict::Proceed(_)
        ));
    }

    #[test]
    fn the_table_stays_bounded() {
        let t = LoginThrottle::new(ThrottlePolicy {
            max_entries: 10,
            ..Default::default()
        });
        let now = Instant::now();
        for i in 0..100 {
            t.begin(&format!("u{i}"), None, now + Duration::from_millis(i));
        }
        assert!(t.entries.lock().unwrap().len() <= 10);
    }
}
