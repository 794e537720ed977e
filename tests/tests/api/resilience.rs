//! The worst day: the database goes away, the process is stopped under
//! load, and nothing secret ever reaches the log.

use std::collections::HashMap;
use std::time::Duration;

use cola_e2e::{Forwarder, Options, TestApp, eventually, postgres_address};
use serde_json::{Value, json};

use crate::Tenant;

async fn status_of(app: &TestApp, path: &str) -> u16 {
    app.client
        .get(format!("{}{path}", app.base))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Polls until `path` answers `status`.
async fn answers(app: &TestApp, path: &str, status: u16) -> bool {
    eventually(Duration::from_secs(30), || async move {
        (status_of(app, path).await == status).then_some(())
    })
    .await
    .is_some()
}

// Multi-threaded: the forwarder must keep running while the harness blocks
// waiting for the process to start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_admits_no_one_loses_no_use_and_heals_by_itself() {
    let forwarder = Forwarder::start(postgres_address()).await;
    let app = TestApp::spawn_with(Options::postgres_through(&forwarder)).await;
    let tenant = Tenant::new();
    let token = app.token(tenant.id, tenant.alice, "member");
    let used = app.new_key(&token, &json!({ "name": "used before" })).await;
    let fresh = app
        .new_key(&token, &json!({ "name": "first used during" }))
        .await;
    let (used_id, used_key) = (used["id"].as_str().unwrap(), used["key"].as_str().unwrap());
    let fresh_key = fresh["key"].as_str().unwrap();
    let admitted = std::cell::Cell::new(0u64);
    for _ in 0..5 {
        assert_eq!(app.whoami(used_key).await, 200);
        admitted.set(admitted.get() + 1);
    }

    forwarder.cut();
    assert_eq!(
        status_of(&app, "/health").await,
        200,
        "liveness never needs the database"
    );
    assert!(
        answers(&app, "/ready", 503).await,
        "readiness must report the outage"
    );
    let listing = app.list_keys(&token, "").await;
    assert_eq!(listing.status(), 503);
    assert_eq!(
        listing.headers()["content-type"],
        "application/problem+json"
    );
    // A key never verified here cannot be verified: 503, never admitted.
    assert_eq!(app.whoami(fresh_key).await, 503);
    // A cached key is served only while the change feed is fresh; it may be
    // admitted for a moment, then 503 — never a 401, never forever.
    let outcome = eventually(Duration::from_secs(30), || async {
        match app.whoami(used_key).await {
            200 => {
                admitted.set(admitted.get() + 1);
                None
            }
            other => Some(other),
        }
    })
    .await;
    assert_eq!(outcome, Some(503));
    assert_eq!(status_of(&app, "/health").await, 200);

    forwarder.restore();
    assert!(
        answers(&app, "/ready", 200).await,
        "readiness must recover without a restart"
    );
    assert_eq!(app.whoami(fresh_key).await, 200);
    assert_eq!(app.whoami(used_key).await, 200);
    admitted.set(admitted.get() + 1);
    // Uses counted during the outage were kept and written after it.
    let counted = eventually(Duration::from_secs(30), || async {
        let key: Value = app.get_key(&token, used_id).await.json().await.ok()?;
        (key["usage_count"].as_u64() == Some(admitted.get())).then_some(())
    })
    .await;
    assert!(
        counted.is_some(),
        "usage_count never reached {}",
        admitted.get()
    );
}

/// A request admitted at `/mcp` (its key verified and its use counted) whose
/// body has not all arrived: in flight until [`InFlight::finish`].
struct InFlight {
    stream: tokio::net::TcpStream,
    rest: Vec<u8>,
}

