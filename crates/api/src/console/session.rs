//! The console's session: a signed cookie that the REST API's `Caller`
//! accepts in place of `Authorization: Bearer`, with CSRF protection on
//! every state-changing request, naming a session stored in the database.
//!
//! The cookie carries the tenant, the user, the role, the session's random
//! id and its CSRF token, signed with HMAC-SHA256 under a key derived from
//! the configured secret (`COLA_JWT_SECRET`, or `COLA_OIDC_CLIENT_SECRET`
//! with a provider). Every request it authenticates also reads the session's
//! record ([`ConsoleSessionService::check`]), so a sign-out or an
//! offboarding ends it on every instance at once; a database that cannot be
//! read admits no one. A write with the cookie must also send the CSRF token
//! in `X-CSRF-Token` (the page reads it from `GET /console/session`) and an
//! `Origin` that is this service's.

use std::sync::Arc;

use actix_web::HttpRequest;
use actix_web::http::Method;
use actix_web::http::header::{COOKIE, HOST, ORIGIN};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use cola_application::{
    AppError, CONSOLE_SESSION_TTL, ConsoleSessionId, ConsoleSessionService, Principal, Role,
};
use cola_domain::{TenantId, UserId};
use hmac::{Hmac, Mac};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use uuid::Uuid;

type HmacSha256 = Hmac<Sha256>;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "cola_session";
/// How long a session lasts from sign-in, whatever the provider's tokens say.
pub const SESSION_TTL: chrono::Duration = CONSOLE_SESSION_TTL;
/// The header a state-changing request carries the session's CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// What a sealed value is for: a value sealed for one purpose never opens
/// as another (a sign-in flow cookie is not a session).
#[derive(Debug, Clone, Copy)]
pub enum Purpose {
    Session,
    SignIn,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Self::Session => b"session",
            Self::SignIn => b"sign-in",
        }
    }
}

/// Why a session cookie did not admit a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionRefusal {
    /// Not signed by this service, malformed, expired, or its session ended
    /// (signed out, offboarded, or made in another mode): as no session.
    Invalid,
    /// A write without the session's CSRF token or from another origin.
    Forged(&'static str),
    /// The session's record could not be read: no one is admitted (503).
    Unavailable,
}

/// A signed-in console user, as the cookie holds them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub tenant_id: Uuid,
    pub user_id: Uuid,
    pub role: SessionRole,
    pub expires_at: DateTime<Utc>,
    pub csrf_token: String,
    /// The stored session's id (its record holds only the digest). A
    /// cookie without one, from before sessions were stored, opens as
    /// nothing.
    pub session_id: String,
    /// Who signed in, for the page's header (the provider's `email` or
    /// `name`, or the user id).
    #[serde(default)]
    pub display_name: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SessionRole {
    Admin,
    Member,
}

impl Session {
    #[must_use]
    pub fn principal(&self) -> Principal {
        Principal {
            tenant_id: TenantId::from_uuid(self.tenant_id),
            user_id: UserId::from_uuid(self.user_id),
            role: match self.role {
                SessionRole::Admin => Role::Admin,
                SessionRole::Member => Role::Member,
            },
        }
    }

    fn id(&self) -> Option<ConsoleSessionId> {
        ConsoleSessionId::parse(&self.session_id)
    }
}

/// Why a session could not be started.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("the session could not be stored")]
    Stored(#[source] AppError),
    #[error("no OS randomness for the CSRF token, or the cookie could not be sealed")]
    Sealing,
}

impl IssueError {
    /// Whether the database was away (a retry may succeed).
    #[must_use]
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Stored(AppError::Unavailable(_)))
    }
}

/// Issues, opens and ends console sessions.
pub struct ConsoleSessions {
    key: [u8; 32],
    /// Whether cookies are `Secure` (the public URL is `https://`).
    secure: bool,
    /// `scheme://host[:port]` of `COLA_PUBLIC_URL`.
    public_origin: String,
    /// The stored sessions.
    store: Arc<ConsoleSessionService>,
}

impl std::fmt::Debug for ConsoleSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleSessions")
            .field("secure", &self.secure)
            .field("public_origin", &self.public_origin)
            .finish_non_exhaustive()
    }
}

