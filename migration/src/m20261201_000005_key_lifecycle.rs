//! The rest of a key's life: its own rate limit (`rate_limit_requests` per
//! `rate_limit_per_secs`, both null for none) and, once rotated, the key
//! that replaced it (`replaced_by`), which keeps a key from being rotated
//! twice and takes it out of the owner's active-key cap.
//!
//! SQLite adds one column per `ALTER TABLE`, hence one statement each.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    RateLimitRequests,
    RateLimitPerSecs,
    ReplacedBy,
}

fn columns() -> [ColumnDef; 3] {
    [
        integer_null(ApiKeys::RateLimitRequests),
        integer_null(ApiKeys::RateLimitPerSecs),
        uuid_null(ApiKeys::ReplacedBy),
    ]
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for mut column in columns() {
            manager
                .alter_table(
                    Table::alter()
                        .table(ApiKeys::Table)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [
            ApiKeys::RateLimitRequests,
            ApiKeys::RateLimitPerSecs,
            ApiKeys::ReplacedBy,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(ApiKeys::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
