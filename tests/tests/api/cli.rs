//! The `cola-api` subcommands, run as an operator would.

use std::process::{Command, Output};

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(cola_e2e::binary());
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (name, value) in env {
        command.env(name, value);
    }
    command.args(args).output().expect("run cola-api")
}

#[test]
fn check_config_names_every_bad_variable_and_fails() {
    let output = run(
        &["check-config"],
        &[
            ("COLA_JWT_SECRET", "too-short"),
            ("COLA_LISTEN", "nowhere"),
            ("COLA_MAX_ACTIVE_KEYS_PER_USER", "many"),
            ("COLA_TRUSTED_PROXIES", "10.0.0.0/8,bogus"),
            ("COLA_LOG_FORMAT", "xml"),
        ],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    for name in [
        "COLA_JWT_SECRET",
        "COLA_LISTEN",
        "COLA_MAX_ACTIVE_KEYS_PER_USER",
        "COLA_TRUSTED_PROXIES",
        "COLA_LOG_FORMAT",
    ] {
        let lines = stderr.lines().filter(|line| line.contains(name)).count();
        assert_eq!(lines, 1, "{name} is named on one line:\n{stderr}");
    }
    assert!(
        !stderr.contains("too-short"),
        "a rejected secret is not echoed"
    );
}

#[test]
fn check_config_prints_the_effective_settings_with_secrets_masked() {
    let secret = "0123456789abcdef0123456789abcdef-secret";
    let output = run(
        &["check-config"],
        &[
            ("COLA_JWT_SECRET", secret),
            ("COLA_DATABASE_URL", "postgres://cola:hunter2@db:5432/cola"),
        ],
    );
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("COLA_LISTEN=127.0.0.1:8080"));
    assert!(stdout.contains("COLA_MAX_ACTIVE_KEYS_PER_USER=25"));
    assert!(!stdout.contains(secret) && !stdout.contains("hunter2"));
}

#[test]
fn check_config_masks_a_password_in_the_query_string() {
    // libpq takes the password as a URL parameter too.
    let output = run(
        &["check-config"],
        &[(
            "COLA_DATABASE_URL",
            "postgres://cola@db:5432/cola?sslmode=require&password=hunter2",
        )],
    );
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!stdout.contains("hunter2"), "{stdout}");
    assert!(
        stdout.contains(
            "COLA_DATABASE_URL=postgres://cola@db:5432/cola?sslmode=require&password=****"
        ),
        "{stdout}"
    );
}

#[test]
fn every_subcommand_answers_help() {
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["migrate", "--help"],
        vec!["dev-token", "--help"],
        vec!["check-config", "--help"],
    ] {
        let output = run(&args, &[]);
        assert!(output.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&output.stdout).contains("Usage"),
            "{args:?}"
        );
    }
}

#[test]
fn dev_token_without_a_secret_explains_how_to_get_one() {
    // An empty directory: no `.cola-dev-secret` from an earlier `--dev`.
    let dir = std::env::temp_dir().join(format!("cola-cli-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let output = Command::new(cola_e2e::binary())
        .env_clear()
        .current_dir(&dir)
        .arg("dev-token")
        .output()
        .expect("run");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("COLA_JWT_SECRET"));
}

#[test]
fn migrate_applies_and_lists_the_migrations() {
    let dir = std::env::temp_dir().join(format!("cola-migrate-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}/cola.db?mode=rwc", dir.display());
    let output = run(&["migrate"], &[("COLA_DATABASE_URL", &url)]);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let applied = stdout
        .lines()
        .filter(|line| line.starts_with("applied"))
        .count();
    // Every migration the crate ships is applied on a fresh database: the
    // list is read from the migration sources so a new one needs no edit here.
    let sources = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migration/src");
    let mut shipped: Vec<String> = std::fs::read_dir(&sources)
        .expect("migration sources")
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| name.starts_with('m') && name.ends_with(".rs"))
        .map(|name| name.trim_end_matches(".rs").to_owned())
        .collect();
    shipped.sort();
    assert!(shipped.len() >= 8, "{shipped:?}");
    assert_eq!(applied, shipped.len(), "{stdout}");
    for migration in &shipped {
        assert!(stdout.contains(migration.as_str()), "{stdout}");
    }
}

#[test]
fn dev_token_names_an_id_that_is_not_a_uuid_in_words() {
    let output = run(
        &["dev-token", "--user", "bob"],
        &[("COLA_JWT_SECRET", "0123456789abcdef0123456789abcdef")],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--user"), "{stderr}");
    assert!(stderr.contains("must be a UUID"), "{stderr}");
}

/// A port nobody listens on right now (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

#[tokio::test]
async fn port_chooses_where_the_service_listens() {
    let port = free_port();
    let app = cola_e2e::TestApp::spawn_with(cola_e2e::Options {
        args: vec!["--port".to_owned(), port.to_string()],
        ..cola_e2e::Options::default()
    })
    .await;
    assert_eq!(app.address(), format!("127.0.0.1:{port}"));
    let health = reqwest::get(format!("http://127.0.0.1:{port}/health"))
        .await
        .expect("health");
    assert_eq!(health.status(), 200);
}

#[test]
fn an_address_in_use_says_how_to_choose_another() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("address").port().to_string();
    let dir = std::env::temp_dir().join(format!("cola-in-use-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}/cola.db?mode=rwc", dir.display());
    let output = run(
        &["--port", &port],
        &[
            ("COLA_DATABASE_URL", &url),
            ("COLA_JWT_SECRET", "0123456789abcdef0123456789abcdef"),
        ],
    );
    drop(taken);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    assert!(stderr.contains("already in use"), "{stderr}");
    assert!(stderr.contains("--port"), "{stderr}");
    assert!(stderr.contains("COLA_LISTEN"), "{stderr}");
}

#[test]
fn check_config_dev_shows_what_dev_would_use_and_writes_nothing() {
    let dir =
        std::env::temp_dir().join(format!("cola-check-dev-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let output = Command::new(cola_e2e::binary())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(&dir)
        .args(["check-config", "--dev", "--port", "8090"])
        .output()
        .expect("run cola-api");
    let written = std::fs::read_dir(&dir).unwrap().count();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!stdout.contains("management API disabled"), "{stdout}");
    assert!(stdout.contains("JWT=an HS256 secret"), "{stdout}");
    assert!(stdout.contains(".cola-dev-secret"), "{stdout}");
    assert!(stdout.contains("COLA_LISTEN=127.0.0.1:8090"), "{stdout}");
    assert!(
        stdout.contains("COLA_GATEWAY_ALLOWED_NETWORKS=127.0.0.0/8"),
        "{stdout}"
    );
    assert_eq!(written, 0, "check-config wrote files");
}
