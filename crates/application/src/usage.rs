//! Batched usage counting: admitted requests increment counters in memory; a
//! background task flushes them with one increment per key, so the count is
//! exact after a flush without a database write per request.
//!
//! Each flush takes what was counted into a batch with an id of its own,
//! which the repository applies at most once. A batch whose write fails is
//! kept exactly as it was (same id, same deltas) and written again before
//! anything counted later is taken: if the failed write had in fact
//! committed (its acknowledgement lost), the retry is a no-op instead of a
//! second count. One flush runs at a time, so two flushes (the periodic one
//! and the one at shutdown) never take the same uses.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use cola_domain::{ApiKeyId, TenantId};
use uuid::Uuid;

use crate::ports::{ApiKeyRepository, RepositoryError, UsageBatch, UsageDelta};

#[derive(Debug, Default)]
pub struct UsageRecorder {
    state: Mutex<Pending>,
    /// Held for a whole flush: one flush at a time.
    flushing: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct Pending {
    /// Uses counted since the last batch was taken.
    counted: HashMap<ApiKeyId, UsageDelta>,
    /// The batch taken last, until the repository acknowledges it.
    unacknowledged: Option<UsageBatch>,
}

impl UsageRecorder {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one admitted request.
    pub fn record(&self, tenant_id: TenantId, key_id: ApiKeyId, at: DateTime<Utc>) {
        let mut state = self.lock();
        let delta = state.counted.entry(key_id).or_insert(UsageDelta {
            tenant_id,
            key_id,
            count: 0,
            last_used_at: at,
        });
        delta.count += 1;
        delta.last_used_at = delta.last_used_at.max(at);
    }

    /// Uses counted but not yet acknowledged as written.
    #[must_use]
    pub fn pending(&self) -> u64 {
        let state = self.lock();
        let unacknowledged = state
            .unacknowledged
            .iter()
            .flat_map(|batch| &batch.deltas)
            .map(|delta| delta.count);
        state
            .counted
            .values()
            .map(|delta| delta.count)
            .chain(unacknowledged)
            .sum()
    }

    /// Writes everything counted so far: first a batch left unacknowledged
    /// by an earlier flush, as it was, then what was counted since, as a new
    /// batch. Returns how many per-key deltas were written. On failure the
    /// batch stays pending as it is, to be retried by the next flush; a
    /// flush cancelled while writing leaves it pending likewise.
    pub async fn flush(&self, repository: &dyn ApiKeyRepository) -> Result<usize, RepositoryError> {
        let _turn = self.flushing.lock().await;
        let mut written = 0;
        while let Some((batch, retried)) = self.next_batch() {
            let applied = repository.add_usage(&batch).await?;
            if retried && !applied {
                tracing::info!(batch = %batch.id, "a usage batch retried after a failed write had been applied already; not applied again");
            }
            self.acknowledge(batch.id);
            written += batch.deltas.len();
            if !retried {
                break;
            }
        }
        Ok(written)
    }

    /// The batch to write next and whether it is a retry: the one left
    /// unacknowledged, or what was counted, taken under a new id (and kept
    /// until acknowledged). `None` when there is nothing to write.
    fn next_batch(&self) -> Option<(UsageBatch, bool)> {
        let mut state = self.lock();
        if let Some(batch) = &state.unacknowledged {
            return Some((batch.clone(), true));
        }
        if state.counted.is_empty() {
            return None;
        }
        let batch = UsageBatch {
            id: Uuid::now_v7(),
            deltas: std::mem::take(&mut state.counted).into_values().collect(),
        };
        state.unacknowledged = Some(batch.clone());
        Some((batch, false))
    }

