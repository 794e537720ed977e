//! `POST /mcp`: reads one JSON-RPC message, decides its era, checks the
//! stateless era's headers and `_meta`, and hands the call to the server.

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::http::header::HeaderMap;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use cola_application::McpPrincipal;
use serde_json::{Value, json};

use crate::json::{MAX_BODY_BYTES, is_json, read_body};
use crate::mcp::protocol::{self, Era};
use crate::mcp::server::{Call, McpServer, Outcome};

/// A JSON-RPC answer and the HTTP status it travels with.
struct Reply {
    status: StatusCode,
    body: Option<Value>,
}

impl Reply {
    fn accepted() -> Self {
        Self {
            status: StatusCode::ACCEPTED,
            body: None,
        }
    }

    fn error(
        status: StatusCode,
        id: &Value,
        code: i64,
        message: &str,
        data: Option<Value>,
    ) -> Self {
        Self {
            status,
            body: Some(protocol::error_response(id, code, message, data)),
        }
    }

    fn into_response(self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        match self.body {
            Some(body) => response
                .content_type("application/json")
                .body(serde_json::to_vec(&body).unwrap_or_default()),
            None => response.finish(),
        }
    }
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

pub async fn post(
    request: HttpRequest,
    payload: web::Payload,
    server: web::Data<McpServer>,
) -> HttpResponse {
    // The gate only lets admitted requests through; without a principal the
    // request was not admitted, whatever routed it here.
    let Some(principal) = request.extensions().get::<McpPrincipal>().cloned() else {
        return HttpResponse::Unauthorized().finish();
    };
    if !is_json(&request) {
        return Reply::error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &Value::Null,
            protocol::INVALID_REQUEST,
            "Content-Type must be application/json",
            None,
        )
        .into_response();
    }
    let mut payload: Payload = payload.into_inner();
    let body = match read_body(&request, &mut payload).await {
        Ok(body) => body,
        Err(problem) => {
            let message = if problem.status == 413 {
                format!("the message is larger than {MAX_BODY_BYTES} bytes")
            } else {
                "the message could not be read".to_owned()
            };
            let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::BAD_REQUEST);
            return Reply::error(
                status,
                &Value::Null,
                protocol::INVALID_REQUEST,
                &message,
                None,
            )
            .into_response();
        }
    };
    handle(&server, &principal, request.headers(), &body)
        .await
        .into_response()
}

async fn handle(
    server: &McpServer,
    principal: &McpPrincipal,
    headers: &HeaderMap,
    body: &[u8],
) -> Reply {
    let Ok(message) = serde_json::from_slice::<Value>(body) else {
        return Reply::error(
            StatusCode::BAD_REQUEST,
            &Value::Null,
            protocol::PARSE_ERROR,
            "Parse error",
            None,
        );
    };
    let Value::Object(message) = message else {
        let text = if message.is_array() {
            "batches are not supported; send one message per request"
        } else {
            "a message is a JSON object"
        };
        return Reply::error(
            StatusCode::BAD_REQUEST,
            &Value::Null,
            protocol::INVALID_REQUEST,
            text,
            None,
        );
    };
    let id = message.get("id").cloned();
    let id_for_errors = id
        .clone()
        .filter(|id| id.is_string() || id.is_number())
        .unwrap_or(Value::Null);
    if message.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Reply::error(
            StatusCode::BAD_REQUEST,
            &id_for_errors,
            protocol::INVALID_REQUEST,
            "jsonrpc must be \"2.0\"",
            None,
        );
    }
    let Some(method) = message.get("method").and_then(Value::as_str) else {
        // A response from the client: nothing to answer.
        if id.is_some() && (message.contains_key("result") || message.contains_key("error")) {
            return Reply::accepted();
        }
        return Reply::error(
            StatusCode::BAD_REQUEST,
            &id_for_errors,
            protocol::INVALID_REQUEST,
            "a request needs a method",
            None,
        );
    };
    let params = match message.get("params") {
        None | Some(Value::Null) => json!({}),
        Some(params @ Value::Object(_)) => params.clone(),
        Some(_) => {
            return Reply::error(
                StatusCode::BAD_REQUEST,
                &id_for_errors,
                protocol::INVALID_REQUEST,
                "params must be an object",
                None,
            );
        }
    };

    let meta_version = params
        .get("_meta")
        .and_then(|meta| meta.get(protocol::META_PROTOCOL_VERSION))
        .and_then(Value::as_str);
    let header_version = header(headers, protocol::HEADER_PROTOCOL_VERSION).map(str::trim);
    let era = if meta_version.is_some()
        || header_version.is_some_and(|v| v >= protocol::MODERN_VERSION)
    {
        Era::Stateless
    } else {
        Era::Handshake
    };

    if era == Era::Handshake
        && let Some(version) = header_version
        && !protocol::LEGACY_VERSIONS.contains(&version)
    {
        return Reply::error(
            StatusCode::BAD_REQUEST,
            &id_for_errors,
            protocol::INVALID_REQUEST,
            &format!("unsupported MCP-Protocol-Version `{version}`"),
            Some(json!({ "supported": protocol::LEGACY_VERSIONS })),
        );
    }
    if era == Era::Stateless
        && let Err(reply) = check_stateless(
            headers,
            method,
            &params,
            meta_version,
            header_version,
            &id_for_errors,
        )
    {
        return reply;
    }

    // A notification (no id) is acknowledged and has no answer.
    let Some(id) = id else {
        return Reply::accepted();
    };
    if !(id.is_string() || id.is_i64() || id.is_u64()) {
        return Reply::error(
            StatusCode::BAD_REQUEST,
            &Value::Null,
            protocol::INVALID_REQUEST,
            "id must be a string or an integer",
            None,
        );
    }

    let call = Call {
        era,
        method,
        params: &params,
        principal,
    };
    match server.dispatch(call).await {
        Outcome::Result(result) => Reply {
            status: StatusCode::OK,
            body: Some(protocol::result_response(&id, result)),
        },
        Outcome::Error {
            code,
            message,
            data,
        } => {
            let status = match (era, code) {
                (Era::Stateless, protocol::METHOD_NOT_FOUND) => StatusCode::NOT_FOUND,
                _ => StatusCode::OK,
            };
            Reply::error(status, &id, code, &message, data)
        }
    }
}

