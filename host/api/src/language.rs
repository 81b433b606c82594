//! The language of the phrases a response carries, chosen by the request's
//! `Accept-Language` (see `settle_types::messages`): statuses are rendered
//! in it, and the response says which (`Content-Language`) and that it
//! depends on the header (`Vary: Accept-Language`).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use settle_types::messages::Lang;
use std::convert::Infallible;

/// The language a request asked for (English without a header).
#[derive(Clone, Copy, Debug)]
pub struct Language(pub Lang);

impl<S: Send + Sync> FromRequestParts<S> for Language {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok());
        Ok(Language(Lang::negotiate(header)))
    }
}

impl Language {
    /// Marks `response` as in this language.
    pub fn mark(self, mut response: Response) -> Response {
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_LANGUAGE,
            HeaderValue::from_static(self.0.tag()),
        );
        headers.append(header::VARY, HeaderValue::from_static("accept-language"));
        response
    }
}
