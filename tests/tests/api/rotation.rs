//! Rotating a key (docs/operations.md, "Rotating keys"): a new key with the old one's settings, the
//! old one usable for a grace period, never past its own expiry, and then
//! refused everywhere like an expired key.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use cola_e2e::{Options, TestApp, eventually};
use serde_json::{Value, json};

use crate::Tenant;

fn instant(value: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(value.as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc)
}

/// Polls until `key` is refused (401) on `app`, for at most `deadline`.
async fn refused_within(app: &TestApp, key: &str, deadline: Duration) -> Option<()> {
    eventually(deadline, || async {
        (app.whoami(key).await == 401).then_some(())
    })
    .await
}

#[tokio::test]
async fn a_rotation_copies_the_key_and_a_zero_grace_refuses_the_old_one_at_once() {
    let app = TestApp::spawn().await;
    let tenant = Tenant::new();
    let token = app.token(tenant.id, tenant.alice, "member");
    let old = app
        .new_key(
            &token,
            &json!({
                "name": "laptop", "description": "work",
                "permissions": { "read": true, "write": true, "allowed_tools": ["whoami"] },
                "ip_whitelist": ["127.0.0.1"],
                "rate_limit": { "requests": 100, "per_secs": 60 },
                "expires_in_days": 10
            }),
        )
        .await;
    let (old_id, old_key) = (old["id"].as_str().unwrap(), old["key"].as_str().unwrap());
    assert_eq!(app.whoami(old_key).await, 200);

    let response = app.rotate(&token, old_id, &json!({})).await;
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let new: Value = response.json().await.unwrap();
    let new_key = new["key"].as_str().unwrap();
    assert_ne!(new["id"], old["id"]);
    assert_ne!(new["key_prefix"], old["key_prefix"]);
    for copied in [
        "name",
        "description",
        "permissions",
        "ip_whitelist",
        "rate_limit",
        "user_id",
    ] {
        assert_eq!(new[copied], old[copied], "{copied}");
    }
    // The policy default (90 days), not the old key's 10.
    let lifetime = instant(&new["expires_at"]) - instant(&new["created_at"]);
    assert_eq!(lifetime, chrono::Duration::days(90));

    // Grace 0: refused from the next request on, its status expired.
    assert_eq!(app.whoami(old_key).await, 401);
    assert_eq!(app.whoami(new_key).await, 200);
    let old_now: Value = app.get_key(&token, old_id).await.json().await.unwrap();
    assert_eq!(old_now["status"], "expired");

    // The events, in one transaction.
    let rotated = app.event_log(&token, old_id).await;
    let (kind, event) = rotated.last().unwrap();
    assert_eq!(kind, "api_key.rotated");
    assert_eq!(event["data"]["replaced_by"], new["id"]);
    assert_eq!(event["actor_user_id"], tenant.alice.to_string());
    let created = app.event_log(&token, new["id"].as_str().unwrap()).await;
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].0, "api_key.created");
    assert_eq!(created[0].1["data"]["rotated_from"], old["id"]);
}

