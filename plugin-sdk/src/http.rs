//! Outbound HTTP for plugins, over `wasi:http`.
//!
//! The host only lets a plugin reach the hosts its operator allowed
//! (`allowed_outbound_hosts` in `settle.toml`); any other request fails with
//! a permanent [`StepError`] naming the host. Calls block the plugin until the
//! answer arrives, which is what a step wants: one change, then its result.
//!
//! Status codes map to [`StepError`] the way a careful client would: 5xx, 408
//! and 429 are retryable (429 and 503 honour `Retry-After`), other 4xx are
//! permanent, 422 is invalid input.

use crate::StepError;
use serde::Serialize;
use serde::de::DeserializeOwned;
use wasi::http::outgoing_handler;
use wasi::http::types::{
    ErrorCode, Fields, IncomingResponse, Method, OutgoingBody, OutgoingRequest, Scheme,
};
use wasi::io::streams::StreamError;

/// An HTTP answer with a 2xx status.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    /// The body as JSON of type `T`; a body that does not parse is a permanent error.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, StepError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            StepError::permanent(format!("response body is not the expected JSON: {e}"))
        })
    }
}

/// `POST url` with a JSON body and the `Idempotency-Key` header.
pub fn post_json<B: Serialize>(
    url: &str,
    idempotency_key: &str,
    body: &B,
) -> Result<Response, StepError> {
    let body = serde_json::to_vec(body)
        .map_err(|e| StepError::permanent(format!("request body cannot be encoded: {e}")))?;
    send(Method::Post, url, Some(idempotency_key), Some(&body))
}

/// `GET url`.
pub fn get(url: &str) -> Result<Response, StepError> {
    send(Method::Get, url, None, None)
}

/// `GET url`, where 404 means "there is none" (`Ok(None)`), not an error:
/// what a compensation asks when it looks up an effect that may not exist.
pub fn get_optional(url: &str) -> Result<Option<Response>, StepError> {
    match send_raw(Method::Get, url, None, None)? {
        (404, _, _) => Ok(None),
        (status, retry_after_ms, body) => classify(url, status, retry_after_ms, body).map(Some),
    }
}

struct Url<'a> {
    scheme: Scheme,
    authority: &'a str,
    path: &'a str,
}

fn parse_url(url: &str) -> Result<Url<'_>, StepError> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("http://") {
        (Scheme::Http, rest)
    } else if let Some(rest) = url.strip_prefix("https://") {
        (Scheme::Https, rest)
    } else {
        return Err(StepError::permanent(format!(
            "url '{url}' must start with http:// or https://"
        )));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    Ok(Url {
        scheme,
        authority,
        path,
    })
}

fn send(
    method: Method,
    url: &str,
    idempotency_key: Option<&str>,
    body: Option<&[u8]>,
) -> Result<Response, StepError> {
    let (status, retry_after_ms, body) = send_raw(method, url, idempotency_key, body)?;
    classify(url, status, retry_after_ms, body)
}

