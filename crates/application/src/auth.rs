//! Key verification for the MCP endpoint: format and checksum first, then the
//! verified-key cache, then the database and one argon2id verification.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cola_domain::{ApiKeySecret, EffectiveStatus, KeyPrefix, TenantId};
use hmac::{Hmac, Mac};
use rand::TryRngCore;
use rand::rngs::OsRng;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::admission::{Attempt, AttemptLimiter, Charge, TooManyAttempts};
use crate::ports::{
    ApiKeyRepository, Clock, HashError, RepositoryError, SecretHasher, StoredCredential,
};
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
    /// The party presenting it has failed too often, or has as many
    /// attempts under way as it may fail: nothing was verified.
    TooManyAttempts(TooManyAttempts),
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
            Self::TooManyAttempts(_) => "rate_limited",
        }
    }

    /// Whether this refusal is charged to the party that presented the key
    /// as one failed attempt (and, the credential being one that can never
    /// work, remembered as refused). Decided here, by kind, with no
    /// catch-all: a new kind of refusal does not compile until it is
    /// classified.
    #[must_use]
    pub fn counts_as_failure(self) -> bool {
        match self {
            // A bad credential: guessing, or a key that can never work again.
            Self::Missing
            | Self::Malformed
            | Self::Unknown
            | Self::WrongSecret
            | Self::Revoked
            | Self::Expired => true,
            // A good key from the wrong place: the allow-list is the key's
            // own rule, not a guess (the verify API charges another
            // tenant's key refused so, which it answers as unknown).
            Self::IpDenied => false,
            // Cola could not decide: the caller is not to blame.
            Self::Saturated | Self::Unavailable => false,
            // Refused before anything was tried: counting it again would
            // extend the party's wait with every retry.
            Self::TooManyAttempts(_) => false,
        }
    }
}

/// A refusal, for the log line of the decision (the HTTP answer never
/// reveals any of it): the presented key's public prefix when the key was
/// well-formed (so junk, which may be some other secret pasted by mistake,
/// never reaches the log), and the tenant when that prefix named a stored key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: AuthFailure,
    pub tenant: Option<TenantId>,
    pub prefix: Option<KeyPrefix>,
}

impl Refusal {
    pub(crate) fn of(reason: AuthFailure) -> Self {
        Self {
            reason,
            tenant: None,
            prefix: None,
        }
    }

    fn in_tenant(reason: AuthFailure, tenant: TenantId) -> Self {
        Self {
            reason,
            tenant: Some(tenant),
            prefix: None,
        }
    }

    fn of_key(mut self, prefix: &KeyPrefix) -> Self {
        self.prefix = Some(prefix.clone());
        self
    }
}

type Fingerprint = [u8; 32];

/// A verified key as the cache remembers it. The cache is keyed by the key's
/// prefix, the same identity that revocation and the change feed name, so
/// forgetting a key is exact however full the cache is; the fingerprint of
/// the secret that was verified is compared on every lookup.
#[derive(Clone)]
struct Remembered {
    fingerprint: Fingerprint,
    principal: McpPrincipal,
}

/// One verification in progress, shared by the requests that wait for it.
struct Flight {
    /// The cache generation when it started: a key forgotten after that
    /// makes its reading stale.
    generation: u64,
    outcome: tokio::sync::OnceCell<Result<McpPrincipal, Refusal>>,
}

/// What keeps a verification that read the database before a change from
/// putting the old reading back: every forget bumps the generation and, while
/// older verifications still run, leaves a mark naming the key it forgot.
/// A verification is stale only if *its* key (or everything) was forgotten
/// since it started, so one tenant's churn never disables another tenant's
/// caching.
#[derive(Default)]
struct Invalidations {
    generation: u64,
    /// Prefix → generation of its last forget, kept only while a
    /// verification older than that forget runs.
    forgotten: HashMap<KeyPrefix, u64>,
    /// Generation of the last `forget_all`.
    all_forgotten_at: u64,
    /// Verifications in progress by fingerprint, for sharing.
    flights: HashMap<Fingerprint, Arc<Flight>>,
    /// How many waiters run a verification of each starting generation: the
    /// oldest bounds which marks can still matter.
    running: BTreeMap<u64, usize>,
}

/// Past this many marks the oldest are pruned; past `MAX_FORGOTTEN_MARKS`
/// they are folded into one "everything changed" mark, so a flood of changes
/// costs caching for a moment, never unbounded memory.
const PRUNE_FORGOTTEN_MARKS: usize = 1_024;
const MAX_FORGOTTEN_MARKS: usize = 100_000;

