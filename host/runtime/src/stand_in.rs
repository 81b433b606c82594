//! A stand-in for the outside world, for a plugin's tests and for replays:
//! its outbound requests are answered from a script (none reaches the
//! network), its clock is one the caller sets and moves, and its log lines
//! are kept for the caller to read.
//!
//! Set with [`crate::RuntimeOptions::stand_in`]; the real world is used
//! otherwise. Grants still apply: a request to a host the plugin is not
//! allowed is refused before the script is asked.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The most bytes of a request or scripted response body kept.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// The most requests and log lines kept (each), and scripted answers held.
pub const MAX_KEPT: usize = 200;

/// One scripted answer: to a request with this method and URL.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Scripted {
    pub method: String,
    pub url: String,
    #[serde(default = "ok")]
    pub status: u16,
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    #[serde(default)]
    pub body: String,
    /// How many requests it answers (default 1); 0: every one.
    #[serde(default = "one")]
    pub times: u32,
}

fn ok() -> u16 {
    200
}

fn one() -> u32 {
    1
}

/// A request a plugin sent, as the stand-in saw it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Seen {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Whether the script answered it.
    pub answered: bool,
}

/// A log line a plugin wrote.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct LogLine {
    pub level: &'static str,
    pub message: String,
}

/// The stand-in: see the module docs.
#[derive(Debug, Default)]
pub struct StandIn {
    /// Wall time, milliseconds since the Unix epoch.
    now_ms: AtomicU64,
    script: Mutex<Vec<Scripted>>,
    seen: Mutex<Vec<Seen>>,
    logs: Mutex<Vec<LogLine>>,
}

impl StandIn {
    /// A world whose clock reads `now_ms` (milliseconds since the epoch)
    /// until it is moved.
    pub fn new(now_ms: u64) -> Self {
        StandIn {
            now_ms: AtomicU64::new(now_ms),
            ..StandIn::default()
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::Relaxed)
    }

    /// Moves the clock on (saturating).
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        let _ = self
            .now_ms
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some(t.saturating_add(by))
            });
    }

    /// Adds answers to the script, after those there are.
    pub fn script(&self, answers: impl IntoIterator<Item = Scripted>) {
        let mut script = lock(&self.script);
        let room = MAX_KEPT.saturating_sub(script.len());
        script.extend(answers.into_iter().take(room));
    }

    /// The requests seen since the last call, oldest first.
    pub fn take_requests(&self) -> Vec<Seen> {
        std::mem::take(&mut *lock(&self.seen))
    }

    /// The log lines written since the last call, oldest first.
    pub fn take_logs(&self) -> Vec<LogLine> {
        std::mem::take(&mut *lock(&self.logs))
    }

    pub(crate) fn log(&self, level: &'static str, message: &str) {
        let mut logs = lock(&self.logs);
        if logs.len() < MAX_KEPT {
            logs.push(LogLine {
                level,
                message: message.to_string(),
            });
        }
    }

    /// The scripted answer to a request (the first one for its method and
    /// URL with uses left), noting the request either way.
    pub(crate) fn answer(
        &self,
        method: &str,
        url: &str,
        headers: Vec<(String, String)>,
        body: &[u8],
    ) -> Option<Scripted> {
        let found = {
            let mut script = lock(&self.script);
            let at = script
                .iter()
                .position(|s| s.method.eq_ignore_ascii_case(method) && s.url == url);
            at.map(|at| {
                let answer = script[at].clone();
                match script[at].times {
                    0 => {}
                    1 => {
                        script.remove(at);
                    }
                    n => script[at].times = n - 1,
                }
                answer
            })
        };
        let mut seen = lock(&self.seen);
        if seen.len() < MAX_KEPT {
            let body = &body[..body.len().min(MAX_BODY_BYTES)];
            seen.push(Seen {
                method: method.to_string(),
                url: url.to_string(),
                headers,
                body: String::from_utf8_lossy(body).into_owned(),
                answered: found.is_some(),
            });
        }
        found
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The stand-in's clock as WASI's wall clock.
pub(crate) struct Wall(pub std::sync::Arc<StandIn>);

impl wasmtime_wasi::HostWallClock for Wall {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }
    fn now(&self) -> Duration {
        Duration::from_millis(self.0.now_ms())
    }
}

/// The stand-in's clock as WASI's monotonic clock (nanoseconds).
pub(crate) struct Monotonic(pub std::sync::Arc<StandIn>);

impl wasmtime_wasi::HostMonotonicClock for Monotonic {
    fn resolution(&self) -> u64 {
        1_000_000
    }
    fn now(&self) -> u64 {
        self.0.now_ms().saturating_mul(1_000_000)
    }
}
