//! The sea-orm implementation of the application's `ApiKeyRepository`. Every
//! query but the credential lookup filters by tenant; the mapping between
//! rows and the domain lives here and nowhere else.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cola_application::{
    ACCESS_CHANGE_WINDOW, AccessChange, ApiKeyRepository, KeyListFilter, Offboarded, RecordedEvent,
    RepositoryError, SecretHash, StoredCredential, USAGE_BATCH_RETENTION, UsageBatch, UsageDelta,
};
use cola_domain::{
    ApiKeyId, ApiKeyPermissions, DomainEvent, EffectiveStatus, EventKind, IpWhitelist,
    KeyDescription, KeyName, KeyPrefix, KeyUsage, McpApiKey, NamePattern, NewKey, RateLimit,
    ResourcePattern, Revocation, Rotation, ServerGrant, ServerId, ServerSlug, TenantId, UserId,
};
use sea_orm::sea_query::{Alias, Expr, IntoIden, Query};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait,
    DatabaseTransaction, DbBackend, DbErr, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, RuntimeErr, SqlErr, Statement, TransactionTrait, UpdateMany,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::console_session_repository::end_sessions_of_user;
use crate::database::Database;
use crate::entity::{api_key, api_key_event};

const ACTIVE: &str = "active";
const REVOKED: &str = "revoked";

#[derive(Debug, Clone)]
pub struct SeaOrmApiKeyRepository {
    database: Database,
    /// Usage batches this repository applied, to prune now and then.
    applied_batches: Arc<AtomicU64>,
}

/// Applied usage batches between two prunings of old batch ids: one row is
/// written per batch and a pruning removes up to [`PRUNED_BATCHES_AT_MOST`],
/// so the table stays near a day's worth of batches.
const PRUNE_EVERY_BATCHES: u64 = 64;
/// The most batch ids one pruning deletes: a bounded statement however far
/// behind it is.
const PRUNED_BATCHES_AT_MOST: u64 = 1_000;

