//! The application's error: what went wrong, in the use case's words.

use std::collections::BTreeMap;

use thiserror::Error;

use crate::ports::RepositoryError;

/// Field path → messages, e.g. `permissions.allowed_tools` → ["entry 2: …"].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldErrors(BTreeMap<String, Vec<String>>);

impl FieldErrors {
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.entry(field.into()).or_default().push(message.into());
    }

    #[must_use]
    pub fn single(field: impl Into<String>, message: impl Into<String>) -> Self {
        let mut errors = Self::default();
        errors.add(field, message);
        errors
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    #[must_use]
    pub fn fields(&self) -> &BTreeMap<String, Vec<String>> {
        &self.0
    }

    /// `Ok(())` when empty, the errors otherwise.
    pub fn into_field_errors(self) -> Result<(), Self> {
        if self.is_empty() { Ok(()) } else { Err(self) }
    }

    /// `Ok(())` when empty, so validation reads as `errors.into_result()?`.
    pub fn into_result(self) -> Result<(), AppError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(AppError::Invalid(self))
        }
    }
}

#[derive(Debug, Error)]
pub enum AppError {
    #[error("the input is invalid")]
    Invalid(FieldErrors),
    /// Also the answer for a key of another tenant, or another member's key:
    /// the caller cannot tell "not yours" from "does not exist".
    #[error("no such resource")]
    NotFound,
    #[error("the tenant already has a server with this slug")]
    SlugTaken,
    #[error("the user already has {max} active keys")]
    LimitReached { max: u32 },
    #[error("the tenant already has {max} servers")]
    ServerLimitReached { max: u32 },
    #[error("the key is revoked and can no longer be changed")]
    KeyRevoked,
    #[error("the key has expired")]
    KeyExpired,
    #[error("the key has already been rotated")]
    KeyAlreadyRotated,
    /// A concurrent change won (revoked, rotated or expired meanwhile).
    #[error("the key changed meanwhile")]
    KeyChanged,
    /// A member calling an admin-only route, or acting on another user (a
    /// member offboarding someone else). Keys themselves never answer this:
    /// not yours is `NotFound`.
    #[error("not allowed for this caller")]
    Forbidden,
    #[error("the database is unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("unexpected failure")]
    Unexpected(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<RepositoryError> for AppError {
    fn from(error: RepositoryError) -> Self {
        match error {
            RepositoryError::Unavailable(source) => Self::Unavailable(source),
            RepositoryError::SlugTaken => Self::SlugTaken,
            other => Self::Unexpected(Box::new(other)),
        }
    }
}

/// An error and each of its causes, outermost first, joined by `: ` — the
/// whole story for one log field (the client is told none of it).
#[must_use]
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_names_every_cause_outermost_first() {
        let error = AppError::Unavailable(Box::new(RepositoryError::Unavailable(
            "connection refused".into(),
        )));
        let text = chain(&error);
        assert!(text.ends_with(": connection refused"), "{text}");
        assert!(text.matches(": ").count() >= 2, "{text}");
    }
}
