//! The gateway section: the secrets key that seals upstream headers and
//! session ids (`COLA_SECRETS_KEY`), which private networks upstreams may
//! be in (`COLA_GATEWAY_ALLOWED_NETWORKS`), the per-tenant in-flight cap
//! (`COLA_GATEWAY_MAX_INFLIGHT_PER_TENANT`), and the keys identity
//! assertions are signed with (`COLA_IDENTITY_KEY_FILE`,
//! `COLA_IDENTITY_PREVIOUS_KEY_FILE`).

use std::sync::Arc;

use cola_domain::AllowedNetworks;
use cola_infrastructure::{IdentityKey, SecretsKey, previous_public_jwk};
use jsonwebtoken::jwk::Jwk;

use super::reader::{Reader, joined, read_pem};

#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// Seals upstream servers' headers at rest; `None`: servers cannot
    /// hold headers.
    pub secrets_key: Option<SecretsKey>,
    /// Networks upstream URLs may resolve into although not public.
    pub allowed_networks: AllowedNetworks,
    /// Gateway requests of one tenant in flight on this instance at most.
    pub max_inflight_per_tenant: usize,
    /// Signs identity assertions; `None`: a key of this process alone.
    pub identity_key: Option<Arc<IdentityKey>>,
    /// Still published in the JWKS, for a rotation.
    pub identity_previous_key: Option<Jwk>,
}

impl GatewaySettings {
    pub(super) fn read(read: &mut Reader<'_>) -> Self {
        let max_inflight_per_tenant =
            usize::try_from(read.number("COLA_GATEWAY_MAX_INFLIGHT_PER_TENANT", 64, (1, 100_000)))
                .unwrap_or(64);
        let secrets_key = read.text("COLA_SECRETS_KEY").and_then(|raw| {
            SecretsKey::parse_base64(&raw)
                .map_err(|e| read.fail("COLA_SECRETS_KEY", e.to_string()))
                .ok()
        });
        let identity_key = identity_key(read);
        let identity_previous_key = identity_previous_key(read);
        let allowed_networks = AllowedNetworks::parse(&read.list("COLA_GATEWAY_ALLOWED_NETWORKS"))
            .unwrap_or_else(|e| {
                read.fail("COLA_GATEWAY_ALLOWED_NETWORKS", e.to_string());
                AllowedNetworks::default()
            });
        Self {
            secrets_key,
            allowed_networks,
            max_inflight_per_tenant,
            identity_key,
            identity_previous_key,
        }
    }

    pub(super) fn describe(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "COLA_SECRETS_KEY",
                if self.secrets_key.is_some() {
                    "set (masked)".to_owned()
                } else {
                    "unset (servers cannot hold headers)".to_owned()
                },
            ),
            (
                "COLA_GATEWAY_ALLOWED_NETWORKS",
                joined(self.allowed_networks.networks()),
            ),
            (
                "COLA_GATEWAY_MAX_INFLIGHT_PER_TENANT",
                self.max_inflight_per_tenant.to_string(),
            ),
            (
                "COLA_IDENTITY_KEY_FILE",
                self.identity_key.as_ref().map_or_else(
                    || "unset (identity assertions signed by a key of this process)".to_owned(),
                    |key| format!("{} key, kid {}", key.algorithm(), key.kid()),
                ),
            ),
            (
                "COLA_IDENTITY_PREVIOUS_KEY_FILE",
                self.identity_previous_key.as_ref().map_or_else(
                    || "unset".to_owned(),
                    |jwk| {
                        let kid = jwk.common.key_id.as_deref().unwrap_or("-");
                        format!("published, kid {kid}")
                    },
                ),
            ),
        ]
    }
}

fn identity_key(read: &mut Reader<'_>) -> Option<Arc<IdentityKey>> {
    let path = read.text("COLA_IDENTITY_KEY_FILE")?;
    read_pem(path.trim())
        .and_then(|pem| IdentityKey::from_pem(&pem).map_err(|e| e.to_string()))
        .map(Arc::new)
        .map_err(|error| read.fail("COLA_IDENTITY_KEY_FILE", error))
        .ok()
}

fn identity_previous_key(read: &mut Reader<'_>) -> Option<Jwk> {
    let path = read.text("COLA_IDENTITY_PREVIOUS_KEY_FILE")?;
    read_pem(path.trim())
        .and_then(|pem| {
            previous_public_jwk(&pem).map_err(|_| {
                "is not a PEM key of Ed25519 or P-256 (private, or `PUBLIC KEY`)".to_owned()
            })
        })
        .map_err(|error| read.fail("COLA_IDENTITY_PREVIOUS_KEY_FILE", error))
        .ok()
}
