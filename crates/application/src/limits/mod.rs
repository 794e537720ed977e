//! Token buckets by key (GCRA, from `governor`), with bounded memory: the
//! one limiter behind every rate limit of Cola — each key's own rate limit,
//! the per-user limit on management writes, the per-address limit on console
//! sign-in starts.
//!
//! Each check names the quota of its key, so a key's quota may differ from
//! its neighbour's and may change: a changed quota gets a new bucket (a key
//! whose limit was raised or lowered is judged by the new limit at once). At
//! most `capacity` buckets are kept; a bucket idle long enough to have
//! refilled is dropped, which forgets nothing (a fresh one is the same), and
//! past the capacity the least recently used go first.

mod writes;

use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cola_domain::RateLimit;
use governor::RateLimiter;
use governor::clock::{Clock as GovernorClock, DefaultClock, FakeRelativeClock};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};

pub use writes::{MAX_TRACKED_WRITERS, WRITE_BURST, WRITES_PER_SECOND, WriteLimiter};

/// The clock a [`Limiter`] is timed by: the real one, or in tests
/// [`TestClock`], which the test moves.
pub trait LimiterClock: GovernorClock + Clone + Send + Sync + 'static {}

impl<C: GovernorClock + Clone + Send + Sync + 'static> LimiterClock for C {}

/// A clock that stands still until the test moves it.
pub type TestClock = FakeRelativeClock;

/// The shape of one bucket: `burst` requests at once, then one more every
/// `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota(governor::Quota);

impl Quota {
    /// `burst` at once, one more every `period` (at least a nanosecond: a
    /// zero period would be no limit at all).
    #[must_use]
    pub fn new(burst: NonZeroU32, period: Duration) -> Self {
        let period = period.max(Duration::from_nanos(1));
        let quota = governor::Quota::with_period(period)
            .unwrap_or_else(|| governor::Quota::per_second(burst))
            .allow_burst(burst);
        Self(quota)
    }

    /// A key's own rate limit: a burst of `requests`, refilled at `requests`
    /// per `per_secs` seconds.
    #[must_use]
    pub fn of(limit: RateLimit) -> Self {
        let requests = NonZeroU32::new(limit.requests()).unwrap_or(NonZeroU32::MIN);
        let period = Duration::from_secs(u64::from(limit.per_secs())) / requests.get();
        Self::new(requests, period)
    }

    /// How long an idle bucket takes to fill up again: after that, a fresh
    /// one is the same. At least a second, so a bucket is not dropped
    /// mid-burst.
    fn refill_time(self) -> Duration {
        self.0
            .burst_size_replenished_in()
            .max(Duration::from_secs(1))
    }
}

/// How long to wait before the next request is admitted, in whole seconds
/// rounded up and at least one: `Retry-After` has no fractions, and a client
/// retrying early would only be refused again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(u64);

impl RetryAfter {
    #[must_use]
    pub fn secs(self) -> u64 {
        self.0
    }

    fn of(wait: Duration) -> Self {
        Self((wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1))
    }
}

type Cell<C> =
    RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as GovernorClock>::Instant>>;

/// One key's bucket, for the quota it was made for.
struct Bucket<C: GovernorClock> {
    quota: Quota,
    cell: Cell<C>,
}

/// A bucket lives as long as it takes to refill after its last use.
struct UntilRefilled;

impl<K, C: GovernorClock> moka::Expiry<K, Arc<Bucket<C>>> for UntilRefilled {
    fn expire_after_create(&self, _: &K, bucket: &Arc<Bucket<C>>, _: Instant) -> Option<Duration> {
        Some(bucket.quota.refill_time())
    }

    fn expire_after_read(
        &self,
        _: &K,
        bucket: &Arc<Bucket<C>>,
        _: Instant,
        _: Option<Duration>,
        _: Instant,
    ) -> Option<Duration> {
        Some(bucket.quota.refill_time())
    }

    fn expire_after_update(
        &self,
        _: &K,
        bucket: &Arc<Bucket<C>>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(bucket.quota.refill_time())
    }
}

