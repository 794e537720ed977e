//! The end-to-end harness: starts the real `cola-api` binary on a free port
//! with a fresh database, and talks to it over HTTP only — as a user would.
//!
//! The binary is the `cola-api` Cargo built for the run (or `$COLA_BIN`).
//! PostgreSQL comes from `$COLA_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`); each app gets a database of
//! its own, dropped afterwards.

#![allow(clippy::missing_panics_doc, clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use chrono::Utc;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Method, Response};
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};
use uuid::Uuid;

pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// How to start an app.
#[derive(Debug, Clone)]
pub struct Options {
    pub backend: Backend,
    pub env: HashMap<String, String>,
    /// Reach PostgreSQL through this local port (a [`Forwarder`]) instead.
    pub postgres_port: Option<u16>,
    /// Command-line arguments (`--dev`).
    pub args: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            backend: Backend::Sqlite,
            env: HashMap::new(),
            postgres_port: None,
            args: Vec::new(),
        }
    }
}

impl Options {
    #[must_use]
    pub fn postgres() -> Self {
        Self {
            backend: Backend::Postgres,
            ..Self::default()
        }
    }

    /// PostgreSQL, reached through `forwarder` so a test can cut it off.
    #[must_use]
    pub fn postgres_through(forwarder: &Forwarder) -> Self {
        Self {
            backend: Backend::Postgres,
            postgres_port: Some(forwarder.port),
            ..Self::default()
        }
    }

    /// Adds a command-line argument.
    #[must_use]
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_owned());
        self
    }

    #[must_use]
    pub fn with(mut self, name: &str, value: &str) -> Self {
        self.env.insert(name.to_owned(), value.to_owned());
        self
    }
}

/// The path of the `cola-api` binary under test: `$COLA_BIN`, else the one
/// Cargo built for this run. The suite is the `cola-api` package's
/// integration test, so Cargo builds the binary first and names it in
/// `CARGO_BIN_EXE_cola-api` (whatever the target directory or profile).
#[must_use]
pub fn binary() -> PathBuf {
    std::env::var_os("COLA_BIN")
        .or_else(|| std::env::var_os("CARGO_BIN_EXE_cola-api"))
        .map(PathBuf::from)
        .expect(
            "run the suite with `cargo test --workspace` (Cargo names the binary) or set COLA_BIN",
        )
}

/// A fresh PostgreSQL database, dropped with the app. Fails loudly when
/// PostgreSQL is unreachable: a skipped PostgreSQL suite is a failed run.
#[derive(Debug)]
pub struct PostgresDatabase {
    admin_url: String,
    pub name: String,
    pub url: String,
}

impl PostgresDatabase {
    pub async fn create() -> Self {
        let admin_url =
            std::env::var("COLA_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.into());
        let name = format!("cola_test_{}", Uuid::new_v4().simple());
        let admin = sea_orm::Database::connect(&admin_url)
            .await
            .unwrap_or_else(|e| {
                panic!("PostgreSQL at {admin_url} is unreachable ({e}); set COLA_TEST_POSTGRES_URL")
            });
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        let _ = admin.close().await;
        let base = admin_url
            .rsplit_once('/')
            .map_or(admin_url.as_str(), |(base, _)| base);
        let url = format!("{base}/{name}");
        Self {
            admin_url,
            name,
            url,
        }
    }

    /// The database's URL with its host and port replaced by 127.0.0.1:`port`.
    #[must_use]
    pub fn url_through(&self, port: u16) -> String {
        let (scheme, rest) = self.url.split_once("://").unwrap();
        let (authority, path) = rest.split_once('/').unwrap();
        let user = authority
            .rsplit_once('@')
            .map(|(user, _)| format!("{user}@"))
            .unwrap_or_default();
        format!("{scheme}://{user}127.0.0.1:{port}/{path}")
    }

    fn drop_now(&self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop runs outside any runtime guarantee; use a short-lived one.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let admin = sea_orm::Database::connect(&admin_url).await.ok()?;
                admin
                    .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .ok()?;
                admin.close().await.ok()
            })
        })
        .join();
    }
}

