//! Gateway requests in flight per tenant on this instance, so that one
//! tenant (a slow upstream of its own, or a flood of its keys) cannot take
//! every connection and every buffer of an instance from the others.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use cola_domain::TenantId;

#[derive(Debug)]
pub struct TenantInflight {
    limit: usize,
    counts: Mutex<HashMap<TenantId, usize>>,
}

/// One request's place, given back when it is dropped.
#[derive(Debug)]
pub struct InflightSlot {
    owner: Arc<TenantInflight>,
    tenant: TenantId,
}

impl TenantInflight {
    #[must_use]
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// A place for one more request of `tenant`, or `None` when the tenant
    /// already has `limit` in flight.
    #[must_use]
    pub fn enter(self: &Arc<Self>, tenant: TenantId) -> Option<InflightSlot> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(tenant).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(InflightSlot {
            owner: Arc::clone(self),
            tenant,
        })
    }

    /// Requests of `tenant` in flight.
    #[must_use]
    pub fn in_flight(&self, tenant: TenantId) -> usize {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&tenant)
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for InflightSlot {
    fn drop(&mut self) {
        let mut counts = self
            .owner
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.tenant) {
            *count -= 1;
            // A tenant with nothing in flight takes no memory.
            if *count == 0 {
                counts.remove(&self.tenant);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    #[test]
    fn a_tenant_at_its_limit_waits_and_others_do_not() {
        let inflight = TenantInflight::new(2);
        let (a, b) = (
            TenantId::from_uuid(Uuid::from_u128(1)),
            TenantId::from_uuid(Uuid::from_u128(2)),
        );
        let first = inflight.enter(a).expect("room");
        let _second = inflight.enter(a).expect("room");
        assert!(inflight.enter(a).is_none());
        assert!(inflight.enter(b).is_some());
        drop(first);
        assert!(inflight.enter(a).is_some());
    }

    #[test]
    fn a_tenant_with_nothing_in_flight_is_forgotten() {
        let inflight = TenantInflight::new(1);
        let tenant = TenantId::from_uuid(Uuid::from_u128(3));
        drop(inflight.enter(tenant));
        assert_eq!(inflight.in_flight(tenant), 0);
        assert!(inflight.counts.lock().expect("lock").is_empty());
    }
}
