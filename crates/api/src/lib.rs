//! Cola's HTTP surface: the management REST API, the MCP endpoints, the
//! console, their authentication, configuration and telemetry, laid out by
//! surface (`rest`, `mcp`, `gateway`, `console`) over `foundations` and
//! `auth`; `app` builds everything and is what both the `cola-api` binary
//! and the tests start.

mod app;
mod auth;
pub mod cli;
mod config;
mod console;
mod foundations;
mod gateway;
mod mcp;
mod observability;
mod rest;