impl Invalidations {
    fn changed_since(&self, prefix: &KeyPrefix, generation: u64) -> bool {
        self.all_forgotten_at > generation
            || self
                .forgotten
                .get(prefix)
                .is_some_and(|forgotten| *forgotten > generation)
    }

    fn forget(&mut self, prefix: &KeyPrefix) {
        self.generation += 1;
        if !self.running.is_empty() {
            self.forgotten.insert(prefix.clone(), self.generation);
            self.prune();
        }
    }

    fn forget_all(&mut self) {
        self.generation += 1;
        self.all_forgotten_at = self.generation;
        self.forgotten.clear();
    }

    fn start(&mut self, generation: u64) {
        *self.running.entry(generation).or_default() += 1;
    }

    fn finish(&mut self, generation: u64) {
        if let Some(count) = self.running.get_mut(&generation) {
            *count -= 1;
            if *count == 0 {
                self.running.remove(&generation);
            }
        }
        self.prune();
    }

    fn prune(&mut self) {
        let Some((&oldest, _)) = self.running.first_key_value() else {
            self.forgotten.clear();
            return;
        };
        if self.forgotten.len() > PRUNE_FORGOTTEN_MARKS {
            self.forgotten.retain(|_, forgotten| *forgotten > oldest);
        }
        if self.forgotten.len() > MAX_FORGOTTEN_MARKS {
            self.all_forgotten_at = self.generation;
            self.forgotten.clear();
        }
    }
}

/// Admitted keys by prefix (never the secret itself: entries hold a keyed
/// hash of it), plus a short negative cache of credentials that can never
/// work.
pub struct VerifiedKeyCache {
    /// HMAC-SHA-256 keyed with 32 random bytes of this process, its key
    /// schedule done once: each fingerprint clones it instead of hashing the
    /// key's pads again (half the SHA-256 work of a cache hit).
    keyed_mac: Hmac<Sha256>,
    admitted: moka::sync::Cache<KeyPrefix, Remembered>,
    refused: moka::sync::Cache<Fingerprint, Refusal>,
    /// Serialises "check for a change, then insert" against "mark, then
    /// evict", and holds the verifications in progress.
    state: Mutex<Invalidations>,
    /// Admissions are served from memory only until this instant (ms since
    /// `started`): the change feed pushes it forward after every successful
    /// read, so an instance that cannot see other instances' changes stops
    /// trusting what it remembers within `FEED_FRESHNESS`.
    fresh_until_ms: AtomicU64,
    started: Instant,
    /// Every forget, announced: `Some(prefix)` for one key, `None` for all.
    /// What outlives one request on an admission (a gateway stream) ends
    /// when its key is named here.
    changes: tokio::sync::broadcast::Sender<Option<KeyPrefix>>,
}

/// How many announced changes a slow listener may fall behind before it is
/// told it missed some (and treats its key as changed).
const CHANGE_BACKLOG: usize = 1024;

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

impl VerifiedKeyCache {
    /// A cache whose entries live `ttl`; `Duration::ZERO` disables it.
    pub fn new(ttl: Duration) -> Result<Self, rand::rand_core::OsError> {
        Self::with_capacity(ttl, MAX_CACHED_KEYS)
    }

    /// As [`Self::new`], remembering at most `capacity` admitted keys.
    pub fn with_capacity(ttl: Duration, capacity: u64) -> Result<Self, rand::rand_core::OsError> {
        let mut hmac_key = zeroize::Zeroizing::new([0u8; 32]);
        OsRng.try_fill_bytes(hmac_key.as_mut())?;
        let keyed_mac = <Hmac<Sha256> as Mac>::new_from_slice(hmac_key.as_ref())
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        let capacity = if ttl.is_zero() { 0 } else { capacity };
        let ttl = ttl.max(Duration::from_millis(1));
        Ok(Self {
            keyed_mac,
            admitted: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
            refused: moka::sync::Cache::builder()
                .max_capacity(MAX_CACHED_KEYS)
                .time_to_live(REFUSED_TTL)
                .build(),
            state: Mutex::new(Invalidations::default()),
            fresh_until_ms: AtomicU64::new(0),
            started: Instant::now(),
            changes: tokio::sync::broadcast::channel(CHANGE_BACKLOG).0,
        })
    }

    fn fingerprint(&self, secret: &ApiKeySecret) -> Fingerprint {
        let mut mac = self.keyed_mac.clone();
        mac.update(secret.expose().as_bytes());
        mac.finalize().into_bytes().into()
    }

