//! Relaying an upstream's answer to the client as the key may see it: a JSON
//! answer whole, an SSE stream event by event as each arrives (never
//! buffered), with list results filtered and notifications about hidden
//! resources dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use cola_domain::{ServerId, Surface, SurfaceScope};
use cola_protocol::era::{META_RELATED_TASK, META_SUBSCRIPTION_ID};
use cola_protocol::sse::sse_lines;
use cola_protocol::{RawMessage, RpcError};
use eventsource_stream::{Event, Eventsource};
use futures_util::{Stream, StreamExt};
use serde_json::Value;

use super::answer::{Expected, Unrelayable, answer as relayed_answer};
use super::handles::Handles;
use super::ports::{Binding, HandleKind};
use crate::admission::KeyAdmission;
use crate::auth::KeyChanges;
use crate::principal::McpPrincipal;

/// A quiet stream gets a comment this often, so that proxies and clients
/// with read timeouts keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How one exchange's upstream messages are seen through its key.
#[derive(Debug, Clone)]
pub struct Lens {
    pub principal: McpPrincipal,
    pub server: ServerId,
    /// The server's slug, for the error that stands in for an answer
    /// Cola cannot relay.
    pub slug: String,
    /// The client's request this exchange carried upstream: its answer is
    /// the one answer relayed. `None` on a session's GET stream and for a
    /// notification, where no answer is expected and none passes.
    pub expected: Option<Expected>,
    /// Whether the answer may name ids the upstream minted for Cola (a task
    /// of a `tools/call` or a task method, the subscription a listen stream
    /// closes): they are put as the client must see them.
    pub answer_names_ids: bool,
    /// Seals task ids for this key and server.
    pub handles: Handles,
    pub binding: Binding,
}

/// What becomes of one upstream message.
#[derive(Debug, PartialEq, Eq)]
pub enum Shown {
    /// Relayed as the upstream wrote it.
    Unchanged,
    /// Relayed as this text.
    Rewritten(String),
    /// Not relayed.
    Dropped,
    /// The answer is a list too large to filter: an error stands in for it.
    TooLarge,
}

impl Lens {
    /// One JSON-RPC message from the upstream (its raw text) as the key may
    /// see it. Without a scope on the server (the key lost its grant)
    /// nothing is shown.
    pub fn message(&self, text: &str) -> Shown {
        let Some(scope) = self
            .principal
            .key()
            .permissions
            .scope_on(Surface::Server(self.server))
        else {
            return Shown::Dropped;
        };
        let Some(message) = RawMessage::parse(text) else {
            return Shown::Dropped;
        };
        if let Some(method) = message.get("method") {
            return self.servers_own(text, method.get(), &scope);
        }
        let Some(expected) = &self.expected else {
            return Shown::Dropped;
        };
        match relayed_answer(&message, text.len(), expected, &scope) {
            Ok(answer) if self.answer_names_ids => match self.rewrite_ids(&answer, "result") {
                Shown::Unchanged => Shown::Rewritten(answer),
                rewritten => rewritten,
            },
            Ok(answer) => Shown::Rewritten(answer),
            Err(Unrelayable::TooLarge) => Shown::TooLarge,
            Err(Unrelayable::NotAResponse | Unrelayable::Unmatched) => Shown::Dropped,
        }
    }

    /// A notification or request of the server's own: one about a resource
    /// the key may not read is dropped, as the resource is hidden; task and
    /// subscription ids in it are the client's to see.
    fn servers_own(&self, text: &str, method: &str, scope: &SurfaceScope<'_>) -> Shown {
        if method == "\"notifications/resources/updated\"" {
            let uri = serde_json::from_str::<Value>(text)
                .ok()
                .and_then(|message| message["params"]["uri"].as_str().map(str::to_owned));
            if !uri.is_some_and(|uri| scope.may_read_resource(&uri)) {
                return Shown::Dropped;
            }
        }
        self.rewrite_ids(text, "params")
    }

    /// `text` with the ids in its `part` (`result` or `params`) that the
    /// upstream minted for Cola put as the client must see them: a task id
    /// sealed for this key and server, a listen stream's subscription id
    /// back to the client's request id. A message naming a subscription
    /// Cola did not open is dropped. Messages that name neither are not
    /// parsed, and are `Unchanged`.
    fn rewrite_ids(&self, text: &str, part: &str) -> Shown {
        let names_ids = text.contains("taskId")
            || text.contains(META_SUBSCRIPTION_ID)
            || text.contains(META_RELATED_TASK);
        if !names_ids {
            return Shown::Unchanged;
        }
        let Ok(mut message) = serde_json::from_str::<Value>(text) else {
            return Shown::Dropped;
        };
        let Some(object) = message.get_mut(part) else {
            return Shown::Unchanged;
        };
        if self.seal_tasks(object).is_none() || self.own_subscription(object).is_none() {
            return Shown::Dropped;
        }
        serde_json::to_string(&message).map_or(Shown::Dropped, Shown::Rewritten)
    }

