//! The host side of one plugin call: the store's data, and the functions a
//! plugin may import (`log`, `progress`, `kv`, `config`, and `wasi:http`
//! restricted to the plugin's allowed hosts).
//!
//! A refused request (kv not granted, a host not allowed, a setting the
//! operator did not configure, a kv quota reached) is an answer the plugin
//! sees, and a [`Denial`] the engine records as an event. Everything a plugin
//! sends through these functions is bounded per call (see [`crate::budget`]),
//! and every one of them checks the call's deadline first.

//!
//! One file per interface, as wasmtime-wasi lays them out: [`log`],
//! [`progress`], [`config`], [`kv`], and [`http`] (the outbound policy).

mod config;
mod exchanges;
mod http;
mod kv;
mod log;
mod progress;

use crate::budget::{Denials, LogBudget, ProgressGate, RuntimeStats};
use crate::grants::Grants;
use crate::kv::{KvSession, KvWrite, PluginKv};
use crate::limits::{CallLimiter, Limits};
use crate::stand_in::StandIn;
use http::OutboundPolicy;
use settle_types::executor::{Denial, ProgressSink};
use std::sync::Arc;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::WasiHttpCtx;

/// How much of a key or URL a refusal quotes.
pub(crate) const QUOTE_BYTES: usize = 64;

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
    pub(crate) kv_store: Arc<dyn PluginKv>,
    pub(crate) kv: KvSession,
    pub(crate) progress: Option<ProgressSink>,
    pub(crate) progress_gate: ProgressGate,
    pub(crate) log: LogBudget,
    pub(crate) denials: Denials,
    stats: Arc<RuntimeStats>,
    pub limiter: CallLimiter,
    pub stderr: MemoryOutputPipe,
    pub(crate) wasi: WasiCtx,
    pub(crate) http: WasiHttpCtx,
    pub(crate) table: ResourceTable,
    pub(crate) outbound: OutboundPolicy,
    /// Set for tests and replays: the world the call meets instead.
    pub(crate) stand_in: Option<Arc<StandIn>>,
}

/// WASI as a plugin gets it: nothing inherited (no environment, arguments,
/// preopened directories or sockets), stderr captured so a panic message
/// can be reported, and the stand-in's clocks when there is one.
fn wasi_ctx(stderr: &MemoryOutputPipe, stand_in: Option<&Arc<StandIn>>) -> WasiCtx {
    let mut builder = wasmtime_wasi::WasiCtxBuilder::new();
    builder
        .stderr(stderr.clone())
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    if let Some(s) = stand_in {
        builder
            .wall_clock(crate::stand_in::Wall(s.clone()))
            .monotonic_clock(crate::stand_in::Monotonic(s.clone()));
    }
    builder.build()
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
        let wasi = wasi_ctx(&stderr, None);
        CallState {
            outbound: OutboundPolicy::new(grants.clone()),
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
            stand_in: None,
        }
    }

    /// Records the call's HTTP exchanges (see [`exchanges`]).
    pub fn recording_exchanges(mut self, record: bool) -> Self {
        if record {
            self.outbound.recorder = Some(exchanges::Recorder::default());
        }
        self
    }

    /// The call meets `stand_in` instead of the outside world: its clock,
    /// its scripted answers, its log (see [`crate::stand_in`]).
    pub fn with_stand_in(mut self, stand_in: Option<Arc<StandIn>>) -> Self {
        if let Some(s) = &stand_in {
            self.wasi = wasi_ctx(&self.stderr, Some(s));
        }
        self.outbound.stand_in = stand_in.clone();
        self.stand_in = stand_in;
        self
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
    pub(crate) fn enter(&mut self) -> wasmtime::Result<()> {
        self.limiter
            .check_time()
            .map_err(|hit| wasmtime::format_err!("{hit}"))
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

impl crate::bindings::settle::plugin::types::Host for CallState {}
