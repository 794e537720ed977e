//! Token buckets by key (GCRA, from `governor`), with bounded memory: the
//! per-user limit on management writes and the per-address limit on console
//! sign-in starts are both one of these.
//!
//! At most `capacity` buckets are kept; a bucket idle long enough to have
//! refilled is dropped, which forgets nothing (a fresh one is the same), and
//! past the capacity the least recently used go first.

use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

type Bucket<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// One bucket per key, each with the same quota, on the real clock (or, in
/// tests, on one the test moves).
pub struct TokenBuckets<K, C: Clock = DefaultClock> {
    quota: Quota,
    clock: C,
    buckets: moka::sync::Cache<K, Arc<Bucket<C>>>,
}

impl<K, C: Clock> std::fmt::Debug for TokenBuckets<K, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenBuckets")
            .field("quota", &self.quota)
            .finish_non_exhaustive()
    }
}

impl<K> TokenBuckets<K>
where
    K: Hash + Eq + Send + Sync + 'static,
{
    /// Buckets of `quota`, at most `capacity` of them, on the real clock.
    #[must_use]
    pub fn new(quota: Quota, capacity: u64) -> Self {
        Self::with_clock(quota, capacity, DefaultClock::default())
    }
}

impl<K, C> TokenBuckets<K, C>
where
    K: Hash + Eq + Send + Sync + 'static,
    C: Clock + Clone + Send + Sync + 'static,
{
    #[must_use]
    pub fn with_clock(quota: Quota, capacity: u64, clock: C) -> Self {
        Self {
            quota,
            clock,
            buckets: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_idle(refill_time(quota))
                .build(),
        }
    }

    /// Takes one token from `key`'s bucket; `Err(seconds)` to wait when it
    /// is empty, in whole seconds rounded up (`Retry-After` has no
    /// fractions, and a client retrying early would only be refused again).
    pub fn check(&self, key: K) -> Result<(), u64> {
        let bucket = self.buckets.get_with(key, || {
            Arc::new(RateLimiter::direct_with_clock(
                self.quota,
                self.clock.clone(),
            ))
        });
        bucket.check().map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }

    /// Buckets currently kept.
    #[must_use]
    pub fn tracked(&self) -> u64 {
        self.buckets.run_pending_tasks();
        self.buckets.entry_count()
    }
}

/// How long an idle bucket takes to fill up again: after that, a fresh one
/// is the same. At least a second, so a bucket is not dropped mid-burst.
fn refill_time(quota: Quota) -> Duration {
    quota
        .burst_size_replenished_in()
        .max(Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use governor::clock::FakeRelativeClock;

    use super::*;

    fn quota() -> Quota {
        Quota::with_period(Duration::from_secs(3))
            .expect("a period")
            .allow_burst(NonZeroU32::new(2).expect("not zero"))
    }

    #[test]
    fn each_key_has_a_bucket_of_its_own() {
        let clock = FakeRelativeClock::default();
        let buckets = TokenBuckets::with_clock(quota(), 100, clock.clone());
        assert_eq!(buckets.check("a"), Ok(()));
        assert_eq!(buckets.check("a"), Ok(()));
        assert_eq!(buckets.check("a"), Err(3));
        assert_eq!(buckets.check("b"), Ok(()));
        clock.advance(Duration::from_millis(2500));
        assert_eq!(buckets.check("a"), Err(1), "half a second, rounded up");
        clock.advance(Duration::from_millis(500));
        assert_eq!(buckets.check("a"), Ok(()));
    }

    #[test]
    fn the_buckets_stay_within_their_bound() {
        let buckets = TokenBuckets::with_clock(quota(), 100, FakeRelativeClock::default());
        for key in 0..5_000 {
            assert!(buckets.check(key).is_ok());
        }
        assert!(buckets.tracked() <= 100, "{}", buckets.tracked());
    }
}
