//! Flows: the YAML language citizen developers write, and its validation.
//!
//! ```yaml
//! name: order
//! version: "1"
//! idempotency_window: 24h
//! defaults:
//!   timeout: 10s
//!   retry: { max_attempts: 5, initial_interval: 200ms }
//! reconcile: { after: 10m, every: 1h, for: 7d }
//! on_drift: alert
//! objective: { settled_within: 30s, target: 99%, window: 7d }
//! steps:
//!   - name: charge
//!     plugin: transfer
//!     input:
//!       from: ${{ input.customer }}
//!       to: shop
//!       amount: ${{ input.amount }}
//!   - name: reserve
//!     plugin: reserve-stock
//!     input:
//!       sku: ${{ input.sku }}
//!       quantity: ${{ input.quantity }}
//!     retry: { max_attempts: 3, non_retryable: [timeout] }
//! ```
//!
//! Every problem is reported with file, line and column, all at once.
//! Inside `{ ... }` flow mappings, quote templates: `"${{ input.sku }}"`.

pub mod graph;
pub mod limits;
mod mappings;
mod parse;
pub mod template;

use settle_types::retry::RetryPolicy;
use std::fmt;
use std::time::Duration;
pub use template::Template;

/// A validated flow.
#[derive(Clone, Debug)]
pub struct Flow {
    pub name: String,
    pub version: String,
    pub description: Option<String>,
    /// SHA-256 of the file's text: which exact flow a run was accepted under.
    pub digest: String,
    /// The file's text, kept with the runs accepted under it.
    pub source: String,
    /// How long an idempotency key keeps returning the same run.
    pub idempotency_window: Duration,
    pub steps: Vec<StepDef>,
    /// `reconcile:`: how a settled run is checked against downstream
    /// systems again; `None` (the default) checks it once, when its steps
    /// complete.
    pub rechecks: Option<Rechecks>,
    /// `on_drift:`: what the host does when a check finds drift.
    pub on_drift: OnDrift,
    /// `objective:`: how soon runs should settle, and how often.
    pub objective: Option<Objective>,
    /// `upgrade:`: whether runs of earlier versions move to this one.
    pub upgrade: Upgrade,
}

/// What becomes of runs in flight when a new version of their flow, or a
/// new build of a plugin they call, is installed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Upgrade {
    /// They keep the flow version and the plugin builds they started with
    /// (the default).
    #[default]
    Keep,
    /// `upgrade: at-step-boundary`: between two steps, a run of an earlier
    /// version whose steps so far are this version's first steps (by name)
    /// moves to this version (`flow-upgraded`), and runs of this version
    /// call the plugin builds installed now (`plugin-changed`).
    AtStepBoundary,
}

/// `objective: { settled_within: 30s, target: 99%, window: 7d }`: at least
/// `target` of the runs accepted in the last `window` settle within
/// `settled_within` of being accepted.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Objective {
    pub settled_within: Duration,
    /// Share of runs, in (0, 1).
    pub target: f64,
    pub window: Duration,
}

/// `reconcile: { after: 2s, every: 1h, for: 7d }`: the first check of a
/// settled run `after` it settled, then one `every` so often, for `for`
/// after it settled. `every` defaults to `after`, `for` to 7 days.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rechecks {
    pub after: Duration,
    pub every: Duration,
    pub window: Duration,
}

/// What the host does when downstream systems disagree with a run
/// (`on_drift:`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnDrift {
    /// The run becomes `drifted` and waits for an operator: compensate it,
    /// restart it, or accept the drift (the default).
    #[default]
    Alert,
    /// The run becomes `drifted`, then its completed steps are undone.
    Compensate,
    /// The run becomes `drifted`, then its steps run again from the first
    /// drifted one, under their same operation ids, and are confirmed
    /// again; at most 3 times per run, then it waits for an operator.
    Reapply,
}

