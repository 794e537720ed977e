//! argon2id hashing of key secrets on a fixed set of dedicated threads, one
//! per core, with bounded work: past a fixed number of admitted jobs the
//! caller is told to come back later.
//!
//! Each thread allocates its argon2 block array (19 MiB at the default
//! cost) once and reuses it for every job. Letting every job allocate its
//! own, on whichever thread of a growing pool ran it, spread those arrays
//! over many allocator arenas that never gave the memory back: the resident
//! size grew by more than a GiB under a burst of failed verifications.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use argon2::password_hash::{Output, ParamsString, PasswordHash, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use async_trait::async_trait;
use cola_application::{HashError, SecretHash, SecretHasher};
use cola_domain::ApiKeySecret;
use rand::TryRngCore;
use rand::rngs::OsRng;
use subtle::ConstantTimeEq;
use tokio::sync::oneshot;

/// Salt bytes of a new hash (the PHC format's recommendation).
const SALT_LEN: usize = 16;
/// Output bytes of a new hash (argon2's default).
const OUTPUT_LEN: usize = Params::DEFAULT_OUTPUT_LEN;

/// argon2id cost (OWASP's recommendation: 19 MiB, 2 passes, 1 lane).
#[derive(Debug, Clone, Copy)]
pub struct HasherSettings {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    /// Dedicated hashing threads, each with its own block array: the jobs
    /// running at once.
    pub concurrent: usize,
    /// Jobs allowed to wait for a thread before `Saturated`. Hashing (key
    /// creation) is admitted only while less than half of `concurrent +
    /// queue` is in use; verification may use all of it.
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

/// What a job is for; verification has priority over creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Work {
    Hash,
    Verify,
}

type Job = Box<dyn FnOnce(&mut Worker) + Send>;

pub struct Argon2Hasher {
    /// Dropping the hasher drops this sender; each worker then finishes the
    /// jobs already queued and exits.
    jobs: mpsc::Sender<Job>,
    workers: Vec<JoinHandle<()>>,
    admitted: Arc<AtomicUsize>,
    capacity: usize,
    /// Admissions up to which a hash (a key creation) is still taken: the
    /// rest of the capacity is kept for verifications, so creating keys
    /// cannot starve key use.
    hash_capacity: usize,
    /// A hash of a random secret nobody knows, verified against when a
    /// prefix is unknown so that the answer takes as long as for a known one.
    dummy: Arc<str>,
}

impl std::fmt::Debug for Argon2Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Argon2Hasher")
            .field("workers", &self.workers.len())
            .field("capacity", &self.capacity)
            .field("hash_capacity", &self.hash_capacity)
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

fn failed(error: impl std::error::Error + Send + Sync + 'static) -> HashError {
    HashError::Failed(Box::new(error))
}

/// One hashing thread's state: the argon2 context and the block array every
/// job of this thread computes in.
struct Worker {
    argon2: Argon2<'static>,
    params: Params,
    memory: Vec<Block>,
}

impl Worker {
    fn new(params: &Params) -> Self {
        Self {
            argon2: Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone()),
            params: params.clone(),
            memory: vec![Block::default(); params.block_count()],
        }
    }

    /// A PHC string of `password` under a fresh random salt, as
    /// `PasswordHasher::hash_password` would write it.
    fn hash(&mut self, password: &[u8]) -> Result<String, HashError> {
        let mut salt = [0u8; SALT_LEN];
        OsRng.try_fill_bytes(&mut salt).map_err(failed)?;
        let mut output = [0u8; OUTPUT_LEN];
        self.argon2
            .hash_password_into_with_memory(password, &salt, &mut output, &mut self.memory)
            .map_err(failed)?;
        let salt = SaltString::encode_b64(&salt).map_err(failed)?;
        let phc = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&self.params).map_err(failed)?,
            salt: Some(salt.as_salt()),
            hash: Some(Output::new(&output).map_err(failed)?),
        };
        Ok(phc.to_string())
    }

    /// Whether `password` matches the PHC string. A malformed string is an
    /// error; any other mismatch (or a hash argon2 refuses) is `false`, as
    /// with `PasswordVerifier::verify_password`.
    fn verify(&mut self, password: &[u8], phc: &str) -> Result<bool, HashError> {
        let parsed = PasswordHash::new(phc).map_err(failed)?;
        let Some(expected) = parsed.hash.filter(|_| self.is_own_cost(&parsed)) else {
            // Made with other costs (an older setting, another tool): argon2
            // allocates the memory those costs need, for this job only.
            return Ok(self.argon2.verify_password(password, &parsed).is_ok());
        };
        let mut salt_bytes = [0u8; 64];
        let Some(salt) = parsed
            .salt
            .and_then(|salt| salt.decode_b64(&mut salt_bytes).ok())
        else {
            return Ok(false);
        };
        let mut computed = [0u8; Output::MAX_LENGTH];
        let computed = &mut computed[..expected.len()];
        if self
            .argon2
            .hash_password_into_with_memory(password, salt, computed, &mut self.memory)
            .is_err()
        {
            return Ok(false);
        }
        Ok(bool::from(computed.ct_eq(expected.as_bytes())))
    }

    /// Whether `hash` was made with exactly this worker's algorithm, version
    /// and costs, so that it can be computed in the preallocated memory.
    fn is_own_cost(&self, hash: &PasswordHash<'_>) -> bool {
        let Some(output) = &hash.hash else {
            return false;
        };
        let Ok(costs) = Params::try_from(hash) else {
            return false;
        };
        let own = Params::new(
            self.params.m_cost(),
            self.params.t_cost(),
            self.params.p_cost(),
            Some(output.len()),
        );
        hash.algorithm == Algorithm::Argon2id.ident()
            && hash.version == Some(Version::V0x13.into())
            && own.is_ok_and(|own| own == costs)
    }
}

