//! What a key may do: the read/write flags, the optional allow-lists of
//! tools and resources on Cola's own endpoint, and the grants on the
//! tenant's servers. `None` for a list means "whatever the flags allow"; an
//! empty list means "nothing".

use std::fmt;

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use thiserror::Error;

use crate::{ServerId, ServerSlug};

/// Longest allowed list of tools or resources.
pub const MAX_ALLOWED_ENTRIES: usize = 100;
const MAX_TOOL_NAME_CHARS: usize = 128;
const MAX_RESOURCE_PATTERN_CHARS: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PermissionsError {
    #[error("a key needs at least one of read or write")]
    NoAccess,
    #[error("at most {MAX_ALLOWED_ENTRIES} entries are allowed")]
    TooManyEntries,
    #[error("entry {index}: a tool name is 1 to 128 characters of A-Z, a-z, 0-9, `_`, `-` and `.`")]
    InvalidToolName { index: usize },
    #[error(
        "entry {index}: a resource pattern is 1 to 2048 characters without spaces or control characters, with `*` only at the end"
    )]
    InvalidResourcePattern { index: usize },
    #[error(
        "entry {index}: a name pattern is 1 to 128 characters of A-Z, a-z, 0-9, `_`, `-` and `.`, optionally ending with `*`"
    )]
    InvalidNamePattern { index: usize },
}

/// A tool or prompt name as MCP defines it (1..=128 of `[A-Za-z0-9_.-]`),
/// or — in a grant on a tenant's server — a name prefix when it ends with
/// `*` (`search_*`). Cola's own allow-list takes exact names only
/// ([`NamePattern::parse_exact`]), as README.md, "The management API", and docs/gateway.md define it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct NamePattern(String);

impl NamePattern {
    /// An exact tool name, no `*`.
    #[must_use]
    pub fn parse_exact(candidate: &str) -> Option<Self> {
        is_tool_name(candidate).then(|| Self(candidate.to_owned()))
    }

    /// A name, or a prefix ending with `*` (`*` alone matches every name).
    #[must_use]
    pub fn parse(candidate: &str) -> Option<Self> {
        let valid = match candidate.strip_suffix('*') {
            Some("") => true,
            Some(stem) => is_tool_name(stem),
            None => is_tool_name(candidate),
        };
        valid.then(|| Self(candidate.to_owned()))
    }

