//! The console's sessions (docs/console.md): one stored record per sign-in, so
//! that a sign-out or an offboarding ends the session on every instance at
//! once, and a session `--dev` made is worthless to an instance that is not
//! in `--dev`. The api crate carries the session's id in its signed cookie
//! and asks [`ConsoleSessionService::check`] on every request.

use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use cola_domain::{TenantId, UserId};
use rand::TryRngCore;
use thiserror::Error;
use tracing::instrument;

use crate::error::AppError;
use crate::ports::{Clock, RepositoryError};

/// How long a session lasts from sign-in, whatever the provider's tokens say.
pub const CONSOLE_SESSION_TTL: chrono::Duration = chrono::Duration::hours(8);

/// Random bytes in a session id: as many as a key's secret part carries, and
/// more than anyone can guess.
const ID_BYTES: usize = 32;

/// A session's id: 32 bytes from the OS CSPRNG, base64url. Whoever holds it
/// (inside the signed cookie) is signed in, so it is never logged and only
/// its digest is stored.
#[derive(Clone, PartialEq, Eq)]
pub struct ConsoleSessionId(String);

impl ConsoleSessionId {
    /// A new random id; `None` when the OS has no randomness to give.
    #[must_use]
    pub fn generate() -> Option<Self> {
        let mut bytes = [0u8; ID_BYTES];
        rand::rngs::OsRng.try_fill_bytes(&mut bytes).ok()?;
        Some(Self(URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// An id as [`Self::expose`] wrote it; anything else is `None`.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        (bytes.len() == ID_BYTES).then(|| Self(text.to_owned()))
    }

    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }

    #[must_use]
    pub fn digest(&self) -> SessionDigest {
        use sha2::Digest;
        SessionDigest(sha2::Sha256::digest(self.0.as_bytes()).into())
    }
}

impl std::fmt::Debug for ConsoleSessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConsoleSessionId([redacted])")
    }
}

/// SHA-256 of a session id: what is stored and looked up. The id carries 256
/// random bits, so a fast digest is enough (as for server tokens).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionDigest([u8; 32]);

impl SessionDigest {
    /// Lower-case hex, as stored.
    #[must_use]
    pub fn to_hex(&self) -> String {
        use std::fmt::Write;
        self.0
            .iter()
            .fold(String::with_capacity(64), |mut hex, byte| {
                let _ = write!(hex, "{byte:02x}");
                hex
            })
    }

    /// The digest [`Self::to_hex`] wrote; `None` for anything else.
    #[must_use]
    pub fn from_hex(hex: &str) -> Option<Self> {
        if hex.len() != 64 || !hex.is_ascii() {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
            let pair = std::str::from_utf8(pair).ok()?;
            *byte = u8::from_str_radix(pair, 16).ok()?;
        }
        Some(Self(bytes))
    }
}

impl std::fmt::Debug for SessionDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionDigest([redacted])")
    }
}

/// A session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSession {
    pub digest: SessionDigest,
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Set by sign-out and offboarding.
    pub ended_at: Option<DateTime<Utc>>,
    /// Made by an instance in `--dev`.
    pub dev: bool,
}

/// The console's sessions, per tenant. Offboarding ends a user's sessions
/// through [`crate::ApiKeyRepository::offboard`], in the transaction that
/// revokes their keys.
#[async_trait]
pub trait ConsoleSessionRepository: Send + Sync + 'static {
    /// Stores a new session, and forgets the sessions of its tenant that
    /// expired before it began (they can never be used again).
    async fn insert(&self, session: &ConsoleSession) -> Result<(), RepositoryError>;

    async fn find(
        &self,
        tenant: TenantId,
        digest: &SessionDigest,
    ) -> Result<Option<ConsoleSession>, RepositoryError>;

    /// Ends the session at `now` unless it ended already; whether this call
    /// ended it.
    async fn end(
        &self,
        tenant: TenantId,
        digest: &SessionDigest,
        now: DateTime<Utc>,
    ) -> Result<bool, RepositoryError>;
}

/// Why a session no longer signs anyone in. Logged; the caller hears a
/// plain 401, as for a cookie that was never valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ConsoleSessionRefusal {
    #[error("no such console session")]
    Unknown,
    #[error("the console session was ended (signed out or offboarded)")]
    Ended,
    #[error("the console session expired")]
    Expired,
    #[error("the console session belongs to another user")]
    OtherUser,
    #[error("the console session was made by --dev, and this instance is not in --dev")]
    MadeByDev,
    #[error("the console session was not made by --dev, and this instance is in --dev")]
    NotMadeByDev,
}

