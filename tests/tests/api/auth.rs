//! The management API admits only a valid JWT, never a key.

use cola_e2e::{TestApp, sign};
use serde_json::{Value, json};

use crate::Tenant;

async fn status_with(app: &TestApp, authorization: Option<String>) -> (u16, Option<String>) {
    let mut request = app.client.get(format!("{}/api/mcp/keys", app.base));
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let response = request.send().await.unwrap();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    (response.status().as_u16(), content_type)
}

/// Alice's claims, valid for ten minutes from `now`, with `extra` laid over
/// them (a `null` removes the claim).
fn alices_claims(tenant: &Tenant, now: i64, extra: &Value) -> Value {
    let mut claims = json!({ "sub": tenant.alice.to_string(), "tenant_id": tenant.id.to_string(), "exp": now + 600 });
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            claims.as_object_mut().unwrap().remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
    claims
}

#[tokio::test]
async fn every_kind_of_bad_jwt_is_a_401_problem() {
    let app = TestApp::spawn().await;
    let tenant = Tenant::new();
    let now = chrono::Utc::now().timestamp();
    let claims = |extra: Value| alices_claims(&tenant, now, &extra);
    let valid = app.token(tenant.id, tenant.alice, "member");
    let key = app.new_key(&valid, &json!({ "name": "k" })).await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let unsigned = {
        use base64::Engine;
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.",
            e.encode(r#"{"alg":"none","typ":"JWT"}"#),
            e.encode(claims(json!({})).to_string())
        )
    };
    let cases: Vec<(&str, Option<String>)> = vec![
        ("no header", None),
        ("not bearer", Some(format!("Basic {valid}"))),
        ("garbage", Some("Bearer not.a.jwt".into())),
        (
            "wrong secret",
            Some(format!(
                "Bearer {}",
                sign(&"w".repeat(40), &claims(json!({})))
            )),
        ),
        (
            "expired",
            Some(format!(
                "Bearer {}",
                sign(&app.jwt_secret, &claims(json!({ "exp": now - 120 })))
            )),
        ),
        (
            "no exp",
            Some(format!(
                "Bearer {}",
                sign(&app.jwt_secret, &claims(json!({ "exp": null })))
            )),
        ),
        (
            "no sub",
            Some(format!(
                "Bearer {}",
                sign(&app.jwt_secret, &claims(json!({ "sub": null })))
            )),
        ),
        (
            "no tenant",
            Some(format!(
                "Bearer {}",
                sign(&app.jwt_secret, &claims(json!({ "tenant_id": null })))
            )),
        ),
        (
            "sub not a uuid",
            Some(format!(
                "Bearer {}",
                sign(&app.jwt_secret, &claims(json!({ "sub": "alice" })))
            )),
        ),
        (
            "unknown role",
            Some(format!(
                "Bearer {}",
                sign(&app.jwt_secret, &claims(json!({ "role": "root" })))
            )),
        ),
        ("alg none", Some(format!("Bearer {unsigned}"))),
        ("a cola key", Some(format!("Bearer {key}"))),
    ];
    for (case, header) in cases {
        let (status, content_type) = status_with(&app, header).await;
        assert_eq!(status, 401, "{case}");
        assert_eq!(
            content_type.as_deref(),
            Some("application/problem+json"),
            "{case}"
        );
    }
    assert_eq!(
        status_with(&app, Some(format!("Bearer {valid}"))).await.0,
        200
    );
}

/// A refused management token says why (RFC 6750 `error_description`, and
/// the problem's detail), in words; never which secret was tried.
#[tokio::test]
async fn a_refused_token_says_why() {
    let app = TestApp::spawn().await;
    let tenant = Tenant::new();
    let now = chrono::Utc::now().timestamp();
    let claims = |extra: Value| alices_claims(&tenant, now, &extra);
    let valid = app.token(tenant.id, tenant.alice, "member");
    let key = app.new_key(&valid, &json!({ "name": "k" })).await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let wrong_secret = "w".repeat(40);
    let cases: Vec<(Option<String>, Option<&str>)> = vec![
        (None, None),
        (
            Some(format!(
                "Bearer {}",
                sign(&app.jwt_secret, &claims(json!({ "exp": now - 120 })))
            )),
            Some("token expired"),
        ),
        (
            Some(format!(
                "Bearer {}",
                sign(&wrong_secret, &claims(json!({})))
            )),
            Some("signature does not verify"),
        ),
        (
            Some(format!(
                "Bearer {}",
                sign(&app.jwt_secret, &claims(json!({ "tenant_id": null })))
            )),
            Some("`tenant_id` is missing"),
        ),
        (
            Some(format!(
                "Bearer {}",
                sign(&app.jwt_secret, &claims(json!({ "exp": null })))
            )),
            Some("`exp` is missing"),
        ),
        (Some("Bearer not.a.jwt".into()), Some("token malformed")),
        (
            Some(format!("Bearer {key}")),
            Some("API key cannot manage keys"),
        ),
    ];
    for (authorization, reason) in cases {
        let mut request = app.client.get(format!("{}/api/mcp/keys", app.base));
        if let Some(value) = &authorization {
            request = request.header("authorization", value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{reason:?}");
        let challenge = response
            .headers()
            .get("www-authenticate")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        let problem: Value = response.json().await.unwrap();
        let detail = problem["detail"].as_str().unwrap();
        match reason {
            // No credential: no error code (RFC 6750 §3.1).
            None => {
                assert_eq!(challenge, "Bearer realm=\"cola\"");
                assert!(detail.contains("bearer token is required"), "{detail}");
            }
            Some(reason) => {
                assert!(
                    challenge.starts_with(
                        "Bearer realm=\"cola\", error=\"invalid_token\", error_description=\""
                    ),
                    "{challenge}"
                );
                assert!(challenge.contains(reason), "{reason}: {challenge}");
                assert!(detail.contains(reason), "{reason}: {detail}");
                assert!(!detail.contains(&wrong_secret) && !detail.contains(&app.jwt_secret));
                assert!(!detail.contains(&key[..16]), "{detail}");
            }
        }
    }
    assert_eq!(
        status_with(&app, Some(format!("Bearer {valid}"))).await.0,
        200
    );
}

#[tokio::test]
async fn repeated_jwt_failures_from_one_address_are_rate_limited_and_successes_are_not() {
    let app = TestApp::spawn().await;
    let tenant = Tenant::new();
    let valid = app.token(tenant.id, tenant.alice, "member");
    // Successes never count.
    for _ in 0..30 {
        assert_eq!(
            status_with(&app, Some(format!("Bearer {valid}"))).await.0,
            200
        );
    }
    let mut statuses = Vec::new();
    for _ in 0..100 {
        statuses.push(status_with(&app, Some("Bearer nonsense".into())).await.0);
    }
    assert!(
        statuses[..20].iter().all(|s| *s == 401),
        "the first 20 failures are 401: {statuses:?}"
    );
    assert_eq!(statuses[99], 429, "the 100th is 429 at the latest");
    let response = app
        .client
        .get(format!("{}/api/mcp/keys", app.base))
        .bearer_auth("nonsense")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after));
}
