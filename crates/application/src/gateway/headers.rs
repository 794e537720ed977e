//! `Mcp-Param-{Name}` headers (2026-07-28): a tool may mark an argument in
//! its `inputSchema` with `x-mcp-header: "Name"`, asking clients to repeat
//! the argument's value in that header so that intermediaries can route on
//! it. A header the body does not back is a way to tell an upstream (or
//! something between it and Cola) one thing while Cola authorised another,
//! so the gateway passes such a header only when the tool marks it and its
//! value is the argument's, and drops every other.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

/// One argument a tool mirrors into a header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderParam {
    /// `Name` of `Mcp-Param-{Name}`, compared without regard to case.
    pub name: String,
    /// Where the argument is in `arguments`: property names, outermost first.
    pub path: Vec<String>,
}

/// The longest path into `properties` followed, and the most marks read,
/// so that a hostile schema cannot make the walk expensive.
const MAX_DEPTH: usize = 8;
const MAX_PARAMS: usize = 64;

/// The arguments `schema` marks `x-mcp-header`, reached through chains of
/// `properties` alone (as the specification allows). A schema whose marks
/// break the rules — a name that is not an HTTP token, one used twice, a
/// mark on anything but a string, integer or boolean — is treated as
/// marking nothing: clients leave such a tool out, and Cola passes none of
/// its headers.
#[must_use]
pub fn header_params(schema: &Value) -> Vec<HeaderParam> {
    let mut found = Vec::new();
    if collect(schema, &mut Vec::new(), &mut found).is_err() {
        return Vec::new();
    }
    found
}

struct Invalid;

fn collect(
    schema: &Value,
    path: &mut Vec<String>,
    found: &mut Vec<HeaderParam>,
) -> Result<(), Invalid> {
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        return Ok(());
    };
    if path.len() >= MAX_DEPTH {
        return Ok(());
    }
    for (property, definition) in properties {
        path.push(property.clone());
        if let Some(mark) = definition.get("x-mcp-header") {
            let name = mark.as_str().ok_or(Invalid)?;
            let primitive = matches!(
                definition.get("type").and_then(Value::as_str),
                Some("string" | "integer" | "boolean")
            );
            let repeated = found
                .iter()
                .any(|param: &HeaderParam| param.name.eq_ignore_ascii_case(name));
            if !is_token(name) || !primitive || repeated || found.len() >= MAX_PARAMS {
                return Err(Invalid);
            }
            found.push(HeaderParam {
                name: name.to_owned(),
                path: path.clone(),
            });
        }
        collect(definition, path, found)?;
        path.pop();
    }
    Ok(())
}

/// An HTTP field-name token (RFC 9110 §5.1).
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte))
}

/// The header value as the client meant it: plain, or the `=?base64?…?=`
/// form for a value a header cannot carry as it is.
fn decoded(value: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(value).ok()?;
    match text
        .strip_prefix("=?base64?")
        .and_then(|rest| rest.strip_suffix("?="))
    {
        Some(encoded) => String::from_utf8(STANDARD.decode(encoded).ok()?).ok(),
        None => Some(text.to_owned()),
    }
}

/// Whether the client's header `Mcp-Param-{suffix}` with `value` may reach
/// the upstream for a `tools/call` whose `arguments` are given, the tool
/// marking `params`: only when one of them is named `suffix` and the
/// argument it marks is present and equal to the value.
#[must_use]
pub fn mirrored_param_allowed(
    params: &[HeaderParam],
    arguments: &Value,
    suffix: &str,
    value: &[u8],
) -> bool {
    let Some(param) = params
        .iter()
        .find(|param| param.name.eq_ignore_ascii_case(suffix))
    else {
        return false;
    };
    let argument = param
        .path
        .iter()
        .try_fold(arguments, |value, name| value.get(name));
    let expected = match argument {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Bool(flag)) => flag.to_string(),
        Some(Value::Number(number)) if number.is_i64() || number.is_u64() => number.to_string(),
        _ => return false,
    };
    decoded(value).is_some_and(|given| given == expected)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "region": { "type": "string", "x-mcp-header": "Region" },
                "query": { "type": "string" },
                "options": { "type": "object", "properties": {
                    "limit": { "type": "integer", "x-mcp-header": "Limit" },
                    "dry": { "type": "boolean", "x-mcp-header": "Dry" }
                } }
            }
        })
    }

    #[test]
    fn marked_arguments_are_found_through_properties_only() {
        let params = header_params(&schema());
        let found: Vec<_> = params
            .iter()
            .map(|p| (p.name.as_str(), p.path.join(".")))
            .collect();
        assert!(found.contains(&("Region", "region".to_owned())));
        assert!(found.contains(&("Limit", "options.limit".to_owned())));
        assert!(found.contains(&("Dry", "options.dry".to_owned())));
        assert_eq!(found.len(), 3);
    }

    #[test]
    fn a_schema_with_a_broken_mark_marks_nothing() {
        for broken in [
            json!({"properties": {"a": {"type": "number", "x-mcp-header": "A"}}}),
            json!({"properties": {"a": {"type": "string", "x-mcp-header": "Bad Name"}}}),
            json!({"properties": {"a": {"type": "string", "x-mcp-header": "X"},
                                  "b": {"type": "string", "x-mcp-header": "x"}}}),
            json!({"properties": {"a": {"type": "string", "x-mcp-header": 7}}}),
        ] {
            assert!(header_params(&broken).is_empty(), "{broken}");
        }
    }

    #[test]
    fn a_header_passes_only_when_marked_and_equal_to_the_argument() {
        let params = header_params(&schema());
        let arguments = json!({ "region": "eu-west", "options": { "limit": 5, "dry": true } });
        assert!(mirrored_param_allowed(
            &params, &arguments, "Region", b"eu-west"
        ));
        assert!(mirrored_param_allowed(
            &params, &arguments, "region", b"eu-west"
        ));
        assert!(mirrored_param_allowed(&params, &arguments, "Limit", b"5"));
        assert!(mirrored_param_allowed(&params, &arguments, "Dry", b"true"));
        assert!(mirrored_param_allowed(
            &params,
            &arguments,
            "Region",
            b"=?base64?ZXUtd2VzdA==?="
        ));
        assert!(!mirrored_param_allowed(
            &params, &arguments, "Region", b"us-east"
        ));
        assert!(!mirrored_param_allowed(
            &params,
            &arguments,
            "Query",
            b"anything"
        ));
        assert!(!mirrored_param_allowed(
            &params,
            &json!({}),
            "Region",
            b"eu-west"
        ));
        assert!(!mirrored_param_allowed(
            &params, &arguments, "Limit", b"5.0"
        ));
    }
}
