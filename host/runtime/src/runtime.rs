//! The runtime: one wasmtime engine and instance pool for every plugin.
//! Loading plugins (compile once, cache the compiled form on disk keyed by
//! content digest and engine, keep an `InstancePre` for cheap
//! instantiation, ask each plugin who it is with `describe`) and calling
//! them ([`Runtime::invoke`], which takes a pool slot and hands the call
//! to [`crate::call`]).

use crate::bindings::{Step, StepPre};
use crate::budget::{RuntimeStats, cut};
use crate::cache::CompiledCache;
use crate::call::{
    CallError, call_export, classify_trap, describe, limit_failure, plain_reason, sandboxed_store,
    step_failure,
};
use crate::grants::Grants;
use crate::host_imports::{CallState, Caller};
use crate::kv::PluginKv;
use crate::limits::{CallLimiter, EPOCH_TICK, Limits};
use crate::limits::{LimitHit, POOL_WAIT};
use crate::manifest::Manifest;
use crate::plugin::{LoadError, PluginInfo, PluginSettings};
use std::time::Duration;
use wasmtime::Store;

use settle_types::FailureClass;
use settle_types::executor::{
    CallFailure, CallOutput, CallReport, CallRequest, Executor, PluginDescriptor,
};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;
use tokio::sync::{Semaphore, SemaphorePermit};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Bytes of a memory slot reset in place (memset, or only the pages dirtied
/// where the kernel can tell) rather than unmapped between calls: an
/// interpreter's plugin (CPython, SpiderMonkey) starts from a memory image of
/// megabytes and dirties much of it on every call; mapping it afresh each
/// time costs page faults. Set from `settle bench --languages`.
const KEEP_RESIDENT_MEMORY: usize = 4 * 1024 * 1024;
/// The same for tables.
const KEEP_RESIDENT_TABLE: usize = 1024 * 1024;

/// A component's identity: the SHA-256 of its bytes, in hex.
pub fn component_digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// How the runtime is set up.
#[derive(Clone, Debug)]
pub struct RuntimeOptions {
    /// Plugin calls in progress at once (pooled instance slots).
    pub max_concurrent_calls: u32,
    /// Ceiling on any plugin's memory limit, in MiB (sizes the pool's slots).
    pub max_memory_mib: u64,
    /// Where compiled plugins are cached; `None` compiles on every start.
    pub cache_dir: Option<PathBuf>,
    /// Where each build installed is kept, as `DIGEST.wasm`, for the runs
    /// that started with it once another is installed; `None` keeps
    /// builds in memory only.
    pub builds_dir: Option<PathBuf>,
    pub default_limits: Limits,
    /// By plugin name.
    pub plugins: BTreeMap<String, PluginSettings>,
    /// The world plugins meet instead of the real one (tests, replays).
    pub stand_in: Option<Arc<crate::stand_in::StandIn>>,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            max_concurrent_calls: 256,
            max_memory_mib: 512,
            cache_dir: None,
            builds_dir: None,
            default_limits: Limits::default(),
            plugins: BTreeMap::new(),
            stand_in: None,
        }
    }
}

/// The plugin runtime. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    linker: Linker<CallState>,
    options: RuntimeOptions,
    plugins: RwLock<HashMap<String, Arc<PluginInfo>>>,
    /// Every build loaded, installed now or kept for runs, by digest.
    builds: RwLock<HashMap<String, Arc<PluginInfo>>>,
    /// Names two unpinned components claimed: installed under neither.
    clashed: RwLock<HashMap<String, PathBuf>>,
    cache: Option<CompiledCache>,
    stats: Arc<RuntimeStats>,
    slots: Semaphore,
    kv: Arc<dyn PluginKv>,
    ticker_stop: Arc<AtomicBool>,
    /// The expression evaluator, loaded on first use.
    evaluator: tokio::sync::OnceCell<crate::expressions::EvaluatorPre<CallState>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

