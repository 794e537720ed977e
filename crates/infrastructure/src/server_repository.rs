//! The sea-orm implementation of the application's `ServerRepository`.
//! Every query filters by tenant; every change is written with its audit
//! event in one transaction; header values reach this code only sealed.

use async_trait::async_trait;
use cola_application::{
    HeadersWrite, RepositoryError, ServerRepository, StoredServer, TokenDigest,
};
use cola_domain::{
    HeaderName, KeyName, KeyPrefix, NewServer, RegisteredServer, ServerEvent, ServerId, ServerSlug,
    ServerTimeout, TenantId, UpstreamUrl,
};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction,
    DbBackend, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Select, SqlErr,
    Statement, TransactionTrait, UpdateMany,
};

use crate::database::Database;
use crate::entity::{api_key, mcp_server};
use crate::repository::{
    EventRow, corrupt, db_error, insert_event_row, json, stored_permissions, to_domain,
};

#[derive(Debug, Clone)]
pub struct SeaOrmServerRepository {
    database: Database,
}

impl SeaOrmServerRepository {
    #[must_use]
    pub fn new(database: Database) -> Self {
        Self { database }
    }
}

/// On PostgreSQL, serialises the server creates of one tenant for the rest
/// of the transaction, so each counts the others against the cap. (SQLite
/// has one writer at a time anyway.) Tenants whose lock ids collide are only
/// serialised with each other.
async fn lock_tenant_servers(
    txn: &DatabaseTransaction,
    tenant: TenantId,
) -> Result<(), RepositoryError> {
    if txn.get_database_backend() != DbBackend::Postgres {
        return Ok(());
    }
    // Folded from the tenant's id and a constant of this lock's own, so it
    // does not share ids with the per-owner key locks.
    const SERVERS: u64 = 0x5345_5256_4552_5321; // "SERVERS!"
    let (high, low) = tenant.as_uuid().as_u64_pair();
    let id = high.rotate_left(29) ^ low ^ SERVERS;
    txn.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT pg_advisory_xact_lock($1)",
        [i64::from_ne_bytes(id.to_ne_bytes()).into()],
    ))
    .await
    .map_err(db_error)?;
    Ok(())
}

fn event_row(event: &ServerEvent) -> EventRow<'_> {
    EventRow {
        kind: event.kind.as_str(),
        aggregate_id: event.server_id.as_uuid(),
        tenant_id: event.tenant_id,
        actor_user_id: event.actor_user_id,
        occurred_at: event.occurred_at,
        data: &event.data,
    }
}

fn header_names_json(server: &RegisteredServer) -> Result<serde_json::Value, RepositoryError> {
    json(&server.header_names())
}

fn to_server(row: mcp_server::Model) -> Result<StoredServer, RepositoryError> {
    let names: Vec<String> = serde_json::from_value(row.header_names).map_err(corrupt)?;
    let header_names = names
        .iter()
        .map(|name| HeaderName::parse(name))
        .collect::<Result<Vec<_>, _>>()
        .map_err(corrupt)?;
    let new = NewServer {
        id: ServerId::from_uuid(row.id),
        tenant_id: TenantId::from_uuid(row.tenant_id),
        slug: ServerSlug::parse(&row.slug).map_err(corrupt)?,
        name: KeyName::parse(&row.name).map_err(corrupt)?,
        url: row
            .url
            .as_deref()
            .map(UpstreamUrl::restore)
            .transpose()
            .map_err(corrupt)?,
        header_names,
        forward_identity: row.forward_identity,
        timeout: ServerTimeout::from_secs(i64::from(row.timeout_secs)).map_err(corrupt)?,
    };
    Ok(StoredServer {
        server: RegisteredServer::restore(new, row.created_at, row.updated_at),
        sealed_headers: row.sealed_headers,
    })
}

/// Whether an update event's `data` names `field`: only those columns are
/// written, so a concurrent change to another field is not undone.
fn changes(event: &ServerEvent, field: &str) -> bool {
    event
        .data
        .as_object()
        .is_some_and(|data| data.contains_key(field))
}

/// Removes every key's grant on the deleted server, each with the key's
/// own permissions event. Returns the keys' prefixes.
async fn remove_grants(
    txn: &DatabaseTransaction,
    event: &ServerEvent,
) -> Result<Vec<KeyPrefix>, RepositoryError> {
    // A cheap textual pre-filter (the stored grant names the id); the
    // domain then decides exactly which keys held a grant.
    let id = event.server_id.as_uuid().to_string();
    let rows = api_key::Entity::find()
        .filter(api_key::Column::TenantId.eq(event.tenant_id.as_uuid()))
        .filter(Expr::cust("CAST(permissions AS TEXT)").like(format!("%{id}%")))
        .all(txn)
        .await
        .map_err(db_error)?;
    let mut ungranted = Vec::new();
    for row in rows {
        let mut key = to_domain(row)?;
        let Some(change) =
            key.remove_server_grant(event.server_id, event.actor_user_id, event.occurred_at)
        else {
            continue;
        };
        api_key::Entity::update_many()
            .col_expr(
                api_key::Column::Permissions,
                Expr::value(stored_permissions(key.permissions())?),
            )
            .filter(api_key::Column::TenantId.eq(key.tenant_id().as_uuid()))
            .filter(api_key::Column::Id.eq(key.id().as_uuid()))
            .exec(txn)
            .await
            .map_err(db_error)?;
        insert_event_row(txn, EventRow::from(&change)).await?;
        ungranted.push(key.prefix().clone());
    }
    Ok(ungranted)
}

