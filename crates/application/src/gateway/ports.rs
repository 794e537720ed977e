//! What the gateway use case needs from outside, in its own terms: an
//! upstream to send a message to (no HTTP client's types), a signer of
//! identity assertions, and a sealer of the ids Cola hands to clients in
//! place of an upstream's. The infrastructure implements them.

use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use cola_domain::{ApiKeyId, ServerId, TenantId, UpstreamUrl};
use futures_util::{Stream, StreamExt};
use serde::Serialize;
use thiserror::Error;
use zeroize::Zeroizing;

type Source = Box<dyn std::error::Error + Send + Sync>;

/// The HTTP method of a request to an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamMethod {
    Post,
    Get,
    Delete,
}

/// One header of a request to an upstream. `sensitive` ones (the server's
/// own credentials, the identity assertion) are never shown by the client's
/// debug output.
#[derive(Clone, PartialEq, Eq)]
pub struct UpstreamHeader {
    /// Lowercase.
    pub name: String,
    pub value: Vec<u8>,
    pub sensitive: bool,
}

impl std::fmt::Debug for UpstreamHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let value = if self.sensitive {
            "[redacted]".to_owned()
        } else {
            String::from_utf8_lossy(&self.value).into_owned()
        };
        write!(f, "{}: {value}", self.name)
    }
}

impl UpstreamHeader {
    #[must_use]
    pub fn new(name: &str, value: &[u8]) -> Self {
        Self {
            name: name.to_ascii_lowercase(),
            value: value.to_vec(),
            sensitive: false,
        }
    }

    #[must_use]
    pub fn sensitive(name: &str, value: &[u8]) -> Self {
        Self {
            sensitive: true,
            ..Self::new(name, value)
        }
    }
}

/// A request to an upstream: everything it carries is chosen by the
/// gateway; nothing of the client's request is copied implicitly.
#[derive(Debug)]
pub struct UpstreamCall<'a> {
    pub method: UpstreamMethod,
    pub url: &'a UpstreamUrl,
    pub headers: Vec<UpstreamHeader>,
    pub body: Option<Vec<u8>>,
    /// Until the upstream starts answering.
    pub timeout: Duration,
}

/// An answer's body as it arrives.
pub type AnswerBody = Pin<Box<dyn Stream<Item = Result<Bytes, UpstreamFailure>> + Send>>;

/// An upstream's answer: its status, what of its headers the gateway reads,
/// and a body read as it arrives.
pub struct UpstreamAnswer {
    pub status: u16,
    /// The media type, lowercased, without parameters (empty when none).
    pub content_type: String,
    /// The upstream's `Mcp-Session-Id`, when it is text.
    pub session_id: Option<String>,
    /// Whether it sent an `Mcp-Session-Id` at all (text or not).
    pub has_session_header: bool,
    pub body: AnswerBody,
}

impl std::fmt::Debug for UpstreamAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamAnswer")
            .field("status", &self.status)
            .field("content_type", &self.content_type)
            .finish_non_exhaustive()
    }
}

impl UpstreamAnswer {
    /// The whole body, refused once it passes `limit` bytes.
    ///
    /// # Errors
    /// [`ReadBodyError::TooLarge`] past the limit, or the upstream failing
    /// mid-body.
    pub async fn read_to_limit(self, limit: usize) -> Result<Vec<u8>, ReadBodyError> {
        let mut body = Vec::new();
        let mut stream = self.body;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(ReadBodyError::Upstream)?;
            if body.len() + chunk.len() > limit {
                return Err(ReadBodyError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

#[derive(Debug, Error)]
pub enum ReadBodyError {
    #[error("the upstream's answer is larger than allowed")]
    TooLarge,
    #[error("the upstream's answer broke off")]
    Upstream(#[source] UpstreamFailure),
}

/// Why an upstream request failed.
#[derive(Debug, Error)]
pub enum UpstreamFailure {
    /// The host resolves to no address the policy allows, or the URL's own
    /// address is refused.
    #[error("the upstream's address is not allowed")]
    AddressRefused,
    /// No connection, or it broke before (or while) the answer came.
    #[error("the upstream could not be reached")]
    Unreachable(#[source] Source),
    /// No answer began within the server's timeout.
    #[error("the upstream did not answer in time")]
    Timeout,
    /// The request could not be built (a URL or header the client refuses).
    #[error("the upstream request could not be built")]
    Invalid(#[source] Source),
}

/// Sends messages to tenants' MCP servers.
#[async_trait]
pub trait Upstream: Send + Sync + std::fmt::Debug {
    /// Sends `call`; returns once the upstream's status and headers have
    /// arrived (its body then streams).
    async fn send(&self, call: UpstreamCall<'_>) -> Result<UpstreamAnswer, UpstreamFailure>;
}

/// The claims of one identity assertion (`X-Cola-Identity`).
#[derive(Debug, Clone, Serialize)]
pub struct IdentityClaims<'a> {
    /// `COLA_PUBLIC_URL`.
    pub iss: &'a str,
    /// `COLA_PUBLIC_URL/mcp/{slug}`: the one server it is meant for.
    pub aud: &'a str,
    /// The key owner's user id.
    pub sub: uuid::Uuid,
    pub tenant_id: uuid::Uuid,
    /// The registered server's id: slugs repeat across tenants, so a
    /// verifier checks this (and `tenant_id`), not only `aud`.
    pub server_id: uuid::Uuid,
    pub key_id: uuid::Uuid,
    pub key_prefix: &'a str,
    pub iat: i64,
    pub exp: i64,
    /// New for every request, so a server can refuse a replay.
    pub jti: uuid::Uuid,
}

/// Signs identity assertions.
pub trait IdentityAsserter: Send + Sync + std::fmt::Debug {
    /// The signed JWT of `claims`.
    ///
    /// # Errors
    /// When the key cannot sign.
    fn assert_identity(&self, claims: &IdentityClaims<'_>) -> Result<String, Source>;
}

/// Who an id handed to a client belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding {
    pub tenant: TenantId,
    pub key: ApiKeyId,
    pub server: ServerId,
}

impl Binding {
    /// As associated data of a sealed id.
    #[must_use]
    pub fn associated_data(&self) -> [u8; 48] {
        let mut data = [0u8; 48];
        data[..16].copy_from_slice(self.tenant.as_uuid().as_bytes());
        data[16..32].copy_from_slice(self.key.as_uuid().as_bytes());
        data[32..].copy_from_slice(self.server.as_uuid().as_bytes());
        data
    }
}

/// What a sealed id stands for: each kind opens only as itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandleKind {
    /// An upstream's `Mcp-Session-Id`; sealed afresh each time.
    Session,
    /// An upstream's task id; always the same box for the same task, since a
    /// client follows a task by its id.
    Task,
}

/// Seals the ids an upstream gives into ids of Cola's own, bound to the
/// key and server they were given for.
pub trait HandleSealer: Send + Sync + std::fmt::Debug {
    /// `plaintext` sealed for `kind`, bound to `associated`; `None` when it
    /// cannot be.
    fn seal_handle(&self, kind: HandleKind, associated: &[u8], plaintext: &[u8])
    -> Option<Vec<u8>>;

    /// What [`HandleSealer::seal_handle`] sealed with the same kind and
    /// associated data; `None` for anything else.
    fn open_handle(
        &self,
        kind: HandleKind,
        associated: &[u8],
        sealed: &[u8],
    ) -> Option<Zeroizing<Vec<u8>>>;
}
