//! The server registry (docs/gateway.md) and grants on keys, end to end: CRUD,
//! who may change what, the URL and header rules, credentials that never
//! come back out, and grants that follow their server.

use cola_e2e::{Options, TestApp, secrets_key};
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};

use crate::Tenant;

/// Upstream URLs are public address literals: the tests have no DNS beyond
/// `localhost`, and a name that does not resolve is refused.
const SECRET_VALUE: &str = "Bearer upstream-hunter2";

fn registry() -> Options {
    Options::default().with("COLA_SECRETS_KEY", &secrets_key())
}

fn github() -> Value {
    json!({
        "slug": "github",
        "name": "GitHub tools",
        "url": "https://93.184.215.14/mcp",
        "headers": { "Authorization": SECRET_VALUE, "X-Team": "cola" },
    })
}

/// The `errors` field names of a 400 problem.
async fn bad_fields(response: reqwest::Response) -> Vec<String> {
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    body["errors"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect()
}

#[tokio::test]
async fn an_admin_registers_reads_changes_and_deletes_a_server() {
    let app = TestApp::spawn_with(registry()).await;
    let tenant = Tenant::new();
    let admin = app.token(tenant.id, tenant.admin, "admin");
    let member = app.token(tenant.id, tenant.alice, "member");

    let response = app.create_server(&admin, &github()).await;
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let text = response.text().await.unwrap();
    assert!(!text.contains("hunter2"), "{text}");
    let server: Value = serde_json::from_str(&text).unwrap();
    let id = server["id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/api/mcp/servers/{id}"));
    let mut fields: Vec<&str> = server
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "created_at",
            "forward_identity",
            "header_names",
            "id",
            "name",
            "slug",
            "tenant_id",
            "timeout_secs",
            "updated_at",
            "url"
        ]
    );
    assert_eq!(server["tenant_id"], tenant.id.to_string());
    assert_eq!(server["header_names"], json!(["Authorization", "X-Team"]));
    assert_eq!(server["forward_identity"], false);
    assert_eq!(server["timeout_secs"], 30);

    // Any role of the tenant reads.
    let got = app.get_server(&member, &id).await;
    assert_eq!(got.status(), 200);
    let got_text = got.text().await.unwrap();
    assert!(!got_text.contains("hunter2"));
    let listed: Value = app.list_servers(&member, "").await.json().await.unwrap();
    assert_eq!(listed["items"][0]["id"], id.as_str());
    assert_eq!(listed["next_cursor"], Value::Null);

    // A partial change; a given headers map replaces the stored one whole.
    let changed = app
        .patch_server(
            &admin,
            &id,
            &json!({ "timeout_secs": 120, "forward_identity": true,
                     "headers": { "X-Api-Key": "other-secret" } }),
        )
        .await;
    assert_eq!(changed.status(), 200);
    let changed: Value = changed.json().await.unwrap();
    assert_eq!(changed["timeout_secs"], 120);
    assert_eq!(changed["forward_identity"], true);
    assert_eq!(changed["header_names"], json!(["X-Api-Key"]));
    assert_eq!(changed["name"], "GitHub tools");
    let verify_only = app.patch_server(&admin, &id, &json!({ "url": null })).await;
    assert_eq!(
        verify_only.json::<Value>().await.unwrap()["url"],
        Value::Null
    );

    assert_eq!(app.delete_server(&admin, &id).await.status(), 204);
    assert_eq!(app.get_server(&admin, &id).await.status(), 404);
    assert_eq!(app.delete_server(&admin, &id).await.status(), 404);

    // The audit trail holds every change, without a header value.
    let db = sea_orm::Database::connect(&app.database_url).await.unwrap();
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            db.get_database_backend(),
            "SELECT event_type, CAST(data AS TEXT) AS data FROM api_key_events \
             WHERE key_id = ? ORDER BY id",
            [uuid::Uuid::parse_str(&id).unwrap().into()],
        ))
        .await
        .unwrap();
    let kinds: Vec<String> = rows
        .iter()
        .map(|row| row.try_get::<String>("", "event_type").unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "mcp_server.created",
            "mcp_server.updated",
            "mcp_server.updated",
            "mcp_server.deleted"
        ]
    );
    for row in &rows {
        let data: String = row.try_get("", "data").unwrap();
        assert!(
            !data.contains("hunter2") && !data.contains("other-secret"),
            "{data}"
        );
    }
}

