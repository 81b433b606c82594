//! How a flow converges, in plain words for the people waiting on it: what
//! happens to a request, what is retried and undone, how the outside world
//! is checked, how long it usually takes, and how well it keeps its goal.
//! Every sentence is derived from the flow, the plugins' manifests and the
//! log; none is written by hand per flow.

use crate::expectations::{Expectation, human};
use crate::queries::ObjectiveReport;
use settle_flow::{Flow, OnDrift, OnExhausted};

/// What `GET /v1/flows/{flow}/guarantees` answers.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Guarantees {
    /// `name@version`.
    pub flow: String,
    /// The whole explanation, one sentence per line of the list.
    pub sentences: Vec<String>,
    pub steps: Vec<StepGuarantee>,
    pub expectation: Expectation,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub objective: Option<ObjectiveReport>,
}

/// One step, as a person would want it explained.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StepGuarantee {
    pub name: String,
    pub plugin: String,
    /// "tried up to 5 times, waiting 200 ms to 5 s between tries".
    pub retries: String,
    /// What happens to its change if a later step fails for good.
    pub if_a_later_step_fails: &'static str,
    /// Whether the outside world is asked afterwards whether it agrees.
    pub confirmed_with_downstream: bool,
}

/// The explanation of `flow`. `reconciles` says whether a plugin can
/// confirm its step with the outside world.
pub fn explain(
    flow: &Flow,
    reconciles: &dyn Fn(&str) -> bool,
    expectation: Expectation,
    objective: Option<ObjectiveReport>,
) -> Guarantees {
    let steps: Vec<StepGuarantee> = flow
        .steps
        .iter()
        .map(|s| {
            let tries = s.retry.max_attempts;
            let retries = if let Some(approval) = &s.approval {
                format!(
                    "a wait for {} approval(s) by people, for at most {}; one rejection stops it",
                    approval.required,
                    human(u64::try_from(approval.timeout.as_millis()).unwrap_or(u64::MAX))
                )
            } else if let Some(signal) = &s.signal {
                format!(
                    "a wait for '{}' from outside, for at most {}",
                    signal.name,
                    human(u64::try_from(signal.timeout.as_millis()).unwrap_or(u64::MAX))
                )
            } else if let Some(wait) = &s.wait {
                match wait {
                    settle_flow::Wait::For(d) => format!(
                        "a pause: it waits {}, and nothing can fail",
                        human(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                    ),
                    settle_flow::Wait::Until(_) => {
                        "a pause until a time your request gives; it fails only when that is not a time"
                            .to_string()
                    }
                }
            } else if tries <= 1 {
                "tried once".to_string()
            } else {
                format!(
                    "tried up to {tries} times, waiting {} to {} between tries",
                    human(u64::try_from(s.retry.initial_interval.as_millis()).unwrap_or(u64::MAX)),
                    human(u64::try_from(s.retry.max_interval.as_millis()).unwrap_or(u64::MAX)),
                )
            };
            let calls = s.calls();
            let mut plugins: Vec<&str> = calls.iter().map(|c| c.plugin.as_str()).collect();
            plugins.dedup();
            StepGuarantee {
                name: s.name.clone(),
                plugin: plugins.join(", "),
                retries,
                if_a_later_step_fails: if s.compensate {
                    "undone"
                } else {
                    "left in place"
                },
                confirmed_with_downstream: calls.iter().any(|c| reconciles(&c.plugin)),
            }
        })
        .collect();
    let names = |pick: &dyn Fn(&StepGuarantee) -> bool| {
        steps
            .iter()
            .filter(|s| pick(s))
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut sentences = vec![
        format!(
            "Your request is recorded on disk before you get an answer: it is never lost, and sending it again with the same key within {} never starts a second one.",
            human(u64::try_from(flow.idempotency_window.as_millis()).unwrap_or(u64::MAX))
        ),
        format!(
            "It goes through {} step(s), in order: {}.",
            steps.len(),
            names(&|_| true)
        ),
    ];
    for (s, def) in steps.iter().zip(&flow.steps) {
        if !def.calls_plugin() {
            sentences.push(format!("{} is {}.", s.name, s.retries));
            continue;
        }
        sentences.push(format!(
            "If {} fails for a reason that may pass, it is {}; a failure that cannot pass is not retried.",
            s.name, s.retries
        ));
    }
    let undone = names(&|s| s.if_a_later_step_fails == "undone");
    let kept = names(&|s| s.if_a_later_step_fails == "left in place");
    let mut on_failure = String::from("If a step fails for good, ");
    if undone.is_empty() {
        on_failure.push_str("nothing is undone");
    } else {
        on_failure.push_str(&format!(
            "what the steps before it changed is undone, in reverse order ({undone})"
        ));
    }
    if !kept.is_empty() {
        on_failure.push_str(&format!("; {kept} stays as it is"));
    }
    on_failure.push_str(". Your status then says exactly what was undone and what was not.");
    sentences.push(on_failure);
    if flow
        .steps
        .iter()
        .any(|s| s.on_exhausted == OnExhausted::Hold)
    {
        sentences.push(
            "Some steps wait for a person instead of undoing anything when their retries run out; your status says so while it waits."
                .into(),
        );
    }
    let confirmed = names(&|s| s.confirmed_with_downstream);
    if confirmed.is_empty() {
        sentences.push("Nothing confirms afterwards that the outside world agrees: a finished request says \"Completed (not independently confirmed)\".".into());
    } else {
        sentences.push(format!(
            "When every step is done, the outside world is asked whether it agrees ({confirmed}); only then does your status say \"confirmed\"."
        ));
        if let Some(r) = flow.rechecks {
            let then = match flow.on_drift {
                OnDrift::Alert => "a person decides what to do, and your status says it disagrees",
                OnDrift::Compensate => "its changes are undone, and your status says so",
                OnDrift::Reapply => {
                    "the step is done again to put things back (up to 3 times), then a person decides"
                }
            };
            sentences.push(format!(
                "After it completes, it is checked again every {} for {}; if the outside world no longer agrees, {then}.",
                human(u64::try_from(r.every.as_millis()).unwrap_or(u64::MAX)),
                human(u64::try_from(r.window.as_millis()).unwrap_or(u64::MAX)),
            ));
        }
    }
    let mut timing = expectation.text.clone();
    if let Some(first) = timing.get_mut(..1) {
        first.make_ascii_uppercase();
    }
    sentences.push(format!("{timing}."));
    if let Some(o) = &objective {
        let goal = format!(
            "The goal: {} of requests settle within {}",
            percent(o.target),
            human(o.settled_within_ms)
        );
        let over = if o.runs_read >= crate::queries::OBJECTIVE_SAMPLE {
            format!("of the newest {} runs", o.runs_read)
        } else {
            format!("over the last {}", human(o.window_ms))
        };
        sentences.push(match o.attainment {
            Some(a) => format!(
                "{goal}; {over}, {} did ({} of {}).",
                percent(a),
                o.met,
                o.met + o.missed
            ),
            None => format!("{goal}; no request has counted yet."),
        });
    }
    Guarantees {
        flow: flow.id(),
        sentences,
        steps,
        expectation,
        objective,
    }
}

/// "99 %", "99.5 %", rounded down: 99.96 % is not "100 %".
fn percent(share: f64) -> String {
    let p = (share * 1000.0 + 1e-9).floor() / 10.0;
    if p.fract() == 0.0 {
        format!("{p:.0} %")
    } else {
        format!("{p:.1} %")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flow_is_explained_from_what_it_declares() {
        let flow = Flow::parse(
            "name: order\nreconcile: { every: 1h, for: 7d }\nobjective: { settled_within: 30s, target: 99% }\nsteps:\n  - { name: charge, plugin: transfer, retry: { max_attempts: 5, initial_interval: 200ms, max_interval: 5s } }\n  - { name: notify, plugin: notify, compensate: false, retry: { max_attempts: 1 } }\n",
            "order.yaml",
        )
        .unwrap();
        let expectation = Expectation {
            usually_within_ms: Some(8_000),
            of_runs: 500,
            overdue: false,
            text: "usually completes within 8 s (90 % of the last 500 runs)".into(),
            message: settle_types::messages::Message::new("expect.usually"),
            step: None,
        };
        let g = explain(&flow, &|p| p == "transfer", expectation, None);
        let text = g.sentences.join("\n");
        for expected in [
            "It goes through 2 step(s), in order: charge, notify.",
            "If charge fails for a reason that may pass, it is tried up to 5 times, waiting 200 ms to 5 s between tries",
            "If notify fails for a reason that may pass, it is tried once",
            "what the steps before it changed is undone, in reverse order (charge); notify stays as it is.",
            "the outside world is asked whether it agrees (charge)",
            "checked again every 1 h for 7 days; if the outside world no longer agrees, a person decides",
            "Usually completes within 8 s (90 % of the last 500 runs).",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
        assert_eq!(g.steps[1].if_a_later_step_fails, "left in place");
        assert!(!g.steps[1].confirmed_with_downstream);
        assert_eq!(percent(0.99), "99 %");
        assert_eq!(percent(0.995), "99.5 %");
        assert_eq!(percent(0.99996), "99.9 %", "never rounded up to 100 %");
    }
}
