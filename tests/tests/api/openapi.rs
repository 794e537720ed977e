//! `GET /api/openapi.json` (README.md, "The management API"): an OpenAPI 3.1 document that
//! matches the routes actually mounted — every documented operation answers
//! on the live server, and the mounted routes are exactly the documented ones.

use std::collections::{BTreeMap, BTreeSet};

use cola_e2e::TestApp;
use reqwest::Method;
use serde_json::{Value, json};

use crate::Tenant;

/// Public routes: no credential, holding a key is the proof.
const PUBLIC: &[&str] = &[
    "/.well-known/jwks.json",
    "/api/mcp/verify",
    "/api/mcp/keys/report",
    "/api/secret-scanning/github",
    "/health",
    "/ready",
];

/// The routes `startup.rs` and `routes::*::configure` mount for the
/// management API and the service surface, as (method, path template).
const MOUNTED: &[(&str, &str)] = &[
    ("POST", "/api/mcp/keys"),
    ("GET", "/api/mcp/keys"),
    ("GET", "/api/mcp/keys/{id}"),
    ("DELETE", "/api/mcp/keys/{id}"),
    ("PATCH", "/api/mcp/keys/{id}/metadata"),
    ("PATCH", "/api/mcp/keys/{id}/permissions"),
    ("GET", "/api/mcp/keys/{id}/events"),
    ("POST", "/api/mcp/keys/{id}/rotate"),
    ("DELETE", "/api/mcp/users/{user_id}/keys"),
    ("POST", "/api/mcp/keys/report"),
    ("POST", "/api/secret-scanning/github"),
    ("POST", "/api/mcp/servers"),
    ("GET", "/api/mcp/servers"),
    ("GET", "/api/mcp/servers/{id}"),
    ("PATCH", "/api/mcp/servers/{id}"),
    ("DELETE", "/api/mcp/servers/{id}"),
    ("POST", "/api/mcp/servers/{id}/token"),
    ("POST", "/api/mcp/verify"),
    ("GET", "/.well-known/jwks.json"),
    ("GET", "/health"),
    ("GET", "/ready"),
];

const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];

async fn document(app: &TestApp) -> Value {
    let response = app
        .client
        .get(format!("{}/api/openapi.json", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "the document is public");
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    response.json().await.unwrap()
}

/// The document's operations: path template → methods.
fn operations(document: &Value) -> BTreeMap<String, BTreeSet<String>> {
    document["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .map(|(path, item)| {
            let methods = item
                .as_object()
                .expect("path item")
                .keys()
                .filter(|key| METHODS.contains(&key.to_ascii_uppercase().as_str()))
                .map(|key| key.to_ascii_uppercase())
                .collect();
            (path.clone(), methods)
        })
        .collect()
}

