//! The console at `/console` (docs/console.md) over real HTTP: its security
//! headers, the `--dev` sign-in, the session cookie the REST API accepts in
//! place of a bearer token, CSRF refusals, sign-out and offboarding ending a
//! session on every instance, `--dev`'s limits, and the rate limit on
//! starting a sign-in. The browser suite (`tests/console`) drives the page
//! itself.

use std::collections::HashMap;
use std::time::Duration;

use cola_e2e::{Forwarder, Options, TestApp, postgres_address};
use reqwest::header::{COOKIE, ORIGIN, SET_COOKIE};
use serde_json::{Value, json};
use uuid::Uuid;

const DEMO_TENANT: &str = "00000000-0000-4000-8000-000000000001";
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

/// The status of `GET /api/mcp/keys` on `app` with the session `cookie`
/// as the only credential.
async fn listed_with(app: &TestApp, cookie: &str) -> u16 {
    app.client
        .get(format!("{}/api/mcp/keys", app.base))
        .header(COOKIE, cookie)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Whether `GET /console/session` on `app` says `cookie` is signed in.
async fn signed_in_with(app: &TestApp, cookie: &str) -> bool {
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
    session["signed_in"] == true
}

/// Signs out of `app` as the console page does; the status.
async fn sign_out(app: &TestApp, cookie: &str) -> u16 {
    let csrf = csrf_token(app, cookie).await;
    app.client
        .post(format!("{}/console/logout", app.base))
        .header(COOKIE, cookie)
        .header(ORIGIN, &app.base)
        .header("x-csrf-token", csrf)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Two `--dev` instances on one PostgreSQL database, with one JWT secret.
async fn two_dev_instances_on_postgres() -> (TestApp, TestApp) {
    let first = TestApp::spawn_with(Options::postgres().arg("--dev")).await;
    let second = first.spawn_sibling_with(&["--dev"], HashMap::new());
    (first, second)
}

#[tokio::test]
async fn signing_out_on_one_instance_ends_the_session_on_every_instance_on_postgres() {
    let (first, second) = two_dev_instances_on_postgres().await;
    let (cookie, _) = sign_in(&first).await;
    assert_eq!(
        listed_with(&second, &cookie).await,
        200,
        "one session, both instances"
    );

    assert_eq!(sign_out(&first, &cookie).await, 204);
    // The same cookie, replayed as it was: ended everywhere at once.
    assert_eq!(listed_with(&second, &cookie).await, 401);
    assert_eq!(listed_with(&first, &cookie).await, 401);
    assert!(!signed_in_with(&second, &cookie).await);
    // Another session of the same user is another session.
    let (again, _) = sign_in(&second).await;
    assert_eq!(listed_with(&first, &again).await, 200);
}

#[tokio::test]
async fn offboarding_a_user_ends_their_console_sessions_on_every_instance_on_postgres() {
    let (first, second) = two_dev_instances_on_postgres().await;
    let (on_first, _) = sign_in(&first).await;
    let (on_second, _) = sign_in(&second).await;
    let demo_tenant: Uuid = DEMO_TENANT.parse().unwrap();
    let demo_user: Uuid = DEMO_USER.parse().unwrap();
    let admin = first.token(demo_tenant, demo_user, "admin");
    first
        .new_key(&admin, &json!({ "name": "the demo admin's" }))
        .await;
    for app in [&first, &second] {
        for cookie in [&on_first, &on_second] {
            assert_eq!(listed_with(app, cookie).await, 200);
        }
    }

    let response = first.offboard(&admin, DEMO_USER).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({ "revoked": 1 }),
        "the answer is the contract's"
    );

    for app in [&first, &second] {
        for cookie in [&on_first, &on_second] {
            assert_eq!(listed_with(app, cookie).await, 401);
            assert!(!signed_in_with(app, cookie).await);
        }
    }
}

#[tokio::test]
async fn a_dev_session_is_refused_by_an_instance_not_in_dev_that_shares_its_secret_and_database() {
    let dev = TestApp::spawn_with(Options::postgres().arg("--dev")).await;
    let plain = dev.spawn_sibling(HashMap::new());
    let (cookie, _) = sign_in(&dev).await;
    assert_eq!(listed_with(&dev, &cookie).await, 200);

    assert_eq!(listed_with(&plain, &cookie).await, 401);
    assert!(!signed_in_with(&plain, &cookie).await);
    // The non-dev instance has no demo sign-in either.
    let login = no_redirects()
        .get(format!("{}/console/login", plain.base))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 404);
}

