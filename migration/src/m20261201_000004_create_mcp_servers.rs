//! The tenants' registered upstream MCP servers (docs/gateway.md). Header
//! values are never stored in clear: `sealed_headers` is an AEAD box bound
//! to the row's tenant and id, `header_names` the names alone.
//!
//! A server's audit events go to `api_key_events`, the one audit table and
//! outbox, with the server's id in `key_id` and an `mcp_server.*` type: the
//! trail, the outbox order and the change feed stay one table, and no key
//! event or key query changes (see decision 61).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum McpServers {
    Table,
    Id,
    TenantId,
    Slug,
    Name,
    Url,
    HeaderNames,
    SealedHeaders,
    ForwardIdentity,
    TimeoutSecs,
    CreatedAt,
    UpdatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(McpServers::Table)
                    .if_not_exists()
                    .col(uuid(McpServers::Id).primary_key())
                    .col(uuid(McpServers::TenantId))
                    .col(string_len(McpServers::Slug, 40))
                    .col(string_len(McpServers::Name, 100))
                    .col(text_null(McpServers::Url))
                    .col(json_binary(McpServers::HeaderNames))
                    .col(blob_null(McpServers::SealedHeaders))
                    .col(boolean(McpServers::ForwardIdentity))
                    .col(integer(McpServers::TimeoutSecs))
                    .col(timestamp_with_time_zone(McpServers::CreatedAt))
                    .col(timestamp_with_time_zone(McpServers::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        // A slug names one server in its tenant: the gateway's lookup, and
        // the 409 of a second registration.
        manager
            .create_index(
                Index::create()
                    .name("ux_mcp_servers_tenant_slug")
                    .table(McpServers::Table)
                    .col(McpServers::TenantId)
                    .col(McpServers::Slug)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // The tenant's servers, newest first.
        manager
            .create_index(
                Index::create()
                    .name("ix_mcp_servers_tenant_id")
                    .table(McpServers::Table)
                    .col(McpServers::TenantId)
                    .col(McpServers::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(McpServers::Table).to_owned())
            .await
    }
}
