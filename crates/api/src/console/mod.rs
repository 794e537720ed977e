//! The web console at `/console` (docs/console.md): a small page served from
//! the binary (its files are compiled in; nothing is fetched from anywhere
//! else) that manages keys through the REST API, authenticated by the
//! console's session cookie. Sign-in is OpenID Connect with the provider of
//! `COLA_OIDC_ISSUER`, or, with `--dev`, the demo admin without a provider.
//! Starting a sign-in (`GET /console/login`) is rate limited per client
//! address.

pub mod session;

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION, RETRY_AFTER, SET_COOKIE};
use actix_web::middleware::DefaultHeaders;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::Utc;
use cola_application::{
    ConsoleSessionService, Limiter, PendingSignIn, Principal, ProviderSignIn, Quota, Role,
    SIGN_IN_TTL, SignInStart,
};
use cola_domain::{TenantId, UserId};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::auth::jwt::JwtVerifier;
use crate::config::{JwtKey, JwtSettings, Settings};
use crate::foundations::client_ip::ClientIpResolver;
use crate::foundations::html::escape;
use crate::foundations::problem::Problem;
use crate::foundations::routing::method_not_allowed;
use session::{ConsoleSessions, IssueError, Purpose, SessionRefusal};

/// The sign-in flow's cookie: `SameSite=Lax`, since the provider's redirect
/// back is a cross-site navigation that a `Strict` cookie would miss; scoped
/// to the callback.
const SIGN_IN_COOKIE: &str = "cola_sign_in";
pub const CALLBACK_PATH: &str = "/console/callback";

/// `default-src 'self'` and nothing inline: the page's script and style are
/// files of the binary; no frame may hold the console.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Sign-ins an address may start at once.
pub const SIGN_IN_BURST: u32 = 20;
/// Then one more per this long: 20 a minute.
pub const SIGN_IN_PERIOD: Duration = Duration::from_secs(3);
/// Addresses whose sign-in buckets are kept at most.
const MAX_TRACKED_SIGN_IN_ADDRESSES: u64 = 100_000;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// How a person signs in to the console.
#[derive(Debug)]
pub enum SignIn {
    /// `--dev`: as this principal (the demo admin), with no provider.
    Dev(Principal),
    /// Through the provider, by the infrastructure's client.
    Oidc(Box<dyn ProviderSignIn>),
    /// Neither: the console explains how to configure one.
    Unavailable,
}

/// What the console's routes share.
#[derive(Debug)]
pub struct Console {
    pub sessions: Option<Arc<ConsoleSessions>>,
    pub sign_in: SignIn,
    /// Maps a provider's ID token to a principal exactly as the REST API
    /// maps its bearer tokens.
    pub verifier: Option<Arc<JwtVerifier>>,
    /// `COLA_PUBLIC_URL`, without a trailing slash.
    pub public_url: String,
    /// Sign-in starts per client address.
    pub sign_in_limit: Limiter<IpAddr>,
}

fn sign_in_quota() -> Quota {
    let burst = NonZeroU32::new(SIGN_IN_BURST).unwrap_or(NonZeroU32::MIN);
    Quota::new(burst, SIGN_IN_PERIOD)
}

/// The console as `settings` configure it: sessions keyed by the JWT secret
/// (static mode) or the OIDC client secret and stored through `store`;
/// sign-in as the demo admin with `--dev`, through the provider with an OIDC
/// client (`provider`, built by the caller from the same settings), or not
/// at all.
pub fn build(
    settings: &Settings,
    verifier: Option<Arc<JwtVerifier>>,
    public_url: &str,
    store: Arc<ConsoleSessionService>,
    provider: Option<Box<dyn ProviderSignIn>>,
) -> Console {
    let session_secret = match (&settings.oidc_client, &settings.jwt) {
        (Some(client), _) => Some(client.client_secret.expose().as_bytes().to_vec()),
        (
            None,
            Some(JwtSettings {
                key: JwtKey::Secret(secret),
                ..
            }),
        ) => Some(secret.expose().as_bytes().to_vec()),
        _ => None,
    };
    let sessions =
        session_secret.map(|secret| Arc::new(ConsoleSessions::new(&secret, public_url, store)));
    let sign_in = if settings.dev {
        SignIn::Dev(Principal {
            tenant_id: TenantId::from_uuid(crate::cli::DEMO_TENANT),
            user_id: UserId::from_uuid(crate::cli::DEMO_USER),
            role: Role::Admin,
        })
    } else if let Some(provider) = provider {
        SignIn::Oidc(provider)
    } else {
        SignIn::Unavailable
    };
    Console {
        sessions,
        sign_in,
        verifier,
        public_url: public_url.to_owned(),
        sign_in_limit: Limiter::new(MAX_TRACKED_SIGN_IN_ADDRESSES),
    }
}

