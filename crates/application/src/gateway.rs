//! The gateway's policy: which message a key may send to a tenant's server,
//! and what of a list answer it may see. The api crate parses and relays;
//! every "may it?" of a gateway message is asked here, of the key's
//! `SurfaceScope` on that server, and nowhere else.
//!
//! Hidden is the same as absent: a message naming something the key may not
//! use is refused exactly as one naming something that does not exist, and
//! it never reaches the upstream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use cola_domain::SurfaceScope;
use serde_json::Value;
use uuid::Uuid;

/// A list whose answer shows only what the key may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    Tools,
    Resources,
    ResourceTemplates,
    Prompts,
}

/// Something a message names that the key may not use (or that does not
/// exist): answered with the error an unknown name gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hidden {
    Tool(String),
    Resource(String),
    Prompt(String),
}

/// What to do with one client message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Forward it; its answer needs no filtering.
    Forward,
    /// Forward it and show only what the key may use of the list it answers.
    ForwardAndFilter(ListKind),
    /// Refuse it as if the named item did not exist.
    Refuse(Hidden),
    /// Refuse it: it is malformed where the policy has to read it.
    Invalid(&'static str),
    /// A method the gateway does not pass on (unknown to it, so it cannot
    /// know what the method would reach).
    UnknownMethod,
    /// The decision depends on whether the tool is read-only, and the
    /// server's catalogue does not say: ask the upstream, then decide again.
    NeedsCatalogue,
}

/// What the server's catalogue says about one tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolLookup {
    /// Listed by the upstream recently, read-only or not.
    Listed { read_only: bool },
    /// Not in a recent list: the upstream does not offer it.
    Absent,
    /// No recent list to go by.
    Unknown,
}

/// Methods that name nothing a grant could hide and pass as they are. Any
/// method not here and not decided below is refused: the gateway cannot
/// tell what a method it does not know would reach.
const PASS_THROUGH: [&str; 9] = [
    "initialize",
    "ping",
    "server/discover",
    "logging/setLevel",
    "subscriptions/listen",
    "tasks/get",
    "tasks/result",
    "tasks/cancel",
    "tasks/list",
];

fn string_param<'p>(params: &'p Value, field: &str) -> Option<&'p str> {
    params.get(field).and_then(Value::as_str)
}

/// Decides one client request (`method` and its `params`) under `scope`.
/// `tool` looks a tool up in the server's catalogue; it is asked only when
/// the answer depends on the tool's `readOnlyHint`.
pub fn authorise(
    scope: &SurfaceScope<'_>,
    method: &str,
    params: &Value,
    tool: impl FnOnce(&str) -> ToolLookup,
) -> Verdict {
    match method {
        "tools/call" => {
            let Some(name) = string_param(params, "name") else {
                return Verdict::Invalid("params.name is required");
            };
            authorise_tool(scope, name, tool)
        }
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
            let Some(uri) = string_param(params, "uri") else {
                return Verdict::Invalid("params.uri is required");
            };
            if scope.may_read_resource(uri) {
                Verdict::Forward
            } else {
                Verdict::Refuse(Hidden::Resource(uri.to_owned()))
            }
        }
        "prompts/get" => {
            let Some(name) = string_param(params, "name") else {
                return Verdict::Invalid("params.name is required");
            };
            prompt(scope, name)
        }
        "completion/complete" => authorise_completion(scope, params),
        "tools/list" => Verdict::ForwardAndFilter(ListKind::Tools),
        "resources/list" => Verdict::ForwardAndFilter(ListKind::Resources),
        "resources/templates/list" => Verdict::ForwardAndFilter(ListKind::ResourceTemplates),
        "prompts/list" => Verdict::ForwardAndFilter(ListKind::Prompts),
        _ if PASS_THROUGH.contains(&method) => Verdict::Forward,
        _ => Verdict::UnknownMethod,
    }
}

fn authorise_tool(
    scope: &SurfaceScope<'_>,
    name: &str,
    tool: impl FnOnce(&str) -> ToolLookup,
) -> Verdict {
    let if_read_only = scope.may_use_tool(name, true);
    let otherwise = scope.may_use_tool(name, false);
    let allowed = if if_read_only == otherwise {
        // The annotation does not change the answer: no need to know it.
        if_read_only
    } else {
        match tool(name) {
            ToolLookup::Listed { read_only } => {
                if read_only {
                    if_read_only
                } else {
                    otherwise
                }
            }
            // A tool the upstream does not list is one the key cannot be
            // shown, so it cannot be called either.
            ToolLookup::Absent => false,
            ToolLookup::Unknown => return Verdict::NeedsCatalogue,
        }
    };
    if allowed {
        Verdict::Forward
    } else {
        Verdict::Refuse(Hidden::Tool(name.to_owned()))
    }
}