/// A hashing thread's loop: one job at a time, until the hasher is gone and
/// the queue is empty.
fn work(mut worker: Worker, jobs: &Mutex<mpsc::Receiver<Job>>) {
    loop {
        // The lock is held only while waiting for the next job; the other
        // idle workers wait on the lock meanwhile.
        let next = match jobs.lock() {
            Ok(queue) => queue.recv(),
            Err(poisoned) => poisoned.into_inner().recv(),
        };
        let Ok(job) = next else {
            return;
        };
        // A panicking job must not take the thread (a core's worth of
        // capacity) with it; its caller sees its answer dropped.
        if catch_unwind(AssertUnwindSafe(|| job(&mut worker))).is_err() {
            tracing::error!("an argon2 job panicked");
        }
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
        .map_err(failed)?;
        let threads = settings.concurrent.max(1);
        let capacity = threads + settings.queue;
        let mut first = Worker::new(&params);
        let dummy = ApiKeySecret::generate(&mut OsRng).map_err(failed)?;
        let dummy: Arc<str> = first.hash(dummy.expose().as_bytes())?.into();

        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        let mut workers = Vec::with_capacity(threads);
        let mut next = Some(first);
        for n in 0..threads {
            let worker = next.take().unwrap_or_else(|| Worker::new(&params));
            let queue = Arc::clone(&queue);
            let handle = std::thread::Builder::new()
                .name(format!("cola-argon2-{n}"))
                .spawn(move || work(worker, &queue))
                .map_err(failed)?;
            workers.push(handle);
        }
        Ok(Self {
            jobs,
            workers,
            admitted: Arc::new(AtomicUsize::new(0)),
            capacity,
            hash_capacity: (capacity / 2).max(1),
            dummy,
        })
    }

    /// Jobs admitted and not yet finished (running or waiting).
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.admitted.load(Ordering::Acquire)
    }

    /// Admits `job` and queues it for a worker, or refuses it at once when
    /// `work`'s share of the capacity is in use. The answer arrives on the
    /// returned receiver; the job is counted until it is done, also when the
    /// receiver is dropped.
    fn submit<T: Send + 'static>(
        &self,
        work: Work,
        job: impl FnOnce(&mut Worker) -> T + Send + 'static,
    ) -> Result<oneshot::Receiver<T>, HashError> {
        let limit = match work {
            Work::Hash => self.hash_capacity,
            Work::Verify => self.capacity,
        };
        if self.admitted.fetch_add(1, Ordering::AcqRel) >= limit {
            self.admitted.fetch_sub(1, Ordering::AcqRel);
            return Err(HashError::Saturated);
        }
        let admission = Admission(Arc::clone(&self.admitted));
        let (answer, answered) = oneshot::channel();
        let job: Job = Box::new(move |worker| {
            let result = job(worker);
            // Released before answering, so that a caller who has the answer
            // also sees the capacity free again.
            drop(admission);
            // The caller may have gone away; the work is done either way.
            let _ = answer.send(result);
        });
        // A failed send hands the job back and drops it, admission included.
        self.jobs
            .send(job)
            .map_err(|_| HashError::Failed("the hashing threads have stopped".into()))?;
        Ok(answered)
    }

    async fn run<T: Send + 'static>(
        &self,
        work: Work,
        job: impl FnOnce(&mut Worker) -> T + Send + 'static,
    ) -> Result<T, HashError> {
        self.submit(work, job)?
            .await
            .map_err(|_| HashError::Failed("an argon2 job ended without an answer".into()))
    }
}