    /// Seals every task id `object` carries: its own (`taskId`, a task's
    /// fields), a created task's (`task.taskId`) and the related task of
    /// its `_meta`. `None` when one cannot be sealed.
    fn seal_tasks(&self, object: &mut Value) -> Option<()> {
        let places = [
            vec!["taskId"],
            vec!["task", "taskId"],
            vec!["_meta", META_RELATED_TASK, "taskId"],
        ];
        for place in places {
            let Some(Value::String(id)) = place
                .iter()
                .try_fold(&mut *object, |value, name| value.get_mut(*name))
            else {
                continue;
            };
            *id = self.handles.seal(HandleKind::Task, &self.binding, id)?;
        }
        Some(())
    }

    /// Puts a listen stream's subscription id back to the client's request
    /// id; `None` when it names a subscription Cola did not open here.
    fn own_subscription(&self, object: &mut Value) -> Option<()> {
        let Some(named) = object
            .get_mut("_meta")
            .and_then(|meta| meta.get_mut(META_SUBSCRIPTION_ID))
        else {
            return Some(());
        };
        let expected = self.expected.as_ref()?;
        if named.as_str() != Some(expected.upstream_id.as_str()) {
            return None;
        }
        *named = expected.client_id.clone();
        Some(())
    }

    /// A whole JSON answer as the key may see it; `Err` with what became of
    /// it when it is not relayed.
    pub fn json_body(&self, body: Vec<u8>) -> Result<Vec<u8>, Shown> {
        let Ok(text) = std::str::from_utf8(&body) else {
            return Err(Shown::Dropped);
        };
        match self.message(text) {
            Shown::Unchanged => Ok(body),
            Shown::Rewritten(text) => Ok(text.into_bytes()),
            refused => Err(refused),
        }
    }

    /// The error the client gets instead of a list too large to filter.
    fn too_large(&self) -> Option<String> {
        let expected = self.expected.as_ref()?;
        let error =
            RpcError::upstream_failed(&self.slug, "answered with a list larger than Cola relays")
                .answering(&expected.client_id);
        String::from_utf8(error.to_body()).ok()
    }
}

/// What a stream that listens (a session's GET stream, or a 2026-07-28
/// `subscriptions/listen`) is told before it ends on a change of its key.
#[derive(Debug, Clone)]
pub enum Listening {
    /// An answer's stream: ends without a word.
    No,
    /// A handshake-era session's GET stream.
    Session,
    /// A `subscriptions/listen` of the client's request `id`.
    Subscription(Value),
}

/// How long a stream may live: while its key stays as it was admitted, and
/// not past the key's expiry.
#[derive(Debug)]
pub struct Lifetime {
    pub changes: KeyChanges,
    /// Asked whether the key is still as admitted when it is announced
    /// changed.
    pub admission: Arc<KeyAdmission>,
    pub expires_at: tokio::time::Instant,
    pub listening: Listening,
}

impl Lifetime {
    /// The lifetime of a stream admitted for `lens`'s key now.
    pub fn of(
        lens: &Lens,
        changes: KeyChanges,
        admission: Arc<KeyAdmission>,
        listening: Listening,
    ) -> Self {
        let left = (lens.principal.key().expires_at - chrono::Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO);
        Self {
            changes,
            admission,
            expires_at: tokio::time::Instant::now() + left,
            listening,
        }
    }

    /// What a listen stream says before it ends: every list may now show
    /// something else, and the client's next request (which is decided
    /// afresh) lists it; a subscription is then closed gracefully, as the
    /// server it stands for would, so that the client listens again.
    fn farewell(&self) -> Option<Bytes> {
        const KINDS: [&str; 3] = ["tools", "resources", "prompts"];
        let id = match &self.listening {
            Listening::No => return None,
            Listening::Session => {
                let text: String = KINDS
                    .iter()
                    .map(|kind| {
                        format!(
                            "data: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/{kind}/list_changed\"}}\n\n"
                        )
                    })
                    .collect();
                return Some(Bytes::from(text));
            }
            Listening::Subscription(id) => id,
        };
        let meta = serde_json::json!({ META_SUBSCRIPTION_ID: id });
        let mut text = String::new();
        for kind in KINDS {
            let message = serde_json::json!({
                "jsonrpc": "2.0",
                "method": format!("notifications/{kind}/list_changed"),
                "params": { "_meta": meta },
            });
            text.push_str(&format!("data: {message}\n\n"));
        }
        let closed = serde_json::json!({
            "jsonrpc": "2.0",
            "id": id,
            "result": { "resultType": "complete", "_meta": meta },
        });
        text.push_str(&format!("data: {closed}\n\n"));
        Some(Bytes::from(text))
    }
}

/// How long an answer's stream may stay silent (no byte from the upstream,
/// its comments included) before Cola ends it. Listen streams are silent by
/// nature and are not ended for it.
pub const MAX_SILENCE: Duration = Duration::from_secs(300);

