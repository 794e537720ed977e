//! The tracing subscriber, built once at start-up: human-readable by
//! default, JSON lines for log shippers.
//!
//! Two guards keep credentials out of the log. The request span records the
//! path without its query ([`RequestSpan`]), since clients do put keys and
//! tokens in query strings (`?api_key=`, `?access_token=`) although no route
//! reads them there. And every line passes through [`Redacting`], which
//! blanks anything shaped like a key or a JWT, wherever it came from.

use std::io::{self, Write};
use std::sync::LazyLock;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue, USER_AGENT};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, web};
use regex::bytes::Regex;
use tracing::Span;
use tracing_actix_web::{DefaultRootSpanBuilder, RequestId, RootSpanBuilder};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::FmtSpan;

use crate::config::LogFormat;
use crate::foundations::client_ip::ClientIpResolver;

/// Installs the global subscriber, writing to stderr through [`Redacting`].
/// A second call (tests) leaves the first in place.
pub fn init(filter: &str, format: LogFormat) {
    let filter =
        EnvFilter::try_new(quiet_migrator(filter)).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_span_events(FmtSpan::NONE)
        .with_writer(Redacting(io::stderr));
    let _ = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// `filter` with sea-orm's migrator held to warnings, unless the filter
/// names it: start-up logs the schema in one line of its own instead of two
/// per migration.
fn quiet_migrator(filter: &str) -> String {
    if filter.contains("sea_orm_migration") {
        filter.to_owned()
    } else {
        format!("{filter},sea_orm_migration=warn")
    }
}

/// A full key (`cola_` and 36 base62 characters) or a JWT (three base64url
/// segments, the first starting `eyJ`, the encoding of `{"`). The public key
/// prefix (`cola_` and 12 characters) is shorter and stays readable: it is
/// logged on purpose, to tie a decision to a key.
const SECRET_PATTERN: &str =
    r"cola_[0-9A-Za-z]{36}|eyJ[0-9A-Za-z_-]*\.[0-9A-Za-z_-]+\.[0-9A-Za-z_-]*";

/// What a redacted secret is replaced with.
pub const REDACTED: &[u8] = b"[redacted]";

/// `None` only if the pattern did not compile, which a unit test rules out;
/// the writer then withholds every line rather than risk one.
static SECRETS: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(SECRET_PATTERN).ok());

/// `text` with every key and JWT in it replaced by [`REDACTED`].
#[must_use]
pub fn redact(text: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    match SECRETS.as_ref() {
        Some(secrets) => secrets.replace_all(text, REDACTED),
        None => std::borrow::Cow::Borrowed(b"[log line withheld: redaction unavailable]\n"),
    }
}

/// A [`MakeWriter`] whose writers redact keys and JWTs from what they write.
#[derive(Debug, Clone, Copy)]
pub struct Redacting<M>(pub M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Redacting<M> {
    type Writer = RedactingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter {
            inner: self.0.make_writer(),
            line: Vec::new(),
        }
    }
}

/// Collects one event (the formatter makes a writer per event) and writes it
/// redacted when flushed or dropped: a secret split over two `write` calls
/// is still seen whole.
#[derive(Debug)]
pub struct RedactingWriter<W: Write> {
    inner: W,
    line: Vec<u8>,
}

impl<W: Write> Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.line.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.inner.write_all(&redact(&line))?;
        }
        self.inner.flush()
    }
}

impl<W: Write> Drop for RedactingWriter<W> {
    fn drop(&mut self) {
        // Nowhere to report a failed log write to but the log itself.
        let _ = self.flush();
    }
}

/// The root span of every request: [`DefaultRootSpanBuilder`]'s fields,
/// except that `http.target` is the path alone (the query can carry a
/// credential) and `http.client_ip` is the address the allow-lists see,
/// after trusted-proxy resolution, not whatever a forwarding header claims.
#[derive(Debug)]
pub struct RequestSpan;

impl RootSpanBuilder for RequestSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        // Every field is worked out only when the span is enabled: with the
        // log at `warn` (as under load) the request pays for none of them.
        if !tracing::enabled!(tracing::Level::INFO) {
            return Span::none();
        }
        let route = request
            .match_pattern()
            .unwrap_or_else(|| "default".to_owned());
        let user_agent = request
            .headers()
            .get(USER_AGENT)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("");
        let client = request
            .app_data::<web::Data<ClientIpResolver>>()
            .and_then(|resolver| resolver.address_of(request))
            .map(|client| client.to_string())
            .unwrap_or_default();
        let request_id = request
            .extensions()
            .get::<RequestId>()
            .map(ToString::to_string)
            .unwrap_or_default();
        tracing::info_span!(
            "HTTP request",
            http.method = %request.method(),
            http.route = %route,
            http.flavor = ?request.version(),
            http.target = %request.path(),
            http.client_ip = %client,
            http.user_agent = %user_agent,
            http.status_code = tracing::field::Empty,
            otel.name = %format_args!("{} {route}", request.method()),
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            request_id = %request_id,
            exception.message = tracing::field::Empty,
            exception.details = tracing::field::Empty,
        )
    }

    fn on_request_end<B: MessageBody>(
        span: Span,
        outcome: &Result<ServiceResponse<B>, actix_web::Error>,
    ) {
        DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}

