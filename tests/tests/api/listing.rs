//! Listing: newest first, filtered by status, paginated without loss.

use std::collections::HashSet;

use cola_e2e::TestApp;
use serde_json::{Value, json};

use crate::Tenant;

#[tokio::test]
async fn pagination_walks_every_key_exactly_once() {
    let app = TestApp::spawn_with(
        cola_e2e::Options::default().with("COLA_MAX_ACTIVE_KEYS_PER_USER", "100"),
    )
    .await;
    let tenant = Tenant::new();
    let token = app.token(tenant.id, tenant.alice, "member");
    let mut created = Vec::new();
    // Four pages of five, the last one short; 19 creates stay within one
    // user's burst of writes.
    for i in 0..19 {
        let key = app
            .new_key(&token, &json!({ "name": format!("key {i}") }))
            .await;
        created.push(key["id"].as_str().unwrap().to_owned());
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = match &cursor {
            Some(cursor) => format!("?limit=5&cursor={cursor}"),
            None => "?limit=5".to_owned(),
        };
        let page: Value = app.list_keys(&token, &query).await.json().await.unwrap();
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 5);
        seen.extend(items.iter().map(|k| k["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    created.reverse();
    assert_eq!(seen, created, "newest first, each key once");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 19);
}

#[tokio::test]
async fn the_status_filter_separates_active_revoked_and_expired() {
    let app = TestApp::spawn().await;
    let tenant = Tenant::new();
    let token = app.token(tenant.id, tenant.alice, "member");
    let active = app.new_key(&token, &json!({ "name": "active" })).await;
    let revoked = app.new_key(&token, &json!({ "name": "revoked" })).await;
    app.revoke(&token, revoked["id"].as_str().unwrap()).await;
    let soon = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    let expiring = app
        .new_key(&token, &json!({ "name": "expired", "expires_at": soon }))
        .await;
    let expiring_id = expiring["id"].as_str().unwrap().to_owned();
    // Expiry happens at a moment the test does not control: poll for it.
    let expired = cola_e2e::eventually(std::time::Duration::from_secs(10), || {
        let (app, token, id) = (&app, &token, &expiring_id);
        async move {
            let key: Value = app.get_key(token, id).await.json().await.ok()?;
            (key["status"] == "expired").then_some(())
        }
    })
    .await;
    assert!(expired.is_some(), "the key never expired");

    let names = |page: Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let of = |status: &str| format!("?status={status}");
    assert_eq!(
        names(
            app.list_keys(&token, &of("active"))
                .await
                .json()
                .await
                .unwrap()
        ),
        ["active"]
    );
    assert_eq!(
        names(
            app.list_keys(&token, &of("revoked"))
                .await
                .json()
                .await
                .unwrap()
        ),
        ["revoked"]
    );
    assert_eq!(
        names(
            app.list_keys(&token, &of("expired"))
                .await
                .json()
                .await
                .unwrap()
        ),
        ["expired"]
    );
    assert_eq!(
        names(app.list_keys(&token, "").await.json().await.unwrap()),
        ["expired", "revoked", "active"]
    );
    assert_eq!(active["status"], "active");
}
