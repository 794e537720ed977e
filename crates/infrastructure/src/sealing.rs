//! Secrets at rest: XChaCha20-Poly1305 under `COLA_SECRETS_KEY`.
//!
//! Every box is bound by its associated data to what it belongs to, and to
//! the use it was made for ([`SealContext`]): a server's headers open only
//! for that tenant's that server, so a row copied to another server does not
//! open, and a box made for one use never opens as another. A box that does
//! not open is corrupt and its use fails closed.
//!
//! A box is `version (1 byte) ‖ nonce (24 bytes, random) ‖ ciphertext ‖ tag`.
//! The 192-bit nonce makes random nonces safe for any number of boxes
//! under one key.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use cola_application::{CredentialSealer, SealError};
use cola_domain::{ServerId, TenantId, UpstreamHeaders};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use thiserror::Error;
use zeroize::Zeroizing;

const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 24;
const FORMAT_VERSION: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SecretsKeyError {
    #[error("must be the base64 of exactly 32 random bytes (e.g. `openssl rand -base64 32`)")]
    Invalid,
    #[error("the OS random generator failed")]
    NoRandomness,
}

/// The 32-byte key of `COLA_SECRETS_KEY`. Never printed, wiped on drop.
#[derive(Clone)]
pub struct SecretsKey(Zeroizing<[u8; KEY_BYTES]>);

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretsKey([redacted])")
    }
}

impl SecretsKey {
    /// Standard base64, padded or not, of exactly 32 bytes.
    pub fn parse_base64(text: &str) -> Result<Self, SecretsKeyError> {
        let text = text.trim();
        let decoded = Zeroizing::new(
            STANDARD
                .decode(text)
                .or_else(|_| STANDARD_NO_PAD.decode(text))
                .map_err(|_| SecretsKeyError::Invalid)?,
        );
        let bytes: [u8; KEY_BYTES] = decoded
            .as_slice()
            .try_into()
            .map_err(|_| SecretsKeyError::Invalid)?;
        Ok(Self(Zeroizing::new(bytes)))
    }

    /// A new random key, from the OS generator (`--dev`).
    pub fn generate() -> Result<Self, SecretsKeyError> {
        let mut bytes = Zeroizing::new([0u8; KEY_BYTES]);
        rand::TryRngCore::try_fill_bytes(&mut rand::rngs::OsRng, bytes.as_mut_slice())
            .map_err(|_| SecretsKeyError::NoRandomness)?;
        Ok(Self(bytes))
    }

    /// The key as `COLA_SECRETS_KEY` takes it.
    #[must_use]
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.0.as_slice()))
    }
}

/// What a box is for. Each use is its own domain: its label is part of the
/// associated data, so the same key serves every use without one's boxes
/// opening as another's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealContext {
    /// A registered server's upstream headers; bound to (tenant, server).
    UpstreamHeaders,
    /// A gateway session id handed to a client; the gateway binds it.
    GatewaySession,
    /// An upstream's task id handed to a client; bound as a session id is.
    GatewayTask,
}

impl SealContext {
    fn label(self) -> &'static [u8] {
        match self {
            Self::UpstreamHeaders => b"cola/upstream-headers/v1",
            Self::GatewaySession => b"cola/gateway-session/v1",
            Self::GatewayTask => b"cola/gateway-task/v1",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum SealingError {
    /// Not a box made by this key for this context and associated data.
    #[error("the sealed data does not open")]
    DoesNotOpen,
    #[error("sealing failed")]
    SealFailed,
}

/// Seals and opens boxes under one [`SecretsKey`].
#[derive(Clone)]
pub struct Sealer {
    cipher: XChaCha20Poly1305,
    /// Keys the nonce of a deterministic box (see [`Sealer::seal_deterministic`]).
    nonce_key: Hmac<Sha256>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer([redacted])")
    }
}

impl Sealer {
    #[must_use]
    pub fn new(key: &SecretsKey) -> Self {
        // A key of its own for the nonces, derived from the secrets key
        // under a label no other use has.
        let derived = <Hmac<Sha256> as Mac>::new_from_slice(key.0.as_slice())
            .map(|mac| {
                let derived: [u8; 32] = mac
                    .chain_update(b"cola/deterministic-nonce/v1")
                    .finalize()
                    .into_bytes()
                    .into();
                Zeroizing::new(derived)
            })
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        let nonce_key = <Hmac<Sha256> as Mac>::new_from_slice(derived.as_ref())
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        Self {
            cipher: XChaCha20Poly1305::new(key.0.as_slice().into()),
            nonce_key,
        }
    }