    #[must_use]
    pub fn matches(&self, name: &str) -> bool {
        match self.0.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => self.0 == name,
        }
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_tool_name(candidate: &str) -> bool {
    !candidate.is_empty()
        && candidate.len() <= MAX_TOOL_NAME_CHARS
        && candidate
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// A resource URI, or a URI prefix when it ends with `*`.
///
/// An exact pattern matches only the byte-equal URI. A prefix pattern
/// matches a URI that starts with its stem (the text before `*`) byte for
/// byte *and* is plain ([`is_plain_uri`]): a URI that a reader could
/// resolve to somewhere outside the stem — through dot segments, encoded
/// dots or slashes, backslashes — never matches a prefix, whatever it
/// starts with (docs/decisions.md, decision 128).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct ResourcePattern(String);

/// Whether `uri` holds nothing that lets a reader resolve it outside a
/// prefix it starts with. Not plain, and so never matched by a prefix:
/// - a backslash (`\`), which some readers take for a slash;
/// - a percent-encoded dot, slash, backslash or percent sign (`%2e`,
///   `%2f`, `%5c`, `%25`, any letter case): decoded once — or, for `%25`,
///   twice — they become dot segments or new separators;
/// - a dot segment, `.` or `..`, anywhere: the pieces between `/`, `?` and
///   `#` are segments, so what follows a `?` or `#` counts as well (a
///   reader that takes it as path, or resolves a fragment, cannot climb
///   out either); a segment's `;` parameters are ignored (`..;x` is `..`),
///   and the full-width, small and leader dots (U+FF0E, U+FE52, U+2024,
///   U+2025) count as dots, since Unicode normalisation turns them into
///   dots.
///
/// A `?` or `#` needs no rule of its own beyond that: a URI that starts
/// with the stem byte for byte has its first `?` or `#` either after the
/// stem or at the same place in the stem, so its path is never shorter
/// than the stem's.
#[must_use]
pub fn is_plain_uri(uri: &str) -> bool {
    !uri.contains('\\') && !has_encoded_separator(uri) && !has_dot_segment(uri)
}

fn has_encoded_separator(uri: &str) -> bool {
    uri.as_bytes().windows(3).any(|window| {
        window[0] == b'%'
            && matches!(
                [
                    window[1].to_ascii_lowercase(),
                    window[2].to_ascii_lowercase()
                ],
                [b'2', b'e' | b'f' | b'5'] | [b'5', b'c']
            )
    })
}

fn has_dot_segment(uri: &str) -> bool {
    uri.split(['/', '?', '#']).any(|segment| {
        let name = segment.split(';').next().unwrap_or_default();
        let mut dots = 0;
        for c in name.chars() {
            dots += match c {
                '.' | '\u{FF0E}' | '\u{FE52}' | '\u{2024}' => 1,
                '\u{2025}' => 2,
                _ => return false,
            };
        }
        matches!(dots, 1 | 2)
    })
}

impl ResourcePattern {
    #[must_use]
    pub fn parse(candidate: &str) -> Option<Self> {
        let stem = candidate.strip_suffix('*').unwrap_or(candidate);
        let valid = !candidate.is_empty()
            && candidate.chars().count() <= MAX_RESOURCE_PATTERN_CHARS
            && !stem.contains('*')
            && !candidate
                .chars()
                .any(|c| c.is_control() || c.is_whitespace());
        valid.then(|| Self(candidate.to_owned()))
    }

    /// Whether `uri` is this exact URI, or a plain URI ([`is_plain_uri`])
    /// that starts with this prefix.
    #[must_use]
    pub fn matches(&self, uri: &str) -> bool {
        match self.0.strip_suffix('*') {
            Some(prefix) => uri.starts_with(prefix) && is_plain_uri(uri),
            None => self.0 == uri,
        }
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ResourcePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a key may use on one of the tenant's servers. It names the server
/// by id as well as by slug: the id is what [`ApiKeyPermissions::scope_on`]
/// matches, so a grant follows its server and never the slug — a deleted
/// server's grant is inert even where a stale copy survives, and a new
/// server with the same slug is granted by nothing until granted again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerGrant {
    server_id: ServerId,
    slug: ServerSlug,
    allowed_tools: Option<Vec<NamePattern>>,
    allowed_resources: Option<Vec<ResourcePattern>>,
    allowed_prompts: Option<Vec<NamePattern>>,
}

/// The three lists of a grant, as serialised under its slug.
#[derive(Serialize)]
struct GrantLists<'a> {
    allowed_tools: Option<&'a [NamePattern]>,
    allowed_resources: Option<&'a [ResourcePattern]>,
    allowed_prompts: Option<&'a [NamePattern]>,
}

impl ServerGrant {
    /// Validates the lists; failures are named `<field>.allowed_*` under the
    /// given `field` (e.g. `permissions.servers.github`).
    pub fn new(
        server_id: ServerId,
        slug: ServerSlug,
        allowed_tools: Option<Vec<String>>,
        allowed_resources: Option<Vec<String>>,
        allowed_prompts: Option<Vec<String>>,
    ) -> Result<Self, Vec<(&'static str, PermissionsError)>> {
        let mut errors = Vec::new();
        let names = |index| PermissionsError::InvalidNamePattern { index };
        let tools = checked_list(allowed_tools, NamePattern::parse, names)
            .map_err(|e| errors.push(("allowed_tools", e)));
        let resources = checked_list(allowed_resources, ResourcePattern::parse, |index| {
            PermissionsError::InvalidResourcePattern { index }
        })
        .map_err(|e| errors.push(("allowed_resources", e)));
        let prompts = checked_list(allowed_prompts, NamePattern::parse, names)
            .map_err(|e| errors.push(("allowed_prompts", e)));
        match (tools, resources, prompts) {
            (Ok(allowed_tools), Ok(allowed_resources), Ok(allowed_prompts)) => Ok(Self {
                server_id,
                slug,
                allowed_tools,
                allowed_resources,
                allowed_prompts,
            }),
            _ => Err(errors),
        }
    }

    #[must_use]
    pub fn server_id(&self) -> ServerId {
        self.server_id
    }

    #[must_use]
    pub fn slug(&self) -> &ServerSlug {
        &self.slug
    }

    #[must_use]
    pub fn allowed_tools(&self) -> Option<&[NamePattern]> {
        self.allowed_tools.as_deref()
    }

    #[must_use]
    pub fn allowed_resources(&self) -> Option<&[ResourcePattern]> {
        self.allowed_resources.as_deref()
    }

    #[must_use]
    pub fn allowed_prompts(&self) -> Option<&[NamePattern]> {
        self.allowed_prompts.as_deref()
    }
}

/// A key's permissions. Built only through [`ApiKeyPermissions::new`], so a
/// held value always grants read or write and has valid lists.
///
/// Serialised as the API shows it: `servers` is a map from slug to grant
/// (docs/gateway.md). Storage keeps the server ids too, in its own shape.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ApiKeyPermissions {
    read: bool,
    write: bool,
    allowed_tools: Option<Vec<NamePattern>>,
    allowed_resources: Option<Vec<ResourcePattern>>,
    #[serde(serialize_with = "grants_by_slug")]
    servers: Vec<ServerGrant>,
}

fn grants_by_slug<S: Serializer>(grants: &[ServerGrant], serializer: S) -> Result<S::Ok, S::Error> {
    let mut map = serializer.serialize_map(Some(grants.len()))?;
    for grant in grants {
        map.serialize_entry(
            grant.slug.as_str(),
            &GrantLists {
                allowed_tools: grant.allowed_tools(),
                allowed_resources: grant.allowed_resources(),
                allowed_prompts: grant.allowed_prompts(),
            },
        )?;
    }
    map.end()
}

impl Default for ApiKeyPermissions {
    /// Read only, every tool and resource that reading allows, no servers.
    fn default() -> Self {
        Self {
            read: true,
            write: false,
            allowed_tools: None,
            allowed_resources: None,
            servers: Vec::new(),
        }
    }
}

impl ApiKeyPermissions {
    /// Validates the flags and lists. Duplicate list entries are dropped,
    /// first occurrence kept, so the stored order is the given order.
    pub fn new(
        read: bool,
        write: bool,
        allowed_tools: Option<Vec<String>>,
        allowed_resources: Option<Vec<String>>,
    ) -> Result<Self, Vec<(&'static str, PermissionsError)>> {
        let mut errors = Vec::new();
        if !read && !write {
            errors.push(("permissions", PermissionsError::NoAccess));
        }
        let tools = own_tools(allowed_tools)
            .map_err(|error| errors.push(("permissions.allowed_tools", error)));
        let resources = own_resources(allowed_resources)
            .map_err(|error| errors.push(("permissions.allowed_resources", error)));
        match (tools, resources) {
            (Ok(allowed_tools), Ok(allowed_resources)) if errors.is_empty() => Ok(Self {
                read,
                write,
                allowed_tools,
                allowed_resources,
                servers: Vec::new(),
            }),
            _ => Err(errors),
        }
    }

