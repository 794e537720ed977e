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

/// Clients do put credentials in query strings (`?api_key=`,
/// `?access_token=`) although no route reads them there. Neither the request
/// span nor anything else may carry them into the log, at any level.
#[tokio::test]
async fn credentials_in_a_query_string_never_reach_the_log() {
    let app = TestApp::spawn_with(cola_e2e::Options::default().with("RUST_LOG", "trace")).await;
    let tenant = Tenant::new();
    let token = app.token(tenant.id, tenant.alice, "member");
    let created = app.new_key(&token, &json!({ "name": "in a query" })).await;
    let key = created["key"].as_str().unwrap();

    let mcp = app
        .client
        .post(format!("{}/mcp?api_key={key}", app.base))
        .header("mcp-protocol-version", "2025-11-25")
        .json(&json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/list" }))
        .send()
        .await
        .unwrap();
    assert_eq!(mcp.status(), 401, "a key is read from the headers only");
    let listing = app
        .client
        .get(format!("{}/api/mcp/keys?access_token={token}", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(listing.status(), 401, "a JWT is read from the headers only");
    // And a use of the key as it should be sent, logged with its prefix.
    assert_eq!(app.whoami(key).await, 200);

    // Both requests were logged, by path.
    let logged = eventually(Duration::from_secs(10), || async {
        let targets: Vec<String> = app
            .logs()
            .iter()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter_map(|event| event["span"]["http.target"].as_str().map(str::to_owned))
            .collect();
        let admitted = app
            .logs()
            .iter()
            .any(|line| line.contains(r#""outcome":"admitted""#));
        (admitted
            && targets.iter().any(|t| t == "/mcp")
            && targets.iter().any(|t| t == "/api/mcp/keys"))
        .then_some(())
    })
    .await;
    assert!(
        logged.is_some(),
        "the requests were logged with their paths"
    );
    let logs = app.logs().join("\n");
    assert!(!logs.contains(key), "the key appears in the log");
    assert!(
        !logs.contains(&key[17..]),
        "the key's secret part appears in the log"
    );
    assert!(!logs.contains(&token), "the JWT appears in the log");
    assert!(
        !logs.contains(token.rsplit('.').next().unwrap()),
        "the JWT's signature appears in the log"
    );
    // The request span records no query at all, so not even the names
    // (redacted values would still show them).
    assert!(
        !logs.contains("api_key=") && !logs.contains("access_token="),
        "a query string appears in the log"
    );
    // The public prefix, logged on purpose, is not mistaken for a key.
    let prefix = created["key_prefix"].as_str().unwrap();
    assert!(
        logs.contains(&format!(r#""key_prefix":"{prefix}""#)),
        "the admission is logged with the key's prefix"
    );
}

/// Start-up tells the schema's state in one line, not two per migration.
#[tokio::test]
async fn start_up_logs_the_migrations_in_one_line() {
    let app = TestApp::spawn().await;
    let events: Vec<Value> = app
        .logs()
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .collect();
    let migrated: Vec<&Value> = events
        .iter()
        .filter(|event| event["message"] == "database migrated")
        .collect();
    assert_eq!(migrated.len(), 1, "{events:?}");
    assert!(migrated[0]["applied"].as_u64().unwrap() >= 8);
    assert!(migrated[0]["latest"].as_str().unwrap().starts_with('m'));
    assert!(
        !events.iter().any(|event| event["target"]
            .as_str()
            .unwrap_or_default()
            .starts_with("sea_orm_migration")),
        "{events:?}"
    );
}
