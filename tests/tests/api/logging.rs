//! The log of authentication decisions: one line per decision, naming the
//! key prefix, the tenant, the outcome and the client address.

use std::time::Duration;

use cola_e2e::{TestApp, eventually, same_prefix_wrong_secret};
use serde_json::{Value, json};

use crate::Tenant;

/// The `mcp authentication` lines logged so far for `prefix`, as
/// (outcome, tenant, client).
fn decisions(app: &TestApp, prefix: &str) -> Vec<(String, String, String)> {
    app.logs()
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| event["message"] == "mcp authentication" && event["key_prefix"] == prefix)
        .map(|event| {
            let text = |field: &str| event[field].as_str().unwrap_or_default().to_owned();
            (text("outcome"), text("tenant"), text("client"))
        })
        .collect()
}

#[tokio::test]
async fn each_authentication_decision_is_logged_once_with_prefix_tenant_outcome_and_client() {
    let app = TestApp::spawn().await;
    let tenant = Tenant::new();
    let token = app.token(tenant.id, tenant.alice, "member");
    let created = app.new_key(&token, &json!({ "name": "logged" })).await;
    let (id, key) = (
        created["id"].as_str().unwrap(),
        created["key"].as_str().unwrap(),
    );
    let prefix = created["key_prefix"].as_str().unwrap();
    let wrong = same_prefix_wrong_secret(key);

    // Verified (a decision), then served from the cache (the same decision,
    // not logged again at info).
    assert_eq!(app.whoami(key).await, 200);
    assert_eq!(app.whoami(key).await, 200);
    // A wrong secret behind the real prefix, twice: refused once by argon2,
    // then by the negative cache (each refusal is a decision).
    assert_eq!(app.whoami(&wrong).await, 401);
    assert_eq!(app.whoami(&wrong).await, 401);
    assert_eq!(app.revoke(&token, id).await.status(), 204);
    assert_eq!(app.whoami(key).await, 401);

    let tenant_id = tenant.id.to_string();
    let expected: Vec<(String, String, String)> =
        ["admitted", "wrong_secret", "wrong_secret", "revoked"]
            .into_iter()
            .map(|outcome| {
                (
                    outcome.to_owned(),
                    tenant_id.clone(),
                    "127.0.0.1".to_owned(),
                )
            })
            .collect();
    // The reader of the server's stderr runs on its own thread; wait for it.
    let logged = eventually(Duration::from_secs(10), || async {
        let logged = decisions(&app, prefix);
        (logged.len() >= expected.len()).then_some(logged)
    })
    .await;
    assert_eq!(logged, Some(expected));

    // Junk is logged without a prefix or a tenant, and its text never.
    assert_eq!(app.whoami("cola_not-a-key").await, 401);
    let junk = eventually(Duration::from_secs(10), || async {
        let junk = decisions(&app, "-");
        (!junk.is_empty()).then_some(junk)
    })
    .await;
    assert_eq!(
        junk,
        Some(vec![(
            "malformed".to_owned(),
            "-".to_owned(),
            "127.0.0.1".to_owned()
        )])
    );
    assert!(!app.logs().join("\n").contains("cola_not-a-key"));
}

#[tokio::test]
async fn a_response_names_the_request_id_its_log_lines_carry() {
    let app = TestApp::spawn().await;
    let response = app
        .mcp("cola_not-a-key", "tools/call", &json!({ "name": "whoami" }))
        .await;
    assert_eq!(response.status(), 401);
    let request_id = response
        .headers()
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
        .expect("an x-request-id header");
    let logged = eventually(Duration::from_secs(10), || async {
        app.logs()
            .iter()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .find(|event| event["message"] == "mcp authentication")
    })
    .await
    .expect("the decision was logged");
    assert_eq!(logged["span"]["request_id"], request_id.as_str());

    // Every response carries one, each different.
    let health = |app: &TestApp| {
        let url = format!("{}/health", app.base);
        async move {
            let response = reqwest::get(url).await.unwrap();
            response.headers()["x-request-id"]
                .to_str()
                .unwrap()
                .to_owned()
        }
    };
    assert_ne!(health(&app).await, health(&app).await);
}