impl SeaOrmServerRepository {
    /// The one server `query` selects, if any.
    async fn one(
        &self,
        query: Select<mcp_server::Entity>,
    ) -> Result<Option<StoredServer>, RepositoryError> {
        query
            .one(self.database.connection())
            .await
            .map_err(db_error)?
            .map(to_server)
            .transpose()
    }

    /// Applies `update` to `server`'s row and records `event`, in one
    /// transaction. `false`: the row is gone and nothing was written.
    async fn update_with_event(
        &self,
        server: &RegisteredServer,
        update: UpdateMany<mcp_server::Entity>,
        event: &ServerEvent,
    ) -> Result<bool, RepositoryError> {
        let txn = self.database.connection().begin().await.map_err(db_error)?;
        let result = update
            .filter(mcp_server::Column::TenantId.eq(server.tenant_id().as_uuid()))
            .filter(mcp_server::Column::Id.eq(server.id().as_uuid()))
            .exec(&txn)
            .await
            .map_err(db_error)?;
        if result.rows_affected == 0 {
            txn.rollback().await.map_err(db_error)?;
            return Ok(false);
        }
        insert_event_row(&txn, event_row(event)).await?;
        txn.commit().await.map_err(db_error)?;
        Ok(true)
    }
}

#[async_trait]
impl ServerRepository for SeaOrmServerRepository {
    async fn insert(
        &self,
        server: &RegisteredServer,
        sealed_headers: Option<&[u8]>,
        event: &ServerEvent,
        max_servers: u32,
    ) -> Result<(), RepositoryError> {
        let txn = self.database.connection().begin().await.map_err(db_error)?;
        lock_tenant_servers(&txn, server.tenant_id()).await?;
        let row = mcp_server::ActiveModel {
            id: Set(server.id().as_uuid()),
            tenant_id: Set(server.tenant_id().as_uuid()),
            slug: Set(server.slug().as_str().to_owned()),
            name: Set(server.name().as_str().to_owned()),
            url: Set(server.url().map(|url| url.as_str().to_owned())),
            header_names: Set(header_names_json(server)?),
            sealed_headers: Set(sealed_headers.map(<[u8]>::to_vec)),
            forward_identity: Set(server.forward_identity()),
            timeout_secs: Set(i32::from(server.timeout().secs())),
            verify_token_digest: Set(None),
            verify_token_minted_at: Set(None),
            created_at: Set(server.created_at()),
            updated_at: Set(server.updated_at()),
        };
        if let Err(error) = row.insert(&txn).await {
            return Err(match error.sql_err() {
                Some(SqlErr::UniqueConstraintViolation(_)) => RepositoryError::SlugTaken,
                _ => db_error(error),
            });
        }
        // Counted after the insert, which took SQLite's write lock (and on
        // PostgreSQL under the tenant's lock): two concurrent creates cannot
        // both count the same total.
        let count = mcp_server::Entity::find()
            .filter(mcp_server::Column::TenantId.eq(server.tenant_id().as_uuid()))
            .count(&txn)
            .await
            .map_err(db_error)?;
        if count > u64::from(max_servers) {
            txn.rollback().await.map_err(db_error)?;
            return Err(RepositoryError::CapReached);
        }
        insert_event_row(&txn, event_row(event)).await?;
        txn.commit().await.map_err(db_error)
    }

    async fn count(&self, tenant: TenantId) -> Result<u64, RepositoryError> {
        mcp_server::Entity::find()
            .filter(mcp_server::Column::TenantId.eq(tenant.as_uuid()))
            .count(self.database.connection())
            .await
            .map_err(db_error)
    }

    async fn find(
        &self,
        tenant: TenantId,
        id: ServerId,
    ) -> Result<Option<StoredServer>, RepositoryError> {
        self.one(
            mcp_server::Entity::find()
                .filter(mcp_server::Column::TenantId.eq(tenant.as_uuid()))
                .filter(mcp_server::Column::Id.eq(id.as_uuid())),
        )
        .await
    }

    async fn find_by_slug(
        &self,
        tenant: TenantId,
        slug: &ServerSlug,
    ) -> Result<Option<StoredServer>, RepositoryError> {
        self.one(
            mcp_server::Entity::find()
                .filter(mcp_server::Column::TenantId.eq(tenant.as_uuid()))
                .filter(mcp_server::Column::Slug.eq(slug.as_str())),
        )
        .await
    }

