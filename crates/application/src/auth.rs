//! Key verification for the MCP endpoint: format and checksum first, then the
//! verified-key cache, then the database and one argon2id verification.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cola_domain::{ApiKeyId, ApiKeySecret, EffectiveStatus, TenantId};
use hmac::{Hmac, Mac};
use rand::TryRngCore;
use rand::rngs::OsRng;
use sha2::Sha256;

use crate::ports::{ApiKeyRepository, Clock, HashError, RepositoryError, SecretHasher};
use crate::principal::{AdmittedKey, McpPrincipal};
use crate::usage::UsageRecorder;

/// Why a request was not admitted. The HTTP layer answers every
/// credential failure identically; the variants exist for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    Missing,
    Malformed,
    Unknown,
    WrongSecret,
    Revoked,
    Expired,
    IpDenied,
    Saturated,
    Unavailable,
}

impl AuthFailure {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::Unknown => "unknown",
            Self::WrongSecret => "wrong_secret",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
            Self::IpDenied => "ip_denied",
            Self::Saturated => "saturated",
            Self::Unavailable => "unavailable",
        }
    }

    /// A bad credential (as opposed to a good one refused for another reason).
    #[must_use]
    pub fn is_bad_credential(self) -> bool {
        matches!(
            self,
            Self::Missing
                | Self::Malformed
                | Self::Unknown
                | Self::WrongSecret
                | Self::Revoked
                | Self::Expired
        )
    }
}

/// A refusal and, when the presented key's prefix named a stored key, the
/// tenant that key belongs to (for the log line of the decision; the HTTP
/// answer never reveals it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub reason: AuthFailure,
    pub tenant: Option<TenantId>,
}

impl Refusal {
    fn of(reason: AuthFailure) -> Self {
        Self {
            reason,
            tenant: None,
        }
    }

    fn in_tenant(reason: AuthFailure, tenant: TenantId) -> Self {
        Self {
            reason,
            tenant: Some(tenant),
        }
    }
}

type Fingerprint = [u8; 32];

/// One verification in progress, shared by the requests that wait for it.
struct Flight {
    /// The cache epoch when it started; a later eviction makes it stale.
    epoch: u64,
    outcome: tokio::sync::OnceCell<Result<McpPrincipal, Refusal>>,
}

/// Admitted keys by a keyed hash of the presented secret (never the secret
/// itself), plus a short negative cache of credentials that can never work.
pub struct VerifiedKeyCache {
    hmac_key: [u8; 32],
    admitted: moka::sync::Cache<Fingerprint, McpPrincipal>,
    fingerprint_of: moka::sync::Cache<ApiKeyId, Fingerprint>,
    refused: moka::sync::Cache<Fingerprint, Refusal>,
    /// Bumped by every eviction. A verification that started before an
    /// eviction must not re-insert what the eviction removed.
    epoch: AtomicU64,
    /// Serialises "check the epoch, then insert" against "bump, then evict".
    guard: Mutex<()>,
    /// Verifications in progress, by fingerprint (only while they run).
    flights: Mutex<HashMap<Fingerprint, Arc<Flight>>>,
    /// Admissions are served from memory only until this instant (ms since
    /// `started`): the change feed pushes it forward after every successful
    /// read, so an instance that cannot see other instances' changes stops
    /// trusting what it remembers within `FEED_FRESHNESS`.
    fresh_until_ms: AtomicU64,
    started: Instant,
}

impl std::fmt::Debug for VerifiedKeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedKeyCache")
            .field("entries", &self.admitted.entry_count())
            .finish_non_exhaustive()
    }
}

const MAX_CACHED_KEYS: u64 = 100_000;
const REFUSED_TTL: Duration = Duration::from_secs(60);
/// How long after a successful read of the change feed the cache may be
/// trusted: the bound on how late another instance's change is seen.
pub const FEED_FRESHNESS: Duration = Duration::from_millis(1500);
/// How often the change feed is read.
pub const FEED_INTERVAL: Duration = Duration::from_millis(250);
/// How far back each read looks, to cover events committed out of id order
/// (clock skew between instances, long transactions).
const FEED_LOOKBACK: Duration = Duration::from_secs(10);

impl VerifiedKeyCache {
    /// A cache whose entries live `ttl`; `Duration::ZERO` disables it.
    pub fn new(ttl: Duration) -> Result<Self, rand::rand_core::OsError> {
        let mut hmac_key = [0u8; 32];
        OsRng.try_fill_bytes(&mut hmac_key)?;
        let capacity = if ttl.is_zero() { 0 } else { MAX_CACHED_KEYS };
        let ttl = ttl.max(Duration::from_millis(1));
        Ok(Self {
            hmac_key,
            admitted: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
            fingerprint_of: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
            refused: moka::sync::Cache::builder()
                .max_capacity(MAX_CACHED_KEYS)
                .time_to_live(REFUSED_TTL)
                .build(),
            epoch: AtomicU64::new(0),
            guard: Mutex::new(()),
            flights: Mutex::new(HashMap::new()),
            fresh_until_ms: AtomicU64::new(0),
            started: Instant::now(),
        })
    }

