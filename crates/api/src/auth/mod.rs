//! Management authentication: the JWT verifier (pinned key or the
//! provider's JWKS), the mapping of a token's claims to a principal, and the
//! `Caller` extractor that reads a bearer JWT or the console's session, and
//! the `Writer` extractor that also takes a management write from the
//! caller's write limit.

pub(crate) mod caller;
pub(crate) mod jwks;
pub(crate) mod jwt;
pub(crate) mod write_limit;

pub(crate) use caller::{Caller, ManagementAuth};
pub(crate) use jwt::JwtVerifier;
pub(crate) use write_limit::Writer;
