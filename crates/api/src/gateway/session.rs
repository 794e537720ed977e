//! Gateway sessions and tasks. An upstream's `Mcp-Session-Id` never
//! reaches the client: the client gets Cola's own id, the upstream's sealed
//! with an AEAD under `COLA_SECRETS_KEY`, with the tenant, the key and the
//! server as associated data. Any instance opens it without shared state,
//! and it opens only for the key and the server it was issued to: presented
//! with another key, on another server, or altered, it is an unknown
//! session. A task id an upstream returns is handed out the same way (under
//! a purpose of its own, so a session id never opens as a task id).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cola_domain::{ApiKeyId, ServerId, TenantId};
use cola_infrastructure::{SealContext, Sealer};
use zeroize::Zeroizing;

/// Marks Cola's session ids (and their format's version).
const PREFIX: &str = "cola-s1.";
/// Marks Cola's task ids.
const TASK_PREFIX: &str = "cola-t1.";
/// The longest upstream session id Cola carries (the spec asks for visible
/// ASCII; nothing bounds its length, so Cola does).
const MAX_UPSTREAM_ID_BYTES: usize = 512;

/// Who a session belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding {
    pub tenant: TenantId,
    pub key: ApiKeyId,
    pub server: ServerId,
}

impl Binding {
    fn associated_data(&self) -> Vec<u8> {
        let mut data = Vec::with_capacity(48);
        data.extend_from_slice(self.tenant.as_uuid().as_bytes());
        data.extend_from_slice(self.key.as_uuid().as_bytes());
        data.extend_from_slice(self.server.as_uuid().as_bytes());
        data
    }
}

/// Seals and opens session ids.
#[derive(Debug, Clone)]
pub struct Sessions {
    sealer: Sealer,
}

impl Sessions {
    #[must_use]
    pub fn new(sealer: Sealer) -> Self {
        Self { sealer }
    }

    /// Cola's session id for the upstream's `upstream_id`, or `None` when
    /// that id is not one Cola carries (too long, or not visible ASCII).
    #[must_use]
    pub fn seal(&self, binding: &Binding, upstream_id: &str) -> Option<String> {
        self.seal_as(SealContext::GatewaySession, PREFIX, binding, upstream_id)
    }

    /// The upstream's session id inside Cola's `session_id`, if it was
    /// issued for `binding` and is intact.
    #[must_use]
    pub fn open(&self, binding: &Binding, session_id: &str) -> Option<Zeroizing<String>> {
        self.open_as(SealContext::GatewaySession, PREFIX, binding, session_id)
    }

    /// Cola's task id for the upstream's task `upstream_id`: always the
    /// same for the same task, key and server, since a client follows a
    /// task by its id across the answers and notifications that name it.
    #[must_use]
    pub fn seal_task(&self, binding: &Binding, upstream_id: &str) -> Option<String> {
        self.seal_as(SealContext::GatewayTask, TASK_PREFIX, binding, upstream_id)
    }

    /// The upstream's task id inside Cola's `task_id`, if it was handed out
    /// for `binding` and is intact.
    #[must_use]
    pub fn open_task(&self, binding: &Binding, task_id: &str) -> Option<Zeroizing<String>> {
        self.open_as(SealContext::GatewayTask, TASK_PREFIX, binding, task_id)
    }

    fn seal_as(
        &self,
        purpose: SealContext,
        prefix: &str,
        binding: &Binding,
        upstream_id: &str,
    ) -> Option<String> {
        let visible = upstream_id
            .bytes()
            .all(|byte| (0x21..=0x7e).contains(&byte));
        if upstream_id.is_empty() || upstream_id.len() > MAX_UPSTREAM_ID_BYTES || !visible {
            return None;
        }
        let aad = binding.associated_data();
        let sealed = match purpose {
            SealContext::GatewayTask => {
                self.sealer
                    .seal_deterministic(purpose, &aad, upstream_id.as_bytes())
            }
            _ => self.sealer.seal(purpose, &aad, upstream_id.as_bytes()),
        }
        .ok()?;
        Some(format!("{prefix}{}", URL_SAFE_NO_PAD.encode(sealed)))
    }

    fn open_as(
        &self,
        purpose: SealContext,
        prefix: &str,
        binding: &Binding,
        sealed_id: &str,
    ) -> Option<Zeroizing<String>> {
        let encoded = sealed_id.trim().strip_prefix(prefix)?;
        if encoded.len() > 2 * MAX_UPSTREAM_ID_BYTES + 128 {
            return None;
        }
        let sealed = URL_SAFE_NO_PAD.decode(encoded).ok()?;
        let opened = self
            .sealer
            .open(purpose, &binding.associated_data(), &sealed)
            .ok()?;
        String::from_utf8(opened.to_vec()).ok().map(Zeroizing::new)
    }
}
