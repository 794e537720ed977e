//! Reading variables: every section reads through one `Reader`, which
//! collects each bad variable with what is wrong with it, so that all of
//! them are reported at once.

/// The environment (or a test's map) and the errors found so far.
pub(super) struct Reader<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    pub(super) errors: Vec<(&'static str, String)>,
}

impl<'a> Reader<'a> {
    pub(super) fn new(lookup: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Self {
            lookup,
            errors: Vec::new(),
        }
    }

    /// Records that `name` is bad, and why.
    pub(super) fn fail(&mut self, name: &'static str, message: impl Into<String>) {
        self.errors.push((name, message.into()));
    }

    /// The variable's value; an empty value counts as unset.
    pub(super) fn text(&self, name: &str) -> Option<String> {
        (self.lookup)(name).filter(|value| !value.trim().is_empty())
    }

    pub(super) fn number(&mut self, name: &'static str, default: u64, range: (u64, u64)) -> u64 {
        match self.text(name) {
            None => default,
            Some(raw) => match raw.trim().parse::<u64>() {
                Ok(value) if (range.0..=range.1).contains(&value) => value,
                _ => {
                    self.fail(
                        name,
                        format!("must be a whole number from {} to {}", range.0, range.1),
                    );
                    default
                }
            },
        }
    }

    /// An identity provider's URL: `https://`, or `http://` to a loopback
    /// host only (a JWKS fetched in the clear could be swapped for an
    /// attacker's keys).
    pub(super) fn provider_url(&mut self, name: &'static str) -> Option<url::Url> {
        let raw = self.text(name)?;
        match url::Url::parse(raw.trim()) {
            Ok(url) if is_safe_provider_url(&url) => Some(url),
            Ok(_) => {
                self.fail(
                    name,
                    "must be an https:// URL (http:// only to localhost, 127.0.0.1 or ::1)",
                );
                None
            }
            Err(error) => {
                self.fail(name, format!("is not a URL: {error}"));
                None
            }
        }
    }

    pub(super) fn list(&self, name: &str) -> Vec<String> {
        self.text(name)
            .map(|raw| {
                raw.split(',')
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Whether `url` may be fetched for signing keys: over TLS, or in the clear
/// only to this machine; never with credentials in it.
#[must_use]
pub fn is_safe_provider_url(url: &url::Url) -> bool {
    let loopback = match url.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(address)) => address.is_loopback(),
        Some(url::Host::Ipv6(address)) => address.is_loopback(),
        None => return false,
    };
    let scheme_ok = url.scheme() == "https" || (url.scheme() == "http" && loopback);
    scheme_ok && url.username().is_empty() && url.password().is_none()
}

/// A PEM file's text; the error names the path, never the contents.
pub(super) fn read_pem(path: &str) -> Result<zeroize::Zeroizing<String>, String> {
    std::fs::read_to_string(path)
        .map(zeroize::Zeroizing::new)
        .map_err(|error| format!("cannot read {path}: {error}"))
}

pub(super) fn as_u32(value: u64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

/// `value`, or `unset`, for a description.
pub(super) fn or_unset(value: Option<String>) -> String {
    value.unwrap_or_else(|| "unset".into())
}

/// A list, comma-separated, for a description.
pub(super) fn joined<T: ToString>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}
