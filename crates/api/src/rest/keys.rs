//! `/api/mcp/keys`: the key-management REST API (README.md, "The
//! management API"). Reads take a
//! [`Caller`]; writes a [`Writer`], which is also held to the per-user write
//! limit.

use actix_web::{HttpRequest, HttpResponse, web};
use cola_application::{
    ApiKeyService, CreateKeyRequest, EventList, ListKeysQuery, RotateKeyRequest,
    UpdateMetadataRequest, UpdatePermissionsRequest,
};
use cola_domain::ApiKeyId;

use crate::auth::Writer;
use crate::auth::caller::Caller;
use crate::foundations::json::{JsonBody, OptionalJsonBody, parse_query};
use crate::foundations::problem::{ApiError, Problem};
use crate::foundations::routing::method_not_allowed;

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
            web::resource("/api/mcp/keys/{id}/rotate")
                .route(web::post().to(rotate))
                .default_service(web::to(method_not_allowed("POST"))),
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

#[utoipa::path(
    post,
    path = "/api/mcp/keys",
    operation_id = "create_key",
    summary = "Create a key owned by the caller",
    description = "The response carries the full key in `key`, this once and never again.",
    request_body(content = CreateKeyRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Created", body = cola_application::CreatedKeyView, headers(("Location" = String, description = "The new key's URL"))),
        (status = 400, description = "Invalid input; `errors` names every bad field", body = crate::rest::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 409, description = "The caller already has the maximum number of active keys", body = crate::rest::openapi::ProblemDetails, content_type = "application/problem+json"),
        crate::rest::openapi::BodyFailures,
        crate::rest::openapi::ManagementFailures,
    ),
    security(("bearer_jwt" = [])),
    tag = "keys",
)]
pub(crate) async fn create(
    caller: Writer,
    keys: web::Data<ApiKeyService>,
    body: JsonBody<CreateKeyRequest>,
) -> Result<HttpResponse, ApiError> {
    let created = keys.create(caller.0, body.0).await?;
    Ok(HttpResponse::Created()
        .insert_header(("location", format!("/api/mcp/keys/{}", created.view.id)))
        .insert_header(("cache-control", "no-store"))
        .json(created))
}

#[utoipa::path(
    get,
    path = "/api/mcp/keys",
    operation_id = "list_keys",
    summary = "List the caller's keys, newest first",
    params(ListKeysQuery),
    responses(
        (status = 200, description = "A page of keys", body = cola_application::KeyPage),
        (status = 400, description = "Invalid input; `errors` names every bad field", body = crate::rest::openapi::ProblemDetails, content_type = "application/problem+json"),
        crate::rest::openapi::ManagementFailures,
    ),
    security(("bearer_jwt" = [])),
    tag = "keys",
)]
pub(crate) async fn list(
    caller: Caller,
    keys: web::Data<ApiKeyService>,
    request: HttpRequest,
) -> Result<HttpResponse, actix_web::Error> {
    let query: ListKeysQuery = parse_query(request.query_string())?;
    let page = keys.list(caller.0, query).await.map_err(ApiError)?;
    Ok(HttpResponse::Ok().json(page))
}

#[utoipa::path(
    get,
    path = "/api/mcp/keys/{id}",
    operation_id = "get_key",
    summary = "Get a key",
    params(("id" = uuid::Uuid, Path, description = "The key's id")),
    responses(
        (status = 200, description = "The key", body = cola_application::KeyView),
        (status = 404, description = "No such key (or not yours)", body = crate::rest::openapi::ProblemDetails, content_type = "application/problem+json"),
        crate::rest::openapi::ManagementFailures,
    ),
    security(("bearer_jwt" = [])),
    tag = "keys",
)]
pub(crate) async fn get(
    caller: Caller,
    keys: web::Data<ApiKeyService>,
    id: web::Path<String>,
) -> Result<HttpResponse, actix_web::Error> {
    let id = key_id(&id)?;
    let key = keys.get(caller.0, id).await.map_err(ApiError)?;
    Ok(HttpResponse::Ok().json(key))
}

