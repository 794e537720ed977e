//! Route helpers every surface uses: a GET-only resource, and the problem
//! answers to an unmounted path and to a method a path does not answer.

use actix_web::http::StatusCode;
use actix_web::http::header::{ALLOW, HeaderValue};
use actix_web::{HttpRequest, HttpResponse};

use crate::foundations::problem::Problem;

/// A resource answering GET, and 405 (with a problem body) to anything else.
pub fn get_only<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    actix_web::web::resource(path)
        .route(actix_web::web::get().to(handler))
        .default_service(actix_web::web::to(method_not_allowed("GET")))
}

/// Any path that is not mounted.
pub async fn not_found() -> HttpResponse {
    Problem::new(StatusCode::NOT_FOUND, "not-found", "no such resource").response()
}

/// A mounted path called with a method it does not answer.
pub fn method_not_allowed(
    allowed: &'static str,
) -> impl Fn(HttpRequest) -> std::future::Ready<HttpResponse> + Clone {
    move |request: HttpRequest| {
        let mut response = Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            format!("{} is not allowed here; use {allowed}", request.method()),
        )
        .response();
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static(allowed));
        std::future::ready(response)
    }
}