#[tokio::test]
async fn the_stored_row_holds_no_header_value_in_clear() {
    let app = TestApp::spawn_with(registry()).await;
    let tenant = Tenant::new();
    let admin = app.token(tenant.id, tenant.admin, "admin");
    app.new_server(&admin, &github()).await;
    // Whatever the database file holds, on disk.
    let path = app
        .database_url
        .trim_start_matches("sqlite://")
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    let db = sea_orm::Database::connect(&app.database_url).await.unwrap();
    db.execute_unprepared("PRAGMA wal_checkpoint(TRUNCATE)")
        .await
        .unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    if let Ok(wal) = std::fs::read(format!("{path}-wal")) {
        bytes.extend(wal);
    }
    assert!(!bytes.windows(7).any(|w| w == b"hunter2"));
    assert!(
        bytes.windows(13).any(|w| w == b"Authorization"),
        "the names are stored"
    );
}

#[tokio::test]
async fn a_taken_slug_is_a_409_in_its_tenant_only() {
    let app = TestApp::spawn_with(registry()).await;
    let (ours, theirs) = (Tenant::new(), Tenant::new());
    let admin = app.token(ours.id, ours.admin, "admin");
    app.new_server(&admin, &github()).await;
    let again = app.create_server(&admin, &github()).await;
    assert_eq!(again.status(), 409);
    assert_eq!(again.headers()["content-type"], "application/problem+json");
    let other = app.token(theirs.id, theirs.admin, "admin");
    assert_eq!(app.create_server(&other, &github()).await.status(), 201);
}

/// docs/decisions.md, decision 129: at most 100 servers per tenant, 409 beyond; the cap is the
/// tenant's, not the admin's, and deleting one makes room.
#[tokio::test]
async fn the_tenants_101st_server_is_a_409_and_deleting_one_makes_room() {
    let app = TestApp::spawn_with(registry()).await;
    let (ours, theirs) = (Tenant::new(), Tenant::new());
    // Five admins of the tenant, 20 creates each: within each one's burst
    // of management writes.
    let admins: Vec<String> = (0..5)
        .map(|_| app.token(ours.id, uuid::Uuid::new_v4(), "admin"))
        .collect();
    let mut first = None;
    for n in 0..100 {
        let admin = &admins[n / 20];
        let body = json!({ "slug": format!("s{n}"), "name": format!("server {n}"), "url": null });
        let created = app.new_server(admin, &body).await;
        first.get_or_insert_with(|| created["id"].as_str().unwrap().to_owned());
    }
    let late = app.token(ours.id, ours.admin, "admin");
    let over = app
        .create_server(
            &late,
            &json!({ "slug": "s100", "name": "one too many", "url": null }),
        )
        .await;
    assert_eq!(over.status(), 409);
    assert_eq!(over.headers()["content-type"], "application/problem+json");
    let problem: Value = over.json().await.unwrap();
    assert_eq!(problem["status"], 409);
    assert!(
        problem["detail"].as_str().unwrap().contains("100 servers"),
        "{problem}"
    );
    // Another tenant has a cap of its own.
    let other = app.token(theirs.id, theirs.admin, "admin");
    assert_eq!(
        app.create_server(&other, &json!({ "slug": "s100", "name": "n", "url": null }))
            .await
            .status(),
        201
    );
    let first = first.unwrap();
    assert_eq!(app.delete_server(&late, &first).await.status(), 204);
    assert_eq!(
        app.create_server(&late, &json!({ "slug": "s100", "name": "n", "url": null }))
            .await
            .status(),
        201
    );
}

#[tokio::test]
async fn a_member_may_read_but_not_change_and_another_tenant_sees_nothing() {
    let app = TestApp::spawn_with(registry()).await;
    let (ours, theirs) = (Tenant::new(), Tenant::new());
    let admin = app.token(ours.id, ours.admin, "admin");
    let member = app.token(ours.id, ours.alice, "member");
    let id = app.new_server(&admin, &github()).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for response in [
        app.create_server(&member, &json!({ "slug": "x", "name": "x" }))
            .await,
        app.patch_server(&member, &id, &json!({ "name": "mine" }))
            .await,
        app.delete_server(&member, &id).await,
    ] {
        assert_eq!(response.status(), 403);
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
    }
    assert_eq!(app.get_server(&member, &id).await.status(), 200);

    let stranger = app.token(theirs.id, theirs.admin, "admin");
    let missing = uuid::Uuid::new_v4().to_string();
    for target in [&id, &missing] {
        assert_eq!(app.get_server(&stranger, target).await.status(), 404);
        let patch = app
            .patch_server(&stranger, target, &json!({ "name": "x" }))
            .await;
        assert_eq!(patch.status(), 404);
        assert_eq!(app.delete_server(&stranger, target).await.status(), 404);
    }
    let listed: Value = app.list_servers(&stranger, "").await.json().await.unwrap();
    assert_eq!(listed["items"], json!([]));
    assert_eq!(app.get_server(&admin, &id).await.status(), 200);
}

