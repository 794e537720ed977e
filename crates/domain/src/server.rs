//! A tenant's registered upstream MCP server: its slug (the path segment
//! clients use), name, upstream URL, the names of the headers Cola sends
//! upstream, whether the caller's identity is forwarded, and the upstream's
//! timeout. Changed only through methods returning the event they caused.
//!
//! The header *values* are credentials: they live in [`UpstreamSecret`]s,
//! which never print themselves, and are sealed at rest by infrastructure.
//! The aggregate and its events hold only the names.

use std::fmt;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use thiserror::Error;
use zeroize::Zeroizing;

use crate::{AllowedNetworks, KeyName, ServerId, TenantId, UserId};

const MAX_SLUG_CHARS: usize = 40;
const MAX_URL_CHARS: usize = 2048;
/// Most headers a server may send upstream.
pub const MAX_UPSTREAM_HEADERS: usize = 20;
const MAX_HEADER_NAME_CHARS: usize = 64;
/// Longest single header value, in bytes.
pub const MAX_HEADER_VALUE_BYTES: usize = 4096;
/// The default and the bounds of `timeout_secs`.
pub const DEFAULT_TIMEOUT_SECS: u16 = 30;
pub const MAX_TIMEOUT_SECS: u16 = 300;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("a slug is 1 to 40 characters of a-z, 0-9 and `-`")]
pub struct SlugError;

/// The server's path segment (`/mcp/{slug}`): 1..=40 of `[a-z0-9-]`, unique
/// in its tenant, fixed once registered.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct ServerSlug(String);

impl ServerSlug {
    pub fn parse(candidate: &str) -> Result<Self, SlugError> {
        let valid = !candidate.is_empty()
            && candidate.len() <= MAX_SLUG_CHARS
            && candidate
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if valid {
            Ok(Self(candidate.to_owned()))
        } else {
            Err(SlugError)
        }
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ServerSlug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UrlError {
    #[error("must be an absolute URL of at most 2048 characters")]
    NotAUrl,
    #[error("must use http or https")]
    Scheme,
    #[error("must not contain a user name or password")]
    UserInfo,
    #[error("must name a host")]
    NoHost,
    #[error(
        "{0} is not a public address (loopback, private, link-local, CGNAT, unique-local, reserved …) and is not in COLA_GATEWAY_ALLOWED_NETWORKS"
    )]
    AddressNotAllowed(IpAddr),
}

/// Where an upstream URL's host is: an address, or a name that must be
/// resolved (by the application, through its port) before it is trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamHost {
    Address(IpAddr),
    Name(String),
}

/// An upstream's Streamable HTTP endpoint: `http`/`https`, no user info, a
/// host. An address literal must be one the operator lets Cola dial; a
/// host name is checked by whoever resolves it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamUrl {
    url: url::Url,
}

impl UpstreamUrl {
    /// A URL given by a tenant admin, checked against `allowed`.
    pub fn parse(candidate: &str, allowed: &AllowedNetworks) -> Result<Self, UrlError> {
        let url = Self::restore(candidate)?;
        if let UpstreamHost::Address(addr) = url.host()
            && !allowed.permits(addr)
        {
            return Err(UrlError::AddressNotAllowed(addr));
        }
        Ok(url)
    }

    /// A URL as stored: the syntax rules only. Its addresses are checked
    /// again whenever the gateway connects, against the operator's current
    /// allow-list.
    pub fn restore(candidate: &str) -> Result<Self, UrlError> {
        if candidate.chars().count() > MAX_URL_CHARS {
            return Err(UrlError::NotAUrl);
        }
        let url = url::Url::parse(candidate).map_err(|_| UrlError::NotAUrl)?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(UrlError::Scheme);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlError::UserInfo);
        }
        match url.host() {
            None => Err(UrlError::NoHost),
            Some(url::Host::Domain("")) => Err(UrlError::NoHost),
            Some(_) => Ok(Self { url }),
        }
    }

    #[must_use]
    pub fn host(&self) -> UpstreamHost {
        match self.url.host() {
            Some(url::Host::Ipv4(v4)) => UpstreamHost::Address(IpAddr::V4(v4)),
            Some(url::Host::Ipv6(v6)) => UpstreamHost::Address(IpAddr::V6(v6)),
            Some(url::Host::Domain(name)) => UpstreamHost::Name(name.to_owned()),
            None => UpstreamHost::Name(String::new()),
        }
    }

    /// The port that will be dialled (the scheme's default when none is given).
    #[must_use]
    pub fn port(&self) -> u16 {
        self.url.port_or_known_default().unwrap_or(80)
    }

    /// The normalised URL (`url::Url`'s serialisation).
    #[must_use]
    pub fn as_str(&self) -> &str {
        self.url.as_str()
    }

    /// The parsed URL, for the client that dials it: parsed once, when the
    /// server is read, not per request.
    #[must_use]
    pub fn as_url(&self) -> &url::Url {
        &self.url
    }
}