/// Starts, checks and ends console sessions.
pub struct ConsoleSessionService {
    repository: Arc<dyn ConsoleSessionRepository>,
    clock: Arc<dyn Clock>,
    /// Whether this instance runs in `--dev`: only sessions made in the same
    /// mode are accepted.
    dev: bool,
}

impl std::fmt::Debug for ConsoleSessionService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleSessionService")
            .field("dev", &self.dev)
            .finish_non_exhaustive()
    }
}

impl ConsoleSessionService {
    #[must_use]
    pub fn new(
        repository: Arc<dyn ConsoleSessionRepository>,
        clock: Arc<dyn Clock>,
        dev: bool,
    ) -> Self {
        Self {
            repository,
            clock,
            dev,
        }
    }

    /// A new session of `user`, lasting [`CONSOLE_SESSION_TTL`]: its id (for
    /// the cookie, never stored) and its record.
    #[instrument(name = "start console session", skip_all, fields(tenant = %tenant, user = %user))]
    pub async fn start(
        &self,
        tenant: TenantId,
        user: UserId,
    ) -> Result<(ConsoleSessionId, ConsoleSession), AppError> {
        let id = ConsoleSessionId::generate()
            .ok_or_else(|| AppError::Unexpected("no OS randomness for a session id".into()))?;
        let now = self.clock.now();
        let session = ConsoleSession {
            digest: id.digest(),
            tenant_id: tenant,
            user_id: user,
            created_at: now,
            expires_at: now + CONSOLE_SESSION_TTL,
            ended_at: None,
            dev: self.dev,
        };
        self.repository.insert(&session).await?;
        Ok((id, session))
    }

    /// Whether the session `id`, which the signed cookie says is `user`'s
    /// in `tenant`, still signs them in. An unavailable database is an
    /// error, never a yes.
    #[instrument(name = "check console session", skip_all, fields(tenant = %tenant))]
    pub async fn check(
        &self,
        tenant: TenantId,
        user: UserId,
        id: &ConsoleSessionId,
    ) -> Result<Result<ConsoleSession, ConsoleSessionRefusal>, AppError> {
        let Some(session) = self.repository.find(tenant, &id.digest()).await? else {
            return Ok(Err(ConsoleSessionRefusal::Unknown));
        };
        let refusal = if session.user_id != user {
            Some(ConsoleSessionRefusal::OtherUser)
        } else if session.ended_at.is_some() {
            Some(ConsoleSessionRefusal::Ended)
        } else if session.expires_at <= self.clock.now() {
            Some(ConsoleSessionRefusal::Expired)
        } else if session.dev && !self.dev {
            Some(ConsoleSessionRefusal::MadeByDev)
        } else if !session.dev && self.dev {
            Some(ConsoleSessionRefusal::NotMadeByDev)
        } else {
            None
        };
        Ok(refusal.map_or(Ok(session), Err))
    }

