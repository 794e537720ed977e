//! `ApiKeySecret::parse` and `KeyPrefix::parse` on arbitrary text, checked
//! against a reference of the documented format: `cola_` + 30 base62 + 6
//! base62 digits of the CRC-32 (IEEE) of the first 35 characters, most
//! significant first. Also checks that a key built from the input is
//! accepted, that changing any one of its characters gets it rejected, and
//! that `ApiKeySecret::generate` over a generator fed by the input either
//! fails with the generator's error or yields a key that parses back.

#![no_main]

use cola_domain::{ApiKeySecret, KEY_LENGTH, KEY_PREFIX_LENGTH, KeyFormatError, KeyPrefix};
use libfuzzer_sys::fuzz_target;
use rand_core::{TryCryptoRng, TryRngCore};

const SCHEME: &str = "cola_";
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Characters tried as replacements: all of base62 plus some that are not.
const REPLACEMENTS: &[char] = &['_', '-', '*', ' ', '\0', 'é', '€', '😀'];

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    check_candidate(&text, true);

    let built = build_key(data);
    assert!(
        ApiKeySecret::parse(&built).is_ok(),
        "a key with a correct checksum was rejected: {built:?}"
    );
    check_candidate(&built, false);
    let position = usize::from(data.get(30).copied().unwrap_or(0)) % KEY_LENGTH;
    let choice = usize::from(data.get(31).copied().unwrap_or(0));
    check_substitution(&built, position, replacement(choice));

    check_generate(data);
});

/// Parses `text` as a key and as a prefix and compares with the reference.
/// With `sweep`, an accepted key also gets every single-character change.
fn check_candidate(text: &str, sweep: bool) {
    let secret = ApiKeySecret::parse(text);
    assert_eq!(
        secret.is_ok(),
        reference_key_valid(text),
        "ApiKeySecret::parse disagrees with the reference on {text:?}: {secret:?}"
    );
    if text.len() != KEY_LENGTH && text.chars().count() != KEY_LENGTH {
        assert_eq!(secret, Err(KeyFormatError::WrongLength));
    }
    if let Ok(secret) = secret {
        let exposed = secret.expose();
        assert_eq!(exposed, text);
        assert_eq!(exposed.len(), 41);
        assert!(exposed.starts_with(SCHEME));
        assert!(ApiKeySecret::looks_like_key(exposed));
        assert_eq!(ApiKeySecret::parse(exposed).as_ref(), Ok(&secret));
        assert!(!format!("{secret:?}").contains(&exposed[SCHEME.len()..]));

        let prefix = secret.prefix();
        assert_eq!(prefix.as_str(), &text[..KEY_PREFIX_LENGTH]);
        assert_eq!(KeyPrefix::parse(prefix.as_str()).as_ref(), Ok(&prefix));

        if sweep {
            for position in 0..KEY_LENGTH {
                for choice in 0..BASE62.len() + REPLACEMENTS.len() {
                    check_substitution(text, position, replacement(choice));
                }
            }
        }
    }

    let prefix = KeyPrefix::parse(text);
    assert_eq!(
        prefix.is_ok(),
        reference_prefix_valid(text),
        "KeyPrefix::parse disagrees with the reference on {text:?}: {prefix:?}"
    );
    if let Ok(prefix) = prefix {
        assert_eq!(prefix.as_str(), text);
        assert_eq!(prefix.to_string(), text);
        assert_eq!(KeyPrefix::try_from(text.to_owned()).as_ref(), Ok(&prefix));
    }
}