impl Serialize for UpstreamUrl {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HeaderError {
    #[error("at most {MAX_UPSTREAM_HEADERS} headers are allowed")]
    TooMany,
    #[error("a header name is 1 to 64 characters of the HTTP token alphabet")]
    InvalidName,
    #[error("is a header Cola sets or controls itself and cannot be configured")]
    Reserved,
    #[error("is given twice (header names are case-insensitive)")]
    Duplicate,
    #[error(
        "a header value is 1 to 4096 bytes of visible ASCII (inner spaces and tabs allowed), without leading or trailing whitespace"
    )]
    InvalidValue,
}

/// Headers Cola controls on the upstream hop: hop-by-hop headers, the body's
/// framing and type, the MCP protocol's own headers, and Cola's identity
/// assertion. A tenant configuring one of them could smuggle requests or
/// forge what the gateway vouches for.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "content-type",
    "content-encoding",
    "accept",
    "accept-encoding",
    "last-event-id",
];
/// Reserved by prefix: `Mcp-Session-Id`, `MCP-Protocol-Version`,
/// `Mcp-Method`, `Mcp-Name`, `Mcp-Param-*`, and `X-Cola-Identity` with any
/// header Cola may add later.
const RESERVED_PREFIXES: &[&str] = &["mcp-", "x-cola-"];

/// A header name Cola may send upstream: an HTTP token (RFC 9110), not one
/// Cola controls. Kept as given; compared without regard to case.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct HeaderName(String);

impl HeaderName {
    pub fn parse(candidate: &str) -> Result<Self, HeaderError> {
        let token = !candidate.is_empty()
            && candidate.len() <= MAX_HEADER_NAME_CHARS
            && candidate
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token {
            return Err(HeaderError::InvalidName);
        }
        let lower = candidate.to_ascii_lowercase();
        if RESERVED_HEADERS.contains(&lower.as_str())
            || RESERVED_PREFIXES
                .iter()
                .any(|prefix| lower.starts_with(prefix))
        {
            return Err(HeaderError::Reserved);
        }
        Ok(Self(candidate.to_owned()))
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn same_as(&self, other: &Self) -> bool {
        self.0.eq_ignore_ascii_case(&other.0)
    }
}

/// A header value Cola sends upstream: a credential. Its `Debug` prints
/// `[redacted]` and its memory is wiped when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct UpstreamSecret(Zeroizing<String>);

impl UpstreamSecret {
    pub fn parse(candidate: String) -> Result<Self, HeaderError> {
        let candidate = Zeroizing::new(candidate);
        let bytes = candidate.as_bytes();
        let visible = |b: &u8| (0x21..=0x7e).contains(b);
        let valid = !bytes.is_empty()
            && bytes.len() <= MAX_HEADER_VALUE_BYTES
            && bytes
                .iter()
                .all(|b| visible(b) || *b == b' ' || *b == b'\t')
            && bytes.first().is_some_and(visible)
            && bytes.last().is_some_and(visible);
        if valid {
            Ok(Self(candidate))
        } else {
            Err(HeaderError::InvalidValue)
        }
    }

    /// The value itself, for the one place that sends it upstream.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for UpstreamSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The headers a server sends upstream, in the order given, names unique
/// without regard to case.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpstreamHeaders(Vec<(HeaderName, UpstreamSecret)>);

impl UpstreamHeaders {
    /// Every bad header, by name (`None` for the list as a whole).
    pub fn parse(given: Vec<(String, String)>) -> Result<Self, Vec<(Option<String>, HeaderError)>> {
        let mut errors = Vec::new();
        if given.len() > MAX_UPSTREAM_HEADERS {
            errors.push((None, HeaderError::TooMany));
        }
        let mut headers: Vec<(HeaderName, UpstreamSecret)> = Vec::with_capacity(given.len());
        for (name, value) in given {
            let parsed_name = HeaderName::parse(&name);
            let parsed_value = UpstreamSecret::parse(value);
            match (parsed_name, parsed_value) {
                (Ok(header), Ok(value)) => {
                    if headers.iter().any(|(held, _)| held.same_as(&header)) {
                        errors.push((Some(name), HeaderError::Duplicate));
                    } else {
                        headers.push((header, value));
                    }
                }
                (Err(error), _) | (_, Err(error)) => errors.push((Some(name), error)),
            }
        }
        if errors.is_empty() {
            Ok(Self(headers))
        } else {
            Err(errors)
        }
    }

