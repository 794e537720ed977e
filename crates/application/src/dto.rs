//! Request and response shapes of the use cases, and the one conversion of
//! each request into a typed command.
//!
//! Every rule lives once, in the domain's parsers. A conversion parses each
//! field exactly once into its domain type and collects every failure under
//! the field's path, so one 400 names every bad field and nothing downstream
//! parses again (zero2prod's `TryFrom<FormData> for NewSubscriber`).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap};

use cola_domain::{
    ApiKeyId, ApiKeyPermissions, ApiKeySecret, EffectiveStatus, ExpiryPolicy, ExpiryRequest,
    IpWhitelist, KeyDescription, KeyName, LeakReport, McpApiKey, PermissionsChange, RateLimit,
    ServerGrant, ServerId, ServerSlug,
};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::error::FieldErrors;
use crate::ports::{Cursor, RecordedEvent};

/// A field of a partial update: left out, explicitly `null`, or a value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Patch<T> {
    #[default]
    Keep,
    Null,
    Set(T),
}

impl<T> Patch<T> {
    /// `None` when left out, `Some(None)` for `null`, `Some(Some(value))`
    /// for a value: the shape of a partial change whose `null` means
    /// something (such as "every tool").
    pub fn into_option(self) -> Option<Option<T>> {
        match self {
            Self::Keep => None,
            Self::Null => Some(None),
            Self::Set(value) => Some(Some(value)),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Patch<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Option::<T>::deserialize(deserializer).map(|value| value.map_or(Self::Null, Self::Set))
    }
}

const fn default_read() -> bool {
    true
}

/// The permissions of a key as given in a request. Omitted fields take their
/// defaults: read only, no allow-lists.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PermissionsInput {
    /// Whether the key may read (list and read resources, call read-only
    /// tools). At least one of `read` and `write` must be true.
    #[serde(default = "default_read")]
    #[schema(default = true)]
    pub read: bool,
    /// Whether the key may call tools that change things.
    #[serde(default)]
    #[schema(default = false)]
    pub write: bool,
    /// Tool names the key may call; `null` = every tool the flags allow,
    /// `[]` = none.
    #[serde(default)]
    pub allowed_tools: Option<Vec<String>>,
    /// Resource URIs the key may read; a trailing `*` matches a prefix.
    /// `null` = every resource, `[]` = none.
    #[serde(default)]
    pub allowed_resources: Option<Vec<String>>,
    /// What the key may use on the tenant's servers, by slug. A server not
    /// named is unreachable with the key; omitted or `null` = no server.
    #[serde(default)]
    pub servers: Option<BTreeMap<String, GrantInput>>,
}

/// A grant on one server, as given. Inside a grant, `null` = everything the
/// key's flags allow, `[]` = nothing; a trailing `*` matches a prefix.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantInput {
    /// Tool names or `prefix*` patterns.
    #[serde(default)]
    pub allowed_tools: Option<Vec<String>>,
    /// Resource URIs (and resource templates' `uriTemplate`s) or `prefix*`.
    #[serde(default)]
    pub allowed_resources: Option<Vec<String>>,
    /// Prompt names or `prefix*` patterns.
    #[serde(default)]
    pub allowed_prompts: Option<Vec<String>>,
}

/// The permissions of a key as a PATCH changes them. Inside the object, a
/// field left out keeps its value — leaving out `allowed_tools` never widens
/// a key — and a field given replaces it: `null` for a list = whatever the
/// flags allow, `[]` = nothing; `servers` replaces every grant (`null` or
/// `{}` = no server).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PermissionsPatch)]
pub struct PermissionsPatchInput {
    /// Whether the key may read; left out = unchanged; must not be `null`.
    #[serde(default)]
    #[schema(value_type = bool, required = false)]
    pub read: Patch<bool>,
    /// Whether the key may call tools that change things; left out =
    /// unchanged; must not be `null`.
    #[serde(default)]
    #[schema(value_type = bool, required = false)]
    pub write: Patch<bool>,
    /// Tool names the key may call; left out = unchanged, `null` = every
    /// tool the flags allow, `[]` = none.
    #[serde(default)]
    #[schema(value_type = Option<Vec<String>>, required = false)]
    pub allowed_tools: Patch<Vec<String>>,
    /// Resource URIs the key may read (a trailing `*` matches a prefix);
    /// left out = unchanged, `null` = every resource, `[]` = none.
    #[serde(default)]
    #[schema(value_type = Option<Vec<String>>, required = false)]
    pub allowed_resources: Patch<Vec<String>>,
    /// The key's grants on the tenant's servers, by slug; left out =
    /// unchanged; given = replaces every grant; `null` or `{}` = no server.
    #[serde(default)]
    #[schema(value_type = Option<BTreeMap<String, GrantInput>>, required = false)]
    pub servers: Patch<BTreeMap<String, GrantInput>>,
}

/// The tenant's servers a request's grants name, looked up before the
/// request is converted: slug → the server's id.
pub(crate) type KnownServers = HashMap<String, (ServerId, ServerSlug)>;

