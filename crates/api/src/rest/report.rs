//! Reporting a leaked key (docs/operations.md, "If a key leaks"): `POST /api/mcp/keys/report`, public,
//! and GitHub's secret-scanning partner format at
//! `POST /api/secret-scanning/github`, signed by GitHub.
//!
//! Neither takes a credential: holding the key is the proof. The public
//! report answers one body whatever was sent, so nothing tells a real key
//! from junk; what is not a real key counts as a failed attempt for the
//! client's address, as a bad key at `/mcp` does.

use std::collections::HashMap;
use std::net::IpAddr;

use actix_web::http::StatusCode;
use actix_web::http::header::CACHE_CONTROL;
use actix_web::{HttpRequest, HttpResponse, web};
use cola_application::{
    Charge, FieldErrors, KeyReports, ReportError, ReportKeyRequest, ReportOutcome, Reporter,
};
use cola_domain::LeakReport;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::caller::ManagementAuth;
use crate::foundations::json::{is_json, parse_json, read_body, unsupported_media_type};
use crate::foundations::problem::{ApiError, Problem};
use crate::foundations::routing::method_not_allowed;
use crate::rest::secret_scanning::SecretScanningKeys;

/// The most matches one secret-scanning alert may carry: each well-formed
/// one costs an argon2 verification.
pub const MAX_GITHUB_MATCHES: usize = 100;

pub fn configure(config: &mut web::ServiceConfig) {
    config
        .service(
            web::resource("/api/mcp/keys/report")
                .route(web::post().to(report))
                .default_service(web::to(method_not_allowed("POST"))),
        )
        .service(
            web::resource("/api/secret-scanning/github")
                .route(web::post().to(github))
                .default_service(web::to(method_not_allowed("POST"))),
        );
}

/// The one answer of the public report.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReportReceived {
    /// Always `received`.
    #[schema(example = "received")]
    pub status: &'static str,
    pub detail: &'static str,
}

const RECEIVED: ReportReceived = ReportReceived {
    status: "received",
    detail: "if this is an active Cola key, it has been revoked",
};

/// A report's refusal before it was looked at.
fn too_many(error: ReportError) -> actix_web::Error {
    match error {
        ReportError::TooManyAttempts(wait) => {
            Problem::too_many_requests(wait.retry_after_secs).into()
        }
        ReportError::App(error) => ApiError(error).into(),
    }
}

#[utoipa::path(
    post,
    path = "/api/mcp/keys/report",
    operation_id = "report_key",
    summary = "Report a leaked key (public)",
    description = "Whoever holds a key can have it revoked. The answer is the same 202 whatever \
                   was sent (any JSON, or none); a real, active key is revoked at once (on every \
                   instance within 2 s). Each well-formed key costs the client's address one \
                   attempt of its failure limit, counted before the key is looked at; so does \
                   anything that is not a key.",
    request_body(content = ReportKeyRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "Received", body = ReportReceived),
        (status = 400, description = "`url` or `source` is given and invalid", body = crate::rest::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 413, description = "The body is larger than 64 KiB", body = crate::rest::openapi::ProblemDetails, content_type = "application/problem+json"),
        crate::rest::openapi::PublicFailures,
    ),
    tag = "reports",
)]
pub(crate) async fn report(
    request: HttpRequest,
    payload: web::Payload,
    auth: web::Data<ManagementAuth>,
    reports: web::Data<KeyReports>,
) -> Result<HttpResponse, actix_web::Error> {
    // Without a peer (never on a TCP listener) nobody could be charged.
    let Some(client) = auth.client_ip.of_request(&request) else {
        return Err(Problem::internal().into());
    };
    let charge = Charge::Client(client);
    let body = read_body(&request, &mut payload.into_inner())
        .await
        .map_err(Problem::from)?;
    let read = ReportKeyRequest::read(&body).map_err(|errors| Problem::invalid(&errors))?;
    let (presented, report) = read.unwrap_or_default();
    let outcome = reports
        .report(&presented, &report, Reporter::Public(charge))
        .await
        .map_err(too_many)?;
    if outcome == ReportOutcome::NotAKey {
        // The service logs reports of stored keys; junk is logged without
        // its text, which may be some other secret.
        tracing::info!(outcome = outcome.as_str(), "key reported");
    }
    Ok(HttpResponse::Accepted()
        .insert_header((CACHE_CONTROL, "no-store"))
        .json(RECEIVED))
}

/// One match in a secret-scanning alert, as GitHub sends it.
#[derive(Debug, Deserialize, ToSchema)]
pub struct GithubMatch {
    /// The matched text.
    pub token: String,
    /// The name the pattern was registered under.
    #[serde(rename = "type", default)]
    pub token_type: String,
    /// Where it was found (may be empty).
    #[serde(default)]
    pub url: Option<String>,
    /// What GitHub scanned (`content`, `commit`, `npm`, …).
    #[serde(default)]
    pub source: Option<String>,
}

/// GitHub's expected answer for one match.
#[derive(Debug, Serialize, ToSchema)]
pub struct GithubLabel {
    pub token_raw: String,
    pub token_type: String,
    /// `true_positive`: a real Cola key (now revoked, or revoked or expired
    /// before); `false_positive`: not one.
    #[schema(example = "true_positive")]
    pub label: &'static str,
}

