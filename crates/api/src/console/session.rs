//! The console's session: a signed cookie that the REST API's `Caller`
//! accepts in place of `Authorization: Bearer`, with CSRF protection on
//! every state-changing request.
//!
//! The cookie carries the tenant, the user, the role, the expiry and the
//! session's CSRF token, signed with HMAC-SHA256 under a key derived from the
//! configured secret (`COLA_JWT_SECRET`, or `COLA_OIDC_CLIENT_SECRET` with a
//! provider). Instances that share the secret share the sessions, with no
//! state kept anywhere. A write with the cookie must also send the CSRF token
//! in `X-CSRF-Token` (the page reads it from `GET /console/session`) and an
//! `Origin` that is this service's.

use actix_web::HttpRequest;
use actix_web::http::Method;
use actix_web::http::header::{COOKIE, HOST, ORIGIN};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use cola_application::{Principal, Role};
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
pub const SESSION_TTL: chrono::Duration = chrono::Duration::hours(8);
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
    /// Not signed by this service, malformed, or expired: as no session.
    Invalid,
    /// A write without the session's CSRF token or from another origin.
    Forged(&'static str),
}

/// A signed-in console user, as the cookie holds them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub tenant_id: Uuid,
    pub user_id: Uuid,
    pub role: SessionRole,
    pub expires_at: DateTime<Utc>,
    pub csrf_token: String,
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
}

/// Issues and opens console sessions.
pub struct ConsoleSessions {
    key: [u8; 32],
    /// Whether cookies are `Secure` (the public URL is `https://`).
    secure: bool,
    /// `scheme://host[:port]` of `COLA_PUBLIC_URL`.
    public_origin: String,
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
    /// is derived, so a session signature is never a valid JWT signature).
    #[must_use]
    pub fn new(secret: &[u8], public_url: &str) -> Self {
        let key = hmac_sha256(secret, b"cola console session key v1");
        let public_origin = url::Url::parse(public_url)
            .map(|url| url.origin().ascii_serialization())
            .unwrap_or_default();
        Self {
            key,
            secure: public_url.starts_with("https://"),
            public_origin,
        }
    }