/// One step of a flow.
#[derive(Clone, Debug)]
pub struct StepDef {
    pub name: String,
    pub plugin: String,
    pub input: Template,
    pub retry: RetryPolicy,
    /// Per-attempt time limit (the plugin's own limit applies if lower).
    pub timeout: Option<Duration>,
    /// Whether to undo this step when a later one fails for good.
    pub compensate: bool,
    /// What happens when this step's retries run out.
    pub on_exhausted: OnExhausted,
    /// Whether the flow set `retry` (on the step or in `defaults`); when it
    /// did not, the plugin's own suggestion applies ([`Flow::with_suggested_retry`]).
    pub retry_explicit: bool,
    /// Where `plugin:` stands in the file, for messages about the plugin.
    pub plugin_at: Location,
    /// Where `input:` stands (`plugin:` when there is none), for messages
    /// about what the step gives its plugin.
    pub input_at: Location,
    /// `wait:`: a durable timer instead of a plugin (`plugin` is empty).
    pub wait: Option<Wait>,
    /// `signal:`: waits for a named event from outside instead of calling
    /// a plugin (`plugin` is empty).
    pub signal: Option<Signal>,
    /// `approval:`: waits for people to approve (`plugin` is empty).
    pub approval: Option<Approval>,
    /// `if:`: the step runs only when this is true (jq's truth: anything
    /// but `false` and `null`); otherwise it is skipped.
    pub condition: Option<Condition>,
    /// `for_each:`: the plugin is called once per item of a list.
    pub for_each: Option<ForEach>,
    /// `parallel:`: the step calls its branches side by side, then joins
    /// (`plugin` is empty).
    pub parallel: Option<Parallel>,
}

/// A `parallel` step: each branch is one plugin call with its own input;
/// at most `concurrency` run at once; the step completes when its `join`
/// is met. Its output is an object with one field per branch: the
/// branch's output, or null for a branch that gave none (under a `first`
/// join). Branches are called, retried and undone as the step is.
#[derive(Clone, Debug)]
pub struct Parallel {
    pub join: Join,
    pub concurrency: u32,
    pub branches: Vec<Branch>,
}

/// One branch of a `parallel` step.
#[derive(Clone, Debug)]
pub struct Branch {
    /// Its name in the step's output and in its operation id.
    pub name: String,
    /// The call, as a step named `STEP.BRANCH` (for messages), with the
    /// step's retry policy, time limit and undo.
    pub call: StepDef,
}

/// When a `parallel` step is done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Join {
    /// Every branch gave its output.
    All,
    /// At least this many branches gave theirs: no branch is started once
    /// they have, and the calls already out are waited for.
    First(u32),
}

/// The most branches of one `parallel` step.
pub const MAX_BRANCHES: usize = 32;

/// A `for_each` step: its plugin is called once per item of `list` (an
/// expression giving an array of at most [`settle_types::summary::MAX_ITEMS`]),
/// at most `concurrency` at a time; `item` and `item_index` name the item in
/// the step's input. Its output is the list of the items' outputs.
#[derive(Clone, Debug)]
pub struct ForEach {
    pub list: Template,
    pub concurrency: u32,
}

/// The most calls of one `for_each` step at once.
pub const MAX_CONCURRENCY: u32 = 64;

/// A step's `if:`, as written and parsed.
#[derive(Clone, Debug)]
pub struct Condition {
    pub template: Template,
    /// The expression as written, for the log and people.
    pub text: String,
}

impl Condition {
    /// jq's truth: every value but `false` and `null` is true.
    pub fn holds(value: &serde_json::Value) -> bool {
        !matches!(
            value,
            serde_json::Value::Null | serde_json::Value::Bool(false)
        )
    }
}

/// What an `approval:` step waits for: `required` approvals from people
/// named in `approvers` (API token names) or holding one of `roles`; never
/// from whoever submitted the run; one rejection fails the step for good.
#[derive(Clone, Debug)]
pub struct Approval {
    pub approvers: Vec<String>,
    pub roles: Vec<String>,
    pub required: u32,
    pub timeout: Duration,
    pub on_timeout: OnTimeout,
}

impl Approval {
    /// The signal name its decisions are recorded under.
    pub fn signal_name(step: &str) -> String {
        format!("approval.{step}")
    }

    /// Whether a person (token name and role) may decide.
    pub fn allows(&self, name: &str, role: &str) -> bool {
        self.approvers.iter().any(|a| a == name) || self.roles.iter().any(|r| r == role)
    }
}