    fn admitted(&self, prefix: &KeyPrefix, fingerprint: &Fingerprint) -> Option<McpPrincipal> {
        if !self.is_fresh() {
            return None;
        }
        let remembered = self.admitted.get(prefix)?;
        // A right prefix with a wrong secret is a miss, verified (and
        // refused) the slow way.
        bool::from(remembered.fingerprint.ct_eq(fingerprint)).then_some(remembered.principal)
    }

    fn admit(&self, fingerprint: Fingerprint, principal: McpPrincipal, generation: u64) {
        let state = self.lock();
        let prefix = &principal.key().prefix;
        if !state.changed_since(prefix, generation) {
            self.admitted.insert(
                prefix.clone(),
                Remembered {
                    fingerprint,
                    principal,
                },
            );
        }
    }

    /// Forgets a key (after revocation or a permission change), so the next
    /// request is verified against the database, and no verification that
    /// started before this call can put it back. Only
    /// [`crate::CacheInvalidation`] calls it, from the change's event.
    pub(crate) fn forget_key(&self, prefix: &KeyPrefix) {
        let mut state = self.lock();
        state.forget(prefix);
        self.admitted.invalidate(prefix);
        // Nobody listening is no error.
        let _ = self.changes.send(Some(prefix.clone()));
    }

    /// Forgets every admitted key.
    pub(crate) fn forget_all(&self) {
        let mut state = self.lock();
        state.forget_all();
        self.admitted.invalidate_all();
        let _ = self.changes.send(None);
    }

    /// The keys forgotten from now on (revoked, changed, rotated, or all
    /// after the change feed was lost), on this instance or, through the
    /// change feed, on any other.
    #[must_use]
    pub fn watch_changes(&self) -> KeyChanges {
        KeyChanges(self.changes.subscribe())
    }

    /// Verifications in progress (shared ones counted once).
    #[must_use]
    pub fn verifications_in_progress(&self) -> usize {
        self.lock().flights.len()
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
    pub(crate) fn feed_caught_up(&self, read_started: Instant) {
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

    fn lock(&self) -> std::sync::MutexGuard<'_, Invalidations> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A subscription to [`VerifiedKeyCache::watch_changes`].
#[derive(Debug)]
pub struct KeyChanges(tokio::sync::broadcast::Receiver<Option<KeyPrefix>>);

impl KeyChanges {
    /// Waits until `prefix` is forgotten (or everything is, or changes were
    /// missed, which count as a change: fail closed). Never returns while
    /// the key stays as it was.
    pub async fn changed(&mut self, prefix: &KeyPrefix) {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            match self.0.recv().await {
                Ok(Some(forgotten)) if forgotten != *prefix => {}
                Ok(_) | Err(RecvError::Lagged(_)) => return,
                // The cache is gone: the process is stopping.
                Err(RecvError::Closed) => return std::future::pending().await,
            }
        }
    }
}

/// One waiter of a verification. Dropping it — when the verification ends,
/// or when the request waiting for it is cancelled (a client that resets
/// its connection) — takes the verification out of the shared state, so
/// nothing is left behind either way.
struct Waiter<'a> {
    cache: &'a VerifiedKeyCache,
    fingerprint: Fingerprint,
    flight: Arc<Flight>,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let mut state = self.cache.lock();
        if state
            .flights
            .get(&self.fingerprint)
            .is_some_and(|current| Arc::ptr_eq(current, &self.flight))
        {
            state.flights.remove(&self.fingerprint);
        }
        state.finish(self.flight.generation);
    }
}

/// A key admitted for one request: who, how it was decided, and when (the
/// instant its expiry and allow-list were checked at, which its use is
/// counted at too: one clock read per request).
#[derive(Debug, Clone)]
pub struct Admission {
    pub principal: McpPrincipal,
    pub path: AuthPath,
    pub at: chrono::DateTime<chrono::Utc>,
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
    presented: PresentedKeys,
    clock: Arc<dyn Clock>,
    cache: Arc<VerifiedKeyCache>,
    usage: Arc<UsageRecorder>,
    attempts: Arc<AttemptLimiter>,
}

impl std::fmt::Debug for KeyAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyAuthenticator").finish_non_exhaustive()
    }
}

impl KeyAuthenticator {
    #[must_use]
    pub fn new(
        presented: PresentedKeys,
        clock: Arc<dyn Clock>,
        cache: Arc<VerifiedKeyCache>,
        usage: Arc<UsageRecorder>,
        attempts: Arc<AttemptLimiter>,
    ) -> Self {
        Self {
            presented,
            clock,
            cache,
            usage,
            attempts,
        }
    }