impl ConsoleSessions {
    /// Sessions keyed by `secret` (never used as it is: a key of its own
    /// is derived, so a session signature is never a valid JWT signature)
    /// and stored through `store`.
    #[must_use]
    pub fn new(secret: &[u8], public_url: &str, store: Arc<ConsoleSessionService>) -> Self {
        let key = hmac_sha256(secret, b"cola console session key v1");
        let public_origin = url::Url::parse(public_url)
            .map(|url| url.origin().ascii_serialization())
            .unwrap_or_default();
        Self {
            key,
            secure: public_url.starts_with("https://"),
            public_origin,
            store,
        }
    }

    /// `value` as `<payload>.<signature>`, both base64url.
    pub fn seal<T: Serialize>(&self, purpose: Purpose, value: &T) -> Option<String> {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).ok()?);
        let signature = URL_SAFE_NO_PAD.encode(self.sign(purpose, payload.as_bytes()));
        Some(format!("{payload}.{signature}"))
    }

    /// What [`Self::seal`] sealed for `purpose`, if the signature holds.
    pub fn open<T: DeserializeOwned>(&self, purpose: Purpose, sealed: &str) -> Option<T> {
        let (payload, signature) = sealed.split_once('.')?;
        let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
        let expected = self.sign(purpose, payload.as_bytes());
        if !bool::from(expected.as_slice().ct_eq(signature.as_slice())) {
            return None;
        }
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
    }

    fn sign(&self, purpose: Purpose, payload: &[u8]) -> [u8; 32] {
        let mut message = purpose.label().to_vec();
        message.push(b'.');
        message.extend_from_slice(payload);
        hmac_sha256(&self.key, &message)
    }

    /// Starts a stored session for `principal`; the session and the
    /// `Set-Cookie` value that holds it.
    pub async fn issue(
        &self,
        principal: Principal,
        display_name: Option<String>,
    ) -> Result<(Session, String), IssueError> {
        let csrf_token = random_token().ok_or(IssueError::Sealing)?;
        let (id, stored) = self
            .store
            .start(principal.tenant_id, principal.user_id)
            .await
            .map_err(IssueError::Stored)?;
        let session = Session {
            tenant_id: principal.tenant_id.as_uuid(),
            user_id: principal.user_id.as_uuid(),
            role: match principal.role {
                Role::Admin => SessionRole::Admin,
                Role::Member => SessionRole::Member,
            },
            expires_at: stored.expires_at,
            csrf_token,
            session_id: id.expose().to_owned(),
            display_name,
        };
        let sealed = self
            .seal(Purpose::Session, &session)
            .ok_or(IssueError::Sealing)?;
        let cookie = self.cookie(
            SESSION_COOKIE,
            &sealed,
            "/",
            "Strict",
            SESSION_TTL.num_seconds(),
        );
        Ok((session, cookie))
    }

    /// A `Set-Cookie` value: always `HttpOnly`, `Secure` behind https.
    #[must_use]
    pub fn cookie(
        &self,
        name: &str,
        value: &str,
        path: &str,
        same_site: &str,
        max_age: i64,
    ) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!(
            "{name}={value}; Path={path}; HttpOnly; SameSite={same_site}; Max-Age={max_age}{secure}"
        )
    }

    /// The `Set-Cookie` value that removes the session.
    #[must_use]
    pub fn clear_session(&self) -> String {
        self.cookie(SESSION_COOKIE, "", "/", "Strict", 0)
    }

    #[must_use]
    pub fn has_cookie(&self, request: &HttpRequest) -> bool {
        cookie(request, SESSION_COOKIE).is_some()
    }

    /// The request's cookie, if this service signed it and it has not
    /// expired by its own account. Its stored session is not read: that is
    /// [`Self::session`].
    #[must_use]
    pub fn signed(&self, request: &HttpRequest, now: DateTime<Utc>) -> Option<Session> {
        let sealed = cookie(request, SESSION_COOKIE)?;
        let session: Session = self.open(Purpose::Session, &sealed)?;
        (session.expires_at > now).then_some(session)
    }

    /// The request's session, if its cookie is one of ours and its stored
    /// session is still open (not signed out, offboarded or expired, and
    /// made in this instance's mode).
    pub async fn session(&self, request: &HttpRequest) -> Result<Session, SessionRefusal> {
        let session = self
            .signed(request, Utc::now())
            .ok_or(SessionRefusal::Invalid)?;
        let id = session.id().ok_or(SessionRefusal::Invalid)?;
        let principal = session.principal();
        match self
            .store
            .check(principal.tenant_id, principal.user_id, &id)
            .await
        {
            Ok(Ok(_)) => Ok(session),
            Ok(Err(refusal)) => {
                tracing::info!(reason = %refusal, "console session refused");
                Err(SessionRefusal::Invalid)
            }
            Err(error) => {
                tracing::warn!(error = %cola_application::error_chain(&error), "console session could not be checked");
                Err(SessionRefusal::Unavailable)
            }
        }
    }

    /// The principal of a request authenticated by its session cookie. A
    /// request that may change something (any method but GET, HEAD and
    /// OPTIONS) must carry the session's CSRF token and a same-origin
    /// `Origin`.
    pub async fn principal(&self, request: &HttpRequest) -> Result<Principal, SessionRefusal> {
        let session = self.session(request).await?;
        self.check_write(request, &session)
            .map_err(SessionRefusal::Forged)?;
        Ok(session.principal())
    }

    /// A write needs the session's CSRF token and this origin (`Err` says
    /// what is wrong); a read does not.
    pub fn check_write(
        &self,
        request: &HttpRequest,
        session: &Session,
    ) -> Result<(), &'static str> {
        if matches!(
            *request.method(),
            Method::GET | Method::HEAD | Method::OPTIONS
        ) {
            return Ok(());
        }
        self.check_same_origin(request)?;
        let sent = request
            .headers()
            .get(CSRF_HEADER)
            .map(actix_web::http::header::HeaderValue::as_bytes)
            .ok_or("no X-CSRF-Token header")?;
        if !bool::from(sent.ct_eq(session.csrf_token.as_bytes())) {
            return Err("the X-CSRF-Token header is wrong");
        }
        Ok(())
    }

    /// Ends `session`'s stored session (sign-out), on every instance.
    pub async fn end(&self, session: &Session) -> Result<(), SessionRefusal> {
        let Some(id) = session.id() else {
            return Ok(());
        };
        match self
            .store
            .end(TenantId::from_uuid(session.tenant_id), &id)
            .await
        {
            Ok(_) => Ok(()),
            Err(error) => {
                tracing::warn!(error = %cola_application::error_chain(&error), "console session could not be ended");
                Err(SessionRefusal::Unavailable)
            }
        }
    }

    /// A write must say where it comes from, and that must be this service:
    /// its public origin, or the origin the request was addressed to.
    fn check_same_origin(&self, request: &HttpRequest) -> Result<(), &'static str> {
        let origin = request
            .headers()
            .get(ORIGIN)
            .and_then(|value| value.to_str().ok())
            .ok_or("no Origin header")?;
        if origin.eq_ignore_ascii_case(&self.public_origin) {
            return Ok(());
        }
        let host = request
            .headers()
            .get(HOST)
            .and_then(|value| value.to_str().ok());
        let origin_host = origin.split_once("://").map(|(_, authority)| authority);
        match (origin_host, host) {
            (Some(origin_host), Some(host)) if origin_host.eq_ignore_ascii_case(host) => Ok(()),
            _ => Err("the Origin is not this service's"),
        }
    }
}

