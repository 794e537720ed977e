//! Several instances on one database, and restarts: changes reach every
//! instance, and usage counts stay exact.

use std::collections::HashMap;
use std::time::Duration;

use cola_e2e::{Options, TestApp, eventually};
use serde_json::{Value, json};

use crate::Tenant;

/// The tool names `key` sees on `app`, or the HTTP status if refused.
async fn tools(app: &TestApp, key: &str) -> Result<Vec<String>, u16> {
    let response = app.mcp(key, "tools/list", &json!({})).await;
    if response.status() != 200 {
        return Err(response.status().as_u16());
    }
    let body: Value = response.json().await.unwrap();
    Ok(body["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|tool| tool["name"].as_str().unwrap().to_owned())
        .collect())
}

/// Polls until `key` sees `expected` on `app`. The promise is 2 s; the
/// deadline is generous so a loaded machine does not make this flaky.
async fn converges(app: &TestApp, key: &str, expected: Result<Vec<String>, u16>) -> bool {
    eventually(Duration::from_secs(10), || {
        let expected = expected.clone();
        async move { (tools(app, key).await == expected).then_some(()) }
    })
    .await
    .is_some()
}

#[tokio::test]
async fn permission_changes_and_revocation_reach_the_other_instance_on_postgres() {
    let first = TestApp::spawn_with(Options::postgres()).await;
    let second = first.spawn_sibling(HashMap::new());
    let tenant = Tenant::new();
    let token = first.token(tenant.id, tenant.alice, "member");
    let created = first
        .new_key(
            &token,
            &json!({ "name": "shared", "permissions": { "read": true, "write": true } }),
        )
        .await;
    let (id, key) = (
        created["id"].as_str().unwrap(),
        created["key"].as_str().unwrap(),
    );
    let all = vec![
        "whoami".to_owned(),
        "list_api_keys".to_owned(),
        "revoke_api_key".to_owned(),
    ];
    // Both instances have verified (and cached) the key.
    assert!(converges(&first, key, Ok(all.clone())).await);
    assert!(converges(&second, key, Ok(all)).await);

    let narrowed = first
        .patch_permissions(
            &token,
            id,
            &json!({ "permissions": { "read": true, "write": false } }),
        )
        .await;
    assert_eq!(narrowed.status(), 200);
    let read_only = vec!["whoami".to_owned(), "list_api_keys".to_owned()];
    // At once on the instance that made the change…
    assert_eq!(tools(&first, key).await, Ok(read_only.clone()));
    // …and soon on the other.
    assert!(
        converges(&second, key, Ok(read_only)).await,
        "the change never reached the other instance"
    );

    assert_eq!(first.revoke(&token, id).await.status(), 204);
    assert_eq!(tools(&first, key).await, Err(401));
    assert!(
        converges(&second, key, Err(401)).await,
        "the revocation never reached the other instance"
    );
}

async fn usage_count(app: &TestApp, token: &str, id: &str) -> u64 {
    let key: Value = app.get_key(token, id).await.json().await.unwrap();
    key["usage_count"].as_u64().unwrap()
}

#[tokio::test]
async fn a_graceful_shutdown_writes_every_pending_use() {
    // An hour-long flush interval: only the shutdown flush can write the count.
    let mut app =
        TestApp::spawn_with(Options::default().with("COLA_USAGE_FLUSH_INTERVAL_MS", "3600000"))
            .await;
    let tenant = Tenant::new();
    let token = app.token(tenant.id, tenant.alice, "member");
    let created = app.new_key(&token, &json!({ "name": "counted" })).await;
    let (id, key) = (
        created["id"].as_str().unwrap().to_owned(),
        created["key"].as_str().unwrap().to_owned(),
    );
    let calls = futures_util::future::join_all((0..60).map(|_| app.whoami(&key))).await;
    assert!(calls.iter().all(|status| *status == 200), "{calls:?}");
    assert_eq!(
        usage_count(&app, &token, &id).await,
        0,
        "nothing is written before a flush"
    );

    let status = app.terminate();
    assert!(status.success(), "SIGTERM is a clean exit, got {status:?}");

    let restarted = app.spawn_sibling(HashMap::new());
    assert_eq!(usage_count(&restarted, &token, &id).await, 60);
}

#[tokio::test]
async fn concurrent_use_through_two_instances_is_counted_exactly_on_postgres() {
    let mut first = TestApp::spawn_with(Options::postgres()).await;
    let mut second = first.spawn_sibling(HashMap::new());
    let tenant = Tenant::new();
    let token = first.token(tenant.id, tenant.alice, "member");
    let created = first.new_key(&token, &json!({ "name": "busy" })).await;
    let (id, key) = (
        created["id"].as_str().unwrap().to_owned(),
        created["key"].as_str().unwrap().to_owned(),
    );
    let calls = (0..400).map(|i| {
        let app = if i % 2 == 0 { &first } else { &second };
        app.whoami(&key)
    });
    let statuses = futures_util::future::join_all(calls).await;
    assert!(statuses.iter().all(|status| *status == 200));
    // Both instances flush whatever they still hold as they stop; then the
    // count must be exact: nothing lost, nothing counted twice.
    assert!(first.terminate().success());
    assert!(second.terminate().success());
    let reader = first.spawn_sibling(HashMap::new());
    assert_eq!(usage_count(&reader, &token, &id).await, 400);
}
