//! Management writes are limited per tenant user (a burst of 20, then 10 a
//! second): each one evicts cached verifications and writes to the
//! database, so one user's loop must not cost everyone. Reads are not
//! limited, and one user's limit is not another's.

use cola_e2e::TestApp;
use serde_json::{Value, json};

use crate::Tenant;

#[tokio::test]
async fn a_burst_of_writes_past_the_limit_is_a_429_for_that_user_only() {
    let app = TestApp::spawn().await;
    let tenant = Tenant::new();
    let alice = app.token(tenant.id, tenant.alice, "member");
    let bob = app.token(tenant.id, tenant.bob, "member");
    let alices = app.new_key(&alice, &json!({ "name": "busy" })).await;
    let bobs = app.new_key(&bob, &json!({ "name": "calm" })).await;
    let id = alices["id"].as_str().unwrap();

    // Sixty writes at once, far past the burst: whatever the machine's
    // speed, they arrive well within the 4 s the bucket would need to refill
    // for them all.
    let patch = json!({ "name": "busy" });
    let statuses: Vec<(u16, Option<String>, Option<String>, Value)> =
        futures_util::future::join_all((0..60).map(|_| async {
            let response = app.patch_metadata(&alice, id, &patch).await;
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .map(|value| value.to_str().unwrap().to_owned())
            };
            let (retry_after, content_type) = (header("retry-after"), header("content-type"));
            let status = response.status().as_u16();
            (
                status,
                retry_after,
                content_type,
                response.json().await.unwrap(),
            )
        }))
        .await;
    let ok = statuses
        .iter()
        .filter(|(status, ..)| *status == 200)
        .count();
    let limited: Vec<_> = statuses
        .iter()
        .filter(|(status, ..)| *status == 429)
        .collect();
    assert_eq!(ok + limited.len(), 60, "only 200 or 429: {statuses:?}");
    // The create took one write of the burst of 20.
    assert!(ok >= 19, "the burst is honoured: {ok} of 60 admitted");
    assert!(!limited.is_empty(), "no write was limited: {statuses:?}");
    for (_, retry_after, content_type, problem) in &limited {
        let seconds: u64 = retry_after.as_deref().unwrap().parse().unwrap();
        assert_eq!(seconds, 1, "a token is 100 ms away");
        assert_eq!(content_type.as_deref(), Some("application/problem+json"));
        assert_eq!(problem["type"], "urn:cola:problem:rate-limited");
        assert_eq!(problem["status"], 429);
    }

    // Reads are not limited.
    assert_eq!(app.get_key(&alice, id).await.status(), 200);
    assert_eq!(app.list_keys(&alice, "").await.status(), 200);
    // Another user's writes are not limited by Alice's.
    let bobs_change = app
        .patch_metadata(
            &bob,
            bobs["id"].as_str().unwrap(),
            &json!({ "name": "still calm" }),
        )
        .await;
    assert_eq!(bobs_change.status(), 200);
}
