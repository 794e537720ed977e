//! Liveness (`/health`, never touches the database) and readiness (`/ready`).

use actix_web::{HttpResponse, web};
use cola_application::ApiKeyService;
use serde_json::json;

use crate::problem::Problem;

pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

pub async fn ready(keys: web::Data<ApiKeyService>) -> HttpResponse {
    match keys.ping().await {
        Ok(()) => HttpResponse::Ok().json(json!({ "status": "ready" })),
        Err(_) => Problem::unavailable().response(),
    }
}