pub fn configure(config: &mut web::ServiceConfig) {
    config.service(
        web::scope("/console")
            .wrap(
                DefaultHeaders::new()
                    .add(("content-security-policy", CONTENT_SECURITY_POLICY))
                    .add(("x-frame-options", "DENY"))
                    .add(("x-content-type-options", "nosniff"))
                    .add(("referrer-policy", "no-referrer"))
                    .add(("cross-origin-opener-policy", "same-origin")),
            )
            .service(
                web::resource("")
                    .route(web::get().to(index))
                    .default_service(web::to(method_not_allowed("GET"))),
            )
            .service(
                web::resource("/")
                    .route(web::get().to(index))
                    .default_service(web::to(method_not_allowed("GET"))),
            )
            .service(
                web::resource("/assets/{file}")
                    .route(web::get().to(asset))
                    .default_service(web::to(method_not_allowed("GET"))),
            )
            .service(
                web::resource("/session")
                    .route(web::get().to(current_session))
                    .default_service(web::to(method_not_allowed("GET"))),
            )
            .service(
                web::resource("/login")
                    .route(web::get().to(login))
                    .default_service(web::to(method_not_allowed("GET"))),
            )
            .service(
                web::resource("/callback")
                    .route(web::get().to(callback))
                    .default_service(web::to(method_not_allowed("GET"))),
            )
            .service(
                web::resource("/logout")
                    .route(web::post().to(logout))
                    .default_service(web::to(method_not_allowed("POST"))),
            )
            .default_service(web::to(crate::foundations::routing::not_found)),
    );
}

async fn index() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header((CACHE_CONTROL, "no-cache"))
        .body(INDEX_HTML)
}

async fn asset(file: web::Path<String>) -> HttpResponse {
    let (body, content_type) = match file.as_str() {
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "app.css" => (APP_CSS, "text/css; charset=utf-8"),
        _ => return Problem::not_found().response(),
    };
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, content_type))
        .insert_header((CACHE_CONTROL, "no-cache"))
        .body(body)
}

/// The page's view of the session: who is signed in and the CSRF token its
/// writes must carry, or how to sign in.
#[derive(Debug, Serialize)]
struct SessionView<'a> {
    signed_in: bool,
    /// `dev`, `oidc` or `unavailable`.
    sign_in: &'static str,
    public_url: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<session::SessionRole>,
    #[serde(skip_serializing_if = "Option::is_none")]
    display_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    csrf_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<chrono::DateTime<Utc>>,
}

async fn current_session(console: web::Data<Console>, request: HttpRequest) -> HttpResponse {
    let session = match &console.sessions {
        Some(sessions) if sessions.has_cookie(&request) => match sessions.session(&request).await {
            Ok(session) => Some(session),
            Err(SessionRefusal::Unavailable) => return Problem::unavailable().response(),
            Err(SessionRefusal::Invalid | SessionRefusal::Forged(_)) => None,
        },
        _ => None,
    };
    let sign_in = match console.sign_in {
        SignIn::Dev(_) => "dev",
        SignIn::Oidc(_) => "oidc",
        SignIn::Unavailable => "unavailable",
    };
    let view = match session {
        Some(session) => SessionView {
            signed_in: true,
            sign_in,
            public_url: &console.public_url,
            tenant_id: Some(session.tenant_id.to_string()),
            user_id: Some(session.user_id.to_string()),
            role: Some(session.role),
            display_name: session.display_name,
            csrf_token: Some(session.csrf_token),
            expires_at: Some(session.expires_at),
        },
        None => SessionView {
            signed_in: false,
            sign_in,
            public_url: &console.public_url,
            tenant_id: None,
            user_id: None,
            role: None,
            display_name: None,
            csrf_token: None,
            expires_at: None,
        },
    };
    HttpResponse::Ok()
        .insert_header((CACHE_CONTROL, "no-store"))
        .json(view)
}

fn see_other(location: &str) -> actix_web::HttpResponseBuilder {
    let mut response = HttpResponse::build(StatusCode::SEE_OTHER);
    response
        .insert_header((LOCATION, location.to_owned()))
        .insert_header((CACHE_CONTROL, "no-store"));
    response
}

