//! RFC 9457 problem details: the one shape of every error the HTTP API
//! returns, its own and actix's alike. Internal causes go to the log, never
//! into a body.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use cola_application::{AppError, FieldErrors};
use serde::Serialize;

pub const PROBLEM_JSON: &str = "application/problem+json";

#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// Serialized as the `type` URI `urn:cola:problem:<slug>`.
    #[serde(rename = "type", serialize_with = "problem_type")]
    pub slug: &'static str,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    /// Boxed: `Problem` is the error of most handlers' `Result`, and one
    /// pointer keeps it small where a map would triple its size.
    #[allow(clippy::box_collection)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Box<BTreeMap<String, Vec<String>>>>,
    #[serde(skip)]
    pub retry_after: Option<u64>,
    /// The `WWW-Authenticate` challenge of a 401 (RFC 6750); `None`: the
    /// plain `Bearer realm="cola"`.
    #[serde(skip)]
    pub challenge: Option<String>,
}

impl Problem {
    /// A problem of the given status with a short machine-readable slug.
    #[must_use]
    pub fn new(status: StatusCode, slug: &'static str, detail: impl Into<String>) -> Self {
        Self {
            slug,
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: detail.into(),
            errors: None,
            retry_after: None,
            challenge: None,
        }
    }

    #[must_use]
    pub fn invalid(errors: &FieldErrors) -> Self {
        let fields: Vec<&str> = errors.fields().keys().map(String::as_str).collect();
        let mut problem = Self::new(
            StatusCode::BAD_REQUEST,
            "invalid-input",
            format!("invalid input: {}", fields.join(", ")),
        );
        problem.errors = Some(Box::new(errors.fields().clone()));
        problem
    }

    /// A 401 for a refused token (RFC 6750): `detail` says why, and so does
    /// the challenge's `error_description` when a token was presented.
    #[must_use]
    pub fn invalid_token(detail: &str, presented: bool) -> Self {
        let mut problem = Self::unauthorized(detail);
        if presented {
            // error_description allows printable ASCII but `"` and `\`.
            let description: String = detail
                .chars()
                .filter(|c| matches!(c, ' '..='~') && *c != '"' && *c != '\\')
                .collect();
            problem.challenge = Some(format!(
                "Bearer realm=\"cola\", error=\"invalid_token\", error_description=\"{description}\""
            ));
        }
        problem
    }

    #[must_use]
    pub fn unauthorized(detail: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    #[must_use]
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "no such resource")
    }

    #[must_use]
    pub fn unavailable() -> Self {
        let mut problem = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the service is temporarily unable to handle the request; try again shortly",
        );
        problem.retry_after = Some(1);
        problem
    }

    #[must_use]
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "an unexpected error occurred",
        )
    }

    #[must_use]
    pub fn too_many_requests(retry_after: u64) -> Self {
        let mut problem = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            "too many failed attempts from this address; try again later",
        );
        problem.retry_after = Some(retry_after.max(1));
        problem
    }

    #[must_use]
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    #[must_use]
    pub fn response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        response.insert_header((header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON)));
        if let Some(seconds) = self.retry_after {
            response.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
        if self.status == 401 {
            let challenge = self
                .challenge
                .as_deref()
                .and_then(|challenge| HeaderValue::from_str(challenge).ok())
                .unwrap_or_else(|| HeaderValue::from_static("Bearer realm=\"cola\""));
            response.insert_header((header::WWW_AUTHENTICATE, challenge));
        }
        response.body(serde_json::to_string(self).unwrap_or_default())
    }
}

fn problem_type<S: serde::Serializer>(
    slug: &&'static str,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&format_args!("urn:cola:problem:{slug}"))
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.detail)
    }
}

impl ResponseError for Problem {
    fn status_code(&self) -> StatusCode {
        self.status_code()
    }

    fn error_response(&self) -> HttpResponse {
        self.response()
    }
}

/// The HTTP face of the application's errors.
#[derive(Debug)]
pub struct ApiError(pub AppError);

impl From<AppError> for ApiError {
    fn from(error: AppError) -> Self {
        Self(error)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl ApiError {
    #[must_use]
    pub fn problem(&self) -> Problem {
        match &self.0 {
            AppError::Invalid(errors) => Problem::invalid(errors),
            AppError::NotFound => Problem::not_found(),
            AppError::Forbidden => Problem::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "your role does not allow this: changes to servers need an admin, and a member may act only on their own keys",
            ),
            AppError::SlugTaken => Problem::new(
                StatusCode::CONFLICT,
                "slug-taken",
                "the tenant already has a server with this slug",
            ),
            AppError::LimitReached { max } => Problem::new(
                StatusCode::CONFLICT,
                "key-limit-reached",
                format!("the user already has the maximum of {max} active keys; revoke one first"),
            ),
            AppError::ServerLimitReached { max } => Problem::new(
                StatusCode::CONFLICT,
                "server-limit-reached",
                format!("the tenant already has the maximum of {max} servers; delete one first"),
            ),
            AppError::KeyRevoked => Problem::new(
                StatusCode::CONFLICT,
                "key-revoked",
                "the key is revoked and can no longer be changed",
            ),
            AppError::KeyExpired => Problem::new(
                StatusCode::CONFLICT,
                "key-expired",
                "the key has expired and cannot be rotated; create a new one",
            ),
            AppError::KeyAlreadyRotated => Problem::new(
                StatusCode::CONFLICT,
                "key-already-rotated",
                "the key has already been rotated; rotate its successor instead",
            ),
            AppError::KeyChanged => Problem::new(
                StatusCode::CONFLICT,
                "key-changed",
                "the key changed meanwhile; read it again and retry",
            ),
            AppError::Unavailable(source) => {
                tracing::warn!(error = %cola_application::error_chain(&**source), "dependency unavailable");
                Problem::unavailable()
            }
            AppError::Unexpected(source) => {
                tracing::error!(error = %cola_application::error_chain(&**source), "unexpected failure");
                Problem::internal()
            }
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match &self.0 {
            AppError::Invalid(_) => StatusCode::BAD_REQUEST,
            AppError::NotFound => StatusCode::NOT_FOUND,
            AppError::LimitReached { .. }
            | AppError::ServerLimitReached { .. }
            | AppError::KeyRevoked
            | AppError::KeyExpired
            | AppError::KeyAlreadyRotated
            | AppError::KeyChanged
            | AppError::SlugTaken => StatusCode::CONFLICT,
            AppError::Forbidden => StatusCode::FORBIDDEN,
            AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        self.problem().response()
    }
}