#[async_trait]
impl SecretHasher for Argon2Hasher {
    async fn hash(&self, secret: &ApiKeySecret) -> Result<SecretHash, HashError> {
        let secret = secret.clone();
        self.run(Work::Hash, move |worker| {
            worker.hash(secret.expose().as_bytes())
        })
        .await?
        .map(SecretHash::new)
    }

    async fn verify(&self, secret: &ApiKeySecret, hash: &SecretHash) -> Result<bool, HashError> {
        let secret = secret.clone();
        let phc = hash.as_str().to_owned();
        self.run(Work::Verify, move |worker| {
            worker.verify(secret.expose().as_bytes(), &phc)
        })
        .await?
    }

    async fn verify_dummy(&self, secret: &ApiKeySecret) -> Result<(), HashError> {
        let secret = secret.clone();
        let dummy = Arc::clone(&self.dummy);
        self.run(Work::Verify, move |worker| {
            worker.verify(secret.expose().as_bytes(), &dummy)
        })
        .await?
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use argon2::PasswordHasher;
    use futures_util::FutureExt;
    use rand::SeedableRng;

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

    /// A job that reports when it runs and then holds its worker until
    /// `release` is sent (or dropped).
    fn blocker(
        hasher: &Argon2Hasher,
        work: Work,
    ) -> (
        oneshot::Receiver<()>,
        oneshot::Receiver<()>,
        std::sync::mpsc::Sender<()>,
    ) {
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let (started, is_running) = oneshot::channel::<()>();
        let done = hasher
            .submit(work, move |_| {
                let _ = started.send(());
                let _ = wait.recv();
            })
            .expect("admitted");
        (is_running, done, release)
    }

    #[tokio::test]
    async fn a_hash_verifies_its_own_secret_and_no_other() {
        let hasher = Argon2Hasher::new(cheap()).expect("hasher");
        let (right, wrong) = (secret(), secret());
        let hash = hasher.hash(&right).await.expect("hash");
        assert!(hash.as_str().starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
        assert!(!hash.as_str().contains(right.expose()));
        assert!(hasher.verify(&right, &hash).await.expect("verify"));
        assert!(!hasher.verify(&wrong, &hash).await.expect("verify"));
    }

    #[tokio::test]
    async fn a_hash_from_the_preallocated_memory_verifies_with_plain_argon2() {
        let hasher = Argon2Hasher::new(cheap()).expect("hasher");
        let (right, wrong) = (secret(), secret());
        let hash = hasher.hash(&right).await.expect("hash");
        let parsed = PasswordHash::new(hash.as_str()).expect("a PHC string");
        // `Argon2::default()` has other costs: it verifies with the ones the
        // string names, as any other argon2 implementation would.
        let plain = Argon2::default();
        assert!(
            plain
                .verify_password(right.expose().as_bytes(), &parsed)
                .is_ok()
        );
        assert!(
            plain
                .verify_password(wrong.expose().as_bytes(), &parsed)
                .is_err()
        );
    }

    #[tokio::test]
    async fn a_plain_argon2_hash_verifies_with_the_same_or_other_costs() {
        let hasher = Argon2Hasher::new(cheap()).expect("hasher");
        let (right, wrong) = (secret(), secret());
        let salt = SaltString::encode_b64(b"sixteen byte salt").expect("salt");
        for (m, t) in [(64, 1), (128, 2)] {
            // (64, 1) are the hasher's own costs (the preallocated path),
            // (128, 2) are not (the fallback).
            let params = Params::new(m, t, 1, None).expect("params");
            let plain = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
                .hash_password(right.expose().as_bytes(), &salt)
                .expect("plain hash")
                .to_string();
            let hash = SecretHash::new(plain);
            assert!(hasher.verify(&right, &hash).await.expect("verify"), "m={m}");
            assert!(
                !hasher.verify(&wrong, &hash).await.expect("verify"),
                "m={m}"
            );
        }
    }

    #[tokio::test]
    async fn a_malformed_hash_is_an_error_not_a_match() {
        let hasher = Argon2Hasher::new(cheap()).expect("hasher");
        let broken = SecretHash::new("$argon2id$not a hash".to_owned());
        assert!(matches!(
            hasher.verify(&secret(), &broken).await,
            Err(HashError::Failed(_))
        ));
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
    async fn every_job_runs_on_a_dedicated_thread_in_that_threads_own_memory() {
        let hasher = Argon2Hasher::new(HasherSettings {
            concurrent: 2,
            queue: 64,
            ..cheap()
        })
        .expect("hasher");
        let answers: Vec<_> = (0..40)
            .map(|_| {
                hasher
                    .submit(Work::Verify, |worker| {
                        let name = std::thread::current().name().map(str::to_owned);
                        (name, worker.memory.as_ptr().addr())
                    })
                    .expect("admitted")
            })
            .collect();
        let mut memory_of: HashMap<Option<String>, HashSet<usize>> = HashMap::new();
        for answer in answers {
            let (thread, memory) = answer.await.expect("answer");
            memory_of.entry(thread).or_default().insert(memory);
        }
        assert!(
            !memory_of.is_empty() && memory_of.len() <= 2,
            "{memory_of:?}"
        );
        for (thread, memories) in &memory_of {
            let name = thread.as_deref().unwrap_or("");
            assert!(name.starts_with("cola-argon2-"), "ran on {name:?}");
            assert_eq!(memories.len(), 1, "{name} used more than one block array");
        }
    }

    #[tokio::test]
    async fn the_workers_exit_when_the_hasher_is_dropped() {
        let mut hasher = Argon2Hasher::new(HasherSettings {
            concurrent: 3,
            ..cheap()
        })
        .expect("hasher");
        assert!(hasher.verify_dummy(&secret()).await.is_ok());
        let workers = std::mem::take(&mut hasher.workers);
        assert_eq!(workers.len(), 3);
        drop(hasher);
        for worker in workers {
            // Returns only once the thread has ended.
            worker.join().expect("worker ended without a panic");
        }
    }

    #[tokio::test]
    async fn a_job_whose_caller_went_away_is_counted_until_done() {
        let hasher = Argon2Hasher::new(HasherSettings {
            queue: 1,
            ..cheap()
        })
        .expect("hasher");
        let (is_running, done, release) = blocker(&hasher, Work::Verify);
        is_running.await.expect("job started");
        drop(done);
        assert_eq!(hasher.in_flight(), 1);
        release.send(()).expect("release");
        // The next job runs after the abandoned one on the only worker, so
        // by its answer the abandoned one has finished.
        hasher.verify_dummy(&secret()).await.expect("verified");
        assert_eq!(hasher.in_flight(), 0);
    }

    #[tokio::test]
    async fn work_beyond_capacity_is_refused_not_queued() {
        let hasher = Argon2Hasher::new(cheap()).expect("hasher");
        // Occupy the only slot with a job that waits for our signal.
        let (is_running, done, release) = blocker(&hasher, Work::Verify);
        is_running.await.expect("job started");
        assert!(matches!(
            hasher.verify_dummy(&secret()).await,
            Err(HashError::Saturated)
        ));
        release.send(()).expect("release");
        done.await.expect("job");
        assert_eq!(hasher.in_flight(), 0);
        assert!(hasher.verify_dummy(&secret()).await.is_ok());
    }

    #[tokio::test]
    async fn hashing_gets_half_the_capacity_and_verification_all_of_it() {
        // Capacity 4: one running, three waiting; hashing only below 2.
        let hasher = Argon2Hasher::new(HasherSettings {
            queue: 3,
            ..cheap()
        })
        .expect("hasher");
        let (is_running, first, release_first) = blocker(&hasher, Work::Verify);
        is_running.await.expect("job started");
        assert_eq!(hasher.in_flight(), 1);
        // One of four in use: a hash is still admitted (and queued).
        let (_, hashed, release_hash) = blocker(&hasher, Work::Hash);
        assert_eq!(hasher.in_flight(), 2);
        // Two of four: creation is refused at once (polled once: a hash
        // that was admitted instead would be pending), verification is not.
        assert!(matches!(
            hasher.hash(&secret()).now_or_never(),
            Some(Err(HashError::Saturated))
        ));
        let (_, third, release_third) = blocker(&hasher, Work::Verify);
        let (_, fourth, release_fourth) = blocker(&hasher, Work::Verify);
        assert_eq!(hasher.in_flight(), 4);
        // Full: verification is refused too.
        assert!(matches!(
            hasher.verify_dummy(&secret()).now_or_never(),
            Some(Err(HashError::Saturated))
        ));
        for release in [release_first, release_hash, release_third, release_fourth] {
            release.send(()).expect("release");
        }
        for done in [first, hashed, third, fourth] {
            done.await.expect("job");
        }
        assert_eq!(hasher.in_flight(), 0);
        assert!(hasher.hash(&secret()).await.is_ok());
    }
}
