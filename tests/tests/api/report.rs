//! Reporting a leaked key (docs/operations.md, "If a key leaks"): the public report and GitHub's
//! secret-scanning partner format.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use cola_e2e::{Options, TestApp, eventually, same_prefix_wrong_secret, unknown_well_formed_key};
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::{EncodePublicKey, LineEnding};
use serde_json::{Value, json};

use crate::Tenant;

/// A report's status and body.
async fn reported(app: &TestApp, body: &Value) -> (u16, String) {
    let response = app.report(body).await;
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

#[tokio::test]
async fn every_report_gets_the_same_202_and_only_a_real_key_is_revoked() {
    let app = TestApp::spawn().await;
    let tenant = Tenant::new();
    let token = app.token(tenant.id, tenant.alice, "member");
    let created = app.new_key(&token, &json!({ "name": "leaked" })).await;
    let (id, key) = (
        created["id"].as_str().unwrap(),
        created["key"].as_str().unwrap(),
    );
    assert_eq!(app.whoami(key).await, 200);
    let mut bad_checksum = key.to_owned();
    bad_checksum.replace_range(40.., if key.ends_with('0') { "1" } else { "0" });

    let junk = [
        "hello".to_owned(),
        bad_checksum,
        unknown_well_formed_key(),
        same_prefix_wrong_secret(key),
    ];
    let mut answers = Vec::new();
    for text in &junk {
        answers.push(reported(&app, &json!({ "key": text })).await);
    }
    // Nothing was revoked by junk, a guess or someone else's secret.
    assert_eq!(app.whoami(key).await, 200);
    answers.push(
        reported(
            &app,
            &json!({ "key": key, "url": "https://example.com/paste/1", "source": "paste" }),
        )
        .await,
    );
    let first = answers[0].clone();
    assert_eq!(first.0, 202);
    for answer in &answers {
        assert_eq!(answer, &first, "every report is answered alike");
    }

    // Refused on the very next request.
    assert_eq!(app.whoami(key).await, 401);
    let view: Value = app.get_key(&token, id).await.json().await.unwrap();
    assert_eq!(view["status"], "revoked");
    assert_eq!(view["revoked_by"], "00000000-0000-0000-0000-000000000000");
    let (kind, event) = app.event_log(&token, id).await.pop().unwrap();
    assert_eq!(kind, "api_key.revoked");
    assert_eq!(event["data"]["reason"], "reported");
    assert_eq!(event["data"]["url"], "https://example.com/paste/1");
    assert_eq!(event["data"]["source"], "paste");
    assert_eq!(
        event["actor_user_id"],
        "00000000-0000-0000-0000-000000000000"
    );

    // Reported again: the same answer, no second event.
    assert_eq!(reported(&app, &json!({ "key": key })).await, first);
    assert_eq!(app.event_log(&token, id).await.len(), 2);

    // Only the envelope can be refused: an overlong url is named.
    let response = app
        .report(&json!({ "key": "x", "url": "u".repeat(2049) }))
        .await;
    assert_eq!(response.status(), 400);
    let problem: Value = response.json().await.unwrap();
    assert!(problem["errors"]["url"].is_array(), "{problem}");

    // Neither the reported key nor its secret part reaches the log.
    let logs = eventually(Duration::from_secs(10), || async {
        let logs = app.logs().join("\n");
        logs.contains(r#""outcome":"revoked""#).then_some(logs)
    })
    .await
    .expect("the report was logged");
    assert!(!logs.contains(key), "the key appears in the log");
    assert!(
        !logs.contains(&key[17..]),
        "its secret part appears in the log"
    );
    for text in &junk[1..] {
        assert!(
            !logs.contains(text.as_str()),
            "a reported text appears in the log"
        );
    }
}

#[tokio::test]
async fn anything_sent_as_a_report_gets_the_same_202() {
    let app = TestApp::spawn().await;
    let reference = reported(&app, &json!({ "key": "junk" })).await;
    assert_eq!(reference.0, 202);
    let bodies: [(&str, &[u8]); 6] = [
        ("application/json", b"{}"),
        ("application/json", b"[]"),
        ("application/json", b"null"),
        ("application/json", b"not json at all"),
        ("text/plain", b"cola_whatever"),
        ("application/json", br#"{"key": 42, "extra": true}"#),
    ];
    for (content_type, body) in bodies {
        let response = app
            .client
            .post(format!("{}/api/mcp/keys/report", app.base))
            .header("content-type", content_type)
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        assert_eq!(
            (status, response.text().await.unwrap()),
            reference,
            "{}",
            String::from_utf8_lossy(body)
        );
    }
}

#[tokio::test]
async fn reports_that_are_not_keys_are_limited_per_address() {
    let app = TestApp::spawn().await;
    let mut statuses = Vec::new();
    for _ in 0..120 {
        statuses.push(reported(&app, &json!({ "key": "junk" })).await.0);
    }
    let first_refusal = statuses.iter().position(|status| *status == 429);
    assert!(
        statuses[..20].iter().all(|status| *status == 202),
        "{statuses:?}"
    );
    assert!(
        first_refusal.is_some_and(|at| at < 100),
        "never limited: {statuses:?}"
    );
}

#[tokio::test]
async fn a_reported_key_is_refused_on_another_instance_on_postgres() {
    let first = TestApp::spawn_with(Options::postgres()).await;
    let second = first.spawn_sibling(HashMap::new());
    let tenant = Tenant::new();
    let token = first.token(tenant.id, tenant.alice, "member");
    let created = first.new_key(&token, &json!({ "name": "shared" })).await;
    let key = created["key"].as_str().unwrap();
    assert_eq!(second.whoami(key).await, 200);
    assert_eq!(reported(&first, &json!({ "key": key })).await.0, 202);
    assert_eq!(first.whoami(key).await, 401);
    // Promised within 2 s; the deadline is generous for a loaded machine.
    let refused = eventually(Duration::from_secs(10), || async {
        (second.whoami(key).await == 401).then_some(())
    })
    .await;
    assert!(
        refused.is_some(),
        "the report never reached the other instance"
    );
}

/// A P-256 key pair standing in for GitHub's, and the keys file Cola reads.
struct GithubSigner {
    key: SigningKey,
    file: std::path::PathBuf,
}

impl GithubSigner {
    fn new() -> Self {
        let seed: Vec<u8> = [uuid::Uuid::new_v4(), uuid::Uuid::new_v4()]
            .iter()
            .flat_map(|id| id.into_bytes())
            .collect();
        let key = SigningKey::from_slice(&seed).unwrap();
        let pem = key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        let file = std::env::temp_dir().join(format!("cola-gh-keys-{}.json", uuid::Uuid::new_v4()));
        std::fs::write(
            &file,
            json!({ "public_keys": [
                { "key_identifier": "old-key", "key": pem, "is_current": false },
                { "key_identifier": "current-key", "key": pem, "is_current": true }
            ] })
            .to_string(),
        )
        .unwrap();
        Self { key, file }
    }

    fn sign(&self, body: &[u8]) -> String {
        let signature: Signature = self.key.sign(body);
        STANDARD.encode(signature.to_der().as_bytes())
    }

    async fn send(
        &self,
        app: &TestApp,
        body: &str,
        identifier: Option<&str>,
        signature: Option<&str>,
    ) -> reqwest::Response {
        let mut request = app
            .client
            .post(format!("{}/api/secret-scanning/github", app.base))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(identifier) = identifier {
            request = request.header("Github-Public-Key-Identifier", identifier);
        }
        if let Some(signature) = signature {
            request = request.header("Github-Public-Key-Signature", signature);
        }
        request.send().await.unwrap()
    }
}

impl Drop for GithubSigner {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}

#[tokio::test]
async fn a_signed_github_alert_revokes_real_keys_and_labels_each_match() {
    let signer = GithubSigner::new();
    let app = TestApp::spawn_with(Options::default().with(
        "COLA_SECRET_SCANNING_KEYS_FILE",
        signer.file.to_str().unwrap(),
    ))
    .await;
    let tenant = Tenant::new();
    let token = app.token(tenant.id, tenant.alice, "member");
    let created = app.new_key(&token, &json!({ "name": "committed" })).await;
    let (id, key) = (
        created["id"].as_str().unwrap(),
        created["key"].as_str().unwrap(),
    );
    let junk = unknown_well_formed_key();
    let body = json!([
        { "token": key, "type": "cola_api_key", "url": "https://github.com/o/r/blob/x/.env", "source": "content" },
        { "token": junk, "type": "cola_api_key", "url": "", "source": "commit" },
    ])
    .to_string();

    // Unsigned, signed by an unknown key id, or a signature over another
    // body: refused, and nothing revoked.
    let good = signer.sign(body.as_bytes());
    let other = signer.sign(b"[]");
    for (identifier, signature) in [
        (None, None),
        (Some("current-key"), None),
        (Some("nobody"), Some(good.as_str())),
        (Some("current-key"), Some(other.as_str())),
        (Some("current-key"), Some("bm90IGEgc2lnbmF0dXJl")),
    ] {
        let response = signer.send(&app, &body, identifier, signature).await;
        assert_eq!(response.status(), 401, "{identifier:?}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
    }
    assert_eq!(
        app.whoami(key).await,
        200,
        "a refused alert revokes nothing"
    );

    let response = signer.send(&app, &body, Some("old-key"), Some(&good)).await;
    assert_eq!(response.status(), 200);
    let labels: Value = response.json().await.unwrap();
    assert_eq!(
        labels,
        json!([
            { "token_raw": key, "token_type": "cola_api_key", "label": "true_positive" },
            { "token_raw": junk, "token_type": "cola_api_key", "label": "false_positive" },
        ])
    );
    assert_eq!(app.whoami(key).await, 401);
    let (kind, event) = app.event_log(&token, id).await.pop().unwrap();
    assert_eq!(kind, "api_key.revoked");
    assert_eq!(event["data"]["reason"], "reported");
    assert_eq!(event["data"]["source"], "content");
    assert_eq!(event["data"]["url"], "https://github.com/o/r/blob/x/.env");

    // Sent again (GitHub's retry, or a replay): the same answer, and no
    // key is looked at again.
    let looked_at = |app: &TestApp| {
        app.logs()
            .iter()
            .filter(|line| line.contains("key reported"))
            .count()
    };
    let before = looked_at(&app);
    let again: Value = signer
        .send(&app, &body, Some("current-key"), Some(&good))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again[0]["label"], "true_positive");
    assert_eq!(again, labels);
    assert_eq!(looked_at(&app), before, "a replayed alert was worked again");
    assert!(
        !app.logs().join("\n").contains(key),
        "the key appears in the log"
    );
}

#[tokio::test]
async fn without_a_keys_file_the_github_route_is_not_there() {
    let app = TestApp::spawn().await;
    let response = app
        .client
        .post(format!("{}/api/secret-scanning/github", app.base))
        .header("content-type", "application/json")
        .body("[]")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}
