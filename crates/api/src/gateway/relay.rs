//! Relaying an upstream's answer to the client as the key may see it: a JSON
//! answer whole, an SSE stream event by event as each arrives (never
//! buffered), with list results filtered and notifications about hidden
//! resources dropped.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use cola_application::{
    KeyChanges, ListKind, McpPrincipal, ToolCatalogue, filter_list, may_see_notification,
};
use cola_domain::{ServerId, Surface};
use eventsource_stream::{Event, Eventsource};
use futures_util::{Stream, StreamExt};
use serde_json::Value;

/// A quiet stream gets a comment this often, so that proxies and clients
/// with read timeouts keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// The largest SSE event Cola relays, as large as a JSON answer it reads.
/// An event is held until it ends (it is parsed and filtered whole), so
/// without a bound an upstream whose event never ends would fill memory.
const MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;

/// Why an upstream's event stream ends early.
#[derive(Debug, thiserror::Error)]
enum StreamFailure<E> {
    #[error("the upstream's event stream broke off")]
    Broken(#[source] E),
    #[error("an upstream event is larger than {MAX_EVENT_BYTES} bytes")]
    EventTooLarge,
}

/// An SSE body cut into its lines, each with its line ending, one item per
/// line. `eventsource-stream` keeps what it has not parsed in one buffer,
/// parses it from the start on every chunk and copies what is left after
/// each line: a line split over many chunks, or a chunk of many lines, cost
/// it time quadratic in their size. Given one whole line at a time, it does
/// neither. An event past [`MAX_EVENT_BYTES`] ends the stream with an error,
/// as a broken one would.
fn sse_lines<S, E>(body: S) -> impl Stream<Item = Result<Bytes, StreamFailure<E>>>
where
    S: Stream<Item = Result<Bytes, E>>,
{
    let mut framer = LineFramer::new();
    body.flat_map(move |chunk| {
        let lines = match chunk {
            Ok(bytes) => framer.lines(bytes),
            Err(error) => vec![Err(StreamFailure::Broken(error))],
        };
        futures_util::stream::iter(lines)
    })
}

/// Cuts a byte stream into lines as it arrives (see [`sse_lines`]).
#[derive(Debug)]
struct LineFramer {
    /// The start of a line whose end has not arrived.
    partial: BytesMut,
    /// The bytes, line endings left out, of the event under way's complete
    /// lines: an empty line ends the event.
    event_bytes: usize,
}

impl LineFramer {
    fn new() -> Self {
        Self {
            partial: BytesMut::new(),
            event_bytes: 0,
        }
    }

    /// The lines `chunk` completes; the rest waits for the next chunk. A
    /// lone `\r` ending is passed on as `\n`, so that the parser need not
    /// wait for the next byte to tell it from a `\r\n`; a `\r` that ends a
    /// chunk waits here for that byte. Once the event under way passes
    /// [`MAX_EVENT_BYTES`], the last item is an error.
    fn lines<E>(&mut self, mut chunk: Bytes) -> Vec<Result<Bytes, StreamFailure<E>>> {
        let mut lines = Vec::new();
        if self.partial.last() == Some(&b'\r') && !chunk.is_empty() {
            if chunk[0] == b'\n' {
                chunk.advance(1);
            } else {
                self.partial.truncate(self.partial.len() - 1);
            }
            self.partial.put_u8(b'\n');
            let line = self.partial.split().freeze();
            if !self.take(line, &mut lines) {
                return lines;
            }
        }
        while let Some(ending) = chunk
            .iter()
            .position(|&byte| byte == b'\n' || byte == b'\r')
        {
            let line = match (chunk[ending], chunk.get(ending + 1)) {
                // The last byte: a `\n` may follow in the next chunk.
                (b'\r', None) => break,
                (b'\r', Some(b'\n')) => self.joined(chunk.split_to(ending + 2)),
                (b'\r', Some(_)) => {
                    let line = chunk.split_to(ending);
                    chunk.advance(1);
                    self.partial.extend_from_slice(&line);
                    self.partial.put_u8(b'\n');
                    self.partial.split().freeze()
                }
                _ => self.joined(chunk.split_to(ending + 1)),
            };
            if !self.take(line, &mut lines) {
                return lines;
            }
        }
        self.partial.extend_from_slice(&chunk);
        // A `\r` held back is a line ending, not the event's.
        let held = self.partial.len() - usize::from(self.partial.last() == Some(&b'\r'));
        if self.event_bytes + held > MAX_EVENT_BYTES {
            lines.push(Err(StreamFailure::EventTooLarge));
        }
        lines
    }

