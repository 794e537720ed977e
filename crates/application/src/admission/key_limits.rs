//! Each key's own rate limit (`rate_limit` on the key, CONTRACT §10): a
//! token bucket per key (GCRA, from `governor`) holding `requests` tokens and
//! refilled at `requests` per `per_secs` seconds. Exact on one instance; each
//! instance keeps its own buckets (the cross-instance bound is in
//! `docs/operations.md`).
//!
//! Memory is bounded: at most [`MAX_TRACKED_KEYS`] buckets, and a bucket is
//! dropped once it has been idle for its `per_secs`, by which time it has
//! refilled whole, so dropping it forgets nothing.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cola_domain::{ApiKeyId, RateLimit};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

/// Buckets kept at most; past that the least recently used are dropped (a
/// dropped bucket starts again full).
pub const MAX_TRACKED_KEYS: u64 = 100_000;

type Cell<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// One key's bucket, for the limit it was made for: a changed limit (seen
/// once the verified-key cache has the key's new reading) gets a new bucket.
struct Bucket<C: Clock> {
    limit: RateLimit,
    cell: Cell<C>,
}

/// The quota of `limit`: a burst of `requests`, one more every
/// `per_secs / requests`.
fn quota(limit: RateLimit) -> Quota {
    let requests = NonZeroU32::new(limit.requests()).unwrap_or(NonZeroU32::MIN);
    let period = Duration::from_secs(u64::from(limit.per_secs())) / requests.get();
    Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(requests))
        .allow_burst(requests)
}

/// A bucket lives as long as it takes to refill after its last use.
struct UntilRefilled;

impl<C: Clock> moka::Expiry<ApiKeyId, Arc<Bucket<C>>> for UntilRefilled {
    fn expire_after_create(
        &self,
        _: &ApiKeyId,
        bucket: &Arc<Bucket<C>>,
        _: Instant,
    ) -> Option<Duration> {
        Some(Duration::from_secs(u64::from(bucket.limit.per_secs())))
    }

    fn expire_after_read(
        &self,
        _: &ApiKeyId,
        bucket: &Arc<Bucket<C>>,
        _: Instant,
        _: Option<Duration>,
        _: Instant,
    ) -> Option<Duration> {
        Some(Duration::from_secs(u64::from(bucket.limit.per_secs())))
    }

    fn expire_after_update(
        &self,
        _: &ApiKeyId,
        bucket: &Arc<Bucket<C>>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(Duration::from_secs(u64::from(bucket.limit.per_secs())))
    }
}

/// The per-key buckets of one instance, on the real clock (or, in tests, on
/// one the test moves).
pub struct KeyRateLimiter<C: Clock = DefaultClock> {
    clock: C,
    buckets: moka::sync::Cache<ApiKeyId, Arc<Bucket<C>>>,
}

impl<C: Clock> std::fmt::Debug for KeyRateLimiter<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRateLimiter").finish_non_exhaustive()
    }
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

impl<C> KeyRateLimiter<C>
where
    C: Clock + Clone + Send + Sync + 'static,
{
    #[must_use]
    pub fn with_clock(capacity: u64, clock: C) -> Self {
        Self {
            clock,
            buckets: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .expire_after(UntilRefilled)
                .build(),
        }
    }

    fn bucket(&self, limit: RateLimit) -> Arc<Bucket<C>> {
        Arc::new(Bucket {
            limit,
            cell: RateLimiter::direct_with_clock(quota(limit), self.clock.clone()),
        })
    }

    /// Takes one request from `key`'s bucket under `limit`; `Err(seconds)`
    /// to wait (at least 1) when it is empty. The one check of a key's rate
    /// limit, for every surface that admits a key.
    pub fn check(&self, key: ApiKeyId, limit: RateLimit) -> Result<(), u64> {
        let mut bucket = self.buckets.get_with(key, || self.bucket(limit));
        if bucket.limit != limit {
            // Replaced atomically, so concurrent requests under the new limit
            // share one new bucket.
            bucket = self
                .buckets
                .entry(key)
                .and_upsert_with(|existing| match existing {
                    Some(entry) if entry.value().limit == limit => entry.into_value(),
                    _ => self.bucket(limit),
                })
                .into_value();
        }
        bucket.cell.check().map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            // Whole seconds, rounded up: `Retry-After` has no fractions.
            (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
        })
    }

    /// Buckets currently kept.
    #[must_use]
    pub fn tracked(&self) -> u64 {
        self.buckets.run_pending_tasks();
        self.buckets.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;
    use uuid::Uuid;

    fn key(n: u128) -> ApiKeyId {
        ApiKeyId::from_uuid(Uuid::from_u128(n))
    }

    fn limit(requests: i64, per_secs: i64) -> RateLimit {
        RateLimit::new(requests, per_secs).expect("limit")
    }

    #[test]
    fn exactly_the_limit_is_admitted_then_the_key_waits_for_one_refill() {
        let clock = FakeRelativeClock::default();
        let limiter = KeyRateLimiter::with_clock(100, clock.clone());
        let five_a_minute = limit(5, 60);
        for request in 0..5 {
            assert_eq!(limiter.check(key(1), five_a_minute), Ok(()), "{request}");
        }
        // One token every 12 s.
        assert_eq!(limiter.check(key(1), five_a_minute), Err(12));
        assert_eq!(limiter.check(key(2), five_a_minute), Ok(()));
        clock.advance(Duration::from_secs(12));
        assert_eq!(limiter.check(key(1), five_a_minute), Ok(()));
        assert_eq!(limiter.check(key(1), five_a_minute), Err(12));
    }

    #[test]
    fn a_changed_limit_takes_effect_at_once() {
        let limiter = KeyRateLimiter::with_clock(100, FakeRelativeClock::default());
        assert_eq!(limiter.check(key(1), limit(1, 60)), Ok(()));
        assert!(limiter.check(key(1), limit(1, 60)).is_err());
        assert_eq!(limiter.check(key(1), limit(3, 60)), Ok(()));
    }

    #[test]
    fn the_buckets_stay_within_their_bound() {
        let limiter = KeyRateLimiter::with_clock(100, FakeRelativeClock::default());
        for n in 0..5_000 {
            assert!(limiter.check(key(n), limit(10, 60)).is_ok());
        }
        assert!(limiter.tracked() <= 100, "{}", limiter.tracked());
    }
}