impl PermissionsInput {
    /// The slugs the grants name, to look up before [`Self::parse`].
    pub(crate) fn server_slugs(&self) -> Vec<ServerSlug> {
        self.servers
            .iter()
            .flat_map(BTreeMap::keys)
            .filter_map(|slug| ServerSlug::parse(slug).ok())
            .collect()
    }

    /// The domain's permissions, or every failure added to `errors` (under
    /// `permissions`, `permissions.allowed_*` and
    /// `permissions.servers.<slug>[.allowed_*]`). A slug must be in `known`.
    fn parse(self, known: &KnownServers, errors: &mut FieldErrors) -> Option<ApiKeyPermissions> {
        let grants = parse_grants(self.servers.unwrap_or_default(), known, errors);
        let permissions = ApiKeyPermissions::new(
            self.read,
            self.write,
            self.allowed_tools,
            self.allowed_resources,
        )
        .map_err(|found| add_permission_errors(found, errors))
        .ok()?;
        Some(permissions.with_servers(grants?))
    }
}

impl PermissionsPatchInput {
    /// The slugs the grants name, to look up before [`Self::parse`].
    fn server_slugs(&self) -> Vec<ServerSlug> {
        match &self.servers {
            Patch::Set(servers) => servers
                .keys()
                .filter_map(|slug| ServerSlug::parse(slug).ok())
                .collect(),
            Patch::Keep | Patch::Null => Vec::new(),
        }
    }

    /// The domain's change, or every failure added to `errors` under the
    /// same paths as a create's. Omitted fields stay out of the change.
    fn parse(self, known: &KnownServers, errors: &mut FieldErrors) -> Option<PermissionsChange> {
        let mut flag = |name: &str, given: Patch<bool>| match given {
            Patch::Keep => None,
            Patch::Null => {
                errors.add(format!("permissions.{name}"), "must not be null");
                None
            }
            Patch::Set(value) => Some(value),
        };
        let read = flag("read", self.read);
        let write = flag("write", self.write);
        let grants = match self.servers {
            Patch::Keep => Some(None),
            Patch::Null => Some(Some(Vec::new())),
            Patch::Set(servers) => parse_grants(servers, known, errors).map(Some),
        };
        let change = PermissionsChange::new(
            read,
            write,
            self.allowed_tools.into_option(),
            self.allowed_resources.into_option(),
        )
        .map_err(|found| add_permission_errors(found, errors))
        .ok()?;
        match grants? {
            Some(grants) => Some(change.with_servers(grants)),
            None => Some(change),
        }
    }
}

/// The grants of a `servers` map, each slug resolved through `known`, or
/// `None` with every failure in `errors` (under
/// `permissions.servers.<slug>[.allowed_*]`).
fn parse_grants(
    servers: BTreeMap<String, GrantInput>,
    known: &KnownServers,
    errors: &mut FieldErrors,
) -> Option<Vec<ServerGrant>> {
    let mut grants = Vec::new();
    let mut valid = true;
    for (slug, grant) in servers {
        let field = format!("permissions.servers.{slug}");
        let Some((id, server_slug)) = known.get(&slug) else {
            errors.add(field, "no server of the tenant has this slug");
            valid = false;
            continue;
        };
        match ServerGrant::new(
            *id,
            server_slug.clone(),
            grant.allowed_tools,
            grant.allowed_resources,
            grant.allowed_prompts,
        ) {
            Ok(grant) => grants.push(grant),
            Err(found) => {
                valid = false;
                for (list, error) in found {
                    errors.add(format!("{field}.{list}"), error.to_string());
                }
            }
        }
    }
    valid.then_some(grants)
}

fn add_permission_errors(
    found: Vec<(&'static str, cola_domain::PermissionsError)>,
    errors: &mut FieldErrors,
) {
    for (field, error) in found {
        errors.add(field, error.to_string());
    }
}

/// A key's own rate limit as given: at most `requests` per `per_secs`
/// seconds (a burst of `requests`, refilled continuously).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RateLimit)]
pub struct RateLimitInput {
    /// 1..1 000 000.
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub requests: i64,
    /// 1..86 400.
    #[schema(minimum = 1, maximum = 86_400)]
    pub per_secs: i64,
}

impl RateLimitInput {
    /// The domain's limit, or each failure under `rate_limit.<field>`.
    fn parse(self, errors: &mut FieldErrors) -> Option<RateLimit> {
        RateLimit::new(self.requests, self.per_secs)
            .map_err(|found| {
                for error in found {
                    errors.add(format!("rate_limit.{}", error.field()), error.to_string());
                }
            })
            .ok()
    }
}

/// `POST /api/mcp/keys`. Owner and tenant come from the caller, never from
/// the body: unknown fields (`tenant_id`, `user_id`, `key`, …) are refused.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// 1..100 characters after trimming, no control characters.
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    /// At most 500 characters; empty means none.
    #[serde(default)]
    #[schema(max_length = 500)]
    pub description: Option<String>,
    /// Omitted: read only, no allow-lists.
    #[serde(default)]
    pub permissions: Option<PermissionsInput>,
    /// At most 50 IP addresses or CIDRs; omitted or `[]` = any address.
    #[serde(default)]
    #[schema(max_items = 50)]
    pub ip_whitelist: Option<Vec<String>>,
    /// Days until the key expires, 1..`COLA_MAX_KEY_TTL_DAYS`. Not together
    /// with `expires_at`; neither means the default TTL.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub expires_in_days: Option<i64>,
    /// When the key expires: in the future and within the maximum TTL.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// The key's own rate limit; omitted or `null` = none.
    #[serde(default)]
    pub rate_limit: Option<RateLimitInput>,
}

