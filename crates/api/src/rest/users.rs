//! `/api/mcp/users/{user_id}/keys`: offboarding a user (docs/operations.md, "Offboarding").

use actix_web::{HttpResponse, web};
use cola_application::{ApiKeyService, FieldErrors};
use cola_domain::UserId;

use crate::auth::Writer;
use crate::foundations::problem::{ApiError, Problem};
use crate::foundations::routing::method_not_allowed;

pub fn configure(config: &mut web::ServiceConfig) {
    config.service(
        web::resource("/api/mcp/users/{user_id}/keys")
            .route(web::delete().to(offboard))
            .default_service(web::to(method_not_allowed("DELETE"))),
    );
}

#[utoipa::path(
    delete,
    path = "/api/mcp/users/{user_id}/keys",
    operation_id = "offboard_user",
    summary = "Revoke every active key of a user",
    description = "An admin may offboard any user of the tenant, a member only themself. One \
                   transaction, one `api_key.revoked` event per key; effective on every instance \
                   within 2 s.",
    params(("user_id" = uuid::Uuid, Path, description = "The user whose keys are revoked")),
    responses(
        (status = 200, description = "How many keys were revoked", body = cola_application::OffboardView),
        (status = 400, description = "`user_id` is not a UUID", body = crate::rest::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 403, description = "A member offboarding someone else", body = crate::rest::openapi::ProblemDetails, content_type = "application/problem+json"),
        crate::rest::openapi::ManagementFailures,
    ),
    security(("bearer_jwt" = [])),
    tag = "keys",
)]
pub(crate) async fn offboard(
    caller: Writer,
    keys: web::Data<ApiKeyService>,
    user_id: web::Path<String>,
) -> Result<HttpResponse, actix_web::Error> {
    let user: UserId = user_id
        .trim()
        .parse()
        .map_err(|_| Problem::invalid(&FieldErrors::single("user_id", "must be a UUID")))?;
    let revoked = keys.offboard(caller.0, user).await.map_err(ApiError)?;
    Ok(HttpResponse::Ok().json(revoked))
}
