//! A key's own rate limit (docs/operations.md, "Per-key rate limits"): exact on one instance, bounded
//! across instances (`docs/operations.md`, "Per-key rate limits").

use std::collections::HashMap;

use cola_e2e::{Options, TestApp};
use serde_json::{Value, json};

use crate::Tenant;

/// A limit that does not refill within a test: 5 a minute is one more every
/// 12 s.
const LIMIT: u64 = 5;

fn limited() -> Value {
    json!({ "name": "limited", "rate_limit": { "requests": LIMIT, "per_secs": 60 } })
}

#[tokio::test]
async fn exactly_the_limit_is_admitted_then_429_and_other_keys_are_unaffected() {
    let app = TestApp::spawn().await;
    let tenant = Tenant::new();
    let token = app.token(tenant.id, tenant.alice, "member");
    let created = app.new_key(&token, &limited()).await;
    assert_eq!(
        created["rate_limit"],
        json!({ "requests": LIMIT, "per_secs": 60 })
    );
    let key = created["key"].as_str().unwrap();
    let other = app.new_key(&token, &json!({ "name": "free" })).await;
    let other = other["key"].as_str().unwrap();

    for request in 0..LIMIT {
        assert_eq!(app.whoami(key).await, 200, "request {request}");
    }
    let refused = app
        .mcp(
            key,
            "tools/call",
            &json!({ "name": "whoami", "arguments": {} }),
        )
        .await;
    assert_eq!(refused.status(), 429);
    let wait: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=12).contains(&wait), "Retry-After {wait}");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], -31029);
    for _ in 0..10 {
        assert_eq!(app.whoami(other).await, 200);
    }

    // Lifting the limit applies on the next request; setting one anew starts
    // a fresh bucket.
    let id = created["id"].as_str().unwrap();
    let lifted: Value = app
        .patch_permissions(&token, id, &json!({ "rate_limit": null }))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(lifted["rate_limit"], Value::Null);
    assert_eq!(app.whoami(key).await, 200);
    let one: Value = app
        .patch_permissions(
            &token,
            id,
            &json!({ "rate_limit": { "requests": 1, "per_secs": 3600 } }),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        one["rate_limit"],
        json!({ "requests": 1, "per_secs": 3600 })
    );
    assert_eq!(app.whoami(key).await, 200);
    assert_eq!(app.whoami(key).await, 429);
}

#[tokio::test]
async fn a_rate_limit_out_of_range_is_a_400_naming_the_field() {
    let app = TestApp::spawn().await;
    let tenant = Tenant::new();
    let token = app.token(tenant.id, tenant.alice, "member");
    let response = app
        .create_key(
            &token,
            &json!({ "name": "n", "rate_limit": { "requests": 0, "per_secs": 86_401 } }),
        )
        .await;
    assert_eq!(response.status(), 400);
    let problem: Value = response.json().await.unwrap();
    assert!(
        problem["errors"]["rate_limit.requests"].is_array(),
        "{problem}"
    );
    assert!(
        problem["errors"]["rate_limit.per_secs"].is_array(),
        "{problem}"
    );
}

#[tokio::test]
async fn across_two_instances_the_excess_stays_within_the_documented_bound_on_postgres() {
    let first = TestApp::spawn_with(Options::postgres()).await;
    let second = first.spawn_sibling(HashMap::new());
    let tenant = Tenant::new();
    let token = first.token(tenant.id, tenant.alice, "member");
    let created = first.new_key(&token, &limited()).await;
    let key = created["key"].as_str().unwrap();
    // Three times the limit, alternating between the instances, as a load
    // balancer would spread them.
    let mut admitted = 0;
    for request in 0..3 * LIMIT {
        let app = if request % 2 == 0 { &first } else { &second };
        let status = app.whoami(key).await;
        assert!(status == 200 || status == 429, "{status}");
        admitted += u64::from(status == 200);
    }
    // docs/operations.md: each instance enforces the whole limit, so k
    // instances admit at most k × N in a burst.
    let instances = 2;
    assert!(admitted >= LIMIT, "admitted {admitted}");
    assert!(
        admitted <= instances * LIMIT,
        "admitted {admitted}, more than the documented bound"
    );
}
