//! The keys themselves: one row per key, the secret only as an argon2id hash.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    TenantId,
    UserId,
    Name,
    Description,
    KeyPrefix,
    KeyHash,
    Permissions,
    IpWhitelist,
    Status,
    UsageCount,
    LastUsedAt,
    CreatedAt,
    ExpiresAt,
    RevokedAt,
    RevokedBy,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ApiKeys::Table)
                    .if_not_exists()
                    .col(uuid(ApiKeys::Id).primary_key())
                    .col(uuid(ApiKeys::TenantId))
                    .col(uuid(ApiKeys::UserId))
                    .col(string_len(ApiKeys::Name, 100))
                    .col(text_null(ApiKeys::Description))
                    .col(string_len_uniq(ApiKeys::KeyPrefix, 17))
                    .col(string_len(ApiKeys::KeyHash, 200))
                    .col(json_binary(ApiKeys::Permissions))
                    .col(json_binary(ApiKeys::IpWhitelist))
                    .col(string_len(ApiKeys::Status, 16))
                    .col(big_integer(ApiKeys::UsageCount).default(0))
                    .col(timestamp_with_time_zone_null(ApiKeys::LastUsedAt))
                    .col(timestamp_with_time_zone(ApiKeys::CreatedAt))
                    .col(timestamp_with_time_zone(ApiKeys::ExpiresAt))
                    .col(timestamp_with_time_zone_null(ApiKeys::RevokedAt))
                    .col(uuid_null(ApiKeys::RevokedBy))
                    .to_owned(),
            )
            .await?;
        // A member lists their own keys, newest first.
        manager
            .create_index(
                Index::create()
                    .name("ix_api_keys_tenant_user_id")
                    .table(ApiKeys::Table)
                    .col(ApiKeys::TenantId)
                    .col(ApiKeys::UserId)
                    .col(ApiKeys::Id)
                    .to_owned(),
            )
            .await?;
        // An admin lists the tenant's keys, optionally by status.
        manager
            .create_index(
                Index::create()
                    .name("ix_api_keys_tenant_status_id")
                    .table(ApiKeys::Table)
                    .col(ApiKeys::TenantId)
                    .col(ApiKeys::Status)
                    .col(ApiKeys::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ApiKeys::Table).to_owned())
            .await
    }
}
