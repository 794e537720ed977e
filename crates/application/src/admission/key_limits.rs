//! Each key's own rate limit (`rate_limit` on the key; docs/operations.md,
//! "Per-key rate limits"): a token bucket per key of the one [`Limiter`], holding `requests` tokens
//! and refilled at `requests` per `per_secs` seconds. Exact on one instance;
//! each instance keeps its own buckets (the cross-instance bound is in
//! `docs/operations.md`).
//!
//! Memory is bounded: at most [`MAX_TRACKED_KEYS`] buckets, and a bucket is
//! dropped once it has been idle long enough to refill whole, so dropping
//! it forgets nothing. A changed limit (seen once the verified-key cache
//! has the key's new reading) gets a new bucket.

use cola_domain::{ApiKeyId, RateLimit};
use governor::clock::DefaultClock;

use crate::limits::{Limiter, LimiterClock, Quota, RetryAfter};

/// Buckets kept at most; past that the least recently used are dropped (a
/// dropped bucket starts again full).
pub const MAX_TRACKED_KEYS: u64 = 100_000;

/// The per-key buckets of one instance, on the real clock (or, in tests, on
/// one the test moves).
#[derive(Debug)]
pub struct KeyRateLimiter<C: LimiterClock = DefaultClock> {
    buckets: Limiter<ApiKeyId, C>,
}

impl Default for KeyRateLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl KeyRateLimiter {
    #[must_use]
    pub fn new() -> Self {
        Self::with_clock(MAX_TRACKED_KEYS, DefaultClock::default())
    }
}

impl<C: LimiterClock> KeyRateLimiter<C> {
    #[must_use]
    pub fn with_clock(capacity: u64, clock: C) -> Self {
        Self {
            buckets: Limiter::with_clock(capacity, clock),
        }
    }

    /// Takes one request from `key`'s bucket under `limit`; how long to
    /// wait when it is empty. The one check of a key's rate limit, for
    /// every surface that admits a key.
    pub fn check(&self, key: ApiKeyId, limit: RateLimit) -> Result<(), RetryAfter> {
        self.buckets.check(key, Quota::of(limit))
    }

    /// Buckets currently kept.
    #[must_use]
    pub fn tracked(&self) -> u64 {
        self.buckets.tracked()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::limits::TestClock;
    use uuid::Uuid;

    fn key(n: u128) -> ApiKeyId {
        ApiKeyId::from_uuid(Uuid::from_u128(n))
    }

    fn limit(requests: i64, per_secs: i64) -> RateLimit {
        RateLimit::new(requests, per_secs).expect("limit")
    }

    fn wait(result: Result<(), RetryAfter>) -> Result<(), u64> {
        result.map_err(RetryAfter::secs)
    }

    #[test]
    fn exactly_the_limit_is_admitted_then_the_key_waits_for_one_refill() {
        let clock = TestClock::default();
        let limiter = KeyRateLimiter::with_clock(100, clock.clone());
        let five_a_minute = limit(5, 60);
        for request in 0..5 {
            assert_eq!(
                wait(limiter.check(key(1), five_a_minute)),
                Ok(()),
                "{request}"
            );
        }
        // One token every 12 s.
        assert_eq!(wait(limiter.check(key(1), five_a_minute)), Err(12));
        assert_eq!(wait(limiter.check(key(2), five_a_minute)), Ok(()));
        clock.advance(Duration::from_secs(12));
        assert_eq!(wait(limiter.check(key(1), five_a_minute)), Ok(()));
        assert_eq!(wait(limiter.check(key(1), five_a_minute)), Err(12));
    }

    #[test]
    fn a_changed_limit_takes_effect_at_once() {
        let limiter = KeyRateLimiter::with_clock(100, TestClock::default());
        assert_eq!(wait(limiter.check(key(1), limit(1, 60))), Ok(()));
        assert!(limiter.check(key(1), limit(1, 60)).is_err());
        assert_eq!(wait(limiter.check(key(1), limit(3, 60))), Ok(()));
    }

    #[test]
    fn the_buckets_stay_within_their_bound() {
        let limiter = KeyRateLimiter::with_clock(100, TestClock::default());
        for n in 0..5_000 {
            assert!(limiter.check(key(n), limit(10, 60)).is_ok());
        }
        assert!(limiter.tracked() <= 100, "{}", limiter.tracked());
    }
}
