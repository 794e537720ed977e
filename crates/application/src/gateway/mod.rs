//! The gateway's policy: which message a key may send to a tenant's server,
//! and what of a list answer it may see. The api crate parses and relays;
//! every "may it?" of a gateway message is asked here, of the key's
//! `SurfaceScope` on that server, and nowhere else.
//!
//! Hidden is the same as absent: a message naming something the key may not
//! use is refused exactly as one naming something that does not exist, and
//! it never reaches the upstream.

mod answer;
mod catalogue;
mod handles;
mod headers;
mod inflight;
mod ports;
mod relay;
mod route;
mod service;
#[cfg(test)]
mod service_tests;

use cola_domain::SurfaceScope;
use serde_json::Value;

pub use answer::{Expected, MAX_LIST_ANSWER_BYTES, Unrelayable, UpstreamId, answer};
pub use catalogue::{
    CATALOGUE_REFETCH_INTERVAL, CATALOGUE_REFRESH_AFTER, CATALOGUE_TTL, CataloguePage,
    CatalogueTool, FetchTurn, ToolCatalogue,
};
pub use handles::Handles;
pub use headers::{HeaderParam, mirrored_param_allowed};
pub use inflight::{InflightSlot, TenantInflight};
pub use ports::{
    AnswerBody, Binding, HandleKind, HandleSealer, IdentityAsserter, IdentityClaims, ReadBodyError,
    Upstream, UpstreamAnswer, UpstreamCall, UpstreamFailure, UpstreamHeader, UpstreamMethod,
};
pub use route::{ASSERTION_LIFETIME_SECS, ClientHeaders, EventStream, Relayed, Reply, Route};
pub use service::{Closed, GatewayParts, GatewayService};

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
    /// Forward it once the task it names (`params.taskId`, Cola's id) opens
    /// for this key and server; otherwise it is an unknown task.
    ForwardTask,
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
///
/// `tasks/list` is not among them: Cola reaches a server with one
/// credential for every key, so it cannot tell which key a listed task is
/// of, and lists none.
const PASS_THROUGH: [&str; 5] = [
    "initialize",
    "ping",
    "server/discover",
    "logging/setLevel",
    "subscriptions/listen",
];

/// Methods that name a task by the id the upstream gave it, which the
/// client holds only as Cola's own (see [`Verdict::ForwardTask`]).
const TASK_METHODS: [&str; 4] = ["tasks/get", "tasks/result", "tasks/cancel", "tasks/update"];

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
        _ if TASK_METHODS.contains(&method) => match string_param(params, "taskId") {
            Some(_) => Verdict::ForwardTask,
            None => Verdict::Invalid("params.taskId is required"),
        },
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
