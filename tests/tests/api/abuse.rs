//! Clients that misbehave on purpose: resetting connections mid-request,
//! sending bad keys in bursts. Each test reproduces a way around the failure
//! limiter that once worked.

use std::time::Duration;

use cola_e2e::{TestApp, eventually, unknown_well_formed_key};
use futures_util::future::join_all;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::Tenant;

/// Key verifications under way, as `/metrics` reports them.
async fn verifications_in_progress(app: &TestApp) -> u64 {
    app.metrics()
        .await
        .lines()
        .find_map(|line| line.strip_prefix("cola_key_verifications_in_progress "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap()
}

/// Attempts decided so far as an unknown key or refused for the address's
/// failures, as `/metrics` counts them.
async fn refusals(app: &TestApp) -> u64 {
    let metrics = app.metrics().await;
    ["unknown", "rate_limited"]
        .iter()
        .filter_map(|outcome| {
            let series = format!("cola_mcp_auth_total{{outcome=\"{outcome}\"}} ");
            metrics
                .lines()
                .find_map(|line| line.strip_prefix(series.as_str()))
                .and_then(|value| value.trim().parse::<u64>().ok())
        })
        .sum()
}

/// Waits until the server reports `expected` verifications under way.
async fn verifications_become(app: &TestApp, expected: u64) -> bool {
    eventually(Duration::from_secs(20), || async move {
        (verifications_in_progress(app).await == expected).then_some(())
    })
    .await
    .is_some()
}

/// Sends `POST /mcp` with `key` on a connection of its own and, once the
/// server has started verifying it, resets the connection (SO_LINGER 0)
/// without reading the answer.
async fn send_and_reset(app: &TestApp, key: &str) {
    let address = app.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}"#;
    let request = format!(
        "POST /mcp HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {key}\r\n\
         MCP-Protocol-Version: 2025-11-25\r\nAccept: application/json, text/event-stream\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let decided_before = refusals(app).await;
    stream.write_all(request.as_bytes()).await.unwrap();
    // A reset that beats the request's bytes makes the server drop it
    // unread, which costs nothing and proves nothing: wait until the server
    // has started verifying it, or has already refused it (quicker than a
    // poll, or at once once the address is limited). Waiting longer would
    // let the first failures leave the limiter's one-minute window.
    let _ = eventually(Duration::from_secs(5), || async {
        (verifications_in_progress(app).await > 0 || refusals(app).await > decided_before)
            .then_some(())
    })
    .await;
    stream.set_zero_linger().unwrap();
    drop(stream);
}

#[tokio::test]
async fn a_client_that_resets_its_connections_is_still_limited() {
    let app = TestApp::spawn().await;
    let tenant = Tenant::new();
    let token = app.token(tenant.id, tenant.alice, "member");
    let created = app.new_key(&token, &json!({ "name": "good" })).await;
    let good = created["key"].as_str().unwrap();
    assert_eq!(app.whoami(good).await, 200);

    // More than the limit (20) of bad keys, each abandoned mid-verification.
    // Each abandoned verification still ends and leaves nothing behind.
    for _ in 0..30 {
        send_and_reset(&app, &unknown_well_formed_key()).await;
        assert!(
            verifications_become(&app, 0).await,
            "an abandoned verification never ended"
        );
    }
    // Every abandoned attempt still counts: the address is limited, which a
    // good key (never counted itself) sees as 429.
    let limited = eventually(Duration::from_secs(30), || async {
        (app.whoami(good).await == 429).then_some(())
    })
    .await;
    assert!(limited.is_some(), "aborted attempts were not counted");
    let logged = app
        .logs()
        .iter()
        .filter(|line| line.contains("mcp authentication") && line.contains("\"unknown\""))
        .count();
    assert!(logged >= 20, "abandoned attempts must be logged: {logged}");
}

#[tokio::test]
async fn a_burst_of_bad_keys_from_one_address_gets_at_most_the_limit_of_401s() {
    let app = TestApp::spawn().await;
    let bad = unknown_well_formed_key();
    let statuses = join_all((0..150).map(|_| app.whoami(&bad))).await;
    let unauthorized = statuses.iter().filter(|status| **status == 401).count();
    let limited = statuses.iter().filter(|status| **status == 429).count();
    assert_eq!((unauthorized, limited), (20, 130), "statuses: {statuses:?}");
}

#[tokio::test]
async fn a_burst_of_distinct_bad_keys_from_one_address_holds_no_more_verifications_than_the_limit()
{
    let app = TestApp::spawn().await;
    // Each a key of its own: no verification can be shared, so every one
    // would cost argon2 work if the address could start it.
    let keys: Vec<String> = (0..150).map(|_| unknown_well_formed_key()).collect();
    let statuses = join_all(keys.iter().map(|key| app.whoami(key))).await;
    let unauthorized = statuses.iter().filter(|status| **status == 401).count();
    let limited = statuses.iter().filter(|status| **status == 429).count();
    // At most the limit is ever verified (and answered as a failure); the
    // rest waits as "too many", and nothing is refused for capacity.
    assert_eq!((unauthorized, limited), (20, 130), "statuses: {statuses:?}");
}

/// Attempts of callers not yet authenticated under way, as `/metrics`
/// reports them.
async fn attempts_in_flight(app: &TestApp) -> u64 {
    app.metrics()
        .await
        .lines()
        .find_map(|line| line.strip_prefix("cola_auth_attempts_in_flight "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap()
}

/// Reports `key` on a connection of its own and, once the server has paid
/// for the attempt (or refused it), resets the connection (SO_LINGER 0)
/// without reading the answer.
async fn report_and_reset(app: &TestApp, key: &str) {
    let address = app.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let body = json!({ "key": key }).to_string();
    let request = format!(
        "POST /api/mcp/keys/report HTTP/1.1\r\nHost: {address}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let answered = |line: &String| line.contains("key reported") || line.contains("rate-limited");
    let decided_before = app.logs().iter().filter(|line| answered(line)).count();
    stream.write_all(request.as_bytes()).await.unwrap();
    let _ = eventually(Duration::from_secs(5), || async {
        let decided = app.logs().iter().filter(|line| answered(line)).count();
        (attempts_in_flight(app).await > 0 || decided > decided_before).then_some(())
    })
    .await;
    stream.set_zero_linger().unwrap();
    drop(stream);
}

#[tokio::test]
async fn a_reporter_that_resets_its_connections_is_still_limited() {
    let app = TestApp::spawn().await;
    for _ in 0..30 {
        report_and_reset(&app, &unknown_well_formed_key()).await;
    }
    // Every attempt was paid for before its work began, whether or not the
    // reporter waited for the answer: the address is limited now.
    let limited = eventually(Duration::from_secs(30), || async {
        (app.report(&json!({ "key": unknown_well_formed_key() }))
            .await
            .status()
            == 429)
            .then_some(())
    })
    .await;
    assert!(limited.is_some(), "aborted reports were not counted");
    assert!(
        eventually(Duration::from_secs(10), || async {
            (attempts_in_flight(&app).await == 0).then_some(())
        })
        .await
        .is_some(),
        "an abandoned attempt stayed in flight"
    );
}

#[tokio::test]
async fn every_refusal_closes_the_connection_alike() {
    let app = TestApp::spawn().await;
    let tenant = Tenant::new();
    let token = app.token(tenant.id, tenant.alice, "member");
    let created = app.new_key(&token, &json!({ "name": "good" })).await;
    let wrong_secret = cola_e2e::same_prefix_wrong_secret(created["key"].as_str().unwrap());
    // Refused before any work (malformed) and after argon2 (wrong secret).
    for key in ["cola_malformed", wrong_secret.as_str()] {
        let response = app.mcp(key, "tools/list", &json!({})).await;
        assert_eq!(response.status(), 401);
        assert_eq!(
            response
                .headers()
                .get("connection")
                .and_then(|value| value.to_str().ok()),
            Some("close"),
            "refusal of {key:.10}…"
        );
    }
}
