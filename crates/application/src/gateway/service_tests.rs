//! The gateway use case with fakes of its ports: what it asks the upstream,
//! when, and what it decides — without HTTP on either side.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::Utc;
use cola_domain::{
    ApiKeyId, ApiKeyPermissions, IpWhitelist, KeyName, KeyPrefix, NewServer, RegisteredServer,
    ServerGrant, ServerId, ServerSlug, ServerTimeout, TenantId, UpstreamUrl, UserId,
};
use cola_protocol::{Era, Message, Request};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use uuid::Uuid;
use zeroize::Zeroizing;

use super::*;
use crate::GatewayReply;
use crate::admission::{AttemptLimiter, KeyAdmission};
use crate::auth::{KeyAuthenticator, PresentedKeys, VerifiedKeyCache};
use crate::fakes::{MemoryRepository, MemoryServers};
use crate::ports::{HashError, SecretHash, SecretHasher, SystemClock};
use crate::principal::{AdmittedKey, McpPrincipal};
use crate::servers::ServerDirectory;
use crate::usage::UsageRecorder;

/// An upstream that lists `search` (read-only) and `create_issue`, and
/// answers every call; it counts what it is asked, can refuse to list, and
/// can hold its lists until the test lets them go.
#[derive(Debug, Default)]
struct FakeUpstream {
    lists: AtomicUsize,
    calls: AtomicUsize,
    failing_lists: bool,
    /// When set, each list waits for a permit.
    hold: Option<Semaphore>,
    listing: AtomicUsize,
    seen: Mutex<Vec<Value>>,
}

fn json_answer(body: &Value) -> UpstreamAnswer {
    let bytes = Bytes::from(serde_json::to_vec(body).expect("JSON"));
    UpstreamAnswer {
        status: 200,
        content_type: "application/json".to_owned(),
        session_id: None,
        has_session_header: false,
        body: Box::pin(futures_util::stream::iter([Ok(bytes)])),
    }
}

#[async_trait]
impl Upstream for FakeUpstream {
    async fn send(&self, call: UpstreamCall<'_>) -> Result<UpstreamAnswer, UpstreamFailure> {
        let message: Value =
            serde_json::from_slice(call.body.as_deref().unwrap_or(b"{}")).expect("a message");
        self.seen.lock().expect("seen").push(message.clone());
        let id = message["id"].clone();
        match message["method"].as_str() {
            Some("tools/list") => {
                self.listing.fetch_add(1, Ordering::SeqCst);
                if let Some(hold) = &self.hold {
                    let _permit = hold.acquire().await.expect("permit");
                }
                self.lists.fetch_add(1, Ordering::SeqCst);
                if self.failing_lists {
                    return Err(UpstreamFailure::Unreachable("down".into()));
                }
                Ok(json_answer(
                    &json!({ "jsonrpc": "2.0", "id": id, "result": { "tools": [
                    { "name": "search", "annotations": { "readOnlyHint": true } },
                    { "name": "create_issue" },
                ] } }),
                ))
            }
            _ => {
                self.calls.fetch_add(1, Ordering::SeqCst);
                Ok(json_answer(
                    &json!({ "jsonrpc": "2.0", "id": id, "result": { "content": [] } }),
                ))
            }
        }
    }
}

#[derive(Debug)]
struct NoIdentity;

impl IdentityAsserter for NoIdentity {
    fn assert_identity(
        &self,
        _: &IdentityClaims<'_>,
    ) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
        Ok("signed".to_owned())
    }
}

/// Seals by prefixing the associated data: enough to tell bindings apart.
#[derive(Debug)]
struct PlainSealer;

impl HandleSealer for PlainSealer {
    fn seal_handle(&self, _: HandleKind, associated: &[u8], plaintext: &[u8]) -> Option<Vec<u8>> {
        Some([associated, plaintext].concat())
    }

    fn open_handle(
        &self,
        _: HandleKind,
        associated: &[u8],
        sealed: &[u8],
    ) -> Option<Zeroizing<Vec<u8>>> {
        sealed
            .strip_prefix(associated)
            .map(|plaintext| Zeroizing::new(plaintext.to_vec()))
    }
}