    /// The limiter every attempt of this authenticator is charged to.
    #[must_use]
    pub fn attempts(&self) -> &Arc<AttemptLimiter> {
        &self.attempts
    }

    /// Decides `presented` from `client` — `None` when the caller cannot
    /// say, which only a key without an allow-list passes — charging the
    /// attempt to `charge`, without counting a use (see
    /// [`crate::KeyAdmission`], which does, once every step has passed).
    ///
    /// `charge` pays for the attempt as [`AttemptLimiter`] says: a party
    /// over its limit is refused before anything is looked at, a bad
    /// credential counts one failure, and a verification that has to run
    /// argon2 is paid for before it starts.
    pub async fn check(
        &self,
        presented: Option<&str>,
        client: Option<IpAddr>,
        charge: Charge,
    ) -> Result<Admission, Refusal> {
        self.attempts
            .check(charge)
            .map_err(|wait| Refusal::of(AuthFailure::TooManyAttempts(wait)))?;
        let outcome = match presented.map(ApiKeySecret::parse) {
            None => Err((Refusal::of(AuthFailure::Missing), Charged::No)),
            Some(Err(_)) => Err((Refusal::of(AuthFailure::Malformed), Charged::No)),
            Some(Ok(secret)) => {
                let prefix = secret.prefix();
                self.admit(&secret, &prefix, client, charge)
                    .await
                    .map_err(|(refusal, charged)| (refusal.of_key(&prefix), charged))
            }
        };
        outcome.map_err(|(refusal, charged)| self.charged(refusal, charged, charge))
    }

    /// A refusal, once its failure is counted against `charge` (unless the
    /// verification that found it already counted it): past the limit, it
    /// is answered as "too many" instead.
    fn charged(&self, refusal: Refusal, charged: Charged, charge: Charge) -> Refusal {
        if !refusal.reason.counts_as_failure() || charged == Charged::Yes {
            return refusal;
        }
        match self.attempts.record_failure(charge) {
            Ok(()) => refusal,
            Err(wait) => Refusal {
                reason: AuthFailure::TooManyAttempts(wait),
                ..refusal
            },
        }
    }

    /// Counts one use of an admitted key (batched; see [`UsageRecorder`]),
    /// at the instant it was admitted.
    pub(crate) fn record_use(&self, admission: &Admission) {
        let key = admission.principal.key();
        self.usage.record(key.tenant_id, key.key_id, admission.at);
    }

    async fn admit(
        &self,
        secret: &ApiKeySecret,
        prefix: &KeyPrefix,
        client: Option<IpAddr>,
        charge: Charge,
    ) -> Result<Admission, (Refusal, Charged)> {
        let fingerprint = self.cache.fingerprint(secret);
        let (principal, path) = if let Some(principal) = self.cache.admitted(prefix, &fingerprint) {
            (principal, AuthPath::Hot)
        } else if let Some(failure) = self.cache.refused.get(&fingerprint) {
            return Err((failure, Charged::No));
        } else {
            (
                self.verify_once(fingerprint, secret, prefix, charge)
                    .await?,
                AuthPath::Cold,
            )
        };
        let uncharged = |refusal| (refusal, Charged::No);

        // Checked on every request, cached or not: expiry needs no eviction
        // and the allow-list depends on the caller.
        let now = self.clock.now();
        let key = principal.key();
        if now >= key.expires_at {
            return Err(uncharged(Refusal::in_tenant(
                AuthFailure::Expired,
                key.tenant_id,
            )));
        }
        let allowed = match client {
            Some(client) => key.ip_whitelist.allows(client),
            None => key.ip_whitelist.networks().is_empty(),
        };
        if !allowed {
            return Err(uncharged(Refusal::in_tenant(
                AuthFailure::IpDenied,
                key.tenant_id,
            )));
        }
        Ok(Admission {
            principal,
            path,
            at: now,
        })
    }