/// Sends a request; the status, `Retry-After` in ms and body of the answer.
fn send_raw(
    method: Method,
    url: &str,
    idempotency_key: Option<&str>,
    body: Option<&[u8]>,
) -> Result<(u16, Option<u64>, Vec<u8>), StepError> {
    let parsed = parse_url(url)?;
    let mut headers: Vec<(String, Vec<u8>)> = vec![("accept".into(), b"application/json".to_vec())];
    if body.is_some() {
        headers.push(("content-type".into(), b"application/json".to_vec()));
    }
    if let Some(key) = idempotency_key {
        headers.push(("idempotency-key".into(), key.as_bytes().to_vec()));
    }
    let fields = Fields::from_list(&headers)
        .map_err(|e| StepError::permanent(format!("bad request header: {e:?}")))?;
    let request = OutgoingRequest::new(fields);
    let invalid = |what: &str| StepError::permanent(format!("{url}: invalid {what}"));
    request
        .set_method(&method)
        .map_err(|()| invalid("method"))?;
    request
        .set_scheme(Some(&parsed.scheme))
        .map_err(|()| invalid("scheme"))?;
    request
        .set_authority(Some(parsed.authority))
        .map_err(|()| invalid("host"))?;
    request
        .set_path_with_query(Some(parsed.path))
        .map_err(|()| invalid("path"))?;
    let outgoing_body = request.body().map_err(|()| invalid("body"))?;

    let pending = outgoing_handler::handle(request, None).map_err(|e| transport_error(url, e))?;
    let sent = write_body(url, outgoing_body, body.unwrap_or_default());
    if let Err(write_error) = sent {
        // The host may have refused the request, which closes the body
        // stream: its answer says why, and that is the error to report.
        pending.subscribe().block();
        if let Some(Ok(Err(code))) = pending.get() {
            return Err(transport_error(url, code));
        }
        return Err(write_error);
    }

    let response = loop {
        match pending.get() {
            Some(Ok(Ok(response))) => break response,
            Some(Ok(Err(e))) => return Err(transport_error(url, e)),
            Some(Err(())) => return Err(StepError::retryable(format!("{url}: response lost"))),
            None => pending.subscribe().block(),
        }
    };
    let status = response.status();
    let retry_after_ms = retry_after(&response);
    let body = read_body(url, response)?;
    Ok((status, retry_after_ms, body))
}

fn write_body(url: &str, outgoing: OutgoingBody, body: &[u8]) -> Result<(), StepError> {
    {
        let stream = outgoing
            .write()
            .map_err(|()| StepError::permanent(format!("{url}: request body unavailable")))?;
        for chunk in body.chunks(4096) {
            stream.blocking_write_and_flush(chunk).map_err(|e| {
                StepError::retryable(format!("{url}: writing the body failed: {e:?}"))
            })?;
        }
    }
    OutgoingBody::finish(outgoing, None).map_err(|e| transport_error(url, e))
}

fn retry_after(response: &IncomingResponse) -> Option<u64> {
    let headers = response.headers();
    let value = headers.get("retry-after").into_iter().next()?;
    let seconds: u64 = std::str::from_utf8(&value).ok()?.trim().parse().ok()?;
    Some(seconds.saturating_mul(1000))
}

fn read_body(url: &str, response: IncomingResponse) -> Result<Vec<u8>, StepError> {
    let incoming = response
        .consume()
        .map_err(|()| StepError::retryable(format!("{url}: response body unavailable")))?;
    let mut out = Vec::new();
    {
        let stream = incoming
            .stream()
            .map_err(|()| StepError::retryable(format!("{url}: response body unavailable")))?;
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => out.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(e) => {
                    return Err(StepError::retryable(format!(
                        "{url}: reading the body failed: {e:?}"
                    )));
                }
            }
        }
    }
    Ok(out)
}

fn classify(
    url: &str,
    status: u16,
    retry_after_ms: Option<u64>,
    body: Vec<u8>,
) -> Result<Response, StepError> {
    let text = || String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
    match status {
        200..=299 => Ok(Response { status, body }),
        408 | 429 | 500..=599 => Err(StepError::Retryable {
            message: format!("{url}: HTTP {status}: {}", text()),
            retry_after_ms,
        }),
        422 => Err(StepError::invalid_input(format!(
            "{url}: HTTP 422: {}",
            text()
        ))),
        _ => Err(StepError::permanent(format!(
            "{url}: HTTP {status}: {}",
            text()
        ))),
    }
}

fn transport_error(url: &str, e: ErrorCode) -> StepError {
    match e {
        ErrorCode::HttpRequestDenied => StepError::permanent(format!(
            "{url}: the host does not allow this plugin to reach that host"
        )),
        other => StepError::retryable(format!("{url}: {other:?}")),
    }
}