#[derive(Debug)]
struct NoHasher;

#[async_trait]
impl SecretHasher for NoHasher {
    async fn hash(&self, _: &cola_domain::ApiKeySecret) -> Result<SecretHash, HashError> {
        Ok(SecretHash::new("unused".to_owned()))
    }
    async fn verify(
        &self,
        _: &cola_domain::ApiKeySecret,
        _: &SecretHash,
    ) -> Result<bool, HashError> {
        Ok(false)
    }
    async fn verify_dummy(&self, _: &cola_domain::ApiKeySecret) -> Result<(), HashError> {
        Ok(())
    }
}

struct Harness {
    gateway: GatewayService,
    upstream: Arc<FakeUpstream>,
    tenant: TenantId,
    server: RegisteredServer,
}

impl Harness {
    fn new(upstream: FakeUpstream) -> Self {
        let tenant = TenantId::from_uuid(Uuid::now_v7());
        let server = RegisteredServer::register(
            NewServer {
                id: ServerId::from_uuid(Uuid::now_v7()),
                tenant_id: tenant,
                slug: ServerSlug::parse("github").expect("slug"),
                name: KeyName::parse("GitHub").expect("name"),
                url: Some(UpstreamUrl::restore("http://upstream.example/mcp").expect("url")),
                header_names: Vec::new(),
                forward_identity: false,
                timeout: ServerTimeout::default(),
            },
            UserId::from_uuid(Uuid::now_v7()),
            Utc::now(),
        )
        .0;
        let servers = Arc::new(MemoryServers::default());
        servers.add(server.clone());
        let repository = Arc::new(MemoryRepository::default());
        let cache = Arc::new(VerifiedKeyCache::new(Duration::from_secs(30)).expect("cache"));
        let admission = Arc::new(KeyAdmission::new(Arc::new(KeyAuthenticator::new(
            PresentedKeys::new(repository, Arc::new(NoHasher)),
            Arc::new(SystemClock),
            Arc::clone(&cache),
            Arc::new(UsageRecorder::new()),
            Arc::new(AttemptLimiter::new(20)),
        ))));
        let upstream = Arc::new(upstream);
        let gateway = GatewayService::new(GatewayParts {
            directory: Arc::new(ServerDirectory::new(servers, None)),
            handles: Handles::new(Arc::new(PlainSealer)),
            inflight: TenantInflight::new(64),
            keys: cache,
            admission,
            identity: Arc::new(NoIdentity),
            public_url: "http://cola.example".to_owned(),
            upstream: Arc::clone(&upstream) as Arc<dyn Upstream>,
        });
        Self {
            gateway,
            upstream,
            tenant,
            server,
        }
    }

    /// A key of the tenant that reads (not writes), granted the server
    /// when `granted`.
    fn reader(&self, granted: bool) -> McpPrincipal {
        let grants = if granted {
            vec![
                ServerGrant::new(
                    self.server.id(),
                    self.server.slug().clone(),
                    None,
                    None,
                    None,
                )
                .expect("a grant"),
            ]
        } else {
            Vec::new()
        };
        let permissions = ApiKeyPermissions::new(true, false, None, None)
            .expect("permissions")
            .with_servers(grants);
        McpPrincipal::new(AdmittedKey {
            key_id: ApiKeyId::from_uuid(Uuid::now_v7()),
            tenant_id: self.tenant,
            owner: UserId::from_uuid(Uuid::now_v7()),
            prefix: KeyPrefix::parse("cola_abcdefghijkl").expect("prefix"),
            permissions,
            ip_whitelist: IpWhitelist::default(),
            rate_limit: None,
            expires_at: Utc::now() + chrono::Duration::days(1),
        })
    }