    /// Verifies `secret`, sharing one verification among concurrent
    /// requests presenting the same key: a burst of first uses costs one
    /// database lookup and one argon2 run, not one per request. A request
    /// joins a verification only if its key was not forgotten since that
    /// verification started, so nobody is admitted on a reading older than a
    /// change they could have seen.
    ///
    /// Whoever runs the verification pays for it first, with an attempt
    /// charged to its own `charge`; a request that joins one under way
    /// costs no work and pays nothing. A request whose party cannot pay
    /// leaves the verification to the next waiter and is refused alone.
    async fn verify_once(
        &self,
        fingerprint: Fingerprint,
        secret: &ApiKeySecret,
        prefix: &KeyPrefix,
        charge: Charge,
    ) -> Result<McpPrincipal, (Refusal, Charged)> {
        let waiter = {
            let mut state = self.cache.lock();
            let flight = match state.flights.get(&fingerprint) {
                Some(flight) if !state.changed_since(prefix, flight.generation) => {
                    Arc::clone(flight)
                }
                _ => {
                    let flight = Arc::new(Flight {
                        generation: state.generation,
                        outcome: tokio::sync::OnceCell::new(),
                    });
                    state.flights.insert(fingerprint, Arc::clone(&flight));
                    flight
                }
            };
            state.start(flight.generation);
            Waiter {
                cache: &self.cache,
                fingerprint,
                flight,
            }
        };
        let ran_here = std::sync::atomic::AtomicBool::new(false);
        let outcome = waiter
            .flight
            .outcome
            .get_or_try_init(|| async {
                let attempt = self.attempts.begin(charge)?;
                ran_here.store(true, Ordering::Relaxed);
                let outcome = self.verify(secret, &attempt).await;
                match &outcome {
                    Err(refusal) if refusal.reason.counts_as_failure() => attempt.failed(),
                    // A good key, or one that could not be decided: the
                    // caller is not to blame.
                    _ => attempt.succeeded(),
                }
                Ok(outcome)
            })
            .await
            .map_err(|wait: TooManyAttempts| {
                (
                    Refusal::of(AuthFailure::TooManyAttempts(wait)),
                    Charged::Yes,
                )
            })?
            .clone();
        let charged = if ran_here.load(Ordering::Relaxed) {
            Charged::Yes
        } else {
            Charged::No
        };
        match &outcome {
            Ok(principal) => {
                self.cache
                    .admit(fingerprint, principal.clone(), waiter.flight.generation);
            }
            Err(refusal) if refusal.reason.counts_as_failure() => {
                self.cache.refused.insert(fingerprint, refusal.clone());
            }
            Err(_) => {}
        }
        drop(waiter);
        outcome.map_err(|refusal| (refusal, charged))
    }

    async fn verify(&self, secret: &ApiKeySecret, paid: &Attempt) -> Result<McpPrincipal, Refusal> {
        let stored = match self.presented.verify(secret, paid).await {
            Ok(Presented::Genuine(stored)) => stored,
            Ok(Presented::Unknown) => return Err(Refusal::of(AuthFailure::Unknown)),
            Ok(Presented::WrongSecret(tenant)) => {
                return Err(Refusal::in_tenant(AuthFailure::WrongSecret, tenant));
            }
            Err(PresentedError::Lookup(error)) => {
                if !matches!(error, RepositoryError::Unavailable(_)) {
                    tracing::error!(error = %crate::error::chain(&error), "key lookup failed");
                }
                return Err(Refusal::of(AuthFailure::Unavailable));
            }
            Err(PresentedError::Hash { error, tenant }) => {
                return Err(Refusal {
                    tenant,
                    ..Refusal::of(verify_failure(error))
                });
            }
        };
        let tenant = stored.key.tenant_id();
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
        Ok(McpPrincipal::new(admitted(&key)))
    }

    /// Whether the key `principal` was admitted as is still stored so, and
    /// active: what outlives one request on an admission (a gateway stream)
    /// asks it when the key is announced changed, since the announcement
    /// may be of a change its admission already reflects (the change feed
    /// repeats this instance's own changes). `false` when it cannot tell
    /// (fails closed).
    pub async fn still_as_admitted(&self, principal: &McpPrincipal) -> bool {
        let stored = self
            .presented
            .repository
            .find_credential(&principal.key().prefix)
            .await;
        match stored {
            Ok(Some(stored)) => {
                stored.key.status_at(self.clock.now()) == EffectiveStatus::Active
                    && admitted(&stored.key) == *principal.key()
            }
            Ok(None) | Err(_) => false,
        }
    }
}

/// A stored key as an admission holds it.
fn admitted(key: &cola_domain::McpApiKey) -> AdmittedKey {
    AdmittedKey {
        key_id: key.id(),
        tenant_id: key.tenant_id(),
        owner: key.owner(),
        prefix: key.prefix().clone(),
        permissions: key.permissions().clone(),
        ip_whitelist: key.ip_whitelist().clone(),
        rate_limit: key.rate_limit(),
        expires_at: key.expires_at(),
    }
}

/// Whether a refusal has already been counted against its charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Charged {
    Yes,
    No,
}

