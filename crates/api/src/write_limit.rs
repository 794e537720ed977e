//! A rate limit on management writes, per tenant user: `POST`, `PATCH` and
//! `DELETE` under `/api/mcp/keys` and `/api/mcp/servers` take the [`Writer`] extractor in place of
//! [`Caller`]. Each write evicts cached verifications and writes an audit
//! event, and a create runs argon2, so one valid JWT in a loop would
//! otherwise cost every instance's cache and the database for everyone.
//! Reads are not limited.
//!
//! The limit is a token bucket (GCRA, from `governor`) per (tenant, user):
//! [`WRITE_BURST`] writes at once, refilled at [`WRITES_PER_SECOND`]. Memory
//! is bounded: at most [`MAX_TRACKED_WRITERS`] buckets are kept, and a
//! bucket idle long enough to have refilled is dropped, which forgets
//! nothing.

use std::num::NonZeroU32;
use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpRequest, web};
use cola_application::Principal;
use cola_domain::{TenantId, UserId};
use futures_util::future::LocalBoxFuture;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::jwt::Caller;
use crate::problem::Problem;

/// Writes a user may make at once.
pub const WRITE_BURST: u32 = 20;
/// Writes per second a user may keep up.
pub const WRITES_PER_SECOND: u32 = 10;
/// Buckets kept at most; past that the least recently used are dropped.
pub const MAX_TRACKED_WRITERS: u64 = 100_000;

const BURST: NonZeroU32 = NonZeroU32::new(WRITE_BURST).expect("WRITE_BURST is not zero");
const RATE: NonZeroU32 = NonZeroU32::new(WRITES_PER_SECOND).expect("WRITES_PER_SECOND is not zero");

/// How long an idle bucket takes to fill up again: after that, a fresh one is
/// the same.
fn refill_time() -> Duration {
    Duration::from_secs(u64::from(WRITE_BURST.div_ceil(WRITES_PER_SECOND)))
}

type Bucket<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// The write buckets of one instance, on the real clock (or, in tests, on one
/// the test moves).
pub struct WriteLimiter<C: Clock = DefaultClock> {
    quota: Quota,
    clock: C,
    buckets: moka::sync::Cache<(TenantId, UserId), std::sync::Arc<Bucket<C>>>,
}

impl<C: Clock> std::fmt::Debug for WriteLimiter<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteLimiter")
            .field("quota", &self.quota)
            .finish_non_exhaustive()
    }
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

impl<C> WriteLimiter<C>
where
    C: Clock + Clone + Send + Sync + 'static,
{
    /// A limiter keeping at most `capacity` buckets, timed by `clock`.
    #[must_use]
    pub fn with_clock(capacity: u64, clock: C) -> Self {
        Self {
            quota: Quota::per_second(RATE).allow_burst(BURST),
            clock,
            buckets: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_idle(refill_time())
                .build(),
        }
    }

    /// Takes one write from `principal`'s bucket; `Err(seconds)` to wait
    /// when it is empty.
    pub fn check(&self, principal: &Principal) -> Result<(), u64> {
        let bucket = self
            .buckets
            .get_with((principal.tenant_id, principal.user_id), || {
                std::sync::Arc::new(RateLimiter::direct_with_clock(
                    self.quota,
                    self.clock.clone(),
                ))
            });
        bucket.check().map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            // Whole seconds, rounded up: `Retry-After` has no fractions, and
            // a client retrying early would only be refused again.
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

/// The authenticated tenant user of a management write, within their write
/// limit. Refused as [`Caller`] is, and with 429 and `Retry-After` past the
/// limit.
#[derive(Debug, Clone, Copy)]
pub struct Writer(pub Principal);

impl Writer {
    fn admit(request: &HttpRequest, caller: Caller) -> Result<Self, Problem> {
        let Caller(principal) = caller;
        let Some(limiter) = request.app_data::<web::Data<WriteLimiter>>() else {
            // Not configured is a wiring mistake; fail closed.
            return Err(Problem::internal());
        };
        limiter.check(&principal).map_err(|wait| {
            tracing::info!(tenant = %principal.tenant_id, "management write rate limited");
            Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "too many changes by this user; try again shortly",
            )
            .with_retry_after(wait.max(1))
        })?;
        Ok(Self(principal))
    }
}

impl FromRequest for Writer {
    type Error = Problem;
    type Future = LocalBoxFuture<'static, Result<Self, Problem>>;

    fn from_request(request: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let caller = Caller::from_request(request, payload);
        let request = request.clone();
        Box::pin(async move { Self::admit(&request, caller.await?) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cola_application::Role;
    use governor::clock::FakeRelativeClock;
    use uuid::Uuid;

    fn principal(tenant: u128, user: u128) -> Principal {
        Principal {
            tenant_id: TenantId::from_uuid(Uuid::from_u128(tenant)),
            user_id: UserId::from_uuid(Uuid::from_u128(user)),
            role: Role::Member,
        }
    }

    #[test]
    fn a_burst_past_the_limit_is_refused_for_that_user_only() {
        let clock = FakeRelativeClock::default();
        let limiter = WriteLimiter::with_clock(MAX_TRACKED_WRITERS, clock.clone());
        let (alice, bob, other_tenants_alice) = (principal(1, 2), principal(1, 3), principal(9, 2));
        for write in 0..WRITE_BURST {
            assert_eq!(limiter.check(&alice), Ok(()), "write {write}");
        }
        // Empty: the next token is 100 ms away, announced as 1 s.
        assert_eq!(limiter.check(&alice), Err(1));
        assert_eq!(limiter.check(&bob), Ok(()));
        assert_eq!(limiter.check(&other_tenants_alice), Ok(()));
        // The sustained rate: one write per 1/WRITES_PER_SECOND s.
        clock.advance(Duration::from_millis(1000 / u64::from(WRITES_PER_SECOND)));
        assert_eq!(limiter.check(&alice), Ok(()));
        assert_eq!(limiter.check(&alice), Err(1));
    }

    #[test]
    fn the_buckets_stay_within_their_bound() {
        let limiter = WriteLimiter::with_clock(100, FakeRelativeClock::default());
        for user in 0..5_000 {
            assert!(limiter.check(&principal(1, user)).is_ok());
        }
        assert!(limiter.tracked() <= 100, "{}", limiter.tracked());
    }
}