#[tokio::test]
async fn every_bad_field_is_named() {
    let app = TestApp::spawn_with(registry()).await;
    let tenant = Tenant::new();
    let admin = app.token(tenant.id, tenant.admin, "admin");
    for (body, field) in [
        (json!({ "slug": "Bad_Slug", "name": "n" }), "slug"),
        (json!({ "slug": "", "name": "n" }), "slug"),
        (json!({ "slug": "ok", "name": "" }), "name"),
        (
            json!({ "slug": "ok", "name": "n", "timeout_secs": 0 }),
            "timeout_secs",
        ),
        (
            json!({ "slug": "ok", "name": "n", "timeout_secs": 301 }),
            "timeout_secs",
        ),
        (
            json!({ "slug": "ok", "name": "n", "url": "ftp://example.com/" }),
            "url",
        ),
        (
            json!({ "slug": "ok", "name": "n", "url": "https://u:p@example.com/" }),
            "url",
        ),
        (
            json!({ "slug": "ok", "name": "n", "url": "http://169.254.169.254/latest" }),
            "url",
        ),
        (
            json!({ "slug": "ok", "name": "n", "url": "http://10.1.2.3/mcp" }),
            "url",
        ),
        (
            json!({ "slug": "ok", "name": "n", "url": "http://127.0.0.1:9/mcp" }),
            "url",
        ),
        (
            json!({ "slug": "ok", "name": "n", "url": "http://[::ffff:127.0.0.1]/mcp" }),
            "url",
        ),
        (
            json!({ "slug": "ok", "name": "n", "url": "http://localhost:9/mcp" }),
            "url",
        ),
        (
            json!({ "slug": "ok", "name": "n", "headers": { "Host": "x" } }),
            "headers.Host",
        ),
        (
            json!({ "slug": "ok", "name": "n", "headers": { "Mcp-Session-Id": "x" } }),
            "headers.Mcp-Session-Id",
        ),
        (
            json!({ "slug": "ok", "name": "n", "headers": { "Bad Name": "x" } }),
            "headers.Bad Name",
        ),
        (
            json!({ "slug": "ok", "name": "n", "headers": { "X-Ok": "" } }),
            "headers.X-Ok",
        ),
    ] {
        let response = app.create_server(&admin, &body).await;
        assert_eq!(bad_fields(response).await, [field], "{body}");
    }
    let many: serde_json::Map<String, Value> =
        (0..21).map(|i| (format!("X-H{i}"), json!("v"))).collect();
    let response = app
        .create_server(
            &admin,
            &json!({ "slug": "ok", "name": "n", "headers": many }),
        )
        .await;
    assert_eq!(bad_fields(response).await, ["headers"]);

    let id = app.new_server(&admin, &github()).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let slug = app
        .patch_server(&admin, &id, &json!({ "slug": "other" }))
        .await;
    assert_eq!(bad_fields(slug).await, ["slug"]);
    let to_metadata = app
        .patch_server(&admin, &id, &json!({ "url": "http://169.254.169.254/" }))
        .await;
    assert_eq!(bad_fields(to_metadata).await, ["url"]);
    let got: Value = app.get_server(&admin, &id).await.json().await.unwrap();
    assert_eq!(
        got["url"], "https://93.184.215.14/mcp",
        "a refused PATCH changes nothing"
    );
}

#[tokio::test]
async fn loopback_is_accepted_when_the_operator_allows_it() {
    let app = TestApp::spawn_with(
        registry().with("COLA_GATEWAY_ALLOWED_NETWORKS", "127.0.0.0/8,::1/128"),
    )
    .await;
    let tenant = Tenant::new();
    let admin = app.token(tenant.id, tenant.admin, "admin");
    for (slug, url) in [
        ("v4", "http://127.0.0.1:9000/mcp"),
        ("v6", "http://[::1]:9000/mcp"),
        ("named", "http://localhost:9000/mcp"),
    ] {
        let response = app
            .create_server(&admin, &json!({ "slug": slug, "name": "n", "url": url }))
            .await;
        assert_eq!(response.status(), 201, "{url}");
    }
    let private = app
        .create_server(
            &admin,
            &json!({ "slug": "private", "name": "n", "url": "http://10.0.0.1/" }),
        )
        .await;
    assert_eq!(bad_fields(private).await, ["url"]);
}