    /// Passes on one complete `line`, counting it into its event; `false`
    /// (and an error passed on after it) once the event is too large.
    fn take<E>(&mut self, line: Bytes, lines: &mut Vec<Result<Bytes, StreamFailure<E>>>) -> bool {
        let ending = if line.ends_with(b"\r\n") { 2 } else { 1 };
        match line.len() - ending {
            0 => self.event_bytes = 0,
            content => self.event_bytes += content,
        }
        lines.push(Ok(line));
        if self.event_bytes > MAX_EVENT_BYTES {
            lines.push(Err(StreamFailure::EventTooLarge));
            return false;
        }
        true
    }

    /// `line`, after the start of it that came in earlier chunks.
    fn joined(&mut self, line: Bytes) -> Bytes {
        if self.partial.is_empty() {
            return line;
        }
        self.partial.extend_from_slice(&line);
        self.partial.split().freeze()
    }
}

/// How one answer is seen through a key: the list it answers, if any.
#[derive(Debug, Clone)]
pub struct Lens {
    pub principal: McpPrincipal,
    pub server: ServerId,
    /// The list request this answer is for, and its id.
    pub list: Option<(ListKind, Value)>,
    pub catalogue: Arc<ToolCatalogue>,
}

impl Lens {
    /// One JSON-RPC message from the upstream as the key may see it, or
    /// `None` when it is to be dropped. Without a scope on the server (the
    /// key lost its grant) nothing is shown.
    pub fn message(&self, mut message: Value) -> Option<Value> {
        let scope = self
            .principal
            .key()
            .permissions
            .scope_on(Surface::Server(self.server))?;
        if let Some(method) = message.get("method").and_then(Value::as_str) {
            if message.get("id").is_none() {
                let params = message.get("params").unwrap_or(&Value::Null);
                return may_see_notification(&scope, method, params).then_some(message);
            }
            // A request of the server's own (sampling, elicitation, roots):
            // it names nothing of the server's that a grant hides.
            return Some(message);
        }
        if let Some((kind, id)) = &self.list
            && message.get("id") == Some(id)
            && let Some(result) = message.get_mut("result")
        {
            if *kind == ListKind::Tools {
                self.catalogue.record_page(self.server.as_uuid(), result);
            }
            filter_list(&scope, *kind, result);
        }
        Some(message)
    }

    /// A whole JSON answer as the key may see it; `None` when it cannot be
    /// shown (not JSON, or dropped). An answer that is not the list this
    /// lens filters passes as the upstream wrote it (a tool's result may be
    /// large, and nothing in it is Cola's to change), once it is known to
    /// be one JSON object and not a message of the server's own, which
    /// [`Lens::message`] decides on.
    pub fn json_body(&self, body: Vec<u8>) -> Option<Vec<u8>> {
        // The key's scope on this server was checked when the exchange
        // opened, and an admitted principal does not change under it.
        if self.list.is_none() && is_plain_answer(&body) {
            return Some(body);
        }
        let message: Value = serde_json::from_slice(&body).ok()?;
        serde_json::to_vec(&self.message(message)?).ok()
    }
}

/// Whether `body` is one JSON object, in UTF-8, with no `method`: an answer,
/// not a request or notification. The whole body is read, syntax and all,
/// without being built.
fn is_plain_answer(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Envelope<'a> {
        #[serde(borrow)]
        method: Option<&'a serde_json::value::RawValue>,
    }
    let Ok(text) = std::str::from_utf8(body) else {
        return false;
    };
    text.trim_start().starts_with('{')
        && serde_json::from_str::<Envelope<'_>>(text)
            .is_ok_and(|envelope| envelope.method.is_none())
}

/// How long a stream may live: while its key stays as it was admitted, and
/// not past the key's expiry.
#[derive(Debug)]
pub struct Lifetime {
    pub changes: KeyChanges,
    pub expires_at: tokio::time::Instant,
    /// A session's GET listen stream, where the client is told that the
    /// lists changed before the stream ends.
    pub listen: bool,
}

impl Lifetime {
    /// The lifetime of a stream admitted for `lens`'s key now.
    pub fn of(lens: &Lens, changes: KeyChanges, listen: bool) -> Self {
        let left = (lens.principal.key().expires_at - chrono::Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO);
        Self {
            changes,
            expires_at: tokio::time::Instant::now() + left,
            listen,
        }
    }
}

/// What a listen stream says before it ends on a change of its key: every
/// list may now show something else, and the client's next request (which
/// is decided afresh) lists it.
const LISTS_CHANGED: &[u8] =
    b"data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/tools/list_changed\"}\n\n\
data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/resources/list_changed\"}\n\n\
data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/prompts/list_changed\"}\n\n";

