//! A key's human-facing name and description.

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

const MAX_NAME_CHARS: usize = 100;
const MAX_DESCRIPTION_CHARS: usize = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum NameError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {max} characters")]
    TooLong { max: usize },
    #[error("must not contain control characters")]
    ControlCharacter,
}

/// 1..=100 characters after trimming, no control characters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyName(String);

impl KeyName {
    pub fn parse(candidate: &str) -> Result<Self, NameError> {
        let trimmed = candidate.trim();
        if trimmed.is_empty() {
            return Err(NameError::Empty);
        }
        if trimmed.chars().count() > MAX_NAME_CHARS {
            return Err(NameError::TooLong {
                max: MAX_NAME_CHARS,
            });
        }
        if trimmed.chars().any(char::is_control) {
            return Err(NameError::ControlCharacter);
        }
        Ok(Self(trimmed.to_owned()))
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for KeyName {
    type Error = NameError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<KeyName> for String {
    fn from(name: KeyName) -> Self {
        name.0
    }
}

/// At most 500 characters; line breaks and tabs are allowed, other control
/// characters are not (they hide text in terminals and logs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyDescription(String);

impl KeyDescription {
    pub fn parse(candidate: &str) -> Result<Self, NameError> {
        if candidate.chars().count() > MAX_DESCRIPTION_CHARS {
            return Err(NameError::TooLong {
                max: MAX_DESCRIPTION_CHARS,
            });
        }
        if candidate
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        {
            return Err(NameError::ControlCharacter);
        }
        Ok(Self(candidate.to_owned()))
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for KeyDescription {
    type Error = NameError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<KeyDescription> for String {
    fn from(description: KeyDescription) -> Self {
        description.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_trimmed() {
        assert_eq!(
            KeyName::parse("  laptop  ").map(|n| n.0),
            Ok("laptop".into())
        );
    }

    #[test]
    fn a_blank_name_is_rejected() {
        assert_eq!(KeyName::parse(" \t "), Err(NameError::Empty));
    }

    #[test]
    fn a_name_of_100_characters_is_accepted_and_101_is_rejected() {
        assert!(KeyName::parse(&"é".repeat(100)).is_ok());
        assert_eq!(
            KeyName::parse(&"é".repeat(101)),
            Err(NameError::TooLong { max: 100 })
        );
    }

    #[test]
    fn a_name_with_a_control_character_is_rejected() {
        assert_eq!(KeyName::parse("a\u{7}b"), Err(NameError::ControlCharacter));
        assert_eq!(KeyName::parse("a\nb"), Err(NameError::ControlCharacter));
    }

    #[test]
    fn a_description_may_hold_line_breaks_but_not_other_control_characters() {
        assert!(KeyDescription::parse("line one\nline two\ttabbed").is_ok());
        assert_eq!(
            KeyDescription::parse("bell\u{7}"),
            Err(NameError::ControlCharacter)
        );
    }

    #[test]
    fn a_description_over_500_characters_is_rejected() {
        assert!(KeyDescription::parse(&"x".repeat(500)).is_ok());
        assert_eq!(
            KeyDescription::parse(&"x".repeat(501)),
            Err(NameError::TooLong { max: 500 })
        );
    }
}