/// Replaces the character at `position` of the accepted key `key` with
/// `with`; unless that leaves the key unchanged, it must be rejected.
fn check_substitution(key: &str, position: usize, with: char) {
    let original = char::from(key.as_bytes()[position]);
    if original == with {
        return;
    }
    let mut changed = String::with_capacity(KEY_LENGTH + 4);
    changed.push_str(&key[..position]);
    changed.push(with);
    changed.push_str(&key[position + 1..]);
    let result = ApiKeySecret::parse(&changed);
    assert!(
        result.is_err(),
        "{changed:?} (position {position} of an accepted key changed to {with:?}) was accepted"
    );
    if position >= SCHEME.len() && with.is_ascii_alphanumeric() {
        assert_eq!(
            result,
            Err(KeyFormatError::ChecksumMismatch),
            "{changed:?}: a base62 substitution after the scheme is a checksum mismatch"
        );
    }
}

fn replacement(choice: usize) -> char {
    let choice = choice % (BASE62.len() + REPLACEMENTS.len());
    match BASE62.get(choice) {
        Some(&b) => char::from(b),
        None => REPLACEMENTS[choice - BASE62.len()],
    }
}

/// `cola_` + 30 base62 characters taken from the input + the checksum.
fn build_key(data: &[u8]) -> String {
    let mut key = String::from(SCHEME);
    for i in 0..30 {
        let byte = data.get(i).copied().unwrap_or(0);
        key.push(char::from(BASE62[usize::from(byte) % 62]));
    }
    let checksum = reference_checksum(key.as_bytes());
    key.push_str(&checksum);
    key
}

fn reference_key_valid(text: &str) -> bool {
    text.len() == 41
        && text.starts_with(SCHEME)
        && text.bytes().skip(SCHEME.len()).all(|b| BASE62.contains(&b))
        && reference_checksum(&text.as_bytes()[..35]) == text[35..]
}

fn reference_prefix_valid(text: &str) -> bool {
    text.len() == 17
        && text.starts_with(SCHEME)
        && text.bytes().skip(SCHEME.len()).all(|b| BASE62.contains(&b))
}

/// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320), bit by bit, so
/// the reference does not share code with the crate under test.
fn reference_crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

/// The CRC as 6 base62 digits, most significant first, left-padded with `0`.
fn reference_checksum(body: &[u8]) -> String {
    let mut value = u64::from(reference_crc32(body));
    let mut digits = Vec::with_capacity(6);
    for _ in 0..6 {
        digits.push(char::from(BASE62[(value % 62) as usize]));
        value /= 62;
    }
    assert_eq!(value, 0, "62^6 > 2^32, so six digits always suffice");
    digits.iter().rev().collect()
}

/// Generation over a generator that hands out the input and then fails.
fn check_generate(data: &[u8]) {
    let mut tape = Tape { data, position: 0 };
    if let Ok(key) = ApiKeySecret::generate(&mut tape) {
        assert_eq!(key.expose().len(), KEY_LENGTH);
        assert_eq!(ApiKeySecret::parse(key.expose()).as_ref(), Ok(&key));
        check_candidate(key.expose(), false);
    }
}

/// A generator that returns the fuzz input byte for byte, then an error.
struct Tape<'a> {
    data: &'a [u8],
    position: usize,
}

#[derive(Debug)]
struct Exhausted;

impl std::fmt::Display for Exhausted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the fuzz input is used up")
    }
}

impl TryRngCore for Tape<'_> {
    type Error = Exhausted;

    fn try_next_u32(&mut self) -> Result<u32, Exhausted> {
        let mut bytes = [0; 4];
        self.try_fill_bytes(&mut bytes)?;
        Ok(u32::from_le_bytes(bytes))
    }

    fn try_next_u64(&mut self) -> Result<u64, Exhausted> {
        let mut bytes = [0; 8];
        self.try_fill_bytes(&mut bytes)?;
        Ok(u64::from_le_bytes(bytes))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Exhausted> {
        let end = self.position + dst.len();
        let Some(source) = self.data.get(self.position..end) else {
            return Err(Exhausted);
        };
        dst.copy_from_slice(source);
        self.position = end;
        Ok(())
    }
}

impl TryCryptoRng for Tape<'_> {}
