//! The sea-orm implementation of the application's
//! `ConsoleSessionRepository`. Every query filters by tenant; the session id
//! itself never reaches the database, only its digest.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cola_application::{ConsoleSession, ConsoleSessionRepository, RepositoryError, SessionDigest};
use cola_domain::{TenantId, UserId};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter,
    TransactionTrait,
};

use crate::database::Database;
use crate::entity::console_session;
use crate::repository::{corrupt, db_error};

#[derive(Debug, Clone)]
pub struct SeaOrmConsoleSessionRepository {
    database: Database,
}

impl SeaOrmConsoleSessionRepository {
    #[must_use]
    pub fn new(database: Database) -> Self {
        Self { database }
    }
}

fn to_session(row: console_session::Model) -> Result<ConsoleSession, RepositoryError> {
    Ok(ConsoleSession {
        digest: SessionDigest::from_hex(&row.id_digest)
            .ok_or_else(|| corrupt("a console session digest that is not 64 hex digits"))?,
        tenant_id: TenantId::from_uuid(row.tenant_id),
        user_id: UserId::from_uuid(row.user_id),
        created_at: row.created_at,
        expires_at: row.expires_at,
        ended_at: row.ended_at,
        dev: row.dev,
    })
}

/// Ends every open console session of `user` in `tenant` at `now`, on
/// `connection` (offboarding passes its transaction); how many it ended.
pub(crate) async fn end_sessions_of_user(
    connection: &impl ConnectionTrait,
    tenant: TenantId,
    user: UserId,
    now: DateTime<Utc>,
) -> Result<u64, RepositoryError> {
    let ended = console_session::Entity::update_many()
        .col_expr(console_session::Column::EndedAt, Expr::value(now))
        .filter(console_session::Column::TenantId.eq(tenant.as_uuid()))
        .filter(console_session::Column::UserId.eq(user.as_uuid()))
        .filter(console_session::Column::EndedAt.is_null())
        .exec(connection)
        .await
        .map_err(db_error)?;
    Ok(ended.rows_affected)
}

#[async_trait]
impl ConsoleSessionRepository for SeaOrmConsoleSessionRepository {
    async fn insert(&self, session: &ConsoleSession) -> Result<(), RepositoryError> {
        let txn = self.database.connection().begin().await.map_err(db_error)?;
        // Expired sessions can never be used again: each sign-in clears its
        // tenant's, so the table holds about the sessions that could still
        // be presented.
        console_session::Entity::delete_many()
            .filter(console_session::Column::TenantId.eq(session.tenant_id.as_uuid()))
            .filter(console_session::Column::ExpiresAt.lt(session.created_at))
            .exec(&txn)
            .await
            .map_err(db_error)?;
        console_session::ActiveModel {
            id_digest: Set(session.digest.to_hex()),
            tenant_id: Set(session.tenant_id.as_uuid()),
            user_id: Set(session.user_id.as_uuid()),
            created_at: Set(session.created_at),
            expires_at: Set(session.expires_at),
            ended_at: Set(session.ended_at),
            dev: Set(session.dev),
        }
        .insert(&txn)
        .await
        .map_err(db_error)?;
        txn.commit().await.map_err(db_error)
    }

    async fn find(
        &self,
        tenant: TenantId,
        digest: &SessionDigest,
    ) -> Result<Option<ConsoleSession>, RepositoryError> {
        console_session::Entity::find()
            .filter(console_session::Column::TenantId.eq(tenant.as_uuid()))
            .filter(console_session::Column::IdDigest.eq(digest.to_hex()))
            .one(self.database.connection())
            .await
            .map_err(db_error)?
            .map(to_session)
            .transpose()
    }

    async fn end(
        &self,
        tenant: TenantId,
        digest: &SessionDigest,
        now: DateTime<Utc>,
    ) -> Result<bool, RepositoryError> {
        let ended = console_session::Entity::update_many()
            .col_expr(console_session::Column::EndedAt, Expr::value(now))
            .filter(console_session::Column::TenantId.eq(tenant.as_uuid()))
            .filter(console_session::Column::IdDigest.eq(digest.to_hex()))
            .filter(console_session::Column::EndedAt.is_null())
            .exec(self.database.connection())
            .await
            .map_err(db_error)?;
        Ok(ended.rows_affected > 0)
    }
}
