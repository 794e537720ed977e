//! Upstream answers as the gateway relays them, read without being built.
//!
//! Nothing an upstream echoes is trusted: every request goes upstream under
//! an id of Cola's own ([`UpstreamId`]), and an answer reaches the client
//! only when it carries exactly that id, which is then put back to the
//! client's. An answer that matches nothing Cola sent is dropped, so a list
//! can never slip past its filter because an upstream re-serialised an id
//! (JavaScript turns 9007199254740993 into 9007199254740992).
//!
//! Lists are filtered item by item from the raw text: each item is read
//! only for the fields that decide it (`name` and `readOnlyHint`, `uri`,
//! `uriTemplate`) and kept as the bytes the upstream sent, so filtering a
//! list costs little more memory than the answer itself, which is bounded
//! ([`MAX_LIST_ANSWER_BYTES`]).

use std::borrow::Cow;

use cola_domain::SurfaceScope;
use cola_protocol::RawMessage;
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::ListKind;

/// The largest list answer the gateway filters; a larger one is refused.
pub const MAX_LIST_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// The id a client's request goes upstream under. It is derived from the
/// client's own id (`cola:` and the id's JSON text), so that a client's
/// later `notifications/cancelled` naming its id is mapped the same way on
/// any instance, and it is always a string, which every JSON parser echoes
/// byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamId(String);

impl UpstreamId {
    /// The upstream id of the client's request `id`.
    #[must_use]
    pub fn of_client(id: &Value) -> Self {
        Self(format!("cola:{id}"))
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// As a JSON value, to put in a message sent upstream.
    #[must_use]
    pub fn to_value(&self) -> Value {
        Value::String(self.0.clone())
    }

    /// Whether `raw`, an answer's id as the upstream wrote it, is this one.
    fn is(&self, raw: &RawValue) -> bool {
        serde_json::from_str::<Cow<'_, str>>(raw.get()).is_ok_and(|id| id == self.0)
    }
}

/// What the client's request was, for the answer that comes back to it.
#[derive(Debug, Clone)]
pub struct Expected {
    pub upstream_id: UpstreamId,
    /// The client's id, put back in the answer.
    pub client_id: Value,
    /// The list it asked for, whose answer is filtered.
    pub list: Option<ListKind>,
}

impl Expected {
    #[must_use]
    pub fn new(client_id: Value, list: Option<ListKind>) -> Self {
        Self {
            upstream_id: UpstreamId::of_client(&client_id),
            client_id,
            list,
        }
    }
}

/// Why an upstream answer does not reach the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unrelayable {
    #[error("the answer is not one JSON-RPC response")]
    NotAResponse,
    #[error("the answer's id is not the one Cola sent")]
    Unmatched,
    #[error("the list answer is larger than Cola filters")]
    TooLarge,
}

/// The upstream's answer `message` to the request `expected` describes, as
/// the client sees it under `scope`: its id put back to the client's and,
/// for a list, only what the key may use, marked private.
///
/// # Errors
/// When it is not a response, not to that request, or a list too large.
pub fn answer(
    message: &RawMessage<'_>,
    text_len: usize,
    expected: &Expected,
    scope: &SurfaceScope<'_>,
) -> Result<String, Unrelayable> {
    if message.has_method() {
        return Err(Unrelayable::NotAResponse);
    }
    let id = message.get("id").ok_or(Unrelayable::NotAResponse)?;
    if !expected.upstream_id.is(id) {
        return Err(Unrelayable::Unmatched);
    }
    let client_id = expected.client_id.to_string();
    let filtered;
    let mut replaced = vec![("id", client_id.as_str())];
    if let (Some(kind), Some(result)) = (expected.list, message.get("result")) {
        if text_len > MAX_LIST_ANSWER_BYTES {
            return Err(Unrelayable::TooLarge);
        }
        filtered = filter_list(result, kind, scope);
        replaced.push(("result", filtered.as_str()));
    }
    Ok(message.write_with(&replaced))
}

/// The field a list answer carries its items in.
fn list_field(kind: ListKind) -> &'static str {
    match kind {
        ListKind::Tools => "tools",
        ListKind::Resources => "resources",
        ListKind::ResourceTemplates => "resourceTemplates",
        ListKind::Prompts => "prompts",
    }
}