    /// Ends the session `id` of `tenant` (sign-out); whether it was still
    /// open.
    #[instrument(name = "end console session", skip_all, fields(tenant = %tenant))]
    pub async fn end(&self, tenant: TenantId, id: &ConsoleSessionId) -> Result<bool, AppError> {
        Ok(self
            .repository
            .end(tenant, &id.digest(), self.clock.now())
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use uuid::Uuid;

    use super::*;
    use crate::ports::SystemClock;

    #[derive(Default)]
    struct Memory(Mutex<HashMap<(TenantId, SessionDigest), ConsoleSession>>);

    #[async_trait]
    impl ConsoleSessionRepository for Memory {
        async fn insert(&self, session: &ConsoleSession) -> Result<(), RepositoryError> {
            self.0
                .lock()
                .expect("sessions")
                .insert((session.tenant_id, session.digest), session.clone());
            Ok(())
        }
        async fn find(
            &self,
            tenant: TenantId,
            digest: &SessionDigest,
        ) -> Result<Option<ConsoleSession>, RepositoryError> {
            Ok(self
                .0
                .lock()
                .expect("sessions")
                .get(&(tenant, *digest))
                .cloned())
        }
        async fn end(
            &self,
            tenant: TenantId,
            digest: &SessionDigest,
            now: DateTime<Utc>,
        ) -> Result<bool, RepositoryError> {
            let mut sessions = self.0.lock().expect("sessions");
            match sessions.get_mut(&(tenant, *digest)) {
                Some(session) if session.ended_at.is_none() => {
                    session.ended_at = Some(now);
                    Ok(true)
                }
                _ => Ok(false),
            }
        }
    }

    fn ids() -> (TenantId, UserId) {
        (
            TenantId::from_uuid(Uuid::new_v4()),
            UserId::from_uuid(Uuid::new_v4()),
        )
    }

    fn service(memory: &Arc<Memory>, dev: bool) -> ConsoleSessionService {
        ConsoleSessionService::new(
            Arc::clone(memory) as Arc<dyn ConsoleSessionRepository>,
            Arc::new(SystemClock),
            dev,
        )
    }

    #[tokio::test]
    async fn a_started_session_is_live_until_it_is_ended() {
        let memory = Arc::new(Memory::default());
        let sessions = service(&memory, false);
        let (tenant, user) = ids();
        let (id, started) = sessions.start(tenant, user).await.expect("started");
        assert_eq!(started.expires_at - started.created_at, CONSOLE_SESSION_TTL);
        assert_eq!(
            sessions.check(tenant, user, &id).await.expect("checked"),
            Ok(started)
        );
        assert!(sessions.end(tenant, &id).await.expect("ended"));
        assert!(!sessions.end(tenant, &id).await.expect("ended twice"));
        assert_eq!(
            sessions.check(tenant, user, &id).await.expect("checked"),
            Err(ConsoleSessionRefusal::Ended)
        );
    }

    #[tokio::test]
    async fn a_session_is_looked_up_in_its_own_tenant_and_for_its_own_user() {
        let memory = Arc::new(Memory::default());
        let sessions = service(&memory, false);
        let (tenant, user) = ids();
        let (id, _) = sessions.start(tenant, user).await.expect("started");
        let (other_tenant, other_user) = ids();
        assert_eq!(
            sessions
                .check(other_tenant, user, &id)
                .await
                .expect("checked"),
            Err(ConsoleSessionRefusal::Unknown)
        );
        assert_eq!(
            sessions
                .check(tenant, other_user, &id)
                .await
                .expect("checked"),
            Err(ConsoleSessionRefusal::OtherUser)
        );
        let never_issued = ConsoleSessionId::generate().expect("random");
        assert_eq!(
            sessions
                .check(tenant, user, &never_issued)
                .await
                .expect("checked"),
            Err(ConsoleSessionRefusal::Unknown)
        );
    }

    #[tokio::test]
    async fn a_dev_session_is_refused_outside_dev_and_the_other_way_round() {
        let memory = Arc::new(Memory::default());
        let (dev, plain) = (service(&memory, true), service(&memory, false));
        let (tenant, user) = ids();
        let (made_by_dev, _) = dev.start(tenant, user).await.expect("started");
        let (made_plainly, _) = plain.start(tenant, user).await.expect("started");
        assert!(
            dev.check(tenant, user, &made_by_dev)
                .await
                .expect("checked")
                .is_ok()
        );
        assert_eq!(
            plain
                .check(tenant, user, &made_by_dev)
                .await
                .expect("checked"),
            Err(ConsoleSessionRefusal::MadeByDev)
        );
        assert_eq!(
            dev.check(tenant, user, &made_plainly)
                .await
                .expect("checked"),
            Err(ConsoleSessionRefusal::NotMadeByDev)
        );
    }

    #[tokio::test]
    async fn an_expired_session_is_refused() {
        let memory = Arc::new(Memory::default());
        let sessions = service(&memory, false);
        let (tenant, user) = ids();
        let id = ConsoleSessionId::generate().expect("random");
        let long_ago = Utc::now() - CONSOLE_SESSION_TTL - chrono::Duration::seconds(1);
        memory
            .insert(&ConsoleSession {
                digest: id.digest(),
                tenant_id: tenant,
                user_id: user,
                created_at: long_ago,
                expires_at: long_ago + CONSOLE_SESSION_TTL,
                ended_at: None,
                dev: false,
            })
            .await
            .expect("stored");
        assert_eq!(
            sessions.check(tenant, user, &id).await.expect("checked"),
            Err(ConsoleSessionRefusal::Expired)
        );
    }

    #[test]
    fn an_id_reads_back_and_its_digest_round_trips_through_hex() {
        let id = ConsoleSessionId::generate().expect("random");
        assert_eq!(ConsoleSessionId::parse(id.expose()), Some(id.clone()));
        assert_eq!(ConsoleSessionId::parse("short"), None);
        let digest = id.digest();
        assert_eq!(SessionDigest::from_hex(&digest.to_hex()), Some(digest));
        assert_eq!(SessionDigest::from_hex("zz"), None);
        assert!(!format!("{id:?}{digest:?}").contains(id.expose()));
    }
}
