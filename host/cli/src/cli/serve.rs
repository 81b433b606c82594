//! `settle serve`: the host as a service. Resumes unfinished runs, offers
//! the flows of `--flows` (and those registered over the API before), and
//! serves the HTTP API until SIGTERM or SIGINT; then it stops accepting,
//! answers `?wait`s with what is known and ends streams, lets attempts in
//! flight finish (all within `api.drain` of the signal), and closes the
//! store.

use crate::app::{Host, OnStart};
use crate::config::Config;
use anyhow::Context;
use settle_engine::catalog::FlowCatalog;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on (overrides `api.listen`); port 0 picks a free one.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Directory of flow files to offer (each `*.yaml`).
    #[arg(long = "flows")]
    flows: Vec<PathBuf>,
    /// Accept and record runs without driving them: they wait, as after a
    /// crash, for the next start. `settle bench --http` uses it to read
    /// status with many runs in flight.
    #[arg(long, hide = true)]
    accept_only: bool,
}

pub async fn serve(config: &Config, args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let mut config = config.clone();
    if let Some(listen) = args.listen {
        config.api.listen = listen;
    }
    // Refused before anything starts: no tokens off loopback.
    settle_api::auth::Auth::new(&config.api.tokens).map_err(anyhow::Error::msg)?;
    if config.api.tokens.is_empty() && !config.api.listen.ip().is_loopback() {
        anyhow::bail!(
            "refusing to listen on {} without tokens: add [[api.tokens]] to settle.toml (`settle token new --role operator`), or listen on 127.0.0.1",
            config.api.listen
        );
    }
    let catalog = Arc::new(FlowCatalog::new(Some(config.data_dir.join("flows"))));
    let mut problems = catalog.load_dir(&config.data_dir.join("flows"), "api");
    for dir in &args.flows {
        problems.extend(catalog.load_dir(dir, "file"));
    }
    for p in &problems {
        eprintln!("warning: flow not offered: {p}");
    }
    let listener = tokio::net::TcpListener::bind(config.api.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.api.listen))?;
    let addr = listener.local_addr()?;
    let host = Host::start_with(&config, OnStart::Leave).await?;
    // Runs may move to a flow's current version when it asks for it.
    host.engine.offer_upgrades(catalog.clone());
    for e in &host.load_errors {
        eprintln!("warning: {e}");
    }
    config.alerts.check().map_err(anyhow::Error::msg)?;
    let (render, alerts) = observe(&host, &config.alerts, catalog.clone()).await?;
    let sweeping = tokio::spawn(sweep_stuck(
        host.engine.clone(),
        alerts.clone(),
        config.alerts.clone(),
    ));
    let api = settle_api::Api::new(host.engine.clone(), catalog, config.api.clone())
        .map_err(anyhow::Error::msg)?
        .with_metrics(render)
        .with_alerts(Arc::new(move || {
            serde_json::to_value(alerts.recent()).unwrap_or_default()
        }));
    let router = settle_api::router(api.clone());
    // The address goes out first, so scripts can start on port 0 and read it.
    outln!("listening on {addr}");
    if args.accept_only {
        host.engine.set_paused(true);
        tracing::warn!(%addr, "serving; accepting runs without driving them (--accept-only)");
    } else {
        let resumed = host.engine.resume().await?;
        for (run, why) in &resumed.stuck {
            eprintln!("warning: run {run} cannot be resumed: {why}");
        }
        tracing::info!(runs = resumed.runs.len(), %addr, "serving");
        // Settled runs are checked again while their flows' windows last;
        // it stops with the engine.
        host.engine.start_rechecks();
    }
    api.set_ready(true);
    let drain = config.api.drain;
    // One drain for the whole stop, counted from the signal.
    let signalled: Arc<OnceLock<Instant>> = Arc::default();
    let (stopping, signal_at) = (api.clone(), signalled.clone());
    settle_api::serve(
        listener,
        router,
        async move {
            shutdown_signal().await;
            let _ = signal_at.set(Instant::now());
            stopping.set_draining();
        },
        drain,
    )
    .await?;
    // The API (and the sweep) hold the engine, and through it the store:
    // let go of them, so the store can close below.
    sweeping.abort();
    let _ = sweeping.await;
    drop(api);
    tracing::info!("stopped accepting; letting attempts in flight finish");
    let left = drain.saturating_sub(signalled.get().map_or(Duration::ZERO, Instant::elapsed));
    if tokio::time::timeout(left, host.engine.shutdown())
        .await
        .is_err()
    {
        // Their drivers still hold the store, which has written everything
        // it acknowledged: nothing more to wait for.
        tracing::warn!("attempts still in flight after {drain:?}; they resume at the next start");
        return Ok(ExitCode::SUCCESS);
    }
    host.shutdown().await?;
    Ok(ExitCode::SUCCESS)
}

/// Hands the host's metrics to the engine and the store, counts the runs
/// already waiting in each state, and returns what renders `/metrics`.
/// Metrics and alerts, told everything the engine commits.
type Observed = (
    Arc<dyn Fn() -> String + Send + Sync>,
    Arc<settle_telemetry::alerts::Alerts>,
);

