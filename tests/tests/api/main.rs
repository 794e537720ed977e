//! End-to-end tests of the management REST API and the service surface,
//! against the real binary over HTTP.

#![allow(clippy::unwrap_used)]

mod abuse;
mod auth;
mod cli;
mod concurrent_changes;
mod console;
mod forwarding;
mod gateway;
mod http;
mod instances;
mod lifecycle;
mod listing;
mod logging;
mod metrics;
mod offboarding;
mod openapi;
mod provider;
mod rate_limit_per_key;
mod report;
mod resilience;
mod rotation;
mod servers;
mod tenancy;
mod validation;
mod verify;
mod write_limit;

use uuid::Uuid;

/// A tenant with an admin and two members.
#[derive(Debug)]
pub struct Tenant {
    pub id: Uuid,
    pub admin: Uuid,
    pub alice: Uuid,
    pub bob: Uuid,
}

impl Default for Tenant {
    fn default() -> Self {
        Self::new()
    }
}

impl Tenant {
    pub fn new() -> Self {
        Self {
            id: Uuid::new_v4(),
            admin: Uuid::new_v4(),
            alice: Uuid::new_v4(),
            bob: Uuid::new_v4(),
        }
    }
}
