//! The gateway `/mcp/{slug}` end to end, in Rust beside the Python and
//! TypeScript suites: one Cola process is the upstream (its own `/mcp` is an
//! MCP server with a read-only `whoami` and `list_api_keys` and a writing
//! `revoke_api_key`), a second one is the gateway in front of it. Both are the
//! real binary on a real database; everything goes over HTTP.

use cola_e2e::{Options, TestApp, secrets_key};
use reqwest::Response;
use serde_json::{Value, json};

use crate::Tenant;

const MODERN: &str = "2026-07-28";

/// The upstream Cola, the gateway Cola with the upstream registered under
/// `slug`, and who is who.
struct Gateway {
    upstream: TestApp,
    gateway: TestApp,
    /// The key the gateway presents upstream (the server's stored header).
    upstream_key_id: String,
    /// The upstream key's owner, on the upstream.
    upstream_owner: String,
    admin: String,
    slug: String,
}

impl Gateway {
    async fn start(options: Options) -> Self {
        let upstream = TestApp::spawn().await;
        let upstream_tenant = Tenant::new();
        let upstream_owner = upstream.token(upstream_tenant.id, upstream_tenant.alice, "member");
        let upstream_key = upstream
            .new_key(
                &upstream_owner,
                &json!({ "name": "gateway", "permissions": { "read": true, "write": true } }),
            )
            .await;

        let gateway = TestApp::spawn_with(
            options
                .with("COLA_GATEWAY_ALLOWED_NETWORKS", "127.0.0.0/8")
                .with("COLA_SECRETS_KEY", &secrets_key()),
        )
        .await;
        let tenant = Tenant::new();
        let admin = gateway.token(tenant.id, tenant.admin, "admin");
        let slug = "upstream".to_owned();
        let registered = gateway
            .create_server(
                &admin,
                &json!({
                    "slug": slug,
                    "name": "Cola upstream",
                    "url": format!("{}/mcp", upstream.base),
                    "headers": {
                        "Authorization": format!("Bearer {}", upstream_key["key"].as_str().unwrap())
                    },
                }),
            )
            .await;
        assert_eq!(registered.status(), 201);
        Self {
            upstream_key_id: upstream_key["id"].as_str().unwrap().to_owned(),
            upstream_owner,
            upstream,
            gateway,
            admin,
            slug,
        }
    }

    /// A new key on the gateway with `permissions`; returns (id, secret).
    async fn key(&self, permissions: Value) -> (String, String) {
        let key = self
            .gateway
            .new_key(
                &self.admin,
                &json!({ "name": "client", "permissions": permissions }),
            )
            .await;
        (
            key["id"].as_str().unwrap().to_owned(),
            key["key"].as_str().unwrap().to_owned(),
        )
    }

    /// A 2026-07-28 (stateless) request through the gateway.
    async fn post(&self, slug: &str, key: &str, method: &str, params: Value) -> Response {
        let mut params = params;
        params["_meta"] = json!({
            "io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": { "name": "cola-e2e", "version": "0" },
        });
        let mut request = self
            .gateway
            .client
            .post(format!("{}/mcp/{slug}", self.gateway.base))
            .bearer_auth(key)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", MODERN)
            .header("mcp-method", method);
        if let Some(name) = params["name"].as_str() {
            request = request.header("mcp-name", name);
        }
        request
            .json(&json!({ "jsonrpc": "2.0", "id": 7, "method": method, "params": params }))
            .send()
            .await
            .unwrap()
    }

    /// The answer to `tools/call` of `tool` with `arguments`, through the
    /// gateway to its own server.
    async fn call(&self, key: &str, tool: &str, arguments: Value) -> Value {
        let params = json!({ "name": tool, "arguments": arguments });
        answer(self.post(&self.slug, key, "tools/call", params).await).await
    }
}

/// The JSON-RPC answer of a 200, from a JSON body or an event stream's
/// last message.
async fn answer(response: Response) -> Value {
    assert_eq!(response.status(), 200);
    let event_stream = response
        .headers()
        .get("content-type")
        .is_some_and(|value| value.as_bytes().starts_with(b"text/event-stream"));
    let text = response.text().await.unwrap();
    if !event_stream {
        return serde_json::from_str(&text).unwrap();
    }
    text.lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .filter_map(|data| serde_json::from_str::<Value>(data.trim()).ok())
        .rfind(|message| message.get("result").is_some() || message.get("error").is_some())
        .expect("an answer on the stream")
}

