//! The verify API's use case (docs/verify.md): a tenant's own MCP server, named
//! by its verification token, asks whether a key may be used on it — from
//! the end client's address, for one tool, resource or prompt or none.
//!
//! The key goes through the one admission step of every surface
//! ([`KeyAdmission`]): the same failure limit (charged to the calling server,
//! never to the address it names), the same authenticator and verified-key
//! cache as `/mcp`, the key's own rate limit, and one counted use — for a
//! `VALID` only. What it may use is decided by the one scope check
//! (`ApiKeyPermissions::scope_on`) that `/mcp` and the gateway ask too.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use cola_domain::{
    NamePattern, RegisteredServer, ResourcePattern, ServerId, ServerSlug, ServerToken, Surface,
    TenantId,
};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::admission::{Charge, Denied, KeyAdmission};
use crate::auth::{Admission, AuthFailure, Refusal};
use crate::error::FieldErrors;
use crate::ports::{RepositoryError, ServerRepository, TokenDigest};

/// The longest a `VALID` may be reused by the server that asked: well
/// inside the two seconds in which a revocation reaches every instance.
pub const MAX_ANSWER_REUSE: Duration = Duration::from_millis(1000);
/// How long this instance trusts a token → server lookup. Minting a new
/// token or deleting the server forgets every entry at once on the
/// instance that did it; other instances follow within this bound.
pub const TOKEN_LOOKUP_TTL: Duration = Duration::from_secs(1);
const MAX_CACHED_TOKENS: u64 = 10_000;

/// The server a verification token named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallingServer {
    pub tenant_id: TenantId,
    pub id: ServerId,
    pub slug: ServerSlug,
}

impl CallingServer {
    fn of(server: &RegisteredServer) -> Self {
        Self {
            tenant_id: server.tenant_id(),
            id: server.id(),
            slug: server.slug().clone(),
        }
    }
}

/// Why a server token was not accepted.
#[derive(Debug, Error)]
pub enum TokenRefusal {
    /// Missing, malformed, or no server's current token.
    #[error("a valid server verification token is required")]
    Invalid,
    #[error("the server token cannot be checked right now")]
    Unavailable(#[source] Arc<RepositoryError>),
}

/// Verification tokens → the servers they name, with a short cache so the
/// verify API's hot path costs a digest and a map lookup. When an entry
/// expires, the requests that find it gone wait for one lookup instead of
/// each asking the database at once.
pub struct ServerTokens {
    repository: Arc<dyn ServerRepository>,
    cache: moka::future::Cache<TokenDigest, Option<Arc<CallingServer>>>,
}

impl std::fmt::Debug for ServerTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTokens")
            .field("cached", &self.cache.entry_count())
            .finish_non_exhaustive()
    }
}

impl ServerTokens {
    #[must_use]
    pub fn new(repository: Arc<dyn ServerRepository>) -> Self {
        Self::with_ttl(repository, TOKEN_LOOKUP_TTL)
    }

    /// As [`Self::new`], trusting a lookup for `ttl` (tests that must not
    /// race the expiry).
    #[must_use]
    pub(crate) fn with_ttl(repository: Arc<dyn ServerRepository>, ttl: Duration) -> Self {
        Self {
            repository,
            cache: moka::future::Cache::builder()
                .max_capacity(MAX_CACHED_TOKENS)
                .time_to_live(ttl)
                .build(),
        }
    }

    /// The server `presented` names. Junk (no `colasrv_` token with a good
    /// checksum) is refused without a lookup.
    pub async fn authenticate(
        &self,
        presented: Option<&str>,
    ) -> Result<Arc<CallingServer>, TokenRefusal> {
        let token = presented
            .and_then(|text| ServerToken::parse(text).ok())
            .ok_or(TokenRefusal::Invalid)?;
        let digest = TokenDigest::of(&token);
        let repository = &self.repository;
        self.cache
            .try_get_with(digest, async move {
                repository
                    .find_by_token(&digest)
                    .await
                    .map(|found| found.map(|server| Arc::new(CallingServer::of(&server))))
            })
            .await
            .map_err(TokenRefusal::Unavailable)?
            .ok_or(TokenRefusal::Invalid)
    }

    /// Forgets every lookup (a token was minted or a server deleted; see
    /// [`crate::CacheInvalidation`]).
    pub(crate) fn forget_all(&self) {
        self.cache.invalidate_all();
    }
}