    async fn call(&self, principal: McpPrincipal, tool: &str) -> Relayed {
        let route = self
            .gateway
            .open(principal, "github")
            .await
            .expect("a route");
        let message = Message::Request(Request {
            era: Era::Handshake,
            id: json!(1),
            method: "tools/call".to_owned(),
            params: json!({ "name": tool, "arguments": {} }),
        });
        route.forward(&ClientHeaders::default(), message).await.1
    }
}

#[tokio::test]
async fn an_unknown_catalogue_is_fetched_once_and_the_call_decided_on_it() {
    let harness = Harness::new(FakeUpstream::default());
    let reader = harness.reader(true);
    let allowed = harness.call(reader.clone(), "search").await;
    assert_eq!(allowed.outcome, "relayed");
    let refused = harness.call(reader, "create_issue").await;
    assert_eq!(refused.outcome, "hidden");
    // One read of the catalogue served both decisions; only the allowed
    // call reached the upstream.
    assert_eq!(harness.upstream.lists.load(Ordering::SeqCst), 1);
    assert_eq!(harness.upstream.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_call_whose_catalogue_cannot_be_read_is_refused_and_never_sent() {
    let harness = Harness::new(FakeUpstream {
        failing_lists: true,
        ..FakeUpstream::default()
    });
    let relayed = harness.call(harness.reader(true), "search").await;
    assert_eq!(relayed.outcome, "catalogue_unavailable");
    let GatewayReply::Refused { error, .. } = relayed.reply else {
        panic!("a refusal");
    };
    assert_eq!(error.status, 502);
    assert_eq!(harness.upstream.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_key_without_a_grant_on_the_server_gets_no_route() {
    let harness = Harness::new(FakeUpstream::default());
    let closed = harness
        .gateway
        .open(harness.reader(false), "github")
        .await
        .expect_err("no route");
    assert_eq!(closed.outcome, "unknown_server");
    assert_eq!(closed.error.status, 404);
    let unknown = harness
        .gateway
        .open(harness.reader(true), "gitlab")
        .await
        .expect_err("no route");
    assert_eq!(
        unknown.error, closed.error,
        "an ungranted server is an unknown slug"
    );
    assert!(harness.upstream.seen.lock().expect("seen").is_empty());
}

#[tokio::test]
async fn concurrent_first_calls_wait_for_one_catalogue_fetch() {
    let harness = Arc::new(Harness::new(FakeUpstream {
        hold: Some(Semaphore::new(0)),
        ..FakeUpstream::default()
    }));
    let calls: Vec<_> = (0..5)
        .map(|_| {
            let harness = Arc::clone(&harness);
            tokio::spawn(async move { harness.call(harness.reader(true), "search").await.outcome })
        })
        .collect();
    // The first fetch is under way; the other calls wait for it.
    while harness.upstream.listing.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    harness
        .upstream
        .hold
        .as_ref()
        .expect("held")
        .add_permits(100);
    for call in calls {
        assert_eq!(call.await.expect("a call"), "relayed");
    }
    assert_eq!(harness.upstream.lists.load(Ordering::SeqCst), 1);
    assert_eq!(harness.upstream.calls.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn a_message_goes_upstream_under_colas_own_id_and_comes_back_under_the_clients() {
    let harness = Harness::new(FakeUpstream::default());
    let route = harness
        .gateway
        .open(harness.reader(true), "github")
        .await
        .expect("a route");
    let message = Message::Request(Request {
        era: Era::Handshake,
        id: json!(9_007_199_254_740_993_u64),
        method: "tools/list".to_owned(),
        params: json!({}),
    });
    let (_, relayed) = route.forward(&ClientHeaders::default(), message).await;
    let GatewayReply::Json { body, .. } = relayed.reply else {
        panic!("a JSON answer");
    };
    let answer: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(answer["id"], json!(9_007_199_254_740_993_u64));
    assert_eq!(
        answer["result"]["tools"],
        json!([{ "name": "search", "annotations": { "readOnlyHint": true } }])
    );
    let sent = harness.upstream.seen.lock().expect("seen")[0].clone();
    assert_eq!(sent["id"], "cola:9007199254740993");
}