    /// A box of `plaintext` for `context`, bound to `aad`.
    pub fn seal(
        &self,
        context: SealContext,
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, SealingError> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        self.seal_with(nonce, context, aad, plaintext)
    }

    /// As [`Sealer::seal`], but the same `plaintext` for the same `context`
    /// and `aad` always makes the same box (the nonce is a keyed hash of
    /// them, a synthetic IV): for ids a client compares, such as a task's
    /// across the answers that name it. It tells an observer only whether
    /// two boxes hold the same thing.
    pub fn seal_deterministic(
        &self,
        context: SealContext,
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, SealingError> {
        let bound = bound_aad(context, aad);
        let mut mac = self.nonce_key.clone();
        mac.update(&u64::try_from(bound.len()).unwrap_or(u64::MAX).to_be_bytes());
        mac.update(&bound);
        mac.update(plaintext);
        let digest: [u8; 32] = mac.finalize().into_bytes().into();
        let mut nonce = [0u8; NONCE_BYTES];
        nonce.copy_from_slice(&digest[..NONCE_BYTES]);
        let nonce = XNonce::from(nonce);
        self.seal_with(nonce, context, aad, plaintext)
    }

    fn seal_with(
        &self,
        nonce: XNonce,
        context: SealContext,
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, SealingError> {
        let bound = bound_aad(context, aad);
        let ciphertext = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: &bound,
                },
            )
            .map_err(|_| SealingError::SealFailed)?;
        let mut sealed = Vec::with_capacity(1 + NONCE_BYTES + ciphertext.len());
        sealed.push(FORMAT_VERSION);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        Ok(sealed)
    }

    /// The plaintext of a box made by [`Sealer::seal`] with the same key,
    /// context and `aad`; anything else is [`SealingError::DoesNotOpen`].
    pub fn open(
        &self,
        context: SealContext,
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, SealingError> {
        let (&version, rest) = sealed.split_first().ok_or(SealingError::DoesNotOpen)?;
        if version != FORMAT_VERSION || rest.len() < NONCE_BYTES {
            return Err(SealingError::DoesNotOpen);
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_BYTES);
        let nonce: [u8; NONCE_BYTES] = nonce.try_into().map_err(|_| SealingError::DoesNotOpen)?;
        let bound = bound_aad(context, aad);
        self.cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &bound,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| SealingError::DoesNotOpen)
    }
}

/// The context's label, a separator no label contains, then the caller's
/// associated data: unambiguous, since labels are fixed.
fn bound_aad(context: SealContext, aad: &[u8]) -> Vec<u8> {
    let label = context.label();
    let mut bound = Vec::with_capacity(label.len() + 1 + aad.len());
    bound.extend_from_slice(label);
    bound.push(0);
    bound.extend_from_slice(aad);
    bound
}

impl cola_application::HandleSealer for Sealer {
    fn seal_handle(
        &self,
        kind: cola_application::HandleKind,
        associated: &[u8],
        plaintext: &[u8],
    ) -> Option<Vec<u8>> {
        match kind {
            cola_application::HandleKind::Session => {
                self.seal(SealContext::GatewaySession, associated, plaintext)
            }
            cola_application::HandleKind::Task => {
                self.seal_deterministic(SealContext::GatewayTask, associated, plaintext)
            }
        }
        .ok()
    }

    fn open_handle(
        &self,
        kind: cola_application::HandleKind,
        associated: &[u8],
        sealed: &[u8],
    ) -> Option<Zeroizing<Vec<u8>>> {
        let context = match kind {
            cola_application::HandleKind::Session => SealContext::GatewaySession,
            cola_application::HandleKind::Task => SealContext::GatewayTask,
        };
        self.open(context, associated, sealed).ok()
    }
}

/// A server's identity as associated data: its tenant and its id.
fn server_aad(tenant: TenantId, server: ServerId) -> [u8; 32] {
    let mut aad = [0u8; 32];
    aad[..16].copy_from_slice(tenant.as_uuid().as_bytes());
    aad[16..].copy_from_slice(server.as_uuid().as_bytes());
    aad
}

impl CredentialSealer for Sealer {
    fn seal_headers(
        &self,
        tenant: TenantId,
        server: ServerId,
        headers: &UpstreamHeaders,
    ) -> Result<Vec<u8>, SealError> {
        let pairs: Vec<(&str, &str)> = headers
            .pairs()
            .iter()
            .map(|(name, value)| (name.as_str(), value.expose()))
            .collect();
        let plaintext =
            Zeroizing::new(serde_json::to_vec(&pairs).map_err(|e| SealError::Failed(Box::new(e)))?);
        self.seal(
            SealContext::UpstreamHeaders,
            &server_aad(tenant, server),
            &plaintext,
        )
        .map_err(|e| SealError::Failed(Box::new(e)))
    }