fn prompt(scope: &SurfaceScope<'_>, name: &str) -> Verdict {
    if scope.may_get_prompt(name) {
        Verdict::Forward
    } else {
        Verdict::Refuse(Hidden::Prompt(name.to_owned()))
    }
}

/// A completion is decided as the prompt or resource its `ref` names.
fn authorise_completion(scope: &SurfaceScope<'_>, params: &Value) -> Verdict {
    let Some(reference) = params.get("ref") else {
        return Verdict::Invalid("params.ref is required");
    };
    match string_param(reference, "type") {
        Some("ref/prompt") => match string_param(reference, "name") {
            Some(name) => prompt(scope, name),
            None => Verdict::Invalid("params.ref.name is required"),
        },
        Some("ref/resource") => match string_param(reference, "uri") {
            Some(uri) if scope.may_read_resource(uri) || scope.may_list_resource_template(uri) => {
                Verdict::Forward
            }
            Some(uri) => Verdict::Refuse(Hidden::Resource(uri.to_owned())),
            None => Verdict::Invalid("params.ref.uri is required"),
        },
        _ => Verdict::Invalid("params.ref.type must be ref/prompt or ref/resource"),
    }
}

/// Whether a server notification may reach the client: one about a
/// resource the key may not read is dropped, as the resource is hidden.
#[must_use]
pub fn may_see_notification(scope: &SurfaceScope<'_>, method: &str, params: &Value) -> bool {
    match method {
        "notifications/resources/updated" => {
            string_param(params, "uri").is_some_and(|uri| scope.may_read_resource(uri))
        }
        _ => true,
    }
}

