//! The console section: the OpenID Connect client the console signs people
//! in with (`COLA_OIDC_CLIENT_ID`, `COLA_OIDC_CLIENT_SECRET`, with the
//! issuer of `COLA_OIDC_ISSUER`).

use super::reader::Reader;
use super::{MIN_SECRET_BYTES, Secret};

/// The console's OpenID Connect client (`COLA_OIDC_CLIENT_ID` and
/// `COLA_OIDC_CLIENT_SECRET`, with `COLA_OIDC_ISSUER`).
#[derive(Debug, Clone)]
pub struct OidcClientSettings {
    pub issuer: url::Url,
    pub client_id: String,
    /// Also keys the console's session cookies, so every instance that
    /// shares the client shares the sessions.
    pub client_secret: Secret,
}

/// The console's client, `None` when neither the id nor the secret is set.
/// Either without the other, or without the issuer, is an error.
pub(super) fn read(read: &mut Reader<'_>, issuer: Option<&url::Url>) -> Option<OidcClientSettings> {
    let client_id = read.text("COLA_OIDC_CLIENT_ID");
    let client_secret = read.text("COLA_OIDC_CLIENT_SECRET");
    let (client_id, secret, issuer) = match (client_id, client_secret, issuer) {
        (None, None, _) => return None,
        (Some(_), _, None) | (None, Some(_), None) => {
            read.fail(
                "COLA_OIDC_ISSUER",
                "is required with COLA_OIDC_CLIENT_ID: the console discovers where to sign in \
                 from it",
            );
            return None;
        }
        (None, Some(_), Some(_)) => {
            read.fail(
                "COLA_OIDC_CLIENT_ID",
                "is required with COLA_OIDC_CLIENT_SECRET",
            );
            return None;
        }
        (Some(_), None, Some(_)) => {
            read.fail(
                "COLA_OIDC_CLIENT_SECRET",
                "is required with COLA_OIDC_CLIENT_ID: the console is a confidential client, \
                 and the secret also keys its session cookies",
            );
            return None;
        }
        (Some(client_id), Some(secret), Some(issuer)) => (client_id, secret, issuer),
    };
    if secret.len() < MIN_SECRET_BYTES {
        read.fail(
            "COLA_OIDC_CLIENT_SECRET",
            format!(
                "must be at least {MIN_SECRET_BYTES} bytes long: it keys the console's session \
                 cookies"
            ),
        );
        return None;
    }
    Some(OidcClientSettings {
        issuer: issuer.clone(),
        client_id: client_id.trim().to_owned(),
        client_secret: Secret::new(secret),
    })
}

/// The section as `check-config` prints it, the secret masked.
pub(super) fn describe(client: Option<&OidcClientSettings>) -> Vec<(&'static str, String)> {
    vec![
        (
            "COLA_OIDC_CLIENT_ID",
            client.map_or_else(|| "unset".into(), |c| c.client_id.clone()),
        ),
        (
            "COLA_OIDC_CLIENT_SECRET",
            if client.is_some() {
                "set (masked)".into()
            } else {
                "unset".into()
            },
        ),
    ]
}