impl Runtime {
    pub fn new(options: RuntimeOptions, kv: Arc<dyn PluginKv>) -> anyhow::Result<Self> {
        let n = options.max_concurrent_calls.max(1);
        let mut pool = PoolingAllocationConfig::default();
        // A Rust component holds a few core instances (its module and WASI
        // shims), so size core slots generously per component slot.
        pool.total_component_instances(n)
            // An interpreter's component holds more: CPython (componentize-py)
            // 14 core instances, so 16 per slot lets every slot run one.
            .total_core_instances(n * 16)
            .total_memories(n * 2)
            .total_tables(n * 8)
            .total_stacks(n)
            .max_memory_size((options.max_memory_mib as usize).saturating_mul(1024 * 1024))
            .pagemap_scan(wasmtime::Enabled::Auto)
            .linear_memory_keep_resident(KEEP_RESIDENT_MEMORY)
            .table_keep_resident(KEEP_RESIDENT_TABLE);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            // Plugins are called with `call_async`, one call per store; the
            // component-model-async machinery (run_concurrent, streams) is
            // not used. Without it a store is cheaper to make and to drop:
            // dropping one with it builds an error value, and a backtrace
            // when RUST_BACKTRACE is set, on every call.
            .concurrency_support(false)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| anyhow::anyhow!("{e:#}"))?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| anyhow::anyhow!("{e:#}"))?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(|e| anyhow::anyhow!("{e:#}"))?;
        Step::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |s| s)
            .map_err(|e| anyhow::anyhow!("{e:#}"))?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        let (stop, ticking) = (ticker_stop.clone(), engine.clone());
        std::thread::Builder::new()
            .name("settle-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    ticking.increment_epoch();
                }
            })?;

        let cache = options.cache_dir.as_deref().and_then(|dir| {
            CompiledCache::open(dir)
                .inspect_err(|e| {
                    tracing::warn!("not using the compiled-plugin cache, compiling instead: {e}")
                })
                .ok()
        });

        Ok(Runtime {
            inner: Arc::new(Inner {
                engine,
                linker,
                slots: Semaphore::new(n as usize),
                options,
                plugins: RwLock::new(HashMap::new()),
                builds: RwLock::new(HashMap::new()),
                clashed: RwLock::new(HashMap::new()),
                cache,
                stats: Arc::new(RuntimeStats::default()),
                kv,
                ticker_stop,
                evaluator: tokio::sync::OnceCell::new(),
            }),
        })
    }

    pub(super) fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    pub(crate) fn linker(&self) -> &Linker<CallState> {
        &self.inner.linker
    }

    pub(crate) fn evaluator_cell(
        &self,
    ) -> &tokio::sync::OnceCell<crate::expressions::EvaluatorPre<CallState>> {
        &self.inner.evaluator
    }

    pub(super) fn kv(&self) -> Arc<dyn PluginKv> {
        self.inner.kv.clone()
    }

    /// Instance slots: (in use now, in all). A plugin call holds one
    /// while it runs.
    pub fn slots(&self) -> (usize, usize) {
        let total = self.inner.options.max_concurrent_calls.max(1) as usize;
        let free = self.inner.slots.available_permits();
        (total.saturating_sub(free), total)
    }

    /// Counters of what the runtime bounded, dropped or waited for.
    pub fn stats(&self) -> &Arc<RuntimeStats> {
        &self.inner.stats
    }

    /// Whether compiled plugins are cached (the cache directory is safe to use).
    pub fn caches_compiled_plugins(&self) -> bool {
        self.inner.cache.is_some()
    }

    pub(crate) async fn acquire_slot(&self) -> SemaphorePermit<'_> {
        // The semaphore is never closed.
        self.inner
            .slots
            .acquire()
            .await
            .expect("slot semaphore is never closed")
    }

    pub fn plugin_info(&self, name: &str) -> Option<Arc<PluginInfo>> {
        self.inner.plugins.read().ok()?.get(name).cloned()
    }

    /// Every installed plugin, by name.
    pub fn plugins(&self) -> Vec<Arc<PluginInfo>> {
        let mut all: Vec<_> = self
            .inner
            .plugins
            .read()
            .map(|p| p.values().cloned().collect())
            .unwrap_or_default();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Installs every `*.wasm` file in `dir`. Files that fail are reported and
    /// skipped: one bad plugin does not keep the others out. Two files that
    /// claim one name are both refused unless the operator pinned one.
    pub async fn load_dir(&self, dir: &Path) -> Vec<LoadError> {
        let mut errors = Vec::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(source) => {
                return vec![LoadError::Read {
                    path: dir.to_path_buf(),
                    source,
                }];
            }
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
            .collect();
        paths.sort();
        for path in paths {
            if let Err(e) = self.load_file(&path).await {
                errors.push(e);
            }
        }
        errors
    }

    /// Loads `path` as a plugin would be (compiled, linked against this
    /// host's contract, described) without installing it: what
    /// `settle plugin check` reports.
    pub async fn check_file(&self, path: &Path) -> Result<Arc<PluginInfo>, LoadError> {
        Ok(Arc::new(self.prepare(path).await?))
    }

    /// The interfaces a component file imports and exports, by name.
    pub fn interfaces(&self, path: &Path) -> Result<(Vec<String>, Vec<String>), LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.into(),
            source,
        })?;
        let digest = component_digest(&bytes);
        let (component, _) = self.compile_cached(path, &bytes, &digest)?;
        let ty = component.component_type();
        let engine = &self.inner.engine;
        let imports = ty.imports(engine).map(|(n, _)| n.to_string()).collect();
        let exports = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
        Ok((imports, exports))
    }

    /// Installs one component file, and keeps its build (see
    /// [`RuntimeOptions::builds_dir`]).
    pub async fn load_file(&self, path: &Path) -> Result<Arc<PluginInfo>, LoadError> {
        let info = Arc::new(self.prepare(path).await?);
        // Kept on disk before any run can call it.
        self.keep_copy(&info).map_err(|source| LoadError::Read {
            path: self
                .inner
                .options
                .builds_dir
                .clone()
                .unwrap_or_else(|| path.to_path_buf()),
            source,
        })?;
        self.install(info.clone())?;
        self.remember_build(&info);
        Ok(info)
    }

    /// Keeps `info` loaded under its digest, for the runs that use it.
    fn remember_build(&self, info: &Arc<PluginInfo>) {
        self.inner
            .builds
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(info.digest.clone(), info.clone());
    }

    /// Keeps a copy of `info`'s file in the builds directory (written whole,
    /// checked, fsynced, then renamed in), so a run that started with it
    /// can call it after another build is installed, across restarts.
    fn keep_copy(&self, info: &Arc<PluginInfo>) -> std::io::Result<()> {
        let Some(dir) = &self.inner.options.builds_dir else {
            return Ok(());
        };
        let kept = dir.join(format!("{}.wasm", info.digest));
        if kept.exists() {
            return Ok(());
        }
        std::fs::create_dir_all(dir).and_then(|()| {
            let partial = dir.join(format!(".{}.partial", info.digest));
            std::fs::copy(&info.path, &partial)?;
            // The file may have been replaced since it was read: keep it
            // only if it is the build that was loaded.
            if component_digest(&std::fs::read(&partial)?) != info.digest {
                let _ = std::fs::remove_file(&partial);
                return Err(std::io::Error::other(
                    "the file changed while it was loaded",
                ));
            }
            std::fs::File::open(&partial)?.sync_all()?;
            std::fs::rename(&partial, &kept)
        })
    }

    /// The build of plugin `name` with `digest`: one loaded before (the
    /// installed one among them), or the copy kept in the builds directory.
    async fn build(&self, name: &str, digest: &str) -> Result<Arc<PluginInfo>, CallFailure> {
        let known = self
            .inner
            .builds
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(digest)
            .cloned();
        if let Some(info) = known.filter(|i| &*i.name == name) {
            return Ok(info);
        }
        let short: String = digest.chars().take(16).collect();
        let missing = |why: String| {
            CallFailure::new(
                FailureClass::HostSetup,
                format!(
                    "plugin '{name}': the build this run started with ({short}) {why}; put it back as DIGEST.wasm in the builds directory, or cancel the run"
                ),
            )
        };
        let Some(dir) = &self.inner.options.builds_dir else {
            return Err(missing("is no longer loaded".into()));
        };
        // A digest is hex: anything else names no kept file.
        if digest.is_empty() || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(missing("is not a build digest".into()));
        }
        let path = dir.join(format!("{digest}.wasm"));
        if !path.exists() {
            return Err(missing(format!("is not kept in {}", dir.display())));
        }
        let info = match self.prepare(&path).await {
            Ok(info) => Arc::new(info),
            Err(e) => return Err(missing(format!("cannot be loaded: {e}"))),
        };
        if info.digest != digest || &*info.name != name {
            return Err(missing(format!(
                "kept as {} is another component",
                path.display()
            )));
        }
        self.remember_build(&info);
        Ok(info)
    }

    /// Installs `info` under its name unless another component claims it:
    /// then the operator's pin decides, and without one neither is installed.
    fn install(&self, info: Arc<PluginInfo>) -> Result<(), LoadError> {
        let name = info.name.to_string();
        let settings = self.settings(&name);
        if settings.is_pinned() && !settings.pin_matches(&info.path, &info.digest) {
            return Err(LoadError::NotPinned {
                path: info.path.clone(),
                name,
                pin: settings.pin_text(),
            });
        }
        let mut plugins = self
            .inner
            .plugins
            .write()
            .unwrap_or_else(|p| p.into_inner());
        let mut clashed = self
            .inner
            .clashed
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(first) = plugins.get(&name).cloned()
            && first.path != info.path
        {
            if settings.is_pinned() && settings.pin_matches(&first.path, &first.digest) {
                return Err(LoadError::NotPinned {
                    path: info.path.clone(),
                    name,
                    pin: settings.pin_text(),
                });
            }
            if !settings.is_pinned() {
                plugins.remove(&name);
                clashed.insert(name.clone(), first.path.clone());
                return Err(LoadError::NameClash {
                    name,
                    first: first.path.clone(),
                    second: info.path.clone(),
                });
            }
        } else if let Some(first) = clashed.get(&name)
            && !settings.is_pinned()
        {
            return Err(LoadError::NameClash {
                first: first.clone(),
                name,
                second: info.path.clone(),
            });
        }
        plugins.insert(name, info);
        Ok(())
    }

    fn settings(&self, name: &str) -> PluginSettings {
        self.inner
            .options
            .plugins
            .get(name)
            .cloned()
            .unwrap_or_default()
    }

    /// Compiles, links and describes one component file, without installing it.
    async fn prepare(&self, path: &Path) -> Result<PluginInfo, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.into(),
            source,
        })?;
        let digest = component_digest(&bytes);
        let started = Instant::now();
        let (component, from_cache) = self.compile_cached(path, &bytes, &digest)?;
        let load_time = started.elapsed();
        let link_error = |e: wasmtime::Error| {
            crate::diagnose::link_failure(path, &self.inner.engine, &component, &e)
        };
        let instance_pre = self
            .inner
            .linker
            .instantiate_pre(&component)
            .map_err(link_error)?;
        let pre = StepPre::new(instance_pre).map_err(link_error)?;
        let manifest = self.describe(path, &pre).await?;
        let settings = self.settings(&manifest.name);
        let limits = settings
            .limits
            .unwrap_or_else(|| self.inner.options.default_limits.clone());
        // Config values may be secrets: people see their names only.
        let sandbox = serde_json::json!({
            "limits": &limits,
            "grants": {
                "allowed_outbound_hosts": &settings.grants.allowed_outbound_hosts,
                "kv": settings.grants.kv,
                "config_keys": settings.grants.config.keys().collect::<Vec<_>>(),
            },
        });
        let descriptor = PluginDescriptor::new(
            manifest.name.as_str().into(),
            format!("{}@{}#{}", manifest.name, manifest.version, &digest[..16]),
            digest,
            path.to_path_buf(),
            manifest,
            sandbox,
            from_cache,
            load_time,
        )
        .map_err(|reason| LoadError::Describe {
            path: path.into(),
            reason: cut(&reason, 300),
        })?;
        Ok(PluginInfo {
            descriptor: Arc::new(descriptor),
            grants: Arc::new(settings.grants),
            limits,
            record_exchanges: settings.record_exchanges,
            pre,
        })
    }

    /// Compiles `bytes`, or loads the compiled form from the cache when the
    /// cache holds a verified artifact for this digest and engine (see
    /// [`crate::cache`]).
    pub(crate) fn compile_cached(
        &self,
        path: &Path,
        bytes: &[u8],
        digest: &str,
    ) -> Result<(Component, bool), LoadError> {
        let engine = &self.inner.engine;
        if let Some(cache) = &self.inner.cache {
            match cache.load(engine, digest) {
                Ok(Some(component)) => return Ok((component, true)),
                Ok(None) => {}
                Err(why) => tracing::warn!("cached plugin not used, recompiling: {why}"),
            }
        }
        let component = Component::new(engine, bytes).map_err(|e| LoadError::NotAComponent {
            path: path.into(),
            reason: plain_reason(&e),
        })?;
        if let Some(cache) = &self.inner.cache
            && let Err(e) = cache.store(engine, digest, &component)
        {
            tracing::warn!(plugin = %path.display(), "cannot cache the compiled plugin: {e}");
        }
        Ok((component, false))
    }

    /// A sandboxed store for the host's own calls (`describe`, the
    /// expression evaluator): no run, no grants, `limits`.
    pub(crate) fn bare_store(&self, who: &str, limits: &Limits) -> Store<CallState> {
        let caller = Caller {
            plugin: who.into(),
            run_id: String::new(),
            step: String::new(),
            attempt: 0,
            operation_id: String::new(),
        };
        let state = CallState::new(
            caller,
            Arc::new(Grants::default()),
            limits.clone(),
            self.inner.kv.clone(),
            None,
            CallLimiter::new(limits, limits.timeout),
            self.inner.stats.clone(),
        );
        sandboxed_store(&self.inner.engine, state)
    }

    /// Asks the plugin who it is, under the default limits (its own are
    /// not known before its name is), and checks the answer's bounds.
    async fn describe(&self, path: &Path, pre: &StepPre<CallState>) -> Result<Manifest, LoadError> {
        let limits = self.inner.options.default_limits.clone();
        let mut store = self.bare_store("describe", &limits);
        let describe_error = |reason| LoadError::Describe {
            path: path.into(),
            reason,
        };
        let m = describe(&mut store, pre, &self.inner.stats)
            .await
            .map_err(describe_error)?;
        crate::manifest::check(m).map_err(describe_error)
    }
}