/// `POST /api/mcp/verify`. Exactly one of `tool`, `resource` and `prompt`,
/// or none to ask about the key alone.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// The `cola_` key the end client presented. Anything is accepted: a
    /// string that is not a key is `NOT_FOUND`.
    pub key: String,
    /// The end client's IP address, checked against the key's allow-list.
    /// Leaving it out passes only a key without one.
    #[serde(default)]
    pub client_ip: Option<String>,
    /// A tool the client wants to call.
    #[serde(default)]
    pub tool: Option<String>,
    /// A resource URI the client wants to read or subscribe to.
    #[serde(default)]
    pub resource: Option<String>,
    /// A prompt the client wants to get.
    #[serde(default)]
    pub prompt: Option<String>,
    /// With `tool`: whether the server annotates the tool `readOnlyHint`.
    /// Given, the key's flags apply as at the gateway (read-only tools need
    /// `read`, any other `write`); left out, only the tool's name is checked
    /// and the flags are in the answer's `permissions`.
    #[serde(default)]
    pub read_only: Option<bool>,
}

/// What the asking server wants the key for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyTarget {
    Tool {
        name: String,
        read_only: Option<bool>,
    },
    Resource(String),
    Prompt(String),
}

/// A checked [`VerifyRequest`].
#[derive(Debug, Clone)]
pub struct VerifyCommand {
    pub key: String,
    pub client_ip: Option<IpAddr>,
    pub target: Option<VerifyTarget>,
}

impl VerifyRequest {
    /// The command, or every bad field named.
    pub fn into_command(self) -> Result<VerifyCommand, FieldErrors> {
        let mut errors = FieldErrors::default();
        let client_ip = match self.client_ip.as_deref().map(str::trim) {
            None => None,
            Some(text) => match text.parse::<IpAddr>() {
                Ok(address) => Some(address),
                Err(_) => {
                    errors.add("client_ip", "must be an IPv4 or IPv6 address");
                    None
                }
            },
        };
        let named = [
            ("tool", &self.tool),
            ("resource", &self.resource),
            ("prompt", &self.prompt),
        ];
        let given: Vec<&str> = named
            .iter()
            .filter(|(_, value)| value.is_some())
            .map(|(field, _)| *field)
            .collect();
        if given.len() > 1 {
            for field in &given {
                errors.add(*field, "give at most one of tool, resource and prompt");
            }
        }
        for (field, value) in named {
            if value.as_deref().is_some_and(str::is_empty) {
                errors.add(field, "must not be empty");
            }
        }
        if self.read_only.is_some() && self.tool.is_none() {
            errors.add(
                "read_only",
                "is the annotation of a tool: give it with tool",
            );
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let target = match (self.tool, self.resource, self.prompt) {
            (Some(name), _, _) => Some(VerifyTarget::Tool {
                name,
                read_only: self.read_only,
            }),
            (_, Some(uri), _) => Some(VerifyTarget::Resource(uri)),
            (_, _, Some(name)) => Some(VerifyTarget::Prompt(name)),
            _ => None,
        };
        Ok(VerifyCommand {
            key: self.key,
            client_ip,
            target,
        })
    }
}

/// The answer's `code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum VerifyCode {
    Valid,
    /// Unknown, malformed, wrong secret, or another tenant's key.
    NotFound,
    Revoked,
    Expired,
    /// Outside the key's allow-list, or no `client_ip` for a key with one.
    IpDenied,
    /// No grant for this server, or the tool, resource or prompt is hidden.
    NotGranted,
    /// Over the key's rate limit or the address's failure limit (a 429).
    RateLimited,
}

impl VerifyCode {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Valid => "VALID",
            Self::NotFound => "NOT_FOUND",
            Self::Revoked => "REVOKED",
            Self::Expired => "EXPIRED",
            Self::IpDenied => "IP_DENIED",
            Self::NotGranted => "NOT_GRANTED",
            Self::RateLimited => "RATE_LIMITED",
        }
    }
}

/// The key's flags and its grant on the asking server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct GrantedPermissions {
    pub read: bool,
    pub write: bool,
    /// `null` = every tool the flags allow.
    pub allowed_tools: Option<Vec<String>>,
    pub allowed_resources: Option<Vec<String>>,
    pub allowed_prompts: Option<Vec<String>>,
}