/// A create request as a typed command: every field parsed, the expiry
/// resolved against the policy.
#[derive(Debug)]
pub(crate) struct NewKeyCommand {
    pub name: KeyName,
    pub description: Option<KeyDescription>,
    pub permissions: ApiKeyPermissions,
    pub ip_whitelist: IpWhitelist,
    pub rate_limit: Option<RateLimit>,
    pub expires_at: DateTime<Utc>,
}

impl CreateKeyRequest {
    /// The servers the body's grants name.
    pub(crate) fn server_slugs(&self) -> Vec<ServerSlug> {
        self.permissions
            .as_ref()
            .map(PermissionsInput::server_slugs)
            .unwrap_or_default()
    }

    /// The one conversion of a create body, naming every bad field at once.
    /// `known` holds the tenant's servers that the grants name.
    pub(crate) fn into_command(
        self,
        expiry: &ExpiryPolicy,
        known: &KnownServers,
        now: DateTime<Utc>,
    ) -> Result<NewKeyCommand, FieldErrors> {
        let mut errors = FieldErrors::default();
        let name = KeyName::parse(&self.name)
            .map_err(|e| errors.add("name", e.to_string()))
            .ok();
        let description = parse_description(self.description.as_deref(), &mut errors);
        let permissions = match self.permissions {
            Some(given) => given.parse(known, &mut errors),
            None => Some(ApiKeyPermissions::default()),
        };
        let ip_whitelist = IpWhitelist::parse_new(self.ip_whitelist.as_deref().unwrap_or_default())
            .map_err(|e| errors.add("ip_whitelist", e.to_string()))
            .ok();
        let expires_at = parse_expiry(
            self.expires_in_days,
            self.expires_at,
            expiry,
            now,
            &mut errors,
        );
        let rate_limit = self.rate_limit.map(|given| given.parse(&mut errors));
        match (name, description, permissions, ip_whitelist, expires_at) {
            (
                Some(name),
                Some(description),
                Some(permissions),
                Some(ip_whitelist),
                Some(expires_at),
            ) if errors.is_empty() => Ok(NewKeyCommand {
                name,
                description,
                permissions,
                ip_whitelist,
                rate_limit: rate_limit.flatten(),
                expires_at,
            }),
            _ => Err(errors),
        }
    }
}

/// `expires_in_days` or `expires_at` (not both), resolved against the
/// policy; neither is the policy's default.
fn parse_expiry(
    in_days: Option<i64>,
    at: Option<DateTime<Utc>>,
    policy: &ExpiryPolicy,
    now: DateTime<Utc>,
    errors: &mut FieldErrors,
) -> Option<DateTime<Utc>> {
    let (request, field) = match (in_days, at) {
        (Some(_), Some(_)) => {
            let message = "give either expires_in_days or expires_at, not both";
            errors.add("expires_in_days", message);
            errors.add("expires_at", message);
            return None;
        }
        (Some(days), None) => (ExpiryRequest::InDays(days), "expires_in_days"),
        (None, Some(at)) => (ExpiryRequest::At(at), "expires_at"),
        (None, None) => (ExpiryRequest::Default, "expires_in_days"),
    };
    policy
        .resolve(request, now)
        .map_err(|e| errors.add(field, e.to_string()))
        .ok()
}

/// An empty description is no description. `None` when it is invalid (the
/// failure is in `errors`).
fn parse_description(
    given: Option<&str>,
    errors: &mut FieldErrors,
) -> Option<Option<KeyDescription>> {
    match given {
        None | Some("") => Some(None),
        Some(text) => KeyDescription::parse(text)
            .map(Some)
            .map_err(|e| errors.add("description", e.to_string()))
            .ok(),
    }
}

/// `PATCH /api/mcp/keys/{id}/metadata`: fields left out keep their value;
/// `"description": null` clears the description.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateMetadataRequest {
    /// The new name (1..100 characters); must not be `null`.
    #[serde(default)]
    #[schema(value_type = String, required = false, min_length = 1, max_length = 100)]
    pub name: Patch<String>,
    /// The new description (at most 500 characters); `null` clears it.
    #[serde(default)]
    #[schema(value_type = Option<String>, max_length = 500)]
    pub description: Patch<String>,
}