#[utoipa::path(
    post,
    path = "/api/secret-scanning/github",
    operation_id = "github_secret_scanning",
    summary = "GitHub secret-scanning alerts (signed by GitHub)",
    description = "GitHub's partner format: a JSON array of matches, signed (ECDSA P-256, \
                   SHA-256, base64 DER in `Github-Public-Key-Signature`) by the key named in \
                   `Github-Public-Key-Identifier`, checked against `COLA_SECRET_SCANNING_KEYS_FILE`. \
                   Real active keys are revoked. At most 100 matches per request. Answers 404 \
                   when no keys file is configured.",
    request_body(content = Vec<GithubMatch>, content_type = "application/json"),
    params(
        ("Github-Public-Key-Identifier" = String, Header, description = "The signing key's identifier"),
        ("Github-Public-Key-Signature" = String, Header, description = "Base64 of the DER ECDSA signature over the raw body"),
    ),
    responses(
        (status = 200, description = "One label per match, in order", body = Vec<GithubLabel>),
        (status = 400, description = "Not an array of matches, or more than 100", body = crate::rest::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "Missing, unknown or invalid signature; nothing was revoked", body = crate::rest::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "No secret-scanning keys are configured", body = crate::rest::openapi::ProblemDetails, content_type = "application/problem+json"),
        crate::rest::openapi::BodyFailures,
        crate::rest::openapi::PublicFailures,
    ),
    tag = "reports",
)]
pub(crate) async fn github(
    request: HttpRequest,
    auth: web::Data<ManagementAuth>,
    reports: web::Data<KeyReports>,
    payload: web::Payload,
) -> Result<HttpResponse, actix_web::Error> {
    let Some(signers) = request.app_data::<web::Data<SecretScanningKeys>>().cloned() else {
        return Err(Problem::not_found().into());
    };
    // The signature is checked first; only a failed one counts against
    // the sender's address.
    let Some(client) = auth.client_ip.of_request(&request) else {
        return Err(Problem::internal().into());
    };
    if let Err(wait) = auth.limiter.check(Charge::Client(client)) {
        return Err(Problem::too_many_requests(wait.retry_after_secs).into());
    }
    if !is_json(&request) {
        return Err(unsupported_media_type().into());
    }
    let body = read_body(&request, &mut payload.into_inner())
        .await
        .map_err(Problem::from)?;
    check_signature(&request, &signers, &auth, client, &body)?;
    // A replay of an alert already answered (GitHub's retry, or someone
    // who captured it) gets the same answer and costs no work again.
    if let Some(answer) = signers.answered(&body) {
        tracing::info!("secret-scanning alert replayed; answered as before");
        return Ok(labels_response(answer));
    }
    let matches: Vec<GithubMatch> = parse_json(&body)?;
    if matches.len() > MAX_GITHUB_MATCHES {
        return Err(Problem::invalid(&FieldErrors::single(
            "body",
            format!("at most {MAX_GITHUB_MATCHES} matches per request"),
        ))
        .into());
    }
    let labels = label_matches(&reports, matches).await?;
    tracing::info!(matches = labels.len(), "secret-scanning alert handled");
    let answer = bytes::Bytes::from(serde_json::to_vec(&labels).map_err(|error| {
        tracing::error!(error = %error, "secret-scanning answer not serialised");
        Problem::internal()
    })?);
    signers.remember(&body, answer.clone());
    Ok(labels_response(answer))
}

/// Refuses an alert not signed by a configured key; the refusal counts
/// against the sender's address.
fn check_signature(
    request: &HttpRequest,
    signers: &SecretScanningKeys,
    auth: &ManagementAuth,
    client: IpAddr,
    body: &[u8],
) -> Result<(), Problem> {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
    };
    let Err(refusal) = signers.verify(
        header("github-public-key-identifier"),
        header("github-public-key-signature"),
        body,
    ) else {
        return Ok(());
    };
    tracing::info!(reason = %refusal, "secret-scanning alert refused");
    if let Err(wait) = auth.limiter.record_failure(Charge::Client(client)) {
        return Err(Problem::too_many_requests(wait.retry_after_secs));
    }
    Err(Problem::new(
        StatusCode::UNAUTHORIZED,
        "invalid-signature",
        "the alert is not signed by a configured secret-scanning key",
    ))
}

/// Reports every match (a real active key is revoked) and labels it as
/// GitHub expects, in order. A token repeated in one alert is verified once.
async fn label_matches(
    reports: &KeyReports,
    matches: Vec<GithubMatch>,
) -> Result<Vec<GithubLabel>, actix_web::Error> {
    let mut decided: HashMap<String, ReportOutcome> = HashMap::new();
    let mut labels = Vec::with_capacity(matches.len());
    for found in matches {
        let outcome = match decided.get(&found.token) {
            Some(outcome) => *outcome,
            None => {
                // GitHub's own description of the place; one it sends
                // overlong is dropped rather than refusing the alert.
                let report = LeakReport::new(found.url.as_deref(), found.source.as_deref())
                    .unwrap_or_default();
                let outcome = reports
                    .report(&found.token, &report, Reporter::Signed)
                    .await
                    .map_err(too_many)?;
                decided.insert(found.token.clone(), outcome);
                outcome
            }
        };
        labels.push(GithubLabel {
            token_raw: found.token,
            token_type: found.token_type,
            label: if outcome.is_genuine() {
                "true_positive"
            } else {
                "false_positive"
            },
        });
    }
    Ok(labels)
}

fn labels_response(answer: bytes::Bytes) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CACHE_CONTROL, "no-store"))
        .content_type("application/json")
        .body(answer)
}