/// The verify API's 200 answer: `valid` and `code`, and for `VALID` the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct VerifyView {
    pub valid: bool,
    pub code: VerifyCode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub key_prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permissions: Option<GrantedPermissions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// How long, in milliseconds, this answer may be reused (at most 1000,
    /// never past `expires_at`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_ttl_ms: Option<u64>,
}

impl VerifyView {
    /// An answer that is not `VALID`.
    #[must_use]
    pub fn refused(code: VerifyCode) -> Self {
        Self {
            valid: false,
            code,
            key_id: None,
            key_prefix: None,
            tenant_id: None,
            user_id: None,
            permissions: None,
            expires_at: None,
            cache_ttl_ms: None,
        }
    }
}

/// A `VALID` decision, not yet counted as a use.
#[derive(Debug, Clone)]
pub struct ValidKey {
    pub admission: Admission,
    pub view: VerifyView,
}

/// How a verification ended.
#[derive(Debug, Clone)]
pub enum Verification {
    /// `VALID`, its use counted.
    Valid(ValidKey),
    Refused {
        code: VerifyCode,
        /// For the log line: the key's public prefix when well-formed.
        refusal: Option<Refusal>,
    },
    /// `RATE_LIMITED` (429): the key's own rate limit, or the calling
    /// server's failure limit.
    RateLimited {
        /// The key's own limit (`true`), or too many failures (`false`).
        by_key: bool,
        retry_after_secs: u64,
        /// For the log line: the key's public prefix when well-formed.
        refusal: Option<Refusal>,
    },
}

#[derive(Debug, Error)]
pub enum VerifyError {
    #[error("key verification capacity is exhausted")]
    Saturated,
    #[error("the key cannot be verified right now")]
    Unavailable,
}

/// Decides verify requests.
pub struct KeyVerifier {
    admission: Arc<KeyAdmission>,
    /// How long a `VALID` may be reused: [`MAX_ANSWER_REUSE`], or less when
    /// the operator keeps verified keys in memory for less.
    answer_reuse: Duration,
}

impl std::fmt::Debug for KeyVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyVerifier")
            .field("answer_reuse", &self.answer_reuse)
            .finish_non_exhaustive()
    }
}

impl KeyVerifier {
    /// `auth_cache_ttl` is `COLA_AUTH_CACHE_TTL_SECS`: an operator who keeps
    /// verified keys in memory for less than [`MAX_ANSWER_REUSE`] (or not at
    /// all) gets answers reused for no longer.
    #[must_use]
    pub fn new(admission: Arc<KeyAdmission>, auth_cache_ttl: Duration) -> Self {
        Self {
            admission,
            answer_reuse: auth_cache_ttl.min(MAX_ANSWER_REUSE),
        }
    }

    /// Decides whether `command.key` may be used on `server`, which calls
    /// from `caller` and pays for the attempt (its token and that address;
    /// never the `client_ip` it names, which only the key's allow-list is
    /// checked against). A `VALID` counts one use of the key.
    pub async fn verify(
        &self,
        server: &CallingServer,
        caller: IpAddr,
        command: &VerifyCommand,
    ) -> Result<Verification, VerifyError> {
        let charge = Charge::Server {
            server: server.id,
            address: caller,
        };
        let verified = match self
            .admission
            .verify(Some(&command.key), command.client_ip, charge)
            .await
        {
            Ok(verified) => verified,
            Err(refusal) => return self.refused(server, charge, refusal),
        };
        let key = verified.admission().principal.key();
        if key.tenant_id != server.tenant_id {
            // Another tenant's key is answered, and counted, as an unknown one.
            let refusal = Refusal {
                prefix: Some(key.prefix.clone()),
                ..Refusal::of(AuthFailure::Unknown)
            };
            return Ok(self.failed(charge, refusal));
        }
        let not_granted = Verification::Refused {
            code: VerifyCode::NotGranted,
            refusal: None,
        };
        let Some(scope) = key.permissions.scope_on(Surface::Server(server.id)) else {
            return Ok(not_granted);
        };
        let allowed = match &command.target {
            None => true,
            Some(VerifyTarget::Tool {
                name,
                read_only: Some(read_only),
            }) => scope.may_use_tool(name, *read_only),
            Some(VerifyTarget::Tool {
                name,
                read_only: None,
            }) => scope.may_use_tool_named(name),
            Some(VerifyTarget::Resource(uri)) => scope.may_read_resource(uri),
            Some(VerifyTarget::Prompt(name)) => scope.may_get_prompt(name),
        };
        if !allowed {
            return Ok(not_granted);
        }
        let view = self.valid_view(verified.admission(), server.id);
        match verified.commit() {
            Ok(admission) => Ok(Verification::Valid(ValidKey { admission, view })),
            Err(Denied::RateLimited {
                admission,
                retry_after_secs,
            }) => Ok(Verification::RateLimited {
                by_key: true,
                retry_after_secs,
                refusal: Some(Refusal {
                    prefix: Some(admission.principal.key().prefix.clone()),
                    ..Refusal::of(AuthFailure::Unknown)
                }),
            }),
            Err(Denied::Refused(refusal)) => self.refused(server, charge, refusal),
        }
    }