impl UpdateMetadataRequest {
    pub(crate) fn into_valid(
        self,
    ) -> Result<(Option<KeyName>, Option<Option<KeyDescription>>), FieldErrors> {
        let mut errors = FieldErrors::default();
        let name = match self.name {
            Patch::Keep => None,
            Patch::Null => {
                errors.add("name", "must not be null");
                None
            }
            Patch::Set(name) => KeyName::parse(&name)
                .map_err(|e| errors.add("name", e.to_string()))
                .ok(),
        };
        let description = match self.description {
            Patch::Keep => None,
            Patch::Null => Some(None),
            Patch::Set(text) => parse_description(Some(&text), &mut errors),
        };
        if errors.is_empty() {
            Ok((name, description))
        } else {
            Err(errors)
        }
    }
}

/// `POST /api/mcp/keys/{id}/rotate`: every field is optional.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateKeyRequest {
    /// How long the old key stays usable, 0..86 400 seconds (default 0:
    /// refused from the next request on). Never past its own expiry.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 86_400, default = 0)]
    pub grace_period_secs: Option<i64>,
    /// Days until the new key expires, as at create; neither this nor
    /// `expires_at` means the default TTL.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub expires_in_days: Option<i64>,
    /// When the new key expires, as at create.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

/// The longest grace a rotation may give the old key.
pub const MAX_GRACE_PERIOD_SECS: i64 = 86_400;

/// A rotate request as a typed command.
#[derive(Debug)]
pub(crate) struct RotateCommand {
    pub grace: chrono::Duration,
    pub expires_at: DateTime<Utc>,
}

impl RotateKeyRequest {
    pub(crate) fn into_command(
        self,
        expiry: &ExpiryPolicy,
        now: DateTime<Utc>,
    ) -> Result<RotateCommand, FieldErrors> {
        let mut errors = FieldErrors::default();
        let grace = match self.grace_period_secs.unwrap_or(0) {
            secs if (0..=MAX_GRACE_PERIOD_SECS).contains(&secs) => {
                Some(chrono::Duration::seconds(secs))
            }
            _ => {
                errors.add(
                    "grace_period_secs",
                    format!("must be a whole number from 0 to {MAX_GRACE_PERIOD_SECS}"),
                );
                None
            }
        };
        let expires_at = parse_expiry(
            self.expires_in_days,
            self.expires_at,
            expiry,
            now,
            &mut errors,
        );
        match (grace, expires_at) {
            (Some(grace), Some(expires_at)) if errors.is_empty() => {
                Ok(RotateCommand { grace, expires_at })
            }
            _ => Err(errors),
        }
    }
}

/// `POST /api/mcp/keys/report`: a key found where it should not be.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportKeyRequest {
    /// The full key as found. Anything is accepted; only a real key is acted on.
    pub key: String,
    /// Where it was found (at most 2048 characters).
    #[serde(default)]
    #[schema(max_length = 2048)]
    pub url: Option<String>,
    /// Who or what found it (at most 200 characters).
    #[serde(default)]
    #[schema(max_length = 200)]
    pub source: Option<String>,
}

impl ReportKeyRequest {
    /// The presented text and the checked report of a report's raw body.
    /// Anything that is not an object with a string `key` (`{}`, `[]`,
    /// `null`, text that is not JSON) is no report: `Ok(None)`, answered as
    /// any junk is, so nothing tells a real key from it. Fields other than
    /// these three are ignored. Only a given `url` or `source` that is not
    /// a valid one is refused, naming it: it says nothing of the key.
    pub fn read(body: &[u8]) -> Result<Option<(String, LeakReport)>, FieldErrors> {
        let Ok(serde_json::Value::Object(mut fields)) = serde_json::from_slice(body) else {
            return Ok(None);
        };
        let Some(serde_json::Value::String(key)) = fields.remove("key") else {
            return Ok(None);
        };
        let mut errors = FieldErrors::default();
        let mut text = |field: &str| match fields.remove(field) {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(text)) => Some(text),
            Some(_) => {
                errors.add(field, "must be a string");
                None
            }
        };
        let (url, source) = (text("url"), text("source"));
        let report = LeakReport::new(url.as_deref(), source.as_deref()).map_err(|found| {
            for (field, error) in found {
                errors.add(field, error.to_string());
            }
        });
        errors.into_field_errors()?;
        Ok(report.ok().map(|report| (key, report)))
    }
}

/// `DELETE /api/mcp/users/{user_id}/keys`: how many keys were revoked.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct OffboardView {
    pub revoked: u64,
}

/// `PATCH /api/mcp/keys/{id}/permissions`: partial at both levels — a
/// top-level field left out keeps its value, and so does a field left out
/// of a `permissions` object that is given (docs/decisions.md, decision 127).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdatePermissionsRequest {
    /// Changes the fields of the permissions it names and keeps the others;
    /// must not be `null`.
    #[serde(default)]
    #[schema(value_type = PermissionsPatchInput, required = false)]
    pub permissions: Patch<PermissionsPatchInput>,
    /// Replaces the IP allow-list (at most 50 entries; `[]` = any address);
    /// must not be `null`.
    #[serde(default)]
    #[schema(value_type = Vec<String>, required = false, max_items = 50)]
    pub ip_whitelist: Patch<Vec<String>>,
    /// Replaces the key's rate limit; `null` removes it.
    #[serde(default)]
    #[schema(value_type = Option<RateLimitInput>, required = false)]
    pub rate_limit: Patch<RateLimitInput>,
}