/// What a `signal:` step waits for. A signal sent before the run reaches
/// the step is kept in the run's log and taken when it gets there.
#[derive(Clone, Debug)]
pub struct Signal {
    /// The signal's name, as senders name it (`POST /v1/runs/{id}/signals/{name}`).
    pub name: String,
    /// How long the step waits (default 30 days, at most a year).
    pub timeout: Duration,
    pub on_timeout: OnTimeout,
    /// A JSON Schema the payload must match, when given.
    pub schema: Option<serde_json::Value>,
    /// Who alone may send it: `webhook:SOURCE` or `token:NAME` (anyone
    /// who may act on the run, when not given).
    pub from: Option<String>,
    /// `correlate: "${{ input.order_id }}"`: a value from the run's input
    /// that a sender may address the run by instead of its id.
    pub correlate: Option<Template>,
}

impl Signal {
    /// Whether `payload` matches the step's schema (any payload does when
    /// it has none); the first problem, with where, if not.
    pub fn check_payload(&self, payload: &serde_json::Value) -> Result<(), String> {
        let Some(schema) = &self.schema else {
            return Ok(());
        };
        let validator = jsonschema::validator_for(schema).map_err(|e| e.to_string())?;
        match validator.iter_errors(payload).next() {
            None => Ok(()),
            Some(e) => {
                let at = e.instance_path().to_string();
                let at = if at.is_empty() {
                    String::new()
                } else {
                    format!("{at}: ")
                };
                Err(format!(
                    "the payload does not match the flow's schema: {at}{e}"
                ))
            }
        }
    }
}

/// What a `signal:` step does when its timeout passes without the signal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnTimeout {
    /// The step fails for good: what came before is undone (the default).
    #[default]
    Fail,
    /// The step completes with output `null`, and the run goes on.
    Continue,
}

/// What a `wait:` step waits for. The time it waits until is recorded in
/// the run's log when the step begins, so a restart keeps it.
#[derive(Clone, Debug)]
pub enum Wait {
    /// `wait: 30s`.
    For(Duration),
    /// `wait: { until: "${{ input.ship_at }}" }`: an RFC 3339 time, or
    /// Unix milliseconds, rendered when the step begins.
    Until(Template),
}

impl StepDef {
    /// Whether this step is a durable timer rather than a plugin call.
    pub fn is_wait(&self) -> bool {
        self.wait.is_some()
    }

    /// Whether this step calls a plugin (it is not a `wait`, a `signal`
    /// or an `approval`).
    pub fn calls_plugin(&self) -> bool {
        self.wait.is_none() && self.signal.is_none() && self.approval.is_none()
    }

    /// The plugin calls this step makes: itself, its branches, or none
    /// (a `wait`, `signal` or `approval`).
    pub fn calls(&self) -> Vec<&StepDef> {
        match &self.parallel {
            Some(p) => p.branches.iter().map(|b| &b.call).collect(),
            None if self.calls_plugin() => vec![self],
            None => Vec::new(),
        }
    }

    /// Whether this step makes several calls (`for_each` or `parallel`).
    pub fn calls_per_item(&self) -> bool {
        self.for_each.is_some() || self.parallel.is_some()
    }
}

impl Flow {
    /// The names of the signals this flow's steps wait for, in order.
    pub fn signal_names(&self) -> Vec<&str> {
        self.steps
            .iter()
            .filter_map(|s| s.signal.as_ref().map(|g| g.name.as_str()))
            .collect()
    }
}

/// What a step does when its retries run out (`on_exhausted:`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnExhausted {
    /// Undo the completed steps in reverse order (the default).
    #[default]
    Compensate,
    /// Wait for an operator (`settle retry`, `settle compensate`, `settle cancel`).
    Hold,
}

/// A place in a flow file (1-based).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

/// One problem in a flow file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowError {
    pub file: String,
    pub at: Location,
    pub message: String,
}

impl fmt::Display for FlowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "flow {}:{}:{}: {}",
            self.file, self.at.line, self.at.column, self.message
        )
    }
}

/// Every problem found in a flow file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct FlowErrors(pub Vec<FlowError>);