fn tool_names(answer: &Value) -> Vec<String> {
    let mut names: Vec<String> = answer["result"]["tools"]
        .as_array()
        .expect("a tools list")
        .iter()
        .map(|tool| tool["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

fn grant(slug: &str, tools: Value) -> Value {
    json!({ slug: { "allowed_tools": tools, "allowed_resources": null, "allowed_prompts": null } })
}

async fn a_key_sees_and_calls_only_its_granted_tools_and_the_upstream_sees_colas_credential(
    options: Options,
) {
    let setup = Gateway::start(options).await;
    let (client_key_id, key) = setup
        .key(json!({ "read": true, "write": true, "servers": grant(&setup.slug, json!(["whoami"])) }))
        .await;

    let listed = answer(setup.post(&setup.slug, &key, "tools/list", json!({})).await).await;
    assert_eq!(tool_names(&listed), ["whoami"]);
    assert_eq!(listed["id"], 7, "the client's id comes back");

    let called = setup.call(&key, "whoami", json!({})).await;
    let identity = &called["result"]["structuredContent"];
    // The upstream answered for the credential stored with the server, so it
    // never saw the client's key.
    assert_eq!(identity["key_id"], setup.upstream_key_id.as_str());
    assert_ne!(identity["key_id"], client_key_id.as_str());

    let hidden = setup.call(&key, "list_api_keys", json!({})).await;
    assert_eq!(hidden["error"]["code"], -32602, "{hidden}");
}

#[tokio::test]
async fn a_key_sees_and_calls_only_its_granted_tools_on_sqlite() {
    a_key_sees_and_calls_only_its_granted_tools_and_the_upstream_sees_colas_credential(
        Options::default(),
    )
    .await;
}

#[tokio::test]
async fn a_key_sees_and_calls_only_its_granted_tools_on_postgres() {
    a_key_sees_and_calls_only_its_granted_tools_and_the_upstream_sees_colas_credential(
        Options::postgres(),
    )
    .await;
}

#[tokio::test]
async fn a_read_only_key_never_reaches_a_writing_tool_even_when_it_is_granted() {
    let setup = Gateway::start(Options::default()).await;
    let (_, key) = setup
        .key(json!({ "read": true, "write": false, "servers": grant(&setup.slug, Value::Null) }))
        .await;

    let listed = answer(setup.post(&setup.slug, &key, "tools/list", json!({})).await).await;
    assert_eq!(tool_names(&listed), ["list_api_keys", "whoami"]);

    let refused = setup
        .call(
            &key,
            "revoke_api_key",
            json!({ "id": setup.upstream_key_id }),
        )
        .await;
    assert_eq!(refused["error"]["code"], -32602, "{refused}");
    // Had the call arrived, the upstream key would have revoked itself and the
    // next call through the gateway would fail.
    let still = setup.call(&key, "whoami", json!({})).await;
    assert_eq!(
        still["result"]["structuredContent"]["key_id"],
        setup.upstream_key_id.as_str()
    );
}

#[tokio::test]
async fn a_revoked_key_is_refused_on_its_next_request() {
    let setup = Gateway::start(Options::default()).await;
    let (id, key) = setup
        .key(json!({ "read": true, "servers": grant(&setup.slug, Value::Null) }))
        .await;
    let before = setup.post(&setup.slug, &key, "tools/list", json!({})).await;
    assert_eq!(before.status(), 200);

    assert_eq!(setup.gateway.revoke(&setup.admin, &id).await.status(), 204);
    let after = setup.post(&setup.slug, &key, "tools/list", json!({})).await;
    assert_eq!(after.status(), 401);
    assert!(
        after
            .headers()
            .get("www-authenticate")
            .is_some_and(|value| value.as_bytes().starts_with(b"Bearer"))
    );
}

#[tokio::test]
async fn an_unknown_slug_and_an_ungranted_server_answer_the_same_404() {
    let setup = Gateway::start(Options::default()).await;
    let (_, key) = setup.key(json!({ "read": true, "write": true })).await;

    let ungranted = setup.post(&setup.slug, &key, "tools/list", json!({})).await;
    let unknown = setup
        .post("no-such-server", &key, "tools/list", json!({}))
        .await;
    assert_eq!(ungranted.status(), 404);
    assert_eq!(unknown.status(), 404);
    let ungranted: Value = ungranted.json().await.unwrap();
    let unknown: Value = unknown.json().await.unwrap();
    assert_eq!(ungranted, unknown);
}

#[tokio::test]
async fn an_upstream_that_refuses_colas_credential_is_a_502_without_its_challenge() {
    let setup = Gateway::start(Options::default()).await;
    let (_, key) = setup
        .key(json!({ "read": true, "servers": grant(&setup.slug, Value::Null) }))
        .await;
    assert_eq!(
        setup
            .post(&setup.slug, &key, "tools/list", json!({}))
            .await
            .status(),
        200
    );
    // The upstream's owner takes back the credential the gateway presents.
    let revoked = setup
        .upstream
        .revoke(&setup.upstream_owner, &setup.upstream_key_id)
        .await;
    assert_eq!(revoked.status(), 204);

    let refused = setup.post(&setup.slug, &key, "tools/list", json!({})).await;
    assert_eq!(refused.status(), 502);
    // The upstream's challenge is about Cola's credential, not the client's:
    // a client told to authenticate again would drop a key that works.
    assert!(refused.headers().get("www-authenticate").is_none());
    let body = refused.text().await.unwrap();
    assert!(
        !body.contains("Bearer") && !body.contains("cola_"),
        "{body}"
    );
}

#[tokio::test]
async fn an_upstream_that_is_down_is_a_502_naming_only_the_slug() {
    let mut setup = Gateway::start(Options::default()).await;
    let (_, key) = setup
        .key(json!({ "read": true, "servers": grant(&setup.slug, Value::Null) }))
        .await;
    let upstream_address = setup.upstream.address().to_owned();
    setup.upstream.terminate();

    let down = setup.post(&setup.slug, &key, "tools/list", json!({})).await;
    assert_eq!(down.status(), 502);
    assert!(down.headers().get("www-authenticate").is_none());
    let body = down.text().await.unwrap();
    let error: Value = serde_json::from_str(&body).unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&setup.slug)
    );
    assert!(!body.contains(&upstream_address), "{body}");
    assert!(!body.contains("127.0.0.1"), "{body}");
}
