//! Server-sent events read as they arrive: the body cut into whole lines
//! first, each event's size counted on the way, so that a stream is parsed
//! in linear time and an event that never ends cannot fill memory.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use eventsource_stream::Eventsource;
use futures_util::{Stream, StreamExt};

/// The largest SSE event Cola relays, as large as a JSON answer it reads.
/// An event is held until it ends (it is parsed and filtered whole), so
/// without a bound an upstream whose event never ends would fill memory.
pub const MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;

/// Why an upstream's event stream ends early.
#[derive(Debug, thiserror::Error)]
pub enum StreamFailure<E> {
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
pub fn sse_lines<S, E>(body: S) -> impl Stream<Item = Result<Bytes, StreamFailure<E>>>
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

/// The data of every event of a complete SSE body, in order (for answers
/// Cola reads itself, such as a catalogue fetch).
pub async fn event_data_of(body: Bytes) -> Vec<String> {
    let events =
        sse_lines(futures_util::stream::iter([Ok::<_, std::io::Error>(body)])).eventsource();
    events
        .filter_map(|event| async move { event.ok().map(|event| event.data) })
        .collect()
        .await
}

#[cfg(test)]
mod tests {
    use eventsource_stream::Event;

    use super::*;

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
}
