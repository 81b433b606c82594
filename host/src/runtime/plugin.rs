//! Loading plugins: compile once, cache the compiled form on disk keyed by
//! content digest and engine, keep an `InstancePre` for cheap instantiation,
//! and ask each plugin who it is (`describe`).

use super::bindings::{Step, StepPre};
use super::call::{describe, sandboxed_store};
use super::grants::Grants;
use super::host_imports::{CallState, Caller, PluginKv};
use super::limits::{CallLimiter, EPOCH_TICK, Limits};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, SemaphorePermit};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Per-plugin operator settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PluginSettings {
    #[serde(flatten)]
    pub grants: Grants,
    /// Overrides of the default limits for this plugin.
    pub limits: Option<Limits>,
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
    pub default_limits: Limits,
    /// By plugin name.
    pub plugins: BTreeMap<String, PluginSettings>,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            max_concurrent_calls: 256,
            max_memory_mib: 512,
            cache_dir: None,
            default_limits: Limits::default(),
            plugins: BTreeMap::new(),
        }
    }
}

/// What a plugin says about itself, in host types.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub summary: String,
    pub input_schema: serde_json::Value,
    pub output_schema: serde_json::Value,
    pub supports_compensate: bool,
    pub supports_reconcile: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<SuggestedRetry>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SuggestedRetry {
    pub max_attempts: u32,
    pub initial_interval_ms: u64,
    pub backoff_coefficient: f64,
    pub max_interval_ms: u64,
}

/// An installed plugin.
pub struct PluginInfo {
    pub name: Arc<str>,
    /// `name@version#digest` (16 hex digits of the SHA-256), the source of its events.
    pub source: String,
    /// Full SHA-256 of the component's bytes.
    pub digest: String,
    pub path: PathBuf,
    pub manifest: Manifest,
    input_validator: Option<jsonschema::Validator>,
    output_validator: Option<jsonschema::Validator>,
    pub grants: Arc<Grants>,
    pub limits: Limits,
    /// Whether the compiled form came from the cache.
    pub from_cache: bool,
    /// Time to compile or deserialize.
    pub load_time: Duration,
    pub(super) pre: StepPre<CallState>,
}

impl PluginInfo {
    /// Checks `input` against the plugin's input schema; every problem, with
    /// the path of the value it concerns.
    pub fn check_input(&self, input: &serde_json::Value) -> Result<(), String> {
        schema_problems(self.input_validator.as_ref(), input)
    }

    /// Checks what the plugin returned against its own output schema, so a
    /// later step never maps its input from a shape nobody promised.
    pub fn check_output(&self, output: &serde_json::Value) -> Result<(), String> {
        schema_problems(self.output_validator.as_ref(), output)
    }
}