/// The page for a session that could not be started.
fn not_issued(error: &IssueError) -> HttpResponse {
    tracing::warn!(error = %cola_application::error_chain(error), "console session could not be started");
    if error.is_unavailable() {
        page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Sign-in is unavailable",
            "Cola cannot reach its database to start your session. Try again shortly.",
        )
    } else {
        page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Sign-in failed",
            "Your session could not be started. Try again.",
        )
    }
}

async fn login(
    console: web::Data<Console>,
    resolver: web::Data<ClientIpResolver>,
    request: HttpRequest,
) -> HttpResponse {
    let Some(sessions) = &console.sessions else {
        return not_configured();
    };
    if matches!(console.sign_in, SignIn::Unavailable) {
        return not_configured();
    }
    // Counted before any work: a sign-in writes a session (dev) or sends
    // the browser to the provider, and neither is for a loop.
    if let Some(client) = resolver.of_request(&request)
        && let Err(wait) = console.sign_in_limit.check(client, sign_in_quota())
    {
        tracing::info!(client = %client, "console sign-in start rate limited");
        return too_many_sign_ins(wait.secs());
    }
    match &console.sign_in {
        SignIn::Dev(principal) => {
            match sessions.issue(*principal, Some("demo admin".into())).await {
                Ok((_, cookie)) => see_other("/console")
                    .insert_header((SET_COOKIE, cookie))
                    .finish(),
                Err(error) => not_issued(&error),
            }
        }
        SignIn::Oidc(provider) => start_at_provider(sessions, provider.as_ref()).await,
        SignIn::Unavailable => not_configured(),
    }
}

/// Sends the browser to the provider, the pending sign-in sealed in the
/// sign-in cookie for the callback.
async fn start_at_provider(
    sessions: &ConsoleSessions,
    provider: &dyn ProviderSignIn,
) -> HttpResponse {
    match provider.begin(Utc::now()).await {
        Ok(SignInStart { url, pending }) => match sessions.seal(Purpose::SignIn, &pending) {
            Some(sealed) => {
                let cookie = sessions.cookie(
                    SIGN_IN_COOKIE,
                    &sealed,
                    CALLBACK_PATH,
                    "Lax",
                    SIGN_IN_TTL.num_seconds(),
                );
                see_other(&url).insert_header((SET_COOKIE, cookie)).finish()
            }
            None => page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Sign-in failed",
                "Try again.",
            ),
        },
        Err(error) => {
            tracing::warn!(error = %cola_application::error_chain(&error), "console sign-in could not start");
            page(
                StatusCode::BAD_GATEWAY,
                "The identity provider is unavailable",
                "Cola could not reach the identity provider to sign you in. Try again shortly; \
                 if it persists, an operator should check COLA_OIDC_ISSUER.",
            )
        }
    }
}

/// 429 with `Retry-After`, as a page: the person is in a browser.
fn too_many_sign_ins(wait: u64) -> HttpResponse {
    let mut response = page(
        StatusCode::TOO_MANY_REQUESTS,
        "Too many sign-ins",
        &format!(
            "Too many sign-ins were started from your address. Try again in {wait} second{}.",
            if wait == 1 { "" } else { "s" }
        ),
    );
    if let Ok(value) = wait.to_string().parse() {
        response.headers_mut().insert(RETRY_AFTER, value);
    }
    response
}

fn not_configured() -> HttpResponse {
    page(
        StatusCode::NOT_FOUND,
        "Sign-in is not configured",
        "Set COLA_OIDC_ISSUER, COLA_OIDC_CLIENT_ID and COLA_OIDC_CLIENT_SECRET to sign in with \
         your identity provider, or run `cola-api --dev` for a local demo.",
    )
}

#[derive(Debug, Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

async fn callback(console: web::Data<Console>, request: HttpRequest) -> HttpResponse {
    let (Some(sessions), SignIn::Oidc(provider), Some(verifier)) =
        (&console.sessions, &console.sign_in, &console.verifier)
    else {
        return not_configured();
    };
    let clear_flow = sessions.cookie(SIGN_IN_COOKIE, "", CALLBACK_PATH, "Lax", 0);
    let failed = |detail: &str| {
        with_cookie(
            page(StatusCode::BAD_REQUEST, "Sign-in failed", detail),
            &clear_flow,
        )
    };
    let (pending, code) = match answered_sign_in(&request, sessions) {
        Ok(answered) => answered,
        Err(detail) => return failed(detail),
    };
    let signed_in = match provider.finish(pending, code).await {
        Ok(signed_in) => signed_in,
        Err(error) => {
            tracing::warn!(error = %cola_application::error_chain(&error), "console sign-in failed");
            return failed("The identity provider's answer could not be verified. Sign in again.");
        }
    };
    let principal = match verifier
        .verify_for(&signed_in.id_token, Some(provider.client_id()))
        .await
    {
        Ok(principal) => principal,
        Err(refusal) => {
            tracing::info!(reason = %cola_application::error_chain(&refusal), "console sign-in refused");
            return failed(
                "Your account cannot use Cola: its token lacks the tenant claim, or its claims \
                 are not what Cola is configured to read. Ask an operator.",
            );
        }
    };
    match sessions.issue(principal, signed_in.display_name).await {
        Ok((_, cookie)) => {
            tracing::info!(tenant = %principal.tenant_id, "console sign-in");
            see_other("/console")
                .append_header((SET_COOKIE, cookie))
                .append_header((SET_COOKIE, clear_flow))
                .finish()
        }
        Err(error) => with_cookie(not_issued(&error), &clear_flow),
    }
}

