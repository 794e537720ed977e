//! The verify API (docs/verify.md): `POST /api/mcp/verify`, for a tenant's own
//! MCP server that checks keys itself, and `GET /.well-known/jwks.json`,
//! the public keys of the identity assertions the gateway sends.
//!
//! The order is fixed so that nothing is decided for a caller that has not
//! shown a server token: the calling address's failure limit, the token,
//! the body, then the key's admission (the server's failure limit, charged
//! to its token and its address, the key, its grant, the key's rate limit,
//! and only then one counted use).

use std::net::IpAddr;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use cola_application::{
    CallingServer, Charge, KeyVerifier, Refusal, ServerTokens, TokenRefusal, Verification,
    VerifyCode, VerifyError, VerifyRequest, VerifyView,
};
use cola_domain::KeyPrefix;
use cola_infrastructure::IdentityKeys;
use serde::Serialize;

use crate::foundations::bearer::bearer;
use crate::foundations::json::{is_json, parse_json, read_body, unsupported_media_type};
use crate::foundations::problem::{PROBLEM_JSON, Problem};
use crate::foundations::routing::{get_only, method_not_allowed};
use crate::mcp::McpGate;

/// What the verify API holds besides the gate's limiters.
#[derive(Debug)]
pub struct VerifyApi {
    pub tokens: Arc<ServerTokens>,
    pub verifier: KeyVerifier,
}

pub fn configure(config: &mut web::ServiceConfig) {
    config
        .service(
            web::resource("/api/mcp/verify")
                .route(web::post().to(verify))
                .default_service(web::to(method_not_allowed("POST"))),
        )
        .service(get_only("/.well-known/jwks.json", jwks));
}

/// The 429 of the verify API: a problem body that also reads as an outcome
/// (`valid: false`, `code: RATE_LIMITED`), so a server that only looks at
/// `code` refuses the request too.
#[derive(Serialize)]
struct RateLimited {
    #[serde(rename = "type")]
    kind: &'static str,
    title: &'static str,
    status: u16,
    detail: &'static str,
    valid: bool,
    code: VerifyCode,
}

fn rate_limited(detail: &'static str, wait: u64) -> HttpResponse {
    let body = RateLimited {
        kind: "urn:cola:problem:rate-limited",
        title: "Too Many Requests",
        status: 429,
        detail,
        valid: false,
        code: VerifyCode::RateLimited,
    };
    HttpResponse::TooManyRequests()
        .insert_header((header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON)))
        .insert_header((header::RETRY_AFTER, wait.max(1).to_string()))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(serde_json::to_string(&body).unwrap_or_default())
}

fn answer(view: &VerifyView) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(view)
}

#[utoipa::path(
    post,
    path = "/api/mcp/verify",
    operation_id = "verify_key",
    summary = "Verify a key for one of the tenant's own MCP servers",
    description = "Called by a tenant's MCP server with its verification token. Always 200 for an \
        outcome: `valid` and `code` (`VALID`, `NOT_FOUND`, `REVOKED`, `EXPIRED`, `IP_DENIED`, \
        `NOT_GRANTED`); `VALID` adds the key, its permissions on this server, `expires_at` and \
        `cache_ttl_ms`, and counts one use of the key. Over the key's rate limit, or after too \
        many failures of the calling server (its token or its address; never the `client_ip` it \
        names): 429 with `Retry-After` and \
        `code: RATE_LIMITED`.",
    request_body(content = VerifyRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The outcome", body = VerifyView),
        (status = 400, description = "Invalid input; `errors` names every bad field", body = crate::rest::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "No valid server verification token", body = crate::rest::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited; `code: RATE_LIMITED`", body = crate::rest::openapi::ProblemDetails, content_type = "application/problem+json", headers(("Retry-After" = u64, description = "Seconds to wait"))),
        crate::rest::openapi::BodyFailures,
        (status = 503, description = "The key cannot be verified right now", body = crate::rest::openapi::ProblemDetails, content_type = "application/problem+json"),
    ),
    security(("server_token" = [])),
    tag = "verify",
)]
pub(crate) async fn verify(
    request: HttpRequest,
    payload: web::Payload,
    gate: web::Data<McpGate>,
    api: web::Data<VerifyApi>,
) -> HttpResponse {
    let Some(caller) = gate.client_ip.of_request(&request) else {
        return Problem::unauthorized("a valid server verification token is required").response();
    };
    // Before a token is shown, the caller is only its address.
    let attempts = gate.admission.attempts();
    if let Err(wait) = attempts.check(Charge::Client(caller)) {
        gate.metrics.verify_answer("RATE_LIMITED");
        return rate_limited(TOO_MANY_FAILURES, wait.retry_after_secs);
    }
    let server = match calling_server(&request, &gate, &api, caller).await {
        Ok(server) => server,
        Err(response) => return response,
    };
    let command = match read_command(&request, payload).await {
        Ok(command) => command,
        Err(problem) => return problem.response(),
    };
    let verification = api.verifier.verify(&server, caller, &command).await;
    render(&gate, &server, caller, verification)
}

