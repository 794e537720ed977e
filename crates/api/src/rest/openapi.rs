//! The OpenAPI 3.1 document of the management API (README.md, "The management API"), built
//! from the handlers' `#[utoipa::path]` annotations and the DTOs' schemas,
//! served at `GET /api/openapi.json`.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use actix_web::HttpResponse;
use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoResponses, Modify, OpenApi, ToSchema};

use crate::rest;

// Documentation-only mirror of `crate::foundations::problem::Problem`.
/// An RFC 9457 problem: the body of every error response
/// (`application/problem+json`).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Problem)]
pub struct ProblemDetails {
    /// `urn:cola:problem:<slug>`, e.g. `urn:cola:problem:invalid-input`.
    #[serde(rename = "type")]
    #[schema(example = "urn:cola:problem:invalid-input")]
    pub kind: String,
    /// The HTTP status's reason phrase.
    pub title: String,
    /// The HTTP status code.
    #[schema(minimum = 400, maximum = 599)]
    pub status: u16,
    /// What went wrong, for people.
    pub detail: String,
    /// For invalid input: every bad field, with what is wrong with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = BTreeMap<String, Vec<String>>, required = false)]
    pub errors: Option<BTreeMap<String, Vec<String>>>,
}

/// The failures every management route can answer with (documentation
/// only: never built).
#[derive(Debug, IntoResponses)]
#[allow(dead_code)]
pub enum ManagementFailures {
    /// No valid management JWT
    #[response(
        status = 401,
        content_type = "application/problem+json",
        headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"cola\"`; for a refused token also `error=\"invalid_token\", error_description=\"…\"` saying why (RFC 6750)"))
    )]
    Unauthorized(ProblemDetails),
    /// Too many failed authentications from this address, or (on a write)
    /// too many changes by this user
    #[response(
        status = 429,
        content_type = "application/problem+json",
        headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))
    )]
    RateLimited(ProblemDetails),
    /// Database unavailable
    #[response(
        status = 503,
        content_type = "application/problem+json",
        headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))
    )]
    Unavailable(ProblemDetails),
}

/// The failures every public route that does work can answer with
/// (documentation only).
#[derive(Debug, IntoResponses)]
#[allow(dead_code)]
pub enum PublicFailures {
    /// Too many failed attempts from this address
    #[response(
        status = 429,
        content_type = "application/problem+json",
        headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))
    )]
    RateLimited(ProblemDetails),
    /// Database unavailable, or key verification at capacity
    #[response(
        status = 503,
        content_type = "application/problem+json",
        headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))
    )]
    Unavailable(ProblemDetails),
}

/// The failures of a route that reads a JSON body (documentation only).
#[derive(Debug, IntoResponses)]
#[allow(dead_code)]
pub enum BodyFailures {
    /// Body over 64 KiB
    #[response(status = 413, content_type = "application/problem+json")]
    TooLarge(ProblemDetails),
    /// Body not `application/json`, or sent with a `Content-Encoding`
    #[response(status = 415, content_type = "application/problem+json")]
    NotJson(ProblemDetails),
}

/// The failures of a change to an existing key (documentation only).
#[derive(Debug, IntoResponses)]
#[allow(dead_code)]
pub enum ChangeFailures {
    /// Invalid input; `errors` names every bad field
    #[response(status = 400, content_type = "application/problem+json")]
    Invalid(ProblemDetails),
    /// No such key (or not yours)
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(ProblemDetails),
    /// The key is revoked
    #[response(status = 409, content_type = "application/problem+json")]
    Revoked(ProblemDetails),
}

/// The body of `/health` and `/ready`.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthStatus {
    /// `ok` (liveness) or `ready` (readiness).
    #[schema(example = "ok")]
    pub status: String,
}

/// The name of the management JWT security scheme.
pub const BEARER_JWT: &str = "bearer_jwt";
/// The name of the verify API's security scheme.
pub const SERVER_TOKEN: &str = "server_token";

struct BearerJwt;