impl SeaOrmApiKeyRepository {
    #[must_use]
    pub fn new(database: Database) -> Self {
        Self {
            database,
            applied_batches: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Forgets the ids of usage batches applied before `applied_before`, at
    /// most [`PRUNED_BATCHES_AT_MOST`] of them (oldest first); how many.
    /// Called every [`PRUNE_EVERY_BATCHES`] applied batches with
    /// [`USAGE_BATCH_RETENTION`].
    pub async fn prune_usage_batches(
        &self,
        applied_before: DateTime<Utc>,
    ) -> Result<u64, RepositoryError> {
        let backend = self.database.backend();
        let (cutoff, limit) = match backend {
            DbBackend::Postgres => ("$1", "$2"),
            _ => ("?", "?"),
        };
        let sql = format!(
            "DELETE FROM usage_batches WHERE id IN \
             (SELECT id FROM usage_batches WHERE applied_at < {cutoff} \
              ORDER BY applied_at LIMIT {limit})"
        );
        let limit = i64::try_from(PRUNED_BATCHES_AT_MOST).unwrap_or(i64::MAX);
        let pruned = self
            .database
            .connection()
            .execute_raw(Statement::from_sql_and_values(
                backend,
                sql,
                [applied_before.into(), limit.into()],
            ))
            .await
            .map_err(db_error)?;
        Ok(pruned.rows_affected())
    }
}

/// Records a usage batch's id; affects no row when it is recorded already.
fn record_batch_statement(backend: DbBackend, id: Uuid, now: DateTime<Utc>) -> Statement {
    let placeholders = match backend {
        DbBackend::Postgres => "$1, $2",
        _ => "?, ?",
    };
    Statement::from_sql_and_values(
        backend,
        format!(
            "INSERT INTO usage_batches (id, applied_at) VALUES ({placeholders}) \
             ON CONFLICT (id) DO NOTHING"
        ),
        [id.into(), now.into()],
    )
}

/// Connection trouble is `Unavailable` (a 503 that heals by itself); anything
/// else is a bug or a corrupt database.
/// Rows per usage statement: 4 bind values each keeps a statement far below
/// SQLite's and PostgreSQL's limits on bind values.
const USAGE_ROWS_PER_STATEMENT: usize = 500;

/// One `UPDATE … FROM (VALUES …)` for a whole batch of usage deltas:
/// `usage_count + n` and a monotonic `last_used_at`, so concurrent flushes
/// from several instances never lose an increment or move time backwards.
/// Both engines accept this form (SQLite since 3.33); only the placeholders
/// differ.
fn add_usage_statement(backend: DbBackend, chunk: &[UsageDelta]) -> Statement {
    let mut values = Vec::with_capacity(chunk.len() * 4);
    let mut rows = Vec::with_capacity(chunk.len());
    for delta in chunk {
        let first = values.len();
        let placeholders: Vec<String> = (first + 1..=first + 4)
            .map(|n| match backend {
                DbBackend::Postgres => format!("${n}"),
                _ => "?".to_owned(),
            })
            .collect();
        rows.push(format!("({})", placeholders.join(", ")));
        values.push(delta.tenant_id.as_uuid().into());
        values.push(delta.key_id.as_uuid().into());
        values.push(i64::try_from(delta.count).unwrap_or(i64::MAX).into());
        values.push(delta.last_used_at.into());
    }
    let sql = format!(
        "WITH delta (tenant_id, key_id, uses, used_at) AS (VALUES {rows}) \
         UPDATE api_keys SET \
           usage_count = api_keys.usage_count + delta.uses, \
           last_used_at = CASE \
             WHEN api_keys.last_used_at IS NULL OR api_keys.last_used_at < delta.used_at \
             THEN delta.used_at ELSE api_keys.last_used_at END \
         FROM delta \
         WHERE api_keys.tenant_id = delta.tenant_id AND api_keys.id = delta.key_id",
        rows = rows.join(", ")
    );
    Statement::from_sql_and_values(backend, sql, values)
}

pub(crate) fn db_error(error: DbErr) -> RepositoryError {
    let unavailable = match &error {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(inner)) | DbErr::Query(RuntimeErr::SqlxError(inner)) => {
            use sea_orm::sqlx::Error;
            matches!(
                inner.as_ref(),
                Error::Io(_) | Error::PoolTimedOut | Error::PoolClosed | Error::WorkerCrashed
            ) || inner
                .as_database_error()
                .and_then(|db| db.code())
                // 57014: statement timeout; 57P01..57P03: shutdown; 08xxx: connection.
                .is_some_and(|code| {
                    code == "57014" || code.starts_with("57P") || code.starts_with("08")
                })
        }
        _ => false,
    };
    if unavailable {
        RepositoryError::Unavailable(Box::new(error))
    } else {
        RepositoryError::Unexpected(Box::new(error))
    }
}

/// `api_keys.permissions` as stored. Unlike the API's shape, each grant
/// keeps its server's id beside the slug: the id is what the scope matches.
/// Rows written before grants existed have no `servers`.
#[derive(Debug, Deserialize, Serialize)]
struct StoredPermissions {
    read: bool,
    write: bool,
    allowed_tools: Option<Vec<String>>,
    allowed_resources: Option<Vec<String>>,
    #[serde(default)]
    servers: Vec<StoredGrant>,
}

#[derive(Debug, Deserialize, Serialize)]
struct StoredGrant {
    server_id: Uuid,
    slug: String,
    allowed_tools: Option<Vec<String>>,
    allowed_resources: Option<Vec<String>>,
    allowed_prompts: Option<Vec<String>>,
}

fn names<T>(list: Option<&[T]>, text: fn(&T) -> &str) -> Option<Vec<String>> {
    list.map(|items| items.iter().map(|item| text(item).to_owned()).collect())
}

impl From<&ApiKeyPermissions> for StoredPermissions {
    fn from(permissions: &ApiKeyPermissions) -> Self {
        Self {
            read: permissions.read(),
            write: permissions.write(),
            allowed_tools: names(permissions.allowed_tools(), NamePattern::as_str),
            allowed_resources: names(permissions.allowed_resources(), ResourcePattern::as_str),
            servers: permissions
                .servers()
                .iter()
                .map(|grant| StoredGrant {
                    server_id: grant.server_id().as_uuid(),
                    slug: grant.slug().as_str().to_owned(),
                    allowed_tools: names(grant.allowed_tools(), NamePattern::as_str),
                    allowed_resources: names(grant.allowed_resources(), ResourcePattern::as_str),
                    allowed_prompts: names(grant.allowed_prompts(), NamePattern::as_str),
                })
                .collect(),
        }
    }
}

/// The stored JSON of a key's permissions.
pub(crate) fn stored_permissions(
    permissions: &ApiKeyPermissions,
) -> Result<serde_json::Value, RepositoryError> {
    json(&StoredPermissions::from(permissions))
}

pub(crate) fn corrupt(what: impl std::fmt::Display) -> RepositoryError {
    RepositoryError::Corrupt(what.to_string())
}

fn permissions_to_domain(
    id: Uuid,
    stored: serde_json::Value,
) -> Result<ApiKeyPermissions, RepositoryError> {
    let stored: StoredPermissions = serde_json::from_value(stored).map_err(corrupt)?;
    let invalid = |errors| corrupt(format!("permissions of {id}: {errors:?}"));
    let mut grants = Vec::with_capacity(stored.servers.len());
    for grant in stored.servers {
        grants.push(
            ServerGrant::new(
                ServerId::from_uuid(grant.server_id),
                ServerSlug::parse(&grant.slug).map_err(corrupt)?,
                grant.allowed_tools,
                grant.allowed_resources,
                grant.allowed_prompts,
            )
            .map_err(invalid)?,
        );
    }
    Ok(ApiKeyPermissions::new(
        stored.read,
        stored.write,
        stored.allowed_tools,
        stored.allowed_resources,
    )
    .map_err(invalid)?
    .with_servers(grants))
}

pub(crate) fn to_domain(row: api_key::Model) -> Result<McpApiKey, RepositoryError> {
    let permissions = permissions_to_domain(row.id, row.permissions)?;
    let ip_entries: Vec<String> = serde_json::from_value(row.ip_whitelist).map_err(corrupt)?;
    let revocation = match (row.status.as_str(), row.revoked_at, row.revoked_by) {
        (ACTIVE, _, _) => None,
        (REVOKED, Some(at), Some(by)) => Some(Revocation {
            at,
            by: UserId::from_uuid(by),
        }),
        (status, _, _) => return Err(corrupt(format!("status `{status}` of {}", row.id))),
    };
    let rate_limit = match (row.rate_limit_requests, row.rate_limit_per_secs) {
        (None, None) => None,
        (Some(requests), Some(per_secs)) => Some(
            RateLimit::new(i64::from(requests), i64::from(per_secs))
                .map_err(|errors| corrupt(format!("rate limit of {}: {errors:?}", row.id)))?,
        ),
        _ => return Err(corrupt(format!("half a rate limit on {}", row.id))),
    };
    let new = NewKey {
        id: ApiKeyId::from_uuid(row.id),
        tenant_id: TenantId::from_uuid(row.tenant_id),
        owner: UserId::from_uuid(row.user_id),
        name: KeyName::parse(&row.name).map_err(corrupt)?,
        description: row
            .description
            .as_deref()
            .map(KeyDescription::parse)
            .transpose()
            .map_err(corrupt)?,
        prefix: KeyPrefix::parse(&row.key_prefix).map_err(corrupt)?,
        permissions,
        ip_whitelist: IpWhitelist::parse(&ip_entries).map_err(corrupt)?,
        rate_limit,
        expires_at: row.expires_at,
    };
    let usage = KeyUsage {
        count: u64::try_from(row.usage_count).unwrap_or(0),
        last_used_at: row.last_used_at,
    };
    Ok(McpApiKey::restore(new, row.created_at, revocation, usage)
        .replaced_by_key(row.replaced_by.map(ApiKeyId::from_uuid)))
}

/// The stored columns of a rate limit: both null for none.
fn rate_limit_columns(limit: Option<RateLimit>) -> (Option<i32>, Option<i32>) {
    let column = |value: u32| i32::try_from(value).unwrap_or(i32::MAX);
    (
        limit.map(|limit| column(limit.requests())),
        limit.map(|limit| column(limit.per_secs())),
    )
}

pub(crate) fn json<T: serde::Serialize>(value: &T) -> Result<serde_json::Value, RepositoryError> {
    serde_json::to_value(value).map_err(|e| RepositoryError::Unexpected(Box::new(e)))
}

/// `api_key_events.recorded_at`: when the database stored the event, by the
/// database's clock. Not in the entity: only `insert_event` writes it and
/// only `recent_access_changes` reads it, both in SQL.
const RECORDED_AT: &str = "recorded_at";

/// The database's current instant, as `recorded_at` holds it. SQLite has no
/// timestamp type: its column is ISO 8601 text in UTC, which compares in
/// time order.
fn database_now(backend: DbBackend) -> &'static str {
    match backend {
        // The instant of the insert itself rather than `now()`, the start of
        // the transaction.
        DbBackend::Postgres => "clock_timestamp()",
        _ => "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
    }
}