/// What decides whether the key may see one listed item.
#[derive(Deserialize)]
struct ListedItem<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    uri: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "uriTemplate")]
    uri_template: Option<Cow<'a, str>>,
    #[serde(default)]
    annotations: Option<Annotations>,
}

#[derive(Deserialize)]
struct Annotations {
    #[serde(default, rename = "readOnlyHint")]
    read_only_hint: Option<bool>,
}

/// Whether the key may see `item`; an item that cannot be read, or lacks
/// the field it is judged by, is not shown.
fn visible(item: &RawValue, kind: ListKind, scope: &SurfaceScope<'_>) -> bool {
    let Ok(item) = serde_json::from_str::<ListedItem<'_>>(item.get()) else {
        return false;
    };
    match kind {
        ListKind::Tools => item.name.is_some_and(|name| {
            let read_only = item
                .annotations
                .and_then(|annotations| annotations.read_only_hint)
                .unwrap_or(false);
            scope.may_use_tool(&name, read_only)
        }),
        ListKind::Resources => item.uri.is_some_and(|uri| scope.may_read_resource(&uri)),
        ListKind::ResourceTemplates => item
            .uri_template
            .is_some_and(|template| scope.may_list_resource_template(&template)),
        ListKind::Prompts => item.name.is_some_and(|name| scope.may_get_prompt(&name)),
    }
}

/// A list `result` (raw) with only the items the key may see, marked
/// private to this key (`cacheScope: "private"`, `ttlMs` 0 when given). A
/// result that is not an object with its list shows an empty list.
fn filter_list(result: &RawValue, kind: ListKind, scope: &SurfaceScope<'_>) -> String {
    let field = list_field(kind);
    let object = RawMessage::parse(result.get()).unwrap_or_default();
    let items = object
        .get(field)
        .and_then(|list| serde_json::from_str::<Vec<&RawValue>>(list.get()).ok())
        .unwrap_or_default();
    let mut list = String::with_capacity(result.get().len());
    list.push('[');
    for item in items.into_iter().filter(|item| visible(item, kind, scope)) {
        if list.len() > 1 {
            list.push(',');
        }
        list.push_str(item.get());
    }
    list.push(']');
    let mut replaced = vec![(field, list.as_str()), ("cacheScope", "\"private\"")];
    if object.get("ttlMs").is_some() {
        replaced.push(("ttlMs", "0"));
    }
    object.write_with(&replaced)
}

#[cfg(test)]
mod tests {
    use cola_domain::{ApiKeyPermissions, Surface};
    use serde_json::json;

    use super::*;

    fn reader(tools: Option<&[&str]>) -> ApiKeyPermissions {
        ApiKeyPermissions::new(
            true,
            false,
            tools.map(|names| names.iter().map(|name| (*name).to_owned()).collect()),
            None,
        )
        .expect("valid permissions")
    }

    fn relayed(
        text: &str,
        expected: &Expected,
        permissions: &ApiKeyPermissions,
    ) -> Result<Value, Unrelayable> {
        let scope = permissions.scope_on(Surface::Cola).expect("a scope");
        let message = RawMessage::parse(text).ok_or(Unrelayable::NotAResponse)?;
        let answer = answer(&message, text.len(), expected, &scope)?;
        Ok(serde_json::from_str(&answer).expect("the answer is JSON"))
    }

    #[test]
    fn a_big_integer_id_goes_upstream_as_a_string_and_comes_back_as_sent() {
        let client_id: Value = serde_json::from_str("9007199254740993").expect("an id");
        let expected = Expected::new(client_id, Some(ListKind::Tools));
        assert_eq!(expected.upstream_id.as_str(), "cola:9007199254740993");
        let upstream = format!(
            r#"{{"result":{{"tools":[{{"name":"search","annotations":{{"readOnlyHint":true}}}},{{"name":"delete"}}]}},"jsonrpc":"2.0","id":{}}}"#,
            expected.upstream_id.to_value()
        );
        let answer = relayed(&upstream, &expected, &reader(None)).expect("relayed");
        assert_eq!(answer["id"].to_string(), "9007199254740993");
        assert_eq!(
            answer["result"]["tools"],
            json!([{"name":"search","annotations":{"readOnlyHint":true}}])
        );
        assert_eq!(answer["result"]["cacheScope"], "private");
    }

