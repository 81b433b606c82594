//! The host side of one plugin call: the store's data, and the functions a
//! plugin may import (`log`, `progress`, `kv`, `config`, and `wasi:http`
//! restricted to the plugin's allowed hosts).
//!
//! A refused request (kv not granted, a host not allowed, a setting the
//! operator did not configure, a kv quota reached) is an answer the plugin
//! sees, and a [`Denial`] the engine records as an event. Everything a plugin
//! sends through these functions is bounded per call (see [`crate::budget`]),
//! and every one of them checks the call's deadline first.

use crate::bindings::settle::plugin::{config, kv, log, progress};
use crate::budget::{Denials, LogBudget, ProgressGate, RuntimeStats, cut};
use crate::grants::Grants;
use crate::kv::{KvRefusal, KvSession, KvWrite, PluginKv};
use crate::limits::{CallLimiter, Limits};
use settle_types::executor::{Denial, ProgressSink};
use std::sync::Arc;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

/// How much of a key or URL a refusal quotes.
const QUOTE_BYTES: usize = 64;

/// Who is calling, for logs and attribution.
#[derive(Clone, Debug)]
pub struct Caller {
    pub plugin: Arc<str>,
    pub run_id: String,
    pub step: String,
    pub attempt: u32,
    pub operation_id: String,
}

/// The data of a call's store.
pub struct CallState {
    pub caller: Caller,
    pub grants: Arc<Grants>,
    pub limits: Limits,
    kv_store: Arc<dyn PluginKv>,
    kv: KvSession,
    progress: Option<ProgressSink>,
    progress_gate: ProgressGate,
    log: LogBudget,
    denials: Denials,
    stats: Arc<RuntimeStats>,
    pub limiter: CallLimiter,
    pub stderr: MemoryOutputPipe,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    outbound: OutboundPolicy,
}

/// What a call left behind once it ended: refusals to record, kv writes to
/// apply if it succeeded.
pub struct CallLeftovers {
    pub denials: Vec<Denial>,
    pub kv_writes: Vec<KvWrite>,
}

impl CallState {
    pub fn new(
        caller: Caller,
        grants: Arc<Grants>,
        limits: Limits,
        kv_store: Arc<dyn PluginKv>,
        progress: Option<ProgressSink>,
        limiter: CallLimiter,
        stats: Arc<RuntimeStats>,
    ) -> Self {
        // Nothing is inherited: no environment, no arguments, no preopened
        // directories, no sockets. stderr is captured so a panic message can
        // be reported.
        let stderr = MemoryOutputPipe::new(8 * 1024);
        let wasi = wasmtime_wasi::WasiCtxBuilder::new()
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        CallState {
            outbound: OutboundPolicy {
                grants: grants.clone(),
                denials: Denials::default(),
            },
            caller,
            grants,
            limits,
            kv_store,
            kv: KvSession::default(),
            progress,
            progress_gate: ProgressGate::default(),
            log: LogBudget::default(),
            denials: Denials::default(),
            stats,
            limiter,
            stderr,
            wasi,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
        }
    }

    /// Ends the call: passes on the last progress report held back, says
    /// once how much was dropped, and hands back refusals and kv writes.
    pub fn finish(&mut self) -> CallLeftovers {
        let (held, progress_dropped) = self.progress_gate.finish();
        if let (Some((fraction, message)), Some(sink)) = (held, &self.progress) {
            sink(fraction, message);
        }
        RuntimeStats::add(&self.stats.progress_dropped, progress_dropped);
        let (lines, bytes) = self.log.dropped();
        if lines > 0 {
            RuntimeStats::add(&self.stats.log_lines_dropped, lines);
            let c = &self.caller;
            tracing::warn!(
                plugin = %c.plugin, run = %c.run_id, step = %c.step,
                "plugin log budget of this call passed: {lines} more log lines ({} KiB) dropped",
                bytes.div_ceil(1024)
            );
        }
        let denials =
            std::mem::take(&mut self.denials).merge(std::mem::take(&mut self.outbound.denials));
        let (denials, more) = denials.finish(&self.caller.plugin);
        RuntimeStats::add(&self.stats.denials_dropped, more);
        CallLeftovers {
            denials,
            kv_writes: std::mem::take(&mut self.kv).into_writes(),
        }
    }

    /// Every host function starts here: past the deadline the call stops,
    /// whatever the plugin is doing.
    fn enter(&mut self) -> wasmtime::Result<()> {
        self.limiter
            .check_time()
            .map_err(|hit| wasmtime::format_err!("{hit}"))
    }