impl fmt::Display for FlowErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(|e| e.to_string()).collect();
        f.write_str(&lines.join("\n"))
    }
}

/// What a flow needs to know about an installed plugin.
#[derive(Clone, Debug)]
pub struct PluginFacts {
    pub name: String,
    pub supports_compensate: bool,
    /// The JSON Schemas it declares (`{}` or null: none).
    pub input_schema: serde_json::Value,
    pub output_schema: serde_json::Value,
}

impl PluginFacts {
    /// What a flow needs to know of an installed plugin.
    pub fn of(plugin: &settle_types::executor::PluginDescriptor) -> Self {
        PluginFacts {
            name: plugin.name.to_string(),
            supports_compensate: plugin.manifest.supports_compensate,
            input_schema: plugin.manifest.input_schema.clone(),
            output_schema: plugin.manifest.output_schema.clone(),
        }
    }
}

/// The JSON Schema of flow files (draft 2020-12), for editors: published
/// as `host/flow/schema/flow.schema.json` and served by the host at
/// `GET /v1/schema/flow.json`.
pub const FLOW_SCHEMA: &str = include_str!("../schema/flow.schema.json");

impl Flow {
    /// A flow file's text as JSON, as an editor checking it against
    /// [`FLOW_SCHEMA`] sees it (plain scalars read as numbers or booleans
    /// when they are); `None` when it is not YAML within the limits.
    pub fn text_as_json(text: &str) -> Option<serde_json::Value> {
        parse::as_json(text)
    }

    /// Parses and validates flow text. `file` names it in messages.
    pub fn parse(text: &str, file: &str) -> Result<Flow, FlowErrors> {
        parse::parse(text, file)
    }

    /// Reads and parses a flow file. Reads at most one byte more than
    /// [`limits::MAX_FLOW_BYTES`], so a huge file is refused without being
    /// read whole.
    pub fn load(path: &std::path::Path) -> Result<Flow, FlowErrors> {
        use std::io::Read as _;
        let file = path.display().to_string();
        let error = |at, message: String| {
            FlowErrors(vec![FlowError {
                file: file.clone(),
                at,
                message,
            }])
        };
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| {
                f.take(limits::MAX_FLOW_BYTES as u64 + 1)
                    .read_to_end(&mut bytes)
            })
            .map_err(|e| error(Location::default(), format!("cannot read: {e}")))?;
        if bytes.len() > limits::MAX_FLOW_BYTES {
            let text = String::from_utf8_lossy(&bytes);
            return Err(error(
                limits::location_of_byte(&text, limits::MAX_FLOW_BYTES),
                format!(
                    "the file is larger than {} bytes (256 KiB), the limit for a flow file",
                    limits::MAX_FLOW_BYTES
                ),
            ));
        }
        let text = String::from_utf8(bytes).map_err(|e| {
            let valid = e.utf8_error().valid_up_to();
            let text = String::from_utf8_lossy(e.as_bytes());
            error(
                limits::location_of_byte(&text, valid),
                "not UTF-8 text".to_string(),
            )
        })?;
        Flow::parse(&text, &file)
    }

    /// This flow with each step whose retry policy the flow leaves open
    /// taking the one its plugin suggests (`suggest` returns it by plugin name).
    pub fn with_suggested_retry(mut self, suggest: impl Fn(&str) -> Option<RetryPolicy>) -> Self {
        for step in &mut self.steps {
            if !step.retry_explicit
                && let Some(policy) = suggest(&step.plugin)
            {
                step.retry = RetryPolicy {
                    non_retryable: step.retry.non_retryable.clone(),
                    ..policy
                };
            }
        }
        self
    }

    /// `name@version`, as runs and plugins see it.
    pub fn id(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    /// Checks every step's plugin against what is installed, and what each
    /// step gives its plugin against the plugin's input schema.
    pub fn check_plugins(&self, file: &str, installed: &[PluginFacts]) -> Result<(), FlowErrors> {
        let mut errors = Vec::new();
        for step in self.steps.iter().flat_map(StepDef::calls) {
            let at = step.plugin_at;
            match installed.iter().find(|p| p.name == step.plugin) {
                None => {
                    let hint = closest(&step.plugin, installed.iter().map(|p| p.name.as_str()))
                        .map(|n| format!(" (did you mean '{n}'?)"))
                        .unwrap_or_default();
                    errors.push(FlowError {
                        file: file.into(),
                        at,
                        message: format!(
                            "step '{}' uses plugin '{}', which is not installed{hint}",
                            step.name, step.plugin
                        ),
                    });
                }
                Some(p) if step.compensate && !p.supports_compensate => errors.push(FlowError {
                    file: file.into(),
                    at,
                    message: format!(
                        "step '{}': plugin '{}' cannot compensate; set `compensate: false` on this step",
                        step.name, step.plugin
                    ),
                }),
                Some(_) => {}
            }
        }
        errors.extend(mappings::check(self, file, installed));
        errors.sort_by_key(|e| (e.at.line, e.at.column));
        if errors.is_empty() {
            Ok(())
        } else {
            Err(FlowErrors(errors))
        }
    }
}

