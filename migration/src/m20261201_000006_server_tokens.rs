//! A registered server's verification token (docs/verify.md): only its SHA-256
//! digest (`verify_token_digest`, hex) is stored, unique across tenants since
//! the verify API finds the calling server by it, and when it was minted.
//! Minting again overwrites both, so the previous token stops working.
//!
//! SQLite adds one column per `ALTER TABLE`, hence one statement each.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum McpServers {
    Table,
    VerifyTokenDigest,
    VerifyTokenMintedAt,
}

const DIGEST_INDEX: &str = "ux_mcp_servers_verify_token_digest";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for mut column in [
            string_len_null(McpServers::VerifyTokenDigest, 64),
            timestamp_with_time_zone_null(McpServers::VerifyTokenMintedAt),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(McpServers::Table)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_index(
                Index::create()
                    .name(DIGEST_INDEX)
                    .table(McpServers::Table)
                    .col(McpServers::VerifyTokenDigest)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name(DIGEST_INDEX)
                    .table(McpServers::Table)
                    .to_owned(),
            )
            .await?;
        for column in [
            McpServers::VerifyTokenDigest,
            McpServers::VerifyTokenMintedAt,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(McpServers::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