impl InFlight {
    /// Sends the headers and half the body of a `whoami` call with `key`,
    /// and returns once the server has logged the key's admission.
    async fn start(app: &TestApp, key: &str, prefix: &str) -> Self {
        use tokio::io::AsyncWriteExt;
        let body = json!({
            "jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": { "name": "whoami", "arguments": {} }
        })
        .to_string()
        .into_bytes();
        let head = format!(
            "POST /mcp HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {key}\r\n\
             Content-Type: application/json\r\nMCP-Protocol-Version: 2025-11-25\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            app.address(),
            body.len()
        );
        let mut stream = tokio::net::TcpStream::connect(app.address()).await.unwrap();
        let (first, rest) = body.split_at(body.len() / 2);
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(first).await.unwrap();
        // The gate admits (and counts) the request before its body is read.
        let admitted = eventually(Duration::from_secs(30), || async {
            app.logs()
                .iter()
                .any(|line| line.contains(r#""outcome":"admitted""#) && line.contains(prefix))
                .then_some(())
        })
        .await;
        assert!(admitted.is_some(), "the in-flight request was admitted");
        Self {
            stream,
            rest: rest.to_vec(),
        }
    }

    /// Sends the rest of the body; whether the answer was a 200.
    async fn finish(mut self) -> bool {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        if self.stream.write_all(&self.rest).await.is_err() {
            return false;
        }
        let mut answer = Vec::new();
        let _ = self.stream.read_to_end(&mut answer).await;
        answer.starts_with(b"HTTP/1.1 200")
    }
}

/// Stops the process with `signal` while eight clients call it and one
/// admitted request is still being received, then checks that every
/// admitted request was answered and counted: each key's `usage_count`
/// equals the number of 200s its clients received.
async fn a_stop_under_load_counts_every_admitted_request(signal: &str) {
    let mut app =
        TestApp::spawn_with(Options::default().with("COLA_USAGE_FLUSH_INTERVAL_MS", "3600000"))
            .await;
    let tenant = Tenant::new();
    let token = app.token(tenant.id, tenant.alice, "member");
    let created = app.new_key(&token, &json!({ "name": "loaded" })).await;
    let (id, key) = (
        created["id"].as_str().unwrap().to_owned(),
        created["key"].as_str().unwrap().to_owned(),
    );
    let slow = app.new_key(&token, &json!({ "name": "in flight" })).await;
    assert_eq!(app.whoami(&key).await, 200);

    // Eight clients call without pause until the server stops answering.
    let (started_tx, mut started_rx) = tokio::sync::mpsc::channel::<()>(8);
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (url, key, started) = (format!("{}/mcp", app.base), key.clone(), started_tx.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut ok = 0u64;
                loop {
                    let response = client
                        .post(&url)
                        .bearer_auth(&key)
                        .header("mcp-protocol-version", "2025-11-25")
                        .json(&json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": { "name": "whoami" } }))
                        .send()
                        .await;
                    match response {
                        Ok(response) if response.status() == 200 => {
                            ok += 1;
                            if ok == 20 {
                                let _ = started.send(()).await;
                            }
                        }
                        _ => return ok,
                    }
                }
            })
        })
        .collect();
    // Every client is in full swing, and one request is in flight, before
    // the signal.
    for _ in 0..8 {
        started_rx.recv().await.unwrap();
    }
    let in_flight = InFlight::start(
        &app,
        slow["key"].as_str().unwrap(),
        slow["key_prefix"].as_str().unwrap(),
    )
    .await;
    app.send_signal(signal);
    // The server has taken the signal once it accepts no new connection.
    let stopped_accepting = eventually(Duration::from_secs(30), || async {
        tokio::net::TcpStream::connect(app.address())
            .await
            .is_err()
            .then_some(())
    })
    .await;
    assert!(stopped_accepting.is_some(), "the server kept accepting");
    let slow_answered = in_flight.finish().await;
    assert!(
        slow_answered,
        "the request in flight at {signal} was dropped"
    );
    let status = tokio::task::block_in_place(|| app.wait());
    assert!(status.success(), "{status:?}");
    let mut answered_ok = 1; // the warm-up call
    for client in clients {
        answered_ok += client.await.unwrap();
    }

    let restarted = app.spawn_sibling(HashMap::new());
    let key: Value = restarted.get_key(&token, &id).await.json().await.unwrap();
    assert_eq!(key["usage_count"].as_u64(), Some(answered_ok));
    let slow: Value = restarted
        .get_key(&token, slow["id"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(slow["usage_count"].as_u64(), Some(u64::from(slow_answered)));
}

// Multi-threaded: the clients must run on while the test waits for the
// process to exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_counts_every_admitted_request() {
    a_stop_under_load_counts_every_admitted_request("TERM").await;
}

/// Ctrl-C is as graceful as SIGTERM: a request admitted before it is
/// answered, not dropped half-way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_under_load_counts_every_admitted_request() {
    a_stop_under_load_counts_every_admitted_request("INT").await;
}

#[tokio::test]
async fn no_key_jwt_hash_or_secret_ever_reaches_the_log() {
    let app = TestApp::spawn_with(Options::default().with("RUST_LOG", "trace")).await;
    let tenant = Tenant::new();
    let token = app.token(tenant.id, tenant.alice, "admin");
    let created = app
        .new_key(
            &token,
            &json!({ "name": "secret keeper", "permissions": { "write": true } }),
        )
        .await;
    let (id, key) = (
        created["id"].as_str().unwrap(),
        created["key"].as_str().unwrap(),
    );
    let other = app.new_key(&token, &json!({ "name": "other" })).await;
    // Use the key well and badly, manage it, and fail at the management API.
    assert_eq!(app.whoami(key).await, 200);
    let mut wrong = key.to_owned();
    wrong.replace_range(20..21, if &key[20..21] == "a" { "b" } else { "a" });
    assert_eq!(app.whoami(&wrong).await, 401);
    let revoke_other = app
        .mcp(
            key,
            "tools/call",
            &json!({ "name": "revoke_api_key", "arguments": { "id": other["id"] } }),
        )
        .await;
    assert_eq!(revoke_other.status(), 200);
    app.patch_permissions(&token, id, &json!({ "ip_whitelist": ["10.0.0.1"] }))
        .await;
    assert_eq!(app.whoami(key).await, 403);
    assert_eq!(app.list_keys(key, "").await.status(), 401);
    assert_eq!(app.list_keys("not-a-jwt", "").await.status(), 401);
    app.revoke(&token, id).await;
    assert_eq!(app.whoami(key).await, 401);

    let logs = app.logs().join("\n");
    assert!(
        logs.contains("mcp authentication"),
        "the scenario was logged at all"
    );
    for (what, secret) in [
        ("a key", key),
        ("a key's secret part", &key[17..]),
        ("a wrong key", wrong.as_str()),
        ("the other key", other["key"].as_str().unwrap()),
        ("the management JWT", token.as_str()),
        ("the JWT signature", token.rsplit('.').next().unwrap()),
        ("the JWT secret", app.jwt_secret.as_str()),
        ("an argon2 hash", "$argon2"),
    ] {
        assert!(!logs.contains(secret), "{what} appears in the log");
    }
}