    /// These permissions with `change` applied: each part the change names
    /// replaces this one's, every other part is kept as it is. A change
    /// that leaves the key with neither read nor write is refused.
    pub fn amended(&self, change: PermissionsChange) -> Result<Self, PermissionsError> {
        let read = change.read.unwrap_or(self.read);
        let write = change.write.unwrap_or(self.write);
        if !read && !write {
            return Err(PermissionsError::NoAccess);
        }
        let amended = Self {
            read,
            write,
            allowed_tools: change
                .allowed_tools
                .unwrap_or_else(|| self.allowed_tools.clone()),
            allowed_resources: change
                .allowed_resources
                .unwrap_or_else(|| self.allowed_resources.clone()),
            servers: Vec::new(),
        };
        Ok(amended.with_servers(change.servers.unwrap_or_else(|| self.servers.clone())))
    }

    /// These permissions with `grants` on the tenant's servers, one per
    /// server (a later grant for the same server replaces an earlier one),
    /// in slug order so that equal grants compare and serialise equal.
    #[must_use]
    pub fn with_servers(mut self, grants: Vec<ServerGrant>) -> Self {
        let mut servers: Vec<ServerGrant> = Vec::with_capacity(grants.len());
        for grant in grants {
            servers.retain(|held| held.server_id != grant.server_id);
            servers.push(grant);
        }
        servers.sort_by(|a, b| a.slug.as_str().cmp(b.slug.as_str()));
        self.servers = servers;
        self
    }

    /// The grants on the tenant's servers, in slug order.
    #[must_use]
    pub fn servers(&self) -> &[ServerGrant] {
        &self.servers
    }

    /// The grant on the server `id`, if any.
    #[must_use]
    pub fn grant_on(&self, id: ServerId) -> Option<&ServerGrant> {
        self.servers.iter().find(|grant| grant.server_id == id)
    }