/// An event's id: a UUIDv7 of the instant the event occurred (the writing
/// instance's clock), so ids sort with `occurred_at`. A v7 timestamp is in
/// milliseconds; the 12 bits after it hold the fraction of the millisecond
/// (RFC 9562 §6.2, method 3), so that events microseconds apart sort too,
/// whichever instance wrote them. The other 62 bits are random.
fn event_id(occurred_at: DateTime<Utc>) -> Uuid {
    let millis = u64::try_from(occurred_at.timestamp_millis()).unwrap_or(0);
    let nanos_in_millisecond = occurred_at.timestamp_subsec_nanos() % 1_000_000;
    let fraction = u64::from(nanos_in_millisecond) * 4096 / 1_000_000;
    let [high, low] = u16::try_from(fraction).unwrap_or(0x0FFF).to_be_bytes();
    let mut counter_and_random: [u8; 10] = rand::random();
    counter_and_random[0] = high;
    counter_and_random[1] = low;
    uuid::Builder::from_unix_timestamp_millis(millis, &counter_and_random).into_uuid()
}

/// One row of the audit table, of a key's event or a server's: the server's
/// id goes in `key_id`, the column of the aggregate's id, and its event type
/// (`mcp_server.*`) tells the two apart (decision 61).
pub(crate) struct EventRow<'a> {
    pub kind: &'static str,
    pub aggregate_id: Uuid,
    pub tenant_id: TenantId,
    pub actor_user_id: UserId,
    pub occurred_at: DateTime<Utc>,
    pub data: &'a serde_json::Value,
}

