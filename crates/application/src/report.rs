//! Reporting a leaked key (`POST /api/mcp/keys/report`, and GitHub's
//! secret-scanning alerts): whoever holds a key can have it revoked. Holding
//! the key is the proof, so the reporter is not authenticated, and each
//! well-formed key they send is paid for, before any work, with an attempt
//! of their failure limit (see [`crate::AttemptLimiter`]): it stays counted
//! whatever the key turns out to be, and whether or not the reporter waits
//! for the answer.

use std::sync::Arc;

use cola_domain::{ApiKeySecret, EffectiveStatus, EventKind, LeakReport};
use tracing::instrument;

use crate::admission::{Attempt, AttemptLimiter, Charge, TooManyAttempts};
use crate::auth::{Presented, PresentedError, PresentedKeys};
use crate::error::AppError;
use crate::invalidation::{CacheInvalidation, CommittedChange};
use crate::ports::{ApiKeyRepository, Clock};
use crate::service::hash_error;

/// What a report found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportOutcome {
    /// Not a well-formed key (no database work was done).
    NotAKey,
    Unknown,
    WrongSecret,
    Revoked,
    AlreadyRevoked,
    Expired,
}

impl ReportOutcome {
    /// A real key (revoked now, or revoked or expired before).
    #[must_use]
    pub fn is_genuine(self) -> bool {
        matches!(self, Self::Revoked | Self::AlreadyRevoked | Self::Expired)
    }

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotAKey => "not_a_key",
            Self::Unknown => "unknown",
            Self::WrongSecret => "wrong_secret",
            Self::Revoked => "revoked",
            Self::AlreadyRevoked => "already_revoked",
            Self::Expired => "expired",
        }
    }
}

/// Who sent a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reporter {
    /// Anyone, from this charge's address: each report costs an attempt.
    Public(Charge),
    /// A sender whose signature was checked (GitHub's secret scanning).
    Signed,
}

/// Why a report was not looked at.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("too many attempts from this address")]
    TooManyAttempts(TooManyAttempts),
    #[error(transparent)]
    App(#[from] AppError),
}

pub struct KeyReports {
    repository: Arc<dyn ApiKeyRepository>,
    presented: PresentedKeys,
    clock: Arc<dyn Clock>,
    invalidation: Arc<CacheInvalidation>,
    attempts: Arc<AttemptLimiter>,
}

impl std::fmt::Debug for KeyReports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyReports").finish_non_exhaustive()
    }
}

impl KeyReports {
    #[must_use]
    pub fn new(
        repository: Arc<dyn ApiKeyRepository>,
        presented: PresentedKeys,
        clock: Arc<dyn Clock>,
        invalidation: Arc<CacheInvalidation>,
        attempts: Arc<AttemptLimiter>,
    ) -> Self {
        Self {
            repository,
            presented,
            clock,
            invalidation,
            attempts,
        }
    }

    /// Acts on a report that `presented` leaked: a real, active key is
    /// revoked at once. Format and checksum come first, so junk costs no
    /// lookup (and one failure of a public reporter); an unknown prefix
    /// costs a dummy verification, as at `/mcp`, so timing does not tell it
    /// from a wrong secret.
    #[instrument(name = "report key", skip_all)]
    pub async fn report(
        &self,
        presented: &str,
        report: &LeakReport,
        reporter: Reporter,
    ) -> Result<ReportOutcome, ReportError> {
        let Ok(secret) = ApiKeySecret::parse(presented.trim()) else {
            if let Reporter::Public(charge) = reporter {
                self.attempts
                    .record_failure(charge)
                    .map_err(ReportError::TooManyAttempts)?;
            }
            return Ok(ReportOutcome::NotAKey);
        };
        let attempt = match reporter {
            Reporter::Public(charge) => self
                .attempts
                .begin(charge)
                .map_err(ReportError::TooManyAttempts)?,
            Reporter::Signed => Attempt::of_authenticated_caller(),
        };
        let outcome = self.decide(&secret, report, &attempt).await;
        // Whatever the key was, the report cost an attempt.
        attempt.failed();
        Ok(outcome?)
    }