#[tokio::test]
async fn without_a_secrets_key_a_server_cannot_hold_headers() {
    let app = TestApp::spawn().await;
    let tenant = Tenant::new();
    let admin = app.token(tenant.id, tenant.admin, "admin");
    let refused = app.create_server(&admin, &github()).await;
    assert_eq!(bad_fields(refused).await, ["headers"]);
    let plain = json!({ "slug": "plain", "name": "n", "url": "https://93.184.215.14/" });
    assert_eq!(app.create_server(&admin, &plain).await.status(), 201);
}

#[tokio::test]
async fn grants_on_keys_name_servers_and_follow_them_not_their_slug() {
    let app = TestApp::spawn_with(registry()).await;
    let tenant = Tenant::new();
    let admin = app.token(tenant.id, tenant.admin, "admin");
    let owner = app.token(tenant.id, tenant.alice, "member");
    let server = app.new_server(&admin, &github()).await;
    let server_id = server["id"].as_str().unwrap().to_owned();
    app.new_server(&admin, &json!({ "slug": "linear", "name": "Linear" }))
        .await;

    let grant = json!({ "allowed_tools": ["search_*", "get_issue"],
                        "allowed_resources": null, "allowed_prompts": null });
    let unknown = app
        .create_key(
            &owner,
            &json!({ "name": "k", "permissions": { "servers": { "nope": {} } } }),
        )
        .await;
    assert_eq!(bad_fields(unknown).await, ["permissions.servers.nope"]);
    let bad_pattern = app
        .create_key(
            &owner,
            &json!({ "name": "k", "permissions": { "servers": {
                "github": { "allowed_tools": ["bad name"] } } } }),
        )
        .await;
    assert_eq!(
        bad_fields(bad_pattern).await,
        ["permissions.servers.github.allowed_tools"]
    );

    let key = app
        .new_key(
            &owner,
            &json!({ "name": "k", "permissions": { "servers": { "github": grant } } }),
        )
        .await;
    let key_id = key["id"].as_str().unwrap().to_owned();
    assert_eq!(key["permissions"]["servers"], json!({ "github": grant }));
    let plain = app.new_key(&owner, &json!({ "name": "plain" })).await;
    assert_eq!(plain["permissions"]["servers"], json!({}));

    // PATCH permissions replaces the grants with the permissions.
    let patched = app
        .patch_permissions(
            &owner,
            &key_id,
            &json!({ "permissions": { "servers": { "github": grant, "linear": {} } } }),
        )
        .await;
    assert_eq!(patched.status(), 200);
    let patched: Value = patched.json().await.unwrap();
    assert_eq!(
        patched["permissions"]["servers"]["linear"],
        json!({ "allowed_tools": null, "allowed_resources": null, "allowed_prompts": null })
    );
    let unknown = app
        .patch_permissions(
            &owner,
            &key_id,
            &json!({ "permissions": { "servers": { "gone": {} } } }),
        )
        .await;
    assert_eq!(bad_fields(unknown).await, ["permissions.servers.gone"]);

    // Deleting the server removes its grants from every key.
    assert_eq!(app.delete_server(&admin, &server_id).await.status(), 204);
    let after: Value = app.get_key(&owner, &key_id).await.json().await.unwrap();
    assert_eq!(
        after["permissions"]["servers"],
        json!({ "linear": { "allowed_tools": null, "allowed_resources": null, "allowed_prompts": null } })
    );
    let trail: Value = app.events(&owner, &key_id).await.json().await.unwrap();
    let last = trail["items"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["type"], "api_key.permissions_updated");
    assert_eq!(last["data"]["removed_server_id"], server_id.as_str());

    // A new server with the same slug is granted by nothing.
    let successor = app.new_server(&admin, &github()).await;
    assert_ne!(successor["id"], server_id.as_str());
    let after: Value = app.get_key(&owner, &key_id).await.json().await.unwrap();
    assert!(after["permissions"]["servers"].get("github").is_none());
}
