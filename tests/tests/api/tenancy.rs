//! Nobody sees another tenant's keys; members see their own, admins all of
//! their tenant's.

use cola_e2e::TestApp;
use reqwest::Method;
use serde_json::{Value, json};

use crate::Tenant;

/// Every keyed route answers `id` for `token` with 404, exactly as for an
/// id that does not exist.
async fn invisible(app: &TestApp, token: &str, id: &str) {
    let random = uuid::Uuid::new_v4().to_string();
    for (method, suffix, body) in [
        (Method::GET, "", None),
        (Method::GET, "/events", None),
        (
            Method::PATCH,
            "/metadata",
            Some(json!({ "name": "stolen" })),
        ),
        (
            Method::PATCH,
            "/permissions",
            Some(json!({ "permissions": { "write": true } })),
        ),
        (Method::DELETE, "", None),
    ] {
        let theirs = app
            .request(
                method.clone(),
                &format!("/api/mcp/keys/{id}{suffix}"),
                token,
                body.as_ref(),
            )
            .await;
        let missing = app
            .request(
                method.clone(),
                &format!("/api/mcp/keys/{random}{suffix}"),
                token,
                body.as_ref(),
            )
            .await;
        assert_eq!(theirs.status(), 404, "{method} {suffix}");
        assert_eq!(missing.status(), 404);
        let (theirs, missing): (Value, Value) =
            (theirs.json().await.unwrap(), missing.json().await.unwrap());
        assert_eq!(
            theirs, missing,
            "{method} {suffix}: an existing foreign key must look like a missing one"
        );
    }
}

#[tokio::test]
async fn another_tenants_key_is_a_404_on_every_route_and_is_untouched() {
    let app = TestApp::spawn().await;
    let (ours, theirs) = (Tenant::new(), Tenant::new());
    let owner = app.token(theirs.id, theirs.alice, "member");
    let key = app.new_key(&owner, &json!({ "name": "theirs" })).await;
    let id = key["id"].as_str().unwrap();
    // Even our admin, and even with the same user id in another tenant.
    invisible(&app, &app.token(ours.id, ours.admin, "admin"), id).await;
    invisible(&app, &app.token(ours.id, theirs.alice, "admin"), id).await;
    let listed: Value = app
        .list_keys(&app.token(ours.id, ours.admin, "admin"), "")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"], json!([]));
    let after: Value = app.get_key(&owner, id).await.json().await.unwrap();
    assert_eq!(
        (after["name"].as_str(), after["status"].as_str()),
        (Some("theirs"), Some("active"))
    );
}

#[tokio::test]
async fn a_member_sees_only_their_own_keys_and_an_admin_sees_the_tenants() {
    let app = TestApp::spawn().await;
    let tenant = Tenant::new();
    let (alice, bob, admin) = (
        app.token(tenant.id, tenant.alice, "member"),
        app.token(tenant.id, tenant.bob, "member"),
        app.token(tenant.id, tenant.admin, "admin"),
    );
    let alices = app.new_key(&alice, &json!({ "name": "alice's" })).await;
    let bobs = app.new_key(&bob, &json!({ "name": "bob's" })).await;
    let alice_id = alices["id"].as_str().unwrap();

    invisible(&app, &bob, alice_id).await;
    let listed: Value = app.list_keys(&bob, "").await.json().await.unwrap();
    let names: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["bob's"]);

    let listed: Value = app.list_keys(&admin, "").await.json().await.unwrap();
    let names: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["bob's", "alice's"], "newest first");

    // The admin manages a member's key; the member stays its owner.
    assert_eq!(app.revoke(&admin, alice_id).await.status(), 204);
    let revoked: Value = app.get_key(&alice, alice_id).await.json().await.unwrap();
    assert_eq!(revoked["status"], "revoked");
    assert_eq!(revoked["revoked_by"], tenant.admin.to_string());
    assert_eq!(revoked["user_id"], tenant.alice.to_string());
    // An admin's own create is owned by the admin.
    let own = app.new_key(&admin, &json!({ "name": "admin's" })).await;
    assert_eq!(own["user_id"], tenant.admin.to_string());
    assert_eq!(bobs["user_id"], tenant.bob.to_string());
}
