//! Request bodies, checked before anything reads them: content type, JSON
//! syntax (with the line and column at fault), nesting depth and size.

use crate::problem::Problem;
use axum::http::{HeaderMap, StatusCode, header};
use serde_json::Value;
use settle_types::bounds;

/// The body as JSON: 415 for another content type, 400 naming the line
/// and column for bad JSON, 413/422 past the bounds of run inputs.
pub fn json(headers: &HeaderMap, body: &[u8], max_bytes: usize) -> Result<Value, Problem> {
    expect_type(headers, &["application/json"])?;
    if body.len() > max_bytes {
        return Err(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            format!(
                "the body has {} bytes; the limit is {max_bytes}",
                body.len()
            ),
        ));
    }
    let over_bounds = |e: bounds::BoundError| {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "over-bounds",
            format!("the body is over the host's bounds: {e}"),
        )
    };
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        // serde_json stops at 128 levels: valid JSON, over our bound too.
        if e.to_string().contains("recursion limit") {
            return over_bounds(bounds::BoundError::TooDeep { depth: 128 })
                .at(format!("{}:{}", e.line(), e.column()), "nested too deep");
        }
        Problem::bad_request("bad-json", format!("the body is not valid JSON: {e}"))
            .at(format!("{}:{}", e.line(), e.column()), e.to_string())
    })?;
    bounds::check_json(&value, max_bytes).map_err(over_bounds)?;
    Ok(value)
}

/// An optional JSON object body (operator actions): empty is `{}`.
pub fn object_or_empty(
    headers: &HeaderMap,
    body: &[u8],
    max_bytes: usize,
) -> Result<serde_json::Map<String, Value>, Problem> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Default::default());
    }
    match json(headers, body, max_bytes)? {
        Value::Object(map) => Ok(map),
        _ => Err(
            Problem::bad_request("bad-body", "the body must be a JSON object")
                .at("/", "not an object"),
        ),
    }
}

/// 415 unless the content type is one of `allowed` (parameters ignored).
pub fn expect_type(headers: &HeaderMap, allowed: &[&str]) -> Result<(), Problem> {
    let given = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    match given {
        Some(t) if allowed.contains(&t.as_str()) => Ok(()),
        Some(t) => Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            format!("the body is {t}; send {}", allowed.join(" or ")),
        )
        .at("Content-Type", format!("expected {}", allowed.join(" or ")))),
        None => Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            format!("no Content-Type; send {}", allowed.join(" or ")),
        )
        .at("Content-Type", "missing")),
    }
}

/// A string field of a JSON object: required or optional, at most `max` bytes.
pub fn text_field(
    map: &serde_json::Map<String, Value>,
    name: &str,
    required: bool,
    max: usize,
) -> Result<Option<String>, Problem> {
    match map.get(name) {
        None | Some(Value::Null) if !required => Ok(None),
        None | Some(Value::Null) => Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing-field",
            format!("'{name}' is required"),
        )
        .at(format!("/{name}"), "required")),
        Some(Value::String(s)) if s.len() <= max => Ok(Some(s.clone())),
        Some(Value::String(s)) => Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "field-too-long",
            format!("'{name}' has {} bytes; the limit is {max}", s.len()),
        )
        .at(format!("/{name}"), "too long")),
        Some(_) => Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "wrong-type",
            format!("'{name}' must be a string"),
        )
        .at(format!("/{name}"), "not a string")),
    }
}