impl<'a> From<&'a DomainEvent> for EventRow<'a> {
    fn from(event: &'a DomainEvent) -> Self {
        Self {
            kind: event.kind.as_str(),
            aggregate_id: event.key_id.as_uuid(),
            tenant_id: event.tenant_id,
            actor_user_id: event.actor_user_id,
            occurred_at: event.occurred_at,
            data: &event.data,
        }
    }
}

/// Stores `event`, stamping `recorded_at` with the database's clock. The
/// change feed selects by that stamp: the writers' clocks (`occurred_at`, the
/// id) may be off, and an instance whose clock lags would otherwise write
/// events that the others' feeds consider old and never read.
async fn insert_event(
    txn: &DatabaseTransaction,
    event: &DomainEvent,
) -> Result<(), RepositoryError> {
    insert_event_row(txn, EventRow::from(event)).await
}

/// [`insert_event`] of any aggregate's event.
pub(crate) async fn insert_event_row(
    txn: &DatabaseTransaction,
    event: EventRow<'_>,
) -> Result<(), RepositoryError> {
    use api_key_event::Column;
    let mut insert = Query::insert();
    insert
        .into_table(api_key_event::Entity)
        .columns([
            Column::Id.into_iden(),
            Column::TenantId.into_iden(),
            Column::KeyId.into_iden(),
            Column::EventType.into_iden(),
            Column::ActorUserId.into_iden(),
            Column::OccurredAt.into_iden(),
            Column::Data.into_iden(),
            Alias::new(RECORDED_AT).into_iden(),
        ])
        .values([
            Expr::value(event_id(event.occurred_at)),
            Expr::value(event.tenant_id.as_uuid()),
            Expr::value(event.aggregate_id),
            Expr::value(event.kind),
            Expr::value(event.actor_user_id.as_uuid()),
            Expr::value(event.occurred_at),
            Expr::value(event.data.clone()),
            Expr::cust(database_now(txn.get_database_backend())),
        ])
        .map_err(|e| RepositoryError::Unexpected(Box::new(e)))?;
    txn.execute(&insert).await.map_err(db_error)?;
    Ok(())
}

/// Whether a change event's `data` names `field`: the domain records exactly
/// the fields a change touched, and only those columns may be written. A
/// column rewritten from the aggregate as it was read would undo a
/// concurrent change to that column.
fn changes(event: &DomainEvent, field: &str) -> bool {
    event
        .data
        .as_object()
        .is_some_and(|data| data.contains_key(field))
}

/// `update` writing `columns`, which must not be empty: a change event that
/// names none of its kind's fields is not one the domain makes.
fn set_columns(
    update: UpdateMany<api_key::Entity>,
    event: &DomainEvent,
    columns: Vec<(api_key::Column, Expr)>,
) -> Result<UpdateMany<api_key::Entity>, RepositoryError> {
    if columns.is_empty() {
        return Err(corrupt(format!(
            "a {} event that names no field",
            event.kind.as_str()
        )));
    }
    Ok(columns.into_iter().fold(update, |update, (column, value)| {
        update.col_expr(column, value)
    }))
}

/// A PostgreSQL advisory-lock id for one owner, so concurrent creates for
/// the same user are counted against the cap one at a time. Collisions
/// between owners only serialise them.
fn owner_lock_id(tenant: TenantId, owner: UserId) -> i64 {
    let mut folded = 0u64;
    for chunk in [
        tenant.as_uuid().as_u64_pair(),
        owner.as_uuid().as_u64_pair(),
    ] {
        folded = folded.rotate_left(17) ^ chunk.0 ^ chunk.1.rotate_left(31);
    }
    i64::from_ne_bytes(folded.to_ne_bytes())
}

fn active_at(now: DateTime<Utc>) -> Condition {
    Condition::all()
        .add(api_key::Column::Status.eq(ACTIVE))
        .add(api_key::Column::ExpiresAt.gt(now))
}

/// The keys of `owner` that count against the active-key cap: active and
/// not replaced. A rotated key in its grace period is on its way out; its
/// successor holds the slot.
fn counted_against_cap(tenant: TenantId, owner: UserId, now: DateTime<Utc>) -> Condition {
    Condition::all()
        .add(api_key::Column::TenantId.eq(tenant.as_uuid()))
        .add(api_key::Column::UserId.eq(owner.as_uuid()))
        .add(active_at(now))
        .add(api_key::Column::ReplacedBy.is_null())
}

/// Takes the owner's advisory lock (PostgreSQL), so creates, rotations and
/// offboarding of one owner are counted and written one at a time.
async fn lock_owner(
    txn: &DatabaseTransaction,
    tenant: TenantId,
    owner: UserId,
) -> Result<(), RepositoryError> {
    if txn.get_database_backend() == DbBackend::Postgres {
        txn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_advisory_xact_lock($1)",
            [owner_lock_id(tenant, owner).into()],
        ))
        .await
        .map_err(db_error)?;
    }
    Ok(())
}