    /// The answer for a key the admission refused. A revoked, expired or
    /// address-refused key of another tenant is `NOT_FOUND`, like any key
    /// the asking server's tenant does not have, and counts as a failure
    /// like one.
    fn refused(
        &self,
        server: &CallingServer,
        charge: Charge,
        refusal: Refusal,
    ) -> Result<Verification, VerifyError> {
        let ours = refusal.tenant == Some(server.tenant_id);
        let code = match refusal.reason {
            AuthFailure::Saturated => return Err(VerifyError::Saturated),
            AuthFailure::Unavailable => return Err(VerifyError::Unavailable),
            AuthFailure::TooManyAttempts(wait) => {
                return Ok(Verification::RateLimited {
                    by_key: false,
                    retry_after_secs: wait.retry_after_secs,
                    refusal: Some(refusal),
                });
            }
            AuthFailure::Revoked if ours => VerifyCode::Revoked,
            AuthFailure::Expired if ours => VerifyCode::Expired,
            AuthFailure::IpDenied if ours => VerifyCode::IpDenied,
            // The admission counted bad credentials already; another
            // tenant's key refused for its address is counted here.
            AuthFailure::IpDenied => return Ok(self.failed(charge, refusal)),
            // Listed, not caught by `_`: a new kind of refusal must be
            // given its answer here.
            AuthFailure::Missing
            | AuthFailure::Malformed
            | AuthFailure::Unknown
            | AuthFailure::WrongSecret
            | AuthFailure::Revoked
            | AuthFailure::Expired => VerifyCode::NotFound,
        };
        Ok(Verification::Refused {
            code,
            refusal: Some(refusal),
        })
    }

    /// `NOT_FOUND` for a key that the admission did not count as a failure,
    /// counted now; past the limit, `RATE_LIMITED`.
    fn failed(&self, charge: Charge, refusal: Refusal) -> Verification {
        match self.admission.attempts().record_failure(charge) {
            Ok(()) => Verification::Refused {
                code: VerifyCode::NotFound,
                refusal: Some(refusal),
            },
            Err(wait) => Verification::RateLimited {
                by_key: false,
                retry_after_secs: wait.retry_after_secs,
                refusal: Some(refusal),
            },
        }
    }

    fn valid_view(&self, admission: &Admission, server: ServerId) -> VerifyView {
        let key = admission.principal.key();
        let grant = key.permissions.grant_on(server);
        let names = |list: Option<&[NamePattern]>| {
            list.map(|patterns| patterns.iter().map(|p| p.as_str().to_owned()).collect())
        };
        let uris = |list: Option<&[ResourcePattern]>| {
            list.map(|patterns| patterns.iter().map(|p| p.as_str().to_owned()).collect())
        };
        let until_expiry = (key.expires_at - admission.at)
            .to_std()
            .unwrap_or(Duration::ZERO);
        let reuse = self.answer_reuse.min(until_expiry);
        VerifyView {
            valid: true,
            code: VerifyCode::Valid,
            key_id: Some(key.key_id.as_uuid()),
            key_prefix: Some(key.prefix.as_str().to_owned()),
            tenant_id: Some(key.tenant_id.as_uuid()),
            user_id: Some(key.owner.as_uuid()),
            permissions: Some(GrantedPermissions {
                read: key.permissions.read(),
                write: key.permissions.write(),
                allowed_tools: grant.and_then(|grant| names(grant.allowed_tools())),
                allowed_resources: grant.and_then(|grant| uris(grant.allowed_resources())),
                allowed_prompts: grant.and_then(|grant| names(grant.allowed_prompts())),
            }),
            expires_at: Some(key.expires_at),
            cache_ttl_ms: Some(u64::try_from(reuse.as_millis()).unwrap_or(u64::MAX)),
        }
    }
}
