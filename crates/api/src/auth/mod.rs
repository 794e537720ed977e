//! Management authentication: the JWT verifier (pinned key or the
//! provider's JWKS), the mapping of a token's claims to a principal, and the
//! `Caller` extractor that reads a bearer JWT or the console's session.

pub(crate) mod caller;
pub(crate) mod jwks;
pub(crate) mod jwt;

pub(crate) use caller::{Caller, ManagementAuth};
pub(crate) use jwt::JwtVerifier;