/// Inserts a new key's row; a prefix collision is `PrefixTaken`.
async fn insert_row(
    txn: &DatabaseTransaction,
    key: &McpApiKey,
    hash: &SecretHash,
) -> Result<(), RepositoryError> {
    let (rate_limit_requests, rate_limit_per_secs) = rate_limit_columns(key.rate_limit());
    let row = api_key::ActiveModel {
        id: Set(key.id().as_uuid()),
        tenant_id: Set(key.tenant_id().as_uuid()),
        user_id: Set(key.owner().as_uuid()),
        name: Set(key.name().as_str().to_owned()),
        description: Set(key.description().map(|d| d.as_str().to_owned())),
        key_prefix: Set(key.prefix().as_str().to_owned()),
        key_hash: Set(hash.as_str().to_owned()),
        permissions: Set(stored_permissions(key.permissions())?),
        ip_whitelist: Set(json(key.ip_whitelist())?),
        status: Set(ACTIVE.to_owned()),
        usage_count: Set(0),
        last_used_at: Set(None),
        created_at: Set(key.created_at()),
        expires_at: Set(key.expires_at()),
        revoked_at: Set(None),
        revoked_by: Set(None),
        rate_limit_requests: Set(rate_limit_requests),
        rate_limit_per_secs: Set(rate_limit_per_secs),
        replaced_by: Set(None),
    };
    if let Err(error) = row.insert(txn).await {
        return Err(match error.sql_err() {
            Some(SqlErr::UniqueConstraintViolation(_)) => RepositoryError::PrefixTaken,
            _ => db_error(error),
        });
    }
    Ok(())
}

/// Whether `owner`, with the row just inserted, is over `max_active`.
async fn over_cap(
    txn: &DatabaseTransaction,
    key: &McpApiKey,
    max_active: u32,
) -> Result<bool, RepositoryError> {
    let active = api_key::Entity::find()
        .filter(counted_against_cap(
            key.tenant_id(),
            key.owner(),
            key.created_at(),
        ))
        .count(txn)
        .await
        .map_err(db_error)?;
    Ok(active > u64::from(max_active))
}

/// Revokes one key as `key.revocation()` says, only if it is still active.
async fn write_revocation(
    txn: &DatabaseTransaction,
    key: &McpApiKey,
) -> Result<bool, RepositoryError> {
    let revocation = key
        .revocation()
        .ok_or_else(|| corrupt("a revoked event for an unrevoked key"))?;
    let result = api_key::Entity::update_many()
        .col_expr(api_key::Column::Status, Expr::value(REVOKED))
        .col_expr(api_key::Column::RevokedAt, Expr::value(revocation.at))
        .col_expr(
            api_key::Column::RevokedBy,
            Expr::value(revocation.by.as_uuid()),
        )
        .filter(api_key::Column::TenantId.eq(key.tenant_id().as_uuid()))
        .filter(api_key::Column::Id.eq(key.id().as_uuid()))
        .filter(api_key::Column::Status.eq(ACTIVE))
        .exec(txn)
        .await
        .map_err(db_error)?;
    Ok(result.rows_affected > 0)
}

#[async_trait]
impl ApiKeyRepository for SeaOrmApiKeyRepository {
    async fn insert(
        &self,
        key: &McpApiKey,
        hash: &SecretHash,
        event: &DomainEvent,
        max_active: u32,
    ) -> Result<(), RepositoryError> {
        let txn = self.database.connection().begin().await.map_err(db_error)?;
        lock_owner(&txn, key.tenant_id(), key.owner()).await?;
        // Inserting before counting takes SQLite's write lock first, so two
        // concurrent creates cannot both count the same total.
        insert_row(&txn, key, hash).await?;
        if over_cap(&txn, key, max_active).await? {
            txn.rollback().await.map_err(db_error)?;
            return Err(RepositoryError::CapReached);
        }
        insert_event(&txn, event).await?;
        txn.commit().await.map_err(db_error)
    }

    async fn count_active(
        &self,
        tenant: TenantId,
        owner: UserId,
        now: DateTime<Utc>,
    ) -> Result<u64, RepositoryError> {
        api_key::Entity::find()
            .filter(counted_against_cap(tenant, owner, now))
            .count(self.database.connection())
            .await
            .map_err(db_error)
    }

    async fn find(
        &self,
        tenant: TenantId,
        id: ApiKeyId,
    ) -> Result<Option<McpApiKey>, RepositoryError> {
        api_key::Entity::find()
            .filter(api_key::Column::TenantId.eq(tenant.as_uuid()))
            .filter(api_key::Column::Id.eq(id.as_uuid()))
            .one(self.database.connection())
            .await
            .map_err(db_error)?
            .map(to_domain)
            .transpose()
    }

