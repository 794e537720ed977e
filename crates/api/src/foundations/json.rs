//! Request-body and query extraction that names the offending field: a JSON
//! body must be `application/json`, not content-encoded, at most 64 KiB, and
//! deserialize cleanly; any failure is a problem body with the field's path
//! in `errors`.

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use actix_web::{FromRequest, HttpRequest, web};
use cola_application::FieldErrors;
use futures_util::future::LocalBoxFuture;
use serde::de::DeserializeOwned;

use crate::foundations::problem::Problem;

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A JSON body of type `T`.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

/// Whether the request says its body is JSON (`application/json` or any
/// `+json` type).
pub fn is_json(request: &HttpRequest) -> bool {
    request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(|essence| essence.trim().to_ascii_lowercase())
        .is_some_and(|essence| essence == "application/json" || essence.ends_with("+json"))
}

/// Why a request body was not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// More than [`MAX_BODY_BYTES`] on the wire.
    #[error("the request body is larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    /// A `Content-Encoding` other than `identity`, named as sent.
    #[error("Content-Encoding `{0}` is not accepted; send the body uncompressed")]
    Encoded(String),
    /// The connection failed or the body was malformed on the wire.
    #[error("the request body could not be read")]
    Unreadable,
}

impl From<BodyError> for Problem {
    fn from(error: BodyError) -> Self {
        let detail = error.to_string();
        match error {
            BodyError::TooLarge => {
                Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "body-too-large", detail)
            }
            BodyError::Encoded(_) => Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-content-encoding",
                detail,
            ),
            BodyError::Unreadable => {
                Problem::new(StatusCode::BAD_REQUEST, "unreadable-body", detail)
            }
        }
    }
}

/// The request's `Content-Encoding`, when it is anything but `identity`.
/// Bodies are taken as sent: a compressed body would be inflated past the
/// size limit, which counts the bytes on the wire, before anything could
/// refuse it (a few KiB of gzip inflate to gigabytes), and no client of this
/// API needs to compress a body of at most 64 KiB.
fn content_encoding(request: &HttpRequest) -> Option<String> {
    let codings = request.headers().get_all(CONTENT_ENCODING);
    for value in codings {
        let Ok(text) = value.to_str() else {
            return Some(String::from_utf8_lossy(value.as_bytes()).into_owned());
        };
        let identity = text
            .split(',')
            .map(str::trim)
            .all(|coding| coding.is_empty() || coding.eq_ignore_ascii_case("identity"));
        if !identity {
            return Some(text.trim().to_owned());
        }
    }
    None
}

/// Reads the body as sent, refusing a content-encoded one and more than
/// [`MAX_BODY_BYTES`].
pub async fn read_body(
    request: &HttpRequest,
    payload: &mut Payload,
) -> Result<web::Bytes, BodyError> {
    if let Some(coding) = content_encoding(request) {
        return Err(BodyError::Encoded(coding));
    }
    web::Bytes::from_request(request, payload)
        .await
        .map_err(|error| {
            if error.as_response_error().status_code() == StatusCode::PAYLOAD_TOO_LARGE {
                BodyError::TooLarge
            } else {
                BodyError::Unreadable
            }
        })
}

pub fn unsupported_media_type() -> Problem {
    Problem::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-media-type",
        "the request body must be application/json",
    )
}

impl<T: DeserializeOwned + 'static> FromRequest for JsonBody<T> {
    type Error = Problem;
    type Future = LocalBoxFuture<'static, Result<Self, Problem>>;

    fn from_request(request: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let request = request.clone();
        let mut payload = payload.take();
        Box::pin(async move {
            if !is_json(&request) {
                return Err(unsupported_media_type());
            }
            let body = read_body(&request, &mut payload)
                .await
                .map_err(Problem::from)?;
            parse_json(&body).map(JsonBody)
        })
    }
}

/// As [`JsonBody`], except that a request with no body at all (no
/// `Content-Type`, no length) is `T::default()`: for a POST whose every field
/// is optional, such as a rotation.
#[derive(Debug)]
pub struct OptionalJsonBody<T>(pub T);

