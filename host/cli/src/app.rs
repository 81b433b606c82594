//! The composition root: opens the store, starts the runtime with the
//! installed plugins, and builds the engine over both. The only place that
//! names all three layers.

use crate::config::Config;
use crate::engine::{Engine, EngineOptions, Resumed};
use crate::runtime::{LoadError, Runtime, RuntimeOptions};
use crate::store::{SledStore, StoreOptions};
use anyhow::Context;
use std::sync::Arc;

/// The engine as the host runs it.
pub type HostEngine = Engine<SledStore, Runtime>;

/// A running host.
pub struct Host {
    pub engine: HostEngine,
    pub store: SledStore,
    pub runtime: Runtime,
    /// Plugin files that could not be installed.
    pub load_errors: Vec<LoadError>,
    /// What was resumed at start.
    pub resumed: Resumed,
}

/// Opens the store alone, for commands that only read.
pub fn open_store(config: &Config) -> anyhow::Result<SledStore> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let options = StoreOptions {
        cache_capacity: config.store.cache_capacity_mib * 1024 * 1024,
        max_batch: config.store.max_batch.max(1),
        sync: config.store.sync,
        ..StoreOptions::default()
    };
    Ok(SledStore::open(&config.data_dir.join("store"), &options)?)
}

/// What a host does with unfinished runs when it starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnStart {
    /// Resume every unfinished run (a host's normal start).
    ResumeAll,
    /// Leave them be (an operator's command that acts on one run).
    Leave,
}

impl Host {
    /// Starts a host: store, plugins, engine, and resumes unfinished runs.
    pub async fn start(config: &Config) -> anyhow::Result<Host> {
        Self::start_with(config, OnStart::ResumeAll).await
    }

    /// Starts a host, resuming unfinished runs or not.
    pub async fn start_with(config: &Config, on_start: OnStart) -> anyhow::Result<Host> {
        let store = open_store(config)?;
        let options = RuntimeOptions {
            max_concurrent_calls: config.runtime.max_concurrent_calls,
            max_memory_mib: config.runtime.max_memory_mib,
            cache_dir: Some(config.cache_dir()),
            builds_dir: Some(config.data_dir.join("builds")),
            default_limits: config.limits.clone(),
            plugins: config.plugins.clone(),
            stand_in: None,
        };
        let runtime = Runtime::new(options, Arc::new(store.clone()))?;
        let mut load_errors = Vec::new();
        for dir in &config.plugin_dirs {
            load_errors.extend(runtime.load_dir(dir).await);
        }
        let engine = Engine::new(
            store.clone(),
            runtime.clone(),
            EngineOptions {
                max_runs_in_flight: config.engine.max_runs_in_flight,
                domains: settle_engine::domains::DomainPolicies {
                    breakers: config
                        .breakers
                        .iter()
                        .map(|(domain, policy)| (domain.clone(), *policy))
                        .collect(),
                    retry_budgets: config
                        .retry_budgets
                        .iter()
                        .map(|(domain, policy)| (domain.clone(), *policy))
                        .collect(),
                    bulkheads: config
                        .bulkheads
                        .iter()
                        .map(|(plugin, max)| (plugin.clone(), *max))
                        .collect(),
                },
                ..EngineOptions::default()
            },
        );
        let resumed = match on_start {
            OnStart::ResumeAll => engine.resume().await?,
            OnStart::Leave => Resumed::default(),
        };
        Ok(Host {
            engine,
            store,
            runtime,
            load_errors,
            resumed,
        })
    }
}

impl Host {
    /// Stops the engine and closes the store; returns once another host may
    /// open it.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.engine.shutdown().await;
        let path = self.store.path().to_path_buf();
        drop(self);
        crate::store::wait_until_closed(&path, std::time::Duration::from_secs(10)).await?;
        Ok(())
    }
}
