//! Liveness (`/health`, never touches the database) and readiness (`/ready`).

use actix_web::{HttpResponse, web};
use cola_application::ApiKeyService;
use serde_json::json;

use crate::foundations::problem::Problem;

#[utoipa::path(
    get,
    path = "/health",
    operation_id = "health",
    summary = "Liveness: the process answers (no database access)",
    responses(
        (status = 200, description = "Alive", body = crate::rest::openapi::HealthStatus),
    ),
    tag = "service",
)]
pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

#[utoipa::path(
    get,
    path = "/ready",
    operation_id = "ready",
    summary = "Readiness: the database is reachable",
    responses(
        (status = 200, description = "Ready", body = crate::rest::openapi::HealthStatus),
        (status = 503, description = "Database unavailable", body = crate::rest::openapi::ProblemDetails,
            content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    ),
    tag = "service",
)]
pub async fn ready(keys: web::Data<ApiKeyService>) -> HttpResponse {
    match keys.ping().await {
        Ok(()) => HttpResponse::Ok().json(json!({ "status": "ready" })),
        Err(_) => Problem::unavailable().response(),
    }
}
