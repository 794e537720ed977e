//! Cola's use cases. The services here speak the domain's language, own the
//! ports (repository, hasher, clock) that infrastructure implements, and know
//! nothing of HTTP or SQL.

mod admission;
mod auth;
mod console;
mod dto;
mod error;
#[cfg(test)]
mod fakes;
mod gateway;
mod identity_provider;
mod invalidation;
pub mod limits;
mod mcp;
mod ports;
mod principal;
mod report;
mod servers;
mod service;
mod usage;
mod verify;

pub use admission::{
    Attempt, AttemptLimiter, Charge, Denied, KeyAdmission, KeyRateLimiter, MAX_TRACKED_KEYS, Party,
    TooManyAttempts, Verified,
};
pub use auth::{
    Admission, AuthFailure, AuthPath, FEED_FRESHNESS, KeyAuthenticator, KeyChanges, PresentedKeys,
    Refusal, VerifiedKeyCache,
};
pub use cola_domain::UpstreamSecret;
pub use console::{
    CONSOLE_SESSION_TTL, ConsoleSession, ConsoleSessionId, ConsoleSessionRefusal,
    ConsoleSessionRepository, ConsoleSessionService, SessionDigest,
};
pub use dto::{
    CreateKeyRequest, CreatedKeyView, EventList, EventView, GrantInput, KeyPage, KeyView,
    ListKeysQuery, MAX_GRACE_PERIOD_SECS, OffboardView, Patch, PermissionsInput,
    PermissionsPatchInput, RateLimitInput, ReportKeyRequest, RotateKeyRequest,
    UpdateMetadataRequest, UpdatePermissionsRequest, schema,
};
pub use error::{AppError, FieldErrors, chain as error_chain};
pub use gateway::{
    ASSERTION_LIFETIME_SECS, AnswerBody, Binding, CATALOGUE_REFETCH_INTERVAL,
    CATALOGUE_REFRESH_AFTER, CATALOGUE_TTL, CataloguePage, CatalogueTool, ClientHeaders, Closed,
    EventStream, Expected, FetchTurn, GatewayParts, GatewayService, HandleKind, HandleSealer,
    Handles, HeaderParam, Hidden, IdentityAsserter, IdentityClaims, InflightSlot, ListKind,
    MAX_LIST_ANSWER_BYTES, ReadBodyError, Relayed, Reply as GatewayReply, Route, TenantInflight,
    ToolCatalogue, ToolLookup, Unrelayable, Upstream, UpstreamAnswer, UpstreamCall,
    UpstreamFailure, UpstreamHeader, UpstreamId, UpstreamMethod, Verdict, answer as relayed_answer,
    authorise as authorise_gateway_message, may_see_notification, mirrored_param_allowed,
};
pub use identity_provider::{
    DocumentFetchError, KeySetFetcher, MAX_PROVIDER_DOCUMENT_BYTES, PendingSignIn, ProviderSignIn,
    SIGN_IN_TTL, SignInError, SignInStart, SignedIn,
};
pub use invalidation::{CacheInvalidation, CommittedChange, follow_access_changes};
pub use limits::{Limiter, Quota, RetryAfter, WriteLimiter};
pub use mcp::{
    BuiltinTool, KEY_URI_PREFIX, KeyResource, McpService, ReadResourceError, RevokedView,
    ToolFailure, ToolOutput, UnknownTool, WhoAmIView,
};
pub use ports::{
    ACCESS_CHANGE_WINDOW, AccessChange, ApiKeyRepository, Clock, CredentialSealer, Cursor,
    HashError, HeadersWrite, HostResolver, KeyListFilter, Offboarded, RecordedEvent,
    RepositoryError, ResolveError, SealError, SecretHash, SecretHasher, ServerRepository,
    StoredCredential, StoredServer, SystemClock, TokenDigest, USAGE_BATCH_RETENTION, UsageBatch,
    UsageDelta,
};
pub use principal::{AdmittedKey, McpPrincipal, Principal, Role};
pub use report::{KeyReports, ReportError, ReportOutcome, Reporter};
pub use servers::{
    CreateServerRequest, ListServersQuery, MAX_SERVERS_PER_TENANT, MintedTokenView, RESOLUTION_TTL,
    ResolvedServer, ServerDirectory, ServerLookupError, ServerPage, ServerService,
    ServerServiceParts, ServerView, UpdateServerRequest,
};
pub use service::{ApiKeyService, KeyPolicy};
pub use usage::UsageRecorder;
pub use verify::{
    CallingServer, GrantedPermissions, KeyVerifier, MAX_ANSWER_REUSE, ServerTokens,
    TOKEN_LOOKUP_TTL, TokenRefusal, ValidKey, Verification, VerifyCode, VerifyCommand, VerifyError,
    VerifyRequest, VerifyTarget, VerifyView,
};
