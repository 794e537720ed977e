//! The verify API (docs/verify.md) over HTTP against the real binary: server
//! tokens, every outcome code, the allow-list by the end client's address,
//! grants and the scope check, counting, and the identity keys' JWKS.

use std::collections::HashMap;
use std::time::Duration;

use cola_e2e::{Options, TestApp, eventually, same_prefix_wrong_secret};
use reqwest::Method;
use serde_json::{Value, json};

use crate::Tenant;

/// A verify-only server (no URL) of `tenant`, and its minted token.
async fn server_with_token(app: &TestApp, admin: &str, slug: &str) -> (String, String) {
    let server = app
        .new_server(admin, &json!({ "slug": slug, "name": slug, "url": null }))
        .await;
    let id = server["id"].as_str().unwrap().to_owned();
    let token = mint(app, admin, &id).await;
    (id, token)
}

async fn mint(app: &TestApp, admin: &str, server: &str) -> String {
    let response = app
        .request(
            Method::POST,
            &format!("/api/mcp/servers/{server}/token"),
            admin,
            None,
        )
        .await;
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.unwrap();
    body["token"].as_str().unwrap().to_owned()
}

async fn verify(app: &TestApp, server_token: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(format!("{}/api/mcp/verify", app.base))
        .bearer_auth(server_token)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// The answer's `code`, after checking it is a 200 outcome.
async fn code(app: &TestApp, server_token: &str, body: &Value) -> String {
    let response = verify(app, server_token, body).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["valid"], answer["code"] == "VALID", "{answer}");
    answer["code"].as_str().unwrap().to_owned()
}

fn granted(slug: &str, grant: &Value) -> Value {
    json!({ "name": "granted", "permissions": { "read": true, "write": false, "servers": { slug: grant } } })
}

#[tokio::test]
async fn a_server_token_is_minted_by_an_admin_once_and_a_new_one_replaces_it() {
    let app = TestApp::spawn().await;
    let tenant = Tenant::new();
    let admin = app.token(tenant.id, tenant.admin, "admin");
    let (id, first) = server_with_token(&app, &admin, "billing").await;
    assert_eq!(first.len(), 44);
    assert!(first.starts_with("colasrv_"), "{first}");
    let key = app.new_key(&admin, &granted("billing", &json!({}))).await;
    let key = json!({ "key": key["key"] });
    assert_eq!(code(&app, &first, &key).await, "VALID");

    let second = mint(&app, &admin, &id).await;
    assert_ne!(first, second);
    assert_eq!(
        verify(&app, &first, &key).await.status(),
        401,
        "the old token is refused"
    );
    assert_eq!(code(&app, &second, &key).await, "VALID");

    // Members cannot mint; another tenant's server is not there.
    let member = app.token(tenant.id, tenant.alice, "member");
    let refused = app
        .request(
            Method::POST,
            &format!("/api/mcp/servers/{id}/token"),
            &member,
            None,
        )
        .await;
    assert_eq!(refused.status(), 403);
    assert!(
        refused.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/problem+json")
    );
    let stranger = Tenant::new();
    let other_admin = app.token(stranger.id, stranger.admin, "admin");
    let hidden = app
        .request(
            Method::POST,
            &format!("/api/mcp/servers/{id}/token"),
            &other_admin,
            None,
        )
        .await;
    assert_eq!(hidden.status(), 404);
    assert_eq!(
        code(&app, &second, &key).await,
        "VALID",
        "neither refusal replaced the token"
    );

    // A deleted server's token names nothing.
    assert_eq!(app.delete_server(&admin, &id).await.status(), 204);
    assert_eq!(verify(&app, &second, &key).await.status(), 401);
}

#[tokio::test]
async fn a_missing_or_bad_server_token_is_a_401_problem() {
    let app = TestApp::spawn().await;
    let tenant = Tenant::new();
    let admin = app.token(tenant.id, tenant.admin, "admin");
    let key = app.new_key(&admin, &json!({ "name": "k" })).await;
    let body = json!({ "key": key["key"] });
    let unauthenticated = app
        .client
        .post(format!("{}/api/mcp/verify", app.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);
    // A key, a JWT or a token-shaped string are no server token.
    for wrong in [
        key["key"].as_str().unwrap().to_owned(),
        admin.clone(),
        "colasrv_000000000000000000000000000000000000".to_owned(),
    ] {
        let response = verify(&app, &wrong, &body).await;
        assert_eq!(response.status(), 401);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/problem+json")
        );
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["status"], 401);
    }
}

