//! GitHub's secret-scanning partner program: the public keys GitHub signs
//! its alerts with (`COLA_SECRET_SCANNING_KEYS_FILE`, in the shape of
//! `https://api.github.com/meta/public_keys/secret_scanning`) and the check
//! of an alert's signature, an ECDSA P-256 / SHA-256 signature (base64 of
//! ASN.1 DER) over the raw request body.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey;
use serde::Deserialize;

/// The keys file as GitHub publishes it; unknown fields are ignored, since
/// GitHub may add some.
#[derive(Debug, Deserialize)]
struct KeyList {
    public_keys: Vec<PublicKeyEntry>,
}

#[derive(Debug, Deserialize)]
struct PublicKeyEntry {
    key_identifier: String,
    key: String,
    /// Informational: an alert signed with a key that is no longer current
    /// is still checked against it, as GitHub rotates keys gradually.
    #[serde(default)]
    #[allow(dead_code)]
    is_current: bool,
}

/// How long an answered alert is remembered: GitHub retries for less, and
/// a replay of a captured alert within this window does no work again.
const ANSWERED_FOR: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// Answered alerts remembered at most (the oldest are forgotten first).
const MAX_ANSWERED: u64 = 10_000;

/// The configured public keys, by identifier, and the answers of the
/// alerts answered lately (per instance).
#[derive(Clone)]
pub struct SecretScanningKeys {
    keys: Vec<(String, VerifyingKey)>,
    answered: moka::sync::Cache<[u8; 32], bytes::Bytes>,
}

impl std::fmt::Debug for SecretScanningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|(id, _)| id))
            .finish()
    }
}

/// Why an alert's signature was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureRefusal {
    #[error("the Github-Public-Key-Identifier or Github-Public-Key-Signature header is missing")]
    Missing,
    #[error("the key identifier names no configured key")]
    UnknownKey,
    #[error("the signature is not base64 of a DER ECDSA signature")]
    Malformed,
    #[error("the signature does not match the body")]
    Invalid,
}

impl SecretScanningKeys {
    /// Reads and checks the keys file: a JSON object with a non-empty
    /// `public_keys` list, each key a PEM P-256 public key.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let list: KeyList = serde_json::from_str(text).map_err(|e| {
            format!("not a key list of the shape {{\"public_keys\": [{{\"key_identifier\", \"key\"}}]}}: {e}")
        })?;
        if list.public_keys.is_empty() {
            return Err("the key list holds no key".into());
        }
        let keys = list
            .public_keys
            .into_iter()
            .map(|entry| {
                VerifyingKey::from_public_key_pem(entry.key.trim())
                    .map(|key| (entry.key_identifier.clone(), key))
                    .map_err(|_| {
                        format!(
                            "key `{}` is not a PEM P-256 public key",
                            entry.key_identifier
                        )
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            keys,
            answered: moka::sync::Cache::builder()
                .max_capacity(MAX_ANSWERED)
                .time_to_live(ANSWERED_FOR)
                .build(),
        })
    }

    /// The answer already given to the signed alert `body`, if any.
    #[must_use]
    pub fn answered(&self, body: &[u8]) -> Option<bytes::Bytes> {
        self.answered.get(&digest(body))
    }

    /// Remembers the answer given to the signed alert `body`.
    pub fn remember(&self, body: &[u8], answer: bytes::Bytes) {
        self.answered.insert(digest(body), answer);
    }

    /// How many keys are configured.
    #[must_use]
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Checks `signature` (base64 DER) by the key `identifier` over `body`.
    pub fn verify(
        &self,
        identifier: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
    ) -> Result<(), SignatureRefusal> {
        let (Some(identifier), Some(signature)) = (identifier, signature) else {
            return Err(SignatureRefusal::Missing);
        };
        let key = self
            .keys
            .iter()
            .find(|(id, _)| id == identifier.trim())
            .map(|(_, key)| key)
            .ok_or(SignatureRefusal::UnknownKey)?;
        let der = STANDARD
            .decode(signature.trim())
            .map_err(|_| SignatureRefusal::Malformed)?;
        let signature = Signature::from_der(&der).map_err(|_| SignatureRefusal::Malformed)?;
        // Signers need not produce low-S signatures; both forms are valid.
        let signature = signature.normalize_s().unwrap_or(signature);
        key.verify(body, &signature)
            .map_err(|_| SignatureRefusal::Invalid)
    }
}

fn digest(body: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(body).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::SigningKey;
    use p256::ecdsa::signature::Signer;
    use p256::pkcs8::{EncodePublicKey, LineEnding};

    fn signing_key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32].into()).expect("a valid scalar")
    }

    fn keys_file(key: &SigningKey) -> String {
        let pem = key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("pem");
        serde_json::json!({ "public_keys": [
            { "key_identifier": "kid-1", "key": pem, "is_current": true }
        ] })
        .to_string()
    }

    fn sign(key: &SigningKey, body: &[u8]) -> String {
        let signature: Signature = key.sign(body);
        STANDARD.encode(signature.to_der().as_bytes())
    }

    #[test]
    fn a_signature_by_a_configured_key_over_the_body_is_accepted() {
        let key = signing_key(7);
        let keys = SecretScanningKeys::parse(&keys_file(&key)).expect("keys");
        let body = br#"[{"token":"x"}]"#;
        let signature = sign(&key, body);
        assert_eq!(keys.verify(Some("kid-1"), Some(&signature), body), Ok(()));
        assert_eq!(
            keys.verify(Some("kid-1"), Some(&signature), b"[]"),
            Err(SignatureRefusal::Invalid)
        );
        assert_eq!(
            keys.verify(Some("kid-2"), Some(&signature), body),
            Err(SignatureRefusal::UnknownKey)
        );
        assert_eq!(
            keys.verify(Some("kid-1"), None, body),
            Err(SignatureRefusal::Missing)
        );
        assert_eq!(
            keys.verify(Some("kid-1"), Some("bm90IGRlcg=="), body),
            Err(SignatureRefusal::Malformed)
        );
    }

    #[test]
    fn another_key_s_signature_is_refused() {
        let keys = SecretScanningKeys::parse(&keys_file(&signing_key(7))).expect("keys");
        let body = b"[]";
        let forged = sign(&signing_key(8), body);
        assert_eq!(
            keys.verify(Some("kid-1"), Some(&forged), body),
            Err(SignatureRefusal::Invalid)
        );
    }

    #[test]
    fn a_file_without_keys_or_with_a_bad_key_is_refused() {
        assert!(SecretScanningKeys::parse(r#"{"public_keys": []}"#).is_err());
        assert!(
            SecretScanningKeys::parse(
                r#"{"public_keys": [{"key_identifier": "a", "key": "nope"}]}"#
            )
            .is_err()
        );
        assert!(SecretScanningKeys::parse("[]").is_err());
    }
}
