//! `X-Forwarded-For` behind a trusted proxy: the client is the nearest
//! untrusted hop, and a hop that cannot be read makes the client no one —
//! never the proxy, whose own address is the one most often allow-listed.
//!
//! The tests trust the loopback network, so the test client itself plays the
//! proxy, and send the header a proxy would have passed on.

use std::time::Duration;

use cola_e2e::{Options, TestApp, eventually, same_prefix_wrong_secret};
use reqwest::header::HeaderValue;
use serde_json::{Value, json};

use crate::Tenant;

fn behind_a_loopback_proxy() -> Options {
    Options::default().with("COLA_TRUSTED_PROXIES", "127.0.0.0/8")
}

/// `whoami` with `key`, forwarded for the raw header value `forwarded`.
async fn whoami_for(app: &TestApp, key: &str, forwarded: Option<&[u8]>) -> u16 {
    let mut request = app
        .client
        .post(format!("{}/mcp", app.base))
        .bearer_auth(key)
        .header("mcp-protocol-version", "2025-11-25")
        .json(&json!({
            "jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": { "name": "whoami", "arguments": {} }
        }));
    if let Some(forwarded) = forwarded {
        request = request.header(
            "x-forwarded-for",
            HeaderValue::from_bytes(forwarded).expect("obs-text is a valid header value"),
        );
    }
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn an_unreadable_forwarded_hop_passes_no_allow_list_that_holds_the_proxy() {
    let app = TestApp::spawn_with(behind_a_loopback_proxy()).await;
    let tenant = Tenant::new();
    let token = app.token(tenant.id, tenant.alice, "member");
    let pinned = app
        .new_key(
            &token,
            &json!({ "name": "proxy network only", "ip_whitelist": ["127.0.0.0/8"] }),
        )
        .await;
    let pinned = pinned["key"].as_str().unwrap();

    // The key works from the proxy's network, and not from elsewhere.
    assert_eq!(whoami_for(&app, pinned, None).await, 200);
    assert_eq!(whoami_for(&app, pinned, Some(b"127.0.0.9")).await, 200);
    assert_eq!(whoami_for(&app, pinned, Some(b"198.51.100.7")).await, 403);
    // A client outside sends junk that is not even text; the proxy passes it
    // on, alone or with the hop it appends (as nginx and Envoy do).
    for forwarded in [
        &b"evil\xff"[..],
        b"evil\xff, 127.0.0.5",
        b"198.51.100.7\xff",
        b"not-an-address, 127.0.0.5",
    ] {
        assert_eq!(
            whoami_for(&app, pinned, Some(forwarded)).await,
            403,
            "{}",
            String::from_utf8_lossy(forwarded)
        );
    }

    // A key without an allow-list is usable from anywhere, by its owner's
    // choice: an unreadable address too.
    let open = app.new_key(&token, &json!({ "name": "anywhere" })).await;
    assert_eq!(
        whoami_for(&app, open["key"].as_str().unwrap(), Some(b"evil\xff")).await,
        200
    );

    // The log says so: the decision names the stand-in address, the
    // request span says the address could not be read.
    let logged = eventually(Duration::from_secs(10), || async {
        let events: Vec<Value> = app
            .logs()
            .iter()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect();
        let decision = events.iter().any(|event| {
            event["message"] == "mcp authentication"
                && event["outcome"] == "ip_denied"
                && event["client"] == "100::"
        });
        let span = events
            .iter()
            .any(|event| event["span"]["http.client_ip"] == "unreadable");
        (decision && span).then_some(())
    })
    .await;
    assert!(logged.is_some(), "the unreadable client was logged as such");
}

#[tokio::test]
async fn an_allow_list_entry_inside_the_reserved_prefix_is_refused() {
    let app = TestApp::spawn().await;
    let tenant = Tenant::new();
    let token = app.token(tenant.id, tenant.alice, "member");
    let response = app
        .create_key(
            &token,
            &json!({ "name": "n", "ip_whitelist": ["10.0.0.0/8", "100::7"] }),
        )
        .await;
    assert_eq!(response.status(), 400);
    let problem: Value = response.json().await.unwrap();
    assert!(problem["errors"]["ip_whitelist"].is_array(), "{problem}");
    // A wider network that holds the prefix is fine: it matches every other
    // address in it.
    let wide = app
        .create_key(&token, &json!({ "name": "n", "ip_whitelist": ["::/0"] }))
        .await;
    assert_eq!(wide.status(), 201);
}

#[tokio::test]
async fn unreadable_clients_fail_in_a_bucket_of_their_own_not_the_proxys() {
    let app = TestApp::spawn_with(behind_a_loopback_proxy()).await;
    let tenant = Tenant::new();
    let token = app.token(tenant.id, tenant.alice, "member");
    let created = app.new_key(&token, &json!({ "name": "good" })).await;
    let good = created["key"].as_str().unwrap();
    let wrong = same_prefix_wrong_secret(good);

    // Failures from unreadable clients until they are limited (the limit is
    // 20 a minute, so the 100th is refused at the latest).
    let mut statuses = Vec::new();
    for _ in 0..100 {
        let status = whoami_for(&app, &wrong, Some(b"evil\xff")).await;
        statuses.push(status);
        if status == 429 {
            break;
        }
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    assert!(statuses[..20].iter().all(|s| *s == 401), "{statuses:?}");
    // Unreadable clients stay limited, good key or not…
    assert_eq!(whoami_for(&app, good, Some(b"junk\xfe")).await, 429);
    // …while the proxy itself and the clients it names properly are not.
    assert_eq!(whoami_for(&app, good, None).await, 200);
    assert_eq!(whoami_for(&app, good, Some(b"198.51.100.7")).await, 200);
}
