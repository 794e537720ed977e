//! `/api/mcp/servers`: the tenant's registered upstream MCP servers
//! (docs/gateway.md). Reads take a [`Caller`] of any role; changes a [`Writer`]
//! (held to the per-user write limit), and the service lets only admins
//! through. No response, log line or error ever holds a header value.

use actix_web::{HttpRequest, HttpResponse, web};
use cola_application::{CreateServerRequest, ListServersQuery, ServerService, UpdateServerRequest};
use cola_domain::ServerId;

use crate::auth::Writer;
use crate::auth::caller::Caller;
use crate::foundations::json::{JsonBody, parse_query};
use crate::foundations::problem::{ApiError, Problem};
use crate::foundations::routing::method_not_allowed;

pub fn configure(config: &mut web::ServiceConfig) {
    config
        .service(
            web::resource("/api/mcp/servers")
                .route(web::post().to(create))
                .route(web::get().to(list))
                .default_service(web::to(method_not_allowed("GET, POST"))),
        )
        .service(
            web::resource("/api/mcp/servers/{id}")
                .route(web::get().to(get))
                .route(web::patch().to(update))
                .route(web::delete().to(delete))
                .default_service(web::to(method_not_allowed("GET, PATCH, DELETE"))),
        )
        .service(
            web::resource("/api/mcp/servers/{id}/token")
                .route(web::post().to(mint_token))
                .default_service(web::to(method_not_allowed("POST"))),
        );
}

/// An id that is not a UUID cannot name a server: 404, like any unknown id.
fn server_id(raw: &str) -> Result<ServerId, Problem> {
    raw.parse().map_err(|_| Problem::not_found())
}

#[utoipa::path(
    post,
    path = "/api/mcp/servers",
    operation_id = "create_server",
    summary = "Register an upstream MCP server (admin)",
    description = "`headers` are write-only: stored encrypted, shown only as `header_names`.",
    request_body(content = CreateServerRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Registered", body = cola_application::ServerView, headers(("Location" = String, description = "The new server's URL"))),
        (status = 400, description = "Invalid input; `errors` names every bad field", body = crate::rest::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 403, description = "The caller is not an admin", body = crate::rest::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 409, description = "The tenant already has a server with this slug", body = crate::rest::openapi::ProblemDetails, content_type = "application/problem+json"),
        crate::rest::openapi::BodyFailures,
        crate::rest::openapi::ManagementFailures,
    ),
    security(("bearer_jwt" = [])),
    tag = "servers",
)]
pub(crate) async fn create(
    caller: Writer,
    servers: web::Data<ServerService>,
    body: JsonBody<CreateServerRequest>,
) -> Result<HttpResponse, ApiError> {
    let server = servers.create(caller.0, body.0).await?;
    Ok(HttpResponse::Created()
        .insert_header(("location", format!("/api/mcp/servers/{}", server.id)))
        .json(server))
}

#[utoipa::path(
    get,
    path = "/api/mcp/servers",
    operation_id = "list_servers",
    summary = "List the tenant's servers, newest first",
    params(ListServersQuery),
    responses(
        (status = 200, description = "A page of servers", body = cola_application::ServerPage),
        (status = 400, description = "Invalid input; `errors` names every bad field", body = crate::rest::openapi::ProblemDetails, content_type = "application/problem+json"),
        crate::rest::openapi::ManagementFailures,
    ),
    security(("bearer_jwt" = [])),
    tag = "servers",
)]
pub(crate) async fn list(
    caller: Caller,
    servers: web::Data<ServerService>,
    request: HttpRequest,
) -> Result<HttpResponse, actix_web::Error> {
    let query: ListServersQuery = parse_query(request.query_string())?;
    let page = servers.list(caller.0, query).await.map_err(ApiError)?;
    Ok(HttpResponse::Ok().json(page))
}

