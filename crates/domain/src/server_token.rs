//! A registered server's verification token (`colasrv_` + 30 random base62 +
//! 6 base62 CRC-32 checksum): what a tenant's own MCP server presents to
//! the verify API (docs/verify.md). Built like a key, so a secret scanner can
//! recognise a leaked one offline and junk is refused before any lookup.

use std::fmt;

use rand::TryCryptoRng;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::secret::{check_checksummed, generate_checksummed};

const SCHEME: &str = "colasrv_";

/// The string presented is not a server token. Never carries the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a Cola server token")]
pub struct ServerTokenFormatError;

/// A server token. Held in memory only: digested for storage and shown to
/// the admin who minted it once. `Debug` is redacted and there is no
/// `Display`; the memory is wiped on drop.
#[derive(Clone)]
pub struct ServerToken(Zeroizing<String>);

impl ServerToken {
    pub fn generate<R: TryCryptoRng + ?Sized>(rng: &mut R) -> Result<Self, R::Error> {
        generate_checksummed(SCHEME, rng).map(Self)
    }

    /// Checks the format and checksum of a presented token, free of I/O.
    pub fn parse(candidate: &str) -> Result<Self, ServerTokenFormatError> {
        check_checksummed(SCHEME, candidate).map_err(|_| ServerTokenFormatError)?;
        Ok(Self(Zeroizing::new(candidate.to_owned())))
    }

    /// The token itself, for digesting and for the one response that shows it.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl PartialEq for ServerToken {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

impl Eq for ServerToken {}

impl fmt::Debug for ServerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerToken([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn token(seed: u64) -> ServerToken {
        match ServerToken::generate(&mut StdRng::seed_from_u64(seed)) {
            Ok(token) => token,
            Err(never) => match never {},
        }
    }

    #[test]
    fn a_generated_token_has_the_documented_shape() {
        let token = token(1);
        assert_eq!(token.expose().len(), 44);
        assert!(token.expose().starts_with("colasrv_"));
        assert!(
            token.expose()[8..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric())
        );
    }

    #[test]
    fn a_key_is_not_a_server_token() {
        let key = match crate::ApiKeySecret::generate(&mut StdRng::seed_from_u64(2)) {
            Ok(key) => key,
            Err(never) => match never {},
        };
        assert!(ServerToken::parse(key.expose()).is_err());
    }

    #[test]
    fn a_changed_character_is_refused() {
        let mut text = token(3).expose().to_owned();
        let replaced = if &text[12..13] == "a" { "b" } else { "a" };
        text.replace_range(12..13, replaced);
        assert!(ServerToken::parse(&text).is_err());
    }

    #[test]
    fn debug_output_never_shows_the_token() {
        let token = token(4);
        assert!(!format!("{token:?}").contains(&token.expose()[8..]));
    }

    proptest! {
        #[test]
        fn every_generated_token_parses_back(seed in any::<u64>()) {
            let token = token(seed);
            prop_assert_eq!(ServerToken::parse(token.expose()), Ok(token));
        }

        #[test]
        fn parsing_arbitrary_text_never_panics(text in ".{0,64}") {
            let _ = ServerToken::parse(&text);
        }
    }
}