fn has_no_body(request: &HttpRequest) -> bool {
    let headers = request.headers();
    let length_zero = headers
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .is_none_or(|value| value.trim() == "0");
    headers.get(CONTENT_TYPE).is_none()
        && headers
            .get(actix_web::http::header::TRANSFER_ENCODING)
            .is_none()
        && length_zero
}

impl<T: DeserializeOwned + Default + 'static> FromRequest for OptionalJsonBody<T> {
    type Error = Problem;
    type Future = LocalBoxFuture<'static, Result<Self, Problem>>;

    fn from_request(request: &HttpRequest, payload: &mut Payload) -> Self::Future {
        if has_no_body(request) {
            return Box::pin(std::future::ready(Ok(Self(T::default()))));
        }
        let body = JsonBody::<T>::from_request(request, payload);
        Box::pin(async move { body.await.map(|JsonBody(value)| Self(value)) })
    }
}

/// Deserializes `body`, naming the field at fault.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, Problem> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return Problem::invalid(&FieldErrors::single(
                "body",
                format!(
                    "is not valid JSON (line {}, column {})",
                    inner.line(),
                    inner.column()
                ),
            ));
        }
        Problem::invalid(&describe(&path, &inner.to_string()))
    })?;
    deserializer.end().map_err(|_| {
        Problem::invalid(&FieldErrors::single(
            "body",
            "has trailing characters after the JSON value",
        ))
    })?;
    Ok(value)
}

/// Parses a query string, naming the parameter at fault.
pub fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, Problem> {
    serde_urlencoded::from_str(query)
        .map_err(|error| Problem::invalid(&describe(".", &error.to_string())))
}

/// Turns a serde message into a field error: `unknown field `x`` and
/// `missing field `x`` name the field itself, other messages the path.
fn describe(path: &str, message: &str) -> FieldErrors {
    let join = |field: &str| {
        if path == "." || path.is_empty() {
            field.to_owned()
        } else {
            format!("{path}.{field}")
        }
    };
    let quoted = |text: &str| text.split('`').nth(1).map(str::to_owned);
    // serde appends " at line L column C" for JSON; it says nothing useful
    // once the field is named.
    let message = message.split(" at line ").next().unwrap_or(message);
    if let Some(field) = message.strip_prefix("unknown field ").and_then(quoted) {
        // The path already ends at the unknown field.
        let at = if path.ends_with(&field) {
            path.to_owned()
        } else {
            join(&field)
        };
        return FieldErrors::single(at, "is not a known field");
    }
    if let Some(field) = message.strip_prefix("missing field ").and_then(quoted) {
        return FieldErrors::single(join(&field), "is required");
    }
    let field = if path == "." || path.is_empty() {
        "body".to_owned()
    } else {
        path.to_owned()
    };
    FieldErrors::single(field, message.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        read: bool,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        inner: Option<Inner>,
    }

    fn fields(body: &str) -> Vec<String> {
        let problem = parse_json::<Outer>(body.as_bytes()).expect_err("invalid");
        problem.errors.expect("errors").into_keys().collect()
    }

    #[test]
    fn an_unknown_field_is_named() {
        assert_eq!(fields(r#"{"name":"a","tenant_id":"x"}"#), ["tenant_id"]);
        assert_eq!(
            fields(r#"{"name":"a","inner":{"read":true,"x":1}}"#),
            ["inner.x"]
        );
    }

    #[test]
    fn a_missing_field_is_named() {
        assert_eq!(fields(r"{}"), ["name"]);
    }

    #[test]
    fn a_wrongly_typed_field_is_named() {
        assert_eq!(
            fields(r#"{"name":"a","inner":{"read":"yes"}}"#),
            ["inner.read"]
        );
    }

    #[test]
    fn broken_json_is_blamed_on_the_body() {
        assert_eq!(fields(r#"{"name":"#), ["body"]);
        assert_eq!(fields(r#"{"name":"a"} x"#), ["body"]);
    }
}
