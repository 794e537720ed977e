//! The keys section: key lifetimes and the per-user cap
//! (`COLA_DEFAULT_KEY_TTL_DAYS`, `COLA_MAX_KEY_TTL_DAYS`,
//! `COLA_MAX_ACTIVE_KEYS_PER_USER`), how keys are verified
//! (`COLA_AUTH_CACHE_TTL_SECS`, `COLA_AUTH_FAILURE_LIMIT`), and who may
//! report leaked ones (`COLA_SECRET_SCANNING_KEYS_FILE`).

use std::path::PathBuf;
use std::time::Duration;

use super::reader::{Reader, as_u32};
use crate::rest::secret_scanning::SecretScanningKeys;

#[derive(Debug, Clone)]
pub struct KeySettings {
    pub default_key_ttl_days: u32,
    pub max_key_ttl_days: u32,
    pub max_active_keys_per_user: u32,
    pub auth_cache_ttl: Duration,
    pub auth_failure_limit: u32,
    /// GitHub's secret-scanning public keys; `None`: that route answers 404.
    pub secret_scanning_keys: Option<SecretScanningKeys>,
}

impl KeySettings {
    pub(super) fn read(read: &mut Reader<'_>) -> Self {
        let default_key_ttl_days =
            as_u32(read.number("COLA_DEFAULT_KEY_TTL_DAYS", 90, (1, 36_500)));
        let max_key_ttl_days = as_u32(read.number("COLA_MAX_KEY_TTL_DAYS", 365, (1, 36_500)));
        if default_key_ttl_days > max_key_ttl_days {
            read.fail(
                "COLA_DEFAULT_KEY_TTL_DAYS",
                format!("must not exceed COLA_MAX_KEY_TTL_DAYS ({max_key_ttl_days})"),
            );
        }
        Self {
            default_key_ttl_days,
            max_key_ttl_days,
            max_active_keys_per_user: as_u32(read.number(
                "COLA_MAX_ACTIVE_KEYS_PER_USER",
                25,
                (1, 100_000),
            )),
            auth_cache_ttl: Duration::from_secs(read.number(
                "COLA_AUTH_CACHE_TTL_SECS",
                30,
                (0, 3600),
            )),
            auth_failure_limit: as_u32(read.number("COLA_AUTH_FAILURE_LIMIT", 20, (20, 99))),
            secret_scanning_keys: secret_scanning_keys(read),
        }
    }

    pub(super) fn describe(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "COLA_DEFAULT_KEY_TTL_DAYS",
                self.default_key_ttl_days.to_string(),
            ),
            ("COLA_MAX_KEY_TTL_DAYS", self.max_key_ttl_days.to_string()),
            (
                "COLA_MAX_ACTIVE_KEYS_PER_USER",
                self.max_active_keys_per_user.to_string(),
            ),
            (
                "COLA_AUTH_CACHE_TTL_SECS",
                self.auth_cache_ttl.as_secs().to_string(),
            ),
            (
                "COLA_AUTH_FAILURE_LIMIT",
                self.auth_failure_limit.to_string(),
            ),
            (
                "COLA_SECRET_SCANNING_KEYS_FILE",
                self.secret_scanning_keys.as_ref().map_or_else(
                    || "unset (POST /api/secret-scanning/github answers 404)".to_owned(),
                    |keys| format!("{} public key(s)", keys.len()),
                ),
            ),
        ]
    }
}

fn secret_scanning_keys(read: &mut Reader<'_>) -> Option<SecretScanningKeys> {
    let path = read.text("COLA_SECRET_SCANNING_KEYS_FILE")?;
    SecretScanningKeys::load(&PathBuf::from(path.trim()))
        .map_err(|error| read.fail("COLA_SECRET_SCANNING_KEYS_FILE", error))
        .ok()
}