/// A permissions PATCH as a typed change: `None` keeps a part.
#[derive(Debug, Default)]
pub(crate) struct AccessUpdate {
    pub permissions: Option<PermissionsChange>,
    pub ip_whitelist: Option<IpWhitelist>,
    pub rate_limit: Option<Option<RateLimit>>,
}

impl UpdatePermissionsRequest {
    /// The servers the body's grants name.
    pub(crate) fn server_slugs(&self) -> Vec<ServerSlug> {
        match &self.permissions {
            Patch::Set(given) => given.server_slugs(),
            _ => Vec::new(),
        }
    }

    pub(crate) fn into_valid(self, known: &KnownServers) -> Result<AccessUpdate, FieldErrors> {
        let mut errors = FieldErrors::default();
        let permissions = match self.permissions {
            Patch::Keep => None,
            Patch::Null => {
                errors.add("permissions", "must not be null");
                None
            }
            Patch::Set(given) => given.parse(known, &mut errors),
        };
        let ip_whitelist = match self.ip_whitelist {
            Patch::Keep => None,
            Patch::Null => {
                errors.add("ip_whitelist", "must not be null");
                None
            }
            Patch::Set(entries) => IpWhitelist::parse_new(&entries)
                .map_err(|e| errors.add("ip_whitelist", e.to_string()))
                .ok(),
        };
        let rate_limit = match self.rate_limit {
            Patch::Keep => None,
            Patch::Null => Some(None),
            Patch::Set(given) => given.parse(&mut errors).map(Some),
        };
        if errors.is_empty() {
            Ok(AccessUpdate {
                permissions,
                ip_whitelist,
                rate_limit,
            })
        } else {
            Err(errors)
        }
    }
}