/// At most five problems of `value` against `validator`, each with the path of
/// the value it concerns; no validator means no schema was declared.
fn schema_problems(
    validator: Option<&jsonschema::Validator>,
    value: &serde_json::Value,
) -> Result<(), String> {
    let Some(validator) = validator else {
        return Ok(());
    };
    let problems: Vec<String> = validator
        .iter_errors(value)
        .take(5)
        .map(|e| {
            let at = e.instance_path().to_string();
            if at.is_empty() {
                e.to_string()
            } else {
                format!("{at}: {e}")
            }
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

impl std::fmt::Debug for PluginInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginInfo")
            .field("source", &self.source)
            .field("path", &self.path)
            .finish()
    }
}

/// Why a plugin file could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file cannot be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The bytes are not a WebAssembly component this host can compile.
    #[error("{path}: not a valid WebAssembly component: {reason}")]
    NotAComponent { path: PathBuf, reason: String },
    /// The component needs imports the host does not grant, or the wrong world.
    #[error("{path}: cannot be linked (does it implement settle:plugin/step?): {reason}")]
    Link { path: PathBuf, reason: String },
    /// `describe` trapped or returned nonsense.
    #[error("{path}: describe() failed: {reason}")]
    Describe { path: PathBuf, reason: String },
    /// Two files claim the same plugin name.
    #[error("{path}: plugin '{name}' is already installed from {first}")]
    Duplicate {
        path: PathBuf,
        name: String,
        first: PathBuf,
    },
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
    slots: Semaphore,
    kv: Arc<dyn PluginKv>,
    ticker_stop: Arc<AtomicBool>,
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
            .total_core_instances(n * 8)
            .total_memories(n * 2)
            .total_tables(n * 8)
            .total_stacks(n)
            .max_memory_size((options.max_memory_mib as usize).saturating_mul(1024 * 1024));
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
        let engine = Engine::new(&config).map_err(|e| anyhow::anyhow!("{e:?}"))?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        Step::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |s| s)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;

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

        Ok(Runtime {
            inner: Arc::new(Inner {
                engine,
                linker,
                slots: Semaphore::new(n as usize),
                options,
                plugins: RwLock::new(HashMap::new()),
                kv,
                ticker_stop,
            }),
        })
    }

    pub(super) fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    pub(super) fn kv(&self) -> Arc<dyn PluginKv> {
        self.inner.kv.clone()
    }

    pub(super) async fn acquire_slot(&self) -> SemaphorePermit<'_> {
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
    /// skipped: one bad plugin does not keep the others out.
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

    /// Installs one component file.
    pub async fn load_file(&self, path: &Path) -> Result<Arc<PluginInfo>, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.into(),
            source,
        })?;
        let digest = hex::encode(Sha256::digest(&bytes));
        let started = Instant::now();
        let (component, from_cache) = self.compile_cached(path, &bytes, &digest)?;
        let load_time = started.elapsed();
        let instance_pre =
            self.inner
                .linker
                .instantiate_pre(&component)
                .map_err(|e| LoadError::Link {
                    path: path.into(),
                    reason: format!("{e:?}"),
                })?;
        let pre = StepPre::new(instance_pre).map_err(|e| LoadError::Link {
            path: path.into(),
            reason: format!("{e:?}"),
        })?;
        let manifest = self.describe(path, &pre).await?;
        let input_validator = compile_schema(path, "input", &manifest.input_schema)?;
        let output_validator = compile_schema(path, "output", &manifest.output_schema)?;
        let settings = self
            .inner
            .options
            .plugins
            .get(&manifest.name)
            .cloned()
            .unwrap_or_default();
        let limits = settings
            .limits
            .unwrap_or_else(|| self.inner.options.default_limits.clone());
        let info = Arc::new(PluginInfo {
            name: manifest.name.as_str().into(),
            source: format!("{}@{}#{}", manifest.name, manifest.version, &digest[..16]),
            digest,
            path: path.to_path_buf(),
            input_validator,
            output_validator,
            grants: Arc::new(settings.grants),
            limits,
            from_cache,
            load_time,
            pre,
            manifest,
        });
        let mut plugins = self
            .inner
            .plugins
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(first) = plugins.get(info.name.as_ref())
            && first.path != info.path
        {
            return Err(LoadError::Duplicate {
                path: path.into(),
                name: info.name.to_string(),
                first: first.path.clone(),
            });
        }
        plugins.insert(info.name.to_string(), info.clone());
        Ok(info)
    }

    /// Compiles `bytes`, or loads the compiled form from the cache. The cache
    /// key is the content digest plus the engine's compatibility hash: a
    /// different wasmtime or configuration never reads a stale artifact.
    fn compile_cached(
        &self,
        path: &Path,
        bytes: &[u8],
        digest: &str,
    ) -> Result<(Component, bool), LoadError> {
        let engine = &self.inner.engine;
        let cached = self.inner.options.cache_dir.as_ref().map(|dir| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            engine.precompile_compatibility_hash().hash(&mut h);
            dir.join(format!("{digest}-{:016x}.cwasm", h.finish()))
        });
        if let Some(file) = cached.as_ref().filter(|f| f.exists()) {
            // SAFETY: the file was written by `Component::serialize` of this
            // host into its private cache directory, under a name that binds
            // it to these exact bytes and this engine's configuration.
            #[allow(unsafe_code)]
            let loaded = unsafe { Component::deserialize_file(engine, file) };
            match loaded {
                Ok(component) => return Ok((component, true)),
                Err(e) => {
                    tracing::warn!(cache = %file.display(), "cached plugin unreadable, recompiling: {e:?}")
                }
            }
        }
        let component = Component::new(engine, bytes).map_err(|e| LoadError::NotAComponent {
            path: path.into(),
            reason: first_line(&format!("{e:?}")),
        })?;
        if let Some(file) = cached
            && let Err(e) = write_cache(&component, &file)
        {
            tracing::warn!(cache = %file.display(), "cannot cache compiled plugin: {e}");
        }
        Ok((component, false))
    }

    async fn describe(&self, path: &Path, pre: &StepPre<CallState>) -> Result<Manifest, LoadError> {
        let limits = self.inner.options.default_limits.clone();
        let caller = Caller {
            plugin: "describe".into(),
            run_id: String::new(),
            step: String::new(),
        };
        let state = CallState::new(
            caller,
            Arc::new(Grants::default()),
            self.inner.kv.clone(),
            0,
            None,
            CallLimiter::new(&limits, limits.timeout),
        );
        let mut store = sandboxed_store(&self.inner.engine, state);
        let m = describe(&mut store, pre)
            .await
            .map_err(|e| LoadError::Describe {
                path: path.into(),
                reason: first_line(&format!("{e:?}")),
            })?;
        let schema = |what: &str, text: &str| {
            serde_json::from_str(text).map_err(|e| LoadError::Describe {
                path: path.into(),
                reason: format!("{what} schema is not JSON: {e}"),
            })
        };
        if m.name.is_empty()
            || !m
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(LoadError::Describe {
                path: path.into(),
                reason: format!(
                    "plugin name '{}' must be non-empty letters, digits, '-' or '_'",
                    m.name
                ),
            });
        }
        Ok(Manifest {
            input_schema: schema("input", &m.input_schema)?,
            output_schema: schema("output", &m.output_schema)?,
            name: m.name,
            version: m.version,
            summary: m.summary,
            supports_compensate: m.supports_compensate,
            supports_reconcile: m.supports_reconcile,
            retry: m.retry.map(|r| SuggestedRetry {
                max_attempts: r.max_attempts,
                initial_interval_ms: r.initial_interval_ms,
                backoff_coefficient: r.backoff_coefficient,
                max_interval_ms: r.max_interval_ms,
            }),
        })
    }
}

fn compile_schema(
    path: &Path,
    what: &str,
    schema: &serde_json::Value,
) -> Result<Option<jsonschema::Validator>, LoadError> {
    if schema.as_object().is_some_and(|o| o.is_empty()) {
        return Ok(None);
    }
    jsonschema::validator_for(schema)
        .map(Some)
        .map_err(|e| LoadError::Describe {
            path: path.into(),
            reason: format!("{what} schema is not a valid JSON Schema: {e}"),
        })
}

fn write_cache(component: &Component, file: &Path) -> std::io::Result<()> {
    let bytes = component
        .serialize()
        .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Write then rename: a reader never sees half a file.
    let tmp = file.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(tmp, file)
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or(text).to_string()
}

impl super::Executor for Runtime {
    async fn call(&self, request: super::CallRequest) -> super::CallReport {
        self.invoke(request).await
    }
    fn plugin(&self, name: &str) -> Option<Arc<PluginInfo>> {
        self.plugin_info(name)
    }
}
