//! `GET /api/docs`: the API reference as one HTML page, rendered on the
//! server from the OpenAPI document (`GET /api/openapi.json`) once, at the
//! first request. No script and nothing fetched from elsewhere: the page
//! uses the console's stylesheet, and its Content-Security-Policy allows
//! nothing else (decision 143).

use std::fmt::Write;
use std::sync::LazyLock;

use actix_web::HttpResponse;
use actix_web::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use serde_json::Value;

use super::openapi::DOCUMENT;
use crate::foundations::html::escape;

/// Same-origin styles and nothing else: no script, no frame, no form.
const POLICY: &str = "default-src 'none'; style-src 'self'; base-uri 'none'; \
                      form-action 'none'; frame-ancestors 'none'";

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

static PAGE: LazyLock<String> = LazyLock::new(|| match serde_json::from_str(&DOCUMENT) {
    Ok(document) => render(&document),
    Err(_) => "<!doctype html><title>API reference · Cola</title><p>The API document \
               cannot be read; see /api/openapi.json.</p>"
        .to_owned(),
});

/// `GET /api/docs`: public, like the document it renders.
pub async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header((CONTENT_SECURITY_POLICY, POLICY))
        .insert_header((CACHE_CONTROL, "public, max-age=300"))
        .body(PAGE.as_str())
}

/// The text at `index` (a field name, or an array position), or nothing.
fn text<I: serde_json::value::Index>(value: &Value, index: I) -> &str {
    value.get(index).and_then(Value::as_str).unwrap_or_default()
}

/// The whole page: the document's title and description, then every
/// operation, grouped by its first tag in the document's tag order.
fn render(document: &Value) -> String {
    let info = &document["info"];
    let mut html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>API reference · Cola</title>\
         <link rel=\"stylesheet\" href=\"/console/assets/app.css\"></head>\
         <body><main class=\"reference\"><h1>{} {}</h1><p>{}</p>\
         <p>The same as a document: <a href=\"/api/openapi.json\">/api/openapi.json</a> \
         (OpenAPI {}). <a href=\"/console\">The console</a>.</p>",
        escape(text(info, "title")),
        escape(text(info, "version")),
        escape(text(info, "description")),
        escape(text(document, "openapi")),
    );
    let operations = operations(document);
    let tags: &[Value] = document["tags"].as_array().map_or(&[], Vec::as_slice);
    for tag in tags {
        let name = text(tag, "name");
        let _ = write!(
            html,
            "<section id=\"tag-{id}\"><h2>{name}</h2><p>{description}</p>",
            id = escape(name),
            name = escape(name),
            description = escape(text(tag, "description")),
        );
        for (_, method, path, operation) in operations.iter().filter(|(t, ..)| *t == name) {
            html.push_str(&render_operation(method, path, operation));
        }
        html.push_str("</section>");
    }
    let untagged: Vec<_> = operations
        .iter()
        .filter(|(t, ..)| !tags.iter().any(|tag| text(tag, "name") == *t))
        .collect();
    if !untagged.is_empty() {
        html.push_str("<section><h2>Other</h2>");
        for (_, method, path, operation) in untagged {
            html.push_str(&render_operation(method, path, operation));
        }
        html.push_str("</section>");
    }
    html.push_str("</main></body></html>");
    html
}

/// Every operation as (first tag, method, path, operation), in path order.
fn operations(document: &Value) -> Vec<(&str, &'static str, &str, &Value)> {
    let Some(paths) = document["paths"].as_object() else {
        return Vec::new();
    };
    paths
        .iter()
        .flat_map(|(path, item)| {
            METHODS.into_iter().filter_map(move |method| {
                let operation = item.get(method)?;
                Some((
                    text(&operation["tags"], 0),
                    method,
                    path.as_str(),
                    operation,
                ))
            })
        })
        .collect()
}

/// One operation: method and path, summary, description, parameters, the
/// body it takes and the answers it gives.
fn render_operation(method: &str, path: &str, operation: &Value) -> String {
    let mut html = format!(
        "<article class=\"operation\"><h3><code>{} {}</code></h3><p><strong>{}</strong></p><p>{}</p>",
        method.to_uppercase(),
        escape(path),
        escape(text(operation, "summary")),
        escape(text(operation, "description")),
    );
    if let Some(parameters) = operation["parameters"].as_array() {
        html.push_str("<table><tr><th>parameter</th><th>in</th><th>required</th><th></th></tr>");
        for parameter in parameters {
            let _ = write!(
                html,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(text(parameter, "name")),
                escape(text(parameter, "in")),
                if parameter["required"].as_bool() == Some(true) {
                    "yes"
                } else {
                    "no"
                },
                escape(text(parameter, "description")),
            );
        }
        html.push_str("</table>");
    }
    if let Some(content) = operation["requestBody"]["content"].as_object() {
        for (media, body) in content {
            let _ = write!(
                html,
                "<p>Body: <code>{}</code> {}</p>",
                escape(media),
                escape(&schema_name(&body["schema"])),
            );
        }
    }
    if let Some(responses) = operation["responses"].as_object() {
        html.push_str("<table><tr><th>status</th><th>answer</th></tr>");
        for (status, response) in responses {
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td></tr>",
                escape(status),
                escape(text(response, "description")),
            );
        }
        html.push_str("</table>");
    }
    html.push_str("</article>");
    html
}

/// A schema as a reader names it: the referenced component's name, or its
/// type.
fn schema_name(schema: &Value) -> String {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => reference.rsplit('/').next().unwrap_or(reference).to_owned(),
        None => text(schema, "type").to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_operation_is_on_the_page() {
        let document: Value = serde_json::from_str(&DOCUMENT).expect("the document is JSON");
        let page = render(&document);
        let paths = document["paths"].as_object().expect("paths");
        assert!(paths.len() >= 15);
        for (path, item) in paths {
            for method in METHODS {
                if item.get(method).is_some() {
                    let heading = format!("{} {}", method.to_uppercase(), escape(path));
                    assert!(page.contains(&heading), "{heading}");
                }
            }
        }
        assert!(!page.contains("<script"));
    }

    #[test]
    fn text_from_the_document_is_escaped() {
        let document = serde_json::json!({
            "info": { "title": "<b>x</b>", "version": "1" },
            "tags": [{ "name": "t", "description": "\"quoted\"" }],
            "paths": { "/a": { "get": { "tags": ["t"], "summary": "<script>alert(1)</script>" } } }
        });
        let page = render(&document);
        assert!(!page.contains("<script>"));
        assert!(page.contains("&lt;script&gt;"));
        assert!(page.contains("&lt;b&gt;x&lt;/b&gt;"));
    }
}
