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
