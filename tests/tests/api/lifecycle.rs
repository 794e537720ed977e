//! The whole life of a key, on SQLite and on PostgreSQL.

use cola_e2e::{Options, TestApp};
use serde_json::{Value, json};

use crate::Tenant;

async fn whole_lifecycle(app: TestApp) {
    let tenant = Tenant::new();
    let token = app.token(tenant.id, tenant.alice, "member");

    // Create: 201, the key once, defaults applied.
    let created = app
        .new_key(
            &token,
            &json!({ "name": "  Claude Code on laptop ", "expires_in_days": 30 }),
        )
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let secret = created["key"].as_str().unwrap().to_owned();
    assert_eq!(secret.len(), 41);
    assert!(secret.starts_with("cola_"));
    assert_eq!(created["key_prefix"], &secret[..17]);
    assert_eq!(created["name"], "Claude Code on laptop");
    assert_eq!(created["tenant_id"], tenant.id.to_string());
    assert_eq!(created["user_id"], tenant.alice.to_string());
    assert_eq!(created["status"], "active");
    assert_eq!(
        created["permissions"],
        json!({ "read": true, "write": false, "allowed_tools": null, "allowed_resources": null, "servers": {} })
    );
    assert_eq!(created["ip_whitelist"], json!([]));
    assert_eq!(created["usage_count"], 0);
    let created_at =
        chrono::DateTime::parse_from_rfc3339(created["created_at"].as_str().unwrap()).unwrap();
    let expires_at =
        chrono::DateTime::parse_from_rfc3339(created["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!(expires_at - created_at, chrono::Duration::days(30));

    // Read: the same key, without the secret.
    let read: Value = app.get_key(&token, &id).await.json().await.unwrap();
    assert!(read.get("key").is_none());
    assert_eq!(read["key_prefix"], created["key_prefix"]);

    // Metadata.
    let renamed = app
        .patch_metadata(
            &token,
            &id,
            &json!({ "name": "renamed", "description": "for work" }),
        )
        .await;
    assert_eq!(renamed.status(), 200);
    let renamed: Value = renamed.json().await.unwrap();
    assert_eq!(
        (renamed["name"].as_str(), renamed["description"].as_str()),
        (Some("renamed"), Some("for work"))
    );
    // Partial: leaving out `name` keeps it; `description: null` clears.
    let cleared: Value = app
        .patch_metadata(&token, &id, &json!({ "description": null }))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(cleared["name"], "renamed");
    assert_eq!(cleared["description"], Value::Null);

    // Permissions: the fields given change, the others keep their values;
    // bare IP → /32.
    let widened = app
        .patch_permissions(
            &token,
            &id,
            &json!({ "permissions": { "write": true, "allowed_tools": ["whoami"] }, "ip_whitelist": ["10.1.2.3", "2001:db8::/32"] }),
        )
        .await;
    assert_eq!(widened.status(), 200);
    let widened: Value = widened.json().await.unwrap();
    assert_eq!(
        widened["permissions"],
        json!({ "read": true, "write": true, "allowed_tools": ["whoami"], "allowed_resources": null, "servers": {} })
    );
    assert_eq!(
        widened["ip_whitelist"],
        json!(["10.1.2.3/32", "2001:db8::/32"])
    );
    // Leaving out `permissions` keeps them.
    let kept: Value = app
        .patch_permissions(&token, &id, &json!({ "ip_whitelist": [] }))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(kept["permissions"], widened["permissions"]);
    assert_eq!(kept["ip_whitelist"], json!([]));

    // Revoke: 204, idempotent, recorded once.
    assert_eq!(app.revoke(&token, &id).await.status(), 204);
    assert_eq!(app.revoke(&token, &id).await.status(), 204);
    let revoked: Value = app.get_key(&token, &id).await.json().await.unwrap();
    assert_eq!(revoked["status"], "revoked");
    assert_eq!(revoked["revoked_by"], tenant.alice.to_string());
    assert!(revoked["revoked_at"].is_string());

    // A revoked key cannot be edited back to life.
    let edit = app
        .patch_permissions(
            &token,
            &id,
            &json!({ "permissions": { "read": true, "write": true } }),
        )
        .await;
    assert_eq!(edit.status(), 409);
    let edit = app
        .patch_metadata(&token, &id, &json!({ "name": "zombie" }))
        .await;
    assert_eq!(edit.status(), 409);

    // The audit trail, oldest first, one event per change.
    let events: Value = app.events(&token, &id).await.json().await.unwrap();
    let types: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "api_key.created",
            "api_key.metadata_updated",
            "api_key.metadata_updated",
            "api_key.permissions_updated",
            "api_key.permissions_updated",
            "api_key.revoked",
        ]
    );
    for event in events["items"].as_array().unwrap() {
        assert_eq!(event["key_id"], id.as_str());
        assert_eq!(event["tenant_id"], tenant.id.to_string());
        assert_eq!(event["actor_user_id"], tenant.alice.to_string());
        assert!(event["occurred_at"].is_string() && event["id"].is_string());
    }

    // Show once: the secret appears in no later response.
    for body in [
        app.get_key(&token, &id).await.text().await.unwrap(),
        app.list_keys(&token, "").await.text().await.unwrap(),
        app.events(&token, &id).await.text().await.unwrap(),
    ] {
        assert!(!body.contains(&secret));
        assert!(!body.contains(&secret[17..]));
        assert!(!body.contains("$argon2"));
    }
}