/// One bucket per key, on the real clock (or, in tests, on one the test
/// moves).
pub struct Limiter<K, C: GovernorClock = DefaultClock> {
    clock: C,
    buckets: moka::sync::Cache<K, Arc<Bucket<C>>>,
}

impl<K, C: GovernorClock> std::fmt::Debug for Limiter<K, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("tracked", &self.buckets.entry_count())
            .finish_non_exhaustive()
    }
}

impl<K> Limiter<K>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    /// At most `capacity` buckets, on the real clock.
    #[must_use]
    pub fn new(capacity: u64) -> Self {
        Self::with_clock(capacity, DefaultClock::default())
    }
}

impl<K, C> Limiter<K, C>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    C: LimiterClock,
{
    /// At most `capacity` buckets, timed by `clock`.
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

    fn bucket(&self, quota: Quota) -> Arc<Bucket<C>> {
        Arc::new(Bucket {
            quota,
            cell: RateLimiter::direct_with_clock(quota.0, self.clock.clone()),
        })
    }

    /// Takes one token from `key`'s bucket of `quota`; how long to wait
    /// when it is empty.
    pub fn check(&self, key: K, quota: Quota) -> Result<(), RetryAfter> {
        let mut bucket = self.buckets.get_with_by_ref(&key, || self.bucket(quota));
        if bucket.quota != quota {
            // Replaced atomically, so concurrent requests under the new
            // quota share one new bucket.
            bucket = self
                .buckets
                .entry(key)
                .and_upsert_with(|existing| match existing {
                    Some(entry) if entry.value().quota == quota => entry.into_value(),
                    _ => self.bucket(quota),
                })
                .into_value();
        }
        bucket
            .cell
            .check()
            .map_err(|not_until| RetryAfter::of(not_until.wait_time_from(self.clock.now())))
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

    fn quota() -> Quota {
        Quota::new(
            NonZeroU32::new(2).expect("not zero"),
            Duration::from_secs(3),
        )
    }

    fn retry(secs: u64) -> Result<(), RetryAfter> {
        Err(RetryAfter(secs))
    }

    #[test]
    fn each_key_has_a_bucket_of_its_own() {
        let clock = TestClock::default();
        let buckets = Limiter::with_clock(100, clock.clone());
        assert_eq!(buckets.check("a", quota()), Ok(()));
        assert_eq!(buckets.check("a", quota()), Ok(()));
        assert_eq!(buckets.check("a", quota()), retry(3));
        assert_eq!(buckets.check("b", quota()), Ok(()));
        clock.advance(Duration::from_millis(2500));
        assert_eq!(
            buckets.check("a", quota()),
            retry(1),
            "half a second, rounded up"
        );
        clock.advance(Duration::from_millis(500));
        assert_eq!(buckets.check("a", quota()), Ok(()));
    }

    #[test]
    fn a_changed_quota_gets_a_new_bucket_at_once() {
        let limiter = Limiter::with_clock(100, TestClock::default());
        let one = Quota::new(NonZeroU32::MIN, Duration::from_secs(60));
        let three = Quota::new(
            NonZeroU32::new(3).expect("not zero"),
            Duration::from_secs(20),
        );
        assert_eq!(limiter.check(1, one), Ok(()));
        assert!(limiter.check(1, one).is_err());
        assert_eq!(limiter.check(1, three), Ok(()));
    }

    #[test]
    fn the_buckets_stay_within_their_bound() {
        let buckets = Limiter::with_clock(100, TestClock::default());
        for key in 0..5_000 {
            assert!(buckets.check(key, quota()).is_ok());
        }
        assert!(buckets.tracked() <= 100, "{}", buckets.tracked());
    }

    #[test]
    fn the_wait_is_whole_seconds_rounded_up_and_never_zero() {
        assert_eq!(RetryAfter::of(Duration::from_millis(1)).secs(), 1);
        assert_eq!(RetryAfter::of(Duration::ZERO).secs(), 1);
        assert_eq!(RetryAfter::of(Duration::from_millis(12_000)).secs(), 12);
        assert_eq!(RetryAfter::of(Duration::from_millis(12_001)).secs(), 13);
    }
}
