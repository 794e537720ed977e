//! Request and response shapes of the server registry (docs/gateway.md), and the
//! one conversion of each request into a typed command.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use cola_domain::{
    AllowedNetworks, KeyName, RegisteredServer, ServerId, ServerSlug, ServerTimeout,
    UpstreamHeaders, UpstreamUrl,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::dto::{Patch, encode_id_cursor, page};
use crate::error::FieldErrors;

/// `POST /api/mcp/servers`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateServerRequest {
    /// 1..40 of `[a-z0-9-]`, unique in the tenant: the path segment of
    /// `/mcp/{slug}`. Cannot be changed later.
    #[schema(min_length = 1, max_length = 40, pattern = "^[a-z0-9-]+$")]
    pub slug: String,
    /// 1..100 characters after trimming, no control characters.
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    /// The upstream's Streamable HTTP endpoint (http or https, no user info,
    /// a public host unless the operator allows its network); `null` or
    /// omitted = verify-only.
    #[serde(default)]
    pub url: Option<String>,
    /// Sent upstream on every request. Write-only: stored encrypted and
    /// shown only as `header_names`. At most 20.
    #[serde(default)]
    #[schema(value_type = Option<BTreeMap<String, String>>)]
    pub headers: Option<BTreeMap<String, String>>,
    /// Whether every upstream request carries `X-Cola-Identity`.
    #[serde(default)]
    #[schema(default = false)]
    pub forward_identity: Option<bool>,
    /// Seconds until the upstream starts answering, 1..300.
    #[serde(default)]
    #[schema(default = 30, minimum = 1, maximum = 300)]
    pub timeout_secs: Option<i64>,
}

/// A create body as a typed command.
#[derive(Debug)]
pub(crate) struct NewServerCommand {
    pub slug: ServerSlug,
    pub name: KeyName,
    pub url: Option<UpstreamUrl>,
    pub headers: UpstreamHeaders,
    pub forward_identity: bool,
    pub timeout: ServerTimeout,
}

impl CreateServerRequest {
    /// Every field parsed once by its domain parser; every failure named.
    pub(crate) fn into_command(
        self,
        allowed: &AllowedNetworks,
    ) -> Result<NewServerCommand, FieldErrors> {
        let mut errors = FieldErrors::default();
        let slug = ServerSlug::parse(&self.slug)
            .map_err(|e| errors.add("slug", e.to_string()))
            .ok();
        let name = parse_name(&self.name, &mut errors);
        let url = match self.url {
            None => Some(None),
            Some(raw) => parse_url(&raw, allowed, &mut errors).map(Some),
        };
        let headers = parse_headers(self.headers.unwrap_or_default(), &mut errors);
        let timeout = match self.timeout_secs {
            None => Some(ServerTimeout::default()),
            Some(secs) => parse_timeout(secs, &mut errors),
        };
        match (slug, name, url, headers, timeout) {
            (Some(slug), Some(name), Some(url), Some(headers), Some(timeout))
                if errors.is_empty() =>
            {
                Ok(NewServerCommand {
                    slug,
                    name,
                    url,
                    headers,
                    forward_identity: self.forward_identity.unwrap_or(false),
                    timeout,
                })
            }
            _ => Err(errors),
        }
    }
}

/// `PATCH /api/mcp/servers/{id}`: fields left out keep their value; a
/// `headers` map replaces the stored one whole; `"url": null` makes the
/// server verify-only.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateServerRequest {
    #[serde(default)]
    #[schema(value_type = String, required = false, min_length = 1, max_length = 100)]
    pub name: Patch<String>,
    #[serde(default)]
    #[schema(value_type = Option<String>, required = false)]
    pub url: Patch<String>,
    /// Replaces every header; `{}` removes them all.
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, String>, required = false)]
    pub headers: Patch<BTreeMap<String, String>>,
    #[serde(default)]
    #[schema(value_type = bool, required = false)]
    pub forward_identity: Patch<bool>,
    #[serde(default)]
    #[schema(value_type = i64, required = false, minimum = 1, maximum = 300)]
    pub timeout_secs: Patch<i64>,
    /// Not changeable; given, it is a 400 naming it (rather than an unknown
    /// field), so the reason is clear.
    #[serde(default)]
    #[schema(ignore)]
    pub slug: Patch<serde_json::Value>,
}