/// The upstream's SSE `body` relayed event by event through `lens`, for as
/// long as `lifetime` allows: a stream outlives no revocation, permission
/// change or expiry of the key that opened it, so what it shows is never
/// decided on a key as it no longer is.
pub fn sse<S, E>(
    body: S,
    lens: Lens,
    lifetime: Lifetime,
) -> impl Stream<Item = Result<Bytes, Infallible>> + 'static
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    let events = Box::pin(sse_lines(body).eventsource());
    futures_util::stream::unfold(Some((events, lens, lifetime)), |state| async move {
        let (mut events, lens, mut lifetime) = state?;
        let prefix = lens.principal.key().prefix.clone();
        loop {
            tokio::select! {
                () = lifetime.changes.changed(&prefix) => {
                    tracing::info!(key_prefix = %prefix, "a gateway stream ends: its key changed");
                    return lifetime.listen.then(|| (Ok(Bytes::from_static(LISTS_CHANGED)), None));
                }
                () = tokio::time::sleep_until(lifetime.expires_at) => {
                    tracing::info!(key_prefix = %prefix, "a gateway stream ends: its key expired");
                    return None;
                }
                next = tokio::time::timeout(KEEP_ALIVE, events.next()) => match next {
                    Err(_quiet) => {
                        return Some((
                            Ok(Bytes::from_static(b": keep-alive\n\n")),
                            Some((events, lens, lifetime)),
                        ));
                    }
                    Ok(None) => return None,
                    Ok(Some(Err(error))) => {
                        // The stream ends here; the client sees it close, as
                        // it would have seen the upstream's.
                        tracing::info!(error = %cola_application::error_chain(&error), "an upstream event stream ends early");
                        return None;
                    }
                    Ok(Some(Ok(event))) => {
                        if let Some(bytes) = relayed(&lens, &event) {
                            return Some((Ok(bytes), Some((events, lens, lifetime))));
                        }
                    }
                },
            }
        }
    })
}