/// What a presented key turned out to be.
#[derive(Debug)]
pub(crate) enum Presented {
    /// No stored key has its prefix.
    Unknown,
    /// A stored key of this tenant has its prefix, not its secret.
    WrongSecret(TenantId),
    /// The key as stored, its secret verified.
    Genuine(Box<StoredCredential>),
}

/// Why a presented key could not be decided.
#[derive(Debug)]
pub(crate) enum PresentedError {
    Lookup(RepositoryError),
    Hash {
        error: HashError,
        tenant: Option<TenantId>,
    },
}

/// The one place where a key presented by a caller who is not yet
/// authenticated meets argon2: at `/mcp`, the gateway, the verify API and
/// the leak report alike. It takes an [`Attempt`], so no surface can spend
/// the work without having charged someone for it first.
#[derive(Clone)]
pub struct PresentedKeys {
    repository: Arc<dyn ApiKeyRepository>,
    hasher: Arc<dyn SecretHasher>,
}

impl std::fmt::Debug for PresentedKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PresentedKeys").finish_non_exhaustive()
    }
}

impl PresentedKeys {
    #[must_use]
    pub fn new(repository: Arc<dyn ApiKeyRepository>, hasher: Arc<dyn SecretHasher>) -> Self {
        Self { repository, hasher }
    }

    /// Looks `secret` up by its prefix and verifies it; an unknown prefix
    /// costs a verification against a dummy hash all the same, so the
    /// timing does not tell whether the prefix exists.
    pub(crate) async fn verify(
        &self,
        secret: &ApiKeySecret,
        _paid: &Attempt,
    ) -> Result<Presented, PresentedError> {
        let stored = self
            .repository
            .find_credential(&secret.prefix())
            .await
            .map_err(PresentedError::Lookup)?;
        let Some(stored) = stored else {
            self.hasher
                .verify_dummy(secret)
                .await
                .map_err(|error| PresentedError::Hash {
                    error,
                    tenant: None,
                })?;
            return Ok(Presented::Unknown);
        };
        let tenant = stored.key.tenant_id();
        let matches = self
            .hasher
            .verify(secret, &stored.hash)
            .await
            .map_err(|error| PresentedError::Hash {
                error,
                tenant: Some(tenant),
            })?;
        Ok(if matches {
            Presented::Genuine(Box::new(stored))
        } else {
            Presented::WrongSecret(tenant)
        })
    }
}

fn verify_failure(error: HashError) -> AuthFailure {
    match error {
        HashError::Saturated => AuthFailure::Saturated,
        HashError::Failed(source) => {
            tracing::error!(error = %crate::error::chain(&*source), "key verification failed");
            AuthFailure::Unavailable
        }
    }
}

#[cfg(test)]
mod tests {
    //! The cache's own logic, with in-memory fakes of the ports: which
    //! readings it keeps, which it drops, and what a cancelled request
    //! leaves behind.

    use std::net::Ipv4Addr;

    use async_trait::async_trait;
    use cola_domain::UserId;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use tokio::sync::{Semaphore, mpsc};
    use uuid::Uuid;

    use super::*;
    use crate::fakes::{MemoryRepository, active_key};
    use crate::ports::{SecretHash, SystemClock};

    /// Accepts a secret whose prefix matches the stored "hash". While
    /// `held`, each verification announces itself on `entered` and waits
    /// for a permit of `gate`.
    struct FakeHasher {
        held: bool,
        gate: Semaphore,
        entered: mpsc::UnboundedSender<()>,
    }

    #[async_trait]
    impl SecretHasher for FakeHasher {
        async fn hash(&self, secret: &ApiKeySecret) -> Result<SecretHash, HashError> {
            Ok(SecretHash::new(format!("fake:{}", secret.prefix())))
        }
        async fn verify(
            &self,
            secret: &ApiKeySecret,
            hash: &SecretHash,
        ) -> Result<bool, HashError> {
            if self.held {
                let _ = self.entered.send(());
                self.gate
                    .acquire()
                    .await
                    .map_err(|e| HashError::Failed(Box::new(e)))?
                    .forget();
            }
            Ok(hash.as_str() == format!("fake:{}", secret.prefix()))
        }
        async fn verify_dummy(&self, _: &ApiKeySecret) -> Result<(), HashError> {
            Ok(())
        }
    }

    struct Harness {
        repository: Arc<MemoryRepository>,
        hasher: Arc<FakeHasher>,
        cache: Arc<VerifiedKeyCache>,
        authenticator: Arc<KeyAuthenticator>,
        entered: mpsc::UnboundedReceiver<()>,
        rng: StdRng,
    }