#[utoipa::path(
    get,
    path = "/api/mcp/servers/{id}",
    operation_id = "get_server",
    summary = "Get a server",
    params(("id" = uuid::Uuid, Path, description = "The server's id")),
    responses(
        (status = 200, description = "The server", body = cola_application::ServerView),
        (status = 404, description = "No such server in the tenant", body = crate::rest::openapi::ProblemDetails, content_type = "application/problem+json"),
        crate::rest::openapi::ManagementFailures,
    ),
    security(("bearer_jwt" = [])),
    tag = "servers",
)]
pub(crate) async fn get(
    caller: Caller,
    servers: web::Data<ServerService>,
    id: web::Path<String>,
) -> Result<HttpResponse, actix_web::Error> {
    let id = server_id(&id)?;
    let server = servers.get(caller.0, id).await.map_err(ApiError)?;
    Ok(HttpResponse::Ok().json(server))
}

#[utoipa::path(
    patch,
    path = "/api/mcp/servers/{id}",
    operation_id = "update_server",
    summary = "Change a server (admin)",
    description = "Partial: fields left out keep their value; a `headers` map replaces the stored one whole; `slug` cannot be changed.",
    params(("id" = uuid::Uuid, Path, description = "The server's id")),
    request_body(content = UpdateServerRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The updated server", body = cola_application::ServerView),
        (status = 400, description = "Invalid input; `errors` names every bad field", body = crate::rest::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 403, description = "The caller is not an admin", body = crate::rest::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "No such server in the tenant", body = crate::rest::openapi::ProblemDetails, content_type = "application/problem+json"),
        crate::rest::openapi::BodyFailures,
        crate::rest::openapi::ManagementFailures,
    ),
    security(("bearer_jwt" = [])),
    tag = "servers",
)]
pub(crate) async fn update(
    caller: Writer,
    servers: web::Data<ServerService>,
    id: web::Path<String>,
    body: JsonBody<UpdateServerRequest>,
) -> Result<HttpResponse, actix_web::Error> {
    let id = server_id(&id)?;
    let server = servers
        .update(caller.0, id, body.0)
        .await
        .map_err(ApiError)?;
    Ok(HttpResponse::Ok().json(server))
}

#[utoipa::path(
    delete,
    path = "/api/mcp/servers/{id}",
    operation_id = "delete_server",
    summary = "Delete a server and every key's grant on it (admin)",
    params(("id" = uuid::Uuid, Path, description = "The server's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "The caller is not an admin", body = crate::rest::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "No such server in the tenant", body = crate::rest::openapi::ProblemDetails, content_type = "application/problem+json"),
        crate::rest::openapi::ManagementFailures,
    ),
    security(("bearer_jwt" = [])),
    tag = "servers",
)]
pub(crate) async fn delete(
    caller: Writer,
    servers: web::Data<ServerService>,
    id: web::Path<String>,
) -> Result<HttpResponse, actix_web::Error> {
    let id = server_id(&id)?;
    servers.delete(caller.0, id).await.map_err(ApiError)?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(
    post,
    path = "/api/mcp/servers/{id}/token",
    operation_id = "mint_server_token",
    summary = "Mint the server's verification token (admin)",
    description = "The token (`colasrv_…`) is shown in this answer only and stored as a digest. \
        Minting again replaces it: the previous token is refused from the next request.",
    params(("id" = uuid::Uuid, Path, description = "The server's id")),
    responses(
        (status = 201, description = "The new token, shown once", body = cola_application::MintedTokenView),
        (status = 403, description = "The caller is not an admin", body = crate::rest::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "No such server in the tenant", body = crate::rest::openapi::ProblemDetails, content_type = "application/problem+json"),
        crate::rest::openapi::ManagementFailures,
    ),
    security(("bearer_jwt" = [])),
    tag = "servers",
)]
pub(crate) async fn mint_token(
    caller: Writer,
    servers: web::Data<ServerService>,
    id: web::Path<String>,
) -> Result<HttpResponse, actix_web::Error> {
    let id = server_id(&id)?;
    let minted = servers.mint_token(caller.0, id).await.map_err(ApiError)?;
    Ok(HttpResponse::Created()
        .insert_header(("cache-control", "no-store"))
        .json(minted))
}
