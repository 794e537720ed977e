//! `api_key_events.recorded_at`: when the database stored each event, by the
//! database's own clock. The change feed that keeps every instance's key
//! cache honest selects events by it; the writers' clocks (`occurred_at` and
//! the UUIDv7 id) may disagree with each other, and an instance whose clock
//! lags would otherwise record changes the other instances never read.
//!
//! The repository sets the column in each INSERT with a database expression
//! (SQLite cannot add a column whose default is not a constant). Existing
//! rows get their `occurred_at`, which is old enough for the feed either way.

use sea_orm_migration::sea_orm::DbBackend;
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ApiKeyEvents {
    Table,
    RecordedAt,
}

const INDEX: &str = "ix_api_key_events_recorded_at";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(ApiKeyEvents::Table)
                    .add_column(timestamp_with_time_zone_null(ApiKeyEvents::RecordedAt))
                    .to_owned(),
            )
            .await?;
        let connection = manager.get_connection();
        match manager.get_database_backend() {
            DbBackend::Postgres => {
                connection
                    .execute_unprepared(
                        "UPDATE api_key_events SET recorded_at = occurred_at; \
                         ALTER TABLE api_key_events ALTER COLUMN recorded_at SET NOT NULL",
                    )
                    .await?;
            }
            _ => {
                // The text form the repository writes (ISO 8601, UTC, with
                // milliseconds), so that old and new rows compare in order.
                connection
                    .execute_unprepared(
                        "UPDATE api_key_events \
                         SET recorded_at = strftime('%Y-%m-%dT%H:%M:%fZ', occurred_at)",
                    )
                    .await?;
            }
        }
        manager
            .create_index(
                Index::create()
                    .name(INDEX)
                    .table(ApiKeyEvents::Table)
                    .col(ApiKeyEvents::RecordedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name(INDEX)
                    .table(ApiKeyEvents::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(ApiKeyEvents::Table)
                    .drop_column(ApiKeyEvents::RecordedAt)
                    .to_owned(),
            )
            .await
    }
}