/// One event as the client gets it, or `None` to drop it. An event without
/// data (a resumption point) passes as it is; data that is not one JSON
/// value is dropped, as nothing could read it.
fn relayed(lens: &Lens, event: &Event) -> Option<Bytes> {
    if event.data.is_empty() {
        return Some(encode(event, ""));
    }
    let message: Value = serde_json::from_str(&event.data).ok()?;
    let shown = lens.message(message)?;
    let data = serde_json::to_string(&shown).ok()?;
    Some(encode(event, &data))
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

/// Every JSON-RPC message of a complete SSE body, in order (for answers Cola
/// reads itself, such as a catalogue fetch).
pub async fn messages_of(body: Bytes) -> Vec<Value> {
    let events =
        sse_lines(futures_util::stream::iter([Ok::<_, std::io::Error>(body)])).eventsource();
    events
        .filter_map(|event| async move {
            event
                .ok()
                .and_then(|event| serde_json::from_str(&event.data).ok())
        })
        .collect()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_plain_and_a_message_of_the_servers_own_is_not() {
        assert!(is_plain_answer(
            br#"{"jsonrpc":"2.0","id":1,"result":{"b":1,"a":[2]}}"#
        ));
        assert!(is_plain_answer(
            b"  \n{\"id\":1,\"error\":{\"code\":-1,\"message\":\"x\"}}"
        ));
        // A notification or a request of the server's goes through the lens.
        assert!(!is_plain_answer(
            br#"{"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":"x"}}"#
        ));
        assert!(!is_plain_answer(
            br#"{"jsonrpc":"2.0","id":7,"method":"sampling/createMessage"}"#
        ));
        assert!(!is_plain_answer(
            br#"{"id":1,"result":{},"method":"a","method":"b"}"#
        ));
    }

    /// Whether the event under way still fits once `framer` has `chunk`.
    fn fits(framer: &mut LineFramer, chunk: &[u8]) -> bool {
        framer
            .lines::<std::io::Error>(Bytes::copy_from_slice(chunk))
            .iter()
            .all(Result::is_ok)
    }

    #[test]
    fn an_event_is_measured_from_the_last_empty_line_whatever_the_line_endings() {
        for ending in ["\n", "\r\n", "\r"] {
            let mut size = LineFramer::new();
            let event = format!("data: {}{ending}", "x".repeat(MAX_EVENT_BYTES - 6));
            assert!(fits(&mut size, event.as_bytes()), "{ending:?}");
            assert!(fits(&mut size, ending.as_bytes()), "{ending:?}");
            // The next event starts from nothing: the same again fits.
            assert!(fits(&mut size, event.as_bytes()), "{ending:?}");
            // One byte more in it, before its end, does not.
            assert!(!fits(&mut size, b"x"), "{ending:?}");
        }
    }

    #[test]
    fn an_event_split_over_chunks_is_counted_whole() {
        let mut size = LineFramer::new();
        let half = "x".repeat(MAX_EVENT_BYTES / 2);
        assert!(fits(&mut size, b"data: "));
        assert!(fits(&mut size, half.as_bytes()));
        // A line ending split from its `\n` is one ending, not an empty line.
        assert!(fits(&mut size, b"\r"));
        assert!(fits(&mut size, b"\ndata: "));
        assert!(!fits(&mut size, half.as_bytes()));
    }

    #[tokio::test]
    async fn a_stream_whose_event_grows_past_the_limit_stops_with_an_error() {
        // A first event, then one of "data: " and 1 MiB after 1 MiB: the
        // eighth MiB takes it past the limit.
        let chunk = Bytes::from(vec![b'x'; 1024 * 1024]);
        let mut chunks = vec![Ok::<_, std::io::Error>(Bytes::from_static(
            b"data: {}\n\ndata: ",
        ))];
        chunks.extend((0..9).map(|_| Ok(chunk.clone())));
        let items: Vec<_> = sse_lines(futures_util::stream::iter(chunks))
            .collect()
            .await;
        assert_eq!(
            items[0].as_ref().ok(),
            Some(&Bytes::from_static(b"data: {}\n"))
        );
        assert_eq!(items[1].as_ref().ok(), Some(&Bytes::from_static(b"\n")));
        assert!(matches!(items[2], Err(StreamFailure::EventTooLarge)));
        assert!(items[3..].iter().all(Result::is_err));
    }

    fn framed(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut framer = LineFramer::new();
        chunks
            .iter()
            .flat_map(|chunk| framer.lines::<std::io::Error>(Bytes::copy_from_slice(chunk)))
            .map(|line| line.expect("a line").to_vec())
            .collect()
    }

    #[test]
    fn lines_are_cut_at_every_line_ending_and_joined_across_chunks() {
        assert_eq!(
            framed(&[
                b"data: a\r\ndata: b\n\nid: 1\r\r",
                b"data: long",
                b" line",
                b"\n\n"
            ]),
            [
                &b"data: a\r\n"[..],
                b"data: b\n",
                b"\n",
                b"id: 1\n",
                b"\n",
                b"data: long line\n",
                b"\n",
            ]
        );
        // A `\r\n` split over two chunks is one line ending.
        assert_eq!(
            framed(&[b"data: a\r", b"\n\r\n"]),
            [&b"data: a\r\n"[..], b"\r\n"]
        );
        // What has no line ending yet is held back, a last `\r` included.
        assert!(framed(&[b"data: no end"]).is_empty());
        assert!(framed(&[b"data: a\r"]).is_empty());
    }

    /// The events of `text` as `eventsource-stream` reads it in one piece.
    fn events_whole(text: &str) -> Vec<(String, String, String)> {
        events_of(
            futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::copy_from_slice(
                text.as_bytes(),
            ))])
            .eventsource(),
        )
    }

    fn events_of<S, E>(stream: S) -> Vec<(String, String, String)>
    where
        S: Stream<Item = Result<Event, E>>,
    {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        runtime.block_on(
            stream
                .filter_map(|event| async move { event.ok() })
                .map(|event| (event.event, event.data, event.id))
                .collect(),
        )
    }

    proptest::proptest! {
        /// Cut into lines first, any SSE text in any chunks reads as the
        /// same events as it does whole.
        #[test]
        fn lines_read_as_the_whole_text_does(
            parts in proptest::collection::vec(
                proptest::sample::select(vec![
                    "data: x", "data:y", "data", "event: e", "id: 7", "retry: 10", ": c",
                    "\n", "\r\n", "\r", "\n\n", "\r\n\r\n", "é", "data: {\"a\":1}",
                ]),
                0..40,
            ),
            cuts in proptest::collection::vec(0_usize..200, 0..8),
        ) {
            let text: String = parts.concat();
            let bytes = text.as_bytes();
            let mut at: Vec<usize> = cuts.into_iter().map(|cut| cut % (bytes.len() + 1)).collect();
            at.sort_unstable();
            let mut chunks = Vec::new();
            let mut start = 0;
            for cut in at.into_iter().chain([bytes.len()]) {
                chunks.push(Ok::<_, std::io::Error>(Bytes::copy_from_slice(&bytes[start..cut.max(start)])));
                start = cut.max(start);
            }
            let framed = events_of(sse_lines(futures_util::stream::iter(chunks)).eventsource());
            proptest::prop_assert_eq!(framed, events_whole(&text));
        }
    }

    #[test]
    fn anything_but_one_object_of_valid_json_in_utf8_is_not_plain() {
        for body in [
            &b""[..],
            b"[]",
            br#"[{"id":1,"result":{}}]"#,
            br#""text""#,
            br#"{"id":1,"result":{}"#,
            br#"{"id":1,"result":{}} {"id":2}"#,
            b"{\"id\":1,\"result\":\"\xff\"}",
            br#"{"id":1,"result":"\q"}"#,
        ] {
            assert!(!is_plain_answer(body), "{}", String::from_utf8_lossy(body));
        }
    }
}