impl Modify for BearerJwt {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER_JWT,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A management JWT (HS256 with `COLA_JWT_SECRET` or RS256/ES256/ES384 with \
                         `COLA_JWT_PUBLIC_KEY_FILE`) carrying `sub`, `tenant_id`, `role` and `exp`.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            SERVER_TOKEN,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("colasrv_")
                    .description(Some(
                        "A registered server's verification token (`colasrv_…`), minted by \
                         `POST /api/mcp/servers/{id}/token`.",
                    ))
                    .build(),
            ),
        );
    }
}

#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Cola management API",
        description = "Create, list, change and revoke the API keys that MCP clients present to \
                       Cola's `/mcp` endpoint, register the tenant's upstream MCP servers \
                       that keys are granted, and let those servers verify keys themselves. \
                       Every error is an RFC 9457 problem (`application/problem+json`).",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        rest::keys::create,
        rest::keys::list,
        rest::keys::get,
        rest::keys::revoke,
        rest::keys::update_metadata,
        rest::keys::update_permissions,
        rest::keys::events,
        rest::keys::rotate,
        rest::users::offboard,
        rest::report::report,
        rest::report::github,
        rest::servers::create,
        rest::servers::list,
        rest::servers::get,
        rest::servers::update,
        rest::servers::delete,
        rest::servers::mint_token,
        rest::verify::verify,
        rest::verify::jwks,
        rest::health::health,
        rest::health::ready,
    ),
    components(schemas(
        ProblemDetails,
        HealthStatus,
        cola_application::CreateKeyRequest,
        cola_application::PermissionsInput,
        cola_application::PermissionsPatchInput,
        cola_application::UpdateMetadataRequest,
        cola_application::UpdatePermissionsRequest,
        cola_application::RateLimitInput,
        cola_application::RotateKeyRequest,
        cola_application::ReportKeyRequest,
        cola_application::OffboardView,
        rest::report::ReportReceived,
        rest::report::GithubMatch,
        rest::report::GithubLabel,
        cola_application::KeyView,
        cola_application::CreatedKeyView,
        cola_application::KeyPage,
        cola_application::EventView,
        cola_application::EventList,
        cola_application::schema::KeyStatus,
        cola_application::schema::EventType,
        cola_application::schema::Permissions,
        cola_application::schema::Grant,
        cola_application::GrantInput,
        cola_application::CreateServerRequest,
        cola_application::UpdateServerRequest,
        cola_application::ServerView,
        cola_application::ServerPage,
        cola_application::MintedTokenView,
        cola_application::VerifyRequest,
        cola_application::VerifyView,
        cola_application::VerifyCode,
        cola_application::GrantedPermissions,
    )),
    modifiers(&BearerJwt),
    tags(
        (name = "keys", description = "Key management (management JWT required)"),
        (name = "reports", description = "Reporting leaked keys (public; holding the key is the proof)"),
        (name = "servers", description = "The tenant's upstream MCP servers (management JWT required; changes need an admin)"),
        (name = "verify", description = "For the tenant's own MCP servers: key verification (server token) and the identity assertions' public keys (public)"),
        (name = "service", description = "Liveness and readiness (public)"),
    ),
)]
pub struct ApiDoc;

/// The document as served, rendered once.
pub(crate) static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    ApiDoc::openapi()
        .to_json()
        .unwrap_or_else(|error| format!(r#"{{"error":"{error}"}}"#))
});

/// `GET /api/openapi.json`: public, no authentication.
pub async fn document() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "application/json"))
        .insert_header((CACHE_CONTROL, "public, max-age=300"))
        .body(DOCUMENT.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_with_the_bearer_scheme() {
        let document: serde_json::Value =
            serde_json::from_str(&DOCUMENT).expect("the document is JSON");
        assert!(
            document["openapi"]
                .as_str()
                .expect("openapi")
                .starts_with("3.1")
        );
        let scheme = &document["components"]["securitySchemes"][BEARER_JWT];
        assert_eq!(scheme["type"], "http");
        assert_eq!(scheme["scheme"], "bearer");
        assert_eq!(scheme["bearerFormat"], "JWT");
    }
}
