//! Concurrent changes of different fields of one key, on SQLite and on
//! PostgreSQL: each PATCH writes only the fields it names, so two requests
//! that read the key at the same time never undo each other.

use cola_e2e::{Options, TestApp};
use serde_json::{Value, json};

use crate::Tenant;

/// Rounds of one permissions-only PATCH racing one allow-list-only PATCH,
/// each by an admin of its own (management writes are limited per user, and
/// the race is between requests, not users). A PATCH that rewrote the field
/// it does not name, from the key as it read it, loses the other's change in
/// a fair share of the rounds.
const ROUNDS: usize = 40;

async fn racing_patches_of_different_fields_both_take_effect(app: TestApp) {
    let tenant = Tenant::new();
    let owner = app.token(tenant.id, tenant.alice, "member");
    let created = app.new_key(&owner, &json!({ "name": "raced" })).await;
    let id = created["id"].as_str().unwrap();

    for round in 0..ROUNDS {
        let tools = json!([format!("tool-{round}")]);
        let list = json!([format!("10.{round}.0.0/16")]);
        let permissions_only = json!({ "permissions": { "read": true, "allowed_tools": tools } });
        let allow_list_only = json!({ "ip_whitelist": list });
        let first_admin = app.token(tenant.id, uuid::Uuid::new_v4(), "admin");
        let second_admin = app.token(tenant.id, uuid::Uuid::new_v4(), "admin");
        let (permissions, allow_list) = tokio::join!(
            app.patch_permissions(&first_admin, id, &permissions_only),
            app.patch_permissions(&second_admin, id, &allow_list_only),
        );
        assert_eq!(
            (permissions.status().as_u16(), allow_list.status().as_u16()),
            (200, 200),
            "round {round}"
        );
        let stored: Value = app.get_key(&owner, id).await.json().await.unwrap();
        assert_eq!(
            stored["permissions"]["allowed_tools"], tools,
            "round {round}"
        );
        assert_eq!(stored["ip_whitelist"], list, "round {round}");
    }

    // Every change is in the audit trail, each naming only its own field.
    let events: Value = app.events(&owner, id).await.json().await.unwrap();
    let changes: Vec<&Value> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| event["type"] == "api_key.permissions_updated")
        .collect();
    assert_eq!(changes.len(), 2 * ROUNDS);
    for change in changes {
        let fields: Vec<&String> = change["data"].as_object().unwrap().keys().collect();
        assert!(
            fields == ["permissions"] || fields == ["ip_whitelist"],
            "{fields:?}"
        );
    }
}

#[tokio::test]
async fn racing_patches_of_different_fields_both_take_effect_on_sqlite() {
    racing_patches_of_different_fields_both_take_effect(TestApp::spawn().await).await;
}

#[tokio::test]
async fn racing_patches_of_different_fields_both_take_effect_on_postgres() {
    racing_patches_of_different_fields_both_take_effect(
        TestApp::spawn_with(Options::postgres()).await,
    )
    .await;
}
