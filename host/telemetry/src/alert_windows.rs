//! Rules over a sliding window rather than one happening: a step's failure
//! rate, user reports per flow, an objective's error-budget burn rate. Each
//! key (flow, or flow and step) keeps (time, bad) samples for the window
//! and fires once when its figure crosses the threshold; it fires again
//! only after the figure has dropped below and crossed again, so a
//! lasting problem is one alert, not one per event.

use std::collections::{HashMap, VecDeque};

/// Most samples one key keeps; older ones count no more.
const MAX_SAMPLES: usize = 100_000;
/// Most keys one rule tracks (flows, or flow and step).
const MAX_KEYS: usize = 10_000;

#[derive(Default)]
struct Samples {
    /// (time, bad), oldest first.
    seen: VecDeque<(u64, bool)>,
    bad: usize,
    firing: bool,
}

impl Samples {
    fn trim(&mut self, from_ms: u64) {
        while let Some(&(at, bad)) = self.seen.front() {
            if at >= from_ms && self.seen.len() <= MAX_SAMPLES {
                break;
            }
            self.seen.pop_front();
            self.bad -= usize::from(bad);
        }
    }

    /// (all, bad) since `from_ms`, counted from the newest end.
    fn since(&self, from_ms: u64) -> (usize, usize) {
        let mut all = 0;
        let mut bad = 0;
        for &(at, b) in self.seen.iter().rev() {
            if at < from_ms {
                break;
            }
            all += 1;
            bad += usize::from(b);
        }
        (all, bad)
    }
}

/// What a window says when its figure crosses the threshold.
#[derive(Clone, Debug, PartialEq)]
pub struct Crossing {
    /// The figure (rate, count or burn rate) that crossed.
    pub figure: f64,
    pub all: usize,
    pub bad: usize,
}

/// How a window turns samples into a figure.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Figure {
    /// bad / all.
    Rate,
    /// bad, a count.
    Count,
    /// (bad / all) / (1 − target): how many times faster than allowed the
    /// error budget is spent. Over `short_ms` too, when given (the SRE
    /// workbook's multi-window alert: the long window says it matters, the
    /// short one that it is still happening).
    BurnRate { target: f64, short_ms: Option<u64> },
}

/// One rule's windows, by key.
pub struct Windows {
    window_ms: u64,
    threshold: f64,
    min_samples: usize,
    keys: HashMap<String, Samples>,
}

impl Windows {
    pub fn new(window_ms: u64, threshold: f64, min_samples: usize) -> Self {
        Windows {
            window_ms: window_ms.max(1),
            threshold,
            min_samples,
            keys: HashMap::new(),
        }
    }

    /// Adds a sample to `key`'s window; `Some` when this makes the figure
    /// cross the threshold (it was below, or the key new).
    pub fn add(&mut self, key: &str, at_ms: u64, bad: bool, figure: Figure) -> Option<Crossing> {
        if !self.keys.contains_key(key) && self.keys.len() >= MAX_KEYS {
            return None;
        }
        let samples = self.keys.entry(key.to_string()).or_default();
        samples.seen.push_back((at_ms, bad));
        samples.bad += usize::from(bad);
        samples.trim(at_ms.saturating_sub(self.window_ms));
        let (all, bad) = (samples.seen.len(), samples.bad);
        let over = |all: usize, bad: usize| -> Option<f64> {
            let value = match figure {
                Figure::Count => bad as f64,
                _ if all == 0 => return None,
                Figure::Rate => bad as f64 / all as f64,
                Figure::BurnRate { target, .. } => {
                    (bad as f64 / all as f64) / (1.0 - target).max(1e-9)
                }
            };
            (value >= self.threshold).then_some(value)
        };
        let mut figure_now = if all >= self.min_samples || figure == Figure::Count {
            over(all, bad)
        } else {
            None
        };
        if let (
            Figure::BurnRate {
                short_ms: Some(short),
                ..
            },
            Some(_),
        ) = (figure, figure_now)
        {
            let (all, bad) = samples.since(at_ms.saturating_sub(short));
            if over(all, bad).is_none() {
                figure_now = None;
            }
        }
        match figure_now {
            Some(value) if !samples.firing => {
                samples.firing = true;
                Some(Crossing {
                    figure: value,
                    all,
                    bad,
                })
            }
            Some(_) => None,
            None => {
                samples.firing = false;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_fires_once_when_it_crosses_and_again_only_after_it_fell() {
        let mut w = Windows::new(10_000, 0.5, 4);
        assert_eq!(w.add("a", 0, true, Figure::Rate), None, "below min samples");
        w.add("a", 1, true, Figure::Rate);
        w.add("a", 2, false, Figure::Rate);
        let fired = w.add("a", 3, true, Figure::Rate).expect("3 of 4");
        assert_eq!((fired.all, fired.bad), (4, 3));
        assert_eq!(
            w.add("a", 4, true, Figure::Rate),
            None,
            "still firing: once"
        );
        for t in 5..12 {
            w.add("a", t, false, Figure::Rate);
        }
        assert!(w.add("a", 12, true, Figure::Rate).is_none(), "8 of 13 ok");
        // Past the window the old failures age out.
        for t in 20_000..20_003 {
            w.add("a", t, true, Figure::Rate);
        }
        assert!(
            w.add("a", 20_003, true, Figure::Rate).is_some(),
            "fires again"
        );
        assert_eq!(w.add("b", 0, true, Figure::Rate), None, "keys apart");
    }

    #[test]
    fn a_burn_rate_needs_both_windows() {
        let fig = Figure::BurnRate {
            target: 0.99,
            short_ms: Some(100),
        };
        // 2 bad of 10 in the long window is a burn rate of 20.
        let mut w = Windows::new(10_000, 14.4, 10);
        w.add("f", 0, true, fig);
        w.add("f", 1, true, fig);
        for t in 2..9 {
            assert_eq!(w.add("f", 1_000 + t, false, fig), None);
        }
        // Long window over, but the short one (the last 100 ms) is clean.
        assert_eq!(w.add("f", 1_050, false, fig), None);
        // One bad run in the short window is a burn of 11 there: not yet.
        assert_eq!(w.add("f", 1_060, true, fig), None);
        // Two are 20: both windows agree (the long one says 4 of 12).
        let fired = w.add("f", 1_061, true, fig).expect("fires");
        assert!((fired.figure - 33.33).abs() < 0.1, "{fired:?}");
    }

    #[test]
    fn a_count_fires_at_the_threshold() {
        let mut w = Windows::new(60_000, 3.0, 0);
        assert!(w.add("f", 0, true, Figure::Count).is_none());
        assert!(w.add("f", 1, true, Figure::Count).is_none());
        assert_eq!(w.add("f", 2, true, Figure::Count).unwrap().bad, 3);
        assert!(w.add("f", 3, true, Figure::Count).is_none());
    }
}