#[utoipa::path(
    patch,
    path = "/api/mcp/keys/{id}/metadata",
    operation_id = "update_key_metadata",
    summary = "Change a key's name or description",
    params(("id" = uuid::Uuid, Path, description = "The key's id")),
    request_body(content = UpdateMetadataRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The updated key", body = cola_application::KeyView),
        crate::rest::openapi::ChangeFailures,
        crate::rest::openapi::BodyFailures,
        crate::rest::openapi::ManagementFailures,
    ),
    security(("bearer_jwt" = [])),
    tag = "keys",
)]
pub(crate) async fn update_metadata(
    caller: Writer,
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

#[utoipa::path(
    patch,
    path = "/api/mcp/keys/{id}/permissions",
    operation_id = "update_key_permissions",
    summary = "Change a key's permissions or IP allow-list",
    params(("id" = uuid::Uuid, Path, description = "The key's id")),
    request_body(content = UpdatePermissionsRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The updated key", body = cola_application::KeyView),
        crate::rest::openapi::ChangeFailures,
        crate::rest::openapi::BodyFailures,
        crate::rest::openapi::ManagementFailures,
    ),
    security(("bearer_jwt" = [])),
    tag = "keys",
)]
pub(crate) async fn update_permissions(
    caller: Writer,
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

#[utoipa::path(
    delete,
    path = "/api/mcp/keys/{id}",
    operation_id = "revoke_key",
    summary = "Revoke a key (idempotent)",
    params(("id" = uuid::Uuid, Path, description = "The key's id")),
    responses(
        (status = 204, description = "Revoked (or already revoked)"),
        (status = 404, description = "No such key (or not yours)", body = crate::rest::openapi::ProblemDetails, content_type = "application/problem+json"),
        crate::rest::openapi::ManagementFailures,
    ),
    security(("bearer_jwt" = [])),
    tag = "keys",
)]
pub(crate) async fn revoke(
    caller: Writer,
    keys: web::Data<ApiKeyService>,
    id: web::Path<String>,
) -> Result<HttpResponse, actix_web::Error> {
    let id = key_id(&id)?;
    keys.revoke(caller.0, id).await.map_err(ApiError)?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(
    post,
    path = "/api/mcp/keys/{id}/rotate",
    operation_id = "rotate_key",
    summary = "Replace a key by a new one, the old one usable for a grace period",
    description = "The new key copies the old one's name, description, permissions, allow-list, \
                   rate limit and owner; its expiry is the policy default unless given. The old \
                   key stays usable until `now + grace_period_secs` (never past its own expiry), \
                   then is refused like an expired key. The body may be omitted (grace 0). The \
                   response carries the new key in `key`, this once.",
    params(("id" = uuid::Uuid, Path, description = "The key to rotate")),
    request_body(content = RotateKeyRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "The new key", body = cola_application::CreatedKeyView, headers(("Location" = String, description = "The new key's URL"))),
        (status = 400, description = "Invalid input; `errors` names every bad field", body = crate::rest::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "No such key (or not yours)", body = crate::rest::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 409, description = "The key is revoked, expired or already rotated", body = crate::rest::openapi::ProblemDetails, content_type = "application/problem+json"),
        crate::rest::openapi::BodyFailures,
        crate::rest::openapi::ManagementFailures,
    ),
    security(("bearer_jwt" = [])),
    tag = "keys",
)]
pub(crate) async fn rotate(
    caller: Writer,
    keys: web::Data<ApiKeyService>,
    id: web::Path<String>,
    body: OptionalJsonBody<RotateKeyRequest>,
) -> Result<HttpResponse, actix_web::Error> {
    let id = key_id(&id)?;
    let created = keys.rotate(caller.0, id, body.0).await.map_err(ApiError)?;
    Ok(HttpResponse::Created()
        .insert_header(("location", format!("/api/mcp/keys/{}", created.view.id)))
        .insert_header(("cache-control", "no-store"))
        .json(created))
}

#[utoipa::path(
    get,
    path = "/api/mcp/keys/{id}/events",
    operation_id = "list_key_events",
    summary = "A key's audit trail, oldest first",
    params(("id" = uuid::Uuid, Path, description = "The key's id")),
    responses(
        (status = 200, description = "The key's events", body = EventList),
        (status = 404, description = "No such key (or not yours)", body = crate::rest::openapi::ProblemDetails, content_type = "application/problem+json"),
        crate::rest::openapi::ManagementFailures,
    ),
    security(("bearer_jwt" = [])),
    tag = "keys",
)]
pub(crate) async fn events(
    caller: Caller,
    keys: web::Data<ApiKeyService>,
    id: web::Path<String>,
) -> Result<HttpResponse, actix_web::Error> {
    let id = key_id(&id)?;
    let items = keys.events(caller.0, id).await.map_err(ApiError)?;
    Ok(HttpResponse::Ok().json(EventList { items }))
}
