//! A key's own rate limit: at most `requests` per `per_secs` seconds, as a
//! token bucket (a burst of `requests`, refilled continuously).

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub const MAX_RATE_LIMIT_REQUESTS: u64 = 1_000_000;
pub const MAX_RATE_LIMIT_PER_SECS: u64 = 86_400;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RateLimitError {
    #[error("must be a whole number from 1 to {MAX_RATE_LIMIT_REQUESTS}")]
    Requests,
    #[error("must be a whole number from 1 to {MAX_RATE_LIMIT_PER_SECS}")]
    PerSecs,
}

impl RateLimitError {
    /// The field of `rate_limit` at fault.
    #[must_use]
    pub fn field(self) -> &'static str {
        match self {
            Self::Requests => "requests",
            Self::PerSecs => "per_secs",
        }
    }
}

/// `requests` 1..=1 000 000 per `per_secs` 1..=86 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RateLimit {
    requests: u32,
    per_secs: u32,
}

impl RateLimit {
    /// The limit, or every field at fault.
    pub fn new(requests: i64, per_secs: i64) -> Result<Self, Vec<RateLimitError>> {
        let in_range = |value: i64, max: u64| {
            u64::try_from(value)
                .ok()
                .filter(|value| (1..=max).contains(value))
                .and_then(|value| u32::try_from(value).ok())
        };
        let requests_ok = in_range(requests, MAX_RATE_LIMIT_REQUESTS);
        let per_secs_ok = in_range(per_secs, MAX_RATE_LIMIT_PER_SECS);
        match (requests_ok, per_secs_ok) {
            (Some(requests), Some(per_secs)) => Ok(Self { requests, per_secs }),
            (requests, per_secs) => Err([
                requests.is_none().then_some(RateLimitError::Requests),
                per_secs.is_none().then_some(RateLimitError::PerSecs),
            ]
            .into_iter()
            .flatten()
            .collect()),
        }
    }

    #[must_use]
    pub fn requests(self) -> u32 {
        self.requests
    }

    #[must_use]
    pub fn per_secs(self) -> u32 {
        self.per_secs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bounds_are_inclusive() {
        assert!(RateLimit::new(1, 1).is_ok());
        assert!(RateLimit::new(1_000_000, 86_400).is_ok());
    }

    #[test]
    fn each_field_out_of_range_is_named() {
        assert_eq!(
            RateLimit::new(0, 86_401),
            Err(vec![RateLimitError::Requests, RateLimitError::PerSecs])
        );
        assert_eq!(
            RateLimit::new(1_000_001, 60),
            Err(vec![RateLimitError::Requests])
        );
        assert_eq!(RateLimit::new(5, -1), Err(vec![RateLimitError::PerSecs]));
    }
}
