//! Cola's adapters: the sea-orm repository (SQLite and PostgreSQL), argon2id
//! hashing, database set-up, and the HTTP client to tenants' MCP servers. sea-orm entities are private to this crate;
//! the rest of the workspace sees only the application's ports.

mod database;
mod entity;
mod hasher;
mod repository;
mod upstream;

pub use database::{Database, DatabaseError, DatabaseKind, MigrationState};
pub use hasher::{Argon2Hasher, HasherSettings};
pub use repository::SeaOrmApiKeyRepository;
pub use upstream::{
    AddressPolicy, ReadBodyError, UpstreamClient, UpstreamError, UpstreamRequest, UpstreamResponse,
};
