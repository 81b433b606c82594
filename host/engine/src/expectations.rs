//! Honest timing: how long runs of a flow usually take, from the runs that
//! actually settled, so a status can say "usually completes within 8 s
//! (90 % of the last 500 runs)" — and says nothing of the kind until enough
//! runs have settled to know.
//!
//! The window is the last [`WINDOW`] runs of the flow that settled on their
//! first pass (a restarted run, or one settled by accepting its drift, is
//! not a sample). It is read back from the store the first time a flow is
//! asked about (so it survives restarts: the log is the record), then kept
//! up to date in memory as runs settle.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Runs of a flow the expectation is taken from.
pub const WINDOW: usize = 500;
/// Runs of a flow that must have settled before anything is promised.
pub const MIN_RUNS: usize = 20;
/// The share of runs the announced time covers.
pub const PERCENT: usize = 90;

use settle_types::messages::{CATALOG_VERSION, Lang, Message};
use std::collections::BTreeMap;

/// What a status says about time.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Expectation {
    /// 90 % of the runs counted settled within this long of being accepted;
    /// absent while too few have settled to say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usually_within_ms: Option<u64>,
    /// Runs it is taken from.
    pub of_runs: usize,
    /// Whether this run has taken longer than that already.
    #[serde(default)]
    pub overdue: bool,
    /// The sentence for people, in English.
    pub text: String,
    /// The same as a catalog message, to render in any language.
    pub message: Message,
    /// How long the step the run is at usually takes, once enough runs
    /// have done it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<StepExpectation>,
}

/// How long one step usually takes (first attempt scheduled → completed,
/// retries included), over the steps completed by runs of its flow on
/// their first pass; a step a hold interrupted is not measured. After a
/// restart it is read back from the logs of runs that settled.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StepExpectation {
    pub step: String,
    pub usually_within_ms: u64,
    pub of_runs: usize,
    /// Whether the run has been at this step longer than that already.
    pub overdue: bool,
}

/// The key of a step's window beside its flow's.
fn step_key(flow: &str, step: &str) -> String {
    format!("{flow}\u{1f}{step}")
}

/// Settle times of recent runs, per flow.
#[derive(Default)]
pub struct Expectations {
    flows: Mutex<HashMap<String, Window>>,
}

#[derive(Default)]
struct Window {
    /// Accepted → settled, milliseconds, oldest first.
    samples: VecDeque<u64>,
    /// Read back from the store already.
    loaded: bool,
    /// The time covering PERCENT % of `samples`, while they have not
    /// changed: statuses are read far more often than runs settle.
    within: Option<u64>,
}

impl Window {
    fn push(&mut self, ms: u64) {
        if self.samples.len() == WINDOW {
            self.samples.pop_front();
        }
        self.samples.push_back(ms);
        self.within = None;
    }

    /// Nearest rank: the smallest time that covers PERCENT % of the runs.
    fn within(&mut self) -> Option<u64> {
        let n = self.samples.len();
        if n == 0 {
            return None;
        }
        if self.within.is_none() {
            let mut sorted: Vec<u64> = self.samples.iter().copied().collect();
            sorted.sort_unstable();
            let rank = (n * PERCENT).div_ceil(100).clamp(1, n);
            self.within = Some(sorted[rank - 1]);
        }
        self.within
    }
}

impl Expectations {
    /// A run of `flow` settled `ms` after it was accepted.
    pub fn record(&self, flow: &str, ms: u64) {
        let mut flows = self.flows.lock().unwrap_or_else(|p| p.into_inner());
        flows.entry(flow.to_string()).or_default().push(ms);
    }

    /// Whether `flow`'s window has been read back from the store.
    pub fn loaded(&self, flow: &str) -> bool {
        let flows = self.flows.lock().unwrap_or_else(|p| p.into_inner());
        flows.get(flow).is_some_and(|w| w.loaded)
    }

    /// Sets `flow`'s window from the store: `newest_first` settle times.
    pub fn load(&self, flow: &str, newest_first: impl IntoIterator<Item = u64>) {
        let mut window = Window {
            loaded: true,
            ..Window::default()
        };
        let mut read: Vec<u64> = newest_first.into_iter().take(WINDOW).collect();
        read.reverse();
        for ms in read {
            window.push(ms);
        }
        let mut flows = self.flows.lock().unwrap_or_else(|p| p.into_inner());
        flows.insert(flow.to_string(), window);
    }

    /// Step `step` of a run of `flow` took `ms` (first attempt scheduled →
    /// completed).
    pub fn record_step(&self, flow: &str, step: &str, ms: u64) {
        self.record(&step_key(flow, step), ms);
    }

    /// Sets the windows of `flow`'s steps from the store: per step, its
    /// times, newest first.
    pub fn load_steps(&self, flow: &str, steps: BTreeMap<String, Vec<u64>>) {
        for (step, times) in steps {
            self.load(&step_key(flow, &step), times);
        }
    }

    /// How long step `step` of `flow` usually takes, for a run at it for
    /// `elapsed_ms`; `None` before enough runs have done it.
    pub fn expect_step(&self, flow: &str, step: &str, elapsed_ms: u64) -> Option<StepExpectation> {
        let mut flows = self.flows.lock().unwrap_or_else(|p| p.into_inner());
        let window = flows.get_mut(&step_key(flow, step))?;
        let n = window.samples.len();
        let within = window.within().filter(|_| n >= MIN_RUNS)?;
        Some(StepExpectation {
            step: step.to_string(),
            usually_within_ms: within,
            of_runs: n,
            overdue: elapsed_ms > within,
        })
    }

