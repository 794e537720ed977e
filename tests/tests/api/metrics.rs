//! `/metrics` after a scenario: the counters say what happened, and nothing
//! identifying a tenant, a user or a key is in it.

use cola_e2e::TestApp;
use serde_json::json;

use crate::Tenant;

/// The value of the sample `name{labels}` in Prometheus text, if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[tokio::test]
async fn metrics_count_what_a_scenario_did_and_name_no_one() {
    let app = TestApp::spawn().await;
    let tenant = Tenant::new();
    let token = app.token(tenant.id, tenant.alice, "member");
    let created = app.new_key(&token, &json!({ "name": "measured" })).await;
    let (id, key) = (
        created["id"].as_str().unwrap(),
        created["key"].as_str().unwrap(),
    );
    for _ in 0..3 {
        assert_eq!(app.mcp(key, "tools/list", &json!({})).await.status(), 200);
    }
    assert_eq!(
        app.mcp("cola_short", "tools/list", &json!({}))
            .await
            .status(),
        401
    );
    assert_eq!(app.revoke(&token, id).await.status(), 204);
    assert_eq!(app.mcp(key, "tools/list", &json!({})).await.status(), 401);

    let response = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();

    assert_eq!(
        sample(&text, r#"cola_mcp_auth_total{outcome="admitted"}"#),
        Some(3.0)
    );
    assert_eq!(
        sample(&text, r#"cola_mcp_auth_total{outcome="malformed"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, r#"cola_mcp_auth_total{outcome="revoked"}"#),
        Some(1.0)
    );
    let hot = sample(&text, r#"cola_key_verification_seconds_count{path="hot"}"#).unwrap_or(0.0);
    let cold = sample(&text, r#"cola_key_verification_seconds_count{path="cold"}"#).unwrap_or(0.0);
    assert_eq!(hot + cold, 3.0);
    assert!(
        cold >= 1.0,
        "the first use is verified against the database"
    );
    assert_eq!(
        sample(
            &text,
            r#"cola_http_requests_total{method="POST",route="/api/mcp/keys",status="201"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"cola_http_requests_total{method="DELETE",route="/api/mcp/keys/{id}",status="204"}"#
        ),
        Some(1.0)
    );
    assert!(text.contains("cola_usage_pending_increments"));
    assert!(text.contains(r#"cola_db_pool_connections{state="idle"}"#));

    for secret in [
        tenant.id.to_string(),
        tenant.alice.to_string(),
        id.to_owned(),
        key[..17].to_owned(),
    ] {
        assert!(!text.contains(&secret), "{secret} appears in /metrics");
    }
}

/// A method is any token a client cares to send; as a label, each would be
/// a series kept for the life of the process.
#[tokio::test]
async fn custom_methods_are_counted_under_one_other_label() {
    let app = TestApp::spawn().await;
    let custom = ["PROPFIND", "XYZZY", "QJ7W2"];
    for name in custom {
        let method = reqwest::Method::from_bytes(name.as_bytes()).unwrap();
        let response = app
            .client
            .request(method, format!("{}/health", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405, "{name}");
    }
    let text = app.metrics().await;
    for name in custom {
        assert!(!text.contains(name), "{name} is a label in /metrics");
    }
    assert_eq!(
        sample(
            &text,
            r#"cola_http_requests_total{method="other",route="/health",status="405"}"#
        ),
        Some(3.0)
    );
}
