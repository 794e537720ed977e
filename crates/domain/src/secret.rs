//! The key secret (`cola_` + 30 random base62 + 6 base62 CRC-32 checksum) and
//! its public lookup prefix.
//!
//! The checksum lets a malformed or mistyped key be refused without touching
//! the database, and lets a secret scanner recognise a real key offline.

use std::fmt;

use rand::TryCryptoRng;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use thiserror::Error;
use zeroize::Zeroizing;

const SCHEME: &str = "cola_";
const RANDOM_LENGTH: usize = 30;
const CHECKSUM_LENGTH: usize = 6;
const PREFIX_RANDOM_LENGTH: usize = 12;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Length of a whole key: `cola_` + 30 random + 6 checksum characters.
pub const KEY_LENGTH: usize = SCHEME.len() + RANDOM_LENGTH + CHECKSUM_LENGTH;
/// Length of a key prefix: `cola_` + the first 12 random characters.
pub const KEY_PREFIX_LENGTH: usize = SCHEME.len() + PREFIX_RANDOM_LENGTH;

/// Why a presented string is not a well-formed key. Never carries the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum KeyFormatError {
    #[error("a key is {KEY_LENGTH} characters long")]
    WrongLength,
    #[error("a key starts with `cola_`")]
    WrongScheme,
    #[error("a key contains only base62 characters after `cola_`")]
    InvalidCharacter,
    #[error("the key's checksum does not match")]
    ChecksumMismatch,
}

/// A full API key. Only ever held in memory: hashed for storage and shown to
/// its owner once. `Debug` is redacted and there is no `Display`, so it cannot
/// end up in a log line by accident; equality takes the same time wherever two
/// keys differ; the memory is wiped when the value is dropped.
#[derive(Clone)]
pub struct ApiKeySecret(Zeroizing<String>);

impl PartialEq for ApiKeySecret {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

impl Eq for ApiKeySecret {}

impl ApiKeySecret {
    /// Generates a new key from a cryptographically secure generator (the
    /// OS generator in production). A generator failure is returned, never
    /// papered over with weaker randomness.
    pub fn generate<R: TryCryptoRng + ?Sized>(rng: &mut R) -> Result<Self, R::Error> {
        generate_checksummed(SCHEME, rng).map(Self)
    }

    /// Checks the format and checksum of a presented key. Cheap and free of
    /// I/O: it runs before any database work.
    pub fn parse(candidate: &str) -> Result<Self, KeyFormatError> {
        check_checksummed(SCHEME, candidate)?;
        Ok(Self(Zeroizing::new(candidate.to_owned())))
    }

    /// Whether a string looks like a Cola key at all (scheme only). Used to
    /// refuse a key where a JWT is expected without parsing it further.
    #[must_use]
    pub fn looks_like_key(candidate: &str) -> bool {
        candidate.starts_with(SCHEME)
    }

    /// The public lookup id of this key.
    #[must_use]
    pub fn prefix(&self) -> KeyPrefix {
        KeyPrefix(self.0[..KEY_PREFIX_LENGTH].to_owned())
    }

    /// The secret itself, for hashing and for the one response that shows it.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKeySecret([redacted])")
    }
}

/// `scheme` + 30 random base62 characters + their 6-character checksum,
/// from a cryptographically secure generator. A generator failure is
/// returned, never papered over with weaker randomness.
pub(crate) fn generate_checksummed<R: TryCryptoRng + ?Sized>(
    scheme: &str,
    rng: &mut R,
) -> Result<Zeroizing<String>, R::Error> {
    // Bytes ≥ 248 are rejected so that every base62 digit is equally
    // likely (248 = 4 × 62).
    const UNBIASED_LIMIT: u8 = 248;
    let mut secret = Zeroizing::new(String::with_capacity(
        scheme.len() + RANDOM_LENGTH + CHECKSUM_LENGTH,
    ));
    secret.push_str(scheme);
    let mut buffer = Zeroizing::new([0u8; 64]);
    while secret.len() < scheme.len() + RANDOM_LENGTH {
        rng.try_fill_bytes(buffer.as_mut())?;
        for &byte in buffer.iter().filter(|&&b| b < UNBIASED_LIMIT) {
            if secret.len() == scheme.len() + RANDOM_LENGTH {
                break;
            }
            secret.push(char::from(BASE62[usize::from(byte % 62)]));
        }
    }
    let checksum = checksum(secret.as_bytes());
    secret.push_str(&checksum);
    Ok(secret)
}

/// Whether `candidate` is `scheme` + 30 base62 characters + their checksum,
/// and if not, the first rule it breaks.
pub(crate) fn check_checksummed(scheme: &str, candidate: &str) -> Result<(), KeyFormatError> {
    if candidate.len() != scheme.len() + RANDOM_LENGTH + CHECKSUM_LENGTH {
        return Err(KeyFormatError::WrongLength);
    }
    let Some(rest) = candidate.strip_prefix(scheme) else {
        return Err(KeyFormatError::WrongScheme);
    };
    if !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(KeyFormatError::InvalidCharacter);
    }
    let (body, given) = candidate.split_at(candidate.len() - CHECKSUM_LENGTH);
    if checksum(body.as_bytes()) != given {
        return Err(KeyFormatError::ChecksumMismatch);
    }
    Ok(())
}

/// CRC-32 (IEEE) of `body`, as 6 base62 digits, most significant first.
fn checksum(body: &[u8]) -> String {
    let mut value = crc32fast::hash(body);
    let mut digits = [b'0'; CHECKSUM_LENGTH];
    for digit in digits.iter_mut().rev() {
        // The remainder is < 62, so the index is always in range.
        *digit = BASE62[(value % 62) as usize];
        value /= 62;
    }
    digits.iter().map(|&b| char::from(b)).collect()
}

