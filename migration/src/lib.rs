//! Cola's schema, as sea-orm migrations that run unchanged on SQLite and
//! PostgreSQL. `cola-api` applies them at start-up and through `cola-api migrate`.

pub use sea_orm_migration::MigrationStatus;
pub use sea_orm_migration::prelude::*;

mod m20261123_000001_create_api_keys;
mod m20261123_000002_create_api_key_events;
mod m20261201_000004_create_mcp_servers;
mod m20261201_000005_key_lifecycle;
mod m20261201_000006_server_tokens;
mod m20261207_000003_add_event_recorded_at;
mod m20261207_000007_console_sessions;
mod m20261207_000008_usage_batches;

#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261123_000001_create_api_keys::Migration),
            Box::new(m20261123_000002_create_api_key_events::Migration),
            Box::new(m20261207_000003_add_event_recorded_at::Migration),
            Box::new(m20261201_000004_create_mcp_servers::Migration),
            Box::new(m20261201_000005_key_lifecycle::Migration),
            Box::new(m20261201_000006_server_tokens::Migration),
            Box::new(m20261207_000007_console_sessions::Migration),
            Box::new(m20261207_000008_usage_batches::Migration),
        ]
    }
}
