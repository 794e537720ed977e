//! A key's lifecycle status. Only `Active` and `Revoked` are stored; `Expired`
//! is derived from the clock, so a key expires without anyone writing it.

use serde::{Deserialize, Serialize};

/// The stored status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiKeyStatus {
    Active,
    Revoked,
}

/// The status as users see it at a given instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EffectiveStatus {
    Active,
    Revoked,
    Expired,
}

impl EffectiveStatus {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
        }
    }
}
