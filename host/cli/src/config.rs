//! `settle.toml`: every setting, its default, and environment overrides.
//!
//! Sources, later ones winning: built-in defaults, the TOML file (`--config`,
//! or `settle.toml` in the working directory if there is one), then
//! environment variables `SETTLE_<KEY>` with `__` between levels, e.g.
//! `SETTLE_DATA_DIR=/var/lib/settle`, `SETTLE_ENGINE__MAX_RUNS_IN_FLIGHT=64`,
//! `SETTLE_PLUGINS__TRANSFER__CONFIG__BASE_URL=http://127.0.0.1:7300`.
//! Relative paths are relative to the working directory. The repository's
//! `settle.toml` is the commented reference.

use crate::runtime::Limits;
use crate::runtime::plugin::PluginSettings;
use anyhow::Context;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the store (events and indexes) lives.
    pub data_dir: PathBuf,
    /// Directories whose `*.wasm` components are installed as plugins.
    pub plugin_dirs: Vec<PathBuf>,
    /// Compiled-plugin cache; default `<data_dir>/plugin-cache`.
    pub cache_dir: Option<PathBuf>,
    pub engine: EngineConfig,
    pub store: StoreConfig,
    pub runtime: RuntimeConfig,
    /// Default sandbox limits for every plugin.
    pub limits: Limits,
    /// Per-plugin grants and limits, by plugin name.
    pub plugins: BTreeMap<String, PluginSettings>,
    /// `settle serve`: address, tokens, bounds.
    pub api: settle_api::ApiConfig,
    /// Circuit breakers, by failure domain: a plugin (`[breakers.transfer]`),
    /// a downstream host (`[breakers."host:ledger.example:443"]`), or every
    /// downstream host (`[breakers."host:*"]`), with `failure_rate`,
    /// `min_calls`, `window`, `open_for` (none by default).
    pub breakers: BTreeMap<String, settle_engine::breakers::BreakerPolicy>,
    /// Retry budgets, by failure domain as for breakers, with `share`,
    /// `min_retries`, `window` (none by default).
    pub retry_budgets: BTreeMap<String, settle_engine::retry_budget::RetryBudgetPolicy>,
    /// Bulkheads: plugin name → most calls of it in flight at once (none
    /// by default).
    pub bulkheads: BTreeMap<String, u32>,
    /// Alert rules and where alerts go (`settle serve`).
    pub alerts: settle_telemetry::alerts::AlertConfig,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// Runs executing a step at once.
    pub max_runs_in_flight: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// sled page cache, MiB.
    pub cache_capacity_mib: u64,
    /// Most commits written by one flush (group commit).
    pub max_batch: usize,
    /// `fsync` (default: a commit survives power loss) or `flush` (a commit
    /// survives a crash of the process only; see `store/disk_sync.rs`).
    pub sync: crate::store::SyncMode,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Plugin calls in progress at once (pooled instance slots).
    pub max_concurrent_calls: u32,
    /// Ceiling on any plugin's memory limit, MiB.
    pub max_memory_mib: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from(".settle"),
            plugin_dirs: vec![PathBuf::from("example-plugins/dist")],
            cache_dir: None,
            engine: EngineConfig::default(),
            store: StoreConfig::default(),
            runtime: RuntimeConfig::default(),
            limits: Limits::default(),
            plugins: BTreeMap::new(),
            api: settle_api::ApiConfig::default(),
            breakers: BTreeMap::new(),
            retry_budgets: BTreeMap::new(),
            bulkheads: BTreeMap::new(),
            alerts: Default::default(),
        }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_runs_in_flight: 1024,
        }
    }
}

impl Default for StoreConfig {
    /// The store's own defaults, in the units of this file.
    fn default() -> Self {
        let store = crate::store::StoreOptions::default();
        StoreConfig {
            cache_capacity_mib: store.cache_capacity / (1024 * 1024),
            max_batch: store.max_batch,
            sync: store.sync,
        }
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            max_concurrent_calls: 256,
            max_memory_mib: 512,
        }
    }
}

impl Config {
    /// Loads defaults, then `file` (or `./settle.toml` if present), then the environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(f) => {
                anyhow::ensure!(f.exists(), "config file {} does not exist", f.display());
                figment = figment.merge(Toml::file(f));
            }
            None if Path::new("settle.toml").exists() => {
                figment = figment.merge(Toml::file("settle.toml"))
            }
            None => {}
        }
        figment = figment.merge(Env::prefixed("SETTLE_").split("__"));
        figment.extract().context("invalid configuration")
    }

    /// Where compiled plugins are cached. By default outside any working
    /// tree (`$XDG_CACHE_HOME/settle/plugin-cache`, else
    /// `~/.cache/settle/plugin-cache`): a checkout could otherwise carry
    /// native code, with a matching checksum, into the default
    /// `.settle/plugin-cache` of whoever runs settle in it.
    pub fn cache_dir(&self) -> PathBuf {
        if let Some(dir) = &self.cache_dir {
            return dir.clone();
        }
        let user_cache = std::env::var_os("XDG_CACHE_HOME")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .filter(|d| !d.is_empty())
                    .map(|h| PathBuf::from(h).join(".cache"))
            });
        match user_cache {
            Some(dir) if dir.is_absolute() => dir.join("settle").join("plugin-cache"),
            _ => self.data_dir.join("plugin-cache"),
        }
    }

    /// Adds a plugin directory unless it is already listed (under any spelling).
    pub fn add_plugin_dir(&mut self, dir: PathBuf) {
        let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => a == b,
        };
        if !self.plugin_dirs.iter().any(|d| same(d, &dir)) {
            self.plugin_dirs.push(dir);
        }
    }

    /// The settings of plugin `name`, created empty if absent.
    pub fn plugin_mut(&mut self, name: &str) -> &mut PluginSettings {
        self.plugins.entry(name.to_string()).or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The commented reference must not drift from the defaults it documents;
    /// only its per-plugin examples go beyond them.
    #[test]
    fn reference_file_states_the_defaults() {
        let reference = Path::new(env!("CARGO_MANIFEST_DIR")).join("../settle.toml");
        let mut loaded: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::file(&reference))
            .extract()
            .expect("the reference settle.toml parses");
        assert!(!loaded.plugins.is_empty(), "the reference shows grants");
        loaded.plugins.clear();
        assert_eq!(loaded, Config::default());
    }
}
