//! `cola_protocol::read_message`, the JSON-RPC envelope check of `POST /mcp`
//! and of the gateway, on arbitrary bodies and MCP headers:
//!
//! - it never panics;
//! - a refusal is a 4xx with one JSON-RPC error object whose id is null or
//!   the message's own string or integer id (a float id is not echoed: it
//!   would not survive the round trip exactly);
//! - a message read as a request has `jsonrpc: "2.0"`, a method equal to the
//!   body's, a string or integer id equal to the body's and object params.

#![no_main]

use std::collections::HashMap;

use arbitrary::Arbitrary;
use cola_protocol::{Message, read_message};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

#[derive(Arbitrary, Debug)]
struct Input {
    version: Option<Version>,
    method: Option<String>,
    name: Option<String>,
    body: Body,
}

#[derive(Arbitrary, Debug)]
enum Version {
    Legacy,
    Modern,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Body {
    Bytes(Vec<u8>),
    /// A body of the right outline with arbitrary pieces, to get past the
    /// JSON parser more often than random bytes do.
    Outline {
        id: String,
        method: String,
        params: String,
    },
}

fn header_map(input: &Input) -> HashMap<&'static str, String> {
    let mut headers = HashMap::new();
    let mut put = |name: &'static str, value: &str| {
        headers.insert(name, value.to_owned());
    };
    match &input.version {
        Some(Version::Legacy) => put("mcp-protocol-version", "2025-11-25"),
        Some(Version::Modern) => put("mcp-protocol-version", "2026-07-28"),
        Some(Version::Other(text)) => put("mcp-protocol-version", text),
        None => {}
    }
    if let Some(method) = &input.method {
        put("mcp-method", method);
    }
    if let Some(name) = &input.name {
        put("mcp-name", name);
    }
    headers
}

fuzz_target!(|input: Input| {
    let body = match &input.body {
        Body::Bytes(bytes) => bytes.clone(),
        Body::Outline { id, method, params } => format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":{method},"params":{params}}}"#
        )
        .into_bytes(),
    };
    let sent: Option<Value> = serde_json::from_slice(&body).ok();
    let sent_id = sent
        .as_ref()
        .and_then(|message| message.get("id"))
        .filter(|id| id.is_string() || id.is_i64() || id.is_u64());
    match read_message(&header_map(&input), &body) {
        Ok(Message::Request(request)) => {
            let sent = sent.expect("a request was read from valid JSON");
            assert_eq!(sent["jsonrpc"], "2.0");
            assert_eq!(sent["method"].as_str(), Some(request.method.as_str()));
            assert!(request.id.is_string() || request.id.is_i64() || request.id.is_u64());
            assert_eq!(sent.get("id"), Some(&request.id));
            assert!(request.params.is_object());
        }
        Ok(Message::Notification(_) | Message::Response(_)) => {
            let sent = sent.expect("an acknowledgement of valid JSON");
            assert_eq!(sent["jsonrpc"], "2.0");
        }
        Err(refusal) => {
            assert!((400..500).contains(&refusal.status), "{:?}", refusal.status);
            let answer: Value = serde_json::from_slice(&refusal.to_body()).expect("JSON");
            assert_eq!(answer["jsonrpc"], "2.0");
            assert!(answer["error"]["code"].is_i64());
            let id = &answer["id"];
            assert!(id.is_null() || sent_id == Some(id), "{id} for {sent_id:?}");
        }
    }
});