/// Returns the request id that every log line of the request carries as the
/// `x-request-id` response header, so a caller's report can be matched to
/// the server's log.
pub async fn echo_request_id(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let mut response = next.call(request).await?;
    let id = response
        .request()
        .extensions()
        .get::<RequestId>()
        .map(ToString::to_string);
    if let Some(value) = id.and_then(|id| HeaderValue::from_str(&id).ok()) {
        response
            .headers_mut()
            .insert(HeaderName::from_static("x-request-id"), value);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    const KEY: &str = "cola_4fT0aBcDeFgHiJkLmNoPqRsTuVwXyZ012345";
    const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLXNpZ25hdHVyZQ";

    fn redacted(text: &str) -> String {
        String::from_utf8(redact(text.as_bytes()).into_owned()).expect("utf-8")
    }

    #[test]
    fn the_pattern_compiles() {
        assert!(SECRETS.is_some());
    }

    #[test]
    fn keys_and_jwts_are_redacted_wherever_they_stand() {
        assert_eq!(KEY.len(), 41);
        assert_eq!(
            redacted(&format!("POST /mcp?api_key={KEY} HTTP/1.1")),
            "POST /mcp?api_key=[redacted] HTTP/1.1"
        );
        assert_eq!(
            redacted(&format!(
                r#"{{"target":"/api/mcp/keys?access_token={JWT}&x=1"}}"#
            )),
            r#"{"target":"/api/mcp/keys?access_token=[redacted]&x=1"}"#
        );
        // An unsigned token is a token too.
        assert_eq!(
            redacted("t=eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0. end"),
            "t=[redacted] end"
        );
        assert_eq!(redacted(&format!("{KEY}{KEY}")), "[redacted][redacted]");
    }

    #[test]
    fn the_key_prefix_and_ordinary_text_stay() {
        let line = r#"{"message":"mcp authentication","key_prefix":"cola_4fT0aBcDeFgH","outcome":"admitted","client":"127.0.0.1","path":"/api/mcp/keys/0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"}"#;
        assert_eq!(redacted(line), line);
        assert_eq!(redacted("eyJ alone. and a.b.c"), "eyJ alone. and a.b.c");
    }

    /// A sink that the writers of one test share.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().map_err(|_| io::ErrorKind::Other)?.write(buf)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().expect("sink").clone()).expect("utf-8")
        }
    }

    #[test]
    fn a_secret_split_over_writes_is_redacted_whole() {
        let sink = Sink::default();
        let make = Redacting({
            let sink = sink.clone();
            move || sink.clone()
        });
        {
            let mut writer = make.make_writer();
            writer.write_all(&KEY.as_bytes()[..20]).expect("write");
            writer.write_all(&KEY.as_bytes()[20..]).expect("write");
            writer.write_all(b"\n").expect("write");
        }
        assert_eq!(sink.text(), "[redacted]\n");
    }

    #[test]
    fn a_logged_event_reaches_the_writer_redacted() {
        let sink = Sink::default();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(Redacting({
                let sink = sink.clone();
                move || sink.clone()
            }))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target_uri = %format!("/mcp?api_key={KEY}"), token = JWT, "seen");
        });
        let text = sink.text();
        assert!(text.contains("\"seen\""), "{text}");
        assert!(!text.contains(KEY) && !text.contains(JWT), "{text}");
        assert!(text.contains("/mcp?api_key=[redacted]"), "{text}");
    }

    #[test]
    fn the_request_span_records_the_path_without_the_query() {
        let sink = Sink::default();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer({
                // Not redacting: this test is about the span alone.
                let sink = sink.clone();
                move || sink.clone()
            })
            .finish();
        let request = actix_web::test::TestRequest::post()
            .uri("/mcp?api_key=hunter2&access_token=swordfish")
            .to_srv_request();
        tracing::subscriber::with_default(subscriber, || {
            let span = RequestSpan::on_request_start(&request);
            span.in_scope(|| tracing::info!("inside"));
        });
        let text = sink.text();
        assert!(text.contains(r#""http.target":"/mcp""#), "{text}");
        assert!(
            !text.contains("hunter2") && !text.contains("swordfish"),
            "{text}"
        );
    }
}