/// The stateless era's rules: the version in `_meta` is one we speak and
/// matches the header; `Mcp-Method` (and `Mcp-Name` where it applies)
/// repeat the body; the client's capabilities are declared.
fn check_stateless(
    headers: &HeaderMap,
    method: &str,
    params: &Value,
    meta_version: Option<&str>,
    header_version: Option<&str>,
    id: &Value,
) -> Result<(), Reply> {
    let bad = |code: i64, message: &str, data: Option<Value>| {
        Err(Reply::error(
            StatusCode::BAD_REQUEST,
            id,
            code,
            message,
            data,
        ))
    };
    let Some(version) = meta_version else {
        return bad(
            protocol::INVALID_PARAMS,
            &format!(
                "params._meta[\"{}\"] is required",
                protocol::META_PROTOCOL_VERSION
            ),
            None,
        );
    };
    if version != protocol::MODERN_VERSION {
        return bad(
            protocol::UNSUPPORTED_PROTOCOL_VERSION,
            "Unsupported protocol version",
            Some(json!({ "supported": [protocol::MODERN_VERSION], "requested": version })),
        );
    }
    if header_version != Some(version) {
        return bad(
            protocol::HEADER_MISMATCH,
            "MCP-Protocol-Version header does not match _meta",
            None,
        );
    }
    let method_header =
        header(headers, protocol::HEADER_METHOD).and_then(protocol::decode_header_value);
    if method_header.as_deref() != Some(method) {
        return bad(
            protocol::HEADER_MISMATCH,
            "Mcp-Method header does not match the method",
            None,
        );
    }
    let named = match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    };
    if let Some(field) = named {
        let expected = params.get(field).and_then(Value::as_str);
        let given = header(headers, protocol::HEADER_NAME).and_then(protocol::decode_header_value);
        if expected.is_none() || given.as_deref() != expected {
            return bad(
                protocol::HEADER_MISMATCH,
                &format!("Mcp-Name header does not match params.{field}"),
                None,
            );
        }
    }
    let declared = params
        .get("_meta")
        .and_then(|meta| meta.get(protocol::META_CLIENT_CAPABILITIES))
        .is_some_and(Value::is_object);
    if !declared {
        return bad(
            protocol::INVALID_PARAMS,
            &format!(
                "params._meta[\"{}\"] is required",
                protocol::META_CLIENT_CAPABILITIES
            ),
            None,
        );
    }
    Ok(())
}