    fn deny_kv(&mut self, op: &str, key: &str) -> kv::KvError {
        let detail = format!(
            "{op} '{}': key-value state is not granted to plugin '{}'",
            cut(key, QUOTE_BYTES),
            self.caller.plugin
        );
        self.denials.push("kv", detail);
        kv::KvError::Denied
    }

    fn kv_refused(&mut self, refusal: KvRefusal) -> kv::KvError {
        match refusal {
            KvRefusal::Store(m) => kv::KvError::Store(m),
            KvRefusal::Quota { .. } => {
                // The operator can raise a quota: record it, so a failed
                // attempt is held for them rather than undone.
                let text = refusal.to_string();
                self.denials.push("kv-quota", text.clone());
                kv::KvError::TooLarge(text)
            }
            other => kv::KvError::TooLarge(other.to_string()),
        }
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
    denials: Denials,
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

impl log::Host for CallState {
    fn write(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        self.enter()?;
        let Some(message) = self.log.admit(&message) else {
            return Ok(());
        };
        let c = &self.caller;
        match level {
            log::Level::Trace => {
                tracing::trace!(plugin = %c.plugin, run_id = %c.run_id, step = %c.step, attempt = c.attempt, operation_id = %c.operation_id, "{message}")
            }
            log::Level::Debug => {
                tracing::debug!(plugin = %c.plugin, run_id = %c.run_id, step = %c.step, attempt = c.attempt, operation_id = %c.operation_id, "{message}")
            }
            log::Level::Info => {
                tracing::info!(plugin = %c.plugin, run_id = %c.run_id, step = %c.step, attempt = c.attempt, operation_id = %c.operation_id, "{message}")
            }
            log::Level::Warn => {
                tracing::warn!(plugin = %c.plugin, run_id = %c.run_id, step = %c.step, attempt = c.attempt, operation_id = %c.operation_id, "{message}")
            }
            log::Level::Error => {
                tracing::error!(plugin = %c.plugin, run_id = %c.run_id, step = %c.step, attempt = c.attempt, operation_id = %c.operation_id, "{message}")
            }
        }
        Ok(())
    }
}

impl progress::Host for CallState {
    fn report(&mut self, fraction: f32, message: String) -> wasmtime::Result<()> {
        self.enter()?;
        if let (Some(sink), Some((fraction, message))) =
            (&self.progress, self.progress_gate.admit(fraction, &message))
        {
            sink(fraction, message);
        }
        Ok(())
    }
}

impl config::Host for CallState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        self.enter()?;
        let value = self.grants.config.get(&key).cloned();
        if value.is_none() {
            // A setting the operator forgot is the host's setup, not the
            // plugin's fault: recorded, so a failed attempt is held for an
            // operator rather than undone.
            let plugin = self.caller.plugin.clone();
            self.denials.push(
                "config",
                format!(
                    "setting '{}' is not configured for plugin '{plugin}' (add it to [plugins.{plugin}.config] in settle.toml)",
                    cut(&key, QUOTE_BYTES)
                ),
            );
        }
        Ok(value)
    }
}

impl kv::Host for CallState {
    fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, kv::KvError>> {
        self.enter()?;
        if !self.grants.kv {
            return Ok(Err(self.deny_kv("get", &key)));
        }
        let got = self.kv.get(&*self.kv_store, &self.caller.plugin, &key);
        Ok(got.map_err(|r| self.kv_refused(r)))
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<Result<(), kv::KvError>> {
        self.enter()?;
        if !self.grants.kv {
            return Ok(Err(self.deny_kv("set", &key)));
        }
        let done = self.kv.write(
            &*self.kv_store,
            &self.caller.plugin,
            &self.limits,
            key,
            Some(value),
        );
        Ok(done.map_err(|r| self.kv_refused(r)))
    }

    fn delete(&mut self, key: String) -> wasmtime::Result<Result<(), kv::KvError>> {
        self.enter()?;
        if !self.grants.kv {
            return Ok(Err(self.deny_kv("delete", &key)));
        }
        let done = self.kv.write(
            &*self.kv_store,
            &self.caller.plugin,
            &self.limits,
            key,
            None,
        );
        Ok(done.map_err(|r| self.kv_refused(r)))
    }
}

impl crate::bindings::settle::plugin::types::Host for CallState {}
