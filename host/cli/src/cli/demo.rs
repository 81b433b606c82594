//! `settle demo`: the shipped flows end to end against the demo service.
//! One order settles, one is compensated (the stock runs out, the money is
//! refunded), one settles after its fraud check is retried.

use super::run::RunReport;
use crate::app::Host;
use crate::config::Config;
use crate::flow::Flow;
use anyhow::Context;
use serde_json::json;
use settle_demo_service::{DemoService, Launcher};
use std::process::ExitCode;
use std::sync::Arc;

const ORDER: &str = include_str!("../../../../example-plugins/flows/order.yaml");
const ORDER_WITH_FRAUD_CHECK: &str =
    include_str!("../../../../example-plugins/flows/order-with-fraud-check.yaml");

/// Grants the example plugins access to the demo service.
pub fn grant_demo_service(config: &mut Config, base_url: &str) {
    let host = base_url.trim_start_matches("http://").to_string();
    for plugin in settle_demo_service::CALLERS {
        let settings = config.plugin_mut(plugin);
        settings.grants.allowed_outbound_hosts = vec![host.clone()];
        settings
            .grants
            .config
            .insert("base_url".into(), base_url.into());
    }
    config.plugin_mut("flaky").grants.kv = true;
}

pub async fn demo(config: &Config) -> anyhow::Result<ExitCode> {
    let mut config = config.clone();
    let exe = std::env::current_exe().context("cannot find the settle binary")?;
    let service = DemoService::start(Launcher::settle(exe), &config.data_dir.join("demo-service"))?;
    grant_demo_service(&mut config, &service.base_url);
    outln!("demo service (the outside world) at {}", service.base_url);

    let host = Host::start(&config).await?;
    for e in &host.load_errors {
        eprintln!("warning: {e}");
    }
    let order = Arc::new(Flow::parse(ORDER, "order.yaml")?);
    let checked = Arc::new(Flow::parse(
        ORDER_WITH_FRAUD_CHECK,
        "order-with-fraud-check.yaml",
    )?);
    let cases = [
        (
            "an order that settles",
            &order,
            json!({"customer": "alice", "amount": 2500, "sku": "widget", "quantity": 2}),
        ),
        (
            "an order that cannot be completed (only 1 rare-item in stock): the charge is refunded",
            &order,
            json!({"customer": "bob", "amount": 9900, "sku": "rare-item", "quantity": 5}),
        ),
        (
            "an order whose fraud check fails twice before it passes",
            &checked,
            json!({"customer": "carol", "amount": 1200, "sku": "gadget", "quantity": 1}),
        ),
    ];
    let mut ok = true;
    for (title, flow, input) in cases {
        outln!("\n== {title}");
        let submitted = host.engine.submit(flow, input, None).await?;
        let summary = host
            .engine
            .wait(submitted.run_id)
            .await?
            .context("run vanished")?;
        let report = RunReport::new(&summary, false);
        outln!(
            "run {}  {}: {}",
            report.status.run_id,
            report.status.state,
            report.status.phrase
        );
        for e in host.store_events(submitted.run_id)? {
            outln!("  {e}");
        }
        ok &= report.status.state.is_terminal();
    }
    let state = service.state()?;
    outln!(
        "\n== the outside world now (GET {}/state)",
        service.base_url
    );
    outln!("accounts:     {}", state["accounts"]);
    outln!("stock:        {}", state["stock"]);
    let count = |k: &str| {
        state[k]
            .as_object()
            .map(|o| o.len())
            .or(state[k].as_array().map(Vec::len))
            .unwrap_or(0)
    };
    outln!(
        "transfers: {}, reservations: {}, messages: {}, repeated requests deduplicated: {}",
        count("transfers"),
        count("reservations"),
        count("messages"),
        state["deduplicated"]
    );
    outln!("\nInspect with: settle runs, settle status RUN, settle events RUN (same --data)");
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

impl Host {
    /// One line per event of a run, for the demo's narration.
    fn store_events(&self, run: crate::model::RunId) -> anyhow::Result<Vec<String>> {
        Ok(self
            .store
            .events_now(run)?
            .iter()
            .map(|e| {
                let step = e.step.as_deref().unwrap_or("");
                let attempt = e
                    .attempt
                    .map(|a| format!(" attempt {a}"))
                    .unwrap_or_default();
                let extra = match &e.kind {
                    crate::model::EventKind::StepFailed { failure, .. }
                    | crate::model::EventKind::CompensationFailed { failure, .. } => {
                        format!(": {} ({})", failure.message, failure.class.as_str())
                    }
                    _ => String::new(),
                };
                format!("{:>2} {:<24} {step}{attempt}{extra}", e.seq, e.kind.name())
            })
            .collect())
    }
}