/// `GET /api/mcp/keys` query, as given (all text, so each bad parameter can
/// be named).
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListKeysQuery {
    /// Only keys of this status; omitted = every status.
    #[param(value_type = Option<schema::KeyStatus>)]
    pub status: Option<String>,
    /// Page size, 1..100 (default 50).
    #[param(value_type = Option<u8>, minimum = 1, maximum = 100)]
    pub limit: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

pub(crate) const DEFAULT_PAGE_SIZE: u64 = 50;
const MAX_PAGE_SIZE: u64 = 100;

#[derive(Debug)]
pub(crate) struct ValidList {
    pub status: Option<EffectiveStatus>,
    pub limit: u64,
    pub after: Option<Cursor>,
}

impl ListKeysQuery {
    pub(crate) fn into_valid(self) -> Result<ValidList, FieldErrors> {
        let mut errors = FieldErrors::default();
        let status = match self.status.as_deref() {
            None => None,
            Some("active") => Some(EffectiveStatus::Active),
            Some("revoked") => Some(EffectiveStatus::Revoked),
            Some("expired") => Some(EffectiveStatus::Expired),
            Some(_) => {
                errors.add("status", "must be one of active, revoked, expired");
                None
            }
        };
        let (limit, after) = page(self.limit.as_deref(), self.cursor.as_deref(), &mut errors);
        let after = after.map(|uuid| Cursor(ApiKeyId::from_uuid(uuid)));
        if errors.is_empty() {
            Ok(ValidList {
                status,
                limit,
                after,
            })
        } else {
            Err(errors)
        }
    }
}

pub(crate) fn encode_cursor(cursor: Cursor) -> String {
    encode_id_cursor(cursor.0.as_uuid())
}

/// A page cursor: the last item's id, base64url. Keys and servers alike.
pub(crate) fn encode_id_cursor(id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(id.as_bytes())
}

/// A list query's `limit` (1..=100, default 50) and `cursor` (the id it
/// names), each bad one added to `errors`.
pub(crate) fn page(
    limit: Option<&str>,
    cursor: Option<&str>,
    errors: &mut FieldErrors,
) -> (u64, Option<Uuid>) {
    let limit = match limit.map(str::parse::<u64>) {
        None => DEFAULT_PAGE_SIZE,
        Some(Ok(limit)) if (1..=MAX_PAGE_SIZE).contains(&limit) => limit,
        Some(_) => {
            errors.add("limit", "must be a whole number from 1 to 100");
            DEFAULT_PAGE_SIZE
        }
    };
    let after = cursor.and_then(|text| {
        let id = URL_SAFE_NO_PAD
            .decode(text)
            .ok()
            .and_then(|bytes| Uuid::from_slice(&bytes).ok());
        if id.is_none() {
            errors.add("cursor", "is not a cursor this API returned");
        }
        id
    });
    (limit, after)
}

/// A key as the API shows it: never the secret, never the hash.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Key)]
pub struct KeyView {
    #[schema(value_type = Uuid)]
    pub id: ApiKeyId,
    #[schema(value_type = Uuid)]
    pub tenant_id: cola_domain::TenantId,
    #[schema(value_type = Uuid)]
    pub user_id: cola_domain::UserId,
    pub name: String,
    #[schema(required)]
    pub description: Option<String>,
    /// The key's public prefix, enough to recognise it; never the secret.
    pub key_prefix: String,
    #[schema(value_type = schema::KeyStatus)]
    pub status: EffectiveStatus,
    #[schema(value_type = schema::Permissions)]
    pub permissions: ApiKeyPermissions,
    /// Normalised CIDRs; `[]` = any address.
    pub ip_whitelist: Vec<String>,
    /// The key's own rate limit; `null` = none.
    #[schema(value_type = Option<RateLimitInput>, required)]
    pub rate_limit: Option<RateLimit>,
    pub usage_count: u64,
    #[schema(required)]
    pub last_used_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    #[schema(required)]
    pub revoked_at: Option<DateTime<Utc>>,
    #[schema(value_type = Option<Uuid>, required)]
    pub revoked_by: Option<cola_domain::UserId>,
}

impl KeyView {
    #[must_use]
    pub fn of(key: &McpApiKey, now: DateTime<Utc>) -> Self {
        let revocation = key.revocation();
        Self {
            id: key.id(),
            tenant_id: key.tenant_id(),
            user_id: key.owner(),
            name: key.name().as_str().to_owned(),
            description: key.description().map(|d| d.as_str().to_owned()),
            key_prefix: key.prefix().as_str().to_owned(),
            status: key.status_at(now),
            permissions: key.permissions().clone(),
            ip_whitelist: key.ip_whitelist().to_strings(),
            rate_limit: key.rate_limit(),
            usage_count: key.usage().count,
            last_used_at: key.usage().last_used_at,
            created_at: key.created_at(),
            expires_at: key.expires_at(),
            revoked_at: revocation.map(|r| r.at),
            revoked_by: revocation.map(|r| r.by),
        }
    }
}

/// The create response: the key and, this once, its secret.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = CreatedKey)]
pub struct CreatedKeyView {
    #[serde(flatten)]
    pub view: KeyView,
    /// The full key. Shown here and nowhere else, ever. Held as the secret
    /// type (redacted `Debug`) and exposed only by serialisation.
    #[serde(serialize_with = "expose_secret")]
    #[schema(value_type = String)]
    pub key: ApiKeySecret,
}

fn expose_secret<S: serde::Serializer>(
    secret: &ApiKeySecret,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(secret.expose())
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyPage {
    pub items: Vec<KeyView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    #[schema(required)]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Event)]
pub struct EventView {
    pub id: Uuid,
    #[serde(rename = "type")]
    #[schema(value_type = schema::EventType)]
    pub kind: &'static str,
    #[schema(value_type = Uuid)]
    pub key_id: ApiKeyId,
    #[schema(value_type = Uuid)]
    pub tenant_id: cola_domain::TenantId,
    #[schema(value_type = Uuid)]
    pub actor_user_id: cola_domain::UserId,
    pub occurred_at: DateTime<Utc>,
    /// What changed; its shape depends on `type`.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

/// `GET /api/mcp/keys/{id}/events`: the key's audit trail, oldest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventList {
    pub items: Vec<EventView>,
}

/// Documentation-only shapes of the domain types the views expose, for the
/// OpenAPI document (the domain itself knows nothing of OpenAPI).
pub mod schema {
    use utoipa::ToSchema;

    /// A key's status at the time of the request.
    #[derive(Debug, Clone, Copy, ToSchema)]
    #[schema(rename_all = "snake_case")]
    pub enum KeyStatus {
        Active,
        Revoked,
        Expired,
    }

    /// The kind of an audit event.
    #[derive(Debug, Clone, Copy, ToSchema)]
    pub enum EventType {
        #[schema(rename = "api_key.created")]
        Created,
        #[schema(rename = "api_key.metadata_updated")]
        MetadataUpdated,
        #[schema(rename = "api_key.permissions_updated")]
        PermissionsUpdated,
        #[schema(rename = "api_key.revoked")]
        Revoked,
        #[schema(rename = "api_key.rotated")]
        Rotated,
    }

    /// A key's permissions.
    #[derive(Debug, Clone, ToSchema)]
    pub struct Permissions {
        pub read: bool,
        pub write: bool,
        /// Tool names the key may call; `null` = every tool the flags allow.
        #[schema(required)]
        pub allowed_tools: Option<Vec<String>>,
        /// Resource URI patterns the key may read; `null` = every resource.
        #[schema(required)]
        pub allowed_resources: Option<Vec<String>>,
        /// Grants on the tenant's servers, by slug; `{}` = no server.
        pub servers: std::collections::BTreeMap<String, Grant>,
    }

    /// What a key may use on one server.
    #[derive(Debug, Clone, ToSchema)]
    pub struct Grant {
        #[schema(required)]
        pub allowed_tools: Option<Vec<String>>,
        #[schema(required)]
        pub allowed_resources: Option<Vec<String>>,
        #[schema(required)]
        pub allowed_prompts: Option<Vec<String>>,
    }
}

impl From<RecordedEvent> for EventView {
    fn from(event: RecordedEvent) -> Self {
        Self {
            id: event.id,
            kind: event.kind.as_str(),
            key_id: event.key_id,
            tenant_id: event.tenant_id,
            actor_user_id: event.actor_user_id,
            occurred_at: event.occurred_at,
            data: event.data,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        "2026-12-01T00:00:00Z".parse().expect("instant")
    }

    fn create(body: serde_json::Value) -> Result<NewKeyCommand, FieldErrors> {
        let policy = ExpiryPolicy::new(90, 365).expect("policy");
        serde_json::from_value::<CreateKeyRequest>(body)
            .expect("shape")
            .into_command(&policy, &KnownServers::new(), now())
    }

    fn fields(errors: &FieldErrors) -> Vec<&str> {
        errors.fields().keys().map(String::as_str).collect()
    }

    #[test]
    fn a_created_key_shows_its_secret_when_serialised_and_never_in_debug() {
        let secret = ApiKeySecret::generate(&mut rand::rngs::OsRng).expect("OS randomness");
        let now = chrono::Utc::now();
        let key = McpApiKey::restore(
            cola_domain::NewKey {
                id: ApiKeyId::from_uuid(uuid::Uuid::now_v7()),
                tenant_id: cola_domain::TenantId::from_uuid(uuid::Uuid::now_v7()),
                owner: cola_domain::UserId::from_uuid(uuid::Uuid::now_v7()),
                name: KeyName::parse("n").expect("name"),
                description: None,
                prefix: secret.prefix(),
                permissions: ApiKeyPermissions::default(),
                ip_whitelist: IpWhitelist::default(),
                rate_limit: None,
                expires_at: now + chrono::Duration::days(1),
            },
            now,
            None,
            cola_domain::KeyUsage::default(),
        );
        let created = CreatedKeyView {
            view: KeyView::of(&key, now),
            key: secret.clone(),
        };
        assert!(!format!("{created:?}").contains(secret.expose()));
        let json = serde_json::to_value(&created).expect("json");
        assert_eq!(json["key"], secret.expose());
    }

    #[test]
    fn a_grant_on_an_unknown_slug_is_named_and_a_known_one_resolves_to_its_id() {
        let policy = ExpiryPolicy::new(90, 365).expect("policy");
        let id = ServerId::from_uuid(uuid::Uuid::now_v7());
        let known: KnownServers = [(
            "github".to_owned(),
            (id, ServerSlug::parse("github").expect("slug")),
        )]
        .into();
        let body = json!({ "name": "n", "permissions": { "servers": {
            "github": { "allowed_tools": ["search_*"] },
            "nope": {},
            "github-2": { "allowed_prompts": ["bad name"] },
        } } });
        let request: CreateKeyRequest = serde_json::from_value(body).expect("shape");
        let errors = request
            .clone()
            .into_command(&policy, &known, now())
            .expect_err("unknown slugs");
        assert_eq!(
            fields(&errors),
            ["permissions.servers.github-2", "permissions.servers.nope"]
        );
        let body = json!({ "name": "n", "permissions": { "servers": {
            "github": { "allowed_tools": ["search_*"], "allowed_prompts": ["bad name"] } } } });
        let request: CreateKeyRequest = serde_json::from_value(body).expect("shape");
        let errors = request
            .into_command(&policy, &known, now())
            .expect_err("bad pattern");
        assert_eq!(
            fields(&errors),
            ["permissions.servers.github.allowed_prompts"]
        );
        let body = json!({ "name": "n", "permissions": { "servers": {
            "github": { "allowed_tools": ["search_*"] } } } });
        let request: CreateKeyRequest = serde_json::from_value(body).expect("shape");
        let command = request.into_command(&policy, &known, now()).expect("valid");
        let grant = command.permissions.grant_on(id).expect("granted by id");
        assert_eq!(grant.slug().as_str(), "github");
        assert_eq!(
            serde_json::to_value(&command.permissions).expect("json")["servers"],
            json!({ "github": { "allowed_tools": ["search_*"], "allowed_resources": null, "allowed_prompts": null } })
        );
    }

    #[test]
    fn omitted_fields_take_their_defaults() {
        let valid = create(json!({ "name": "n" })).expect("valid");
        assert_eq!(valid.permissions, ApiKeyPermissions::default());
        assert_eq!(valid.ip_whitelist, IpWhitelist::default());
        assert_eq!(valid.expires_at, now() + chrono::Duration::days(90));
        assert_eq!(valid.description, None);
    }

    #[test]
    fn an_omitted_permission_flag_takes_its_default() {
        let valid =
            create(json!({ "name": "n", "permissions": { "write": true } })).expect("valid");
        assert!(valid.permissions.read() && valid.permissions.write());
    }

    #[test]
    fn giving_both_expiries_names_both_fields() {
        let errors = create(
            json!({ "name": "n", "expires_in_days": 3, "expires_at": "2030-01-01T00:00:00Z" }),
        )
        .expect_err("both");
        assert_eq!(fields(&errors), ["expires_at", "expires_in_days"]);
    }

    #[test]
    fn every_invalid_field_is_named_at_once() {
        let errors = create(json!({
            "name": " ",
            "description": "\u{7}",
            "ip_whitelist": ["nope"],
            "permissions": { "read": false, "allowed_tools": ["a b"] }
        }))
        .expect_err("invalid");
        assert_eq!(
            fields(&errors),
            [
                "description",
                "ip_whitelist",
                "name",
                "permissions",
                "permissions.allowed_tools"
            ]
        );
    }

    #[test]
    fn name_description_allow_list_and_expiry_are_named_in_one_answer() {
        let errors = create(json!({
            "name": "",
            "description": "d".repeat(501),
            "ip_whitelist": ["999.1.1.1"],
            "expires_in_days": 0
        }))
        .expect_err("invalid");
        assert_eq!(
            fields(&errors),
            ["description", "expires_in_days", "ip_whitelist", "name"]
        );
    }

    #[test]
    fn an_expiry_beyond_the_maximum_is_named() {
        let errors = create(json!({ "name": "n", "expires_at": "2030-01-01T00:00:00Z" }))
            .expect_err("too late");
        assert_eq!(fields(&errors), ["expires_at"]);
    }

    #[test]
    fn a_null_name_in_a_patch_is_refused_and_a_null_description_clears() {
        let request: UpdateMetadataRequest =
            serde_json::from_value(json!({ "name": null })).expect("shape");
        assert_eq!(
            fields(&request.into_valid().expect_err("null name")),
            ["name"]
        );
        let request: UpdateMetadataRequest =
            serde_json::from_value(json!({ "description": null })).expect("shape");
        assert_eq!(request.into_valid().expect("valid"), (None, Some(None)));
    }

    #[test]
    fn a_rate_limit_out_of_range_names_each_field() {
        let errors =
            create(json!({ "name": "n", "rate_limit": { "requests": 0, "per_secs": 86_401 } }))
                .expect_err("out of range");
        assert_eq!(
            fields(&errors),
            ["rate_limit.per_secs", "rate_limit.requests"]
        );
        let valid = create(json!({ "name": "n", "rate_limit": null })).expect("none");
        assert_eq!(valid.rate_limit, None);
    }

    #[test]
    fn a_null_rate_limit_in_a_patch_removes_it_and_an_omitted_one_keeps_it() {
        let patch = |body| {
            serde_json::from_value::<UpdatePermissionsRequest>(body)
                .expect("shape")
                .into_valid(&KnownServers::new())
                .expect("valid")
        };
        assert_eq!(patch(json!({ "rate_limit": null })).rate_limit, Some(None));
        assert_eq!(patch(json!({})).rate_limit, None);
    }

    #[test]
    fn a_grace_period_beyond_a_day_is_refused() {
        let policy = ExpiryPolicy::new(90, 365).expect("policy");
        let rotate = |body| {
            serde_json::from_value::<RotateKeyRequest>(body)
                .expect("shape")
                .into_command(&policy, now())
        };
        for grace in [-1, 86_401] {
            let errors = rotate(json!({ "grace_period_secs": grace })).expect_err("refused");
            assert_eq!(fields(&errors), ["grace_period_secs"]);
        }
        let valid = rotate(json!({})).expect("defaults");
        assert_eq!(valid.grace, chrono::Duration::zero());
        assert_eq!(valid.expires_at, now() + chrono::Duration::days(90));
    }

    #[test]
    fn a_report_is_refused_only_for_its_url_or_source() {
        let report = |body: serde_json::Value| ReportKeyRequest::read(body.to_string().as_bytes());
        let (key, _) = report(json!({ "key": "not a key at all", "extra": 1 }))
            .expect("read")
            .expect("a report");
        assert_eq!(key, "not a key at all");
        let errors = report(json!({ "key": "x", "url": "u".repeat(2049), "source": "a\u{7}" }))
            .expect_err("too long");
        assert_eq!(fields(&errors), ["source", "url"]);
        let errors = report(json!({ "key": "x", "url": 7 })).expect_err("not a string");
        assert_eq!(fields(&errors), ["url"]);
    }

    #[test]
    fn anything_but_an_object_with_a_string_key_is_no_report() {
        for body in [
            &b"{}"[..],
            b"[]",
            b"null",
            b"not json",
            b"",
            b"{\"key\": 7}",
            b"\"cola_x\"",
        ] {
            assert!(
                ReportKeyRequest::read(body)
                    .expect("no field error")
                    .is_none(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn a_cursor_reads_back_as_the_id_it_was_made_from() {
        let id = ApiKeyId::from_uuid(Uuid::now_v7());
        let query = ListKeysQuery {
            cursor: Some(encode_cursor(Cursor(id))),
            ..ListKeysQuery::default()
        };
        let valid = query.into_valid().expect("valid");
        assert_eq!(valid.after, Some(Cursor(id)));
        assert_eq!(valid.limit, DEFAULT_PAGE_SIZE);
    }

    #[test]
    fn a_limit_outside_1_to_100_is_refused() {
        for limit in ["0", "101", "-1", "ten"] {
            let query = ListKeysQuery {
                limit: Some(limit.into()),
                ..ListKeysQuery::default()
            };
            assert_eq!(fields(&query.into_valid().expect_err(limit)), ["limit"]);
        }
    }
}