#[tokio::test]
async fn the_document_is_openapi_3_1_with_the_bearer_jwt_scheme() {
    let app = TestApp::spawn().await;
    let document = document(&app).await;
    assert!(
        document["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        document["openapi"]
    );
    let schemes = document["components"]["securitySchemes"]
        .as_object()
        .unwrap();
    let (name, scheme) = schemes
        .iter()
        .find(|(_, scheme)| scheme["scheme"] == "bearer")
        .expect("a bearer scheme");
    assert_eq!(scheme["type"], "http");
    assert_eq!(scheme["bearerFormat"], "JWT");

    for (path, methods) in operations(&document) {
        for method in methods {
            let operation = &document["paths"][&path][method.to_ascii_lowercase()];
            let secured = operation["security"]
                .as_array()
                .is_some_and(|list| list.iter().any(|entry| entry.get(name).is_some()));
            assert_eq!(
                secured,
                !PUBLIC.contains(&path.as_str()),
                "{method} {path}: the management routes, and only they, need the JWT"
            );
            // Every error a route documents is a problem body.
            for (status, response) in operation["responses"].as_object().unwrap() {
                if status.starts_with('4') || status.starts_with('5') {
                    assert_eq!(
                        response["content"]["application/problem+json"]["schema"]["$ref"],
                        "#/components/schemas/Problem",
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }
    let problem = &document["components"]["schemas"]["Problem"];
    for field in ["type", "title", "status", "detail", "errors"] {
        assert!(problem["properties"][field].is_object(), "Problem.{field}");
    }
}

#[tokio::test]
async fn the_document_lists_exactly_the_mounted_routes_and_each_answers() {
    let app = TestApp::spawn().await;
    let document = document(&app).await;
    let documented = operations(&document);

    let listed: BTreeSet<(String, String)> = documented
        .iter()
        .flat_map(|(path, methods)| methods.iter().map(|m| (m.clone(), path.clone())))
        .collect();
    let expected: BTreeSet<(String, String)> = MOUNTED
        .iter()
        .map(|(method, path)| ((*method).to_owned(), (*path).to_owned()))
        .collect();
    assert_eq!(
        listed, expected,
        "the OpenAPI document and the mounted routes differ"
    );

    // Each documented operation, called validly on a key of the caller's,
    // answers its documented success status: a route missing from the router
    // would be a 404 or a 405 instead.
    let tenant = Tenant::new();
    let token = app.token(tenant.id, tenant.alice, "member");
    let created = app.new_key(&token, &json!({ "name": "openapi" })).await;
    let id = created["id"].as_str().unwrap().to_owned();
    // Servers are changed by admins; their routes act on a server of the
    // tenant (a public address literal: no DNS is needed).
    let admin = app.token(tenant.id, tenant.alice, "admin");
    let upstream = "https://93.184.215.14/mcp";
    let server = app
        .new_server(
            &admin,
            &json!({ "slug": "openapi", "name": "openapi", "url": upstream }),
        )
        .await;
    let server_id = server["id"].as_str().unwrap().to_owned();
    // The verify API takes a server token, not a JWT.
    let minted: Value = app
        .request(
            Method::POST,
            &format!("/api/mcp/servers/{server_id}/token"),
            &admin,
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    let verified = app
        .client
        .post(format!("{}/api/mcp/verify", app.base))
        .bearer_auth(minted["token"].as_str().unwrap())
        .json(&json!({ "key": created["key"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(verified.status(), 200, "POST /api/mcp/verify");

    // A GitHub alert needs GitHub's signature: `report.rs` calls it.
    let mut calls: Vec<(&str, &str)> = MOUNTED
        .iter()
        .copied()
        .filter(|(_, path)| *path != "/api/secret-scanning/github" && *path != "/api/mcp/verify")
        .collect();
    // Rotate, then revoke and offboard last: a revoked key cannot be changed.
    calls.sort_by_key(|(method, path)| (*method == "DELETE", path.ends_with("/rotate")));
    for (method, template) in calls {
        let on_servers = template.starts_with("/api/mcp/servers");
        let path = template
            .replace("{id}", if on_servers { &server_id } else { &id })
            .replace("{user_id}", &tenant.alice.to_string());
        let body = match (method, template) {
            ("POST", "/api/mcp/servers") => {
                Some(json!({ "slug": "openapi-2", "name": "openapi, again", "url": upstream }))
            }
            (_, "/api/mcp/keys/{id}/rotate") => Some(json!({ "grace_period_secs": 60 })),
            (_, "/api/mcp/keys/report") => Some(json!({ "key": "not a key" })),
            ("POST", _) => Some(json!({ "name": "openapi, again" })),
            ("PATCH", _) => Some(json!({})),
            _ => None,
        };
        let response = app
            .request(
                Method::from_bytes(method.as_bytes()).unwrap(),
                &path,
                if on_servers { &admin } else { &token },
                body.as_ref(),
            )
            .await;
        let status = response.status().as_u16().to_string();
        let operation = &document["paths"][template][method.to_ascii_lowercase()];
        let successes: Vec<&String> = operation["responses"]
            .as_object()
            .unwrap()
            .keys()
            .filter(|status| status.starts_with('2'))
            .collect();
        assert_eq!(
            successes,
            [&status],
            "{method} {path} answered {status}, the document says {successes:?}"
        );
    }

    // A method the document does not list for a path is not mounted there.
    let other = uuid::Uuid::new_v4().to_string();
    for (template, methods) in &documented {
        let path = template
            .replace("{id}", &other)
            .replace("{user_id}", &other);
        for method in METHODS.iter().filter(|m| !methods.contains(**m)) {
            let response = app
                .request(
                    Method::from_bytes(method.as_bytes()).unwrap(),
                    &path,
                    &token,
                    None,
                )
                .await;
            let status = response.status().as_u16();
            assert_eq!(status, 405, "{method} {path} is not documented");
            let allow: BTreeSet<String> = response.headers()["allow"]
                .to_str()
                .unwrap()
                .split(',')
                .map(|m| m.trim().to_owned())
                .collect();
            assert_eq!(&allow, methods, "Allow of {path}");
        }
    }
}
