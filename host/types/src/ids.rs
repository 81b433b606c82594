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

/// The three actions of a step, each its own operation towards the outside world.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Make the change.
    Run,
    /// Undo it.
    Compensate,
    /// Check that the outside world still agrees.
    Reconcile,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Run => "run",
            Action::Compensate => "compensate",
            Action::Reconcile => "reconcile",
        }
    }
}

/// The stable identity of one action of one step of one run: the same on
/// every attempt and replay, different for each action, so a downstream API
/// with account-wide idempotency keys never answers a refund with the
/// charge's reply. The plugin hands it to the outside world as its
/// idempotency key.
///
/// The run action's id is the step id itself (`RUN/STEP`), as it was before
/// actions had ids of their own, so a run accepted by an older host replays
/// its charge under the same key; the others append the action's name.
/// A step an operator restarted runs again as a new generation, whose ids
/// carry it (`RUN/STEP~2`, `RUN/STEP~2/compensate`): a re-run is a new
/// operation, not a replay of the old one.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OperationId(String);

impl OperationId {
    pub fn new(run: RunId, step: &str, action: Action) -> Self {
        Self::of_generation(run, step, action, 0)
    }

    /// The id of `action` of the `generation`th run of the step (0: the
    /// first, as [`OperationId::new`]).
    pub fn of_generation(run: RunId, step: &str, action: Action, generation: u32) -> Self {
        let step = match generation {
            0 => step_id(run, step),
            g => format!("{}~{g}", step_id(run, step)),
        };
        match action {
            Action::Run => OperationId(step),
            other => OperationId(format!("{step}/{}", other.as_str())),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for OperationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The id of step `step` of run `run`, shared by its actions (correlation).
pub fn step_id(run: RunId, step: &str) -> String {
    format!("{run}/{step}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_action_has_its_own_stable_id() {
        let run = RunId::new();
        let ids: Vec<_> = [Action::Run, Action::Compensate, Action::Reconcile]
            .into_iter()
            .map(|a| OperationId::new(run, "charge", a))
            .collect();
        assert_eq!(ids[0].as_str(), step_id(run, "charge"));
        assert_ne!(ids[0], ids[1]);
        assert_ne!(ids[1], ids[2]);
        assert_ne!(ids[0], ids[2]);
        assert_eq!(ids[1], OperationId::new(run, "charge", Action::Compensate));
    }

    #[test]
    fn a_restarted_step_is_a_new_operation() {
        let run = RunId::new();
        let first = OperationId::new(run, "charge", Action::Run);
        let again = OperationId::of_generation(run, "charge", Action::Run, 1);
        let third = OperationId::of_generation(run, "charge", Action::Run, 2);
        assert_ne!(first, again);
        assert_ne!(again, third);
        assert_eq!(
            OperationId::of_generation(run, "charge", Action::Run, 0),
            first
        );
        assert_ne!(
            OperationId::of_generation(run, "charge", Action::Compensate, 1),
            OperationId::new(run, "charge", Action::Compensate)
        );
    }
}
