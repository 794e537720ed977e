//! `POST /mcp`: reads one JSON-RPC message, decides its era, checks the
//! stateless era's headers and `_meta`, and hands the call to the server.

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::http::header::HeaderMap;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use cola_application::McpPrincipal;
use serde_json::Value;

use cola_protocol::message::result_response;
use cola_protocol::{Headers, Message, Request, RpcError, read_message};

use crate::foundations::json::{BodyError, is_json, read_body};
use crate::mcp::server::{Call, McpServer, Outcome};

/// A JSON-RPC answer (already serialised) and the HTTP status it travels
/// with.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Option<Vec<u8>>,
}

impl Reply {
    pub(crate) fn accepted() -> Self {
        Self {
            status: StatusCode::ACCEPTED,
            body: None,
        }
    }

    fn ok<T: serde::Serialize>(id: &Value, result: &T) -> Self {
        match serde_json::to_vec(&result_response(id, result)) {
            Ok(body) => Self {
                status: StatusCode::OK,
                body: Some(body),
            },
            Err(error) => {
                tracing::error!(%error, "an MCP result could not be serialised");
                RpcError::internal().answering(id).into()
            }
        }
    }

    pub(crate) fn into_response(self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        match self.body {
            Some(body) => response.content_type("application/json").body(body),
            None => response.finish(),
        }
    }
}

impl From<RpcError> for Reply {
    fn from(error: RpcError) -> Self {
        Self {
            status: StatusCode::from_u16(error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            body: Some(error.to_body()),
        }
    }
}

/// The request's headers as the protocol reads them.
pub(crate) struct HeaderText<'h>(pub &'h HeaderMap);

impl Headers for HeaderText<'_> {
    fn text(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(|value| value.to_str().ok())
    }
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
    let mut payload: Payload = payload.into_inner();
    let body = match read_json_body(&request, &mut payload).await {
        Ok(body) => body,
        Err(reply) => return reply.into_response(),
    };
    handle(&server, &principal, request.headers(), &body)
        .await
        .into_response()
}

/// The body of an MCP POST: JSON, uncompressed, within the size limit; or
/// the JSON-RPC refusal to send (both MCP endpoints answer alike).
pub(crate) async fn read_json_body(
    request: &HttpRequest,
    payload: &mut Payload,
) -> Result<web::Bytes, Reply> {
    if !is_json(request) {
        return Err(RpcError::not_json().into());
    }
    read_body(request, payload).await.map_err(|error| {
        let status = match error {
            BodyError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::Encoded(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            BodyError::Unreadable => StatusCode::BAD_REQUEST,
        };
        RpcError::unreadable_body(status.as_u16(), error.to_string()).into()
    })
}

async fn handle(
    server: &McpServer,
    principal: &McpPrincipal,
    headers: &HeaderMap,
    body: &[u8],
) -> Reply {
    let request = match read_message(&HeaderText(headers), body) {
        Ok(Message::Request(request)) => request,
        Ok(Message::Notification(_) | Message::Response(_)) => return Reply::accepted(),
        Err(refused) => return refused.into(),
    };
    let Request {
        era,
        id,
        method,
        params,
    } = request;
    let call = Call {
        era,
        method: &method,
        params: &params,
        principal,
    };
    match server.dispatch(call).await {
        Outcome::Result(result) => Reply::ok(&id, &result),
        Outcome::Error(error) => error.answering(&id).into(),
    }
}