#[tokio::test]
async fn every_key_outcome_has_its_code() {
    let app = TestApp::spawn().await;
    let tenant = Tenant::new();
    let admin = app.token(tenant.id, tenant.admin, "admin");
    let member = app.token(tenant.id, tenant.alice, "member");
    let (_, server_token) = server_with_token(&app, &admin, "billing").await;
    app.new_server(
        &admin,
        &json!({ "slug": "other", "name": "other", "url": null }),
    )
    .await;

    let created = app.new_key(&member, &granted("billing", &json!({}))).await;
    let key = created["key"].as_str().unwrap().to_owned();
    let response = verify(&app, &server_token, &json!({ "key": key })).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let valid: Value = response.json().await.unwrap();
    assert_eq!(valid["valid"], true);
    assert_eq!(valid["code"], "VALID");
    assert_eq!(valid["key_id"], created["id"]);
    assert_eq!(valid["key_prefix"], created["key_prefix"]);
    assert_eq!(valid["tenant_id"], tenant.id.to_string());
    assert_eq!(valid["user_id"], tenant.alice.to_string());
    assert_eq!(valid["expires_at"], created["expires_at"]);
    assert_eq!(
        valid["permissions"],
        json!({ "read": true, "write": false, "allowed_tools": null,
                "allowed_resources": null, "allowed_prompts": null })
    );
    let ttl = valid["cache_ttl_ms"].as_u64().unwrap();
    assert!((1..=2000).contains(&ttl), "cache_ttl_ms {ttl}");

    // NOT_FOUND: junk, an unknown key, the right prefix with a wrong secret,
    // another tenant's key.
    let stranger = Tenant::new();
    let stranger_token = app.token(stranger.id, stranger.alice, "member");
    let foreign = app
        .new_key(&stranger_token, &json!({ "name": "foreign" }))
        .await;
    for presented in [
        "not a key".to_owned(),
        same_prefix_wrong_secret(&key),
        foreign["key"].as_str().unwrap().to_owned(),
    ] {
        assert_eq!(
            code(&app, &server_token, &json!({ "key": presented })).await,
            "NOT_FOUND"
        );
    }

    // NOT_GRANTED: a key of the tenant without a grant for this server.
    let ungranted = app.new_key(&member, &granted("other", &json!({}))).await;
    assert_eq!(
        code(&app, &server_token, &json!({ "key": ungranted["key"] })).await,
        "NOT_GRANTED"
    );
    let plain = app.new_key(&member, &json!({ "name": "no servers" })).await;
    assert_eq!(
        code(&app, &server_token, &json!({ "key": plain["key"] })).await,
        "NOT_GRANTED"
    );

    // REVOKED on the very next call.
    assert_eq!(
        app.revoke(&member, created["id"].as_str().unwrap())
            .await
            .status(),
        204
    );
    assert_eq!(
        code(&app, &server_token, &json!({ "key": key })).await,
        "REVOKED"
    );
    // Another tenant's revoked key is still just unknown.
    app.revoke(&stranger_token, foreign["id"].as_str().unwrap())
        .await;
    assert_eq!(
        code(&app, &server_token, &json!({ "key": foreign["key"] })).await,
        "NOT_FOUND"
    );
}

#[tokio::test]
async fn an_expiring_key_turns_expired() {
    let app = TestApp::spawn().await;
    let tenant = Tenant::new();
    let admin = app.token(tenant.id, tenant.admin, "admin");
    let (_, server_token) = server_with_token(&app, &admin, "billing").await;
    let soon = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    let mut body = granted("billing", &json!({}));
    body["expires_at"] = json!(soon);
    let created = app.new_key(&admin, &body).await;
    let key = json!({ "key": created["key"] });
    let response = verify(&app, &server_token, &key).await;
    let valid: Value = response.json().await.unwrap();
    if valid["code"] == "VALID" {
        // Never reusable past the key's own expiry.
        assert!(valid["cache_ttl_ms"].as_u64().unwrap() <= 2000);
    }
    let expired = eventually(Duration::from_secs(10), || async {
        (code(&app, &server_token, &key).await == "EXPIRED").then_some(())
    })
    .await;
    assert!(expired.is_some(), "the key never answered EXPIRED");
}