// Multi-threaded: the forwarder must keep running while the harness blocks
// waiting for the process to start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_refused_with_a_503_while_its_record_cannot_be_read() {
    let forwarder = Forwarder::start(postgres_address()).await;
    let app = TestApp::spawn_with(Options::postgres_through(&forwarder).arg("--dev")).await;
    let (cookie, _) = sign_in(&app).await;
    assert_eq!(listed_with(&app, &cookie).await, 200);

    forwarder.cut();
    // Fail closed: never admitted on the strength of the cookie alone.
    assert_eq!(listed_with(&app, &cookie).await, 503);
    let session = app
        .client
        .get(format!("{}/console/session", app.base))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(session.status(), 503);

    forwarder.restore();
    let healed = cola_e2e::eventually(Duration::from_secs(30), || async {
        (listed_with(&app, &cookie).await == 200).then_some(())
    })
    .await;
    assert!(
        healed.is_some(),
        "the session works again once the database is back"
    );
}

#[tokio::test]
async fn dev_refuses_to_listen_on_an_address_that_is_not_loopback() {
    let dir = std::env::temp_dir().join(format!("cola-dev-listen-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = tokio::process::Command::new(cola_e2e::binary())
        .arg("--dev")
        .env_clear()
        .current_dir(&dir)
        .env("COLA_LISTEN", "0.0.0.0:0")
        .env(
            "COLA_DATABASE_URL",
            format!("sqlite://{}/cola.db?mode=rwc", dir.display()),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    // A deadline, not a measurement: a binary that serves instead of
    // refusing never exits by itself.
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait()).await;
    let _ = child.kill().await;
    let mut stderr_text = String::new();
    let _ = tokio::io::AsyncReadExt::read_to_string(
        &mut tokio::io::BufReader::new(stderr),
        &mut stderr_text,
    )
    .await;
    let written: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    let status = status.expect("--dev on 0.0.0.0 kept running").unwrap();
    assert!(!status.success(), "{stderr_text}");
    let naming: Vec<&str> = stderr_text
        .lines()
        .filter(|line| line.contains("COLA_LISTEN"))
        .collect();
    assert_eq!(
        naming.len(),
        1,
        "one line names COLA_LISTEN:\n{stderr_text}"
    );
    assert!(naming[0].contains("0.0.0.0"), "{stderr_text}");
    assert!(
        written.is_empty(),
        "nothing is written before refusing: {written:?}"
    );
}

#[tokio::test]
async fn a_burst_of_sign_in_starts_from_one_address_is_limited_and_another_address_is_not() {
    let app = TestApp::spawn_with(
        Options::default()
            .arg("--dev")
            .with("COLA_TRUSTED_PROXIES", "127.0.0.0/8"),
    )
    .await;
    let client = no_redirects();
    let start = |address: &'static str| {
        client
            .get(format!("{}/console/login", app.base))
            .header("x-forwarded-for", address)
            .send()
    };
    // The burst is 20: each start is admitted until the 21st at the
    // earliest (a slow machine may refill a token meanwhile, never fewer).
    let mut admitted = 0;
    let limited = loop {
        let response = start("198.51.100.7").await.unwrap();
        if response.status() == 303 {
            admitted += 1;
            assert!(admitted <= 100, "sign-in starts are not limited");
            continue;
        }
        break response;
    };
    assert!(admitted >= 20, "only {admitted} starts were admitted");
    assert_eq!(limited.status(), 429);
    let wait: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(wait >= 1, "{wait}");
    assert!(
        limited.text().await.unwrap().contains("Too many sign-ins"),
        "a page that says why"
    );

    let other = start("198.51.100.8").await.unwrap();
    assert_eq!(other.status(), 303, "another address is not limited");
}

/// In `--dev`, a refused management token also says how to get a fresh
/// demo token (the banner's lasts 24 hours).
#[tokio::test]
async fn a_refused_token_in_dev_mode_says_how_to_get_a_fresh_one() {
    let app = dev_app().await;
    let expired = cola_e2e::sign(
        &app.jwt_secret,
        &serde_json::json!({
            "sub": DEMO_USER,
            "tenant_id": "00000000-0000-4000-8000-000000000001",
            "role": "admin",
            "exp": chrono::Utc::now().timestamp() - 120,
        }),
    );
    let response = app
        .client
        .get(format!("{}/api/mcp/keys", app.base))
        .bearer_auth(&expired)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let problem: serde_json::Value = response.json().await.unwrap();
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("token expired"), "{detail}");
    assert!(detail.contains("cola-api dev-token"), "{detail}");
}
