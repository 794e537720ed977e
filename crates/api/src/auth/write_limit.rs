//! A rate limit on management writes, per tenant user: `POST`, `PATCH` and
//! `DELETE` under `/api/mcp/keys` and `/api/mcp/servers` take the [`Writer`]
//! extractor in place of [`Caller`]. The limit itself (why, and how much)
//! is the application's [`WriteLimiter`]; this is only its door.

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpRequest, web};
use cola_application::{Principal, WriteLimiter};
use futures_util::future::LocalBoxFuture;

use crate::auth::Caller;
use crate::foundations::problem::Problem;

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
            .with_retry_after(wait.secs())
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
