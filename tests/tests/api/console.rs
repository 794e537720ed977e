//! The console at `/console` (CONTRACT §11) over real HTTP: its security
//! headers, the `--dev` sign-in, the session cookie the REST API accepts in
//! place of a bearer token, CSRF refusals, and sign-out. The browser suite
//! (`tests/console`) drives the page itself.

use cola_e2e::{Options, TestApp};
use reqwest::header::{COOKIE, ORIGIN, SET_COOKIE};
use serde_json::{Value, json};

const DEMO_USER: &str = "00000000-0000-4000-8000-000000000002";

async fn dev_app() -> TestApp {
    TestApp::spawn_with(Options::default().arg("--dev")).await
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Signs in through `/console/login` (dev mode); the cookie pair and the
/// `Set-Cookie` line it came in.
async fn sign_in(app: &TestApp) -> (String, String) {
    let response = no_redirects()
        .get(format!("{}/console/login", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["location"], "/console");
    let set_cookie = response.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    let pair = set_cookie.split(';').next().unwrap().to_owned();
    (pair, set_cookie)
}

async fn csrf_token(app: &TestApp, cookie: &str) -> String {
    let session: Value = app
        .client
        .get(format!("{}/console/session", app.base))
        .header(COOKIE, cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(session["signed_in"], true, "{session}");
    session["csrf_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_console_is_served_from_the_binary_with_a_strict_policy() {
    let app = dev_app().await;
    let response = app
        .client
        .get(format!("{}/console", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    let policy = headers["content-security-policy"].to_str().unwrap();
    for directive in [
        "default-src 'self'",
        "script-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(policy.contains(directive), "{policy}");
    }
    assert!(!policy.contains("unsafe-inline"), "{policy}");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = response.text().await.unwrap();
    // Every script is a file of the console; none is inline or elsewhere.
    for script in html.split("<script").skip(1) {
        assert!(script.contains("src=\"/console/assets/"), "{script}");
    }
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no other origin"
    );
    for (asset, kind) in [("app.js", "text/javascript"), ("app.css", "text/css")] {
        let response = app
            .client
            .get(format!("{}/console/assets/{asset}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{asset}");
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(kind)
        );
    }
    let missing = app
        .client
        .get(format!("{}/console/assets/x.js", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn dev_sign_in_sets_an_http_only_strict_cookie_that_the_rest_api_accepts() {
    let app = dev_app().await;
    let (cookie, set_cookie) = sign_in(&app).await;
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    assert!(!set_cookie.contains("Secure"), "plain http: {set_cookie}");
    let listed = app
        .client
        .get(format!("{}/api/mcp/keys", app.base))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    // A cookie this service did not sign is no session.
    let forged = format!("{cookie}x");
    let refused = app
        .client
        .get(format!("{}/api/mcp/keys", app.base))
        .header(COOKIE, forged)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
}

#[tokio::test]
async fn a_write_with_the_cookie_needs_the_csrf_token_and_this_origin() {
    let app = dev_app().await;
    let (cookie, _) = sign_in(&app).await;
    let csrf = csrf_token(&app, &cookie).await;
    let create = |origin: Option<String>, csrf: Option<String>| {
        let mut request = app
            .client
            .post(format!("{}/api/mcp/keys", app.base))
            .header(COOKIE, &cookie)
            .json(&json!({ "name": "from the console" }));
        if let Some(origin) = origin {
            request = request.header(ORIGIN, origin);
        }
        if let Some(csrf) = csrf {
            request = request.header("x-csrf-token", csrf);
        }
        request.send()
    };
    for (case, origin, token) in [
        ("no token", Some(app.base.clone()), None),
        (
            "a wrong token",
            Some(app.base.clone()),
            Some("nope".to_owned()),
        ),
        (
            "another origin",
            Some("https://evil.example".to_owned()),
            Some(csrf.clone()),
        ),
        ("no origin", None, Some(csrf.clone())),
    ] {
        let response = create(origin, token).await.unwrap();
        assert_eq!(response.status(), 403, "{case}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["type"], "urn:cola:problem:csrf", "{case}");
    }
    let response = create(Some(app.base.clone()), Some(csrf)).await.unwrap();
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["user_id"], DEMO_USER, "the demo admin owns it");
}

#[tokio::test]
async fn sign_out_needs_the_csrf_token_and_clears_the_cookie() {
    let app = dev_app().await;
    let (cookie, _) = sign_in(&app).await;
    let csrf = csrf_token(&app, &cookie).await;
    let logout = |csrf: Option<&str>| {
        let mut request = app
            .client
            .post(format!("{}/console/logout", app.base))
            .header(COOKIE, &cookie)
            .header(ORIGIN, &app.base);
        if let Some(csrf) = csrf {
            request = request.header("x-csrf-token", csrf);
        }
        request.send()
    };
    assert_eq!(logout(None).await.unwrap().status(), 403);
    let response = logout(Some(&csrf)).await.unwrap();
    assert_eq!(response.status(), 204);
    let cleared = response.headers()[SET_COOKIE].to_str().unwrap();
    assert!(
        cleared.starts_with("cola_session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
}

#[tokio::test]
async fn without_dev_or_a_provider_the_console_explains_how_to_sign_in() {
    let app = TestApp::spawn().await;
    let session: Value = app
        .client
        .get(format!("{}/console/session", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(session["signed_in"], false);
    assert_eq!(session["sign_in"], "unavailable");
    let login = no_redirects()
        .get(format!("{}/console/login", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 404);
    assert!(login.text().await.unwrap().contains("COLA_OIDC_ISSUER"));
}