    async fn list(
        &self,
        tenant: TenantId,
        filter: &KeyListFilter,
    ) -> Result<Vec<McpApiKey>, RepositoryError> {
        let mut query =
            api_key::Entity::find().filter(api_key::Column::TenantId.eq(tenant.as_uuid()));
        if let Some(owner) = filter.owner {
            query = query.filter(api_key::Column::UserId.eq(owner.as_uuid()));
        }
        query = match filter.status {
            None => query,
            Some(EffectiveStatus::Active) => query.filter(active_at(filter.now)),
            Some(EffectiveStatus::Expired) => query
                .filter(api_key::Column::Status.eq(ACTIVE))
                .filter(api_key::Column::ExpiresAt.lte(filter.now)),
            Some(EffectiveStatus::Revoked) => query.filter(api_key::Column::Status.eq(REVOKED)),
        };
        if let Some(after) = filter.after {
            query = query.filter(api_key::Column::Id.lt(after.0.as_uuid()));
        }
        query
            .order_by_desc(api_key::Column::Id)
            .limit(filter.limit)
            .all(self.database.connection())
            .await
            .map_err(db_error)?
            .into_iter()
            .map(to_domain)
            .collect()
    }

    async fn apply_change(
        &self,
        key: &McpApiKey,
        event: &DomainEvent,
    ) -> Result<bool, RepositoryError> {
        let mut update = api_key::Entity::update_many();
        update = match event.kind {
            EventKind::ApiKeyMetadataUpdated => {
                let mut columns = Vec::new();
                if changes(event, "name") {
                    columns.push((api_key::Column::Name, Expr::value(key.name().as_str())));
                }
                if changes(event, "description") {
                    let description = key.description().map(|d| d.as_str().to_owned());
                    columns.push((api_key::Column::Description, Expr::value(description)));
                }
                set_columns(update, event, columns)?
            }
            EventKind::ApiKeyPermissionsUpdated => {
                let mut columns = Vec::new();
                if changes(event, "permissions") {
                    let permissions = stored_permissions(key.permissions())?;
                    columns.push((api_key::Column::Permissions, Expr::value(permissions)));
                }
                if changes(event, "ip_whitelist") {
                    let list = json(key.ip_whitelist())?;
                    columns.push((api_key::Column::IpWhitelist, Expr::value(list)));
                }
                if changes(event, "rate_limit") {
                    let (requests, per_secs) = rate_limit_columns(key.rate_limit());
                    columns.push((api_key::Column::RateLimitRequests, Expr::value(requests)));
                    columns.push((api_key::Column::RateLimitPerSecs, Expr::value(per_secs)));
                }
                set_columns(update, event, columns)?
            }
            EventKind::ApiKeyRevoked => {
                let revocation = key
                    .revocation()
                    .ok_or_else(|| corrupt("a revoked event for an unrevoked key"))?;
                update
                    .col_expr(api_key::Column::Status, Expr::value(REVOKED))
                    .col_expr(api_key::Column::RevokedAt, Expr::value(revocation.at))
                    .col_expr(
                        api_key::Column::RevokedBy,
                        Expr::value(revocation.by.as_uuid()),
                    )
            }
            EventKind::ApiKeyCreated | EventKind::ApiKeyRotated => {
                return Err(corrupt(format!(
                    "a {} event is not a change of one key",
                    event.kind.as_str()
                )));
            }
        };
        let txn = self.database.connection().begin().await.map_err(db_error)?;
        let result = update
            .filter(api_key::Column::TenantId.eq(key.tenant_id().as_uuid()))
            .filter(api_key::Column::Id.eq(key.id().as_uuid()))
            .filter(api_key::Column::Status.eq(ACTIVE))
            .exec(&txn)
            .await
            .map_err(db_error)?;
        if result.rows_affected == 0 {
            txn.rollback().await.map_err(db_error)?;
            return Ok(false);
        }
        insert_event(&txn, event).await?;
        txn.commit().await.map_err(db_error)?;
        Ok(true)
    }