    fn open_headers(
        &self,
        tenant: TenantId,
        server: ServerId,
        sealed: &[u8],
    ) -> Result<UpstreamHeaders, SealError> {
        let plaintext = self
            .open(
                SealContext::UpstreamHeaders,
                &server_aad(tenant, server),
                sealed,
            )
            .map_err(|_| SealError::Corrupt)?;
        let pairs: Vec<(String, String)> =
            serde_json::from_slice(&plaintext).map_err(|_| SealError::Corrupt)?;
        UpstreamHeaders::restore(pairs).map_err(|_| SealError::Corrupt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn sealer() -> Sealer {
        Sealer::new(&SecretsKey::generate().expect("OS randomness"))
    }

    fn ids() -> (TenantId, ServerId) {
        (
            TenantId::from_uuid(Uuid::now_v7()),
            ServerId::from_uuid(Uuid::now_v7()),
        )
    }

    fn headers() -> UpstreamHeaders {
        UpstreamHeaders::parse(vec![("Authorization".into(), "Bearer hunter2".into())])
            .expect("valid")
    }

    #[test]
    fn a_key_is_the_base64_of_exactly_32_bytes() {
        let key = SecretsKey::generate().expect("random");
        let text = key.to_base64();
        assert!(SecretsKey::parse_base64(&text).is_ok());
        assert!(SecretsKey::parse_base64(text.trim_end_matches('=')).is_ok());
        assert_eq!(
            SecretsKey::parse_base64(&STANDARD.encode([1u8; 31])).map(|_| ()),
            Err(SecretsKeyError::Invalid)
        );
        assert!(SecretsKey::parse_base64("not base64!").is_err());
        assert_eq!(format!("{key:?}"), "SecretsKey([redacted])");
    }

    #[test]
    fn sealed_headers_open_for_their_server_and_hold_no_value_in_clear() {
        let sealer = sealer();
        let (tenant, server) = ids();
        let sealed = sealer
            .seal_headers(tenant, server, &headers())
            .expect("sealed");
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        let opened = sealer.open_headers(tenant, server, &sealed).expect("opens");
        assert_eq!(opened, headers());
    }

    #[test]
    fn headers_copied_to_another_server_or_tenant_do_not_open() {
        let sealer = sealer();
        let (tenant, server) = ids();
        let sealed = sealer
            .seal_headers(tenant, server, &headers())
            .expect("sealed");
        let (other_tenant, other_server) = ids();
        assert!(matches!(
            sealer.open_headers(tenant, other_server, &sealed),
            Err(SealError::Corrupt)
        ));
        assert!(matches!(
            sealer.open_headers(other_tenant, server, &sealed),
            Err(SealError::Corrupt)
        ));
    }

    #[test]
    fn a_box_under_another_key_or_tampered_with_does_not_open() {
        let (tenant, server) = ids();
        let mut sealed = sealer()
            .seal_headers(tenant, server, &headers())
            .expect("sealed");
        assert!(sealer().open_headers(tenant, server, &sealed).is_err());
        let own = sealer();
        let mut mine = own
            .seal_headers(tenant, server, &headers())
            .expect("sealed");
        let last = mine.len() - 1;
        mine[last] ^= 1;
        assert!(own.open_headers(tenant, server, &mine).is_err());
        sealed.truncate(10);
        assert!(own.open_headers(tenant, server, &sealed).is_err());
        assert!(own.open_headers(tenant, server, &[]).is_err());
    }

    #[test]
    fn a_box_for_one_use_does_not_open_as_another() {
        let sealer = sealer();
        let sealed = sealer
            .seal(SealContext::GatewaySession, b"binding", b"session")
            .expect("sealed");
        assert_eq!(
            sealer.open(SealContext::UpstreamHeaders, b"binding", &sealed),
            Err(SealingError::DoesNotOpen)
        );
        let opened = sealer
            .open(SealContext::GatewaySession, b"binding", &sealed)
            .expect("opens");
        assert_eq!(opened.as_slice(), b"session");
    }

    #[test]
    fn two_boxes_of_the_same_plaintext_differ() {
        let sealer = sealer();
        let a = sealer
            .seal(SealContext::GatewaySession, b"", b"x")
            .expect("a");
        let b = sealer
            .seal(SealContext::GatewaySession, b"", b"x")
            .expect("b");
        assert_ne!(a, b);
    }
}
