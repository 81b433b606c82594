//! The host side of one plugin call: the store's data, and the functions a
//! plugin may import (`log`, `progress`, `kv`, `config`, and `wasi:http`
//! restricted to the plugin's allowed hosts).
//!
//! A refused request (kv not granted, a host not allowed) is an error the
//! plugin sees, and a [`Denial`] the engine records as an event.

use super::bindings::settle::plugin::{config, kv, log, progress};
use super::call::{Denial, ProgressSink};
use super::grants::Grants;
use super::limits::CallLimiter;
use std::sync::Arc;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

/// Durable plugin-scoped key-value state, provided by the store.
pub trait PluginKv: Send + Sync {
    fn get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, String>;
    fn set(&self, plugin: &str, key: &str, value: &[u8]) -> Result<(), String>;
    fn delete(&self, plugin: &str, key: &str) -> Result<(), String>;
}

/// Who is calling, for logs and attribution.
#[derive(Clone, Debug)]
pub struct Caller {
    pub plugin: Arc<str>,
    pub run_id: String,
    pub step: String,
}

/// The data of a call's store.
pub struct CallState {
    pub caller: Caller,
    pub grants: Arc<Grants>,
    pub kv: Arc<dyn PluginKv>,
    pub max_kv_value_bytes: usize,
    pub progress: Option<ProgressSink>,
    pub limiter: CallLimiter,
    pub denials: Vec<Denial>,
    pub stderr: MemoryOutputPipe,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    outbound: OutboundPolicy,
}

impl CallState {
    pub fn new(
        caller: Caller,
        grants: Arc<Grants>,
        kv: Arc<dyn PluginKv>,
        max_kv_value_bytes: usize,
        progress: Option<ProgressSink>,
        limiter: CallLimiter,
    ) -> Self {
        // Nothing is inherited: no environment, no preopened directories, no
        // sockets. stderr is captured so a panic message can be reported.
        let stderr = MemoryOutputPipe::new(8 * 1024);
        let wasi = wasmtime_wasi::WasiCtxBuilder::new()
            .stderr(stderr.clone())
            .build();
        CallState {
            outbound: OutboundPolicy {
                grants: grants.clone(),
                denials: Vec::new(),
            },
            caller,
            grants,
            kv,
            max_kv_value_bytes,
            progress,
            limiter,
            denials: Vec::new(),
            stderr,
            wasi,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
        }
    }

    /// Every refusal of this call, kv and outbound alike.
    pub fn take_denials(&mut self) -> Vec<Denial> {
        let mut all = std::mem::take(&mut self.denials);
        all.append(&mut self.outbound.denials);
        all
    }

    fn deny_kv(&mut self, op: &str, key: &str) -> kv::KvError {
        self.denials.push(Denial {
            capability: "kv".into(),
            detail: format!(
                "{op} '{key}': key-value state is not granted to plugin '{}'",
                self.caller.plugin
            ),
        });
        kv::KvError::Denied
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

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
struct OutboundPolicy {
    grants: Arc<Grants>,
    denials: Vec<Denial>,
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
            self.denials.push(Denial {
                capability: "outbound-http".into(),
                detail: format!(
                    "{} {host}:{port} is not in allowed_outbound_hosts",
                    request.method()
                ),
            });
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

impl log::Host for CallState {
    fn write(&mut self, level: log::Level, message: String) {
        let c = &self.caller;
        let message = truncate(&message, 4096);
        match level {
            log::Level::Trace => {
                tracing::trace!(plugin = %c.plugin, run = %c.run_id, step = %c.step, "{message}")
            }
            log::Level::Debug => {
                tracing::debug!(plugin = %c.plugin, run = %c.run_id, step = %c.step, "{message}")
            }
            log::Level::Info => {
                tracing::info!(plugin = %c.plugin, run = %c.run_id, step = %c.step, "{message}")
            }
            log::Level::Warn => {
                tracing::warn!(plugin = %c.plugin, run = %c.run_id, step = %c.step, "{message}")
            }
            log::Level::Error => {
                tracing::error!(plugin = %c.plugin, run = %c.run_id, step = %c.step, "{message}")
            }
        }
    }
}

impl progress::Host for CallState {
    fn report(&mut self, fraction: f32, message: String) {
        if let Some(sink) = &self.progress {
            let fraction = if fraction.is_finite() {
                fraction.clamp(0.0, 1.0)
            } else {
                0.0
            };
            sink(fraction, truncate(&message, 200));
        }
    }
}

impl config::Host for CallState {
    fn get(&mut self, key: String) -> Option<String> {
        self.grants.config.get(&key).cloned()
    }
}

impl kv::Host for CallState {
    fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, kv::KvError> {
        if !self.grants.kv {
            return Err(self.deny_kv("get", &key));
        }
        self.kv
            .get(&self.caller.plugin, &key)
            .map_err(kv::KvError::Store)
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), kv::KvError> {
        if !self.grants.kv {
            return Err(self.deny_kv("set", &key));
        }
        if key.len() > 1024 || value.len() > self.max_kv_value_bytes {
            return Err(kv::KvError::TooLarge(format!(
                "key of {} bytes (max 1024) with value of {} bytes (max {})",
                key.len(),
                value.len(),
                self.max_kv_value_bytes
            )));
        }
        self.kv
            .set(&self.caller.plugin, &key, &value)
            .map_err(kv::KvError::Store)
    }

    fn delete(&mut self, key: String) -> Result<(), kv::KvError> {
        if !self.grants.kv {
            return Err(self.deny_kv("delete", &key));
        }
        self.kv
            .delete(&self.caller.plugin, &key)
            .map_err(kv::KvError::Store)
    }
}

impl super::bindings::settle::plugin::types::Host for CallState {}

/// Cuts `text` to at most `max` bytes, on a character boundary.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}