    async fn find_slugs(
        &self,
        tenant: TenantId,
        slugs: &[ServerSlug],
    ) -> Result<Vec<RegisteredServer>, RepositoryError> {
        if slugs.is_empty() {
            return Ok(Vec::new());
        }
        mcp_server::Entity::find()
            .filter(mcp_server::Column::TenantId.eq(tenant.as_uuid()))
            .filter(mcp_server::Column::Slug.is_in(slugs.iter().map(ServerSlug::as_str)))
            .all(self.database.connection())
            .await
            .map_err(db_error)?
            .into_iter()
            .map(|row| to_server(row).map(|stored| stored.server))
            .collect()
    }

    async fn list(
        &self,
        tenant: TenantId,
        after: Option<ServerId>,
        limit: u64,
    ) -> Result<Vec<RegisteredServer>, RepositoryError> {
        let mut query =
            mcp_server::Entity::find().filter(mcp_server::Column::TenantId.eq(tenant.as_uuid()));
        if let Some(after) = after {
            query = query.filter(mcp_server::Column::Id.lt(after.as_uuid()));
        }
        query
            .order_by_desc(mcp_server::Column::Id)
            .limit(limit)
            .all(self.database.connection())
            .await
            .map_err(db_error)?
            .into_iter()
            .map(|row| to_server(row).map(|stored| stored.server))
            .collect()
    }

    async fn update(
        &self,
        server: &RegisteredServer,
        headers: HeadersWrite<'_>,
        event: &ServerEvent,
    ) -> Result<bool, RepositoryError> {
        use mcp_server::Column;
        let mut update = mcp_server::Entity::update_many()
            .col_expr(Column::UpdatedAt, Expr::value(server.updated_at()));
        if changes(event, "name") {
            update = update.col_expr(Column::Name, Expr::value(server.name().as_str()));
        }
        if changes(event, "url") {
            let url = server.url().map(|url| url.as_str().to_owned());
            update = update.col_expr(Column::Url, Expr::value(url));
        }
        if changes(event, "header_names") {
            update = update.col_expr(Column::HeaderNames, Expr::value(header_names_json(server)?));
        }
        if let HeadersWrite::Replace(sealed) = headers {
            update = update.col_expr(
                Column::SealedHeaders,
                Expr::value(sealed.map(<[u8]>::to_vec)),
            );
        }
        if changes(event, "forward_identity") {
            update = update.col_expr(
                Column::ForwardIdentity,
                Expr::value(server.forward_identity()),
            );
        }
        if changes(event, "timeout_secs") {
            update = update.col_expr(
                Column::TimeoutSecs,
                Expr::value(i32::from(server.timeout().secs())),
            );
        }
        self.update_with_event(server, update, event).await
    }

    async fn delete(
        &self,
        server: &RegisteredServer,
        event: &ServerEvent,
    ) -> Result<Option<Vec<KeyPrefix>>, RepositoryError> {
        let txn = self.database.connection().begin().await.map_err(db_error)?;
        let result = mcp_server::Entity::delete_many()
            .filter(mcp_server::Column::TenantId.eq(server.tenant_id().as_uuid()))
            .filter(mcp_server::Column::Id.eq(server.id().as_uuid()))
            .exec(&txn)
            .await
            .map_err(db_error)?;
        if result.rows_affected == 0 {
            txn.rollback().await.map_err(db_error)?;
            return Ok(None);
        }
        insert_event_row(&txn, event_row(event)).await?;
        let ungranted = remove_grants(&txn, event).await?;
        txn.commit().await.map_err(db_error)?;
        Ok(Some(ungranted))
    }

    async fn count_with_headers(&self) -> Result<u64, RepositoryError> {
        mcp_server::Entity::find()
            .filter(mcp_server::Column::SealedHeaders.is_not_null())
            .count(self.database.connection())
            .await
            .map_err(db_error)
    }

    async fn store_token(
        &self,
        server: &RegisteredServer,
        digest: &TokenDigest,
        event: &ServerEvent,
    ) -> Result<bool, RepositoryError> {
        use mcp_server::Column;
        let update = mcp_server::Entity::update_many()
            .col_expr(Column::VerifyTokenDigest, Expr::value(digest.to_hex()))
            .col_expr(Column::VerifyTokenMintedAt, Expr::value(event.occurred_at));
        self.update_with_event(server, update, event).await
    }

    async fn find_by_token(
        &self,
        digest: &TokenDigest,
    ) -> Result<Option<RegisteredServer>, RepositoryError> {
        // The one lookup not scoped by a tenant: the token is what tells
        // which tenant's server is asking (as a key's prefix does for keys).
        let query = mcp_server::Entity::find()
            .filter(mcp_server::Column::VerifyTokenDigest.eq(digest.to_hex()));
        Ok(self.one(query).await?.map(|stored| stored.server))
    }
}