/// Whether a tool as an upstream lists it is annotated read-only.
#[must_use]
pub fn is_read_only(tool: &Value) -> bool {
    tool.get("annotations")
        .and_then(|annotations| annotations.get("readOnlyHint"))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// Keeps only what the key may use of a list `result`, in place, and marks
/// it as private to this key: a cache must never share it with another.
/// An item without the field it is judged by is dropped.
pub fn filter_list(scope: &SurfaceScope<'_>, kind: ListKind, result: &mut Value) {
    let (field, visible): (&str, &dyn Fn(&Value) -> bool) = match kind {
        ListKind::Tools => ("tools", &|tool: &Value| {
            string_param(tool, "name")
                .is_some_and(|name| scope.may_use_tool(name, is_read_only(tool)))
        }),
        ListKind::Resources => ("resources", &|resource: &Value| {
            string_param(resource, "uri").is_some_and(|uri| scope.may_read_resource(uri))
        }),
        ListKind::ResourceTemplates => ("resourceTemplates", &|template: &Value| {
            string_param(template, "uriTemplate")
                .is_some_and(|uri| scope.may_list_resource_template(uri))
        }),
        ListKind::Prompts => ("prompts", &|prompt: &Value| {
            string_param(prompt, "name").is_some_and(|name| scope.may_get_prompt(name))
        }),
    };
    let Some(object) = result.as_object_mut() else {
        return;
    };
    match object.get_mut(field) {
        Some(Value::Array(items)) => items.retain(visible),
        // A list answer without its list shows nothing.
        _ => {
            object.insert(field.to_owned(), Value::Array(Vec::new()));
        }
    }
    object.insert("cacheScope".to_owned(), Value::from("private"));
    if object.contains_key("ttlMs") {
        object.insert("ttlMs".to_owned(), Value::from(0));
    }
}

/// How long a server's list of tools is trusted for read-only decisions.
pub const CATALOGUE_TTL: Duration = Duration::from_secs(60);
/// The least time between two fetches of one server's catalogue, so that
/// calls of a tool the upstream does not offer cannot make Cola ask the
/// upstream on every request.
pub const CATALOGUE_REFETCH_INTERVAL: Duration = Duration::from_secs(5);
/// Servers whose catalogue is kept; the oldest is dropped past this.
const MAX_CATALOGUES: usize = 10_000;

#[derive(Debug)]
struct Catalogue {
    read_only: HashMap<String, bool>,
    listed_at: Instant,
}

/// Each server's tools and their `readOnlyHint`, as the upstream last listed
/// them (on a client's own `tools/list` passing through, or when asked).
/// Per instance; a stale or missing catalogue is fetched again before a
/// decision that needs it.
#[derive(Debug, Default)]
pub struct ToolCatalogue {
    servers: Mutex<HashMap<Uuid, Arc<Catalogue>>>,
    /// Per server, when its catalogue was last fetched, behind the lock a
    /// fetch holds: the calls that need the catalogue wait for the fetch
    /// under way and then decide on its result, and fetches are at most one
    /// per [`CATALOGUE_REFETCH_INTERVAL`].
    fetches: Mutex<HashMap<Uuid, FetchSlot>>,
}

type FetchSlot = Arc<tokio::sync::Mutex<Option<Instant>>>;

/// The turn at fetching one server's catalogue: while it is held, nobody
/// else fetches it.
#[derive(Debug)]
pub struct FetchTurn(tokio::sync::OwnedMutexGuard<Option<Instant>>);

impl FetchTurn {
    /// Whether a fetch may be made now (none in the last
    /// [`CATALOGUE_REFETCH_INTERVAL`]); claims it if so.
    #[must_use]
    pub fn claim(&mut self) -> bool {
        if self
            .0
            .is_some_and(|at| at.elapsed() < CATALOGUE_REFETCH_INTERVAL)
        {
            return false;
        }
        *self.0 = Some(Instant::now());
        true
    }
}

/// A catalogue older than this is fetched again by the next call that uses
/// it, while the others go on deciding with it: under steady use a server's
/// catalogue never reaches [`CATALOGUE_TTL`] and becomes unknown.
pub const CATALOGUE_REFRESH_AFTER: Duration = Duration::from_secs(30);

impl ToolCatalogue {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// What the catalogue of `server` says about `name`.
    #[must_use]
    pub fn lookup(&self, server: Uuid, name: &str) -> ToolLookup {
        let catalogue = self
            .servers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&server)
            .cloned();
        match catalogue {
            Some(catalogue) if catalogue.listed_at.elapsed() < CATALOGUE_TTL => {
                match catalogue.read_only.get(name) {
                    Some(&read_only) => ToolLookup::Listed { read_only },
                    None => ToolLookup::Absent,
                }
            }
            _ => ToolLookup::Unknown,
        }
    }

    /// The turn at fetching the catalogue of `server`, once the fetch under
    /// way (if any) has ended. A caller that needs the catalogue takes it,
    /// looks again (the fetch it waited for may have answered), and fetches
    /// only if it is still unknown.
    pub async fn fetch_turn(&self, server: Uuid) -> FetchTurn {
        FetchTurn(self.fetch_slot(server).lock_owned().await)
    }

    /// The turn, unless a fetch is under way (for a refresh ahead of
    /// expiry, which nobody waits for).
    #[must_use]
    pub fn try_fetch_turn(&self, server: Uuid) -> Option<FetchTurn> {
        self.fetch_slot(server).try_lock_owned().ok().map(FetchTurn)
    }

    fn fetch_slot(&self, server: Uuid) -> FetchSlot {
        let mut fetches = self.fetches.lock().unwrap_or_else(PoisonError::into_inner);
        if fetches.len() >= MAX_CATALOGUES && !fetches.contains_key(&server) {
            // Dropped: slots nobody holds or waits for, whose last fetch no
            // longer limits the next.
            fetches.retain(|_, slot| {
                Arc::strong_count(slot) > 1
                    || slot.try_lock().is_ok_and(|last| {
                        last.is_some_and(|at| at.elapsed() < CATALOGUE_REFETCH_INTERVAL)
                    })
            });
        }
        Arc::clone(fetches.entry(server).or_default())
    }

    /// Whether the catalogue of `server` is known but old enough to be
    /// fetched again ahead of its expiry.
    #[must_use]
    pub fn refresh_due(&self, server: Uuid) -> bool {
        self.servers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&server)
            .is_some_and(|catalogue| {
                let age = catalogue.listed_at.elapsed();
                age >= CATALOGUE_REFRESH_AFTER && age < CATALOGUE_TTL
            })
    }

    /// Records a complete list of the server's tools (every page).
    pub fn record(&self, server: Uuid, tools: &[Value]) {
        let read_only = tools
            .iter()
            .filter_map(|tool| {
                string_param(tool, "name").map(|name| (name.to_owned(), is_read_only(tool)))
            })
            .collect();
        let mut servers = self.servers.lock().unwrap_or_else(PoisonError::into_inner);
        if servers.len() >= MAX_CATALOGUES && !servers.contains_key(&server) {
            let oldest = servers
                .iter()
                .min_by_key(|(_, catalogue)| catalogue.listed_at)
                .map(|(id, _)| *id);
            if let Some(oldest) = oldest {
                servers.remove(&oldest);
            }
        }
        servers.insert(
            server,
            Arc::new(Catalogue {
                read_only,
                listed_at: Instant::now(),
            }),
        );
    }

    /// Records the tools of one page of a list that passed through. A page
    /// that is not the whole list (it has a `nextCursor`) only adds to what
    /// is known, since the rest of the list was not seen.
    pub fn record_page(&self, server: Uuid, result: &Value) {
        let Some(tools) = result.get("tools").and_then(Value::as_array) else {
            return;
        };
        let first_and_only_page = result.get("nextCursor").is_none_or(Value::is_null);
        if first_and_only_page {
            self.record(server, tools);
            return;
        }
        let mut servers = self.servers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(existing) = servers.get(&server) {
            let mut read_only = existing.read_only.clone();
            for tool in tools {
                if let Some(name) = string_param(tool, "name") {
                    read_only.insert(name.to_owned(), is_read_only(tool));
                }
            }
            let listed_at = existing.listed_at;
            servers.insert(
                server,
                Arc::new(Catalogue {
                    read_only,
                    listed_at,
                }),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use cola_domain::{ApiKeyPermissions, Surface};
    use serde_json::json;

    use super::*;

    fn permissions(read: bool, write: bool, tools: Option<&[&str]>) -> ApiKeyPermissions {
        ApiKeyPermissions::new(
            read,
            write,
            tools.map(|names| names.iter().map(|name| (*name).to_owned()).collect()),
            None,
        )
        .expect("valid permissions")
    }

    fn decide(
        permissions: &ApiKeyPermissions,
        method: &str,
        params: Value,
        tool: ToolLookup,
    ) -> Verdict {
        let scope = permissions.scope_on(Surface::Cola).expect("a scope");
        authorise(&scope, method, &params, |_| tool)
    }

    #[test]
    fn a_read_only_key_calls_a_listed_read_only_tool_and_not_a_writing_one() {
        let reader = permissions(true, false, None);
        let call = || json!({ "name": "search" });
        assert_eq!(
            decide(
                &reader,
                "tools/call",
                call(),
                ToolLookup::Listed { read_only: true }
            ),
            Verdict::Forward
        );
        assert_eq!(
            decide(
                &reader,
                "tools/call",
                call(),
                ToolLookup::Listed { read_only: false }
            ),
            Verdict::Refuse(Hidden::Tool("search".into()))
        );
    }

    #[test]
    fn an_unknown_annotation_is_asked_for_only_when_it_decides() {
        let reader = permissions(true, false, None);
        assert_eq!(
            decide(
                &reader,
                "tools/call",
                json!({ "name": "x" }),
                ToolLookup::Unknown
            ),
            Verdict::NeedsCatalogue
        );
        let both = permissions(true, true, None);
        assert_eq!(
            decide(
                &both,
                "tools/call",
                json!({ "name": "x" }),
                ToolLookup::Unknown
            ),
            Verdict::Forward
        );
        let unlisted = permissions(true, true, Some(&["other"]));
        assert_eq!(
            decide(
                &unlisted,
                "tools/call",
                json!({ "name": "x" }),
                ToolLookup::Unknown
            ),
            Verdict::Refuse(Hidden::Tool("x".into()))
        );
    }

    #[test]
    fn a_tool_the_upstream_does_not_list_is_refused_when_its_annotation_would_decide() {
        let writer = permissions(false, true, None);
        assert_eq!(
            decide(
                &writer,
                "tools/call",
                json!({ "name": "x" }),
                ToolLookup::Absent
            ),
            Verdict::Refuse(Hidden::Tool("x".into()))
        );
    }

    #[test]
    fn unknown_methods_are_refused_and_known_ones_pass() {
        let both = permissions(true, true, None);
        assert_eq!(
            decide(
                &both,
                "sampling/createMessage",
                json!({}),
                ToolLookup::Unknown
            ),
            Verdict::UnknownMethod
        );
        assert_eq!(
            decide(&both, "initialize", json!({}), ToolLookup::Unknown),
            Verdict::Forward
        );
        assert_eq!(
            decide(&both, "tools/list", json!({}), ToolLookup::Unknown),
            Verdict::ForwardAndFilter(ListKind::Tools)
        );
    }

    #[test]
    fn a_completion_is_decided_as_the_prompt_it_names() {
        let writer = permissions(false, true, None);
        let params = json!({ "ref": { "type": "ref/prompt", "name": "greet" }, "argument": {} });
        assert_eq!(
            decide(&writer, "completion/complete", params, ToolLookup::Unknown),
            Verdict::Refuse(Hidden::Prompt("greet".into()))
        );
        let reader = permissions(true, false, None);
        let params = json!({ "ref": { "type": "ref/resource", "uri": "file:///{path}" } });
        assert_eq!(
            decide(&reader, "completion/complete", params, ToolLookup::Unknown),
            Verdict::Forward
        );
    }

    #[test]
    fn a_filtered_list_shows_only_usable_items_and_is_private() {
        let reader = permissions(true, false, Some(&["search", "delete"]));
        let scope = reader.scope_on(Surface::Cola).expect("a scope");
        let mut result = json!({
            "tools": [
                { "name": "search", "annotations": { "readOnlyHint": true } },
                { "name": "delete" },
                { "name": "hidden", "annotations": { "readOnlyHint": true } },
                { "title": "nameless" },
            ],
            "ttlMs": 60000,
        });
        filter_list(&scope, ListKind::Tools, &mut result);
        assert_eq!(
            result["tools"],
            json!([{ "name": "search", "annotations": { "readOnlyHint": true } }])
        );
        assert_eq!(result["cacheScope"], "private");
        assert_eq!(result["ttlMs"], 0);
    }

    #[test]
    fn a_list_answer_without_its_list_shows_an_empty_one() {
        let reader = permissions(true, false, None);
        let scope = reader.scope_on(Surface::Cola).expect("a scope");
        let mut result = json!({ "prompts": "not a list" });
        filter_list(&scope, ListKind::Prompts, &mut result);
        assert_eq!(result["prompts"], json!([]));
    }

    #[test]
    fn the_catalogue_knows_listed_tools_and_refetches_at_most_every_interval() {
        let catalogue = ToolCatalogue::new();
        let server = Uuid::new_v4();
        assert_eq!(catalogue.lookup(server, "search"), ToolLookup::Unknown);
        catalogue.record(
            server,
            &[json!({ "name": "search", "annotations": { "readOnlyHint": true } })],
        );
        assert_eq!(
            catalogue.lookup(server, "search"),
            ToolLookup::Listed { read_only: true }
        );
        assert_eq!(catalogue.lookup(server, "other"), ToolLookup::Absent);
        let mut turn = catalogue.try_fetch_turn(server).expect("nobody fetches");
        assert!(turn.claim());
        assert!(!turn.claim());
        drop(turn);
        let mut next = catalogue.try_fetch_turn(server).expect("nobody fetches");
        assert!(!next.claim(), "at most one fetch per interval");
    }

    #[test]
    fn one_fetch_turn_per_server_and_a_fresh_catalogue_needs_no_refresh() {
        let catalogue = ToolCatalogue::new();
        let (server, other) = (Uuid::new_v4(), Uuid::new_v4());
        let held = catalogue.try_fetch_turn(server).expect("free");
        assert!(
            catalogue.try_fetch_turn(server).is_none(),
            "one fetch at a time"
        );
        assert!(catalogue.try_fetch_turn(other).is_some(), "per server");
        drop(held);
        assert!(catalogue.try_fetch_turn(server).is_some());
        assert!(
            !catalogue.refresh_due(server),
            "nothing known, nothing to refresh"
        );
        catalogue.record(server, &[json!({ "name": "search" })]);
        assert!(!catalogue.refresh_due(server), "just listed");
    }

    #[test]
    fn a_later_page_adds_to_the_catalogue_without_replacing_it() {
        let catalogue = ToolCatalogue::new();
        let server = Uuid::new_v4();
        catalogue.record(server, &[json!({ "name": "a" })]);
        catalogue.record_page(
            server,
            &json!({ "tools": [{ "name": "b", "annotations": { "readOnlyHint": true } }], "nextCursor": "2" }),
        );
        assert_eq!(
            catalogue.lookup(server, "a"),
            ToolLookup::Listed { read_only: false }
        );
        assert_eq!(
            catalogue.lookup(server, "b"),
            ToolLookup::Listed { read_only: true }
        );
    }

    #[test]
    fn a_notification_about_a_hidden_resource_is_dropped() {
        let reader =
            ApiKeyPermissions::new(true, false, None, Some(vec!["file:///public/*".into()]))
                .expect("valid");
        let scope = reader.scope_on(Surface::Cola).expect("a scope");
        assert!(may_see_notification(
            &scope,
            "notifications/resources/updated",
            &json!({ "uri": "file:///public/a" })
        ));
        assert!(!may_see_notification(
            &scope,
            "notifications/resources/updated",
            &json!({ "uri": "file:///secret/a" })
        ));
        assert!(may_see_notification(
            &scope,
            "notifications/progress",
            &json!({})
        ));
    }
}
