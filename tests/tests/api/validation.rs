//! Bad input gets a clear 400 naming the field, and changes nothing.

use cola_e2e::TestApp;
use serde_json::{Value, json};

use crate::Tenant;

/// Creating with `body` is a 400 problem naming exactly `fields`, and no key
/// was created.
async fn refused(app: &TestApp, token: &str, body: Value, fields: &[&str]) {
    let response = app.create_key(token, &body).await;
    assert_eq!(response.status(), 400, "body {body}");
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["status"], 400);
    assert!(
        problem["type"].is_string()
            && problem["title"].is_string()
            && problem["detail"].is_string()
    );
    let mut named: Vec<String> = problem["errors"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    named.sort();
    let mut expected: Vec<String> = fields.iter().map(|f| (*f).to_owned()).collect();
    expected.sort();
    assert_eq!(named, expected, "body {body}: {problem}");
    let listed: Value = app.list_keys(token, "").await.json().await.unwrap();
    assert_eq!(
        listed["items"],
        json!([]),
        "a refused create left a key behind"
    );
}

#[tokio::test]
async fn every_bad_field_of_a_create_is_named() {
    let app = TestApp::spawn().await;
    let tenant = Tenant::new();
    // Two users share the cases: there are more of them than one user's
    // burst of writes.
    let tokens = [
        app.token(tenant.id, tenant.alice, "member"),
        app.token(tenant.id, tenant.bob, "member"),
    ];
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (json!({}), vec!["name"]),
        (
            json!({ "name": "", "description": "d".repeat(501),
                    "ip_whitelist": ["999.1.1.1"], "expires_in_days": 0 }),
            vec!["description", "expires_in_days", "ip_whitelist", "name"],
        ),
        (json!({ "name": "" }), vec!["name"]),
        (json!({ "name": "   " }), vec!["name"]),
        (json!({ "name": "x".repeat(101) }), vec!["name"]),
        (json!({ "name": "bell\u{7}" }), vec!["name"]),
        (json!({ "name": 5 }), vec!["name"]),
        (
            json!({ "name": "n", "description": "d".repeat(501) }),
            vec!["description"],
        ),
        (
            json!({ "name": "n", "permissions": { "read": false, "write": false } }),
            vec!["permissions"],
        ),
        (
            json!({ "name": "n", "permissions": { "read": "yes" } }),
            vec!["permissions.read"],
        ),
        (
            json!({ "name": "n", "permissions": { "allowed_tools": ["no spaces"] } }),
            vec!["permissions.allowed_tools"],
        ),
        (
            json!({ "name": "n", "permissions": { "allowed_resources": ["a*b"] } }),
            vec!["permissions.allowed_resources"],
        ),
        (
            json!({ "name": "n", "permissions": { "admin": true } }),
            vec!["permissions.admin"],
        ),
        (
            json!({ "name": "n", "ip_whitelist": ["300.1.1.1"] }),
            vec!["ip_whitelist"],
        ),
        (
            json!({ "name": "n", "ip_whitelist": (0..51).map(|i| format!("10.0.0.{i}")).collect::<Vec<_>>() }),
            vec!["ip_whitelist"],
        ),
        (
            json!({ "name": "n", "expires_in_days": 0 }),
            vec!["expires_in_days"],
        ),
        (
            json!({ "name": "n", "expires_in_days": 366 }),
            vec!["expires_in_days"],
        ),
        (
            json!({ "name": "n", "expires_in_days": "ten" }),
            vec!["expires_in_days"],
        ),
        (
            json!({ "name": "n", "expires_at": "2001-01-01T00:00:00Z" }),
            vec!["expires_at"],
        ),
        (
            json!({ "name": "n", "expires_at": "2999-01-01T00:00:00Z" }),
            vec!["expires_at"],
        ),
        (
            json!({ "name": "n", "expires_at": "tomorrow" }),
            vec!["expires_at"],
        ),
        (
            json!({ "name": "n", "expires_in_days": 5, "expires_at": "2030-01-01T00:00:00Z" }),
            vec!["expires_at", "expires_in_days"],
        ),
        (
            json!({ "name": "", "description": "d".repeat(501), "ip_whitelist": ["nope"], "permissions": { "read": false } }),
            vec!["name", "description", "ip_whitelist", "permissions"],
        ),
    ];
    for (index, (body, fields)) in cases.into_iter().enumerate() {
        refused(&app, &tokens[index % 2], body, &fields).await;
    }
}

#[tokio::test]
async fn owner_and_server_fields_in_a_create_are_refused() {
    let app = TestApp::spawn().await;
    let tenant = Tenant::new();
    let token = app.token(tenant.id, tenant.alice, "member");
    for field in [
        "tenant_id",
        "user_id",
        "key",
        "id",
        "status",
        "key_prefix",
        "usage_count",
    ] {
        let mut body = json!({ "name": "n" });
        body[field] = json!(uuid::Uuid::new_v4().to_string());
        refused(&app, &token, body, &[field]).await;
    }
}

#[tokio::test]
async fn bad_patches_are_refused_and_change_nothing() {
    let app = TestApp::spawn().await;
    let tenant = Tenant::new();
    let token = app.token(tenant.id, tenant.alice, "member");
    let key = app
        .new_key(&token, &json!({ "name": "keep", "description": "keep" }))
        .await;
    let id = key["id"].as_str().unwrap();
    let metadata_cases = [
        (json!({ "name": null }), "name"),
        (json!({ "name": "" }), "name"),
        (json!({ "description": 7 }), "description"),
        (json!({ "user_id": "x" }), "user_id"),
    ];
    for (body, field) in metadata_cases {
        let response = app.patch_metadata(&token, id, &body).await;
        assert_eq!(response.status(), 400, "{body}");
        let problem: Value = response.json().await.unwrap();
        assert!(problem["errors"].get(field).is_some(), "{body}: {problem}");
    }
    let permission_cases = [
        (json!({ "permissions": null }), "permissions"),
        (json!({ "permissions": { "read": false } }), "permissions"),
        (json!({ "ip_whitelist": ["x"] }), "ip_whitelist"),
        (json!({ "ip_whitelist": null }), "ip_whitelist"),
        (json!({ "status": "active" }), "status"),
    ];
    for (body, field) in permission_cases {
        let response = app.patch_permissions(&token, id, &body).await;
        assert_eq!(response.status(), 400, "{body}");
        let problem: Value = response.json().await.unwrap();
        assert!(problem["errors"].get(field).is_some(), "{body}: {problem}");
    }
    let after: Value = app.get_key(&token, id).await.json().await.unwrap();
    assert_eq!(after["name"], "keep");
    assert_eq!(after["description"], "keep");
    assert_eq!(after["permissions"], key["permissions"]);
    let events: Value = app.events(&token, id).await.json().await.unwrap();
    assert_eq!(
        events["items"].as_array().unwrap().len(),
        1,
        "only the create is recorded"
    );
}

#[tokio::test]
async fn bad_list_parameters_are_named() {
    let app = TestApp::spawn().await;
    let tenant = Tenant::new();
    let token = app.token(tenant.id, tenant.alice, "member");
    for (query, field) in [
        ("?status=gone", "status"),
        ("?limit=0", "limit"),
        ("?limit=101", "limit"),
        ("?limit=x", "limit"),
        ("?cursor=%%%", "cursor"),
        ("?sort=name", "sort"),
    ] {
        let response = app.list_keys(&token, query).await;
        assert_eq!(response.status(), 400, "{query}");
        let problem: Value = response.json().await.unwrap();
        assert!(problem["errors"].get(field).is_some(), "{query}: {problem}");
    }
}
