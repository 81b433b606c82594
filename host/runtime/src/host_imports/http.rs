//! `wasi:http`, restricted: a request leaves only for a host in the plugin's
//! `allowed_outbound_hosts`; any other is refused and recorded.

use super::{CallState, QUOTE_BYTES};
use crate::budget::{Denials, cut};
use crate::grants::Grants;
use std::sync::Arc;
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
}

impl OutboundPolicy {
    pub(crate) fn new(grants: Arc<Grants>) -> Self {
        OutboundPolicy {
            grants,
            denials: Denials::default(),
        }
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
        Box::new(async move {
            use http_body_util::BodyExt;
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
            ))
        })
    }
}