/// `cola_` + the first 12 random characters of a key: public, unique, shown
/// in listings, logs and audit events.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyPrefix(String);

impl KeyPrefix {
    pub fn parse(candidate: &str) -> Result<Self, KeyFormatError> {
        if candidate.len() != KEY_PREFIX_LENGTH {
            return Err(KeyFormatError::WrongLength);
        }
        let Some(rest) = candidate.strip_prefix(SCHEME) else {
            return Err(KeyFormatError::WrongScheme);
        };
        if !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(KeyFormatError::InvalidCharacter);
        }
        Ok(Self(candidate.to_owned()))
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for KeyPrefix {
    type Error = KeyFormatError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<KeyPrefix> for String {
    fn from(prefix: KeyPrefix) -> Self {
        prefix.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn key_from_seed(seed: u64) -> ApiKeySecret {
        match ApiKeySecret::generate(&mut StdRng::seed_from_u64(seed)) {
            Ok(key) => key,
            Err(never) => match never {},
        }
    }

    #[test]
    fn a_generated_key_has_the_documented_shape() {
        let key = key_from_seed(1);
        let text = key.expose();
        assert_eq!(text.len(), 41);
        assert!(text.starts_with("cola_"));
        assert!(text[5..].bytes().all(|b| b.is_ascii_alphanumeric()));
    }

    #[test]
    fn the_checksum_is_crc32_of_the_first_35_characters_in_base62() {
        let body = "cola_000000000000000000000000000000";
        let mut value = crc32fast::hash(body.as_bytes());
        let mut expected = Vec::new();
        for _ in 0..6 {
            expected.push(BASE62[(value % 62) as usize]);
            value /= 62;
        }
        expected.reverse();
        let expected = String::from_utf8(expected).expect("ascii");
        let key = format!("{body}{expected}");
        assert!(ApiKeySecret::parse(&key).is_ok());
        assert_eq!(checksum(body.as_bytes()), expected);
    }

    #[test]
    fn a_small_checksum_is_left_padded_with_zeros() {
        // Find a body whose CRC is small enough to need padding is impractical,
        // so check the encoder directly on the digits it produces.
        let digits = checksum(b"");
        assert_eq!(digits, "000000", "CRC-32 of nothing is 0");
    }

    #[test]
    fn a_key_with_one_changed_character_is_rejected() {
        let key = key_from_seed(2);
        let mut text = key.expose().to_owned();
        let replaced = if &text[10..11] == "a" { "b" } else { "a" };
        text.replace_range(10..11, replaced);
        assert_eq!(
            ApiKeySecret::parse(&text),
            Err(KeyFormatError::ChecksumMismatch)
        );
    }

    #[test]
    fn a_key_of_the_wrong_length_is_rejected() {
        assert_eq!(
            ApiKeySecret::parse("cola_abc"),
            Err(KeyFormatError::WrongLength)
        );
    }

    #[test]
    fn a_key_with_another_scheme_is_rejected() {
        let key = key_from_seed(3);
        let text = format!("colb_{}", &key.expose()[5..]);
        assert_eq!(ApiKeySecret::parse(&text), Err(KeyFormatError::WrongScheme));
    }

    #[test]
    fn a_key_with_a_non_base62_character_is_rejected() {
        let key = key_from_seed(4);
        let mut text = key.expose().to_owned();
        text.replace_range(7..8, "-");
        assert_eq!(
            ApiKeySecret::parse(&text),
            Err(KeyFormatError::InvalidCharacter)
        );
    }

    #[test]
    fn multibyte_input_of_the_right_byte_length_is_rejected_without_panicking() {
        let text = format!("cola_{}", "é".repeat(18));
        assert_eq!(text.len(), 41);
        assert!(ApiKeySecret::parse(&text).is_err());
        let text = format!("é{}", "a".repeat(39));
        assert!(ApiKeySecret::parse(&text).is_err());
    }

    #[test]
    fn the_prefix_is_the_scheme_and_the_first_twelve_random_characters() {
        let key = key_from_seed(5);
        assert_eq!(key.prefix().as_str(), &key.expose()[..17]);
        assert!(KeyPrefix::parse(key.prefix().as_str()).is_ok());
    }

    #[test]
    fn debug_output_never_shows_the_secret() {
        let key = key_from_seed(6);
        let shown = format!("{key:?}");
        assert!(!shown.contains(&key.expose()[5..]));
        assert!(shown.contains("redacted"));
    }

    proptest! {
        #[test]
        fn every_generated_key_parses_back(seed in any::<u64>()) {
            let key = key_from_seed(seed);
            prop_assert_eq!(ApiKeySecret::parse(key.expose()), Ok(key));
        }

        #[test]
        fn parsing_arbitrary_text_never_panics(text in ".{0,64}") {
            let _ = ApiKeySecret::parse(&text);
            let _ = KeyPrefix::parse(&text);
        }

        #[test]
        fn any_single_substitution_in_the_random_part_is_detected(
            seed in any::<u64>(), position in 5usize..35, replacement in 0usize..62,
        ) {
            let key = key_from_seed(seed);
            let mut bytes = key.expose().as_bytes().to_vec();
            prop_assume!(bytes[position] != BASE62[replacement]);
            bytes[position] = BASE62[replacement];
            let text = String::from_utf8(bytes).expect("ascii");
            // CRC-32 detects every single-character change.
            prop_assert_eq!(ApiKeySecret::parse(&text), Err(KeyFormatError::ChecksumMismatch));
        }
    }
}
