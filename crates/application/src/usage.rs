//! Batched usage counting: admitted requests increment counters in memory; a
//! background task flushes them with one increment per key, so the count is
//! exact after a flush without a database write per request.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use cola_domain::{ApiKeyId, TenantId};

use crate::ports::{ApiKeyRepository, RepositoryError, UsageDelta};

#[derive(Debug, Default)]
pub struct UsageRecorder {
    pending: Mutex<HashMap<ApiKeyId, UsageDelta>>,
}

impl UsageRecorder {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one admitted request.
    pub fn record(&self, tenant_id: TenantId, key_id: ApiKeyId, at: DateTime<Utc>) {
        let mut pending = self.lock();
        let delta = pending.entry(key_id).or_insert(UsageDelta {
            tenant_id,
            key_id,
            count: 0,
            last_used_at: at,
        });
        delta.count += 1;
        delta.last_used_at = delta.last_used_at.max(at);
    }

    /// Uses counted but not yet written.
    #[must_use]
    pub fn pending(&self) -> u64 {
        self.lock().values().map(|delta| delta.count).sum()
    }

    /// Writes everything counted so far. On failure the batch is put back,
    /// merged with what was counted meanwhile, so nothing is lost.
    pub async fn flush(&self, repository: &dyn ApiKeyRepository) -> Result<usize, RepositoryError> {
        let batch: Vec<UsageDelta> = {
            let mut pending = self.lock();
            if pending.is_empty() {
                return Ok(0);
            }
            std::mem::take(&mut *pending).into_values().collect()
        };
        match repository.add_usage(&batch).await {
            Ok(()) => Ok(batch.len()),
            Err(error) => {
                let mut pending = self.lock();
                for delta in batch {
                    pending
                        .entry(delta.key_id)
                        .and_modify(|newer| {
                            newer.count += delta.count;
                            newer.last_used_at = newer.last_used_at.max(delta.last_used_at);
                        })
                        .or_insert(delta);
                }
                Err(error)
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ApiKeyId, UsageDelta>> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (every update is a single insert or add), so a poisoned lock is
        // still safe to use.
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
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
            .iter()
            .find(|delta| delta.key_id == a)
            .expect("a");
        assert_eq!((delta_a.count, delta_a.last_used_at), (2, now));
    }

    #[tokio::test]
    async fn a_failed_flush_loses_nothing_and_merges_with_later_uses() {
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
        assert_eq!(recorder.pending(), 3);
        assert_eq!(recorder.flush(&repository).await.expect("flush"), 1);
        let batches = repository.usage_batches.lock().expect("batches");
        assert_eq!(batches.len(), 1);
        assert_eq!(
            (batches[0][0].count, batches[0][0].last_used_at),
            (3, later)
        );
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
        assert!(repository.usage_batches.lock().expect("batches").is_empty());
    }
}
