//! Typed identifiers, so a tenant id can never be passed where a user id belongs.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            #[must_use]
            pub const fn from_uuid(id: Uuid) -> Self {
                Self(id)
            }

            #[must_use]
            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }
    };
}

uuid_id!(
    /// The tenant (organisation) a key and its owner belong to.
    TenantId
);
uuid_id!(
    /// A user of a tenant, as named by the `sub` claim of their JWT.
    UserId
);
uuid_id!(
    /// The public id of a key (a UUIDv7, so ids sort by creation time).
    ApiKeyId
);
uuid_id!(
    /// A tenant's registered upstream MCP server (a UUIDv7).
    ServerId
);

impl UserId {
    /// The actor of changes no user made: a key revoked because its holder
    /// reported it leaked (the nil UUID, which no identity provider issues
    /// as a user id).
    pub const SYSTEM: Self = Self(Uuid::nil());
}
