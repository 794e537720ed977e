//! The console's sessions (docs/console.md), one row per sign-in, so that
//! sign-out and offboarding end a session on every instance. The session id
//! travels in the signed cookie; only its SHA-256 (`id_digest`, hex) is
//! stored, so a copy of the table signs no one in. `ended_at` is set by
//! sign-out and offboarding; `dev` marks a session `--dev` made, which an
//! instance not in `--dev` refuses.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ConsoleSessions {
    Table,
    IdDigest,
    TenantId,
    UserId,
    CreatedAt,
    ExpiresAt,
    EndedAt,
    Dev,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ConsoleSessions::Table)
                    .if_not_exists()
                    .col(string_len(ConsoleSessions::IdDigest, 64).primary_key())
                    .col(uuid(ConsoleSessions::TenantId))
                    .col(uuid(ConsoleSessions::UserId))
                    .col(timestamp_with_time_zone(ConsoleSessions::CreatedAt))
                    .col(timestamp_with_time_zone(ConsoleSessions::ExpiresAt))
                    .col(timestamp_with_time_zone_null(ConsoleSessions::EndedAt))
                    .col(boolean(ConsoleSessions::Dev))
                    .to_owned(),
            )
            .await?;
        // Offboarding ends a user's sessions; a sign-in forgets the
        // tenant's expired ones.
        manager
            .create_index(
                Index::create()
                    .name("ix_console_sessions_tenant_user")
                    .table(ConsoleSessions::Table)
                    .col(ConsoleSessions::TenantId)
                    .col(ConsoleSessions::UserId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_console_sessions_tenant_expires_at")
                    .table(ConsoleSessions::Table)
                    .col(ConsoleSessions::TenantId)
                    .col(ConsoleSessions::ExpiresAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ConsoleSessions::Table).to_owned())
            .await
    }
}