impl Runtime {
    /// Calls `request.kind` on the plugin. Every failure ends in the report.
    pub async fn invoke(&self, request: CallRequest) -> CallReport {
        let started = Instant::now();
        let failed = |failure: CallFailure| CallReport {
            source: request.plugin.clone(),
            result: Err(failure),
            denials: Vec::new(),
            duration: started.elapsed(),
            downstream: Vec::new(),
            exchanges: Vec::new(),
        };
        let installed = self.plugin_info(&request.plugin);
        let plugin = match (&request.build, installed) {
            // The run keeps the build it started with, while the plugin is
            // installed (a plugin removed is unavailable to every run).
            (Some(build), Some(installed)) if &installed.digest != build => {
                match self.build(&request.plugin, build).await {
                    Ok(plugin) => plugin,
                    Err(f) => return failed(f),
                }
            }
            (_, Some(plugin)) => plugin,
            (_, None) => {
                return failed(CallFailure::new(
                    FailureClass::Unavailable,
                    format!("plugin '{}' is not installed", request.plugin),
                ));
            }
        };
        let _slot = self.acquire_slot().await;
        let timeout = request
            .timeout
            .map_or(plugin.limits.timeout, |t| t.min(plugin.limits.timeout));
        let mut store = self.new_store(&plugin, &request, timeout);
        // The epoch callback stops guests that compute; this timeout stops
        // guests that wait (on outbound HTTP, say).
        let outcome = tokio::time::timeout(
            timeout.saturating_add(crate::limits::EPOCH_TICK * 2),
            call_export(&mut store, &plugin, &request, timeout, self.stats()),
        )
        .await;
        let data = store.data_mut();
        let leftovers = data.finish();
        let result = match outcome {
            Err(_elapsed) => Err(limit_failure(&LimitHit::Time { limit: timeout })),
            Ok(Err(CallError::PoolExhausted(reason))) => {
                RuntimeStats::add(&self.stats().pool_exhausted, 1);
                // The host's own capacity, not the plugin: held for an operator.
                Err(CallFailure::new(
                    FailureClass::HostSetup,
                    format!(
                        "no free instance slot for plugin '{}' after waiting {}: {reason} (raise runtime.max_concurrent_calls in settle.toml)",
                        plugin.name,
                        humantime::format_duration(POOL_WAIT)
                    ),
                ))
            }
            Ok(Err(CallError::Wasm(trap))) => Err(classify_trap(
                &trap,
                data.limiter.hit.as_ref(),
                &data.stderr,
            )),
            Ok(Ok(Err(step_error))) => Err(step_failure(step_error)),
            Ok(Ok(Ok(CallOutput::Ran(output))))
                if output.len() > plugin.limits.max_output_bytes() =>
            {
                Err(limit_failure(&LimitHit::Output {
                    limit_bytes: plugin.limits.max_output_bytes(),
                    actual_bytes: output.len(),
                }))
            }
            Ok(Ok(Ok(output))) => Ok(output),
        };
        let timed_out = matches!(&result, Err(f) if f.class == FailureClass::Timeout);
        let downstream = data.outbound.take_downstream(timed_out);
        let exchanges = data.outbound.take_exchanges();
        // kv writes are kept only when the call succeeded.
        let result = match result {
            Ok(output) if !leftovers.kv_writes.is_empty() => self
                .kv()
                .apply(&plugin.name, &leftovers.kv_writes)
                .map(|()| output)
                .map_err(|e| {
                    CallFailure::new(
                        FailureClass::Retryable,
                        format!(
                            "the plugin's key-value writes could not be saved: {}",
                            cut(&e, 500)
                        ),
                    )
                }),
            other => other,
        };
        CallReport {
            source: plugin.source.clone(),
            result,
            denials: leftovers.denials,
            duration: started.elapsed(),
            downstream,
            exchanges,
        }
    }