#[tokio::test]
async fn a_grace_keeps_the_old_key_usable_until_it_ends_and_never_past_its_own_expiry() {
    let app = TestApp::spawn().await;
    let tenant = Tenant::new();
    let token = app.token(tenant.id, tenant.alice, "member");
    let old = app.new_key(&token, &json!({ "name": "ci" })).await;
    let (old_id, old_key) = (old["id"].as_str().unwrap(), old["key"].as_str().unwrap());
    assert_eq!(app.whoami(old_key).await, 200);

    let new: Value = app
        .rotate(
            &token,
            old_id,
            &json!({ "grace_period_secs": 5, "expires_in_days": 7 }),
        )
        .await
        .json()
        .await
        .unwrap();
    let rotated_at = instant(&new["created_at"]);
    let lifetime = instant(&new["expires_at"]) - rotated_at;
    assert_eq!(lifetime, chrono::Duration::days(7));
    // Both work during the grace.
    assert_eq!(app.whoami(old_key).await, 200);
    assert_eq!(app.whoami(new["key"].as_str().unwrap()).await, 200);
    let old_now: Value = app.get_key(&token, old_id).await.json().await.unwrap();
    assert_eq!(old_now["status"], "active");
    assert_eq!(
        instant(&old_now["expires_at"]),
        rotated_at + chrono::Duration::seconds(5)
    );
    // Then it is refused, and its status is expired.
    assert!(
        refused_within(&app, old_key, Duration::from_secs(20))
            .await
            .is_some()
    );
    assert!(Utc::now() >= rotated_at + chrono::Duration::seconds(5));
    let old_now: Value = app.get_key(&token, old_id).await.json().await.unwrap();
    assert_eq!(old_now["status"], "expired");

    // A grace longer than the key's remaining life ends with the key.
    let short = app
        .new_key(
            &token,
            &json!({ "name": "short", "expires_at": (Utc::now() + chrono::Duration::hours(1)).to_rfc3339() }),
        )
        .await;
    let expiry = instant(&short["expires_at"]);
    let response = app
        .rotate(
            &token,
            short["id"].as_str().unwrap(),
            &json!({ "grace_period_secs": 86_400 }),
        )
        .await;
    assert_eq!(response.status(), 201);
    let short_now: Value = app
        .get_key(&token, short["id"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(instant(&short_now["expires_at"]), expiry);
}

#[tokio::test]
async fn only_an_active_key_not_yet_rotated_can_be_rotated() {
    let app = TestApp::spawn().await;
    let tenant = Tenant::new();
    let token = app.token(tenant.id, tenant.alice, "member");
    let problem_type = |response: reqwest::Response| async move {
        assert_eq!(response.status(), 409);
        let problem: Value = response.json().await.unwrap();
        problem["type"].as_str().unwrap().to_owned()
    };

    let once = app.new_key(&token, &json!({ "name": "once" })).await;
    let id = once["id"].as_str().unwrap();
    assert_eq!(
        app.rotate(&token, id, &json!({ "grace_period_secs": 600 }))
            .await
            .status(),
        201
    );
    assert_eq!(
        problem_type(app.rotate(&token, id, &json!({})).await).await,
        "urn:cola:problem:key-already-rotated"
    );

    let revoked = app.new_key(&token, &json!({ "name": "revoked" })).await;
    let id = revoked["id"].as_str().unwrap();
    assert_eq!(app.revoke(&token, id).await.status(), 204);
    assert_eq!(
        problem_type(app.rotate(&token, id, &json!({})).await).await,
        "urn:cola:problem:key-revoked"
    );

    // Rotated without grace (so expired too): still "already rotated".
    let no_grace = app.new_key(&token, &json!({ "name": "no grace" })).await;
    let id = no_grace["id"].as_str().unwrap();
    let successor: Value = app
        .rotate(&token, id, &json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        problem_type(app.rotate(&token, id, &json!({})).await).await,
        "urn:cola:problem:key-already-rotated"
    );

    // Expired on its own: refused, and never revived (Unkey's reroll bug).
    let soon = (Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    let expired = app
        .new_key(&token, &json!({ "name": "expiring", "expires_at": soon }))
        .await;
    let id = expired["id"].as_str().unwrap();
    let became_expired = eventually(Duration::from_secs(20), || async {
        let key: Value = app.get_key(&token, id).await.json().await.unwrap();
        (key["status"] == "expired").then_some(())
    })
    .await;
    assert!(became_expired.is_some());
    let refused = app
        .rotate(&token, id, &json!({ "grace_period_secs": 3600 }))
        .await;
    assert_eq!(problem_type(refused).await, "urn:cola:problem:key-expired");
    let still: Value = app.get_key(&token, id).await.json().await.unwrap();
    assert_eq!(still["status"], "expired");
    assert_eq!(still["expires_at"], expired["expires_at"]);
    assert_eq!(app.event_log(&token, id).await.len(), 1, "nothing recorded");
    // The successor itself can be rotated, with no body at all.
    let response = app
        .client
        .post(format!(
            "{}/api/mcp/keys/{}/rotate",
            app.base,
            successor["id"].as_str().unwrap()
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);

    // A bad grace is a 400 naming it.
    let other = app.new_key(&token, &json!({ "name": "other" })).await;
    let response = app
        .rotate(
            &token,
            other["id"].as_str().unwrap(),
            &json!({ "grace_period_secs": 86_401, "ttl": 1 }),
        )
        .await;
    assert_eq!(response.status(), 400);
    let problem: Value = response.json().await.unwrap();
    assert!(problem["errors"]["ttl"].is_array(), "{problem}");
    let response = app
        .rotate(
            &token,
            other["id"].as_str().unwrap(),
            &json!({ "grace_period_secs": 86_401 }),
        )
        .await;
    let problem: Value = response.json().await.unwrap();
    assert!(
        problem["errors"]["grace_period_secs"].is_array(),
        "{problem}"
    );
}

#[tokio::test]
async fn another_tenants_or_members_key_is_a_404_and_an_admin_rotates_for_the_owner() {
    let app = TestApp::spawn().await;
    let (tenant, other) = (Tenant::new(), Tenant::new());
    let alice = app.token(tenant.id, tenant.alice, "member");
    let bob = app.token(tenant.id, tenant.bob, "member");
    let admin = app.token(tenant.id, tenant.admin, "admin");
    let stranger = app.token(other.id, other.admin, "admin");
    let key = app.new_key(&alice, &json!({ "name": "alice's" })).await;
    let id = key["id"].as_str().unwrap();
    assert_eq!(app.rotate(&stranger, id, &json!({})).await.status(), 404);
    assert_eq!(app.rotate(&bob, id, &json!({})).await.status(), 404);
    let rotated = app.rotate(&admin, id, &json!({})).await;
    assert_eq!(rotated.status(), 201);
    let new: Value = rotated.json().await.unwrap();
    assert_eq!(new["user_id"], tenant.alice.to_string(), "the owner stays");
}

#[tokio::test]
async fn a_rotation_at_the_cap_replaces_the_key_in_its_slot() {
    let app =
        TestApp::spawn_with(Options::default().with("COLA_MAX_ACTIVE_KEYS_PER_USER", "2")).await;
    let tenant = Tenant::new();
    let token = app.token(tenant.id, tenant.alice, "member");
    let first = app.new_key(&token, &json!({ "name": "one" })).await;
    app.new_key(&token, &json!({ "name": "two" })).await;
    assert_eq!(
        app.create_key(&token, &json!({ "name": "three" }))
            .await
            .status(),
        409
    );
    let response = app
        .rotate(
            &token,
            first["id"].as_str().unwrap(),
            &json!({ "grace_period_secs": 600 }),
        )
        .await;
    assert_eq!(response.status(), 201, "a rotation needs no free slot");
    assert_eq!(
        app.create_key(&token, &json!({ "name": "three" }))
            .await
            .status(),
        409,
        "the successor holds the slot"
    );
}

#[tokio::test]
async fn the_old_key_is_refused_on_another_instance_within_2_s_of_its_grace_end_on_postgres() {
    let first = TestApp::spawn_with(Options::postgres()).await;
    let second = first.spawn_sibling(HashMap::new());
    let tenant = Tenant::new();
    let token = first.token(tenant.id, tenant.alice, "member");
    let old = first.new_key(&token, &json!({ "name": "shared" })).await;
    let (old_id, old_key) = (old["id"].as_str().unwrap(), old["key"].as_str().unwrap());
    // Both instances have verified (and cached) the key.
    assert_eq!(first.whoami(old_key).await, 200);
    assert_eq!(second.whoami(old_key).await, 200);

    // Grace 0 on the first: the second learns of it from the change feed.
    let new: Value = first
        .rotate(&token, old_id, &json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(first.whoami(old_key).await, 401);
    // The promise is 2 s (the feed is read every 250 ms); the deadline is
    // generous so a loaded machine does not make this flaky.
    assert!(
        refused_within(&second, old_key, Duration::from_secs(10))
            .await
            .is_some(),
        "the rotation never reached the other instance"
    );
    assert_eq!(second.whoami(new["key"].as_str().unwrap()).await, 200);

    // With a grace, the cached key stops at the grace end on its own.
    let graced = first.new_key(&token, &json!({ "name": "graced" })).await;
    let graced_key = graced["key"].as_str().unwrap();
    assert_eq!(second.whoami(graced_key).await, 200);
    let rotated: Value = first
        .rotate(
            &token,
            graced["id"].as_str().unwrap(),
            &json!({ "grace_period_secs": 2 }),
        )
        .await
        .json()
        .await
        .unwrap();
    let grace_end = instant(&rotated["created_at"]) + chrono::Duration::seconds(2);
    assert!(
        refused_within(&second, graced_key, Duration::from_secs(15))
            .await
            .is_some(),
        "the old key outlived its grace on the other instance"
    );
    assert!(Utc::now() >= grace_end, "refused before its grace ended");
}
