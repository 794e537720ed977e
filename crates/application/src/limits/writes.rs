//! The limit on management writes, per tenant user: `POST`, `PATCH` and
//! `DELETE` under `/api/mcp/keys` and `/api/mcp/servers`. Each write evicts
//! cached verifications and writes an audit event, and a create runs
//! argon2, so one valid JWT in a loop would otherwise cost every instance's
//! cache and the database for everyone. Reads are not limited.
//!
//! [`WRITE_BURST`] writes at once, refilled at [`WRITES_PER_SECOND`], at
//! most [`MAX_TRACKED_WRITERS`] buckets kept.

use std::num::NonZeroU32;
use std::time::Duration;

use cola_domain::{TenantId, UserId};
use governor::clock::DefaultClock;

use super::{Limiter, LimiterClock, Quota, RetryAfter};
use crate::principal::Principal;

/// Writes a user may make at once.
pub const WRITE_BURST: u32 = 20;
/// Writes per second a user may keep up.
pub const WRITES_PER_SECOND: u32 = 10;
/// Buckets kept at most; past that the least recently used are dropped.
pub const MAX_TRACKED_WRITERS: u64 = 100_000;

const BURST: NonZeroU32 = NonZeroU32::new(WRITE_BURST).expect("WRITE_BURST is not zero");
const PERIOD: Duration = Duration::from_millis(1000 / WRITES_PER_SECOND as u64);

/// The write buckets of one instance, on the real clock (or, in tests, on one
/// the test moves).
#[derive(Debug)]
pub struct WriteLimiter<C: LimiterClock = DefaultClock> {
    buckets: Limiter<(TenantId, UserId), C>,
}

impl Default for WriteLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl WriteLimiter {
    #[must_use]
    pub fn new() -> Self {
        Self::with_clock(MAX_TRACKED_WRITERS, DefaultClock::default())
    }
}

impl<C: LimiterClock> WriteLimiter<C> {
    /// A limiter keeping at most `capacity` buckets, timed by `clock`.
    #[must_use]
    pub fn with_clock(capacity: u64, clock: C) -> Self {
        Self {
            buckets: Limiter::with_clock(capacity, clock),
        }
    }

    /// Takes one write from `principal`'s bucket; how long to wait when it
    /// is empty.
    pub fn check(&self, principal: &Principal) -> Result<(), RetryAfter> {
        self.buckets.check(
            (principal.tenant_id, principal.user_id),
            Quota::new(BURST, PERIOD),
        )
    }

    /// Buckets currently kept.
    #[must_use]
    pub fn tracked(&self) -> u64 {
        self.buckets.tracked()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::TestClock;
    use crate::principal::Role;
    use uuid::Uuid;

    fn principal(tenant: u128, user: u128) -> Principal {
        Principal {
            tenant_id: TenantId::from_uuid(Uuid::from_u128(tenant)),
            user_id: UserId::from_uuid(Uuid::from_u128(user)),
            role: Role::Member,
        }
    }

    fn wait(result: Result<(), RetryAfter>) -> Result<(), u64> {
        result.map_err(RetryAfter::secs)
    }

    #[test]
    fn a_burst_past_the_limit_is_refused_for_that_user_only() {
        let clock = TestClock::default();
        let limiter = WriteLimiter::with_clock(MAX_TRACKED_WRITERS, clock.clone());
        let (alice, bob, other_tenants_alice) = (principal(1, 2), principal(1, 3), principal(9, 2));
        for write in 0..WRITE_BURST {
            assert_eq!(wait(limiter.check(&alice)), Ok(()), "write {write}");
        }
        // Empty: the next token is 100 ms away, announced as 1 s.
        assert_eq!(wait(limiter.check(&alice)), Err(1));
        assert_eq!(wait(limiter.check(&bob)), Ok(()));
        assert_eq!(wait(limiter.check(&other_tenants_alice)), Ok(()));
        // The sustained rate: one write per 1/WRITES_PER_SECOND s.
        clock.advance(Duration::from_millis(1000 / u64::from(WRITES_PER_SECOND)));
        assert_eq!(wait(limiter.check(&alice)), Ok(()));
        assert_eq!(wait(limiter.check(&alice)), Err(1));
    }

    #[test]
    fn the_buckets_stay_within_their_bound() {
        let limiter = WriteLimiter::with_clock(100, TestClock::default());
        for user in 0..5_000 {
            assert!(limiter.check(&principal(1, user)).is_ok());
        }
        assert!(limiter.tracked() <= 100, "{}", limiter.tracked());
    }
}
