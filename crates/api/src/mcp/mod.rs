//! The MCP endpoint (`POST /mcp`, docs/mcp.md): stateless Streamable HTTP
//! with JSON responses, serving both protocol eras, behind key
//! authentication.

pub(crate) mod gate;
pub mod handler;
pub mod protocol;
mod server;
mod tools;

use actix_web::middleware::from_fn;
use actix_web::web;

pub use gate::McpGate;
pub use server::McpServer;

use crate::foundations::routing::method_not_allowed;

pub fn configure(config: &mut web::ServiceConfig) {
    config.service(
        web::resource("/mcp")
            .wrap(from_fn(gate::authenticate))
            .route(web::post().to(handler::post))
            // No server-initiated stream and no sessions: GET and DELETE are
            // answered 405, which MCP clients take as "not offered".
            .default_service(web::to(method_not_allowed("POST"))),
    );
}
