//! The two eras of MCP over HTTP and every rule that differs between them,
//! in one place: the next protocol version is this file to change.

/// Versions of the handshake era (`initialize` first).
pub const LEGACY_VERSIONS: [&str; 3] = ["2025-03-26", "2025-06-18", "2025-11-25"];
/// The newest handshake-era version, offered when a client asks for one we
/// do not know.
pub const LATEST_LEGACY_VERSION: &str = "2025-11-25";
/// The stateless era: every request carries its version in `_meta`.
pub const MODERN_VERSION: &str = "2026-07-28";

pub const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
pub const META_CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
pub const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";
/// Where a listen stream's messages name their subscription: the id of the
/// client's `subscriptions/listen` request.
pub const META_SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";
/// Where a message names the task it belongs to.
pub const META_RELATED_TASK: &str = "io.modelcontextprotocol/related-task";

pub const HEADER_PROTOCOL_VERSION: &str = "mcp-protocol-version";
pub const HEADER_METHOD: &str = "mcp-method";
pub const HEADER_NAME: &str = "mcp-name";
/// `Mcp-Param-{Name}`: an argument a tool's schema marks `x-mcp-header`.
pub const HEADER_PARAM_PREFIX: &str = "mcp-param-";
pub const HEADER_SESSION_ID: &str = "mcp-session-id";

/// `resultType` of a result that is the whole answer (2026-07-28).
pub const RESULT_COMPLETE: &str = "complete";

/// Which era a request belongs to, decided by its metadata alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Era {
    Handshake,
    Stateless,
}

impl Era {
    /// The era of a request with `_meta`'s protocol version `meta_version`
    /// and the `MCP-Protocol-Version` header `header_version`: stateless
    /// when either says 2026-07-28 or later.
    #[must_use]
    pub fn of(meta_version: Option<&str>, header_version: Option<&str>) -> Self {
        if meta_version.is_some() || header_version.is_some_and(is_stateless_version) {
            Self::Stateless
        } else {
            Self::Handshake
        }
    }

    /// The era a message of `header_version` alone (a GET or DELETE, which
    /// have no body) belongs to.
    #[must_use]
    pub fn of_header(header_version: Option<&str>) -> Self {
        Self::of(None, header_version)
    }

    /// Whether requests of this era live in sessions (and GET streams).
    #[must_use]
    pub fn has_sessions(self) -> bool {
        self == Self::Handshake
    }

    /// The HTTP status of a method the server does not know: 404 in
    /// 2026-07-28, 200 (an in-band error) in the handshake era.
    #[must_use]
    pub fn method_not_found_status(self) -> u16 {
        match self {
            Self::Handshake => 200,
            Self::Stateless => 404,
        }
    }

    /// The error code of an unknown resource (or one the key may not read):
    /// `-32002` in the handshake era, invalid params in 2026-07-28.
    #[must_use]
    pub fn resource_not_found_code(self) -> i64 {
        match self {
            Self::Handshake => crate::error::RESOURCE_NOT_FOUND,
            Self::Stateless => crate::error::INVALID_PARAMS,
        }
    }

    /// Whether a client that disconnects from a streamed answer cancels its
    /// request: yes in 2026-07-28 (closing the stream is the cancellation),
    /// no in the handshake era (the client may resume).
    #[must_use]
    pub fn disconnect_cancels(self) -> bool {
        self == Self::Stateless
    }
}

/// Whether an `MCP-Protocol-Version` value names the stateless era.
#[must_use]
pub fn is_stateless_version(version: &str) -> bool {
    version.trim() >= MODERN_VERSION
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_era_is_the_metadatas() {
        assert_eq!(Era::of(None, None), Era::Handshake);
        assert_eq!(Era::of(None, Some("2025-11-25")), Era::Handshake);
        assert_eq!(Era::of(None, Some("2026-07-28")), Era::Stateless);
        assert_eq!(Era::of(Some("2026-07-28"), None), Era::Stateless);
        assert_eq!(
            Era::of(Some("1999-01-01"), Some("2025-06-18")),
            Era::Stateless
        );
        assert_eq!(Era::of_header(Some(" 2027-01-01 ")), Era::Stateless);
    }

    #[test]
    fn the_rules_that_differ_differ() {
        assert_eq!(Era::Handshake.method_not_found_status(), 200);
        assert_eq!(Era::Stateless.method_not_found_status(), 404);
        assert_eq!(Era::Handshake.resource_not_found_code(), -32002);
        assert_eq!(Era::Stateless.resource_not_found_code(), -32602);
        assert!(Era::Handshake.has_sessions() && !Era::Stateless.has_sessions());
        assert!(Era::Stateless.disconnect_cancels() && !Era::Handshake.disconnect_cancels());
    }
}
