//! Errors as RFC 9457 problem documents (`application/problem+json`): a
//! status, a title, a detail a person can act on, and, where one is at
//! fault, the field or line (`errors`).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// One problem with one part of the request.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct FieldError {
    /// A JSON pointer into the body, a query or header name, or `line:column`.
    pub at: String,
    pub message: String,
}

/// A problem document.
#[derive(Clone, Debug, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// Extra members for the client (e.g. the run an idempotency key names).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub extra: Option<serde_json::Map<String, serde_json::Value>>,
}

impl Problem {
    pub fn new(status: StatusCode, kind: &str, detail: impl Into<String>) -> Self {
        Problem {
            kind: format!("https://settle.dev/problems/{kind}"),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
            extra: None,
        }
    }

    pub fn at(mut self, at: impl Into<String>, message: impl Into<String>) -> Self {
        self.errors.push(FieldError {
            at: at.into(),
            message: message.into(),
        });
        self
    }

    pub fn with(mut self, key: &str, value: serde_json::Value) -> Self {
        self.extra
            .get_or_insert_with(Default::default)
            .insert(key.to_string(), value);
        self
    }

    pub fn bad_request(kind: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, kind, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", detail)
    }

    pub fn conflict(kind: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, kind, detail)
    }

    /// The host failed; the detail is logged, the client gets a plain line.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!("request failed: {detail}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("the host could not answer: {detail}"),
        )
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        response
    }
}

impl From<settle_types::store::StoreError> for Problem {
    fn from(e: settle_types::store::StoreError) -> Self {
        if e.is_fatal() {
            Problem::unavailable(e.to_string())
        } else {
            Problem::internal(e)
        }
    }
}

/// Turns any error response that is not yet a problem document (axum's own
/// rejections: unknown route, wrong method, body too large) into one, so
/// every 4xx and 5xx a client sees has the same shape.
pub async fn problems_everywhere(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    if is_problem {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_string();
    let (kind, detail) = match status {
        StatusCode::NOT_FOUND => (
            "not-found",
            "no such route; see /v1/openapi.json".to_string(),
        ),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method-not-allowed",
            "this route does not take that method; see /v1/openapi.json".to_string(),
        ),
        StatusCode::PAYLOAD_TOO_LARGE => ("too-large", format!("the body is too large: {text}")),
        _ if text.is_empty() => (
            "error",
            status.canonical_reason().unwrap_or("error").to_string(),
        ),
        _ => ("bad-request", text),
    };
    let mut problem = Problem::new(status, kind, detail).into_response();
    // Keep what the original said about methods and retries.
    for name in [header::ALLOW, header::RETRY_AFTER, header::WWW_AUTHENTICATE] {
        if let Some(v) = parts.headers.get(&name) {
            problem.headers_mut().insert(name, v.clone());
        }
    }
    problem
}