    const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    /// How `presented` was decided, from [`CLIENT`].
    async fn path_of(
        authenticator: &KeyAuthenticator,
        presented: &str,
    ) -> Result<AuthPath, AuthFailure> {
        authenticator
            .check(Some(presented), Some(CLIENT), Charge::Client(CLIENT))
            .await
            .map(|admission| admission.path)
            .map_err(|refusal| refusal.reason)
    }

    impl Harness {
        fn new(held: bool) -> Self {
            let (entered_tx, entered) = mpsc::unbounded_channel();
            let repository = Arc::new(MemoryRepository::default());
            let hasher = Arc::new(FakeHasher {
                held,
                gate: Semaphore::new(0),
                entered: entered_tx,
            });
            let cache = Arc::new(VerifiedKeyCache::new(Duration::from_secs(3600)).expect("cache"));
            let authenticator = Arc::new(KeyAuthenticator::new(
                PresentedKeys::new(
                    Arc::clone(&repository) as Arc<dyn ApiKeyRepository>,
                    Arc::clone(&hasher) as Arc<dyn SecretHasher>,
                ),
                Arc::new(SystemClock),
                Arc::clone(&cache),
                Arc::new(UsageRecorder::new()),
                // These tests are about the cache, not the failure limit.
                Arc::new(AttemptLimiter::new(u32::MAX)),
            ));
            cache.feed_caught_up(Instant::now());
            Self {
                repository,
                hasher,
                cache,
                authenticator,
                entered,
                rng: StdRng::seed_from_u64(7),
            }
        }

        /// Stores a new active key; returns its secret.
        fn key(&mut self) -> ApiKeySecret {
            let Ok(secret) = ApiKeySecret::generate(&mut self.rng);
            self.repository.add(active_key(
                TenantId::from_uuid(Uuid::from_u128(1)),
                UserId::from_uuid(Uuid::from_u128(2)),
                secret.prefix(),
            ));
            secret
        }

        async fn path(&self, secret: &ApiKeySecret) -> Result<AuthPath, AuthFailure> {
            path_of(&self.authenticator, secret.expose()).await
        }

        /// Authenticates `secret` in a task of its own.
        fn spawn(
            &self,
            secret: &ApiKeySecret,
        ) -> tokio::task::JoinHandle<Result<AuthPath, AuthFailure>> {
            let authenticator = Arc::clone(&self.authenticator);
            let presented = secret.expose().to_owned();
            tokio::spawn(async move { path_of(&authenticator, &presented).await })
        }

        /// Starts a verification of `secret` that waits in the hasher.
        async fn start_held(
            &mut self,
            secret: &ApiKeySecret,
        ) -> tokio::task::JoinHandle<Result<AuthPath, AuthFailure>> {
            let task = self.spawn(secret);
            self.entered.recv().await.expect("verification started");
            task
        }
    }

    #[tokio::test]
    async fn revocation_is_exact_with_more_keys_verified_than_the_cache_holds() {
        let mut harness = Harness::new(false);
        let others = 150_000;
        for n in 0..others {
            let secret = harness.key();
            assert!(harness.path(&secret).await.is_ok());
            if n % 10_000 == 0 {
                // Keep the change feed "fresh", as the follower would.
                harness.cache.feed_caught_up(Instant::now());
            }
        }
        harness.cache.feed_caught_up(Instant::now());
        let target = harness.key();
        let mut became_hot = false;
        for _ in 0..20 {
            if harness.path(&target).await == Ok(AuthPath::Hot) {
                became_hot = true;
                break;
            }
        }
        assert!(became_hot, "the key must be served from the cache first");

        harness.repository.revoke(&target.prefix());
        harness.cache.forget_key(&target.prefix());
        assert_eq!(harness.path(&target).await, Err(AuthFailure::Revoked));
    }

    #[tokio::test]
    async fn a_change_to_another_key_during_a_verification_keeps_it_cacheable() {
        let mut harness = Harness::new(true);
        let (verified, churned) = (harness.key(), harness.key());
        let first = harness.start_held(&verified).await;
        harness.cache.forget_key(&churned.prefix());
        harness.hasher.gate.add_permits(1);
        assert_eq!(first.await.expect("join"), Ok(AuthPath::Cold));
        assert_eq!(harness.path(&verified).await, Ok(AuthPath::Hot));
    }