    fn new_store(
        &self,
        plugin: &PluginInfo,
        request: &CallRequest,
        timeout: Duration,
    ) -> Store<CallState> {
        let caller = Caller {
            plugin: plugin.name.clone(),
            run_id: request.ctx.run_id.clone(),
            step: request.ctx.step.clone(),
            attempt: request.ctx.attempt,
            operation_id: request.ctx.operation_id.clone(),
        };
        let state = CallState::new(
            caller,
            plugin.grants.clone(),
            plugin.limits.clone(),
            self.kv(),
            request.progress.clone(),
            CallLimiter::new(&plugin.limits, timeout),
            self.stats().clone(),
        )
        .with_stand_in(self.inner.options.stand_in.clone())
        .recording_exchanges(
            plugin.record_exchanges && request.kind == settle_types::executor::CallKind::Run,
        );
        sandboxed_store(self.engine(), state)
    }
}

impl Executor for Runtime {
    async fn call(&self, request: CallRequest) -> CallReport {
        self.invoke(request).await
    }
    fn plugin(&self, name: &str) -> Option<Arc<PluginDescriptor>> {
        self.plugin_info(name).map(|p| p.descriptor.clone())
    }
    fn plugins(&self) -> Vec<Arc<PluginDescriptor>> {
        Runtime::plugins(self)
            .into_iter()
            .map(|p| p.descriptor.clone())
            .collect()
    }

    async fn evaluate(
        &self,
        programs: Vec<String>,
        context: serde_json::Value,
    ) -> Result<Vec<Result<serde_json::Value, String>>, settle_types::executor::EvalFailure> {
        Runtime::evaluate(self, &programs, &context).await
    }
}