/// A running `cola-api` process and a client for it.
#[derive(Debug)]
pub struct TestApp {
    pub base: String,
    pub jwt_secret: String,
    pub client: reqwest::Client,
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
    postgres: Option<PostgresDatabase>,
    sqlite_dir: Option<PathBuf>,
    pub database_url: String,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(Options::default()).await
    }

    pub async fn spawn_with(options: Options) -> Self {
        let (postgres, sqlite_dir, database_url) = match options.backend {
            Backend::Sqlite => {
                let dir =
                    std::env::temp_dir().join(format!("cola-e2e-{}", Uuid::new_v4().simple()));
                std::fs::create_dir_all(&dir).expect("temp dir");
                let url = format!("sqlite://{}/cola.db?mode=rwc", dir.display());
                (None, Some(dir), url)
            }
            Backend::Postgres => {
                let database = PostgresDatabase::create().await;
                let url = match options.postgres_port {
                    Some(port) => database.url_through(port),
                    None => database.url.clone(),
                };
                (Some(database), None, url)
            }
        };
        let jwt_secret = format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
        Self::start(
            &options.args,
            options.env,
            database_url,
            jwt_secret,
            postgres,
            sqlite_dir,
        )
    }

    /// Starts another process on the same database (and JWT secret).
    pub fn spawn_sibling(&self, env: HashMap<String, String>) -> Self {
        self.spawn_sibling_with(&[], env)
    }

    /// As [`Self::spawn_sibling`], with command-line arguments (`--dev`).
    pub fn spawn_sibling_with(&self, args: &[&str], env: HashMap<String, String>) -> Self {
        let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
        Self::start(
            &args,
            env,
            self.database_url.clone(),
            self.jwt_secret.clone(),
            None,
            None,
        )
    }

    fn start(
        args: &[String],
        env: HashMap<String, String>,
        database_url: String,
        jwt_secret: String,
        postgres: Option<PostgresDatabase>,
        sqlite_dir: Option<PathBuf>,
    ) -> Self {
        let mut command = Command::new(binary());
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("COLA_LISTEN", "127.0.0.1:0")
            .env("COLA_DATABASE_URL", &database_url)
            .env("COLA_JWT_SECRET", &jwt_secret)
            .env("COLA_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .env("COLA_USAGE_FLUSH_INTERVAL_MS", "100");
        for (name, value) in &env {
            command.env(name, value);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start cola-api");
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (address_tx, address_rx) = mpsc::channel::<Option<String>>();
        {
            let logs = Arc::clone(&logs);
            std::thread::spawn(move || {
                let mut address_tx = Some(address_tx);
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Some(tx) = &address_tx
                        && let Ok(event) = serde_json::from_str::<Value>(&line)
                        && event["message"] == "cola-api listening"
                    {
                        let _ = tx.send(event["address"].as_str().map(str::to_owned));
                        address_tx = None;
                    }
                    logs.lock().unwrap().push(line);
                }
                if let Some(tx) = address_tx {
                    let _ = tx.send(None);
                }
            });
        }
        let address = address_rx
            .recv_timeout(Duration::from_secs(60))
            .ok()
            .flatten()
            .unwrap_or_else(|| {
                panic!(
                    "cola-api did not start; its log:\n{}",
                    logs.lock().unwrap().join("\n")
                )
            });
        Self {
            base: format!("http://{address}"),
            jwt_secret,
            client: reqwest::Client::new(),
            child,
            logs,
            postgres,
            sqlite_dir,
            database_url,
        }
    }

    /// Every log line written so far.
    #[must_use]
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Sends SIGTERM and waits for the process to exit; returns its status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal("TERM")
    }

    /// Sends SIGINT (what Ctrl-C sends) and waits for the process to exit;
    /// returns its status.
    pub fn interrupt(&mut self) -> std::process::ExitStatus {
        self.signal("INT")
    }

    /// Sends the signal `name` (`TERM`, `INT`, …) and waits for the process
    /// to exit.
    pub fn signal(&mut self, name: &str) -> std::process::ExitStatus {
        self.send_signal(name);
        self.wait()
    }

    /// Sends the signal `name` (`TERM`, `INT`, …) without waiting.
    pub fn send_signal(&self, name: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status();
    }

    /// Waits for the process to exit; returns its status.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        self.child.wait().expect("wait for cola-api")
    }

    /// The address the app listens on.
    #[must_use]
    pub fn address(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    /// A management JWT for `user` of `tenant`.
    #[must_use]
    pub fn token(&self, tenant: Uuid, user: Uuid, role: &str) -> String {
        sign(
            &self.jwt_secret,
            &json!({
                "sub": user.to_string(),
                "tenant_id": tenant.to_string(),
                "role": role,
                "exp": Utc::now().timestamp() + 3600,
            }),
        )
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> Response {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(body);
        }
        request.send().await.expect("request")
    }

    pub async fn create_key(&self, token: &str, body: &Value) -> Response {
        self.request(Method::POST, "/api/mcp/keys", token, Some(body))
            .await
    }

    /// Creates a key that must succeed; returns the whole response body.
    pub async fn new_key(&self, token: &str, body: &Value) -> Value {
        let response = self.create_key(token, body).await;
        assert_eq!(response.status(), 201, "create failed");
        response.json().await.expect("json")
    }

    pub async fn list_keys(&self, token: &str, query: &str) -> Response {
        self.request(Method::GET, &format!("/api/mcp/keys{query}"), token, None)
            .await
    }

    pub async fn get_key(&self, token: &str, id: &str) -> Response {
        self.request(Method::GET, &format!("/api/mcp/keys/{id}"), token, None)
            .await
    }

    pub async fn patch_metadata(&self, token: &str, id: &str, body: &Value) -> Response {
        self.request(
            Method::PATCH,
            &format!("/api/mcp/keys/{id}/metadata"),
            token,
            Some(body),
        )
        .await
    }

    pub async fn patch_permissions(&self, token: &str, id: &str, body: &Value) -> Response {
        self.request(
            Method::PATCH,
            &format!("/api/mcp/keys/{id}/permissions"),
            token,
            Some(body),
        )
        .await
    }

    pub async fn revoke(&self, token: &str, id: &str) -> Response {
        self.request(Method::DELETE, &format!("/api/mcp/keys/{id}"), token, None)
            .await
    }

    pub async fn events(&self, token: &str, id: &str) -> Response {
        self.request(
            Method::GET,
            &format!("/api/mcp/keys/{id}/events"),
            token,
            None,
        )
        .await
    }

    /// `POST /api/mcp/keys/{id}/rotate` with `body`.
    pub async fn rotate(&self, token: &str, id: &str, body: &Value) -> Response {
        self.request(
            Method::POST,
            &format!("/api/mcp/keys/{id}/rotate"),
            token,
            Some(body),
        )
        .await
    }

    /// `DELETE /api/mcp/users/{user}/keys`.
    pub async fn offboard(&self, token: &str, user: &str) -> Response {
        self.request(
            Method::DELETE,
            &format!("/api/mcp/users/{user}/keys"),
            token,
            None,
        )
        .await
    }

    pub async fn create_server(&self, token: &str, body: &Value) -> Response {
        self.request(Method::POST, "/api/mcp/servers", token, Some(body))
            .await
    }

    /// Registers a server that must succeed; returns the server resource.
    pub async fn new_server(&self, token: &str, body: &Value) -> Value {
        let response = self.create_server(token, body).await;
        assert_eq!(response.status(), 201, "register failed");
        response.json().await.expect("json")
    }

    pub async fn get_server(&self, token: &str, id: &str) -> Response {
        self.request(Method::GET, &format!("/api/mcp/servers/{id}"), token, None)
            .await
    }

    pub async fn list_servers(&self, token: &str, query: &str) -> Response {
        self.request(
            Method::GET,
            &format!("/api/mcp/servers{query}"),
            token,
            None,
        )
        .await
    }

    /// `POST /api/mcp/keys/report` with `body`, without any credential.
    pub async fn report(&self, body: &Value) -> Response {
        self.client
            .post(format!("{}/api/mcp/keys/report", self.base))
            .json(body)
            .send()
            .await
            .expect("report request")
    }

    /// The types of a key's audit events, oldest first, with their data.
    pub async fn event_log(&self, token: &str, id: &str) -> Vec<(String, Value)> {
        let events: Value = self.events(token, id).await.json().await.expect("json");
        events["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|event| (event["type"].as_str().unwrap().to_owned(), event.clone()))
            .collect()
    }

    pub async fn patch_server(&self, token: &str, id: &str, body: &Value) -> Response {
        self.request(
            Method::PATCH,
            &format!("/api/mcp/servers/{id}"),
            token,
            Some(body),
        )
        .await
    }

    pub async fn delete_server(&self, token: &str, id: &str) -> Response {
        self.request(
            Method::DELETE,
            &format!("/api/mcp/servers/{id}"),
            token,
            None,
        )
        .await
    }

    /// The text of `GET /metrics`.
    pub async fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("metrics request")
            .text()
            .await
            .expect("metrics text")
    }

    /// Calls the `whoami` tool with `key`; returns the HTTP status.
    pub async fn whoami(&self, key: &str) -> u16 {
        self.mcp(
            key,
            "tools/call",
            &json!({ "name": "whoami", "arguments": {} }),
        )
        .await
        .status()
        .as_u16()
    }

    /// A handshake-era JSON-RPC call to `/mcp` with `key`.
    pub async fn mcp(&self, key: &str, method: &str, params: &Value) -> Response {
        self.client
            .post(format!("{}/mcp", self.base))
            .bearer_auth(key)
            .header("mcp-protocol-version", "2025-11-25")
            .json(&json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params }))
            .send()
            .await
            .expect("mcp request")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(database) = &self.postgres {
            database.drop_now();
        }
        if let Some(dir) = &self.sqlite_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Signs `claims` as an HS256 JWT.