    /// Rebuilds headers from storage; the same rules.
    pub fn restore(pairs: Vec<(String, String)>) -> Result<Self, HeaderError> {
        Self::parse(pairs).map_err(|mut errors| {
            errors
                .pop()
                .map_or(HeaderError::InvalidValue, |(_, error)| error)
        })
    }

    #[must_use]
    pub fn names(&self) -> Vec<HeaderName> {
        self.0.iter().map(|(name, _)| name.clone()).collect()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    #[must_use]
    pub fn pairs(&self) -> &[(HeaderName, UpstreamSecret)] {
        &self.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("must be a whole number of seconds from 1 to 300")]
pub struct TimeoutError;

/// How long the gateway waits for the upstream to start answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ServerTimeout(u16);

impl Default for ServerTimeout {
    fn default() -> Self {
        Self(DEFAULT_TIMEOUT_SECS)
    }
}

impl ServerTimeout {
    pub fn from_secs(secs: i64) -> Result<Self, TimeoutError> {
        u16::try_from(secs)
            .ok()
            .filter(|secs| (1..=MAX_TIMEOUT_SECS).contains(secs))
            .map(Self)
            .ok_or(TimeoutError)
    }

    #[must_use]
    pub fn secs(self) -> u16 {
        self.0
    }

    #[must_use]
    pub fn duration(self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(self.0))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServerEventKind {
    Created,
    Updated,
    Deleted,
    /// A verification token was minted, replacing any earlier one.
    TokenMinted,
}

impl ServerEventKind {
    pub const ALL: [Self; 4] = [
        Self::Created,
        Self::Updated,
        Self::Deleted,
        Self::TokenMinted,
    ];

    /// The event's name on the wire and in storage.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "mcp_server.created",
            Self::Updated => "mcp_server.updated",
            Self::Deleted => "mcp_server.deleted",
            Self::TokenMinted => "mcp_server.token_minted",
        }
    }

    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

/// One change to one server; `data` never holds a header value.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerEvent {
    pub kind: ServerEventKind,
    pub server_id: ServerId,
    pub tenant_id: TenantId,
    /// The server's slug, which never changes: what the gateway's
    /// directory caches a server by.
    pub slug: ServerSlug,
    pub actor_user_id: UserId,
    pub occurred_at: DateTime<Utc>,
    pub data: serde_json::Value,
}

/// Everything a server is registered with.
#[derive(Debug, Clone)]
pub struct NewServer {
    pub id: ServerId,
    pub tenant_id: TenantId,
    pub slug: ServerSlug,
    /// Same rules as a key's name.
    pub name: KeyName,
    /// `None`: verify-only, nothing is proxied.
    pub url: Option<UpstreamUrl>,
    pub header_names: Vec<HeaderName>,
    pub forward_identity: bool,
    pub timeout: ServerTimeout,
}

/// A partial change: `None` keeps a field; `url: Some(None)` makes the
/// server verify-only; `header_names: Some(_)` means the headers were
/// replaced whole (their values cannot be compared: they are sealed).
#[derive(Debug, Clone, Default)]
pub struct ServerChanges {
    pub name: Option<KeyName>,
    pub url: Option<Option<UpstreamUrl>>,
    pub header_names: Option<Vec<HeaderName>>,
    pub forward_identity: Option<bool>,
    pub timeout: Option<ServerTimeout>,
}

#[derive(Debug, Clone)]
pub struct RegisteredServer {
    id: ServerId,
    tenant_id: TenantId,
    slug: ServerSlug,
    name: KeyName,
    url: Option<UpstreamUrl>,
    header_names: Vec<HeaderName>,
    forward_identity: bool,
    timeout: ServerTimeout,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl RegisteredServer {
    /// Registers a server and returns the `mcp_server.created` event.
    #[must_use]
    pub fn register(new: NewServer, actor: UserId, now: DateTime<Utc>) -> (Self, ServerEvent) {
        let server = Self::restore(new, now, now);
        let event = server.event(
            ServerEventKind::Created,
            actor,
            now,
            json!({
                "slug": server.slug,
                "name": server.name,
                "url": server.url,
                "header_names": server.header_names,
                "forward_identity": server.forward_identity,
                "timeout_secs": server.timeout,
            }),
        );
        (server, event)
    }

    /// Rebuilds a server from storage.
    #[must_use]
    pub fn restore(new: NewServer, created_at: DateTime<Utc>, updated_at: DateTime<Utc>) -> Self {
        Self {
            id: new.id,
            tenant_id: new.tenant_id,
            slug: new.slug,
            name: new.name,
            url: new.url,
            header_names: new.header_names,
            forward_identity: new.forward_identity,
            timeout: new.timeout,
            created_at,
            updated_at,
        }
    }

    /// Applies `changes`; the `mcp_server.updated` event names exactly what
    /// changed (a headers replacement always counts), or `None` when
    /// nothing did.
    pub fn update(
        &mut self,
        changes: ServerChanges,
        actor: UserId,
        now: DateTime<Utc>,
    ) -> Option<ServerEvent> {
        let mut data = serde_json::Map::new();
        if let Some(name) = changes.name.filter(|name| *name != self.name) {
            data.insert("name".into(), json!(name));
            self.name = name;
        }
        if let Some(url) = changes.url.filter(|url| *url != self.url) {
            data.insert("url".into(), json!(url));
            self.url = url;
        }
        if let Some(names) = changes.header_names {
            data.insert("header_names".into(), json!(names));
            self.header_names = names;
        }
        if let Some(forward) = changes
            .forward_identity
            .filter(|forward| *forward != self.forward_identity)
        {
            data.insert("forward_identity".into(), json!(forward));
            self.forward_identity = forward;
        }
        if let Some(timeout) = changes.timeout.filter(|t| *t != self.timeout) {
            data.insert("timeout_secs".into(), json!(timeout));
            self.timeout = timeout;
        }
        if data.is_empty() {
            return None;
        }
        self.updated_at = now;
        Some(self.event(ServerEventKind::Updated, actor, now, data.into()))
    }

    /// The `mcp_server.deleted` event; the caller removes the server and
    /// every grant on it with this event.
    #[must_use]
    pub fn delete(&self, actor: UserId, now: DateTime<Utc>) -> ServerEvent {
        self.event(
            ServerEventKind::Deleted,
            actor,
            now,
            json!({ "slug": self.slug }),
        )
    }

    /// The `mcp_server.token_minted` event of a new verification token; the
    /// token itself is never part of it.
    #[must_use]
    pub fn mint_token(&self, actor: UserId, now: DateTime<Utc>) -> ServerEvent {
        self.event(
            ServerEventKind::TokenMinted,
            actor,
            now,
            json!({ "slug": self.slug }),
        )
    }

    fn event(
        &self,
        kind: ServerEventKind,
        actor: UserId,
        now: DateTime<Utc>,
        data: serde_json::Value,
    ) -> ServerEvent {
        ServerEvent {
            kind,
            server_id: self.id,
            tenant_id: self.tenant_id,
            slug: self.slug.clone(),
            actor_user_id: actor,
            occurred_at: now,
            data,
        }
    }

    #[must_use]
    pub fn id(&self) -> ServerId {
        self.id
    }
    #[must_use]
    pub fn tenant_id(&self) -> TenantId {
        self.tenant_id
    }
    #[must_use]
    pub fn slug(&self) -> &ServerSlug {
        &self.slug
    }
    #[must_use]
    pub fn name(&self) -> &KeyName {
        &self.name
    }
    #[must_use]
    pub fn url(&self) -> Option<&UpstreamUrl> {
        self.url.as_ref()
    }
    #[must_use]
    pub fn header_names(&self) -> &[HeaderName] {
        &self.header_names
    }
    #[must_use]
    pub fn forward_identity(&self) -> bool {
        self.forward_identity
    }
    #[must_use]
    pub fn timeout(&self) -> ServerTimeout {
        self.timeout
    }
    #[must_use]
    pub fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }
    #[must_use]
    pub fn updated_at(&self) -> DateTime<Utc> {
        self.updated_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use uuid::Uuid;

    fn none() -> AllowedNetworks {
        AllowedNetworks::default()
    }

    fn url(text: &str) -> Result<UpstreamUrl, UrlError> {
        UpstreamUrl::parse(text, &none())
    }

    #[test]
    fn a_slug_of_lowercase_letters_digits_and_dashes_is_accepted() {
        assert!(ServerSlug::parse("github-2").is_ok());
        assert!(ServerSlug::parse(&"a".repeat(40)).is_ok());
    }

    #[test]
    fn a_slug_that_is_empty_too_long_or_has_other_characters_is_rejected() {
        for bad in ["", "GitHub", "a_b", "a b", "a/b", "ä"] {
            assert_eq!(ServerSlug::parse(bad), Err(SlugError), "{bad}");
        }
        assert_eq!(ServerSlug::parse(&"a".repeat(41)), Err(SlugError));
    }

    #[test]
    fn an_https_url_with_a_public_host_is_accepted() {
        assert!(url("https://mcp.example.com/mcp").is_ok());
        assert!(url("http://8.8.8.8:8080/mcp").is_ok());
    }

    #[test]
    fn a_scheme_other_than_http_or_https_is_rejected() {
        assert_eq!(url("ftp://example.com/"), Err(UrlError::Scheme));
        assert_eq!(url("file:///etc/passwd"), Err(UrlError::Scheme));
    }

    #[test]
    fn user_info_is_rejected() {
        assert_eq!(url("https://user:pw@example.com/"), Err(UrlError::UserInfo));
        assert_eq!(url("https://user@example.com/"), Err(UrlError::UserInfo));
    }

    #[test]
    fn a_relative_or_hostless_url_is_rejected() {
        assert_eq!(url("/mcp"), Err(UrlError::NotAUrl));
        assert_eq!(url("not a url"), Err(UrlError::NotAUrl));
    }

    #[test]
    fn a_non_public_address_literal_is_rejected() {
        for bad in [
            "http://127.0.0.1/",
            "http://169.254.169.254/latest/meta-data",
            "http://10.0.0.5/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://0x7f.1/",
            "http://2130706433/",
        ] {
            assert!(
                matches!(url(bad), Err(UrlError::AddressNotAllowed(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn an_allowed_network_admits_its_address_literals() {
        let loopback = AllowedNetworks::loopback();
        assert!(UpstreamUrl::parse("http://127.0.0.1:9000/mcp", &loopback).is_ok());
        assert!(UpstreamUrl::parse("http://[::1]:9000/mcp", &loopback).is_ok());
        assert!(UpstreamUrl::parse("http://10.0.0.1/", &loopback).is_err());
    }

    #[test]
    fn a_host_name_is_left_to_the_resolver() {
        let parsed = url("https://localhost:8443/mcp").expect("syntax is fine");
        assert_eq!(parsed.host(), UpstreamHost::Name("localhost".into()));
        assert_eq!(parsed.port(), 8443);
    }

    #[test]
    fn a_header_name_must_be_an_http_token() {
        assert!(HeaderName::parse("Authorization").is_ok());
        assert!(HeaderName::parse("X-Api-Key").is_ok());
        for bad in ["", "Bad Header", "a:b", "ä", "a\r\nb"] {
            assert_eq!(
                HeaderName::parse(bad),
                Err(HeaderError::InvalidName),
                "{bad}"
            );
        }
    }

    #[test]
    fn headers_cola_controls_are_rejected_in_any_case() {
        for reserved in [
            "Host",
            "content-length",
            "Transfer-Encoding",
            "Connection",
            "Content-Type",
            "Accept",
            "Mcp-Session-Id",
            "MCP-Protocol-Version",
            "mcp-method",
            "X-Cola-Identity",
            "Upgrade",
            "Last-Event-ID",
        ] {
            assert_eq!(
                HeaderName::parse(reserved),
                Err(HeaderError::Reserved),
                "{reserved}"
            );
        }
    }

    #[test]
    fn a_header_value_must_be_visible_ascii_without_outer_whitespace() {
        assert!(UpstreamSecret::parse("Bearer abc.def".into()).is_ok());
        for bad in ["", " lead", "trail ", "a\nb", "é", "a\u{0}b"] {
            assert_eq!(
                UpstreamSecret::parse(bad.into()),
                Err(HeaderError::InvalidValue),
                "{bad:?}"
            );
        }
        assert!(UpstreamSecret::parse("x".repeat(MAX_HEADER_VALUE_BYTES + 1)).is_err());
    }

    #[test]
    fn a_header_value_never_prints_itself() {
        let secret = UpstreamSecret::parse("Bearer hunter2".into()).expect("valid");
        assert_eq!(format!("{secret:?}"), "[redacted]");
        let headers =
            UpstreamHeaders::parse(vec![("Authorization".into(), "Bearer hunter2".into())])
                .expect("valid");
        assert!(!format!("{headers:?}").contains("hunter2"));
    }

    #[test]
    fn more_than_twenty_headers_are_rejected() {
        let many = (0..21)
            .map(|i| (format!("X-H{i}"), "v".to_owned()))
            .collect();
        let errors = UpstreamHeaders::parse(many).expect_err("too many");
        assert_eq!(errors, vec![(None, HeaderError::TooMany)]);
    }

    #[test]
    fn a_header_given_twice_in_any_case_is_rejected() {
        let errors = UpstreamHeaders::parse(vec![
            ("X-Token".into(), "a".into()),
            ("x-token".into(), "b".into()),
        ])
        .expect_err("duplicate");
        assert_eq!(
            errors,
            vec![(Some("x-token".into()), HeaderError::Duplicate)]
        );
    }

    #[test]
    fn a_timeout_is_one_to_three_hundred_seconds() {
        assert_eq!(ServerTimeout::default().secs(), 30);
        assert!(ServerTimeout::from_secs(1).is_ok());
        assert!(ServerTimeout::from_secs(300).is_ok());
        assert_eq!(ServerTimeout::from_secs(0), Err(TimeoutError));
        assert_eq!(ServerTimeout::from_secs(301), Err(TimeoutError));
        assert_eq!(ServerTimeout::from_secs(-5), Err(TimeoutError));
    }

    fn registered() -> (RegisteredServer, ServerEvent) {
        RegisteredServer::register(
            NewServer {
                id: ServerId::from_uuid(Uuid::from_u128(7)),
                tenant_id: TenantId::from_uuid(Uuid::from_u128(1)),
                slug: ServerSlug::parse("github").expect("slug"),
                name: KeyName::parse("GitHub tools").expect("name"),
                url: Some(url("https://mcp.example.com/mcp").expect("url")),
                header_names: vec![HeaderName::parse("Authorization").expect("name")],
                forward_identity: false,
                timeout: ServerTimeout::default(),
            },
            UserId::from_uuid(Uuid::from_u128(2)),
            Utc::now(),
        )
    }

    #[test]
    fn registering_records_the_server_without_header_values() {
        let (server, event) = registered();
        assert_eq!(event.kind, ServerEventKind::Created);
        assert_eq!(event.server_id, server.id());
        assert_eq!(event.data["header_names"], json!(["Authorization"]));
        assert_eq!(event.data["slug"], "github");
    }

    #[test]
    fn an_update_names_only_what_changed_and_none_when_nothing_did() {
        let (mut server, _) = registered();
        let actor = UserId::from_uuid(Uuid::from_u128(2));
        let same = ServerChanges {
            name: Some(server.name().clone()),
            timeout: Some(server.timeout()),
            ..ServerChanges::default()
        };
        assert!(server.update(same, actor, Utc::now()).is_none());
        let changed = ServerChanges {
            timeout: ServerTimeout::from_secs(60).ok(),
            header_names: Some(vec![]),
            ..ServerChanges::default()
        };
        let event = server.update(changed, actor, Utc::now()).expect("a change");
        assert_eq!(event.kind, ServerEventKind::Updated);
        assert_eq!(
            event.data,
            json!({ "timeout_secs": 60, "header_names": [] })
        );
        assert_eq!(server.timeout().secs(), 60);
    }

    #[test]
    fn event_names_round_trip() {
        for kind in ServerEventKind::ALL {
            assert_eq!(ServerEventKind::parse(kind.as_str()), Some(kind));
        }
    }

    proptest! {
        #[test]
        fn parsing_arbitrary_input_never_panics(text in "\\PC{0,60}") {
            let _ = ServerSlug::parse(&text);
            let _ = HeaderName::parse(&text);
            let _ = UpstreamSecret::parse(text.clone());
            let _ = UpstreamUrl::parse(&text, &AllowedNetworks::default());
        }

        #[test]
        fn every_accepted_slug_is_of_the_slug_alphabet(text in "[a-z0-9_-]{0,45}") {
            if let Ok(slug) = ServerSlug::parse(&text) {
                prop_assert!(slug.as_str().len() <= 40 && !slug.as_str().contains('_'));
            }
        }
    }
}