/// The candidate nearest to `name` by edit distance, if it is close enough
/// to be a likely typo.
pub(crate) fn closest<'a>(
    name: &str,
    candidates: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod schema_tests {
    use crate::{FLOW_SCHEMA, Flow};

    fn repo_flows() -> Vec<std::path::PathBuf> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut files = Vec::new();
        for dir in [
            "example-plugins/flows",
            "example-plugins/drills",
            "tests/ui",
        ] {
            for entry in std::fs::read_dir(root.join(dir)).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e == "yaml") {
                    files.push(path);
                }
            }
        }
        files.sort();
        files
    }

    #[test]
    fn the_published_schema_agrees_with_the_parser_on_the_repository_flows() {
        let schema: serde_json::Value = serde_json::from_str(FLOW_SCHEMA).unwrap();
        let validator = jsonschema::validator_for(&schema).expect("a valid JSON Schema");
        let mut checked = 0;
        for path in repo_flows() {
            let text = std::fs::read_to_string(&path).unwrap();
            // What the parser accepts the schema accepts; the schema finds
            // a subset of the parser's problems (it knows no plugins,
            // references or limits between fields).
            if Flow::parse(&text, "f.yaml").is_err() {
                continue;
            }
            let json = Flow::text_as_json(&text).expect("a valid flow reads as JSON");
            let problems: Vec<String> = validator
                .iter_errors(&json)
                .map(|e| e.to_string())
                .collect();
            assert!(problems.is_empty(), "{}: {problems:?}", path.display());
            checked += 1;
        }
        assert!(checked >= 8, "only {checked} valid flows checked");
        let unknown =
            Flow::text_as_json("name: x\nsteps:\n  - { name: a, plugin: p, retries: 3 }\n")
                .unwrap();
        assert!(!validator.is_valid(&unknown), "an unknown key is refused");
        let bad_name =
            Flow::text_as_json("name: 'a b'\nsteps:\n  - { name: a, plugin: p }\n").unwrap();
        assert!(
            !validator.is_valid(&bad_name),
            "a name with a space is refused"
        );
    }
}

#[cfg(test)]
mod policy_tests {
    use crate::Flow;

    #[test]
    fn named_policies_apply_where_they_are_named_and_as_defaults() {
        let text = "name: p\npolicies:\n  patient: { max_attempts: 8, initial_interval: 1s }\n  quick: { max_attempts: 2 }\ndefaults:\n  retry: quick\nsteps:\n  - { name: a, plugin: x, retry: patient }\n  - { name: b, plugin: x }\n  - { name: c, plugin: x, retry: { max_attempts: 4 } }\n";
        let flow = Flow::parse(text, "p.yaml").unwrap();
        let attempts: Vec<u32> = flow.steps.iter().map(|s| s.retry.max_attempts).collect();
        assert_eq!(attempts, [8, 2, 4]);
        assert_eq!(
            flow.steps[0].retry.initial_interval,
            std::time::Duration::from_secs(1)
        );
        assert!(flow.steps.iter().all(|s| s.retry_explicit));
        // Settings over the defaults start from the default policy.
        assert_eq!(
            flow.steps[2].retry.initial_interval,
            flow.steps[1].retry.initial_interval
        );
    }
}