    fn fingerprint(&self, secret: &ApiKeySecret) -> Fingerprint {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.hmac_key)
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        mac.update(secret.expose().as_bytes());
        mac.finalize().into_bytes().into()
    }

    fn admitted(&self, fingerprint: &Fingerprint) -> Option<McpPrincipal> {
        if !self.is_fresh() {
            return None;
        }
        self.admitted.get(fingerprint)
    }

    fn admit(&self, fingerprint: Fingerprint, principal: McpPrincipal, epoch_seen: u64) {
        let _guard = self.lock();
        if self.epoch.load(Ordering::Acquire) == epoch_seen {
            self.fingerprint_of
                .insert(principal.key().key_id, fingerprint);
            self.admitted.insert(fingerprint, principal);
        }
    }

    /// Forgets a key (after revocation or a permission change), so the next
    /// request is verified against the database.
    pub fn forget_key(&self, key_id: ApiKeyId) {
        let _guard = self.lock();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        if let Some(fingerprint) = self.fingerprint_of.remove(&key_id) {
            self.admitted.invalidate(&fingerprint);
        }
    }

    /// Forgets every admitted key.
    pub fn forget_all(&self) {
        let _guard = self.lock();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.admitted.invalidate_all();
        self.fingerprint_of.invalidate_all();
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether cached admissions may be served now.
    #[must_use]
    pub fn is_fresh(&self) -> bool {
        self.elapsed_ms() < self.fresh_until_ms.load(Ordering::Acquire)
    }

    /// Records that every change made before `read_started` has been seen:
    /// the cache may be trusted for `FEED_FRESHNESS` from then. After a gap
    /// (the feed was stale), everything remembered is forgotten first, since
    /// changes made during the gap may have been missed.
    fn feed_caught_up(&self, read_started: Instant) {
        if !self.is_fresh() {
            self.forget_all();
        }
        let since_start = read_started.saturating_duration_since(self.started) + FEED_FRESHNESS;
        let until = u64::try_from(since_start.as_millis()).unwrap_or(u64::MAX);
        self.fresh_until_ms.fetch_max(until, Ordering::AcqRel);
    }

    #[must_use]
    pub fn len(&self) -> u64 {
        self.admitted.entry_count()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock_flights(&self) -> std::sync::MutexGuard<'_, HashMap<Fingerprint, Arc<Flight>>> {
        self.flights
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.guard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// How a presented key was decided, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthPath {
    /// Served from the verified-key cache.
    Hot,
    /// Verified against the database and argon2.
    Cold,
}

pub struct KeyAuthenticator {
    repository: Arc<dyn ApiKeyRepository>,
    hasher: Arc<dyn SecretHasher>,
    clock: Arc<dyn Clock>,
    cache: Arc<VerifiedKeyCache>,
    usage: Arc<UsageRecorder>,
}

impl std::fmt::Debug for KeyAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyAuthenticator").finish_non_exhaustive()
    }
}

impl KeyAuthenticator {
    #[must_use]
    pub fn new(
        repository: Arc<dyn ApiKeyRepository>,
        hasher: Arc<dyn SecretHasher>,
        clock: Arc<dyn Clock>,
        cache: Arc<VerifiedKeyCache>,
        usage: Arc<UsageRecorder>,
    ) -> Self {
        Self {
            repository,
            hasher,
            clock,
            cache,
            usage,
        }
    }

    /// Admits `presented` from `client`, or says why not. An admitted request
    /// is counted as one use of the key.
    pub async fn authenticate(
        &self,
        presented: Option<&str>,
        client: IpAddr,
    ) -> Result<McpPrincipal, AuthFailure> {
        self.authenticate_with_path(presented, client)
            .await
            .map(|(principal, _)| principal)
            .map_err(|refusal| refusal.reason)
    }

    /// As [`Self::authenticate`], also telling whether the cache answered.
    pub async fn authenticate_with_path(
        &self,
        presented: Option<&str>,
        client: IpAddr,
    ) -> Result<(McpPrincipal, AuthPath), Refusal> {
        let presented = presented.ok_or(Refusal::of(AuthFailure::Missing))?;
        let secret =
            ApiKeySecret::parse(presented).map_err(|_| Refusal::of(AuthFailure::Malformed))?;
        let fingerprint = self.cache.fingerprint(&secret);

        let (principal, path) = if let Some(principal) = self.cache.admitted(&fingerprint) {
            (principal, AuthPath::Hot)
        } else if let Some(failure) = self.cache.refused.get(&fingerprint) {
            return Err(failure);
        } else {
            (
                self.verify_once(fingerprint, &secret).await?,
                AuthPath::Cold,
            )
        };

        // Checked on every request, cached or not: expiry needs no eviction
        // and the allow-list depends on the caller.
        let now = self.clock.now();
        let key = principal.key();
        if now >= key.expires_at {
            return Err(Refusal::in_tenant(AuthFailure::Expired, key.tenant_id));
        }
        if !key.ip_whitelist.allows(client) {
            return Err(Refusal::in_tenant(AuthFailure::IpDenied, key.tenant_id));
        }
        self.usage.record(key.tenant_id, key.key_id, now);
        Ok((principal, path))
    }

