//! The MCP wire as Cola reads and writes it, and nothing of HTTP servers or
//! of Cola's policy: the two protocol eras and every rule that differs
//! between them ([`era`]), messages read once with their envelope checked
//! ([`message`]), the errors Cola answers with, one constructor each
//! ([`error`]), strict JSON for what the gateway forwards ([`strict`]), raw
//! JSON for what it relays ([`raw`]), and server-sent events cut into lines
//! ([`sse`]). The fuzz targets of the parsers of untrusted input depend on
//! this crate alone.

pub mod era;
pub mod error;
pub mod message;
pub mod raw;
pub mod sse;
pub mod strict;

pub use era::Era;
pub use error::RpcError;
pub use message::{Headers, Message, Notification, Request, read_message, read_parsed};
pub use raw::RawMessage;
