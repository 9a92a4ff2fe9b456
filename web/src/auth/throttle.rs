//! Login throttling per account and per client address, stored in SQLite
//! (`login_throttle`) so every web process shares it. From the
//! [`ThrottlePolicy::free`]-th failure on, a key is blocked for a delay that
//! doubles with each further failure up to [`ThrottlePolicy::max`]; while
//! blocked, attempts are refused without checking the password (HTTP 429,
//! `Retry-After`). Unknown accounts are counted like known ones, so the
//! throttle reveals nothing about which names exist.

use std::time::Duration;

use rm_store::throttle::{self, Entry};

use crate::AppState;

/// How hard the throttle is.
#[derive(Debug, Clone)]
pub struct ThrottlePolicy {
    /// The failure that brings the first delay (earlier ones are free).
    pub free: u32,
    /// The first delay; each further failure doubles it.
    pub base: Duration,
    /// The longest delay.
    pub max: Duration,
    /// A key quiet this long starts over.
    pub forget_after: Duration,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        Self {
            free: 3,
            base: Duration::from_secs(1),
            max: Duration::from_secs(15 * 60),
            forget_after: Duration::from_secs(3600),
        }
    }
}

impl ThrottlePolicy {
    /// The delay after the `failures`-th consecutive failure.
    pub fn delay(&self, failures: i64) -> Duration {
        let over = failures - i64::from(self.free);
        if over < 0 {
            return Duration::ZERO;
        }
        let factor = 1u32.checked_shl(u32::try_from(over.min(30)).unwrap_or(30));
        factor
            .and_then(|f| self.base.checked_mul(f))
            .map_or(self.max, |d| d.min(self.max))
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The throttle keys of a login attempt.
pub fn keys(username: &str, addr: &str) -> [String; 2] {
    [
        format!("account:{}", username.trim().to_lowercase()),
        format!("addr:{addr}"),
    ]
}

/// How long the caller must wait before trying, if blocked.
pub async fn blocked_for(state: &AppState, keys: &[String]) -> rm_store::Result<Option<Duration>> {
    let now = state.now();
    let mut conn = state.store.read().await?;
    let mut wait = 0i64;
    for key in keys {
        if let Some(e) = throttle::get(&mut conn, key).await? {
            wait = wait.max(e.blocked_until - now);
        }
    }
    Ok((wait > 0).then(|| Duration::from_millis(u64::try_from(wait).unwrap_or(0))))
}

/// Counts a failure against every key; returns the delay now imposed (the
/// longest over the keys), zero while failures are still free.
pub async fn failed(state: &AppState, keys: &[String]) -> rm_store::Result<Duration> {
    let now = state.now();
    let policy = &state.auth.throttle;
    let mut tx = state.store.write().await?;
    let mut longest = Duration::ZERO;
    for key in keys {
        let previous = throttle::get(&mut tx, key).await?;
        let failures = match previous {
            Some(e) if now - e.last_failure_at < ms(policy.forget_after) => e.failures + 1,
            _ => 1,
        };
        let delay = policy.delay(failures);
        longest = longest.max(delay);
        throttle::put(
            &mut tx,
            &Entry {
                key: key.clone(),
                failures,
                last_failure_at: now,
                blocked_until: now + ms(delay),
            },
        )
        .await?;
    }
    tx.commit().await?;
    Ok(longest)
}

/// Forgets an account's failures after it signed in.
pub async fn succeeded(state: &AppState, account_key: &str) -> rm_store::Result<()> {
    let mut tx = state.store.write().await?;
    throttle::clear(&mut tx, account_key).await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_start_after_the_free_failures_and_double_up_to_the_cap() {
        let p = ThrottlePolicy::default();
        assert_eq!(p.delay(1), Duration::ZERO);
        assert_eq!(p.delay(2), Duration::ZERO);
        assert_eq!(p.delay(3), Duration::from_secs(1));
        assert_eq!(p.delay(4), Duration::from_secs(2));
        assert_eq!(p.delay(5), Duration::from_secs(4));
        assert_eq!(p.delay(40), p.max);
        assert_eq!(p.delay(i64::MAX), p.max);
    }
}
