//! `/api/mcp/keys`: the key-management REST API (CONTRACT §5).

use actix_web::{HttpRequest, HttpResponse, web};
use cola_application::{
    ApiKeyService, CreateKeyRequest, ListKeysQuery, UpdateMetadataRequest, UpdatePermissionsRequest,
};
use cola_domain::ApiKeyId;
use serde_json::json;

use crate::json::{JsonBody, parse_query};
use crate::jwt::Caller;
use crate::problem::{ApiError, Problem};
use crate::routes::method_not_allowed;

pub fn configure(config: &mut web::ServiceConfig) {
    config
        .service(
            web::resource("/api/mcp/keys")
                .route(web::post().to(create))
                .route(web::get().to(list))
                .default_service(web::to(method_not_allowed("GET, POST"))),
        )
        .service(
            web::resource("/api/mcp/keys/{id}")
                .route(web::get().to(get))
                .route(web::delete().to(revoke))
                .default_service(web::to(method_not_allowed("GET, DELETE"))),
        )
        .service(
            web::resource("/api/mcp/keys/{id}/metadata")
                .route(web::patch().to(update_metadata))
                .default_service(web::to(method_not_allowed("PATCH"))),
        )
        .service(
            web::resource("/api/mcp/keys/{id}/permissions")
                .route(web::patch().to(update_permissions))
                .default_service(web::to(method_not_allowed("PATCH"))),
        )
        .service(
            web::resource("/api/mcp/keys/{id}/events")
                .route(web::get().to(events))
                .default_service(web::to(method_not_allowed("GET"))),
        );
}

/// An id that is not a UUID cannot name a key: 404, like any unknown id.
fn key_id(raw: &str) -> Result<ApiKeyId, Problem> {
    raw.parse().map_err(|_| Problem::not_found())
}

async fn create(
    caller: Caller,
    keys: web::Data<ApiKeyService>,
    body: JsonBody<CreateKeyRequest>,
) -> Result<HttpResponse, ApiError> {
    let created = keys.create(caller.0, body.0).await?;
    Ok(HttpResponse::Created()
        .insert_header(("location", format!("/api/mcp/keys/{}", created.view.id)))
        .insert_header(("cache-control", "no-store"))
        .json(created))
}

async fn list(
    caller: Caller,
    keys: web::Data<ApiKeyService>,
    request: HttpRequest,
) -> Result<HttpResponse, actix_web::Error> {
    let query: ListKeysQuery = parse_query(request.query_string())?;
    let page = keys.list(caller.0, query).await.map_err(ApiError)?;
    Ok(HttpResponse::Ok().json(page))
}

async fn get(
    caller: Caller,
    keys: web::Data<ApiKeyService>,
    id: web::Path<String>,
) -> Result<HttpResponse, actix_web::Error> {
    let id = key_id(&id)?;
    let key = keys.get(caller.0, id).await.map_err(ApiError)?;
    Ok(HttpResponse::Ok().json(key))
}

async fn update_metadata(
    caller: Caller,
    keys: web::Data<ApiKeyService>,
    id: web::Path<String>,
    body: JsonBody<UpdateMetadataRequest>,
) -> Result<HttpResponse, actix_web::Error> {
    let id = key_id(&id)?;
    let key = keys
        .update_metadata(caller.0, id, body.0)
        .await
        .map_err(ApiError)?;
    Ok(HttpResponse::Ok().json(key))
}

async fn update_permissions(
    caller: Caller,
    keys: web::Data<ApiKeyService>,
    id: web::Path<String>,
    body: JsonBody<UpdatePermissionsRequest>,
) -> Result<HttpResponse, actix_web::Error> {
    let id = key_id(&id)?;
    let key = keys
        .update_permissions(caller.0, id, body.0)
        .await
        .map_err(ApiError)?;
    Ok(HttpResponse::Ok().json(key))
}

async fn revoke(
    caller: Caller,
    keys: web::Data<ApiKeyService>,
    id: web::Path<String>,
) -> Result<HttpResponse, actix_web::Error> {
    let id = key_id(&id)?;
    keys.revoke(caller.0, id).await.map_err(ApiError)?;
    Ok(HttpResponse::NoContent().finish())
}

async fn events(
    caller: Caller,
    keys: web::Data<ApiKeyService>,
    id: web::Path<String>,
) -> Result<HttpResponse, actix_web::Error> {
    let id = key_id(&id)?;
    let items = keys.events(caller.0, id).await.map_err(ApiError)?;
    Ok(HttpResponse::Ok().json(json!({ "items": items })))
}
