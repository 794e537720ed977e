//! Cola's adapters: the sea-orm repositories (SQLite and PostgreSQL; keys,
//! servers and console sessions), argon2id
//! hashing, sealing of secrets at rest, identity assertions, host resolution, database set-up, and
//! the HTTP client to tenants' MCP servers, and the HTTP side of the management
//! identity provider (its documents, the console's OpenID Connect sign-in). sea-orm entities are private to
//! this crate; the rest of the workspace sees only the application's ports.

mod console_session_repository;
mod database;
mod entity;
mod hasher;
mod identity;
mod oidc;
mod provider_documents;
mod repository;
mod resolver;
mod sealing;
mod server_repository;
mod upstream;

pub use console_session_repository::SeaOrmConsoleSessionRepository;
pub use database::{Database, DatabaseError, DatabaseKind, MigrationState};
pub use hasher::{Argon2Hasher, HasherSettings};
pub use identity::{
    ASSERTION_LIFETIME_SECS, IdentityClaims, IdentityKey, IdentityKeyError, IdentityKeys,
    SigningError, previous_public_jwk,
};
pub use oidc::{OidcClientError, OidcClientSettings, OidcSignIn};
pub use provider_documents::{HttpClientError, HttpKeySetFetcher};
pub use repository::SeaOrmApiKeyRepository;
pub use resolver::SystemHostResolver;
pub use sealing::{SealContext, Sealer, SealingError, SecretsKey, SecretsKeyError};
pub use server_repository::SeaOrmServerRepository;
pub use upstream::{AddressPolicy, UpstreamClient};