    /// Verifies `secret`, sharing one verification among concurrent
    /// requests presenting the same key: a burst of first uses costs one
    /// database lookup and one argon2 run, not one per request. A request
    /// joins a verification only if no eviction happened since it started,
    /// so nobody is admitted on a reading older than a revocation they could
    /// have seen.
    async fn verify_once(
        &self,
        fingerprint: Fingerprint,
        secret: &ApiKeySecret,
    ) -> Result<McpPrincipal, Refusal> {
        let flight = {
            let epoch = self.cache.epoch.load(Ordering::Acquire);
            let mut flights = self.cache.lock_flights();
            match flights.get(&fingerprint) {
                Some(flight) if flight.epoch == epoch => Arc::clone(flight),
                _ => {
                    let flight = Arc::new(Flight {
                        epoch,
                        outcome: tokio::sync::OnceCell::new(),
                    });
                    flights.insert(fingerprint, Arc::clone(&flight));
                    flight
                }
            }
        };
        let outcome = flight
            .outcome
            .get_or_init(|| self.verify(secret))
            .await
            .clone();
        {
            let mut flights = self.cache.lock_flights();
            if flights
                .get(&fingerprint)
                .is_some_and(|current| Arc::ptr_eq(current, &flight))
            {
                flights.remove(&fingerprint);
            }
        }
        match &outcome {
            Ok(principal) => self
                .cache
                .admit(fingerprint, principal.clone(), flight.epoch),
            Err(refusal) if refusal.reason.is_bad_credential() => {
                self.cache.refused.insert(fingerprint, *refusal);
            }
            Err(_) => {}
        }
        outcome
    }

    async fn verify(&self, secret: &ApiKeySecret) -> Result<McpPrincipal, Refusal> {
        let unavailable = Refusal::of(AuthFailure::Unavailable);
        let stored = self
            .repository
            .find_credential(&secret.prefix())
            .await
            .map_err(|error| {
                if !matches!(error, RepositoryError::Unavailable(_)) {
                    tracing::error!(%error, "key lookup failed");
                }
                unavailable
            })?;
        let Some(stored) = stored else {
            self.hasher
                .verify_dummy(secret)
                .await
                .map_err(|error| Refusal::of(verify_failure(error)))?;
            return Err(Refusal::of(AuthFailure::Unknown));
        };
        let tenant = stored.key.tenant_id();
        if !self
            .hasher
            .verify(secret, &stored.hash)
            .await
            .map_err(|error| Refusal::in_tenant(verify_failure(error), tenant))?
        {
            return Err(Refusal::in_tenant(AuthFailure::WrongSecret, tenant));
        }
        let key = stored.key;
        match key.status_at(self.clock.now()) {
            EffectiveStatus::Active => {}
            EffectiveStatus::Revoked => {
                return Err(Refusal::in_tenant(AuthFailure::Revoked, tenant));
            }
            EffectiveStatus::Expired => {
                return Err(Refusal::in_tenant(AuthFailure::Expired, tenant));
            }
        }
        Ok(McpPrincipal::new(AdmittedKey {
            key_id: key.id(),
            tenant_id: key.tenant_id(),
            owner: key.owner(),
            prefix: key.prefix().clone(),
            permissions: key.permissions().clone(),
            ip_whitelist: key.ip_whitelist().clone(),
            expires_at: key.expires_at(),
        }))
    }
}

fn verify_failure(error: HashError) -> AuthFailure {
    match error {
        HashError::Saturated => AuthFailure::Saturated,
        HashError::Failed(message) => {
            tracing::error!(%message, "key verification failed");
            AuthFailure::Unavailable
        }
    }
}

/// Follows the audit trail for access changes (revocations, permission and
/// allow-list changes) made by any instance and evicts those keys from this
/// instance's cache. Runs until `stop` turns true.
pub async fn follow_access_changes(
    repository: Arc<dyn ApiKeyRepository>,
    cache: Arc<VerifiedKeyCache>,
    // Unused: the feed's window is measured by the database's clock now.
    _clock: Arc<dyn Clock>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut seen: std::collections::HashMap<uuid::Uuid, Instant> = std::collections::HashMap::new();
    let mut ticker = tokio::time::interval(FEED_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return,
        }
        let read_started = Instant::now();
        match repository.recent_access_changes().await {
            Ok(changes) => {
                for change in changes {
                    if seen.insert(change.event_id, read_started).is_none() {
                        cache.forget_key(change.key_id);
                    }
                }
                seen.retain(|_, at| at.elapsed() < FEED_LOOKBACK * 2);
                cache.feed_caught_up(read_started);
            }
            Err(error) => {
                tracing::warn!(%error, "cannot read the change feed; cached admissions expire");
            }
        }
    }
}
