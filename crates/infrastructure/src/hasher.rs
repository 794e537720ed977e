//! argon2id hashing of key secrets, on the blocking pool, with bounded work:
//! at most one verification per core at a time and a bounded queue behind
//! them; past that the caller is told to come back later.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use async_trait::async_trait;
use cola_application::{HashError, SecretHash, SecretHasher};
use cola_domain::ApiKeySecret;
use rand::TryRngCore;
use rand::rngs::OsRng;
use tokio::sync::Semaphore;

/// argon2id cost (OWASP's recommendation: 19 MiB, 2 passes, 1 lane).
#[derive(Debug, Clone, Copy)]
pub struct HasherSettings {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    /// Verifications running at once (the blocking pool's share).
    pub concurrent: usize,
    /// Verifications allowed to wait for a slot before `Saturated`.
    pub queue: usize,
}

impl Default for HasherSettings {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
            concurrent: cores,
            queue: cores * 32,
        }
    }
}

pub struct Argon2Hasher {
    argon2: Arc<Argon2<'static>>,
    slots: Arc<Semaphore>,
    admitted: Arc<AtomicUsize>,
    capacity: usize,
    /// A hash of a random secret nobody knows, verified against when a
    /// prefix is unknown so that the answer takes as long as for a known one.
    dummy: Arc<String>,
}

impl std::fmt::Debug for Argon2Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Argon2Hasher")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

/// Counts a job from admission to completion (also when its caller gives up).
struct Admission(Arc<AtomicUsize>);

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Argon2Hasher {
    pub fn new(settings: HasherSettings) -> Result<Self, HashError> {
        let params = Params::new(
            settings.memory_kib,
            settings.iterations,
            settings.parallelism,
            None,
        )
        .map_err(|e| HashError::Failed(e.to_string()))?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let dummy =
            ApiKeySecret::generate(&mut OsRng).map_err(|e| HashError::Failed(e.to_string()))?;
        let dummy = hash_blocking(&argon2, &dummy)?;
        Ok(Self {
            argon2: Arc::new(argon2),
            slots: Arc::new(Semaphore::new(settings.concurrent.max(1))),
            admitted: Arc::new(AtomicUsize::new(0)),
            capacity: settings.concurrent.max(1) + settings.queue,
            dummy: Arc::new(dummy),
        })
    }

    /// Jobs admitted and not yet finished (running or waiting).
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.admitted.load(Ordering::Acquire)
    }

    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&Argon2<'static>) -> T + Send + 'static,
    ) -> Result<T, HashError> {
        if self.admitted.fetch_add(1, Ordering::AcqRel) >= self.capacity {
            self.admitted.fetch_sub(1, Ordering::AcqRel);
            return Err(HashError::Saturated);
        }
        let admission = Admission(Arc::clone(&self.admitted));
        let permit = Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .map_err(|e| HashError::Failed(e.to_string()))?;
        let argon2 = Arc::clone(&self.argon2);
        tokio::task::spawn_blocking(move || {
            // Held until the work is done, even if the caller went away.
            let _permit = permit;
            let _admission = admission;
            job(&argon2)
        })
        .await
        .map_err(|e| HashError::Failed(e.to_string()))
    }
}

fn hash_blocking(argon2: &Argon2<'_>, secret: &ApiKeySecret) -> Result<String, HashError> {
    let mut salt = [0u8; 16];
    OsRng
        .try_fill_bytes(&mut salt)
        .map_err(|e| HashError::Failed(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| HashError::Failed(e.to_string()))?;
    argon2
        .hash_password(secret.expose().as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| HashError::Failed(e.to_string()))
}

fn verify_blocking(
    argon2: &Argon2<'_>,
    secret: &ApiKeySecret,
    phc: &str,
) -> Result<bool, HashError> {
    let parsed = PasswordHash::new(phc).map_err(|e| HashError::Failed(e.to_string()))?;
    // `verify_password` compares in constant time.
    Ok(argon2
        .verify_password(secret.expose().as_bytes(), &parsed)
        .is_ok())
}

#[async_trait]
impl SecretHasher for Argon2Hasher {
    async fn hash(&self, secret: &ApiKeySecret) -> Result<SecretHash, HashError> {
        let secret = secret.clone();
        self.run(move |argon2| hash_blocking(argon2, &secret))
            .await?
            .map(SecretHash::new)
    }

    async fn verify(&self, secret: &ApiKeySecret, hash: &SecretHash) -> Result<bool, HashError> {
        let secret = secret.clone();
        let phc = hash.as_str().to_owned();
        self.run(move |argon2| verify_blocking(argon2, &secret, &phc))
            .await?
    }

    async fn verify_dummy(&self, secret: &ApiKeySecret) -> Result<(), HashError> {
        let secret = secret.clone();
        let dummy = Arc::clone(&self.dummy);
        self.run(move |argon2| verify_blocking(argon2, &secret, &dummy))
            .await?
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> HasherSettings {
        HasherSettings {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
            concurrent: 1,
            queue: 0,
        }
    }

    fn secret() -> ApiKeySecret {
        let Ok(secret) = ApiKeySecret::generate(&mut rand::rngs::StdRng::from_os_rng());
        secret
    }

    use rand::SeedableRng;

    #[tokio::test]
    async fn a_hash_verifies_its_own_secret_and_no_other() {
        let hasher = Argon2Hasher::new(cheap()).expect("hasher");
        let (right, wrong) = (secret(), secret());
        let hash = hasher.hash(&right).await.expect("hash");
        assert!(hash.as_str().starts_with("$argon2id$"));
        assert!(!hash.as_str().contains(right.expose()));
        assert!(hasher.verify(&right, &hash).await.expect("verify"));
        assert!(!hasher.verify(&wrong, &hash).await.expect("verify"));
    }

    #[tokio::test]
    async fn two_hashes_of_one_secret_differ_by_their_salt() {
        let hasher = Argon2Hasher::new(cheap()).expect("hasher");
        let key = secret();
        let (a, b) = (
            hasher.hash(&key).await.expect("hash"),
            hasher.hash(&key).await.expect("hash"),
        );
        assert_ne!(a, b);
    }

    #[tokio::test]
    async fn work_beyond_capacity_is_refused_not_queued() {
        let hasher = Arc::new(Argon2Hasher::new(cheap()).expect("hasher"));
        // Occupy the only slot with a job that waits for our signal.
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let (started, is_running) = tokio::sync::oneshot::channel::<()>();
        let busy = {
            let hasher = Arc::clone(&hasher);
            tokio::spawn(async move {
                hasher
                    .run(move |_| {
                        let _ = started.send(());
                        let _ = wait.recv();
                    })
                    .await
            })
        };
        is_running.await.expect("job started");
        assert!(matches!(
            hasher.verify_dummy(&secret()).await,
            Err(HashError::Saturated)
        ));
        release.send(()).expect("release");
        busy.await.expect("join").expect("job");
        assert_eq!(hasher.in_flight(), 0);
        assert!(hasher.verify_dummy(&secret()).await.is_ok());
    }
}