    #[tokio::test]
    async fn a_change_to_the_key_during_its_verification_keeps_that_reading_out() {
        let mut harness = Harness::new(true);
        let secret = harness.key();
        let first = harness.start_held(&secret).await;
        harness.cache.forget_key(&secret.prefix());
        harness.hasher.gate.add_permits(1);
        assert_eq!(first.await.expect("join"), Ok(AuthPath::Cold));
        // Not served from memory: verified again (and held again).
        let second = harness.start_held(&secret).await;
        harness.hasher.gate.add_permits(1);
        assert_eq!(second.await.expect("join"), Ok(AuthPath::Cold));
    }

    #[tokio::test]
    async fn a_request_that_joins_after_a_change_does_not_share_the_older_verification() {
        let mut harness = Harness::new(true);
        let secret = harness.key();
        let older = harness.start_held(&secret).await;
        harness.repository.revoke(&secret.prefix());
        harness.cache.forget_key(&secret.prefix());
        // The newer request starts its own verification, which reads the
        // revocation, rather than waiting for the older one's admission.
        let newer = harness.start_held(&secret).await;
        harness.hasher.gate.add_permits(2);
        assert_eq!(newer.await.expect("join"), Err(AuthFailure::Revoked));
        let _ = older.await.expect("join");
        assert_eq!(harness.path(&secret).await, Err(AuthFailure::Revoked));
    }

    #[tokio::test]
    async fn concurrent_first_uses_share_one_verification() {
        let mut harness = Harness::new(true);
        let secret = harness.key();
        let first = harness.start_held(&secret).await;
        let others: Vec<_> = (0..5).map(|_| harness.spawn(&secret)).collect();
        // One permit: a second verification would wait forever.
        harness.hasher.gate.add_permits(1);
        assert_eq!(first.await.expect("join"), Ok(AuthPath::Cold));
        for other in others {
            assert!(other.await.expect("join").is_ok());
        }
        assert!(
            harness.entered.try_recv().is_err(),
            "verified more than once"
        );
    }

    #[tokio::test]
    async fn nothing_is_served_from_memory_once_the_change_feed_is_stale() {
        let mut harness = Harness::new(false);
        let secret = harness.key();
        assert_eq!(harness.path(&secret).await, Ok(AuthPath::Cold));
        assert_eq!(harness.path(&secret).await, Ok(AuthPath::Hot));
        // The feed last caught up longer ago than it may be trusted.
        harness.cache.fresh_until_ms.store(0, Ordering::Release);
        assert_eq!(harness.path(&secret).await, Ok(AuthPath::Cold));
        // Catching up after the gap forgets everything remembered before it
        // (a change made during the gap may have been missed).
        harness.cache.feed_caught_up(Instant::now());
        assert_eq!(harness.path(&secret).await, Ok(AuthPath::Cold));
        assert_eq!(harness.path(&secret).await, Ok(AuthPath::Hot));
    }

    #[tokio::test]
    async fn an_abandoned_verification_leaves_nothing_behind() {
        let mut harness = Harness::new(true);
        let secret = harness.key();
        let abandoned = harness.start_held(&secret).await;
        assert_eq!(harness.cache.verifications_in_progress(), 1);
        abandoned.abort();
        assert!(abandoned.await.expect_err("cancelled").is_cancelled());
        assert_eq!(harness.cache.verifications_in_progress(), 0);
        assert!(harness.cache.lock().running.is_empty());
    }

    #[tokio::test]
    async fn marks_of_forgotten_keys_are_dropped_once_no_older_verification_runs() {
        let mut harness = Harness::new(true);
        let secret = harness.key();
        let running = harness.start_held(&secret).await;
        for _ in 0..10 {
            let other = harness.key();
            harness.cache.forget_key(&other.prefix());
        }
        assert_eq!(harness.cache.lock().forgotten.len(), 10);
        harness.hasher.gate.add_permits(1);
        let _ = running.await.expect("join");
        assert!(harness.cache.lock().forgotten.is_empty());
    }

    #[test]
    fn only_bad_credentials_count_as_failures() {
        let wait = TooManyAttempts {
            retry_after_secs: 1,
        };
        let counted = [
            AuthFailure::Missing,
            AuthFailure::Malformed,
            AuthFailure::Unknown,
            AuthFailure::WrongSecret,
            AuthFailure::Revoked,
            AuthFailure::Expired,
        ];
        let not_counted = [
            AuthFailure::IpDenied,
            AuthFailure::Saturated,
            AuthFailure::Unavailable,
            AuthFailure::TooManyAttempts(wait),
        ];
        assert!(counted.into_iter().all(AuthFailure::counts_as_failure));
        assert!(!not_counted.into_iter().any(AuthFailure::counts_as_failure));
    }
}