#[tokio::test]
async fn a_key_lives_its_whole_life_on_sqlite() {
    whole_lifecycle(TestApp::spawn().await).await;
}

#[tokio::test]
async fn a_key_lives_its_whole_life_on_postgres() {
    whole_lifecycle(TestApp::spawn_with(Options::postgres()).await).await;
}

#[tokio::test]
async fn a_key_expiring_at_an_instant_gets_that_instant() {
    let app = TestApp::spawn().await;
    let tenant = Tenant::new();
    let token = app.token(tenant.id, tenant.alice, "member");
    let at = (chrono::Utc::now() + chrono::Duration::days(2))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let created = app
        .new_key(&token, &json!({ "name": "n", "expires_at": at }))
        .await;
    let expires =
        chrono::DateTime::parse_from_rfc3339(created["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!(expires, chrono::DateTime::parse_from_rfc3339(&at).unwrap());
}

#[tokio::test]
async fn the_active_key_cap_is_a_409_and_revoking_makes_room() {
    let app =
        TestApp::spawn_with(Options::default().with("COLA_MAX_ACTIVE_KEYS_PER_USER", "2")).await;
    let tenant = Tenant::new();
    let token = app.token(tenant.id, tenant.alice, "member");
    let first = app.new_key(&token, &json!({ "name": "1" })).await;
    app.new_key(&token, &json!({ "name": "2" })).await;
    let third = app.create_key(&token, &json!({ "name": "3" })).await;
    assert_eq!(third.status(), 409);
    assert_eq!(third.headers()["content-type"], "application/problem+json");
    // Another user of the tenant has a cap of their own.
    let bob = app.token(tenant.id, tenant.bob, "member");
    assert_eq!(
        app.create_key(&bob, &json!({ "name": "b" })).await.status(),
        201
    );
    // The refused create left nothing behind.
    let listed: serde_json::Value = app.list_keys(&token, "").await.json().await.unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 2);
    app.revoke(&token, first["id"].as_str().unwrap()).await;
    assert_eq!(
        app.create_key(&token, &json!({ "name": "3" }))
            .await
            .status(),
        201
    );
}

#[tokio::test]
async fn concurrent_creates_never_exceed_the_cap_on_postgres() {
    let app =
        TestApp::spawn_with(Options::postgres().with("COLA_MAX_ACTIVE_KEYS_PER_USER", "3")).await;
    let tenant = Tenant::new();
    let token = app.token(tenant.id, tenant.alice, "member");
    let attempts = (0..8).map(|i| {
        let body = json!({ "name": format!("k{i}") });
        let app = &app;
        let token = &token;
        async move { app.create_key(token, &body).await.status().as_u16() }
    });
    let statuses: Vec<u16> = futures_util::future::join_all(attempts).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        3,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        5,
        "{statuses:?}"
    );
}

/// docs/decisions.md, decision 127: inside a given `permissions` object a field left out keeps
/// its value, so a PATCH meant to narrow (or to touch one flag) can never
/// widen a key's allow-lists back to "everything".
async fn a_partial_permissions_patch_keeps_the_allow_lists_it_leaves_out(app: TestApp) {
    let tenant = Tenant::new();
    let token = app.token(tenant.id, tenant.alice, "member");
    let created = app
        .new_key(
            &token,
            &json!({ "name": "narrow", "permissions": {
                "read": true, "allowed_tools": ["a"], "allowed_resources": ["cola://keys/*"] } }),
        )
        .await;
    let id = created["id"].as_str().unwrap();
    let patched = app
        .patch_permissions(&token, id, &json!({ "permissions": { "write": true } }))
        .await;
    assert_eq!(patched.status(), 200);
    let patched: Value = patched.json().await.unwrap();
    let expected = json!({ "read": true, "write": true, "allowed_tools": ["a"],
                           "allowed_resources": ["cola://keys/*"], "servers": {} });
    assert_eq!(patched["permissions"], expected);
    let stored: Value = app.get_key(&token, id).await.json().await.unwrap();
    assert_eq!(stored["permissions"], expected);
    // An explicit null still means "every tool".
    let widened: Value = app
        .patch_permissions(
            &token,
            id,
            &json!({ "permissions": { "allowed_tools": null } }),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(widened["permissions"]["allowed_tools"], Value::Null);
    assert_eq!(
        widened["permissions"]["allowed_resources"],
        json!(["cola://keys/*"])
    );
}

#[tokio::test]
async fn a_partial_permissions_patch_keeps_the_allow_lists_it_leaves_out_on_sqlite() {
    a_partial_permissions_patch_keeps_the_allow_lists_it_leaves_out(TestApp::spawn().await).await;
}

#[tokio::test]
async fn a_partial_permissions_patch_keeps_the_allow_lists_it_leaves_out_on_postgres() {
    a_partial_permissions_patch_keeps_the_allow_lists_it_leaves_out(
        TestApp::spawn_with(Options::postgres()).await,
    )
    .await;
}
