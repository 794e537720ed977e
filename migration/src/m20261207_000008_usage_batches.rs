//! The usage batches already applied, by id: applying a batch records its id
//! in the same transaction as its increments, so a batch retried after a
//! write whose acknowledgement was lost is recognised and applied no second
//! time. `applied_at` lets old ids be pruned (they are kept for a day).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum UsageBatches {
    Table,
    Id,
    AppliedAt,
}

const APPLIED_AT_INDEX: &str = "ix_usage_batches_applied_at";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(UsageBatches::Table)
                    .if_not_exists()
                    .col(uuid(UsageBatches::Id).primary_key())
                    .col(timestamp_with_time_zone(UsageBatches::AppliedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(APPLIED_AT_INDEX)
                    .table(UsageBatches::Table)
                    .col(UsageBatches::AppliedAt)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(UsageBatches::Table).to_owned())
            .await
    }
}