    async fn rotate(
        &self,
        old: &McpApiKey,
        rotation: &Rotation,
        hash: &SecretHash,
        max_active: u32,
    ) -> Result<(), RepositoryError> {
        let new = &rotation.successor;
        let successor = old
            .replaced_by()
            .ok_or_else(|| corrupt("a rotation that names no successor"))?;
        let txn = self.database.connection().begin().await.map_err(db_error)?;
        lock_owner(&txn, old.tenant_id(), old.owner()).await?;
        // Conditional on the key being as the rotation found it: still
        // active, never rotated, not expired. A concurrent rotation or
        // revocation makes this write nothing, and then nothing is written.
        let pulled_in = api_key::Entity::update_many()
            .col_expr(api_key::Column::ExpiresAt, Expr::value(old.expires_at()))
            .col_expr(
                api_key::Column::ReplacedBy,
                Expr::value(successor.as_uuid()),
            )
            .filter(api_key::Column::TenantId.eq(old.tenant_id().as_uuid()))
            .filter(api_key::Column::Id.eq(old.id().as_uuid()))
            .filter(active_at(new.created_at()))
            .filter(api_key::Column::ReplacedBy.is_null())
            .exec(&txn)
            .await
            .map_err(db_error)?;
        if pulled_in.rows_affected == 0 {
            txn.rollback().await.map_err(db_error)?;
            return Err(RepositoryError::KeyChanged);
        }
        insert_row(&txn, new, hash).await?;
        if over_cap(&txn, new, max_active).await? {
            txn.rollback().await.map_err(db_error)?;
            return Err(RepositoryError::CapReached);
        }
        insert_event(&txn, &rotation.rotated).await?;
        insert_event(&txn, &rotation.created).await?;
        txn.commit().await.map_err(db_error)
    }

    async fn offboard(
        &self,
        tenant: TenantId,
        owner: UserId,
        actor: UserId,
        now: DateTime<Utc>,
    ) -> Result<Offboarded, RepositoryError> {
        let txn = self.database.connection().begin().await.map_err(db_error)?;
        lock_owner(&txn, tenant, owner).await?;
        if txn.get_database_backend() == DbBackend::Sqlite {
            // A write first takes SQLite's write lock, so the keys read next
            // cannot change (or gain a sibling) before they are revoked.
            txn.execute_unprepared("UPDATE api_keys SET status = status WHERE 0 = 1")
                .await
                .map_err(db_error)?;
        }
        let rows = api_key::Entity::find()
            .filter(api_key::Column::TenantId.eq(tenant.as_uuid()))
            .filter(api_key::Column::UserId.eq(owner.as_uuid()))
            .filter(active_at(now))
            .order_by_asc(api_key::Column::Id)
            .all(&txn)
            .await
            .map_err(db_error)?;
        let mut revoked = Vec::with_capacity(rows.len());
        for row in rows {
            let mut key = to_domain(row)?;
            let Some(event) = key.revoke(actor, now) else {
                continue;
            };
            if write_revocation(&txn, &key).await? {
                insert_event(&txn, &event).await?;
                revoked.push(key);
            }
        }
        // The user's console sessions end with their keys: a sign-out on
        // their behalf, on every instance, since every instance reads the
        // session's row on each request.
        let console_sessions_ended = end_sessions_of_user(&txn, tenant, owner, now).await?;
        // The user's OAuth grants (not built yet) are to end here as well, in
        // this transaction, once they exist.
        txn.commit().await.map_err(db_error)?;
        Ok(Offboarded {
            revoked,
            console_sessions_ended,
        })
    }

    async fn events(
        &self,
        tenant: TenantId,
        id: ApiKeyId,
    ) -> Result<Vec<RecordedEvent>, RepositoryError> {
        let rows = api_key_event::Entity::find()
            .filter(api_key_event::Column::TenantId.eq(tenant.as_uuid()))
            .filter(api_key_event::Column::KeyId.eq(id.as_uuid()))
            // The table holds servers' events too; a key's trail is its own.
            .filter(api_key_event::Column::EventType.starts_with("api_key."))
            .order_by_asc(api_key_event::Column::OccurredAt)
            .order_by_asc(api_key_event::Column::Id)
            .all(self.database.connection())
            .await
            .map_err(db_error)?;
        rows.into_iter()
            .map(|row| {
                Ok(RecordedEvent {
                    id: row.id,
                    kind: EventKind::parse(&row.event_type)
                        .ok_or_else(|| corrupt(format!("event type `{}`", row.event_type)))?,
                    key_id: ApiKeyId::from_uuid(row.key_id),
                    tenant_id: TenantId::from_uuid(row.tenant_id),
                    actor_user_id: UserId::from_uuid(row.actor_user_id),
                    occurred_at: row.occurred_at,
                    data: row.data,
                })
            })
            .collect()
    }

    async fn find_credential(
        &self,
        prefix: &KeyPrefix,
    ) -> Result<Option<StoredCredential>, RepositoryError> {
        let Some(row) = api_key::Entity::find()
            .filter(api_key::Column::KeyPrefix.eq(prefix.as_str()))
            .one(self.database.connection())
            .await
            .map_err(db_error)?
        else {
            return Ok(None);
        };
        let hash = SecretHash::new(row.key_hash.clone());
        Ok(Some(StoredCredential {
            key: to_domain(row)?,
            hash,
        }))
    }