    async fn decide(
        &self,
        secret: &ApiKeySecret,
        report: &LeakReport,
        paid: &Attempt,
    ) -> Result<ReportOutcome, AppError> {
        let mut key = match self.presented.verify(secret, paid).await {
            Ok(Presented::Genuine(stored)) => stored.key,
            Ok(Presented::Unknown) => return Ok(ReportOutcome::Unknown),
            Ok(Presented::WrongSecret(_)) => return Ok(ReportOutcome::WrongSecret),
            Err(PresentedError::Lookup(error)) => return Err(error.into()),
            Err(PresentedError::Hash { error, .. }) => return Err(hash_error(error)),
        };
        let now = self.clock.now();
        let outcome = match key.status_at(now) {
            EffectiveStatus::Revoked => ReportOutcome::AlreadyRevoked,
            EffectiveStatus::Expired => ReportOutcome::Expired,
            EffectiveStatus::Active => match key.revoke_reported(report, now) {
                Some(event) if self.repository.apply_change(&key, &event).await? => {
                    self.invalidation.apply(&event);
                    ReportOutcome::Revoked
                }
                // Revoked meanwhile by someone else: the outcome asked for.
                _ => ReportOutcome::AlreadyRevoked,
            },
        };
        if outcome == ReportOutcome::AlreadyRevoked {
            // Perhaps a moment ago on another instance, whose event the
            // change feed has not brought yet: not admitted here from now.
            // (An expired key needs nothing: expiry is checked on every
            // admission, cached or not.)
            self.invalidation.apply(CommittedChange::Key {
                kind: EventKind::ApiKeyRevoked,
                prefix: key.prefix(),
            });
        }
        tracing::info!(
            key_prefix = %key.prefix(),
            tenant = %key.tenant_id(),
            outcome = outcome.as_str(),
            "key reported"
        );
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use async_trait::async_trait;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use tokio::sync::{Semaphore, mpsc};

    use super::*;
    use crate::fakes::MemoryRepository;
    use crate::ports::{HashError, SecretHash, SecretHasher, SystemClock};

    /// Announces each verification on `entered`, then waits for a permit of
    /// `gate` that the test never gives: argon2 "runs" until the request is
    /// abandoned.
    struct StuckHasher {
        gate: Semaphore,
        entered: mpsc::UnboundedSender<()>,
    }

    #[async_trait]
    impl SecretHasher for StuckHasher {
        async fn hash(&self, _: &ApiKeySecret) -> Result<SecretHash, HashError> {
            Ok(SecretHash::new("unused".to_owned()))
        }
        async fn verify(&self, _: &ApiKeySecret, _: &SecretHash) -> Result<bool, HashError> {
            self.verify_dummy_wait().await
        }
        async fn verify_dummy(&self, _: &ApiKeySecret) -> Result<(), HashError> {
            self.verify_dummy_wait().await.map(|_| ())
        }
    }

    impl StuckHasher {
        async fn verify_dummy_wait(&self) -> Result<bool, HashError> {
            let _ = self.entered.send(());
            let _permit = self
                .gate
                .acquire()
                .await
                .map_err(|e| HashError::Failed(Box::new(e)))?;
            Ok(false)
        }
    }

    #[tokio::test]
    async fn a_report_abandoned_while_argon2_runs_still_costs_its_attempt() {
        let (entered_tx, mut entered) = mpsc::unbounded_channel();
        let repository = Arc::new(MemoryRepository::default());
        let hasher = Arc::new(StuckHasher {
            gate: Semaphore::new(0),
            entered: entered_tx,
        });
        let attempts = Arc::new(AttemptLimiter::new(2));
        let reports = Arc::new(KeyReports::new(
            repository.clone(),
            PresentedKeys::new(repository, hasher),
            Arc::new(SystemClock),
            crate::fakes::invalidation(Arc::new(crate::fakes::MemoryServers::default())),
            Arc::clone(&attempts),
        ));
        let reporter = Charge::Client(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 77)));
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..2 {
            let Ok(secret) = ApiKeySecret::generate(&mut rng);
            let reports = Arc::clone(&reports);
            let presented = secret.expose().to_owned();
            let task = tokio::spawn(async move {
                reports
                    .report(
                        &presented,
                        &LeakReport::default(),
                        Reporter::Public(reporter),
                    )
                    .await
            });
            // Argon2 has started; the reporter goes away.
            entered.recv().await.expect("the verification started");
            task.abort();
            assert!(task.await.is_err_and(|error| error.is_cancelled()));
        }
        assert_eq!(attempts.in_flight(), 0);
        assert!(
            attempts.check(reporter).is_err(),
            "the abandoned reports were not counted"
        );
    }
}
