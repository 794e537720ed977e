//! One admission step for every surface that takes a `cola_` key (`/mcp`,
//! the gateway's `/mcp/{slug}`, the verify API): the failure limit of the
//! party presenting it, the key's verification, the key's own rate limit,
//! and one counted use — in that order, each once.
//!
//! A surface cannot skip a step: a key comes out of [`KeyAdmission::verify`]
//! only as a [`Verified`], which becomes an [`Admission`] only through
//! [`Verified::commit`] (rate limit, then the use). The verify API looks at
//! the key's grant between the two, so that a key refused there costs no
//! use; every other surface commits at once with [`KeyAdmission::admit`].

mod attempts;
mod key_limits;

use std::net::IpAddr;
use std::sync::Arc;

pub use attempts::{Attempt, AttemptLimiter, Charge, Party, TooManyAttempts};
pub use key_limits::{KeyRateLimiter, MAX_TRACKED_KEYS};

use crate::auth::{Admission, KeyAuthenticator, Refusal};

/// Why a key was not admitted.
#[derive(Debug, Clone)]
pub enum Denied {
    /// The key, or the party presenting it, was refused before any use:
    /// `refusal.reason` says why (a bad credential, an address outside the
    /// allow-list, too many attempts, verification unavailable).
    Refused(Refusal),
    /// A good key over its own rate limit.
    RateLimited {
        admission: Admission,
        retry_after_secs: u64,
    },
}

/// Admits keys. Shared by every surface.
#[derive(Debug)]
pub struct KeyAdmission {
    authenticator: Arc<KeyAuthenticator>,
    key_limits: KeyRateLimiter,
}

impl KeyAdmission {
    #[must_use]
    pub fn new(authenticator: Arc<KeyAuthenticator>) -> Self {
        Self {
            authenticator,
            key_limits: KeyRateLimiter::new(),
        }
    }

    /// The limiter of failed attempts, for refusals that precede a key (a
    /// bad server token at the verify API).
    #[must_use]
    pub fn attempts(&self) -> &Arc<AttemptLimiter> {
        self.authenticator.attempts()
    }

    /// Whether the key `principal` was admitted as is unchanged and active
    /// (see [`KeyAuthenticator::still_as_admitted`]).
    pub async fn still_as_admitted(&self, principal: &crate::McpPrincipal) -> bool {
        self.authenticator.still_as_admitted(principal).await
    }

    /// Admits `presented` from `client`, who pays for the attempt: every
    /// step, one counted use.
    pub async fn admit(
        &self,
        presented: Option<&str>,
        client: IpAddr,
    ) -> Result<Admission, Denied> {
        self.verify(presented, Some(client), Charge::Client(client))
            .await
            .map_err(Denied::Refused)?
            .commit()
    }

    /// The first half of [`Self::admit`]: the failure limit of `charge`
    /// and the key's verification from `client` (`None`: the caller cannot
    /// say, which only a key without an allow-list passes).
    pub async fn verify(
        &self,
        presented: Option<&str>,
        client: Option<IpAddr>,
        charge: Charge,
    ) -> Result<Verified<'_>, Refusal> {
        let admission = self.authenticator.check(presented, client, charge).await?;
        Ok(Verified {
            admission,
            admitting: self,
        })
    }
}

/// A key verified for one request but not yet admitted: nothing counted.
#[derive(Debug)]
#[must_use = "a verified key is admitted only once committed"]
pub struct Verified<'a> {
    admission: Admission,
    admitting: &'a KeyAdmission,
}

impl Verified<'_> {
    #[must_use]
    pub fn admission(&self) -> &Admission {
        &self.admission
    }

    /// The key's own rate limit, then one use of it.
    pub fn commit(self) -> Result<Admission, Denied> {
        let key = self.admission.principal.key();
        if let Some(limit) = key.rate_limit
            && let Err(wait) = self.admitting.key_limits.check(key.key_id, limit)
        {
            return Err(Denied::RateLimited {
                admission: self.admission,
                retry_after_secs: wait.secs(),
            });
        }
        self.admitting.authenticator.record_use(&self.admission);
        Ok(self.admission)
    }
}
