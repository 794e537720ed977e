//! The REST API against an identity provider's keys (docs/operations.md, "Settings" and "Pointing Cola at Keycloak or any OIDC provider"):
//! a small OpenID Connect discovery + JWKS server started by each test,
//! publishing test keys (`fixtures/`), and the real binary verifying
//! tokens signed with them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cola_e2e::{Options, TestApp, eventually};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

const EC_1: &str = include_str!("fixtures/ec-1.pem");
const EC_2: &str = include_str!("fixtures/ec-2.pem");
const ATTACKER: &str = include_str!("fixtures/attacker.pem");
const RSA_1: &str = include_str!("fixtures/rsa-1.pem");
const ED_1: &str = include_str!("fixtures/ed-1.pem");
const PUBLIC_JWKS: &str = include_str!("fixtures/public-jwks.json");

/// A provider that serves `/.well-known/openid-configuration` and `/jwks`,
/// counting the fetches of each; its published keys can be swapped.
struct Provider {
    issuer: String,
    published: Arc<Mutex<Vec<&'static str>>>,
    fetches: Arc<AtomicUsize>,
    discoveries: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn public_key(kid: &str) -> Value {
    let all: Value = serde_json::from_str(PUBLIC_JWKS).unwrap();
    all[kid].clone()
}

impl Provider {
    async fn start(published: &[&'static str]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let published = Arc::new(Mutex::new(published.to_vec()));
        let fetches = Arc::new(AtomicUsize::new(0));
        let discoveries = Arc::new(AtomicUsize::new(0));
        let task = {
            let (issuer, published, fetches, discoveries) = (
                issuer.clone(),
                Arc::clone(&published),
                Arc::clone(&fetches),
                Arc::clone(&discoveries),
            );
            tokio::spawn(async move {
                while let Ok((mut stream, _)) = listener.accept().await {
                    let mut request = vec![0u8; 4096];
                    let read = stream.read(&mut request).await.unwrap_or(0);
                    let request = String::from_utf8_lossy(&request[..read]).to_string();
                    let path = request.split_whitespace().nth(1).unwrap_or("").to_owned();
                    let body = match path.as_str() {
                        "/.well-known/openid-configuration" => {
                            discoveries.fetch_add(1, Ordering::SeqCst);
                            json!({
                            "issuer": issuer,
                            "jwks_uri": format!("{issuer}/jwks"),
                            "authorization_endpoint": format!("{issuer}/authorize"),
                            "token_endpoint": format!("{issuer}/token"),
                            "response_types_supported": ["code"],
                            "subject_types_supported": ["public"],
                            "id_token_signing_alg_values_supported": ["ES256", "RS256", "EdDSA"],
                            })
                        }
                        "/jwks" => {
                            fetches.fetch_add(1, Ordering::SeqCst);
                            let keys: Vec<Value> = published
                                .lock()
                                .unwrap()
                                .iter()
                                .map(|kid| public_key(kid))
                                .collect();
                            json!({ "keys": keys })
                        }
                        _ => Value::Null,
                    };
                    let (status, body) = if body.is_null() {
                        ("404 Not Found", String::new())
                    } else {
                        ("200 OK", body.to_string())
                    };
                    let response = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                    let _ = stream.shutdown().await;
                }
            })
        };
        Self {
            issuer,
            published,
            fetches,
            discoveries,
            task,
        }
    }

    fn publish(&self, kids: &[&'static str]) {
        *self.published.lock().unwrap() = kids.to_vec();
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    fn discoveries(&self) -> usize {
        self.discoveries.load(Ordering::SeqCst)
    }
}

/// A Cola that verifies management JWTs against `provider` only (no static
/// secret), reading the tenant from `org` and the roles from Keycloak's
/// `realm_access.roles`.
async fn cola(provider: &Provider) -> TestApp {
    TestApp::spawn_with(
        Options::default()
            .with("COLA_JWT_SECRET", "")
            .with("COLA_OIDC_ISSUER", &provider.issuer)
            .with("COLA_JWT_TENANT_CLAIM", "org")
            .with("COLA_JWT_ROLE_CLAIM", "realm_access.roles")
            .with("COLA_JWT_ADMIN_ROLES", "cola-admin, owner"),
    )
    .await
}

fn sign(algorithm: Algorithm, pem: &str, kid: Option<&str>, claims: &Value) -> String {
    let key = match algorithm {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(pem.as_bytes()),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(pem.as_bytes()),
        _ => EncodingKey::from_ec_pem(pem.as_bytes()),
    }
    .unwrap();
    let mut header = Header::new(algorithm);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

fn claims(issuer: &str, sub: &str, roles: &[&str]) -> Value {
    json!({
        "iss": issuer,
        "sub": sub,
        "aud": ["account", "cola"],
        "org": "acme",
        "realm_access": { "roles": roles },
        "exp": chrono::Utc::now().timestamp() + 600,
    })
}

/// UUIDv5 under UUIDv5(URL, issuer), as docs/operations.md documents it.
fn mapped(issuer: &str, kind: &str, value: &str) -> String {
    let namespace = Uuid::new_v5(&Uuid::NAMESPACE_URL, issuer.as_bytes());
    Uuid::new_v5(&namespace, format!("{kind}:{value}").as_bytes()).to_string()
}

async fn list_status(app: &TestApp, token: &str) -> u16 {
    app.list_keys(token, "").await.status().as_u16()
}

#[tokio::test]
async fn a_provider_token_is_accepted_with_its_ids_mapped_and_its_roles_read() {
    let provider = Provider::start(&["ec-1", "rsa-1", "ed-1"]).await;
    let app = cola(&provider).await;
    let issuer = provider.issuer.as_str();
    let alice = sign(
        Algorithm::ES256,
        EC_1,
        Some("ec-1"),
        &claims(issuer, "auth0|alice", &["viewer", "cola-admin"]),
    );
    let created = app
        .new_key(&alice, &json!({ "name": "from the provider" }))
        .await;
    assert_eq!(created["user_id"], mapped(issuer, "sub", "auth0|alice"));
    assert_eq!(created["tenant_id"], mapped(issuer, "tenant", "acme"));

    // Each key type with its own algorithm.
    let rsa = sign(
        Algorithm::RS256,
        RSA_1,
        Some("rsa-1"),
        &claims(issuer, "auth0|alice", &[]),
    );
    let ed = sign(
        Algorithm::EdDSA,
        ED_1,
        Some("ed-1"),
        &claims(issuer, "auth0|alice", &[]),
    );
    assert_eq!(list_status(&app, &rsa).await, 200);
    assert_eq!(list_status(&app, &ed).await, 200);

    // A member (no admin role) of the same tenant does not see alice's key;
    // alice as an admin does see the member's.
    let bob = sign(
        Algorithm::ES256,
        EC_1,
        Some("ec-1"),
        &claims(issuer, "1234567890", &["viewer"]),
    );
    let id = created["id"].as_str().unwrap();
    assert_eq!(app.get_key(&bob, id).await.status(), 404);
    let bobs = app.new_key(&bob, &json!({ "name": "bob's" })).await;
    assert_eq!(bobs["user_id"], mapped(issuer, "sub", "1234567890"));
    assert_eq!(
        app.get_key(&alice, bobs["id"].as_str().unwrap())
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn forged_expired_and_foreign_tokens_are_refused() {
    let provider = Provider::start(&["ec-1"]).await;
    let app = cola(&provider).await;
    let issuer = provider.issuer.as_str();
    let good = claims(issuer, "alice", &["cola-admin"]);
    assert_eq!(
        list_status(&app, &sign(Algorithm::ES256, EC_1, Some("ec-1"), &good)).await,
        200
    );

    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let unsigned = {
        use base64::Engine;
        format!(
            "{}.{}.",
            engine.encode(r#"{"alg":"none","typ":"JWT","kid":"ec-1"}"#),
            engine.encode(good.to_string())
        )
    };
    // HS256 "signed" with what the provider publishes, as a classic
    // algorithm-confusion forgery would.
    let public_as_secret = public_key("ec-1").to_string();
    let hmac_forged = {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("ec-1".into());
        jsonwebtoken::encode(
            &header,
            &good,
            &EncodingKey::from_secret(public_as_secret.as_bytes()),
        )
        .unwrap()
    };
    let mut expired = good.clone();
    expired["exp"] = json!(chrono::Utc::now().timestamp() - 120);
    let mut other_issuer = good.clone();
    other_issuer["iss"] = json!("https://elsewhere.example.com");
    let mut no_tenant = good.clone();
    no_tenant.as_object_mut().unwrap().remove("org");
    let cases = [
        (
            "signed by another key under a published kid",
            sign(Algorithm::ES256, ATTACKER, Some("ec-1"), &good),
        ),
        ("HS256 with the public key as secret", hmac_forged),
        ("alg none", unsigned),
        (
            "expired",
            sign(Algorithm::ES256, EC_1, Some("ec-1"), &expired),
        ),
        (
            "another issuer",
            sign(Algorithm::ES256, EC_1, Some("ec-1"), &other_issuer),
        ),
        (
            "no tenant claim",
            sign(Algorithm::ES256, EC_1, Some("ec-1"), &no_tenant),
        ),
        (
            "a kid not published",
            sign(Algorithm::ES256, ATTACKER, Some("attacker"), &good),
        ),
    ];
    for (case, token) in cases {
        let response = app
            .request(Method::GET, "/api/mcp/keys", &token, None)
            .await;
        assert_eq!(response.status(), 401, "{case}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{case}"
        );
    }
}

#[tokio::test]
async fn a_rotated_key_is_fetched_once_and_unknown_kids_do_not_refetch_within_the_interval() {
    let provider = Provider::start(&["ec-1"]).await;
    let app = cola(&provider).await;
    let issuer = provider.issuer.as_str();
    let first = sign(
        Algorithm::ES256,
        EC_1,
        Some("ec-1"),
        &claims(issuer, "alice", &[]),
    );
    assert_eq!(list_status(&app, &first).await, 200);
    let fetched = provider.fetches();
    assert_eq!(fetched, 1, "fetched once at start");

    // The provider rotates to a new key: the first token naming it makes
    // Cola fetch the set again, and it is accepted.
    provider.publish(&["ec-2"]);
    let rotated = sign(
        Algorithm::ES256,
        EC_2,
        Some("ec-2"),
        &claims(issuer, "alice", &[]),
    );
    assert_eq!(list_status(&app, &rotated).await, 200);
    assert_eq!(provider.fetches(), 2);

    // Another unknown kid right after: refused without asking the provider.
    let unknown = sign(
        Algorithm::ES256,
        ATTACKER,
        Some("made-up"),
        &claims(issuer, "alice", &[]),
    );
    assert_eq!(list_status(&app, &unknown).await, 401);
    assert_eq!(provider.fetches(), 2, "at most one refetch per interval");
    assert_eq!(list_status(&app, &rotated).await, 200);
}

#[tokio::test]
async fn check_config_reports_the_provider_s_keys_and_fails_when_it_is_unreachable() {
    let provider = Provider::start(&["ec-1", "rsa-1"]).await;
    // Run without blocking: the provider answers on this test's runtime.
    let run = |issuer: String| {
        tokio::process::Command::new(cola_e2e::binary())
            .arg("check-config")
            .env_clear()
            .env("COLA_OIDC_ISSUER", issuer)
            .output()
    };
    let found = run(provider.issuer.clone()).await.unwrap();
    let stdout = String::from_utf8_lossy(&found.stdout);
    assert!(found.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "JWT=JWKS discovered from the issuer {}",
            provider.issuer
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("JWKS_KEYS=ec-1 (ES256), rsa-1 (RS256)"),
        "{stdout}"
    );

    let unreachable = run("http://127.0.0.1:9".into()).await.unwrap();
    assert_eq!(unreachable.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&unreachable.stderr);
    assert!(
        stderr.starts_with("invalid configuration: COLA_OIDC_ISSUER: "),
        "{stderr}"
    );
}

#[tokio::test]
async fn sign_in_pages_do_not_fetch_the_provider_s_documents_each_time() {
    let provider = Provider::start(&["ec-1"]).await;
    let app = TestApp::spawn_with(
        Options::default()
            .with("COLA_JWT_SECRET", "")
            .with("COLA_OIDC_ISSUER", &provider.issuer)
            .with("COLA_OIDC_CLIENT_ID", "cola-console")
            .with(
                "COLA_OIDC_CLIENT_SECRET",
                "a-client-secret-of-at-least-32-bytes",
            ),
    )
    .await;
    // The REST API's keys are fetched in the background at start: one
    // discovery and one JWKS, counted apart from the sign-ins.
    let fetched_at_start = eventually(Duration::from_secs(30), || async {
        (provider.fetches() >= 1).then_some(())
    })
    .await;
    assert!(fetched_at_start.is_some(), "the keys were never fetched");
    let (discoveries, fetches) = (provider.discoveries(), provider.fetches());
    assert_eq!((discoveries, fetches), (1, 1));

    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for _ in 0..5 {
        let started = client
            .get(format!("{}/console/login", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(started.status(), 303);
        let location = started.headers()["location"].to_str().unwrap().to_owned();
        assert!(
            location.starts_with(&format!("{}/authorize?", provider.issuer)),
            "{location}"
        );
    }
    // The first sign-in fetched the metadata and its keys; the others used
    // them.
    assert_eq!(provider.discoveries(), discoveries + 1);
    assert_eq!(provider.fetches(), fetches + 1);
}
