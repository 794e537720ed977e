//! The audit trail, also the outbox of domain events: each row is written in
//! the same transaction as the change it records.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ApiKeyEvents {
    Table,
    Id,
    TenantId,
    KeyId,
    EventType,
    ActorUserId,
    OccurredAt,
    Data,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ApiKeyEvents::Table)
                    .if_not_exists()
                    .col(uuid(ApiKeyEvents::Id).primary_key())
                    .col(uuid(ApiKeyEvents::TenantId))
                    .col(uuid(ApiKeyEvents::KeyId))
                    .col(string_len(ApiKeyEvents::EventType, 64))
                    .col(uuid(ApiKeyEvents::ActorUserId))
                    .col(timestamp_with_time_zone(ApiKeyEvents::OccurredAt))
                    .col(json_binary(ApiKeyEvents::Data))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_api_key_events_tenant_key_id")
                    .table(ApiKeyEvents::Table)
                    .col(ApiKeyEvents::TenantId)
                    .col(ApiKeyEvents::KeyId)
                    .col(ApiKeyEvents::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ApiKeyEvents::Table).to_owned())
            .await
    }
}