    /// These permissions without the grant on server `id`, or `None` when
    /// they hold none (nothing to change).
    #[must_use]
    pub fn without_server(&self, id: ServerId) -> Option<Self> {
        self.grant_on(id)?;
        let mut narrowed = self.clone();
        narrowed.servers.retain(|grant| grant.server_id != id);
        Some(narrowed)
    }

    #[must_use]
    pub fn read(&self) -> bool {
        self.read
    }

    #[must_use]
    pub fn write(&self) -> bool {
        self.write
    }

    #[must_use]
    pub fn allowed_tools(&self) -> Option<&[NamePattern]> {
        self.allowed_tools.as_deref()
    }

    #[must_use]
    pub fn allowed_resources(&self) -> Option<&[ResourcePattern]> {
        self.allowed_resources.as_deref()
    }
}

/// A partial change of a key's permissions (a PATCH): `None` keeps a part
/// as it is, so leaving a list out can never widen a key. Inside, a list is
/// `Some(None)` for "whatever the flags allow" and `Some(Some([]))` for
/// "nothing"; `servers`, when given, replaces every grant. Built only
/// through [`PermissionsChange::new`], so its lists are valid; applied with
/// [`ApiKeyPermissions::amended`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PermissionsChange {
    read: Option<bool>,
    write: Option<bool>,
    allowed_tools: Option<Option<Vec<NamePattern>>>,
    allowed_resources: Option<Option<Vec<ResourcePattern>>>,
    servers: Option<Vec<ServerGrant>>,
}

impl PermissionsChange {
    /// Validates the lists that are given, naming failures as
    /// [`ApiKeyPermissions::new`] does. Both flags given as `false` is
    /// refused here already; one flag turned off is decided against the
    /// key's other flag by [`ApiKeyPermissions::amended`].
    pub fn new(
        read: Option<bool>,
        write: Option<bool>,
        allowed_tools: Option<Option<Vec<String>>>,
        allowed_resources: Option<Option<Vec<String>>>,
    ) -> Result<Self, Vec<(&'static str, PermissionsError)>> {
        let mut errors = Vec::new();
        if read == Some(false) && write == Some(false) {
            errors.push(("permissions", PermissionsError::NoAccess));
        }
        let tools = allowed_tools
            .map(own_tools)
            .transpose()
            .map_err(|error| errors.push(("permissions.allowed_tools", error)));
        let resources = allowed_resources
            .map(own_resources)
            .transpose()
            .map_err(|error| errors.push(("permissions.allowed_resources", error)));
        match (tools, resources) {
            (Ok(allowed_tools), Ok(allowed_resources)) if errors.is_empty() => Ok(Self {
                read,
                write,
                allowed_tools,
                allowed_resources,
                servers: None,
            }),
            _ => Err(errors),
        }
    }

    /// This change, replacing the key's grants by `grants` (an empty list
    /// removes every grant).
    #[must_use]
    pub fn with_servers(mut self, grants: Vec<ServerGrant>) -> Self {
        self.servers = Some(grants);
        self
    }
}

/// Cola's own tool allow-list: exact names.
fn own_tools(list: Option<Vec<String>>) -> Result<Option<Vec<NamePattern>>, PermissionsError> {
    checked_list(list, NamePattern::parse_exact, |index| {
        PermissionsError::InvalidToolName { index }
    })
}

/// Cola's own resource allow-list: URIs or `prefix*` patterns.
fn own_resources(
    list: Option<Vec<String>>,
) -> Result<Option<Vec<ResourcePattern>>, PermissionsError> {
    checked_list(list, ResourcePattern::parse, |index| {
        PermissionsError::InvalidResourcePattern { index }
    })
}

/// `parse_list` of an optional list: `None` stays "whatever the flags allow".
fn checked_list<T: PartialEq>(
    list: Option<Vec<String>>,
    parse: impl Fn(&str) -> Option<T>,
    invalid: impl Fn(usize) -> PermissionsError,
) -> Result<Option<Vec<T>>, PermissionsError> {
    list.map(|list| parse_list(list, parse, invalid))
        .transpose()
}

