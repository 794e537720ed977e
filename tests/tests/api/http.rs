//! The HTTP surface itself: health, readiness, and problem bodies for what
//! is not a route, not a method, not JSON or too large.

use cola_e2e::TestApp;
use serde_json::{Value, json};

use crate::Tenant;

async fn assert_problem(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["status"], status);
    for field in ["type", "title", "detail"] {
        assert!(problem[field].is_string(), "{field} missing: {problem}");
    }
    problem
}

#[tokio::test]
async fn health_and_readiness_answer_without_credentials() {
    let app = TestApp::spawn().await;
    let health = app
        .client
        .get(format!("{}/health", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready = app
        .client
        .get(format!("{}/ready", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_problems() {
    let app = TestApp::spawn().await;
    let tenant = Tenant::new();
    let token = app.token(tenant.id, tenant.alice, "member");
    assert_problem(
        app.client
            .get(format!("{}/nope", app.base))
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
    assert_problem(
        app.client
            .get(format!("{}/api/mcp/keyz", app.base))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
    assert_problem(app.get_key(&token, "not-a-uuid").await, 404).await;
    let wrong_method = app
        .client
        .put(format!("{}/api/mcp/keys", app.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_method.headers()["allow"], "GET, POST");
    assert_problem(wrong_method, 405).await;
    let id = uuid::Uuid::new_v4();
    let wrong_method = app
        .client
        .post(format!("{}/api/mcp/keys/{id}/events", app.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_problem(wrong_method, 405).await;
}

#[tokio::test]
async fn a_body_that_is_not_json_is_a_415_and_an_oversized_one_a_413() {
    let app = TestApp::spawn().await;
    let tenant = Tenant::new();
    let token = app.token(tenant.id, tenant.alice, "member");
    let url = format!("{}/api/mcp/keys", app.base);
    let text = app
        .client
        .post(&url)
        .bearer_auth(&token)
        .header("content-type", "text/plain")
        .body(r#"{"name":"x"}"#)
        .send()
        .await
        .unwrap();
    assert_problem(text, 415).await;
    let missing = app
        .client
        .post(&url)
        .bearer_auth(&token)
        .body(r#"{"name":"x"}"#)
        .send()
        .await
        .unwrap();
    assert_problem(missing, 415).await;
    let huge = json!({ "name": "x", "description": "d".repeat(70 * 1024) });
    let huge = app
        .client
        .post(&url)
        .bearer_auth(&token)
        .json(&huge)
        .send()
        .await
        .unwrap();
    assert_problem(huge, 413).await;
    let broken = app
        .client
        .post(&url)
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{\"name\":")
        .send()
        .await
        .unwrap();
    let problem = assert_problem(broken, 400).await;
    assert!(problem["errors"].get("body").is_some());
    let listed: Value = app.list_keys(&token, "").await.json().await.unwrap();
    assert_eq!(listed["items"], json!([]));
}

#[tokio::test]
async fn unauthenticated_requests_are_refused_before_the_body_is_read() {
    let app = TestApp::spawn().await;
    let response = app
        .client
        .post(format!("{}/api/mcp/keys", app.base))
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    let problem = assert_problem(response, 401).await;
    assert!(problem.get("errors").is_none());
}

fn gzip(body: &Value) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder
        .write_all(body.to_string().as_bytes())
        .expect("compress");
    encoder.finish().expect("compress")
}

/// A compressed body would be inflated before the 64 KiB limit could see it
/// (a few KiB of gzip inflate to gigabytes). Any `Content-Encoding` but
/// `identity` is refused, and the request has no effect.
#[tokio::test]
async fn a_content_encoded_body_is_a_415_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let tenant = Tenant::new();
    let token = app.token(tenant.id, tenant.alice, "member");
    let url = format!("{}/api/mcp/keys", app.base);
    let create = json!({ "name": "compressed", "permissions": { "write": true } });
    for coding in ["gzip", "GZIP", "identity, gzip", "br"] {
        let response = app
            .client
            .post(&url)
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .header("content-encoding", coding)
            .body(gzip(&create))
            .send()
            .await
            .unwrap();
        let problem = assert_problem(response, 415).await;
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("Content-Encoding"),
            "{problem}"
        );
    }
    let listed: Value = app.list_keys(&token, "").await.json().await.unwrap();
    assert_eq!(listed["items"], json!([]), "no key was created");
    // `identity` is no encoding at all.
    let plain = app
        .client
        .post(&url)
        .bearer_auth(&token)
        .header("content-encoding", "identity")
        .json(&create)
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 201);
    let key: Value = plain.json().await.unwrap();

    // At /mcp the refusal is a JSON-RPC error, and the tool is not called.
    let revoke = json!({
        "jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": { "name": "revoke_api_key", "arguments": { "id": key["id"] } }
    });
    let response = app
        .client
        .post(format!("{}/mcp", app.base))
        .bearer_auth(key["key"].as_str().unwrap())
        .header("mcp-protocol-version", "2025-11-25")
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gzip(&revoke))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["jsonrpc"], "2.0");
    assert_eq!(body["error"]["code"], -32600);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Content-Encoding"),
        "{body}"
    );
    let after: Value = app
        .get_key(&token, key["id"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(after["status"], "active", "the key was not revoked");
}
