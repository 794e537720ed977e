//! sea-orm entities: the tables as rows. Mapped to and from the domain in
//! `repository.rs` only.

pub mod api_key;
pub mod api_key_event;
pub mod console_session;
pub mod mcp_server;