#[cfg(test)]
mod mapping_tests {
    use crate::{Flow, PluginFacts};
    use serde_json::json;

    fn facts(name: &str, input: serde_json::Value, output: serde_json::Value) -> PluginFacts {
        PluginFacts {
            name: name.into(),
            supports_compensate: true,
            input_schema: input,
            output_schema: output,
        }
    }

    fn problems(flow: &str, installed: &[PluginFacts]) -> Vec<String> {
        let flow = Flow::parse(flow, "f.yaml").unwrap();
        match flow.check_plugins("f.yaml", installed) {
            Ok(()) => Vec::new(),
            Err(e) => e.0.into_iter().map(|e| e.message).collect(),
        }
    }

    #[test]
    fn schemas_that_leave_room_are_not_second_guessed() {
        // $ref into $defs: the literal is checked against what it points at.
        let with_ref = json!({
            "type": "object",
            "$defs": {"qty": {"type": "integer", "minimum": 1}},
            "properties": {"quantity": {"$ref": "#/$defs/qty"}},
            "patternProperties": {"^x-": {"type": "string"}},
            "additionalProperties": false
        });
        // An open output schema: fields beyond those listed may come.
        let open_out = json!({"type": "object", "properties": {"total": {"type": "number"}}});
        let installed = [
            facts("a", with_ref, open_out),
            facts(
                "b",
                json!({
                    "type": "object", "properties": {"count": {"type": "integer"}, "extra": {"type": "string"}}
                }),
                json!({}),
            ),
        ];
        let flow = "name: f\nsteps:\n  - { name: one, plugin: a, input: { quantity: 0, x-note: hi } }\n  - name: two\n    plugin: b\n    input: { count: \"${{ steps.one.output.total }}\", extra: \"${{ steps.one.output.other }}\" }\n";
        let found = problems(flow, &installed);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("field 'quantity' of step 'one': 0 does not fit plugin 'a': 0 is less than the minimum of 1"),
            "{found:?}"
        );
    }

    #[test]
    fn plugin_text_in_messages_is_cut_and_cleaned_and_counted() {
        let many: Vec<String> = (0..50).map(|i| format!("field\u{1b}[31m{i}")).collect();
        let installed = [facts(
            "a",
            json!({"type": "object", "required": many}),
            json!({}),
        )];
        let found = problems(
            "name: f\nsteps:\n  - { name: one, plugin: a }\n",
            &installed,
        );
        assert_eq!(found.len(), 11, "ten, then how many more: {found:?}");
        assert!(found.iter().all(|m| !m.contains('\u{1b}')), "{found:?}");
        assert_eq!(found[10], "step 'one': 40 more problem(s) with its input");
    }
}

#[cfg(test)]
mod schema_edge_tests {
    use crate::{FLOW_SCHEMA, Flow};

    /// Flows the parser accepts, written in the ways people write them:
    /// the schema must accept them too.
    #[test]
    fn the_schema_accepts_what_the_parser_accepts_at_the_edges() {
        let schema: serde_json::Value = serde_json::from_str(FLOW_SCHEMA).unwrap();
        let validator = jsonschema::validator_for(&schema).unwrap();
        let mut accepted = 0;
        for text in [
            "name: 2024\nsteps:\n  - { name: 1, plugin: p }\n",
            "name: f\ndescription: 42\nsteps:\n  - { name: a, plugin: p }\n",
            "name: f\nreconcile: { every: 1h }\nsteps:\n  - { name: a, plugin: p }\n",
            "name: f\nsteps:\n  - { name: a, plugin: p, retry: { max_attempts: \"3\" } }\n",
            "name: f\nsteps:\n  - { name: a, plugin: p, compensate: false }\n",
        ] {
            if Flow::parse(text, "f.yaml").is_err() {
                continue;
            }
            let json = Flow::text_as_json(text).unwrap();
            let problems: Vec<String> = validator
                .iter_errors(&json)
                .map(|e| e.to_string())
                .collect();
            assert!(problems.is_empty(), "{text}: {problems:?}");
            accepted += 1;
        }
        assert!(accepted >= 4, "the parser accepted only {accepted} of them");
    }
}