/// The value of the request's cookie `name`.
#[must_use]
pub fn cookie(request: &HttpRequest, name: &str) -> Option<String> {
    request
        .headers()
        .get_all(COOKIE)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|header| header.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(found, _)| *found == name)
        .map(|(_, value)| value.trim().to_owned())
        .filter(|value| !value.is_empty())
}

/// 32 bytes from the OS CSPRNG, base64url.
#[must_use]
pub fn random_token() -> Option<String> {
    let mut bytes = [0u8; 32];
    rand::TryRngCore::try_fill_bytes(&mut rand::rngs::OsRng, &mut bytes).ok()?;
    Some(URL_SAFE_NO_PAD.encode(bytes))
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| <HmacSha256 as Mac>::new(&Default::default()));
    mac.update(message);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use actix_web::test::TestRequest;
    use async_trait::async_trait;
    use cola_application::{
        ConsoleSession, ConsoleSessionRepository, RepositoryError, SessionDigest, SystemClock,
    };

    /// Sessions in memory; `down` makes every call fail as an unreachable
    /// database does.
    #[derive(Default)]
    struct Memory {
        sessions: Mutex<HashMap<SessionDigest, ConsoleSession>>,
        down: AtomicBool,
    }

    impl Memory {
        fn check(&self) -> Result<(), RepositoryError> {
            if self.down.load(Ordering::SeqCst) {
                return Err(RepositoryError::Unavailable("connection refused".into()));
            }
            Ok(())
        }
    }

    #[async_trait]
    impl ConsoleSessionRepository for Memory {
        async fn insert(&self, session: &ConsoleSession) -> Result<(), RepositoryError> {
            self.check()?;
            self.sessions
                .lock()
                .expect("sessions")
                .insert(session.digest, session.clone());
            Ok(())
        }
        async fn find(
            &self,
            tenant: TenantId,
            digest: &SessionDigest,
        ) -> Result<Option<ConsoleSession>, RepositoryError> {
            self.check()?;
            Ok(self
                .sessions
                .lock()
                .expect("sessions")
                .get(digest)
                .filter(|session| session.tenant_id == tenant)
                .cloned())
        }
        async fn end(
            &self,
            tenant: TenantId,
            digest: &SessionDigest,
            now: DateTime<Utc>,
        ) -> Result<bool, RepositoryError> {
            self.check()?;
            let mut sessions = self.sessions.lock().expect("sessions");
            match sessions.get_mut(digest) {
                Some(session) if session.tenant_id == tenant && session.ended_at.is_none() => {
                    session.ended_at = Some(now);
                    Ok(true)
                }
                _ => Ok(false),
            }
        }
    }

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn sessions_on(memory: &Arc<Memory>, public_url: &str) -> ConsoleSessions {
        let store = ConsoleSessionService::new(
            Arc::clone(memory) as Arc<dyn ConsoleSessionRepository>,
            Arc::new(SystemClock),
            false,
        );
        ConsoleSessions::new(SECRET, public_url, Arc::new(store))
    }

    fn sessions(memory: &Arc<Memory>) -> ConsoleSessions {
        sessions_on(memory, "http://127.0.0.1:8080")
    }

    fn principal() -> Principal {
        Principal {
            tenant_id: TenantId::from_uuid(Uuid::from_u128(1)),
            user_id: UserId::from_uuid(Uuid::from_u128(2)),
            role: Role::Admin,
        }
    }

    async fn issued(sessions: &ConsoleSessions) -> (Session, String) {
        let (session, set_cookie) = sessions.issue(principal(), None).await.expect("issued");
        let value = set_cookie.split(';').next().expect("pair").to_owned();
        (session, value)
    }

    fn get(cookie: &str) -> HttpRequest {
        TestRequest::get()
            .insert_header((COOKIE, cookie.to_owned()))
            .to_http_request()
    }

    #[actix_web::test]
    async fn the_cookie_is_http_only_and_same_site_strict_and_secure_behind_https() {
        let memory = Arc::new(Memory::default());
        let (_, cookie) = sessions(&memory)
            .issue(principal(), None)
            .await
            .expect("issued");
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
        assert!(!cookie.contains("Secure"));
        let https = sessions_on(&memory, "https://cola.example.com");
        let (_, cookie) = https.issue(principal(), None).await.expect("issued");
        assert!(cookie.ends_with("; Secure"), "{cookie}");
    }

    #[actix_web::test]
    async fn a_session_reads_back_as_its_principal_on_a_get() {
        let memory = Arc::new(Memory::default());
        let sessions = sessions(&memory);
        let (_, cookie) = issued(&sessions).await;
        assert_eq!(sessions.principal(&get(&cookie)).await, Ok(principal()));
    }

    #[actix_web::test]
    async fn the_cookie_names_a_stored_session_by_its_digest_alone() {
        let memory = Arc::new(Memory::default());
        let (session, _) = issued(&sessions(&memory)).await;
        let stored = memory.sessions.lock().expect("sessions").clone();
        assert_eq!(stored.len(), 1);
        let id = ConsoleSessionId::parse(&session.session_id).expect("an id");
        assert!(stored.contains_key(&id.digest()));
    }

    #[actix_web::test]
    async fn a_tampered_or_foreign_cookie_is_no_session() {
        let memory = Arc::new(Memory::default());
        let sessions = sessions(&memory);
        let (_, cookie) = issued(&sessions).await;
        let tampered = format!("{cookie}x");
        assert_eq!(
            sessions.principal(&get(&tampered)).await,
            Err(SessionRefusal::Invalid)
        );
        let store = ConsoleSessionService::new(
            Arc::clone(&memory) as Arc<dyn ConsoleSessionRepository>,
            Arc::new(SystemClock),
            false,
        );
        let other = ConsoleSessions::new(
            b"another secret, 32 bytes or more!",
            "http://127.0.0.1:8080",
            Arc::new(store),
        );
        assert_eq!(
            other.principal(&get(&cookie)).await,
            Err(SessionRefusal::Invalid)
        );
    }

    #[actix_web::test]
    async fn a_cookie_past_its_expiry_is_no_session() {
        let memory = Arc::new(Memory::default());
        let sessions = sessions(&memory);
        let (mut session, _) = issued(&sessions).await;
        session.expires_at = Utc::now() - chrono::Duration::seconds(1);
        let sealed = sessions.seal(Purpose::Session, &session).expect("sealed");
        let cookie = format!("{SESSION_COOKIE}={sealed}");
        assert_eq!(
            sessions.principal(&get(&cookie)).await,
            Err(SessionRefusal::Invalid)
        );
    }

    #[actix_web::test]
    async fn an_ended_session_is_no_session_whatever_its_cookie_says() {
        let memory = Arc::new(Memory::default());
        let sessions = sessions(&memory);
        let (session, cookie) = issued(&sessions).await;
        sessions.end(&session).await.expect("ended");
        assert_eq!(
            sessions.principal(&get(&cookie)).await,
            Err(SessionRefusal::Invalid)
        );
    }

    #[actix_web::test]
    async fn a_session_that_cannot_be_checked_admits_no_one() {
        let memory = Arc::new(Memory::default());
        let sessions = sessions(&memory);
        let (session, cookie) = issued(&sessions).await;
        memory.down.store(true, Ordering::SeqCst);
        assert_eq!(
            sessions.principal(&get(&cookie)).await,
            Err(SessionRefusal::Unavailable)
        );
        assert_eq!(
            sessions.end(&session).await,
            Err(SessionRefusal::Unavailable)
        );
    }

    #[actix_web::test]
    async fn a_sign_in_flow_value_never_opens_as_a_session() {
        let memory = Arc::new(Memory::default());
        let s = sessions(&memory);
        let (session, _) = issued(&s).await;
        let sealed = s.seal(Purpose::SignIn, &session).expect("sealed");
        assert!(s.open::<Session>(Purpose::Session, &sealed).is_none());
        assert!(s.open::<Session>(Purpose::SignIn, &sealed).is_some());
    }

    #[actix_web::test]
    async fn a_write_needs_the_csrf_token_and_this_origin() {
        let memory = Arc::new(Memory::default());
        let sessions = sessions(&memory);
        let (session, cookie) = issued(&sessions).await;
        let token = session.csrf_token.as_str();
        for (origin, csrf, admitted) in [
            (Some("http://127.0.0.1:8080"), Some(token), true),
            (Some("http://127.0.0.1:8080"), None, false),
            (Some("http://127.0.0.1:8080"), Some("wrong"), false),
            (Some("https://evil.example"), Some(token), false),
            (None, Some(token), false),
        ] {
            let mut request = TestRequest::post()
                .insert_header((COOKIE, cookie.clone()))
                .insert_header((HOST, "127.0.0.1:8080"));
            if let Some(origin) = origin {
                request = request.insert_header((ORIGIN, origin));
            }
            if let Some(csrf) = csrf {
                request = request.insert_header((CSRF_HEADER, csrf));
            }
            let outcome = sessions.principal(&request.to_http_request()).await;
            if admitted {
                assert_eq!(outcome, Ok(principal()));
            } else {
                assert!(
                    matches!(outcome, Err(SessionRefusal::Forged(_))),
                    "{origin:?} {csrf:?}: {outcome:?}"
                );
            }
        }
    }
}
