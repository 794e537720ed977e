//! A rate limit on management writes, per tenant user: `POST`, `PATCH` and
//! `DELETE` under `/api/mcp/keys` and `/api/mcp/servers` take the [`Writer`] extractor in place of
//! [`Caller`]. Each write evicts cached verifications and writes an audit
//! event, and a create runs argon2, so one valid JWT in a loop would
//! otherwise cost every instance's cache and the database for everyone.
//! Reads are not limited.
//!
//! The limit is a token bucket per (tenant, user) ([`TokenBuckets`]):
//! [`WRITE_BURST`] writes at once, refilled at [`WRITES_PER_SECOND`], at
//! most [`MAX_TRACKED_WRITERS`] buckets kept.

use std::num::NonZeroU32;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpRequest, web};
use cola_application::Principal;
use cola_domain::{TenantId, UserId};
use futures_util::future::LocalBoxFuture;
use governor::Quota;
use governor::clock::{Clock, DefaultClock};

use crate::jwt::Caller;
use crate::problem::Problem;
use crate::token_buckets::TokenBuckets;

/// Writes a user may make at once.
pub const WRITE_BURST: u32 = 20;
/// Writes per second a user may keep up.
pub const WRITES_PER_SECOND: u32 = 10;
/// Buckets kept at most; past that the least recently used are dropped.
pub const MAX_TRACKED_WRITERS: u64 = 100_000;

const BURST: NonZeroU32 = NonZeroU32::new(WRITE_BURST).expect("WRITE_BURST is not zero");
const RATE: NonZeroU32 = NonZeroU32::new(WRITES_PER_SECOND).expect("WRITES_PER_SECOND is not zero");

/// The write buckets of one instance, on the real clock (or, in tests, on one
/// the test moves).
#[derive(Debug)]
pub struct WriteLimiter<C: Clock = DefaultClock> {
    buckets: TokenBuckets<(TenantId, UserId), C>,
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
            buckets: TokenBuckets::with_clock(
                Quota::per_second(RATE).allow_burst(BURST),
                capacity,
                clock,
            ),
        }
    }

    /// Takes one write from `principal`'s bucket; `Err(seconds)` to wait
    /// when it is empty.
    pub fn check(&self, principal: &Principal) -> Result<(), u64> {
        self.buckets.check((principal.tenant_id, principal.user_id))
    }

    /// Buckets currently kept.
    #[must_use]
    pub fn tracked(&self) -> u64 {
        self.buckets.tracked()
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
    use std::time::Duration;
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