/// A PATCH body as a typed change; `headers: Some(_)` replaces them.
#[derive(Debug, Default)]
pub(crate) struct ServerPatch {
    pub name: Option<KeyName>,
    pub url: Option<Option<UpstreamUrl>>,
    pub headers: Option<UpstreamHeaders>,
    pub forward_identity: Option<bool>,
    pub timeout: Option<ServerTimeout>,
}

impl UpdateServerRequest {
    pub(crate) fn into_patch(self, allowed: &AllowedNetworks) -> Result<ServerPatch, FieldErrors> {
        let mut errors = FieldErrors::default();
        if self.slug != Patch::Keep {
            errors.add(
                "slug",
                "cannot be changed; register a new server with the new slug instead",
            );
        }
        let not_null = |field: &str, errors: &mut FieldErrors| {
            errors.add(field, "must not be null");
        };
        let name = match self.name {
            Patch::Keep => None,
            Patch::Null => {
                not_null("name", &mut errors);
                None
            }
            Patch::Set(name) => parse_name(&name, &mut errors),
        };
        let url = match self.url {
            Patch::Keep => None,
            Patch::Null => Some(None),
            Patch::Set(raw) => parse_url(&raw, allowed, &mut errors).map(Some),
        };
        let headers = match self.headers {
            Patch::Keep => None,
            Patch::Null => {
                errors.add("headers", "must not be null; `{}` removes every header");
                None
            }
            Patch::Set(map) => parse_headers(map, &mut errors),
        };
        let forward_identity = match self.forward_identity {
            Patch::Keep => None,
            Patch::Null => {
                not_null("forward_identity", &mut errors);
                None
            }
            Patch::Set(forward) => Some(forward),
        };
        let timeout = match self.timeout_secs {
            Patch::Keep => None,
            Patch::Null => {
                not_null("timeout_secs", &mut errors);
                None
            }
            Patch::Set(secs) => parse_timeout(secs, &mut errors),
        };
        if errors.is_empty() {
            Ok(ServerPatch {
                name,
                url,
                headers,
                forward_identity,
                timeout,
            })
        } else {
            Err(errors)
        }
    }
}

fn parse_name(raw: &str, errors: &mut FieldErrors) -> Option<KeyName> {
    KeyName::parse(raw)
        .map_err(|e| errors.add("name", e.to_string()))
        .ok()
}

fn parse_url(
    raw: &str,
    allowed: &AllowedNetworks,
    errors: &mut FieldErrors,
) -> Option<UpstreamUrl> {
    UpstreamUrl::parse(raw, allowed)
        .map_err(|e| errors.add("url", e.to_string()))
        .ok()
}

fn parse_timeout(secs: i64, errors: &mut FieldErrors) -> Option<ServerTimeout> {
    ServerTimeout::from_secs(secs)
        .map_err(|e| errors.add("timeout_secs", e.to_string()))
        .ok()
}

/// Each bad header is named `headers.<name>`; too many is `headers`. The
/// message never repeats a value.
fn parse_headers(
    map: BTreeMap<String, String>,
    errors: &mut FieldErrors,
) -> Option<UpstreamHeaders> {
    UpstreamHeaders::parse(map.into_iter().collect())
        .map_err(|found| {
            for (name, error) in found {
                let field = name.map_or_else(|| "headers".to_owned(), |n| format!("headers.{n}"));
                errors.add(field, error.to_string());
            }
        })
        .ok()
}

/// `GET /api/mcp/servers` query, as given.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListServersQuery {
    /// Page size, 1..100 (default 50).
    #[param(value_type = Option<u8>, minimum = 1, maximum = 100)]
    pub limit: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl ListServersQuery {
    pub(crate) fn into_valid(self) -> Result<(u64, Option<ServerId>), FieldErrors> {
        let mut errors = FieldErrors::default();
        let (limit, after) = page(self.limit.as_deref(), self.cursor.as_deref(), &mut errors);
        let after = after.map(ServerId::from_uuid);
        if errors.is_empty() {
            Ok((limit, after))
        } else {
            Err(errors)
        }
    }
}

