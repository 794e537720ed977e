//! Connecting to the database (SQLite file or PostgreSQL) and applying the
//! migrations.

use std::time::Duration;

use cola_migration::{Migrator, MigratorTrait};
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, DatabaseConnection, DbBackend, DbErr};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum DatabaseError {
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] DbErr),
    #[error("migrations failed: {0}")]
    Migrate(#[source] DbErr),
    #[error("unsupported database URL (use sqlite:// or postgres://)")]
    UnsupportedUrl,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseKind {
    Sqlite,
    Postgres,
}

/// One migration and whether it is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationState {
    pub name: String,
    pub applied: bool,
}

/// A connection pool with the settings Cola relies on: short acquire
/// timeouts (an unreachable database answers 503 quickly rather than
/// hanging requests), WAL and a busy timeout on SQLite, a statement timeout
/// on PostgreSQL.
#[derive(Debug, Clone)]
pub struct Database {
    connection: DatabaseConnection,
    kind: DatabaseKind,
}

const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
const STATEMENT_TIMEOUT_MS: &str = "5000";
/// A fixed advisory-lock id under which PostgreSQL migrations run, so several
/// instances starting at once apply them one at a time.
const MIGRATION_LOCK_ID: i64 = 0x636f_6c61_6d69_6772; // "colamigr"

impl Database {
    pub async fn connect(url: &str) -> Result<Self, DatabaseError> {
        let kind = if url.starts_with("sqlite:") {
            DatabaseKind::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            DatabaseKind::Postgres
        } else {
            return Err(DatabaseError::UnsupportedUrl);
        };
        let mut options = ConnectOptions::new(url);
        options
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_timeout(ACQUIRE_TIMEOUT)
            .sqlx_logging(false);
        match kind {
            DatabaseKind::Sqlite => {
                options.max_connections(8).map_sqlx_sqlite_opts(|opts| {
                    opts.journal_mode(SqliteJournalMode::Wal)
                        .synchronous(SqliteSynchronous::Normal)
                        .busy_timeout(Duration::from_secs(5))
                        .foreign_keys(true)
                });
            }
            DatabaseKind::Postgres => {
                options.max_connections(16).map_sqlx_postgres_opts(|opts| {
                    opts.options([("statement_timeout", STATEMENT_TIMEOUT_MS)])
                });
            }
        }
        let connection = sea_orm::Database::connect(options)
            .await
            .map_err(DatabaseError::Connect)?;
        Ok(Self { connection, kind })
    }

    /// Applies every pending migration; the names of those it applied.
    pub async fn migrate(&self) -> Result<Vec<String>, DatabaseError> {
        match self.kind {
            DatabaseKind::Sqlite => self.apply_pending().await,
            DatabaseKind::Postgres => {
                // A session-level lock on one pooled connection, held while
                // the migrations run on others.
                let pool = self.connection.get_postgres_connection_pool();
                let mut lock = pool
                    .acquire()
                    .await
                    .map_err(|e| DatabaseError::Migrate(DbErr::Custom(e.to_string())))?;
                sea_orm::sqlx::query("SELECT pg_advisory_lock($1)")
                    .bind(MIGRATION_LOCK_ID)
                    .execute(&mut *lock)
                    .await
                    .map_err(|e| DatabaseError::Migrate(DbErr::Custom(e.to_string())))?;
                let applied = self.apply_pending().await;
                let unlocked = sea_orm::sqlx::query("SELECT pg_advisory_unlock($1)")
                    .bind(MIGRATION_LOCK_ID)
                    .execute(&mut *lock)
                    .await;
                let applied = applied?;
                unlocked.map_err(|e| DatabaseError::Migrate(DbErr::Custom(e.to_string())))?;
                Ok(applied)
            }
        }
    }

    /// Every known migration and whether it is applied.
    /// Applies the pending migrations; their names, oldest first (on
    /// PostgreSQL, called under the migration lock, so what it names is
    /// what this call applied).
    async fn apply_pending(&self) -> Result<Vec<String>, DatabaseError> {
        let pending: Vec<String> = Migrator::get_pending_migrations(&self.connection)
            .await
            .map_err(DatabaseError::Migrate)?
            .iter()
            .map(|migration| migration.name().to_owned())
            .collect();
        Migrator::up(&self.connection, None)
            .await
            .map_err(DatabaseError::Migrate)?;
        Ok(pending)
    }

    pub async fn migration_status(&self) -> Result<Vec<MigrationState>, DatabaseError> {
        let migrations = Migrator::get_migration_with_status(&self.connection)
            .await
            .map_err(DatabaseError::Migrate)?;
        Ok(migrations
            .iter()
            .map(|m| MigrationState {
                name: m.name().to_owned(),
                applied: m.status() == cola_migration::MigrationStatus::Applied,
            })
            .collect())
    }

    #[must_use]
    pub fn kind(&self) -> DatabaseKind {
        self.kind
    }

    /// The pool, for this crate's repositories only: callers outside go
    /// through the repositories, whose every query takes the tenant.
    #[must_use]
    pub(crate) fn connection(&self) -> &DatabaseConnection {
        &self.connection
    }

    pub(crate) fn backend(&self) -> DbBackend {
        self.connection.get_database_backend()
    }

    /// Open connections and idle ones among them.
    #[must_use]
    pub fn pool_state(&self) -> (u32, u32) {
        let (size, idle) = match self.kind {
            DatabaseKind::Sqlite => {
                let pool = self.connection.get_sqlite_connection_pool();
                (pool.size(), pool.num_idle())
            }
            DatabaseKind::Postgres => {
                let pool = self.connection.get_postgres_connection_pool();
                (pool.size(), pool.num_idle())
            }
        };
        (size, u32::try_from(idle).unwrap_or(u32::MAX))
    }

    /// Closes the pool (at shutdown, after the last usage flush).
    pub async fn close(self) {
        let _ = self.connection.close().await;
    }
}
