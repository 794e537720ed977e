//! Where a leaked key was found, as its reporter tells it: recorded in the
//! revocation's audit event, so both are bounded and free of control
//! characters.

use serde::Serialize;
use thiserror::Error;

pub const MAX_REPORT_URL_CHARS: usize = 2048;
pub const MAX_REPORT_SOURCE_CHARS: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ReportError {
    #[error("must be at most {max} characters")]
    TooLong { max: usize },
    #[error("must not contain control characters")]
    ControlCharacter,
}

/// A leak report's `url` and `source`; empty text is no value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LeakReport {
    url: Option<String>,
    source: Option<String>,
}

fn bounded(text: Option<&str>, max: usize) -> Result<Option<String>, ReportError> {
    let Some(text) = text.map(str::trim).filter(|text| !text.is_empty()) else {
        return Ok(None);
    };
    if text.chars().count() > max {
        return Err(ReportError::TooLong { max });
    }
    if text.chars().any(char::is_control) {
        return Err(ReportError::ControlCharacter);
    }
    Ok(Some(text.to_owned()))
}

impl LeakReport {
    /// The url (at most 2048 characters) and the source (at most 200), or
    /// each one at fault by its field name.
    pub fn new(
        url: Option<&str>,
        source: Option<&str>,
    ) -> Result<Self, Vec<(&'static str, ReportError)>> {
        let url = bounded(url, MAX_REPORT_URL_CHARS).map_err(|e| ("url", e));
        let source = bounded(source, MAX_REPORT_SOURCE_CHARS).map_err(|e| ("source", e));
        match (url, source) {
            (Ok(url), Ok(source)) => Ok(Self { url, source }),
            (url, source) => Err([url.err(), source.err()].into_iter().flatten().collect()),
        }
    }

    #[must_use]
    pub fn where_found(&self) -> Option<&str> {
        self.url.as_deref()
    }

    #[must_use]
    pub fn found_by(&self) -> Option<&str> {
        self.source.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_parts_are_no_parts() {
        assert_eq!(LeakReport::new(Some(" "), None), Ok(LeakReport::default()));
    }

    #[test]
    fn an_overlong_url_or_a_control_character_is_refused() {
        let long = "u".repeat(MAX_REPORT_URL_CHARS + 1);
        assert_eq!(
            LeakReport::new(Some(&long), Some("a\nb")),
            Err(vec![
                (
                    "url",
                    ReportError::TooLong {
                        max: MAX_REPORT_URL_CHARS
                    }
                ),
                ("source", ReportError::ControlCharacter)
            ])
        );
    }
}
