//! Offboarding (docs/operations.md, "Offboarding"): every active key of a user revoked in one
//! request, one event each; an admin for anyone of the tenant, a member for
//! themself only.

use std::collections::HashMap;
use std::time::Duration;

use cola_e2e::{Options, TestApp, eventually};
use serde_json::{Value, json};

use crate::Tenant;

async fn status_of(app: &TestApp, token: &str, id: &str) -> String {
    let key: Value = app.get_key(token, id).await.json().await.unwrap();
    key["status"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn an_admin_offboards_a_user_and_leaves_everyone_else_untouched() {
    let app = TestApp::spawn().await;
    let tenant = Tenant::new();
    let (admin, alice, bob) = (
        app.token(tenant.id, tenant.admin, "admin"),
        app.token(tenant.id, tenant.alice, "member"),
        app.token(tenant.id, tenant.bob, "member"),
    );
    let mut alices = Vec::new();
    for name in ["laptop", "ci", "phone"] {
        alices.push(app.new_key(&alice, &json!({ "name": name })).await);
    }
    // One of them revoked already: not counted again.
    assert_eq!(
        app.revoke(&alice, alices[2]["id"].as_str().unwrap())
            .await
            .status(),
        204
    );
    let bobs = app.new_key(&bob, &json!({ "name": "bob's" })).await;
    for key in &alices[..2] {
        assert_eq!(app.whoami(key["key"].as_str().unwrap()).await, 200);
    }

    let response = app.offboard(&admin, &tenant.alice.to_string()).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({ "revoked": 2 }));

    for key in &alices {
        let id = key["id"].as_str().unwrap();
        assert_eq!(status_of(&app, &admin, id).await, "revoked");
        assert_eq!(app.whoami(key["key"].as_str().unwrap()).await, 401);
        let revocations: Vec<Value> = app
            .event_log(&admin, id)
            .await
            .into_iter()
            .filter(|(kind, _)| kind == "api_key.revoked")
            .map(|(_, event)| event)
            .collect();
        assert_eq!(revocations.len(), 1, "one event per key");
    }
    let offboarded = app
        .event_log(&admin, alices[0]["id"].as_str().unwrap())
        .await;
    assert_eq!(
        offboarded.last().unwrap().1["actor_user_id"],
        tenant.admin.to_string()
    );
    let bobs_id = bobs["id"].as_str().unwrap();
    assert_eq!(status_of(&app, &bob, bobs_id).await, "active");
    assert_eq!(app.whoami(bobs["key"].as_str().unwrap()).await, 200);

    // Again: nothing left to revoke.
    let again: Value = app
        .offboard(&admin, &tenant.alice.to_string())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again, json!({ "revoked": 0 }));
}

#[tokio::test]
async fn a_member_offboards_themself_but_nobody_else() {
    let app = TestApp::spawn().await;
    let (tenant, other) = (Tenant::new(), Tenant::new());
    let alice = app.token(tenant.id, tenant.alice, "member");
    let bob = app.token(tenant.id, tenant.bob, "member");
    let alices = app.new_key(&alice, &json!({ "name": "alice's" })).await;
    let bobs = app.new_key(&bob, &json!({ "name": "bob's" })).await;

    let refused = app.offboard(&alice, &tenant.bob.to_string()).await;
    assert_eq!(refused.status(), 403);
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    assert_eq!(
        status_of(&app, &bob, bobs["id"].as_str().unwrap()).await,
        "active"
    );

    let done: Value = app
        .offboard(&alice, &tenant.alice.to_string())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(done, json!({ "revoked": 1 }));
    assert_eq!(
        status_of(&app, &alice, alices["id"].as_str().unwrap()).await,
        "revoked"
    );

    // An admin of another tenant reaches none of this tenant's keys.
    let stranger = app.token(other.id, other.admin, "admin");
    let none: Value = app
        .offboard(&stranger, &tenant.bob.to_string())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(none, json!({ "revoked": 0 }));
    assert_eq!(
        status_of(&app, &bob, bobs["id"].as_str().unwrap()).await,
        "active"
    );

    // A user id that is not a UUID is named.
    let response = app.offboard(&alice, "not-a-uuid").await;
    assert_eq!(response.status(), 400);
    let problem: Value = response.json().await.unwrap();
    assert!(problem["errors"]["user_id"].is_array(), "{problem}");
}

#[tokio::test]
async fn an_offboarding_reaches_the_other_instance_on_postgres() {
    let first = TestApp::spawn_with(Options::postgres()).await;
    let second = first.spawn_sibling(HashMap::new());
    let tenant = Tenant::new();
    let alice = first.token(tenant.id, tenant.alice, "member");
    let admin = first.token(tenant.id, tenant.admin, "admin");
    let key = first.new_key(&alice, &json!({ "name": "shared" })).await;
    let key = key["key"].as_str().unwrap();
    assert_eq!(second.whoami(key).await, 200);
    let done: Value = first
        .offboard(&admin, &tenant.alice.to_string())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(done, json!({ "revoked": 1 }));
    assert_eq!(first.whoami(key).await, 401);
    // Promised within 2 s; the deadline is generous for a loaded machine.
    let refused = eventually(Duration::from_secs(10), || async {
        (second.whoami(key).await == 401).then_some(())
    })
    .await;
    assert!(
        refused.is_some(),
        "the offboarding never reached the other instance"
    );
}
