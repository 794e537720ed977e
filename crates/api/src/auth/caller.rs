//! The `Caller` extractor: the management principal of a request, from a
//! bearer JWT or the console's session cookie, with failures counted
//! against the client's address.

use std::net::IpAddr;
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpRequest, web};
use cola_application::{AttemptLimiter, Charge, Principal};
use futures_util::future::LocalBoxFuture;

use super::jwt::{JwtVerifier, TokenRefusal};
use crate::console::session::{ConsoleSessions, SessionRefusal};
use crate::foundations::bearer::bearer;
use crate::foundations::client_ip::ClientIpResolver;
use crate::foundations::problem::Problem;

/// What the `Caller` extractor needs, shared through app data.
#[derive(Debug, Clone)]
pub struct ManagementAuth {
    /// `None` when no JWT setting is configured: every bearer token is
    /// refused.
    pub verifier: Option<Arc<JwtVerifier>>,
    /// The console's sessions: a session cookie is the other credential.
    pub sessions: Option<Arc<ConsoleSessions>>,
    pub limiter: Arc<AttemptLimiter>,
    pub client_ip: ClientIpResolver,
    /// `--dev`: a refusal also says how to get a fresh demo token (the one
    /// the banner printed lasts 24 hours).
    pub dev: bool,
}

/// The authenticated tenant user of a management request.
#[derive(Debug, Clone, Copy)]
pub struct Caller(pub Principal);

impl Caller {
    async fn authenticate(request: HttpRequest) -> Result<Self, Problem> {
        let Some(auth) = request.app_data::<web::Data<ManagementAuth>>().cloned() else {
            return Err(Problem::internal());
        };
        let client: Option<IpAddr> = auth.client_ip.of_request(&request);
        if let Some(client) = client
            && let Err(wait) = auth.limiter.check(Charge::Client(client))
        {
            return Err(Problem::too_many_requests(wait.retry_after_secs));
        }
        // A bearer JWT wins over a console session cookie: a script that
        // sends a token means the token.
        let outcome = match (bearer(request.headers()), &auth.sessions) {
            (Some(token), _) => match &auth.verifier {
                None => Err(TokenRefusal::NotConfigured),
                Some(verifier) => verifier.verify(token).await,
            },
            (None, Some(sessions)) if sessions.has_cookie(&request) => {
                match sessions.principal(&request).await {
                    Ok(principal) => Ok(principal),
                    // The session's record could not be read: no one is
                    // admitted, and the caller is not to blame.
                    Err(SessionRefusal::Unavailable) => return Err(Problem::unavailable()),
                    // A forged cross-site write is not a failed sign-in:
                    // it is refused without counting against the address.
                    Err(SessionRefusal::Forged(reason)) => {
                        tracing::info!(reason, "console write refused: CSRF check failed");
                        return Err(Problem::new(
                            StatusCode::FORBIDDEN,
                            "csrf",
                            "this change must come from the console page: its CSRF token or \
                             Origin is missing or wrong; reload the console",
                        ));
                    }
                    Err(SessionRefusal::Invalid) => Err(TokenRefusal::Session),
                }
            }
            (None, _) => Err(TokenRefusal::Missing),
        };
        outcome.map(Caller).map_err(|refusal| {
            tracing::info!(reason = %cola_application::error_chain(&refusal), "management request refused");
            // Failures are numbered atomically: one past the limit is
            // answered 429 even if it passed the check above concurrently.
            match client.map(|client| auth.limiter.record_failure(Charge::Client(client))) {
                Some(Err(wait)) => Problem::too_many_requests(wait.retry_after_secs),
                _ => {
                    let mut reason = refusal.description();
                    if auth.dev {
                        reason.push_str("; dev mode: `cola-api dev-token` prints a fresh token");
                    }
                    Problem::invalid_token(&reason, refusal.presented_a_token())
                }
            }
        })
    }
}

impl FromRequest for Caller {
    type Error = Problem;
    type Future = LocalBoxFuture<'static, Result<Self, Problem>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        Box::pin(Self::authenticate(request.clone()))
    }
}
