//! Identities: run ids (UUID v7, time-ordered, so run keys sort by age) and
//! operation ids (the stable identity of one step of one run).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

/// A run's id: a UUID v7, so that keys built from it sort by acceptance time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(pub Uuid);

impl RunId {
    pub fn new() -> Self {
        RunId(Uuid::now_v7())
    }
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        Uuid::from_slice(bytes).ok().map(RunId)
    }
    /// The W3C trace id of every event and plugin call of this run.
    pub fn trace_id(&self) -> String {
        self.0.simple().to_string()
    }
}

impl Default for RunId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for RunId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(RunId)
    }
}

/// The operation id of step `step` of run `run`: the same on every attempt and
/// replay, so the plugin can hand it to the outside world as an idempotency key.
pub fn operation_id(run: RunId, step: &str) -> String {
    format!("{run}/{step}")
}
