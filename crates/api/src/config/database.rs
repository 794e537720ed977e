//! The database section: `COLA_DATABASE_URL`.

use super::Secret;
use super::reader::Reader;

pub const DEFAULT_DATABASE_URL: &str = "sqlite://cola.db?mode=rwc";

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// May hold a password: never shown but masked ([`mask_url`]).
    pub url: Secret,
}

impl DatabaseSettings {
    pub(super) fn read(read: &mut Reader<'_>) -> Self {
        let url = read
            .text("COLA_DATABASE_URL")
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            read.fail(
                "COLA_DATABASE_URL",
                "must start with sqlite:, postgres:// or postgresql://",
            );
        }
        Self {
            url: Secret::new(url),
        }
    }

    pub(super) fn describe(&self) -> Vec<(&'static str, String)> {
        vec![("COLA_DATABASE_URL", mask_url(self.url.expose()))]
    }
}

/// A database URL without its password, wherever it is written: in the
/// user info (`postgres://u:pw@h/db`) or in the query, as libpq also takes it
/// (`postgres://u@h/db?password=pw`, `sslpassword=`). Parameter names are
/// compared decoded, so `pass%77ord` is masked too. A URL that cannot be
/// parsed is not shown at all, since where its password is cannot be told.
pub(super) fn mask_url(raw: &str) -> String {
    const MASK: &str = "****";
    let Ok(mut url) = url::Url::parse(raw) else {
        let scheme = raw.split_once(':').map_or("", |(scheme, _)| scheme);
        return format!("{scheme}:… (not shown: unparsable)");
    };
    if url.password().is_some() {
        // Only a URL that cannot have a password refuses one.
        let _ = url.set_password(Some(MASK));
    }
    if url.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(name, value)| {
                let value = if is_secret_parameter(&name) {
                    MASK.to_owned()
                } else {
                    value.into_owned()
                };
                (name.into_owned(), value)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

/// Whether a connection parameter holds a secret (`password`,
/// `sslpassword`, and the like).
fn is_secret_parameter(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["password", "passwd", "secret", "token"]
        .iter()
        .any(|word| name.contains(word))
}
