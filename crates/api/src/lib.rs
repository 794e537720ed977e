//! Cola's HTTP surface: the management REST API, the MCP endpoint, their
//! authentication, configuration and telemetry. `Application` is what both
//! the `cola-api` binary and the tests start.

pub mod bearer;
pub mod cli;
pub mod client_ip;
pub mod config;
pub mod console;
pub mod gateway;
pub mod json;
pub mod jwks;
pub mod jwt;
pub mod mcp;
pub mod metrics;
pub mod openapi;
pub mod problem;
pub mod routes;
pub mod secret_scanning;
pub mod startup;
pub mod telemetry;
pub mod write_limit;

pub use startup::{Application, StartupError};