    #[must_use]
    pub fn secure(&self) -> bool {
        self.secure
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

    /// A new session for `principal`, and the `Set-Cookie` value that holds it.
    pub fn issue(
        &self,
        principal: Principal,
        display_name: Option<String>,
        now: DateTime<Utc>,
    ) -> Option<(Session, String)> {
        let session = Session {
            tenant_id: principal.tenant_id.as_uuid(),
            user_id: principal.user_id.as_uuid(),
            role: match principal.role {
                Role::Admin => SessionRole::Admin,
                Role::Member => SessionRole::Member,
            },
            expires_at: now + SESSION_TTL,
            csrf_token: random_token()?,
            display_name,
        };
        let sealed = self.seal(Purpose::Session, &session)?;
        let cookie = self.cookie(
            SESSION_COOKIE,
            &sealed,
            "/",
            "Strict",
            SESSION_TTL.num_seconds(),
        );
        Some((session, cookie))
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

    /// The request's unexpired session, if its cookie is one of ours.
    #[must_use]
    pub fn session(&self, request: &HttpRequest, now: DateTime<Utc>) -> Option<Session> {
        let sealed = cookie(request, SESSION_COOKIE)?;
        let session: Session = self.open(Purpose::Session, &sealed)?;
        (session.expires_at > now).then_some(session)
    }

    /// The principal of a request authenticated by its session cookie. A
    /// request that may change something (any method but GET, HEAD and
    /// OPTIONS) must carry the session's CSRF token and a same-origin
    /// `Origin`.
    pub fn principal(&self, request: &HttpRequest) -> Result<Principal, SessionRefusal> {
        let session = self
            .session(request, Utc::now())
            .ok_or(SessionRefusal::Invalid)?;
        if !matches!(
            *request.method(),
            Method::GET | Method::HEAD | Method::OPTIONS
        ) {
            self.check_same_origin(request)?;
            let sent = request
                .headers()
                .get(CSRF_HEADER)
                .map(actix_web::http::header::HeaderValue::as_bytes)
                .ok_or(SessionRefusal::Forged("no X-CSRF-Token header"))?;
            if !bool::from(sent.ct_eq(session.csrf_token.as_bytes())) {
                return Err(SessionRefusal::Forged("the X-CSRF-Token header is wrong"));
            }
        }
        Ok(session.principal())
    }

    /// A write must say where it comes from, and that must be this service:
    /// its public origin, or the origin the request was addressed to.
    pub fn check_same_origin(&self, request: &HttpRequest) -> Result<(), SessionRefusal> {
        let origin = request
            .headers()
            .get(ORIGIN)
            .and_then(|value| value.to_str().ok())
            .ok_or(SessionRefusal::Forged("no Origin header"))?;
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
            _ => Err(SessionRefusal::Forged("the Origin is not this service's")),
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
    use super::*;
    use actix_web::test::TestRequest;

    fn sessions() -> ConsoleSessions {
        ConsoleSessions::new(b"0123456789abcdef0123456789abcdef", "http://127.0.0.1:8080")
    }

    fn principal() -> Principal {
        Principal {
            tenant_id: TenantId::from_uuid(Uuid::from_u128(1)),
            user_id: UserId::from_uuid(Uuid::from_u128(2)),
            role: Role::Admin,
        }
    }

    fn issued() -> (Session, String) {
        let (session, set_cookie) = sessions()
            .issue(principal(), None, Utc::now())
            .expect("issued");
        let value = set_cookie.split(';').next().expect("pair").to_owned();
        (session, value)
    }

    #[test]
    fn the_cookie_is_http_only_and_same_site_strict_and_secure_behind_https() {
        let (_, cookie) = sessions()
            .issue(principal(), None, Utc::now())
            .expect("issued");
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
        assert!(!cookie.contains("Secure"));
        let https = ConsoleSessions::new(
            b"0123456789abcdef0123456789abcdef",
            "https://cola.example.com",
        );
        let (_, cookie) = https.issue(principal(), None, Utc::now()).expect("issued");
        assert!(cookie.ends_with("; Secure"), "{cookie}");
    }

    #[test]
    fn a_session_reads_back_as_its_principal_on_a_get() {
        let (_, cookie) = issued();
        let request = TestRequest::get()
            .insert_header((COOKIE, cookie))
            .to_http_request();
        assert_eq!(sessions().principal(&request), Ok(principal()));
    }

    #[test]
    fn a_tampered_or_foreign_cookie_is_no_session() {
        let (_, cookie) = issued();
        let tampered = format!("{cookie}x");
        let request = TestRequest::get()
            .insert_header((COOKIE, tampered))
            .to_http_request();
        assert_eq!(sessions().principal(&request), Err(SessionRefusal::Invalid));
        let other = ConsoleSessions::new(
            b"another secret, 32 bytes or more!",
            "http://127.0.0.1:8080",
        );
        let request = TestRequest::get()
            .insert_header((COOKIE, cookie))
            .to_http_request();
        assert_eq!(other.principal(&request), Err(SessionRefusal::Invalid));
    }

    #[test]
    fn an_expired_session_is_no_session() {
        let (_, set_cookie) = sessions()
            .issue(
                principal(),
                None,
                Utc::now() - SESSION_TTL - chrono::Duration::seconds(1),
            )
            .expect("issued");
        let cookie = set_cookie.split(';').next().expect("pair").to_owned();
        let request = TestRequest::get()
            .insert_header((COOKIE, cookie))
            .to_http_request();
        assert_eq!(sessions().principal(&request), Err(SessionRefusal::Invalid));
    }

    #[test]
    fn a_sign_in_flow_value_never_opens_as_a_session() {
        let s = sessions();
        let (session, _) = issued();
        let sealed = s.seal(Purpose::SignIn, &session).expect("sealed");
        assert!(s.open::<Session>(Purpose::Session, &sealed).is_none());
        assert!(s.open::<Session>(Purpose::SignIn, &sealed).is_some());
    }

    #[test]
    fn a_write_needs_the_csrf_token_and_this_origin() {
        let (session, cookie) = issued();
        let write = |origin: Option<&str>, csrf: Option<&str>| {
            let mut request = TestRequest::post()
                .insert_header((COOKIE, cookie.clone()))
                .insert_header((HOST, "127.0.0.1:8080"));
            if let Some(origin) = origin {
                request = request.insert_header((ORIGIN, origin));
            }
            if let Some(csrf) = csrf {
                request = request.insert_header((CSRF_HEADER, csrf));
            }
            sessions().principal(&request.to_http_request())
        };
        let token = session.csrf_token.as_str();
        assert_eq!(
            write(Some("http://127.0.0.1:8080"), Some(token)),
            Ok(principal())
        );
        assert!(matches!(
            write(Some("http://127.0.0.1:8080"), None),
            Err(SessionRefusal::Forged(_))
        ));
        assert!(matches!(
            write(Some("http://127.0.0.1:8080"), Some("wrong")),
            Err(SessionRefusal::Forged(_))
        ));
        assert!(matches!(
            write(Some("https://evil.example"), Some(token)),
            Err(SessionRefusal::Forged(_))
        ));
        assert!(matches!(
            write(None, Some(token)),
            Err(SessionRefusal::Forged(_))
        ));
    }
}