pub(crate) fn encode_cursor(id: ServerId) -> String {
    encode_id_cursor(id.as_uuid())
}

/// A server as the API shows it: header names, never a header value.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Server)]
pub struct ServerView {
    #[schema(value_type = Uuid)]
    pub id: ServerId,
    #[schema(value_type = Uuid)]
    pub tenant_id: cola_domain::TenantId,
    pub slug: String,
    pub name: String,
    /// `null`: verify-only.
    #[schema(required)]
    pub url: Option<String>,
    pub header_names: Vec<String>,
    pub forward_identity: bool,
    pub timeout_secs: u16,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl ServerView {
    #[must_use]
    pub fn of(server: &RegisteredServer) -> Self {
        Self {
            id: server.id(),
            tenant_id: server.tenant_id(),
            slug: server.slug().as_str().to_owned(),
            name: server.name().as_str().to_owned(),
            url: server.url().map(|url| url.as_str().to_owned()),
            header_names: server
                .header_names()
                .iter()
                .map(|name| name.as_str().to_owned())
                .collect(),
            forward_identity: server.forward_identity(),
            timeout_secs: server.timeout().secs(),
            created_at: server.created_at(),
            updated_at: server.updated_at(),
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ServerPage {
    pub items: Vec<ServerView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    #[schema(required)]
    pub next_cursor: Option<String>,
}

/// `POST /api/mcp/servers/{id}/token`: the server's new verification
/// token, shown this once.
#[derive(Clone, Serialize, ToSchema)]
pub struct MintedTokenView {
    /// `colasrv_…`: what the server presents to `POST /api/mcp/verify`.
    pub token: String,
}

impl std::fmt::Debug for MintedTokenView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MintedTokenView([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(errors: &FieldErrors) -> Vec<&str> {
        errors.fields().keys().map(String::as_str).collect()
    }

    fn create(body: serde_json::Value) -> Result<NewServerCommand, FieldErrors> {
        serde_json::from_value::<CreateServerRequest>(body)
            .expect("shape")
            .into_command(&AllowedNetworks::default())
    }

    #[test]
    fn a_minimal_create_takes_the_defaults() {
        let command = create(json!({ "slug": "gh", "name": "GitHub" })).expect("valid");
        assert!(command.url.is_none() && command.headers.is_empty());
        assert!(!command.forward_identity);
        assert_eq!(command.timeout.secs(), 30);
    }

    #[test]
    fn one_create_names_every_bad_field() {
        let errors = create(json!({
            "slug": "Bad Slug", "name": " ", "url": "ftp://x", "timeout_secs": 0,
            "headers": { "Host": "x", "X-Ok": "bad\nvalue" },
        }))
        .expect_err("invalid");
        assert_eq!(
            fields(&errors),
            [
                "headers.Host",
                "headers.X-Ok",
                "name",
                "slug",
                "timeout_secs",
                "url"
            ]
        );
    }

    #[test]
    fn a_header_error_never_repeats_the_value() {
        let errors = create(json!({ "slug": "gh", "name": "n",
            "headers": { "X-Token": "secret\u{7}value" } }))
        .expect_err("invalid");
        assert!(!format!("{errors:?}").contains("secret"));
    }

    #[test]
    fn a_slug_in_a_patch_is_refused_by_name() {
        let request: UpdateServerRequest =
            serde_json::from_value(json!({ "slug": "other" })).expect("shape");
        let errors = request
            .into_patch(&AllowedNetworks::default())
            .expect_err("slug");
        assert_eq!(fields(&errors), ["slug"]);
    }

    #[test]
    fn a_patch_url_of_null_makes_the_server_verify_only() {
        let request: UpdateServerRequest =
            serde_json::from_value(json!({ "url": null })).expect("shape");
        let patch = request
            .into_patch(&AllowedNetworks::default())
            .expect("valid");
        assert_eq!(patch.url, Some(None));
    }
}
