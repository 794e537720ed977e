//! The routes of every surface, mounted in one App per worker with the
//! state they share and the middleware every request passes.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::middleware::from_fn;
use actix_web::{App, web};
use tracing_actix_web::TracingLogger;

use super::state::Shared;
use crate::foundations::json::MAX_BODY_BYTES;
use crate::foundations::routing::{get_only, not_found};
use crate::observability::{metrics, telemetry};
use crate::{console, gateway, mcp, rest};

/// One worker's App: the middleware, the shared state, the routes.
pub(super) fn app(
    shared: Shared,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .wrap(from_fn(metrics::record))
        .wrap(from_fn(telemetry::echo_request_id))
        .wrap(TracingLogger::<telemetry::RequestSpan>::new())
        .configure(|config| share(config, &shared))
        .configure(mount)
}

/// The app data every route may ask for.
fn share(config: &mut web::ServiceConfig, shared: &Shared) {
    if let Some(keys) = &shared.secret_scanning {
        config.app_data(keys.clone());
    }
    config
        .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
        .app_data(shared.resolver.clone())
        .app_data(shared.write_limiter.clone())
        .app_data(shared.keys.clone())
        .app_data(shared.reports.clone())
        .app_data(shared.servers.clone())
        // Each worker's own upstream client, pooled on its runtime.
        .app_data(web::Data::new(shared.gateway.for_worker()))
        .app_data(shared.verify.clone())
        .app_data(shared.identity.clone())
        .app_data(shared.management.clone())
        .app_data(shared.gate.clone())
        .app_data(shared.mcp_server.clone())
        .app_data(shared.metrics.clone())
        .app_data(shared.console.clone());
}

/// Every surface's routes. They are tried in this order, so the busiest
/// come first, before the key routes whose `{id}` patterns need a regex.
fn mount(config: &mut web::ServiceConfig) {
    config
        .configure(mcp::configure)
        .configure(gateway::configure)
        .service(get_only("/health", rest::health::health))
        .service(get_only("/ready", rest::health::ready))
        .service(get_only("/metrics", metrics::scrape))
        .service(get_only("/api/openapi.json", rest::openapi::document))
        .service(get_only("/api/docs", rest::api_docs::page))
        // Before the key routes: `/api/mcp/keys/report` would otherwise be
        // taken for a key id.
        .configure(rest::report::configure)
        .configure(rest::keys::configure)
        .configure(console::configure)
        .configure(rest::users::configure)
        .configure(rest::servers::configure)
        .configure(rest::verify::configure)
        .default_service(web::to(not_found));
}
