//! The ids Cola hands to clients in place of an upstream's: a session id
//! (`Mcp-Session-Id`) and a task id. The client never sees the upstream's:
//! it gets the upstream's sealed under `COLA_SECRETS_KEY`, with the tenant,
//! the key and the server as associated data. Any instance opens it without
//! shared state, and it opens only for the key and the server it was issued
//! to: presented with another key, on another server, or altered, it is an
//! unknown session (or task).

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use zeroize::Zeroizing;

use super::ports::{Binding, HandleKind, HandleSealer};

/// The longest upstream id Cola carries (the spec asks for visible ASCII;
/// nothing bounds its length, so Cola does).
const MAX_UPSTREAM_ID_BYTES: usize = 512;

/// Marks Cola's ids of each kind (and their format's version).
fn prefix(kind: HandleKind) -> &'static str {
    match kind {
        HandleKind::Session => "cola-s1.",
        HandleKind::Task => "cola-t1.",
    }
}

/// Seals and opens the ids handed to clients.
#[derive(Debug, Clone)]
pub struct Handles {
    sealer: Arc<dyn HandleSealer>,
}

impl Handles {
    #[must_use]
    pub fn new(sealer: Arc<dyn HandleSealer>) -> Self {
        Self { sealer }
    }

    /// Cola's id of `kind` for the upstream's `upstream_id`, or `None` when
    /// that id is not one Cola carries (too long, or not visible ASCII).
    #[must_use]
    pub fn seal(&self, kind: HandleKind, binding: &Binding, upstream_id: &str) -> Option<String> {
        let visible = upstream_id
            .bytes()
            .all(|byte| (0x21..=0x7e).contains(&byte));
        if upstream_id.is_empty() || upstream_id.len() > MAX_UPSTREAM_ID_BYTES || !visible {
            return None;
        }
        let sealed =
            self.sealer
                .seal_handle(kind, &binding.associated_data(), upstream_id.as_bytes())?;
        Some(format!(
            "{}{}",
            prefix(kind),
            URL_SAFE_NO_PAD.encode(sealed)
        ))
    }

    /// The upstream's id inside Cola's `sealed_id` of `kind`, if it was
    /// issued for `binding` and is intact.
    #[must_use]
    pub fn open(
        &self,
        kind: HandleKind,
        binding: &Binding,
        sealed_id: &str,
    ) -> Option<Zeroizing<String>> {
        let encoded = sealed_id.trim().strip_prefix(prefix(kind))?;
        if encoded.len() > 2 * MAX_UPSTREAM_ID_BYTES + 128 {
            return None;
        }
        let sealed = URL_SAFE_NO_PAD.decode(encoded).ok()?;
        let opened = self
            .sealer
            .open_handle(kind, &binding.associated_data(), &sealed)?;
        String::from_utf8(opened.to_vec()).ok().map(Zeroizing::new)
    }
}