#[tokio::test]
async fn the_allow_list_is_checked_against_the_end_clients_address() {
    let app = TestApp::spawn().await;
    let tenant = Tenant::new();
    let admin = app.token(tenant.id, tenant.admin, "admin");
    let (_, server_token) = server_with_token(&app, &admin, "billing").await;
    let mut body = granted("billing", &json!({}));
    body["ip_whitelist"] = json!(["10.0.0.0/8"]);
    let listed = app.new_key(&admin, &body).await;
    let listed = listed["key"].as_str().unwrap();
    let check = |client_ip: Option<&str>, key: &str| {
        let mut body = json!({ "key": key });
        if let Some(ip) = client_ip {
            body["client_ip"] = json!(ip);
        }
        body
    };
    assert_eq!(
        code(&app, &server_token, &check(Some("10.1.2.3"), listed)).await,
        "VALID"
    );
    assert_eq!(
        code(&app, &server_token, &check(Some("::ffff:10.1.2.3"), listed)).await,
        "VALID"
    );
    assert_eq!(
        code(&app, &server_token, &check(Some("203.0.113.7"), listed)).await,
        "IP_DENIED"
    );
    assert_eq!(
        code(&app, &server_token, &check(None, listed)).await,
        "IP_DENIED",
        "fail closed"
    );
    // The calling server's own address (loopback) is not the client's.
    assert_eq!(
        code(&app, &server_token, &check(Some("127.0.0.1"), listed)).await,
        "IP_DENIED"
    );

    let open = app.new_key(&admin, &granted("billing", &json!({}))).await;
    let open = open["key"].as_str().unwrap();
    assert_eq!(code(&app, &server_token, &check(None, open)).await, "VALID");
    assert_eq!(
        code(&app, &server_token, &check(Some("203.0.113.7"), open)).await,
        "VALID"
    );

    let bad = verify(&app, &server_token, &check(Some("10.1.2"), open)).await;
    assert_eq!(bad.status(), 400);
    let problem: Value = bad.json().await.unwrap();
    assert!(problem["errors"]["client_ip"].is_array(), "{problem}");
}