    async fn recent_access_changes(&self) -> Result<Vec<AccessChange>, RepositoryError> {
        let backend = self.database.backend();
        let window_ms = i64::try_from(ACCESS_CHANGE_WINDOW.as_millis()).unwrap_or(i64::MAX);
        // The floor is computed by the database, from its own clock, and
        // compared with the stamps it made: no instance's clock is involved.
        // PostgreSQL's `now()` (not `clock_timestamp()`) is stable within
        // the statement, so the index on `recorded_at` can be used.
        let (floor, placeholders) = match backend {
            DbBackend::Postgres => ("now() - $1 * interval '1 millisecond'", ["$2", "$3", "$4"]),
            _ => ("strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?)", ["?", "?", "?"]),
        };
        let window = match backend {
            DbBackend::Postgres => window_ms.into(),
            _ => format!("-{}.{:03} seconds", window_ms / 1000, window_ms % 1000).into(),
        };
        // Joined with the key, whose prefix the key cache is keyed by; the
        // pair (tenant, key) is the key's identity as everywhere else.
        let sql = format!(
            "SELECT e.id, e.event_type, e.key_id, k.key_prefix FROM api_key_events e \
             JOIN api_keys k ON k.tenant_id = e.tenant_id AND k.id = e.key_id \
             WHERE e.{RECORDED_AT} >= {floor} AND e.event_type IN ({}, {}, {})",
            placeholders[0], placeholders[1], placeholders[2]
        );
        let statement = Statement::from_sql_and_values(
            backend,
            sql,
            [
                window,
                EventKind::ApiKeyRevoked.as_str().into(),
                EventKind::ApiKeyPermissionsUpdated.as_str().into(),
                // A rotation shortens the old key's life.
                EventKind::ApiKeyRotated.as_str().into(),
            ],
        );
        let rows = self
            .database
            .connection()
            .query_all_raw(statement)
            .await
            .map_err(db_error)?;
        rows.into_iter()
            .map(|row| {
                let read = |e: DbErr| RepositoryError::Unexpected(Box::new(e));
                let prefix: String = row.try_get("", "key_prefix").map_err(read)?;
                let kind: String = row.try_get("", "event_type").map_err(read)?;
                Ok(AccessChange {
                    event_id: row.try_get("", "id").map_err(read)?,
                    kind: EventKind::parse(&kind)
                        .ok_or_else(|| corrupt(format!("event type `{kind}`")))?,
                    key_id: ApiKeyId::from_uuid(row.try_get("", "key_id").map_err(read)?),
                    key_prefix: KeyPrefix::parse(&prefix).map_err(corrupt)?,
                })
            })
            .collect()
    }

    async fn add_usage(&self, batch: &UsageBatch) -> Result<bool, RepositoryError> {
        let backend = self.database.backend();
        // In key order, so that two instances flushing overlapping batches
        // tend to lock rows in the same order rather than deadlock (a batch
        // that loses a deadlock anyway stays pending and is retried).
        let mut sorted = batch.deltas.clone();
        sorted.sort_unstable_by_key(|delta| (delta.tenant_id.as_uuid(), delta.key_id.as_uuid()));
        let txn = self.database.connection().begin().await.map_err(db_error)?;
        // The id first: a second writer of the same batch waits on its key
        // until the first commits (then finds it taken) or rolls back.
        let recorded = txn
            .execute_raw(record_batch_statement(backend, batch.id, Utc::now()))
            .await
            .map_err(db_error)?;
        if recorded.rows_affected() == 0 {
            txn.rollback().await.map_err(db_error)?;
            return Ok(false);
        }
        for chunk in sorted.chunks(USAGE_ROWS_PER_STATEMENT) {
            txn.execute_raw(add_usage_statement(backend, chunk))
                .await
                .map_err(db_error)?;
        }
        txn.commit().await.map_err(db_error)?;
        if self
            .applied_batches
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(PRUNE_EVERY_BATCHES)
        {
            // Housekeeping, not part of the write: a failure is retried
            // with a later batch and costs nothing but a few rows.
            if let Err(error) = self
                .prune_usage_batches(Utc::now() - USAGE_BATCH_RETENTION)
                .await
            {
                tracing::warn!(error = %cola_application::error_chain(&error), "pruning applied usage batches failed");
            }
        }
        Ok(true)
    }

    async fn ping(&self) -> Result<(), RepositoryError> {
        self.database
            .connection()
            .ping()
            .await
            .map_err(|error| RepositoryError::Unavailable(Box::new(error)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_sort_as_their_instants_within_a_millisecond() {
        let start = Utc::now();
        let ids: Vec<Uuid> = (0..500)
            .map(|micros| event_id(start + chrono::Duration::microseconds(micros)))
            .collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
    }

    #[test]
    fn an_event_id_keeps_its_own_instant_when_written_late() {
        let now = Utc::now();
        let lagging = now - chrono::Duration::seconds(60);
        let later = event_id(now);
        let id = event_id(lagging);
        assert!(id < later);
        assert_eq!(
            id.get_timestamp()
                .expect("a v7 id has a timestamp")
                .to_unix()
                .0,
            u64::try_from(lagging.timestamp()).expect("after 1970")
        );
    }
}
