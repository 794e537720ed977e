//! `Authorization: Bearer <token>`, read one way for every credential Cola
//! takes: management JWTs, `cola_` keys and server verification tokens.

use actix_web::http::header::{AUTHORIZATION, HeaderMap};

/// The token of a `Bearer` authorization (scheme compared without regard to
/// case), trimmed; `None` for another scheme, or no token at all.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}
