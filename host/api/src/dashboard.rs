//! The dashboard, served at `/`: one HTML page with a little JavaScript that
//! reads the same `/v1` API every client uses, live through the SSE stream.
//! Compiled into the binary; no build step and no other server at run time.

use axum::http::header;
use axum::response::{IntoResponse, Response};

const PAGE: &str = include_str!("../assets/dashboard.html");

pub async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
        .into_response()
}