#[tokio::test]
async fn tools_resources_and_prompts_are_decided_by_the_grant() {
    let app = TestApp::spawn().await;
    let tenant = Tenant::new();
    let admin = app.token(tenant.id, tenant.admin, "admin");
    let (_, server_token) = server_with_token(&app, &admin, "github").await;
    let grant = json!({ "allowed_tools": ["search_*", "get_issue"],
                        "allowed_resources": ["repo://cola/*"],
                        "allowed_prompts": ["review_*"] });
    let created = app.new_key(&admin, &granted("github", &grant)).await;
    let key = created["key"].as_str().unwrap();
    let ask = |field: &str, value: &str| json!({ "key": key, field: value });

    let valid: Value = verify(&app, &server_token, &ask("tool", "search_code"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(valid["code"], "VALID");
    assert_eq!(
        valid["permissions"]["allowed_tools"],
        json!(["search_*", "get_issue"])
    );
    assert_eq!(
        valid["permissions"]["allowed_resources"],
        json!(["repo://cola/*"])
    );
    assert_eq!(valid["permissions"]["allowed_prompts"], json!(["review_*"]));
    for (field, value, expected) in [
        ("tool", "get_issue", "VALID"),
        ("tool", "get_issues", "NOT_GRANTED"),
        ("tool", "create_issue", "NOT_GRANTED"),
        ("resource", "repo://cola/readme", "VALID"),
        ("resource", "repo://other/readme", "NOT_GRANTED"),
        ("prompt", "review_pr", "VALID"),
        ("prompt", "summarise", "NOT_GRANTED"),
    ] {
        assert_eq!(
            code(&app, &server_token, &ask(field, value)).await,
            expected,
            "{field} {value}"
        );
    }
    // With the tool's annotation, the key's flags apply as at the gateway:
    // this key reads but does not write.
    let annotated =
        |read_only: bool| json!({ "key": key, "tool": "search_code", "read_only": read_only });
    assert_eq!(code(&app, &server_token, &annotated(true)).await, "VALID");
    assert_eq!(
        code(&app, &server_token, &annotated(false)).await,
        "NOT_GRANTED"
    );

    // At most one target, each named when wrong.
    let both = verify(
        &app,
        &server_token,
        &json!({ "key": key, "tool": "search_code", "prompt": "review_pr" }),
    )
    .await;
    assert_eq!(both.status(), 400);
    let problem: Value = both.json().await.unwrap();
    assert!(
        problem["errors"]["tool"].is_array() && problem["errors"]["prompt"].is_array(),
        "{problem}"
    );
    let unknown = verify(&app, &server_token, &json!({ "key": key, "scope": "all" })).await;
    assert_eq!(unknown.status(), 400);
    let missing = verify(&app, &server_token, &json!({ "tool": "search_code" })).await;
    assert_eq!(missing.status(), 400);
    let problem: Value = missing.json().await.unwrap();
    assert!(problem["errors"]["key"].is_array(), "{problem}");
}

/// docs/decisions.md, decision 128: a URI with dot segments, encoded dots or slashes, or a
/// `#`/`?` that leads out of its path never matches a prefix grant — here
/// as a server asking the verify API sees it.
#[tokio::test]
async fn a_resource_uri_that_could_climb_out_of_a_prefix_grant_is_not_granted() {
    let app = TestApp::spawn().await;
    let tenant = Tenant::new();
    let admin = app.token(tenant.id, tenant.admin, "admin");
    let (_, server_token) = server_with_token(&app, &admin, "files").await;
    let grant = json!({ "allowed_resources": ["repo://cola/public/*"] });
    let created = app.new_key(&admin, &granted("files", &grant)).await;
    let key = created["key"].as_str().unwrap();
    for (uri, expected) in [
        ("repo://cola/public/readme", "VALID"),
        ("repo://cola/public/../private/key", "NOT_GRANTED"),
        ("repo://cola/public/./readme", "NOT_GRANTED"),
        ("repo://cola/public/%2e%2e/private/key", "NOT_GRANTED"),
        ("repo://cola/public/..%2Fprivate", "NOT_GRANTED"),
        ("repo://cola/public/..\\private", "NOT_GRANTED"),
        ("repo://cola/public/x#/../../private", "NOT_GRANTED"),
    ] {
        assert_eq!(
            code(&app, &server_token, &json!({ "key": key, "resource": uri })).await,
            expected,
            "{uri}"
        );
    }
}

#[tokio::test]
async fn a_valid_answer_counts_one_use_and_no_other_answer_does() {
    // An hour-long flush interval: only the shutdown flush writes the count.
    let mut app =
        TestApp::spawn_with(Options::default().with("COLA_USAGE_FLUSH_INTERVAL_MS", "3600000"))
            .await;
    let tenant = Tenant::new();
    let admin = app.token(tenant.id, tenant.admin, "admin");
    let (_, server_token) = server_with_token(&app, &admin, "github").await;
    let mut body = granted("github", &json!({ "allowed_tools": ["search"] }));
    body["ip_whitelist"] = json!(["10.0.0.0/8"]);
    let created = app.new_key(&admin, &body).await;
    let key = created["key"].as_str().unwrap();
    for _ in 0..3 {
        let answer = json!({ "key": key, "client_ip": "10.0.0.1", "tool": "search" });
        assert_eq!(code(&app, &server_token, &answer).await, "VALID");
    }
    let hidden = json!({ "key": key, "client_ip": "10.0.0.1", "tool": "delete_repo" });
    assert_eq!(code(&app, &server_token, &hidden).await, "NOT_GRANTED");
    let outside = json!({ "key": key, "client_ip": "192.0.2.1" });
    assert_eq!(code(&app, &server_token, &outside).await, "IP_DENIED");

    assert!(app.terminate().success());
    let restarted = app.spawn_sibling(HashMap::new());
    let stored: Value = restarted
        .get_key(&admin, created["id"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stored["usage_count"], 3);
    assert!(stored["last_used_at"].is_string());
}

#[tokio::test]
async fn a_key_over_its_rate_limit_is_a_429_with_its_code() {
    let app = TestApp::spawn().await;
    let tenant = Tenant::new();
    let admin = app.token(tenant.id, tenant.admin, "admin");
    let (_, server_token) = server_with_token(&app, &admin, "billing").await;
    let mut body = granted("billing", &json!({}));
    body["rate_limit"] = json!({ "requests": 2, "per_secs": 60 });
    let created = app.new_key(&admin, &body).await;
    let key = json!({ "key": created["key"] });
    assert_eq!(code(&app, &server_token, &key).await, "VALID");
    assert_eq!(code(&app, &server_token, &key).await, "VALID");
    let limited = verify(&app, &server_token, &key).await;
    assert_eq!(limited.status(), 429);
    let wait: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
    let answer: Value = limited.json().await.unwrap();
    assert_eq!(answer["code"], "RATE_LIMITED");
    assert_eq!(answer["valid"], false);
    assert_eq!(answer["status"], 429);
}

#[tokio::test]
async fn a_servers_failures_are_charged_to_it_whatever_client_ip_it_names() {
    let app = TestApp::spawn().await;
    let tenant = Tenant::new();
    let admin = app.token(tenant.id, tenant.admin, "admin");
    let (_, server_token) = server_with_token(&app, &admin, "billing").await;
    let created = app.new_key(&admin, &granted("billing", &json!({}))).await;
    let wrong = same_prefix_wrong_secret(created["key"].as_str().unwrap());
    let mut statuses = Vec::new();
    // A new end client's address on every attempt does not escape the limit.
    for n in 0..100 {
        let attempt = json!({ "key": wrong, "client_ip": format!("198.51.100.{n}") });
        let response = verify(&app, &server_token, &attempt).await;
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            let answer: Value = response.json().await.unwrap();
            assert_eq!(answer["code"], "RATE_LIMITED");
            break;
        }
    }
    assert!(statuses[..20].iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    // The server stays limited for its good keys too, from any address.
    let good = json!({ "key": created["key"], "client_ip": "198.51.100.250" });
    assert_eq!(verify(&app, &server_token, &good).await.status(), 429);
}

#[tokio::test]
async fn an_address_a_server_names_is_never_locked_out_of_mcp() {
    // The test client plays a trusted proxy: its `X-Forwarded-For` is the
    // victim's own address at /mcp.
    let app =
        TestApp::spawn_with(Options::default().with("COLA_TRUSTED_PROXIES", "127.0.0.0/8")).await;
    let tenant = Tenant::new();
    let admin = app.token(tenant.id, tenant.admin, "admin");
    let (_, server_token) = server_with_token(&app, &admin, "billing").await;
    let created = app.new_key(&admin, &granted("billing", &json!({}))).await;
    let wrong = same_prefix_wrong_secret(created["key"].as_str().unwrap());
    // Another tenant's user, whose address the server names again and again.
    let stranger = Tenant::new();
    let stranger_token = app.token(stranger.id, stranger.alice, "member");
    let victim = app
        .new_key(&stranger_token, &json!({ "name": "victim" }))
        .await;
    let victim = victim["key"].as_str().unwrap();
    let victim_address = "203.0.113.50";
    for _ in 0..30 {
        let attempt = json!({ "key": wrong, "client_ip": victim_address });
        verify(&app, &server_token, &attempt).await;
    }
    let status = app
        .client
        .post(format!("{}/mcp", app.base))
        .bearer_auth(victim)
        .header("x-forwarded-for", victim_address)
        .header("mcp-protocol-version", "2025-11-25")
        .json(&json!({
            "jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": { "name": "whoami", "arguments": {} }
        }))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
}

#[tokio::test]
async fn the_jwks_publishes_the_identity_keys() {
    let app = TestApp::spawn().await;
    let response = app
        .client
        .get(format!("{}/.well-known/jwks.json", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let jwks: Value = response.json().await.unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["kty"], "OKP");
    assert_eq!(keys[0]["crv"], "Ed25519");
    assert_eq!(keys[0]["alg"], "EdDSA");
    assert_eq!(keys[0]["use"], "sig");
    assert!(keys[0]["kid"].as_str().is_some_and(|kid| !kid.is_empty()));
    assert!(keys[0].get("d").is_none(), "never the private part");
}
