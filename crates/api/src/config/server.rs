//! The server section: where Cola listens (`COLA_LISTEN`), the URL it is
//! reached at (`COLA_PUBLIC_URL`), which browser origins may call `/mcp`
//! (`COLA_ALLOWED_ORIGINS`), and which proxies' forwarded addresses are
//! believed (`COLA_TRUSTED_PROXIES`).

use std::net::SocketAddr;

use ipnet::IpNet;

use super::reader::{Reader, joined};

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    /// `COLA_PUBLIC_URL` without a trailing slash; `None`: `http://` and the
    /// address actually bound.
    pub public_url: Option<String>,
    pub allowed_origins: Vec<String>,
    pub trusted_proxies: Vec<IpNet>,
}

const DEFAULT_LISTEN: ([u8; 4], u16) = ([127, 0, 0, 1], 8080);

/// A listen address as `COLA_LISTEN` and `--listen` take it.
///
/// # Errors
/// What is expected, for the message naming the variable or flag.
pub fn parse_listen(raw: &str) -> Result<SocketAddr, &'static str> {
    raw.trim()
        .parse()
        .map_err(|_| "must be an address and port, such as 127.0.0.1:8080 or [::1]:8080")
}

impl ServerSettings {
    pub(super) fn read(read: &mut Reader<'_>) -> Self {
        let listen = match read.text("COLA_LISTEN") {
            None => SocketAddr::from(DEFAULT_LISTEN),
            Some(raw) => parse_listen(&raw).unwrap_or_else(|expected| {
                read.fail("COLA_LISTEN", expected);
                SocketAddr::from(DEFAULT_LISTEN)
            }),
        };
        Self {
            listen,
            public_url: public_url(read),
            allowed_origins: allowed_origins(read),
            trusted_proxies: trusted_proxies(read),
        }
    }

    pub(super) fn describe(&self) -> Vec<(&'static str, String)> {
        vec![
            ("COLA_LISTEN", self.listen.to_string()),
            (
                "COLA_PUBLIC_URL",
                self.public_url
                    .as_ref()
                    .map_or_else(|| format!("http://{} (default)", self.listen), Clone::clone),
            ),
            ("COLA_ALLOWED_ORIGINS", self.allowed_origins.join(",")),
            ("COLA_TRUSTED_PROXIES", joined(&self.trusted_proxies)),
        ]
    }
}

/// `COLA_PUBLIC_URL`: an origin and perhaps a path, nothing that a URL
/// built from it would carry by mistake (credentials, a query).
fn public_url(read: &mut Reader<'_>) -> Option<String> {
    let raw = read.text("COLA_PUBLIC_URL")?;
    let raw = raw.trim().trim_end_matches('/').to_owned();
    match url::Url::parse(&raw) {
        Ok(url)
            if matches!(url.scheme(), "http" | "https")
                && url.host().is_some()
                && url.username().is_empty()
                && url.password().is_none()
                && url.query().is_none()
                && url.fragment().is_none() =>
        {
            Some(raw)
        }
        _ => {
            read.fail(
                "COLA_PUBLIC_URL",
                "must be an http:// or https:// URL without user, query or fragment, \
                 such as https://cola.example.com",
            );
            None
        }
    }
}

fn allowed_origins(read: &mut Reader<'_>) -> Vec<String> {
    let mut allowed = Vec::new();
    for origin in read.list("COLA_ALLOWED_ORIGINS") {
        match normalise_origin(&origin) {
            Some(origin) => allowed.push(origin),
            None => read.fail(
                "COLA_ALLOWED_ORIGINS",
                format!("`{origin}` is not an origin of the form scheme://host[:port]"),
            ),
        }
    }
    allowed
}

fn trusted_proxies(read: &mut Reader<'_>) -> Vec<IpNet> {
    let mut trusted = Vec::new();
    for entry in read.list("COLA_TRUSTED_PROXIES") {
        match entry
            .parse::<IpNet>()
            .ok()
            .or_else(|| entry.parse::<std::net::IpAddr>().ok().map(IpNet::from))
        {
            Some(net) => trusted.push(net.trunc()),
            None => read.fail(
                "COLA_TRUSTED_PROXIES",
                format!("`{entry}` is not an IP address or CIDR"),
            ),
        }
    }
    trusted
}

/// `scheme://host[:port]`, lower-cased, default ports dropped, as browsers
/// send the `Origin` header.
#[must_use]
pub fn normalise_origin(raw: &str) -> Option<String> {
    let (scheme, rest) = raw.trim().split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if !matches!(scheme.as_str(), "http" | "https") || rest.is_empty() || rest.contains('/') {
        return None;
    }
    let rest = rest.to_ascii_lowercase();
    let host = match (scheme.as_str(), rest.rsplit_once(':')) {
        ("http", Some((host, "80"))) | ("https", Some((host, "443"))) => host.to_owned(),
        _ => rest,
    };
    if host.contains(['?', '#', '@', ' ']) {
        return None;
    }
    Some(format!("{scheme}://{host}"))
}