    /// What can honestly be said of a run of `flow` accepted `elapsed_ms` ago.
    pub fn expect(&self, flow: &str, elapsed_ms: u64) -> Expectation {
        let (n, within) = {
            let mut flows = self.flows.lock().unwrap_or_else(|p| p.into_inner());
            match flows.get_mut(flow) {
                Some(w) => (w.samples.len(), w.within()),
                None => (0, None),
            }
        };
        let within = match within {
            Some(within) if n >= MIN_RUNS => within,
            _ => {
                let message = Message::new("expect.no-estimate")
                    .with("runs", n)
                    .with("needed", MIN_RUNS);
                return Expectation {
                    usually_within_ms: None,
                    of_runs: n,
                    overdue: false,
                    text: message.render(Lang::En, CATALOG_VERSION),
                    message,
                    step: None,
                };
            }
        };
        let overdue = elapsed_ms > within;
        let message = Message::new(if overdue {
            "expect.overdue"
        } else {
            "expect.usually"
        })
        .with("percent", PERCENT)
        .with("runs", n)
        .with("within", human(within));
        Expectation {
            usually_within_ms: Some(within),
            of_runs: n,
            overdue,
            text: message.render(Lang::En, CATALOG_VERSION),
            message,
            step: None,
        }
    }
}

/// Per step, how long it took in a run's log: from the last `attempt 1`
/// scheduling of it to its completion (the run that counts, after a
/// restart of it).
pub fn step_times(steps: &[String], events: &[settle_types::Event]) -> Vec<(String, u64)> {
    use settle_types::EventKind;
    let mut started: BTreeMap<u32, u64> = BTreeMap::new();
    let mut took = BTreeMap::new();
    for e in events {
        match e.kind {
            EventKind::StepScheduled {
                index, attempt: 1, ..
            } => {
                started.insert(index, e.at_ms);
            }
            EventKind::StepCompleted { index, .. } => {
                if let Some(at) = started.get(&index) {
                    took.insert(index, e.at_ms.saturating_sub(*at));
                }
            }
            _ => {}
        }
    }
    took.into_iter()
        .filter_map(|(i, ms)| Some((steps.get(i as usize)?.clone(), ms)))
        .collect()
}

/// `ms` for people, rounded up: "450 ms", "8 s", "3 min", "2 h", and
/// whole hours and days as such ("1 h", "7 days").
pub fn human(ms: u64) -> String {
    const HOUR: u64 = 3_600_000;
    const DAY: u64 = 24 * HOUR;
    if ms >= 2 * DAY && ms.is_multiple_of(DAY) {
        return format!("{} days", ms / DAY);
    }
    if ms >= HOUR && ms.is_multiple_of(HOUR) {
        return format!("{} h", ms / HOUR);
    }
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..120_000 => format!("{} s", ms.div_ceil(1_000)),
        120_000..7_200_000 => format!("{} min", ms.div_ceil(60_000)),
        _ => format!("{} h", ms.div_ceil(3_600_000)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_promised_before_enough_runs_have_settled() {
        let e = Expectations::default();
        for _ in 0..MIN_RUNS - 1 {
            e.record("f", 100);
        }
        let said = e.expect("f", 0);
        assert_eq!(said.usually_within_ms, None);
        assert!(
            said.text.starts_with("no estimate yet: 19 run(s)"),
            "{}",
            said.text
        );
        e.record("f", 100);
        assert_eq!(e.expect("f", 0).usually_within_ms, Some(100));
        assert_eq!(e.expect("other", 0).of_runs, 0);
    }

    #[test]
    fn the_time_covers_ninety_percent_and_a_late_run_is_told_so() {
        let e = Expectations::default();
        // 1..=100 s: the 90th is 90 s.
        e.load("f", (1..=100).rev().map(|s| s * 1_000));
        let said = e.expect("f", 5_000);
        assert_eq!(said.usually_within_ms, Some(90_000));
        assert_eq!(said.of_runs, 100);
        assert_eq!(
            said.text,
            "usually completes within 90 s (90 % of the last 100 runs)"
        );
        let late = e.expect("f", 95_000);
        assert!(late.overdue);
        assert!(
            late.text.starts_with("taking longer than usual"),
            "{}",
            late.text
        );
    }

    #[test]
    fn the_window_keeps_the_newest_runs() {
        let e = Expectations::default();
        e.load("f", std::iter::repeat_n(60_000, WINDOW));
        for _ in 0..WINDOW {
            e.record("f", 10);
        }
        assert_eq!(e.expect("f", 0).usually_within_ms, Some(10));
        assert_eq!(e.expect("f", 0).of_runs, WINDOW);
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(human(450), "450 ms");
        assert_eq!(human(7_200), "8 s");
        assert_eq!(human(150_000), "3 min");
        assert_eq!(human(3_600_000), "1 h");
        assert_eq!(human(7 * 24 * 3_600_000), "7 days");
        assert_eq!(
            human(u64::MAX),
            format!("{} h", u64::MAX.div_ceil(3_600_000))
        );
    }
}
