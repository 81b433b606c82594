//! `wasi:http`, restricted: a request leaves only for a host in the plugin's
//! `allowed_outbound_hosts`; any other is refused and recorded.

use super::{CallState, QUOTE_BYTES};
use crate::budget::{Denials, cut};
use crate::grants::Grants;
use settle_types::executor::{Downstream, MAX_DOWNSTREAMS};
use std::sync::{Arc, Mutex};
use wasmtime_wasi_http::{WasiBody, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

impl WasiHttpView for CallState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}

/// `wasi:http` hooks that let requests through only to allowed hosts.
pub(crate) struct OutboundPolicy {
    grants: Arc<Grants>,
    pub(crate) denials: Denials,
    /// How each downstream host answered, shared with the requests' futures.
    downstream: Arc<Mutex<Answers>>,
    /// Answers requests instead of the network, when set.
    pub(crate) stand_in: Option<Arc<crate::stand_in::StandIn>>,
    /// Records the exchanges, when the plugin's are recorded.
    pub(crate) recorder: Option<super::exchanges::Recorder>,
}

/// Per downstream host: requests sent, answered well, and failed.
#[derive(Default)]
struct Answers(Vec<(String, Tally)>);

#[derive(Default, Clone, Copy)]
struct Tally {
    sent: u32,
    answered: u32,
    failed: u32,
}

impl Answers {
    /// The tally of `authority`; `None` past [`MAX_DOWNSTREAMS`] hosts.
    fn of(&mut self, authority: &str) -> Option<&mut Tally> {
        let at = match self.0.iter().position(|(a, _)| a == authority) {
            Some(at) => at,
            None if self.0.len() < MAX_DOWNSTREAMS => {
                self.0.push((authority.to_string(), Tally::default()));
                self.0.len() - 1
            }
            None => return None,
        };
        Some(&mut self.0[at].1)
    }
}

impl OutboundPolicy {
    pub(crate) fn new(grants: Arc<Grants>) -> Self {
        OutboundPolicy {
            grants,
            denials: Denials::default(),
            downstream: Arc::default(),
            stand_in: None,
            recorder: None,
        }
    }

    /// The exchanges recorded, when they are.
    pub(crate) fn take_exchanges(&mut self) -> Vec<settle_types::executor::Exchange> {
        self.recorder.as_ref().map(|r| r.take()).unwrap_or_default()
    }

    /// How each host the call sent requests to fared. A request still
    /// without an answer when the call ended counts as failed only when
    /// the call `timed_out` (it was waiting for it): a plugin that returns
    /// without waiting for its requests says nothing about the host.
    pub(crate) fn take_downstream(&mut self, timed_out: bool) -> Vec<Downstream> {
        let answers =
            std::mem::take(&mut *self.downstream.lock().unwrap_or_else(|p| p.into_inner()));
        answers
            .0
            .into_iter()
            .map(|(authority, t)| Downstream {
                authority,
                failed: t.failed > 0 || (timed_out && t.answered.saturating_add(t.failed) < t.sent),
            })
            .collect()
    }
}

type SendFuture = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<WasiBody>,
                Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
            )>,
        > + Send,
>;

impl WasiHttpHooks for OutboundPolicy {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> SendFuture {
        let uri = request.uri();
        let host = uri.host().unwrap_or_default().to_string();
        let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        if !self.grants.allows_host(&host, port) {
            self.denials.push(
                "outbound-http",
                format!(
                    "{} {}:{port} is not in allowed_outbound_hosts",
                    request.method(),
                    cut(&host, QUOTE_BYTES)
                ),
            );
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        if let Some(stand_in) = self.stand_in.clone() {
            return scripted(stand_in, request);
        }
        let authority = format!("{}:{port}", host.to_ascii_lowercase());
        let downstream = self.downstream.clone();
        let tally = move |outcome: Option<bool>| {
            let mut answers = downstream.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(t) = answers.of(&authority) {
                match outcome {
                    None => t.sent = t.sent.saturating_add(1),
                    Some(false) => t.answered = t.answered.saturating_add(1),
                    Some(true) => t.failed = t.failed.saturating_add(1),
                }
            }
        };
        tally(None);
        let recording = self
            .recorder
            .as_ref()
            .and_then(|r| r.start(request.method().as_str(), &request.uri().to_string()));
        let request = match &recording {
            Some(r) => {
                let (parts, body) = request.into_parts();
                http::Request::from_parts(parts, r.tee_request(body))
            }
            None => request,
        };
        Box::new(async move {
            use http_body_util::BodyExt;
            let sent = wasmtime_wasi_http::default_send_request(request, options).await;
            let sent = match (sent, &recording) {
                (Ok((response, io)), Some(r)) => {
                    r.answered(response.status().as_u16());
                    Ok((response.map(|b| r.tee_response(b.boxed_unsync())), io))
                }
                (other, _) => other.map(|(response, io)| (response.map(BodyExt::boxed_unsync), io)),
            };
            // A host that cannot be reached, is failing or sheds load.
            let failed = sent.as_ref().map_or(true, |(r, _)| {
                r.status().is_server_error() || r.status() == http::StatusCode::TOO_MANY_REQUESTS
            });
            tally(Some(failed));
            let (response, io) = sent?;
            Ok((
                response,
                Box::new(io) as Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
            ))
        })
    }
}

/// The stand-in's answer to `request`; a request it has no answer for
/// fails as a connection refused would (nothing left the host).
fn scripted(
    stand_in: Arc<crate::stand_in::StandIn>,
    request: http::Request<WasiBody>,
) -> SendFuture {
    use http_body_util::{BodyExt, Full, Limited};
    Box::new(async move {
        let (parts, body) = request.into_parts();
        let body = Limited::new(body, crate::stand_in::MAX_BODY_BYTES)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let headers = parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let answer = stand_in.answer(
            parts.method.as_str(),
            &parts.uri.to_string(),
            headers,
            &body,
        );
        let Some(answer) = answer else {
            return Err(wasmtime_wasi_http::Error::ConnectionRefused);
        };
        let mut response = http::Response::builder().status(answer.status);
        for (k, v) in &answer.headers {
            response = response.header(k, v);
        }
        let body = Full::new(bytes::Bytes::from(answer.body))
            .map_err(|never| match never {})
            .boxed_unsync();
        let response = response
            .body(body)
            .map_err(|e| wasmtime_wasi_http::Error::InternalError(Some(e.to_string())))?;
        Ok((
            response,
            Box::new(async { Ok(()) })
                as Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
        ))
    })
}