/// The sign-in the provider's redirect answers, and its code; or what to
/// tell the person when it is not one started here, still fresh, that the
/// provider granted.
fn answered_sign_in(
    request: &HttpRequest,
    sessions: &ConsoleSessions,
) -> Result<(PendingSignIn, String), &'static str> {
    let Ok(query) = web::Query::<CallbackQuery>::from_query(request.query_string()) else {
        return Err("The identity provider's answer was malformed. Sign in again.");
    };
    if let Some(error) = &query.error {
        tracing::info!(error = %error, "the identity provider refused the console sign-in");
        return Err("The identity provider did not sign you in. Sign in again.");
    }
    let pending: Option<PendingSignIn> = session::cookie(request, SIGN_IN_COOKIE)
        .and_then(|sealed| sessions.open(Purpose::SignIn, &sealed))
        .filter(|pending: &PendingSignIn| pending.expires_at > Utc::now());
    let (Some(pending), Some(code), Some(state)) = (pending, query.code.clone(), &query.state)
    else {
        return Err("This sign-in expired or was not started here. Sign in again.");
    };
    // Constant-time: the state is the callback's CSRF token.
    if !bool::from(state.as_bytes().ct_eq(pending.state.as_bytes())) {
        return Err("This sign-in does not match the one started here. Sign in again.");
    }
    Ok((pending, code))
}

/// `response` with `cookie` set (here: the sign-in cookie cleared).
fn with_cookie(mut response: HttpResponse, cookie: &str) -> HttpResponse {
    if let Ok(value) = cookie.parse() {
        response.headers_mut().insert(SET_COOKIE, value);
    }
    response
}

/// Signs out: the stored session is ended, so its cookie is refused by every
/// instance from now on, and the cookie is removed. A write like any other,
/// so it carries the CSRF token (no other site can sign a person out). A
/// database that cannot be reached is a 503 and the cookie is kept, so the
/// person can try again rather than believe they signed out.
async fn logout(console: web::Data<Console>, request: HttpRequest) -> HttpResponse {
    let Some(sessions) = &console.sessions else {
        return HttpResponse::NoContent().finish();
    };
    // The signature and the CSRF token are checked on the cookie itself:
    // an ended session may still be signed out of (the page may not know).
    if let Some(session) = sessions.signed(&request, Utc::now()) {
        if let Err(reason) = sessions.check_write(&request, &session) {
            tracing::info!(reason, "console sign-out refused: CSRF check failed");
            return Problem::new(
                StatusCode::FORBIDDEN,
                "csrf",
                "sign out from the console page: its CSRF token or Origin is missing or wrong",
            )
            .response();
        }
        if sessions.end(&session).await.is_err() {
            return Problem::unavailable().response();
        }
        tracing::info!(tenant = %session.tenant_id, "console sign-out");
    }
    HttpResponse::NoContent()
        .insert_header((SET_COOKIE, sessions.clear_session()))
        .insert_header((CACHE_CONTROL, "no-store"))
        .finish()
}

/// A small page of its own (no script), for sign-in outcomes that happen
/// outside the single page.
fn page(status: StatusCode, title: &str, detail: &str) -> HttpResponse {
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · Cola</title><link rel=\"stylesheet\" href=\"/console/assets/app.css\"></head>\
         <body><main class=\"notice\"><h1>{title}</h1><p>{detail}</p>\
         <p><a href=\"/console\">Back to the console</a></p></main></body></html>",
        title = escape(title),
        detail = escape(detail),
    );
    HttpResponse::build(status)
        .insert_header((CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header((CACHE_CONTROL, "no-store"))
        .body(body)
}
