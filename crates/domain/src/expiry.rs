//! The expiry policy: every key expires, by default after `default_ttl_days`,
//! never later than `max_ttl_days` after it was issued.

use chrono::{DateTime, Duration, Utc};
use thiserror::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpiryPolicy {
    default_ttl_days: u32,
    max_ttl_days: u32,
}

/// How a create request asks for its expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiryRequest {
    Default,
    InDays(i64),
    At(DateTime<Utc>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ExpiryError {
    #[error("must be between 1 and {max} days")]
    DaysOutOfRange { max: u32 },
    #[error("must be in the future")]
    NotInFuture,
    #[error("must be at most {max} days from now")]
    BeyondMaximum { max: u32 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("the default TTL must be between 1 day and the maximum TTL")]
pub struct InvalidPolicy;

impl ExpiryPolicy {
    pub fn new(default_ttl_days: u32, max_ttl_days: u32) -> Result<Self, InvalidPolicy> {
        if default_ttl_days == 0 || default_ttl_days > max_ttl_days {
            return Err(InvalidPolicy);
        }
        Ok(Self {
            default_ttl_days,
            max_ttl_days,
        })
    }

    #[must_use]
    pub fn max_ttl_days(&self) -> u32 {
        self.max_ttl_days
    }

    #[must_use]
    pub fn default_ttl_days(&self) -> u32 {
        self.default_ttl_days
    }

    /// The expiry instant for a key issued at `now`.
    pub fn resolve(
        &self,
        request: ExpiryRequest,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, ExpiryError> {
        let max = self.max_ttl_days;
        match request {
            ExpiryRequest::Default => Ok(now + Duration::days(i64::from(self.default_ttl_days))),
            ExpiryRequest::InDays(days) if (1..=i64::from(max)).contains(&days) => {
                Ok(now + Duration::days(days))
            }
            ExpiryRequest::InDays(_) => Err(ExpiryError::DaysOutOfRange { max }),
            ExpiryRequest::At(at) if at <= now => Err(ExpiryError::NotInFuture),
            ExpiryRequest::At(at) if at > now + Duration::days(i64::from(max)) => {
                Err(ExpiryError::BeyondMaximum { max })
            }
            ExpiryRequest::At(at) => Ok(at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .expect("date")
            .with_timezone(&Utc)
    }

    fn policy() -> ExpiryPolicy {
        ExpiryPolicy::new(90, 365).expect("valid policy")
    }

    #[test]
    fn the_default_is_ninety_days() {
        assert_eq!(
            policy().resolve(ExpiryRequest::Default, now()),
            Ok(now() + Duration::days(90))
        );
    }

    #[test]
    fn days_must_be_between_one_and_the_maximum() {
        assert!(policy().resolve(ExpiryRequest::InDays(1), now()).is_ok());
        assert!(policy().resolve(ExpiryRequest::InDays(365), now()).is_ok());
        for days in [0, -1, 366] {
            assert_eq!(
                policy().resolve(ExpiryRequest::InDays(days), now()),
                Err(ExpiryError::DaysOutOfRange { max: 365 })
            );
        }
    }

    #[test]
    fn an_instant_must_be_in_the_future_and_within_the_maximum() {
        assert_eq!(
            policy().resolve(ExpiryRequest::At(now()), now()),
            Err(ExpiryError::NotInFuture)
        );
        let late = now() + Duration::days(365) + Duration::seconds(1);
        assert_eq!(
            policy().resolve(ExpiryRequest::At(late), now()),
            Err(ExpiryError::BeyondMaximum { max: 365 })
        );
        let fine = now() + Duration::hours(1);
        assert_eq!(policy().resolve(ExpiryRequest::At(fine), now()), Ok(fine));
    }

    #[test]
    fn a_default_above_the_maximum_is_not_a_policy() {
        assert_eq!(ExpiryPolicy::new(400, 365), Err(InvalidPolicy));
        assert_eq!(ExpiryPolicy::new(0, 365), Err(InvalidPolicy));
    }
}