    #[test]
    fn an_answer_under_any_other_id_is_not_relayed() {
        let expected = Expected::new(json!(9_007_199_254_740_993_u64), Some(ListKind::Tools));
        let hidden = r#"{"name":"delete"}"#;
        for id in [
            "9007199254740992",
            "9007199254740993",
            "\"9007199254740993\"",
            "null",
            "\"cola:9007199254740992\"",
        ] {
            let upstream =
                format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{"tools":[{hidden}]}}}}"#);
            assert_eq!(
                relayed(&upstream, &expected, &reader(None)),
                Err(Unrelayable::Unmatched),
                "{id}"
            );
        }
        // No id, a message of the server's own, an array, a duplicate id.
        for upstream in [
            r#"{"jsonrpc":"2.0","result":{}}"#.to_owned(),
            r#"{"jsonrpc":"2.0","id":"cola:1","method":"x"}"#.to_owned(),
            r#"[{"jsonrpc":"2.0","id":"cola:1","result":{}}]"#.to_owned(),
            r#"{"id":"cola:1","id":"cola:1","result":{}}"#.to_owned(),
        ] {
            let expected = Expected::new(json!(1), None);
            assert!(
                relayed(&upstream, &expected, &reader(None)).is_err(),
                "{upstream}"
            );
        }
    }

    #[test]
    fn an_escaped_id_that_reads_as_colas_is_colas() {
        let expected = Expected::new(json!(1), None);
        let upstream = r#"{"jsonrpc":"2.0","id":"\u0063ola:1","result":{"content":[]}}"#;
        let answer = relayed(upstream, &expected, &reader(None)).expect("relayed");
        assert_eq!(answer["id"], 1);
    }

    #[test]
    fn a_non_list_answer_keeps_every_byte_but_its_id() {
        let expected = Expected::new(json!("a"), None);
        let upstream =
            r#"{"jsonrpc":"2.0","id":"cola:\"a\"","result":{"z":1, "a":[2,  3],"s":"\u00e9"}}"#;
        let scope_owner = reader(None);
        let scope = scope_owner.scope_on(Surface::Cola).expect("a scope");
        let message = RawMessage::parse(upstream).expect("a message");
        let answer = answer(&message, upstream.len(), &expected, &scope).expect("relayed");
        assert_eq!(
            answer,
            r#"{"jsonrpc":"2.0","id":"a","result":{"z":1, "a":[2,  3],"s":"\u00e9"}}"#
        );
    }

    #[test]
    fn a_list_keeps_only_usable_items_and_a_list_without_its_items_is_empty() {
        let expected = Expected::new(json!(3), Some(ListKind::Tools));
        let upstream = r#"{"jsonrpc":"2.0","id":"cola:3","result":{"tools":[
            {"name":"search","annotations":{"readOnlyHint":true},"inputSchema":{"type":"object"}},
            {"name":"search","name":"delete","annotations":{"readOnlyHint":true}},
            {"name":"hidden","annotations":{"readOnlyHint":true}},
            {"title":"nameless"},
            {"name":"search","annotations":{"readOnlyHint":"yes"}}
        ],"ttlMs":60000,"nextCursor":"2"}}"#;
        let answer = relayed(upstream, &expected, &reader(Some(&["search"]))).expect("relayed");
        assert_eq!(
            answer["result"],
            json!({
                "tools": [{"name":"search","annotations":{"readOnlyHint":true},"inputSchema":{"type":"object"}}],
                "ttlMs": 0, "nextCursor": "2", "cacheScope": "private"
            })
        );
        let upstream = r#"{"jsonrpc":"2.0","id":"cola:3","result":{"tools":"not a list"}}"#;
        let answer = relayed(upstream, &expected, &reader(None)).expect("relayed");
        assert_eq!(answer["result"]["tools"], json!([]));
    }

    #[test]
    fn a_list_answer_past_the_bound_is_refused() {
        let expected = Expected::new(json!(1), Some(ListKind::Prompts));
        let padding = "x".repeat(MAX_LIST_ANSWER_BYTES);
        let upstream = format!(
            r#"{{"jsonrpc":"2.0","id":"cola:1","result":{{"prompts":[],"pad":"{padding}"}}}}"#
        );
        assert_eq!(
            relayed(&upstream, &expected, &reader(None)),
            Err(Unrelayable::TooLarge)
        );
    }
}