#[must_use]
pub fn sign(secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign")
}

/// A well-formed key (right length, base62, valid checksum as the contract
/// defines it) with the same prefix as `key` and a different secret part: it
/// passes the format check and fails only at verification.
#[must_use]
pub fn same_prefix_wrong_secret(key: &str) -> String {
    const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let body = &key[..35];
    let last = body.as_bytes()[34];
    let replacement = if last == b'a' { 'b' } else { 'a' };
    let body = format!("{}{replacement}", &body[..34]);
    let mut value = crc32fast::hash(body.as_bytes());
    let mut digits = [b'0'; 6];
    for digit in digits.iter_mut().rev() {
        *digit = BASE62[(value % 62) as usize];
        value /= 62;
    }
    format!("{body}{}", String::from_utf8_lossy(&digits))
}

/// Polls `check` until it returns `Some`, for at most `deadline`. For
/// outcomes that become true at a moment the test does not control (a flush,
/// an expiry); never a substitute for a response the test can wait on.
pub async fn eventually<T, F, Fut>(deadline: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = std::time::Instant::now();
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if start.elapsed() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The address of the PostgreSQL server the tests use.
#[must_use]
pub fn postgres_address() -> String {
    let admin_url =
        std::env::var("COLA_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.into());
    let rest = admin_url
        .split_once("://")
        .map_or(admin_url.as_str(), |(_, rest)| rest);
    let authority = rest
        .split_once('/')
        .map_or(rest, |(authority, _)| authority);
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host)
        .to_owned()
}

/// A TCP forwarder in front of a server (PostgreSQL), that a test can cut —
/// every open connection closed, new ones refused — and restore: a database
/// outage without touching the database. Its tasks run on the test's runtime,
/// which must be multi-threaded (the harness blocks while a process starts).
#[derive(Debug)]
pub struct Forwarder {
    pub port: u16,
    cut: Arc<std::sync::atomic::AtomicBool>,
    connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    acceptor: tokio::task::JoinHandle<()>,
}

impl Forwarder {
    pub async fn start(upstream: String) -> Self {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind forwarder");
        let port = listener.local_addr().expect("address").port();
        let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let acceptor = {
            let (cut, connections) = (Arc::clone(&cut), Arc::clone(&connections));
            tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if cut.load(Ordering::Acquire) {
                        drop(inbound);
                        continue;
                    }
                    let upstream = upstream.clone();
                    let task = tokio::spawn(async move {
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    connections.lock().unwrap().push(task.abort_handle());
                }
            })
        };
        Self {
            port,
            cut,
            connections,
            acceptor,
        }
    }

    /// Closes every open connection and refuses new ones.
    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::Release);
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    pub fn restore(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::Release);
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.acceptor.abort();
        self.cut();
    }
}

/// A fresh `COLA_SECRETS_KEY`: the base64 of 32 random bytes.
#[must_use]
pub fn secrets_key() -> String {
    use base64::Engine;
    let mut bytes = Vec::with_capacity(32);
    bytes.extend_from_slice(Uuid::new_v4().as_bytes());
    bytes.extend_from_slice(Uuid::new_v4().as_bytes());
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A well-formed key nobody issued: `cola_`, 30 random base62 characters and
/// their checksum as the contract defines it. It passes the format check and
/// fails only at verification (unknown prefix).
#[must_use]
pub fn unknown_well_formed_key() -> String {
    const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let random: Vec<u8> = [Uuid::new_v4(), Uuid::new_v4()]
        .iter()
        .flat_map(|id| id.into_bytes())
        .collect();
    let body: String = random[..30]
        .iter()
        .map(|byte| BASE62[usize::from(*byte) % 62] as char)
        .collect();
    let body = format!("cola_{body}");
    let mut checksum = crc32fast::hash(body.as_bytes());
    let mut digits = [b'0'; 6];
    for digit in digits.iter_mut().rev() {
        *digit = BASE62[(checksum % 62) as usize];
        checksum /= 62;
    }
    format!("{body}{}", String::from_utf8_lossy(&digits))
}