/// The upstream's SSE `body` relayed event by event through `lens`, for as
/// long as `lifetime` allows: a stream outlives no revocation, permission
/// change or expiry of the key that opened it, so what it shows is never
/// decided on a key as it no longer is. `slot` (the tenant's place in
/// flight, if the stream holds one) is given back when the stream ends.
pub fn sse<S, E, T>(
    body: S,
    lens: Lens,
    lifetime: Lifetime,
    slot: T,
) -> impl Stream<Item = Bytes> + Send + 'static
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: std::error::Error + Send + Sync + 'static,
    T: Send + 'static,
{
    let heard = Arc::new(AtomicU64::new(0));
    let started = tokio::time::Instant::now();
    let body = {
        let heard = Arc::clone(&heard);
        body.inspect(move |_| {
            let at = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            heard.store(at, Ordering::Relaxed);
        })
    };
    let events = Box::pin(sse_lines(body).eventsource());
    let state = Relaying {
        events,
        lens,
        lifetime,
        heard,
        started,
        _slot: slot,
    };
    futures_util::stream::unfold(Some(state), |state| async move {
        let mut state = state?;
        let prefix = state.lens.principal.key().prefix.clone();
        loop {
            tokio::select! {
                () = state.lifetime.changes.changed(&prefix) => {
                    // The announcement may be of a change this admission
                    // already reflects; a stream ends only on one it does not.
                    if state.lifetime.admission.still_as_admitted(&state.lens.principal).await {
                        continue;
                    }
                    tracing::info!(key_prefix = %prefix, "a gateway stream ends: its key changed");
                    return state.lifetime.farewell().map(|bytes| (bytes, None));
                }
                () = tokio::time::sleep_until(state.lifetime.expires_at) => {
                    tracing::info!(key_prefix = %prefix, "a gateway stream ends: its key expired");
                    return state.lifetime.farewell().map(|bytes| (bytes, None));
                }
                next = tokio::time::timeout(KEEP_ALIVE, state.events.next()) => match next {
                    Err(_quiet) => {
                        if state.silent_too_long() {
                            tracing::info!(slug = %state.lens.slug, "a gateway stream ends: its upstream was silent too long");
                            return None;
                        }
                        return Some((Bytes::from_static(b": keep-alive\n\n"), Some(state)));
                    }
                    Ok(None) => return None,
                    Ok(Some(Err(error))) => {
                        // The stream ends here; the client sees it close, as
                        // it would have seen the upstream's.
                        tracing::info!(error = %crate::error::chain(&error), "an upstream event stream ends early");
                        return None;
                    }
                    Ok(Some(Ok(event))) => {
                        if let Some(bytes) = relayed(&state.lens, &event) {
                            return Some((bytes, Some(state)));
                        }
                    }
                },
            }
        }
    })
}

/// A stream being relayed.
struct Relaying<Ev, T> {
    events: std::pin::Pin<Box<Ev>>,
    lens: Lens,
    lifetime: Lifetime,
    /// When the upstream last sent a byte, in ms since `started`.
    heard: Arc<AtomicU64>,
    started: tokio::time::Instant,
    _slot: T,
}

impl<Ev, T> Relaying<Ev, T> {
    fn silent_too_long(&self) -> bool {
        if !matches!(self.lifetime.listening, Listening::No) {
            return false;
        }
        let heard = Duration::from_millis(self.heard.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(heard) > MAX_SILENCE
    }
}

/// One event as the client gets it, or `None` to drop it. An event without
/// data (a resumption point) passes as it is; data that is not one JSON
/// message is dropped, as nothing could read it.
fn relayed(lens: &Lens, event: &Event) -> Option<Bytes> {
    if event.data.is_empty() {
        return Some(encode(event, ""));
    }
    match lens.message(&event.data) {
        Shown::Unchanged => Some(encode(event, &event.data)),
        Shown::Rewritten(data) => Some(encode(event, &data)),
        Shown::Dropped => None,
        Shown::TooLarge => lens.too_large().map(|data| encode(event, &data)),
    }
}

fn encode(event: &Event, data: &str) -> Bytes {
    let mut text = String::with_capacity(data.len() + event.id.len() + 32);
    if !event.id.is_empty() {
        text.push_str("id: ");
        text.push_str(&single_line(&event.id));
        text.push('\n');
    }
    if !event.event.is_empty() && event.event != "message" {
        text.push_str("event: ");
        text.push_str(&single_line(&event.event));
        text.push('\n');
    }
    if let Some(retry) = event.retry {
        text.push_str(&format!("retry: {}\n", retry.as_millis()));
    }
    if data.is_empty() {
        text.push_str("data:\n");
    }
    for line in data.lines() {
        text.push_str("data: ");
        text.push_str(line);
        text.push('\n');
    }
    text.push('\n');
    Bytes::from(text)
}

fn single_line(field: &str) -> String {
    field.chars().filter(|c| *c != '\n' && *c != '\r').collect()
}