/// The server a verification token names, or the answer refusing it: a bad
/// token counts against the caller's address.
async fn calling_server(
    request: &HttpRequest,
    gate: &McpGate,
    api: &VerifyApi,
    caller: IpAddr,
) -> Result<Arc<CallingServer>, HttpResponse> {
    match api.tokens.authenticate(bearer(request.headers())).await {
        Ok(server) => Ok(server),
        Err(TokenRefusal::Invalid) => {
            gate.metrics.verify_answer("BAD_TOKEN");
            tracing::info!(client = %caller, outcome = "bad_server_token", "verify request");
            if let Err(wait) = gate
                .admission
                .attempts()
                .record_failure(Charge::Client(caller))
            {
                return Err(rate_limited(TOO_MANY_FAILURES, wait.retry_after_secs));
            }
            Err(Problem::unauthorized("a valid server verification token is required").response())
        }
        Err(TokenRefusal::Unavailable(error)) => {
            gate.metrics.verify_answer("UNAVAILABLE");
            tracing::warn!(error = %cola_application::error_chain(&error), "server token lookup failed");
            Err(Problem::unavailable().response())
        }
    }
}

/// The answer to a verification, counted and logged.
fn render(
    gate: &McpGate,
    server: &CallingServer,
    caller: IpAddr,
    verification: Result<Verification, VerifyError>,
) -> HttpResponse {
    match verification {
        Ok(Verification::Valid(valid)) => {
            let key = valid.admission.principal.key();
            gate.metrics.verify_answer("VALID");
            tracing::debug!(
                slug = %server.slug,
                tenant = %server.tenant_id,
                key_prefix = %key.prefix,
                %caller,
                code = "VALID",
                "verify request"
            );
            answer(&valid.view)
        }
        Ok(Verification::Refused { code, refusal }) => {
            log_answer(server, caller, refusal.as_ref(), code.as_str());
            gate.metrics.verify_answer(code.as_str());
            answer(&VerifyView::refused(code))
        }
        Ok(Verification::RateLimited {
            by_key,
            retry_after_secs,
            refusal,
        }) => {
            log_answer(server, caller, refusal.as_ref(), "RATE_LIMITED");
            gate.metrics.verify_answer("RATE_LIMITED");
            let detail = if by_key {
                "this key's rate limit is reached; try again later"
            } else {
                TOO_MANY_FAILURES
            };
            rate_limited(detail, retry_after_secs)
        }
        Err(error @ (VerifyError::Saturated | VerifyError::Unavailable)) => {
            gate.metrics.verify_answer("UNAVAILABLE");
            tracing::warn!(slug = %server.slug, error = %error, "verify request not decided");
            Problem::unavailable().response()
        }
    }
}

/// A server that has failed too often: it is charged for the keys it asks
/// about, never the addresses it names.
const TOO_MANY_FAILURES: &str = "too many failed attempts from this server";

fn log_answer(server: &CallingServer, caller: IpAddr, refusal: Option<&Refusal>, code: &str) {
    let prefix = refusal.and_then(|refusal| refusal.prefix.as_ref());
    tracing::info!(
        slug = %server.slug,
        tenant = %server.tenant_id,
        key_prefix = prefix.map_or("-", KeyPrefix::as_str),
        %caller,
        code,
        "verify request"
    );
}

async fn read_command(
    request: &HttpRequest,
    payload: web::Payload,
) -> Result<cola_application::VerifyCommand, Problem> {
    if !is_json(request) {
        return Err(unsupported_media_type());
    }
    let body = read_body(request, &mut payload.into_inner())
        .await
        .map_err(Problem::from)?;
    parse_json::<VerifyRequest>(&body)?
        .into_command()
        .map_err(|errors| Problem::invalid(&errors))
}

#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    operation_id = "identity_jwks",
    summary = "The public keys of the identity assertions (X-Cola-Identity)",
    description = "The current signing key first, then the previous one during a rotation. \
        Each key's `kid` is its RFC 7638 thumbprint.",
    responses((status = 200, description = "A JWK set", content_type = "application/json")),
    security(()),
    tag = "verify",
)]
pub(crate) async fn jwks(keys: web::Data<IdentityKeys>) -> HttpResponse {
    HttpResponse::build(StatusCode::OK)
        // A verifier that meets an unknown `kid` (just after a rotation)
        // fetches again; the previous key stays published meanwhile.
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .json(keys.jwks())
}