async fn observe(
    host: &Host,
    alerting: &settle_telemetry::alerts::AlertConfig,
    catalog: Arc<FlowCatalog>,
) -> anyhow::Result<Observed> {
    use settle_telemetry::metrics::{Metrics, NON_TERMINAL};
    use settle_types::store::{RunFilter, RunQueries};
    let metrics = Arc::new(Metrics::new());
    // Before any run moves: from here on the engine moves runs between the
    // gauges as it commits.
    for state in NON_TERMINAL {
        let filter = RunFilter {
            states: vec![state],
            ..RunFilter::default()
        };
        let runs = host.engine.store().list_runs(&filter, usize::MAX).await?;
        metrics.set_runs(state, i64::try_from(runs.items.len()).unwrap_or(i64::MAX));
    }
    // Burn rates are measured against the objective of the flow's
    // current version.
    let target = move |flow: &str| {
        catalog
            .current(flow)
            .and_then(|f| f.objective)
            .map(|o| o.target)
    };
    let alerts = Arc::new(
        settle_telemetry::alerts::Alerts::start(alerting, Some(metrics.alerts.clone()))
            .with_objectives(Box::new(target))
            .with_dropped_counter(metrics.alerts_dropped.clone()),
    );
    host.engine
        .observe(Arc::new(settle_types::observe::Fanout(vec![
            metrics.clone(),
            alerts.clone(),
        ])));
    host.store.observe(metrics.clone());
    let engine = host.engine.clone();
    let runtime = host.runtime.clone();
    let render: Arc<dyn Fn() -> String + Send + Sync> = Arc::new(move || {
        let (in_use, total) = runtime.slots();
        metrics
            .pool_slots_in_use
            .set(i64::try_from(in_use).unwrap_or(i64::MAX));
        metrics
            .pool_slots
            .set(i64::try_from(total).unwrap_or(i64::MAX));
        metrics
            .runs_driven
            .set(i64::try_from(engine.live_runs()).unwrap_or(i64::MAX));
        let domains = engine.domains();
        for b in &domains.retry_budgets {
            let (retries, allowed) = (&metrics.retry_budget_retries, &metrics.retry_budget_allowed);
            let as_i64 = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
            retries
                .with_label_values(&[&b.domain])
                .set(as_i64(b.retries));
            allowed
                .with_label_values(&[&b.domain])
                .set(b.allowed.floor() as i64);
        }
        for b in &domains.bulkheads {
            metrics
                .bulkhead_in_flight
                .with_label_values(&[&b.plugin])
                .set(i64::from(b.in_flight));
            metrics
                .bulkhead_limit
                .with_label_values(&[&b.plugin])
                .set(i64::from(b.max_in_flight));
        }
        let stats = runtime.stats();
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        Metrics::catch_up(&metrics.pool_waits, load(&stats.pool_waits));
        Metrics::catch_up(&metrics.pool_exhausted, load(&stats.pool_exhausted));
        Metrics::catch_up(&metrics.log_lines_dropped, load(&stats.log_lines_dropped));
        metrics.render()
    });
    Ok((render, alerts))
}

/// Most runs of one state one sweep looks at.
const SWEEP_RUNS: usize = 10_000;

/// Raises `stuck` alerts: every so often (a quarter of the shortest
/// `longer_than`, between 250 ms and 30 s) lists the runs in the states
/// the rules watch and hands them to the alerts, which raise each once.
async fn sweep_stuck(
    engine: crate::engine::Engine<crate::store::SledStore, crate::runtime::Runtime>,
    alerts: Arc<settle_telemetry::alerts::Alerts>,
    config: settle_telemetry::alerts::AlertConfig,
) {
    use settle_types::store::{RunFilter, RunQueries};
    let states = alerts.stuck_states();
    let Some(shortest) = config.rules.iter().filter_map(|r| r.longer_than).min() else {
        return;
    };
    let every = (shortest / 4).clamp(Duration::from_millis(250), Duration::from_secs(30));
    loop {
        tokio::time::sleep(every).await;
        let filter = RunFilter {
            states: states.clone(),
            ..RunFilter::default()
        };
        match engine.store().list_runs(&filter, SWEEP_RUNS).await {
            Ok(scan) => {
                let runs: Vec<_> = scan
                    .items
                    .iter()
                    .map(|s| {
                        // Summaries written before it was kept: their last change.
                        let since = match s.state_since_ms {
                            0 => s.updated_at_ms,
                            since => since,
                        };
                        (s.run_id.to_string(), s.flow.clone(), s.state, since)
                    })
                    .collect();
                alerts.sweep(&runs, settle_types::now_ms());
            }
            Err(e) => tracing::warn!("cannot list runs for the stuck-run alerts: {e}"),
        }
    }
}

/// SIGTERM or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// `settle token new --role ROLE [--name NAME]`: a token, printed once, and
/// the lines that configure it.
pub fn token_new(role: &str, name: &str) -> anyhow::Result<ExitCode> {
    let role: settle_api::auth::Role = role.parse().map_err(anyhow::Error::msg)?;
    let (token, hash) = settle_api::auth::new_token().map_err(anyhow::Error::msg)?;
    outln!("token (shown once; keep it secret): {token}");
    outln!();
    outln!("add to settle.toml:");
    outln!("[[api.tokens]]");
    outln!("name = \"{name}\"");
    outln!("role = \"{}\"", role.as_str());
    outln!("sha256 = \"{hash}\"");
    Ok(ExitCode::SUCCESS)
}