    fn acknowledge(&self, id: Uuid) {
        let mut state = self.lock();
        if state
            .unacknowledged
            .as_ref()
            .is_some_and(|batch| batch.id == id)
        {
            state.unacknowledged = None;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        // A panic while holding this lock cannot leave the state
        // inconsistent (every update is a single insert, add or swap), so a
        // poisoned lock is still safe to use.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::sync::Arc;
    use std::task::Poll;

    use chrono::Duration;
    use uuid::Uuid;

    use super::*;
    use crate::fakes::MemoryRepository;

    fn ids(n: u128) -> (TenantId, ApiKeyId) {
        (
            TenantId::from_uuid(Uuid::from_u128(1)),
            ApiKeyId::from_uuid(Uuid::from_u128(n)),
        )
    }

    fn attempts(repository: &MemoryRepository) -> Vec<Uuid> {
        repository.usage_attempts.lock().expect("attempts").clone()
    }

    #[tokio::test]
    async fn a_flush_writes_one_delta_per_key_with_the_latest_use() {
        let recorder = UsageRecorder::new();
        let repository = MemoryRepository::default();
        let now = Utc::now();
        let ((tenant, a), (_, b)) = (ids(10), ids(11));
        recorder.record(tenant, a, now);
        recorder.record(tenant, a, now - Duration::seconds(5));
        recorder.record(tenant, b, now);
        assert_eq!(recorder.pending(), 3);
        assert_eq!(recorder.flush(&repository).await.expect("flush"), 2);
        assert_eq!(recorder.pending(), 0);
        let batches = repository.usage_batches.lock().expect("batches");
        let delta_a = batches[0]
            .deltas
            .iter()
            .find(|delta| delta.key_id == a)
            .expect("a");
        assert_eq!((delta_a.count, delta_a.last_used_at), (2, now));
    }

    #[tokio::test]
    async fn a_failed_flush_retries_its_batch_as_it_was_before_taking_later_uses() {
        let recorder = UsageRecorder::new();
        let repository = MemoryRepository::default();
        let now = Utc::now();
        let (tenant, key) = ids(10);
        recorder.record(tenant, key, now);
        recorder.record(tenant, key, now);
        *repository.failing_usage_writes.lock().expect("failing") = 1;
        assert!(recorder.flush(&repository).await.is_err());
        let later = now + Duration::seconds(1);
        recorder.record(tenant, key, later);
        assert_eq!(recorder.pending(), 3, "nothing is lost");
        assert_eq!(recorder.flush(&repository).await.expect("flush"), 2);
        assert_eq!(recorder.pending(), 0);

        let attempts = attempts(&repository);
        assert_eq!(attempts.len(), 3);
        assert_eq!(attempts[0], attempts[1], "the same batch, retried");
        assert_ne!(
            attempts[1], attempts[2],
            "later uses in a batch of their own"
        );
        let batches = repository.usage_batches.lock().expect("batches");
        let counts: Vec<_> = batches
            .iter()
            .map(|batch| (batch.deltas[0].count, batch.deltas[0].last_used_at))
            .collect();
        assert_eq!(counts, [(2, now), (1, later)]);
    }

    #[tokio::test]
    async fn a_retry_after_a_lost_acknowledgement_counts_nothing_twice() {
        let recorder = UsageRecorder::new();
        let repository = MemoryRepository::default();
        let now = Utc::now();
        let (tenant, key) = ids(10);
        for _ in 0..3 {
            recorder.record(tenant, key, now);
        }
        // The write commits, but its acknowledgement never arrives.
        *repository.lost_acknowledgements.lock().expect("lost") = 1;
        assert!(recorder.flush(&repository).await.is_err());
        recorder.record(tenant, key, now);
        recorder.flush(&repository).await.expect("flush");
        assert_eq!(repository.usage_of(key), 4);
        assert_eq!(recorder.pending(), 0);
    }

    #[tokio::test]
    async fn a_second_flush_waits_for_the_first_and_never_takes_its_uses() {
        let recorder = Arc::new(UsageRecorder::new());
        let repository = Arc::new(MemoryRepository::default());
        let now = Utc::now();
        let (tenant, key) = ids(10);
        recorder.record(tenant, key, now);
        recorder.record(tenant, key, now);

        // The first flush (the periodic one) takes its batch and is held
        // inside the write.
        let gate = repository.usage_gate.lock().await;
        let first = tokio::spawn({
            let (recorder, repository) = (Arc::clone(&recorder), Arc::clone(&repository));
            async move { recorder.flush(repository.as_ref()).await }
        });
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while attempts(&repository).is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the first flush never wrote"
            );
            tokio::task::yield_now().await;
        }
        recorder.record(tenant, key, now);

        // The second (the one at shutdown) waits for its turn.
        let mut second = std::pin::pin!(recorder.flush(repository.as_ref()));
        let polled = std::future::poll_fn(|cx| Poll::Ready(second.as_mut().poll(cx))).await;
        assert!(
            polled.is_pending(),
            "a second flush runs only after the first"
        );
        assert_eq!(attempts(&repository).len(), 1);

        drop(gate);
        assert_eq!(first.await.expect("joined").expect("first"), 1);
        assert_eq!(second.await.expect("second"), 1);
        let batches = repository.usage_batches.lock().expect("batches");
        let counts: Vec<u64> = batches.iter().map(|batch| batch.deltas[0].count).collect();
        assert_eq!(counts, [2, 1], "each use in exactly one batch");
        assert_eq!(recorder.pending(), 0);
    }

    #[tokio::test]
    async fn an_empty_recorder_writes_nothing() {
        let repository = MemoryRepository::default();
        assert_eq!(
            UsageRecorder::new()
                .flush(&repository)
                .await
                .expect("flush"),
            0
        );
        assert!(attempts(&repository).is_empty());
    }
}