fn parse_list<T: PartialEq>(
    list: Vec<String>,
    parse: impl Fn(&str) -> Option<T>,
    invalid: impl Fn(usize) -> PermissionsError,
) -> Result<Vec<T>, PermissionsError> {
    if list.len() > MAX_ALLOWED_ENTRIES {
        return Err(PermissionsError::TooManyEntries);
    }
    let mut parsed = Vec::with_capacity(list.len());
    for (index, entry) in list.iter().enumerate() {
        let item = parse(entry).ok_or_else(|| invalid(index))?;
        if !parsed.contains(&item) {
            parsed.push(item);
        }
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn perms(
        read: bool,
        write: bool,
        tools: Option<&[&str]>,
        resources: Option<&[&str]>,
    ) -> ApiKeyPermissions {
        let owned = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        ApiKeyPermissions::new(read, write, tools.map(owned), resources.map(owned))
            .expect("valid permissions")
    }

    #[test]
    fn the_default_is_read_only_and_unrestricted() {
        let default = ApiKeyPermissions::default();
        assert!(default.read() && !default.write());
        assert!(default.allowed_tools().is_none() && default.allowed_resources().is_none());
    }

    #[test]
    fn a_key_with_neither_read_nor_write_is_rejected() {
        let errors = ApiKeyPermissions::new(false, false, None, None).expect_err("no access");
        assert_eq!(errors, vec![("permissions", PermissionsError::NoAccess)]);
    }

    #[test]
    fn a_trailing_star_matches_a_prefix_and_nothing_else_does() {
        let pattern = ResourcePattern::parse("cola://keys/*").expect("valid");
        assert!(pattern.matches("cola://keys/abc"));
        assert!(!pattern.matches("cola://other/abc"));
        let exact = ResourcePattern::parse("cola://keys/abc").expect("valid");
        assert!(exact.matches("cola://keys/abc"));
        assert!(!exact.matches("cola://keys/abcd"));
    }

    #[test]
    fn a_uri_with_a_dot_segment_never_matches_a_prefix() {
        let pattern = ResourcePattern::parse("repo://cola/public/*").expect("valid");
        assert!(pattern.matches("repo://cola/public/readme"));
        for uri in [
            "repo://cola/public/../private/key",
            "repo://cola/public/./readme",
            "repo://cola/public/..",
            "repo://cola/public/a/../../private",
            "repo://cola/public/..;x/private",
            "repo://cola/public/\u{FF0E}\u{FF0E}/private",
            "repo://cola/public/\u{2025}/private",
        ] {
            assert!(!pattern.matches(uri), "{uri}");
        }
        // Dots that are not a whole segment are plain.
        for uri in [
            "repo://cola/public/v1.2/notes.md",
            "repo://cola/public/...",
            "repo://cola/public/.hidden",
        ] {
            assert!(pattern.matches(uri), "{uri}");
        }
    }

    #[test]
    fn a_uri_with_encoded_dots_slashes_or_backslashes_never_matches_a_prefix() {
        let pattern = ResourcePattern::parse("repo://cola/public/*").expect("valid");
        for uri in [
            "repo://cola/public/%2e%2e/private",
            "repo://cola/public/%2E%2E/private",
            "repo://cola/public/.%2e/private",
            "repo://cola/public/..%2fprivate",
            "repo://cola/public/..%2Fprivate",
            "repo://cola/public/..%5cprivate",
            "repo://cola/public/..%5Cprivate",
            "repo://cola/public/%252e%252e/private",
            "repo://cola/public/..\\private",
            "repo://cola/public\\..\\private",
        ] {
            assert!(!pattern.matches(uri), "{uri}");
        }
        // Other escapes are plain.
        assert!(pattern.matches("repo://cola/public/a%20b"));
    }

    #[test]
    fn what_follows_a_question_mark_or_hash_cannot_climb_out_either() {
        let pattern = ResourcePattern::parse("repo://cola/public/*").expect("valid");
        for uri in [
            "repo://cola/public/x?/../../private",
            "repo://cola/public/x#/../private",
            "repo://cola/public/x?..",
            "repo://cola/public/x#..",
        ] {
            assert!(!pattern.matches(uri), "{uri}");
        }
        assert!(pattern.matches("repo://cola/public/x?page=2#top"));
        // A `?` or `#` before the stem's end: the URI does not start with it.
        assert!(!pattern.matches("repo://cola/public?/x"));
        assert!(!pattern.matches("repo://cola/public#/x"));
    }

    #[test]
    fn an_exact_pattern_matches_only_the_byte_equal_uri() {
        let exact = ResourcePattern::parse("repo://cola/a/../b").expect("valid");
        assert!(exact.matches("repo://cola/a/../b"));
        assert!(!exact.matches("repo://cola/b"));
        assert!(!exact.matches("repo://cola/a/%2e%2e/b"));
        assert!(!exact.matches("REPO://cola/a/../b"));
    }

    #[test]
    fn a_star_anywhere_but_the_end_is_rejected() {
        assert!(ResourcePattern::parse("cola://*/x").is_none());
        assert!(ResourcePattern::parse("cola://x**").is_none());
        assert!(ResourcePattern::parse("cola:// x").is_none());
        assert!(ResourcePattern::parse("").is_none());
    }

    #[test]
    fn invalid_list_entries_name_their_list_and_index() {
        let errors = ApiKeyPermissions::new(
            true,
            false,
            Some(vec!["ok".into(), "not ok".into()]),
            Some(vec!["*x*".into()]),
        )
        .expect_err("invalid");
        assert_eq!(
            errors,
            vec![
                (
                    "permissions.allowed_tools",
                    PermissionsError::InvalidToolName { index: 1 }
                ),
                (
                    "permissions.allowed_resources",
                    PermissionsError::InvalidResourcePattern { index: 0 }
                ),
            ]
        );
    }

    #[test]
    fn duplicates_are_dropped_keeping_the_first() {
        let p = perms(true, false, Some(&["b", "a", "b"]), None);
        let names: Vec<_> = p
            .allowed_tools()
            .expect("list")
            .iter()
            .map(NamePattern::as_str)
            .collect();
        assert_eq!(names, ["b", "a"]);
    }

    #[test]
    fn more_than_100_entries_are_rejected() {
        let many = (0..101).map(|i| format!("t{i}")).collect();
        let errors = ApiKeyPermissions::new(true, false, Some(many), None).expect_err("too many");
        assert_eq!(errors[0].1, PermissionsError::TooManyEntries);
    }

    proptest! {
        #[test]
        fn a_star_pattern_matches_exactly_the_uris_that_start_with_its_stem(
            stem in "[a-z:/]{0,12}", uri in "[a-z:/]{0,16}",
        ) {
            let pattern = ResourcePattern::parse(&format!("{stem}*")).expect("valid");
            prop_assert_eq!(pattern.matches(&uri), uri.starts_with(&stem));
            let extended = format!("{stem}{uri}");
            prop_assert!(pattern.matches(&extended));
        }

        #[test]
        fn an_exact_pattern_matches_only_itself(a in "[a-z:/]{1,12}", b in "[a-z:/]{1,12}") {
            let pattern = ResourcePattern::parse(&a).expect("valid");
            prop_assert_eq!(pattern.matches(&b), a == b);
        }

        #[test]
        fn a_prefix_never_matches_a_uri_that_could_climb_out_of_it(
            stem in "[a-z]{1,6}://[a-z/]{0,12}",
            before in "[a-z/]{0,6}",
            trick in prop::sample::select(vec![
                "/../", "/./", "/..?q", "/.#f", "/..;p/", "%2e%2e/", "%2E./", "..%2f", "%2F",
                "%5c", "%5C", "\\", "%252e", "?/../", "#/../", "?../", "#./",
            ]),
            after in "[a-z/]{0,6}",
        ) {
            let pattern = ResourcePattern::parse(&format!("{stem}*")).expect("valid");
            let uri = format!("{stem}{before}{trick}{after}");
            prop_assert!(!pattern.matches(&uri), "{}", uri);
        }

        #[test]
        fn a_prefix_matches_every_plain_uri_that_starts_with_its_stem(
            stem in "[a-z]{1,6}://[a-z0-9/]{0,12}",
            rest in "[a-z0-9/_.-]{0,16}",
        ) {
            let pattern = ResourcePattern::parse(&format!("{stem}*")).expect("valid");
            let uri = format!("{stem}{rest}");
            prop_assert_eq!(pattern.matches(&uri), is_plain_uri(&uri));
            let dot_segment = uri.split('/').any(|segment| segment == "." || segment == "..");
            prop_assert_eq!(pattern.matches(&uri), !dot_segment);
        }

        #[test]
        fn an_exact_pattern_matches_only_the_byte_equal_uri_whatever_it_holds(
            a in "[a-z:/.%25\\\\?#]{1,16}", b in "[a-z:/.%25\\\\?#]{1,16}",
        ) {
            if let Some(pattern) = ResourcePattern::parse(&a) {
                prop_assert_eq!(pattern.matches(&b), a == b);
                prop_assert!(pattern.matches(&a));
            }
        }

        #[test]
        fn parsing_arbitrary_patterns_never_panics(text in "\\PC{0,40}") {
            let _ = ResourcePattern::parse(&text);
            let _ = NamePattern::parse(&text);
            let _ = NamePattern::parse_exact(&text);
        }
    }
}
