//! Flow YAML → [`Flow`], collecting every problem with its line and column.
//!
//! The YAML is read with `marked-yaml`, which keeps the position of every
//! node; the tree is then walked by hand, so each message can say exactly
//! what is wrong and where.

use crate::limits::{self, MAX_NAME_CHARS, MAX_STEPS};
use crate::template::{Template, shown};
use crate::{
    Flow, FlowError, FlowErrors, Location, Objective, OnDrift, OnExhausted, Rechecks, StepDef,
};
use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};
use marked_yaml::{LoaderOptions, Node, Span};
use serde_json::Value;
use settle_types::FailureClass;
use settle_types::retry::RetryPolicy;
use sha2::{Digest, Sha256};
use std::time::Duration;

const FLOW_KEYS: &[&str] = &[
    "name",
    "version",
    "description",
    "idempotency_window",
    "defaults",
    "steps",
    "reconcile",
    "on_drift",
    "upgrade",
    "requires",
    "objective",
    "policies",
];
const RECONCILE_KEYS: &[&str] = &["after", "every", "for"];
const OBJECTIVE_KEYS: &[&str] = &["settled_within", "target", "window"];
const DEFAULT_KEYS: &[&str] = &["retry", "timeout", "on_exhausted"];
const STEP_KEYS: &[&str] = &[
    "name",
    "if",
    "for_each",
    "concurrency",
    "plugin",
    "wait",
    "signal",
    "approval",
    "parallel",
    "input",
    "retry",
    "timeout",
    "compensate",
    "on_exhausted",
];
const PARALLEL_KEYS: &[&str] = &["join", "concurrency", "branches"];
const BRANCH_KEYS: &[&str] = &["name", "plugin", "input"];
const RETRY_KEYS: &[&str] = &[
    "max_attempts",
    "initial_interval",
    "backoff_coefficient",
    "max_interval",
    "jitter",
    "non_retryable",
];

/// How long a duration key may be, and how a message says so.
struct Bound {
    max: Duration,
    text: &'static str,
    /// Whether zero is refused (a zero timeout fails every attempt).
    nonzero: bool,
}

const TIMEOUT: Bound = Bound {
    max: limits::MAX_TIMEOUT,
    text: "1 day",
    nonzero: true,
};
const RETRY_INTERVAL: Bound = Bound {
    max: limits::MAX_RETRY_INTERVAL,
    text: "7 days",
    nonzero: false,
};
const RECHECK_EVERY: Bound = Bound {
    max: limits::MAX_RECHECK_EVERY,
    text: "30 days",
    nonzero: true,
};
const RECHECK_WINDOW: Bound = Bound {
    max: limits::MAX_RECHECK_WINDOW,
    text: "365 days",
    nonzero: false,
};
const OBJECTIVE_TIME: Bound = Bound {
    max: limits::MAX_RECHECK_WINDOW,
    text: "365 days",
    nonzero: true,
};
/// How long a `signal:` or `approval:` step waits when its flow does not say.
const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(30 * 24 * 3600);

const SIGNAL_TIMEOUT: Bound = Bound {
    max: limits::MAX_WAIT,
    text: "365 days",
    nonzero: true,
};

const IDEMPOTENCY_WINDOW: Bound = Bound {
    max: limits::MAX_IDEMPOTENCY_WINDOW,
    text: "365 days",
    nonzero: false,
};

pub(super) fn parse(text: &str, file: &str) -> Result<Flow, FlowErrors> {
    let mut cx = Cx {
        file,
        errors: Vec::new(),
        newer_host: None,
    };
    // Size and nesting first: the YAML parser must never see a file that
    // could exhaust memory or the stack.
    if let Err(e) = limits::check_text(text) {
        cx.error_at(e.at, e.message);
        return Err(FlowErrors(cx.errors));
    }
    let options = LoaderOptions::default().error_on_duplicate_keys(true);
    let root = match marked_yaml::parse_yaml_with_options(0, text, options) {
        Ok(root) => root,
        Err(e) => {
            cx.error_at(
                load_error_location(&e),
                format!("not valid YAML: {}", strip_marker(&e.to_string())),
            );
            return Err(FlowErrors(cx.errors));
        }
    };
    if let Some(at) = limits::tree_depth(&root) {
        limits::dismantle(root);
        cx.error_at(
            at,
            format!(
                "nesting is deeper than {} levels (the limit for a flow file)",
                limits::MAX_NESTING
            ),
        );
        return Err(FlowErrors(cx.errors));
    }
    match build(&mut cx, &root, text) {
        Some(flow) if cx.errors.is_empty() => Ok(flow),
        _ => Err(FlowErrors(cx.errors)),
    }
}

/// The flow in a tree no deeper than the limit; `None` (with every
/// problem in `cx.errors`) when it is not a valid flow.
fn build(cx: &mut Cx<'_>, root: &Node, text: &str) -> Option<Flow> {
    let Some(map) = root.as_mapping() else {
        cx.error(
            root.span(),
            "a flow must be a mapping with name, version and steps",
        );
        return None;
    };
    cx.requires(map);
    cx.known_keys(map, FLOW_KEYS, "flow");
    let name = cx.identifier(map, "name", "flow name");
    let version = match cx.optional_scalar(map, "version") {
        None => "1".to_string(),
        Some(s) => {
            let text = s.as_str();
            if text.is_empty() || text.chars().count() > MAX_NAME_CHARS {
                cx.error(
                    s.span(),
                    format!(
                        "flow version '{}' must have 1 to {MAX_NAME_CHARS} characters",
                        shown(text, 40)
                    ),
                );
            }
            text.to_string()
        }
    };
    let description = cx
        .optional_scalar(map, "description")
        .map(|s| s.as_str().to_string());
    let idempotency_window = cx
        .duration(map, "idempotency_window", &IDEMPOTENCY_WINDOW)
        .unwrap_or(Duration::from_secs(24 * 3600));

    let rechecks = cx
        .optional_mapping(map, "reconcile")
        .and_then(|r| cx.rechecks(r));
    let on_drift = cx.on_drift(map).unwrap_or_default();
    let upgrade = cx.upgrade(map).unwrap_or_default();
    let objective = cx
        .optional_mapping(map, "objective")
        .and_then(|o| cx.objective(o));

    let mut defaults = StepDefaults::default();
    if let Some(policies) = cx.optional_mapping(map, "policies") {
        for (key, node) in policies.iter() {
            let name = key.as_str();
            if !is_identifier(name) {
                cx.error(
                    key.span(),
                    format!(
                        "policy name '{}' must be letters, digits, '-' or '_'",
                        shown(name, 40)
                    ),
                );
                continue;
            }
            match node.as_mapping() {
                Some(m) => {
                    let policy = cx.retry(m, &RetryPolicy::default());
                    defaults.policies.push((name.to_string(), policy));
                }
                None => cx.error(
                    node.span(),
                    format!("policy '{name}' must be a mapping of retry settings"),
                ),
            }
        }
    }
    if let Some(map) = cx.optional_mapping(map, "defaults") {
        cx.known_keys(map, DEFAULT_KEYS, "defaults");
        if let Some(r) = cx.retry_or_policy(map, &RetryPolicy::default(), &defaults.policies) {
            defaults.retry = r;
            defaults.retry_explicit = true;
        }
        defaults.timeout = cx.duration(map, "timeout", &TIMEOUT);
        if let Some(o) = cx.on_exhausted(map) {
            defaults.on_exhausted = o;
        }
    }

    let mut steps: Vec<StepDef> = Vec::new();
    match map.get_node("steps") {
        None => cx.error(map.span(), "the flow has no `steps`"),
        Some(node) => match node.as_sequence() {
            Some(seq) if seq.is_empty() => cx.error(
                node.span(),
                "`steps` is empty: a flow needs at least one step",
            ),
            Some(seq) if seq.len() > MAX_STEPS => cx.error(
                seq[MAX_STEPS].span(),
                format!(
                    "the flow has {} steps; a flow may have at most {MAX_STEPS}",
                    seq.len()
                ),
            ),
            Some(seq) => {
                for item in seq.iter() {
                    if let Some(step) = cx.step(item, &steps, &defaults) {
                        cx.no_missing_branch_reads(&step, &steps);
                        steps.push(step);
                    }
                }
            }
            None => cx.error(node.span(), "`steps` must be a list of steps"),
        },
    }

    Some(Flow {
        name: name?,
        version,
        description,
        digest: hex::encode(Sha256::digest(text.as_bytes())),
        source: text.to_string(),
        idempotency_window,
        steps,
        rechecks,
        on_drift,
        objective,
        upgrade,
    })
}

/// `MAJOR.MINOR[.PATCH]` as numbers (a missing patch is 0).
fn version_parts(text: &str) -> Option<(u64, u64, u64)> {
    let mut parts = text.trim().split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    let patch = match parts.next() {
        Some(p) => p.parse().ok()?,
        None => 0,
    };
    parts.next().is_none().then_some((major, minor, patch))
}

/// A name of letters, digits, '-' and '_', at most [`MAX_NAME_CHARS`].
fn is_identifier(text: &str) -> bool {
    !text.is_empty()
        && text.chars().count() <= MAX_NAME_CHARS
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// What `defaults:` sets for every step, and the named retry policies
/// (`policies:`) steps may refer to.
#[derive(Default)]
struct StepDefaults {
    policies: Vec<(String, RetryPolicy)>,
    retry: RetryPolicy,
    retry_explicit: bool,
    timeout: Option<Duration>,
    on_exhausted: OnExhausted,
}

struct Cx<'a> {
    file: &'a str,
    errors: Vec<FlowError>,
    /// `requires:` names a newer Settle than this one: keys this host does
    /// not know are said to be perhaps that version's.
    newer_host: Option<String>,
}

pub(super) fn location(span: &Span) -> Location {
    span.start()
        .map(|m| Location {
            line: m.line(),
            column: m.column(),
        })
        .unwrap_or_default()
}

fn load_error_location(e: &marked_yaml::LoadError) -> Location {
    use marked_yaml::LoadError::*;
    let marker = match e {
        TopLevelMustBeMapping(m)
        | TopLevelMustBeSequence(m)
        | UnexpectedAnchor(m)
        | MappingKeyMustBeScalar(m)
        | UnexpectedTag(m)
        | ScanError(m, _) => Some(*m),
        DuplicateKey(inner) => inner.key.span().start().copied(),
        #[allow(unreachable_patterns)]
        _ => None,
    };
    marker
        .map(|m| Location {
            line: m.line(),
            column: m.column(),
        })
        .unwrap_or_default()
}

/// marked-yaml prefixes messages with its own position; we print ours.
fn strip_marker(message: &str) -> String {
    match message.split_once(": ") {
        Some((head, rest))
            if head
                .chars()
                .all(|c| c.is_ascii_digit() || c == ':' || c == ' ') =>
        {
            rest.into()
        }
        _ => message.into(),
    }
}

impl Cx<'_> {
    fn error_at(&mut self, at: Location, message: impl Into<String>) {
        self.errors.push(FlowError {
            file: self.file.into(),
            at,
            message: message.into(),
        });
    }

    fn error(&mut self, span: &Span, message: impl Into<String>) {
        self.error_at(location(span), message);
    }

    fn known_keys(&mut self, map: &MarkedMappingNode, known: &[&str], what: &str) {
        for key in map.keys() {
            if !known.contains(&key.as_str()) {
                let hint = match &self.newer_host {
                    // Not a typo, most likely: a feature of the newer host.
                    Some(needed) => format!(
                        " (the flow requires Settle {needed}: it may be a feature of that version; this host is {})",
                        env!("CARGO_PKG_VERSION")
                    ),
                    None => crate::closest(key.as_str(), known.iter().copied())
                        .map(|k| format!(" (did you mean '{k}'?)"))
                        .unwrap_or_default(),
                };
                self.error(
                    key.span(),
                    format!(
                        "unknown key '{}' in {what}{hint}; allowed: {}",
                        shown(key.as_str(), 40),
                        known.join(", ")
                    ),
                );
            }
        }
    }

    fn optional_scalar<'n>(
        &mut self,
        map: &'n MarkedMappingNode,
        key: &str,
    ) -> Option<&'n MarkedScalarNode> {
        let node = map.get_node(key)?;
        match node.as_scalar() {
            Some(s) => Some(s),
            None => {
                self.error(node.span(), format!("`{key}` must be a single value"));
                None
            }
        }
    }

    fn optional_mapping<'n>(
        &mut self,
        map: &'n MarkedMappingNode,
        key: &str,
    ) -> Option<&'n MarkedMappingNode> {
        let node = map.get_node(key)?;
        match node.as_mapping() {
            Some(m) => Some(m),
            None => {
                self.error(node.span(), format!("`{key}` must be a mapping"));
                None
            }
        }
    }

    /// A required name made of letters, digits, '-' and '_'.
    fn identifier(&mut self, map: &MarkedMappingNode, key: &str, what: &str) -> Option<String> {
        let Some(value) = self.optional_scalar(map, key) else {
            if map.get_node(key).is_none() {
                self.error(map.span(), format!("{what} is missing: add `{key}: ...`"));
            }
            return None;
        };
        let text = value.as_str();
        if text.chars().count() > MAX_NAME_CHARS {
            self.error(
                value.span(),
                format!(
                    "{what} '{}' is longer than {MAX_NAME_CHARS} characters",
                    shown(text, 40)
                ),
            );
            return None;
        }
        if text.is_empty()
            || !text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            self.error(
                value.span(),
                format!("{what} '{text}' must be letters, digits, '-' or '_'"),
            );
            return None;
        }
        Some(text.to_string())
    }

    /// A duration no longer than `bound`: the engine adds these to the
    /// current time, which must not overflow.
    fn duration(&mut self, map: &MarkedMappingNode, key: &str, bound: &Bound) -> Option<Duration> {
        let value = self.optional_scalar(map, key)?;
        let text = shown(value.as_str(), 40);
        let problem = match humantime::parse_duration(value.as_str()) {
            Ok(d) if d > bound.max => format!(
                "`{key}`: '{text}' is longer than {}, the most a flow may set",
                bound.text
            ),
            Ok(d) if d.is_zero() && bound.nonzero => format!("`{key}` must be more than 0"),
            Ok(d) => return Some(d),
            Err(e) => format!("`{key}`: '{text}' is not a duration like 10s or 250ms ({e})"),
        };
        self.error(value.span(), problem);
        None
    }

    fn number<T: std::str::FromStr>(
        &mut self,
        map: &MarkedMappingNode,
        key: &str,
        what: &str,
    ) -> Option<T> {
        let value = self.optional_scalar(map, key)?;
        match value.as_str().parse::<T>() {
            Ok(n) => Some(n),
            Err(_) => {
                self.error(
                    value.span(),
                    format!("`{key}`: '{}' is not {what}", shown(value.as_str(), 40)),
                );
                None
            }
        }
    }

    /// How long a `signal:` or `approval:` step waits (`timeout`, 30 days
    /// unless given) and what it does then (`on_timeout`, `fail` unless
    /// given).
    fn wait_limit(&mut self, map: &MarkedMappingNode) -> (Duration, crate::OnTimeout) {
        let timeout = self
            .duration(map, "timeout", &SIGNAL_TIMEOUT)
            .unwrap_or(DEFAULT_WAIT_TIMEOUT);
        let on_timeout = match self.optional_scalar(map, "on_timeout") {
            None => crate::OnTimeout::Fail,
            Some(v) => match v.as_str() {
                "fail" => crate::OnTimeout::Fail,
                "continue" => crate::OnTimeout::Continue,
                other => {
                    self.error(
                        v.span(),
                        format!(
                            "`on_timeout` must be `fail` or `continue`, not '{}'",
                            shown(other, 40)
                        ),
                    );
                    crate::OnTimeout::Fail
                }
            },
        };
        (timeout, on_timeout)
    }

    /// `signal: NAME` or `signal: { name, timeout, on_timeout, schema }`.
    fn signal(&mut self, node: &Node) -> Option<crate::Signal> {
        if let Some(text) = node.as_scalar() {
            let name = text.as_str();
            if !is_identifier(name) {
                self.error(
                    node.span(),
                    format!(
                        "signal name '{}' must be letters, digits, '-' or '_'",
                        shown(name, 40)
                    ),
                );
                return None;
            }
            return Some(crate::Signal {
                name: name.to_string(),
                timeout: DEFAULT_WAIT_TIMEOUT,
                on_timeout: crate::OnTimeout::Fail,
                schema: None,
                from: None,
                correlate: None,
            });
        }
        let Some(map) = node.as_mapping() else {
            self.error(
                node.span(),
                "`signal` is a name, or `{ name, timeout, on_timeout, schema }`",
            );
            return None;
        };
        self.known_keys(
            map,
            &[
                "name",
                "timeout",
                "on_timeout",
                "schema",
                "from",
                "correlate",
            ],
            "signal",
        );
        let correlate = map.get_node("correlate").and_then(|node| {
            match Template::parse(&to_json(node), &|_| None) {
                Ok(t) if t.depends_only_on_input() => Some(t),
                Ok(_) => {
                    self.error(
                        node.span(),
                        "`correlate` may read only the run's input (like ${{ input.order_id }})",
                    );
                    None
                }
                Err(e) => {
                    self.error(node.span(), format!("`correlate`: {e}"));
                    None
                }
            }
        });
        let from = self.optional_scalar(map, "from").and_then(|v| {
            let text = v.as_str();
            let ok = text.split_once(':').is_some_and(|(kind, who)| {
                matches!(kind, "webhook" | "token") && is_identifier(who)
            });
            if ok {
                Some(text.to_string())
            } else {
                self.error(
                    v.span(),
                    format!(
                        "`from` is webhook:SOURCE or token:NAME, not '{}'",
                        shown(text, 40)
                    ),
                );
                None
            }
        });
        let name = self.identifier(map, "name", "signal name");
        let (timeout, on_timeout) = self.wait_limit(map);
        let schema = match map.get_node("schema") {
            None => None,
            Some(node) => {
                let schema = to_json(node);
                match jsonschema::validator_for(&schema) {
                    Ok(_) => Some(schema),
                    Err(e) => {
                        self.error(
                            node.span(),
                            format!(
                                "`signal: schema` is not a JSON Schema: {}",
                                shown(&e.to_string(), 200)
                            ),
                        );
                        None
                    }
                }
            }
        };
        Some(crate::Signal {
            name: name?,
            timeout,
            on_timeout,
            schema,
            from,
            correlate,
        })
    }

    /// `approval: { approvers, roles, required, timeout, on_timeout }`.
    fn approval(&mut self, node: &Node) -> Option<crate::Approval> {
        let Some(map) = node.as_mapping() else {
            self.error(
                node.span(),
                "`approval` is `{ approvers: [NAME, ...], roles: [ROLE, ...], required: N, timeout: 2d }`",
            );
            return None;
        };
        self.known_keys(
            map,
            &["approvers", "roles", "required", "timeout", "on_timeout"],
            "approval",
        );
        let mut names = |key: &str| -> Vec<String> {
            let Some(node) = map.get_node(key) else {
                return Vec::new();
            };
            let Some(seq) = node.as_sequence() else {
                self.error(node.span(), format!("`{key}` is a list of names"));
                return Vec::new();
            };
            let mut out = Vec::new();
            for item in seq.iter().take(100) {
                match item.as_scalar().map(|s| s.as_str()) {
                    Some(n) if is_identifier(n) => out.push(n.to_string()),
                    _ => self.error(
                        item.span(),
                        format!(
                            "`{key}`: each is letters, digits, '-' or '_' (a token's name or role)"
                        ),
                    ),
                }
            }
            if seq.len() > 100 {
                self.error(node.span(), format!("`{key}` has more than 100 names"));
            }
            out
        };
        let approvers = names("approvers");
        let roles = names("roles");
        // Tokens are submitters, viewers or operators; a submitter's token
        // may not decide (it reaches only its own runs).
        if let Some(other) = roles
            .iter()
            .find(|r| !matches!(r.as_str(), "viewer" | "operator"))
        {
            self.error(
                map.get_node("roles").map_or(map.span(), Node::span),
                format!(
                    "`roles`: '{}' is no role that may approve (viewer or operator)",
                    shown(other, 40)
                ),
            );
        }
        if approvers.is_empty() && roles.is_empty() {
            self.error(
                map.span(),
                "`approval` needs `approvers` or `roles`: who may approve",
            );
        }
        let required = self
            .number::<u32>(map, "required", "a whole number")
            .unwrap_or(1);
        if required == 0
            || (roles.is_empty() && !approvers.is_empty() && required as usize > approvers.len())
        {
            self.error(
                map.get_node("required").map_or(map.span(), Node::span),
                format!(
                    "`required` must be at least 1 and at most the {} approver(s) named",
                    approvers.len()
                ),
            );
        }
        let (timeout, on_timeout) = self.wait_limit(map);
        Some(crate::Approval {
            approvers,
            roles,
            required,
            timeout,
            on_timeout,
        })
    }

    /// `wait: 30s` or `wait: { until: TEMPLATE }`.
    fn wait(&mut self, node: &Node, earlier: &[StepDef]) -> Option<crate::Wait> {
        if let Some(text) = node.as_scalar() {
            return match humantime::parse_duration(text.as_str()) {
                Ok(d) if d <= limits::MAX_WAIT => Some(crate::Wait::For(d)),
                Ok(_) => {
                    self.error(node.span(), "`wait` is at most 365 days");
                    None
                }
                Err(e) => {
                    self.error(
                        node.span(),
                        format!(
                            "`wait`: '{}' is not a duration like 30s or 2h ({e})",
                            shown(text.as_str(), 40)
                        ),
                    );
                    None
                }
            };
        }
        let Some(map) = node.as_mapping() else {
            self.error(
                node.span(),
                "`wait` is a duration (30s) or `{ until: TIME }`",
            );
            return None;
        };
        self.known_keys(map, &["until"], "wait");
        let Some(until) = map.get_node("until") else {
            self.error(
                map.span(),
                "`wait` needs `until: TIME` (RFC 3339 or a reference)",
            );
            return None;
        };
        let step_index = |n: &str| earlier.iter().position(|s| s.name == n);
        match Template::parse(&to_json(until), &step_index) {
            Ok(t) => Some(crate::Wait::Until(t)),
            Err(e) => {
                self.error(until.span(), format!("`wait: until`: {e}"));
                None
            }
        }
    }

    /// `retry:` as settings (over `base`), or as the name of a policy in
    /// `policies:`; `None` when there is none (or it is wrong: reported).
    fn retry_or_policy(
        &mut self,
        map: &MarkedMappingNode,
        base: &RetryPolicy,
        policies: &[(String, RetryPolicy)],
    ) -> Option<RetryPolicy> {
        let node = map.get_node("retry")?;
        if let Some(m) = node.as_mapping() {
            return Some(self.retry(m, base));
        }
        let Some(name) = node.as_scalar().map(|s| s.as_str()) else {
            self.error(
                node.span(),
                "`retry` must be retry settings or the name of a policy in `policies`",
            );
            return None;
        };
        if let Some((_, policy)) = policies.iter().find(|(n, _)| n == name) {
            return Some(policy.clone());
        }
        let known: Vec<&str> = policies.iter().map(|(n, _)| n.as_str()).collect();
        let hint = crate::closest(name, known.iter().copied())
            .map(|n| format!(" (did you mean '{n}'?)"))
            .unwrap_or_default();
        let listed = if known.is_empty() {
            "the flow declares no `policies`".to_string()
        } else {
            format!("its policies: {}", known.join(", "))
        };
        self.error(
            node.span(),
            format!(
                "`retry: {}` names no policy of this flow{hint}; {listed}",
                shown(name, 40)
            ),
        );
        None
    }

    fn retry(&mut self, map: &MarkedMappingNode, base: &RetryPolicy) -> RetryPolicy {
        self.known_keys(map, RETRY_KEYS, "retry");
        let mut policy = base.clone();
        let at = |key: &str| map.get_node(key).map_or(map.span(), Node::span);
        if let Some(n) = self.number::<u32>(map, "max_attempts", "a whole number") {
            if n == 0 {
                self.error(at("max_attempts"), "`max_attempts` must be at least 1");
            }
            policy.max_attempts = n.max(1);
        }
        if let Some(d) = self.duration(map, "initial_interval", &RETRY_INTERVAL) {
            policy.initial_interval = d;
        }
        if let Some(d) = self.duration(map, "max_interval", &RETRY_INTERVAL) {
            policy.max_interval = d;
        }
        if let Some(c) = self.number::<f64>(map, "backoff_coefficient", "a number") {
            if !(1.0..=100.0).contains(&c) {
                self.error(
                    at("backoff_coefficient"),
                    "`backoff_coefficient` must be between 1 and 100",
                );
            }
            policy.backoff_coefficient = c.clamp(1.0, 100.0);
        }
        if let Some(j) = self.number::<f64>(map, "jitter", "a number") {
            if !(0.0..=1.0).contains(&j) {
                self.error(at("jitter"), "`jitter` must be between 0 and 1");
            }
            policy.jitter = j.clamp(0.0, 1.0);
        }
        if let Some(node) = map.get_node("non_retryable") {
            match node.as_sequence() {
                Some(seq) => {
                    policy.non_retryable.clear();
                    for item in seq.iter() {
                        match item
                            .as_scalar()
                            .map(|s| (s, s.as_str().parse::<FailureClass>()))
                        {
                            Some((_, Ok(class))) => policy.non_retryable.push(class),
                            Some((s, Err(_))) if s.as_str().chars().count() > MAX_NAME_CHARS => {
                                self.error(
                                    item.span(),
                                    format!("unknown failure class '{}'", shown(s.as_str(), 40)),
                                )
                            }
                            Some((_, Err(e))) => self.error(item.span(), e),
                            None => {
                                self.error(item.span(), "`non_retryable` lists failure classes")
                            }
                        }
                    }
                }
                None => self.error(
                    node.span(),
                    "`non_retryable` must be a list of failure classes",
                ),
            }
        }
        policy
    }

    /// `reconcile: { after, every, for }`.
    fn rechecks(&mut self, map: &MarkedMappingNode) -> Option<Rechecks> {
        self.known_keys(map, RECONCILE_KEYS, "reconcile");
        let every = self.duration(map, "every", &RECHECK_EVERY);
        let after = self.duration(map, "after", &RECHECK_WINDOW);
        let window = self.duration(map, "for", &RECHECK_WINDOW);
        let span_of = |key: &str| map.get_node(key).map_or(*map.span(), |n| *n.span());
        // `every` defaults to `after`: then `after` is held to its bounds,
        // and a message names the key that was written.
        let (every, every_key) = match (every, after) {
            (Some(e), _) => (e, "every"),
            (None, Some(a)) if map.get_node("every").is_none() => (a, "after"),
            (None, _) if map.get_node("every").is_some() => return None,
            (None, _) => {
                if map.get_node("after").is_none() {
                    self.error(
                        map.span(),
                        "`reconcile` needs `every` (how often a settled run is checked), e.g. { every: 1h, for: 7d }",
                    );
                }
                return None;
            }
        };
        if every < limits::MIN_RECHECK_EVERY || every > limits::MAX_RECHECK_EVERY {
            self.error(
                &span_of(every_key),
                format!(
                    "`reconcile: {every_key}` sets how often a run is checked: at least 1s and at most 30 days"
                ),
            );
            return None;
        }
        let after = after.unwrap_or(every);
        let window = window.unwrap_or(Duration::from_secs(7 * 24 * 3600));
        if after > window {
            self.error(
                &span_of("after"),
                "`reconcile: after` is longer than `for`: no check would fall inside the window",
            );
            return None;
        }
        let checks = window.as_millis() / every.as_millis().max(1);
        if checks > limits::MAX_RECHECKS as u128 {
            self.error(
                &span_of("for"),
                format!(
                    "`reconcile` would check each run {checks} times (`for` / `every`); at most {} (each check is kept in the run's log)",
                    limits::MAX_RECHECKS
                ),
            );
            return None;
        }
        Some(Rechecks {
            after,
            every,
            window,
        })
    }

    /// `objective: { settled_within, target, window }`.
    fn objective(&mut self, map: &MarkedMappingNode) -> Option<Objective> {
        self.known_keys(map, OBJECTIVE_KEYS, "objective");
        let within = self.duration(map, "settled_within", &OBJECTIVE_TIME);
        let window = self
            .duration(map, "window", &OBJECTIVE_TIME)
            .unwrap_or(Duration::from_secs(7 * 24 * 3600));
        let target = match self.optional_scalar(map, "target") {
            None => {
                self.error(map.span(), "`objective` needs `target`, e.g. 99%");
                None
            }
            Some(value) => {
                let text = value.as_str().trim();
                let (number, scale) = match text.strip_suffix('%') {
                    Some(n) => (n.trim(), 100.0),
                    None => (text, 1.0),
                };
                match number.parse::<f64>().map(|n| n / scale) {
                    Ok(t) if t > 0.0 && t < 1.0 => Some(t),
                    _ => {
                        self.error(
                            value.span(),
                            format!(
                                "`objective: target` must be a share between 0 and 100 % (exclusive), like 99% or 0.99, not '{}'",
                                shown(text, 40)
                            ),
                        );
                        None
                    }
                }
            }
        };
        let Some(within) = within else {
            if map.get_node("settled_within").is_none() {
                self.error(map.span(), "`objective` needs `settled_within`, e.g. 30s");
            }
            return None;
        };
        if within.is_zero() || window < within {
            self.error(
                map.span(),
                "`objective`: `settled_within` must be more than 0 and no longer than `window`",
            );
            return None;
        }
        Some(Objective {
            settled_within: within,
            target: target?,
            window,
        })
    }

    fn on_drift(&mut self, map: &MarkedMappingNode) -> Option<OnDrift> {
        let value = self.optional_scalar(map, "on_drift")?;
        match value.as_str() {
            "alert" => Some(OnDrift::Alert),
            "compensate" => Some(OnDrift::Compensate),
            "reapply" => Some(OnDrift::Reapply),
            other => {
                self.error(
                    value.span(),
                    format!("`on_drift` must be `alert`, `compensate` or `reapply`, not '{other}'"),
                );
                None
            }
        }
    }

    /// `requires: "0.2"`: the oldest Settle the flow is written for. A host
    /// older than that says so, once, and names the version.
    fn requires(&mut self, map: &MarkedMappingNode) {
        let Some(value) = self.optional_scalar(map, "requires") else {
            return;
        };
        let Some(needed) = version_parts(value.as_str()) else {
            self.error(
                value.span(),
                format!(
                    "`requires` is the oldest Settle version the flow needs, like \"0.1\" or \"0.1.0\", not '{}'",
                    shown(value.as_str(), 40)
                ),
            );
            return;
        };
        let here = version_parts(env!("CARGO_PKG_VERSION")).unwrap_or_default();
        if needed > here {
            let text = value.as_str().trim().to_string();
            self.error(
                value.span(),
                format!(
                    "this flow requires Settle {text} or newer; this host is Settle {}: upgrade the host, or use a flow written for it",
                    env!("CARGO_PKG_VERSION")
                ),
            );
            self.newer_host = Some(text);
        }
    }

    fn upgrade(&mut self, map: &MarkedMappingNode) -> Option<crate::Upgrade> {
        let value = self.optional_scalar(map, "upgrade")?;
        match value.as_str() {
            "keep" => Some(crate::Upgrade::Keep),
            "at-step-boundary" => Some(crate::Upgrade::AtStepBoundary),
            other => {
                self.error(
                    value.span(),
                    format!(
                        "`upgrade` must be `keep` (runs keep the version and plugin builds they started with) or `at-step-boundary` (runs move to this version between steps), not '{}'",
                        shown(other, 40)
                    ),
                );
                None
            }
        }
    }

    fn on_exhausted(&mut self, map: &MarkedMappingNode) -> Option<OnExhausted> {
        let value = self.optional_scalar(map, "on_exhausted")?;
        match value.as_str() {
            "compensate" => Some(OnExhausted::Compensate),
            "hold" => Some(OnExhausted::Hold),
            other => {
                self.error(
                    value.span(),
                    format!("`on_exhausted` must be `compensate` or `hold`, not '{other}'"),
                );
                None
            }
        }
    }

    fn step(
        &mut self,
        node: &Node,
        earlier: &[StepDef],
        defaults: &StepDefaults,
    ) -> Option<StepDef> {
        let Some(map) = node.as_mapping() else {
            self.error(
                node.span(),
                "a step must be a mapping with `name` and `plugin`",
            );
            return None;
        };
        self.known_keys(map, STEP_KEYS, "step");
        let errors_before = self.errors.len();
        let name = self.identifier(map, "name", "step name");
        if let Some(n) = &name
            && earlier.iter().any(|s| &s.name == n)
        {
            self.error(
                map.get_node("name").map_or(map.span(), Node::span),
                format!("step name '{n}' is used twice"),
            );
        }
        let wait_node = map.get_node("wait");
        let signal_node = map.get_node("signal");
        let approval_node = map.get_node("approval");
        let parallel_node = map.get_node("parallel");
        if let Some(node) = parallel_node
            && let Some(other) = ["plugin", "input", "for_each", "concurrency"]
                .into_iter()
                .find(|k| map.get_node(k).is_some())
        {
            self.error(
                node.span(),
                format!(
                    "a `parallel` step calls its branches' plugins: move `{other}` into a branch, or make it a step of its own"
                ),
            );
        }
        for (node, kind) in [
            (wait_node, "wait"),
            (signal_node, "signal"),
            (approval_node, "approval"),
        ] {
            let others: &[&str] = match kind {
                "wait" => &["parallel"],
                "signal" => &["wait", "parallel"],
                _ => &["wait", "signal", "parallel"],
            };
            if let Some(node) = node
                && let Some(other) = [
                    "plugin",
                    "input",
                    "retry",
                    "compensate",
                    "on_exhausted",
                    "timeout",
                ]
                .into_iter()
                .chain(others.iter().copied())
                .find(|k| map.get_node(k).is_some())
            {
                self.error(
                    node.span(),
                    format!(
                        "a `{kind}` step waits, it calls no plugin: remove `{other}` or make it two steps"
                    ),
                );
            }
        }
        let wait = wait_node.and_then(|node| self.wait(node, earlier));
        let signal = signal_node.and_then(|node| self.signal(node));
        let approval = approval_node.and_then(|node| self.approval(node));
        let builtin = wait_node.is_some() || signal_node.is_some() || approval_node.is_some();
        let plugin = if builtin || parallel_node.is_some() {
            Some(String::new())
        } else {
            self.identifier(map, "plugin", "plugin name")
        };
        let plugin_at = map
            .get_node("plugin")
            .map(|n| location(n.span()))
            .unwrap_or_default();
        let step_index = |n: &str| earlier.iter().position(|s| s.name == n);
        let input_at = map.get_node("input").map(|n| location(n.span()));
        let input = self.step_input(map, &step_index, earlier);
        let condition = map
            .get_node("if")
            .and_then(|node| self.condition(node, &step_index, earlier));
        let for_each = self.for_each(map, builtin || parallel_node.is_some(), &step_index);
        if for_each.is_none() {
            self.no_item(map, &input);
        }
        let (retry, retry_explicit) =
            match self.retry_or_policy(map, &defaults.retry, &defaults.policies) {
                Some(r) => (r, true),
                None => (defaults.retry.clone(), defaults.retry_explicit),
            };
        let timeout = self.duration(map, "timeout", &TIMEOUT).or(defaults.timeout);
        let on_exhausted = self.on_exhausted(map).unwrap_or(defaults.on_exhausted);
        let compensate = match self.optional_scalar(map, "compensate") {
            // A timer or a signal has nothing to undo.
            None if builtin => false,
            None => true,
            Some(s) => match s.as_bool() {
                Some(b) => b,
                None => {
                    self.error(
                        s.span(),
                        format!(
                            "`compensate` must be true or false, not '{}'",
                            shown(s.as_str(), 40)
                        ),
                    );
                    true
                }
            },
        };
        let parallel = match (parallel_node, &name) {
            (Some(node), Some(name)) => self.parallel(node, name, &step_index, earlier),
            _ => None,
        };
        if self.errors.len() > errors_before {
            return None;
        }
        let mut parallel = parallel;
        if let Some(p) = parallel.as_mut() {
            // Branches are called as the step: its limits and its undo.
            for branch in &mut p.branches {
                branch.call.retry = retry.clone();
                branch.call.retry_explicit = true;
                branch.call.timeout = timeout;
                branch.call.compensate = compensate;
                branch.call.on_exhausted = on_exhausted;
            }
        }
        Some(StepDef {
            name: name?,
            plugin: plugin?,
            input,
            retry,
            timeout,
            compensate,
            on_exhausted,
            retry_explicit,
            plugin_at,
            input_at: input_at.unwrap_or(plugin_at),
            wait,
            signal,
            approval,
            condition,
            for_each,
            parallel,
        })
    }

    /// What a step (or a branch) gives its plugin: `input:`, an empty
    /// object when there is none.
    fn step_input(
        &mut self,
        map: &MarkedMappingNode,
        step_index: &dyn Fn(&str) -> Option<usize>,
        earlier: &[StepDef],
    ) -> Template {
        let Some(node) = map.get_node("input") else {
            return Template::Literal(Value::Object(Default::default()));
        };
        match Template::parse_all(&to_json(node), step_index) {
            Ok(t) => t,
            Err(problems) => {
                for e in problems {
                    let hint = crate::template::unknown_step_in(&e)
                        .and_then(|name| {
                            crate::closest(name, earlier.iter().map(|s| s.name.as_str()))
                        })
                        .map(|n| format!(" (did you mean '{n}'?)"))
                        .unwrap_or_default();
                    self.error(node.span(), format!("step input: {e}{hint}"));
                }
                Template::Literal(Value::Null)
            }
        }
    }

    /// A plain reference into a branch of a `first` join reads what may not
    /// be there: an error now, not a failed step later. jq with a default
    /// (`//`) says what then.
    fn no_missing_branch_reads(&mut self, step: &StepDef, earlier: &[StepDef]) {
        for call in step.calls() {
            for r in call.input.references() {
                let crate::template::Root::StepOutput { index, name } = &r.root else {
                    continue;
                };
                let Some(crate::Parallel {
                    join: crate::Join::First(n),
                    ..
                }) = earlier.get(*index).and_then(|s| s.parallel.as_ref())
                else {
                    continue;
                };
                let Some(branch) = r.path.first() else {
                    continue;
                };
                self.error_at(
                    call.input_at,
                    format!(
                        "step '{}' reads '{}', but branch '{branch}' of step '{name}' may give no output (join: first {n}): write ${{{{ {} // DEFAULT }}}} to say what then",
                        call.name,
                        r.text,
                        r.text
                    ),
                );
            }
        }
    }

    /// `item` is read only by a `for_each` step's input.
    fn no_item(&mut self, map: &MarkedMappingNode, input: &Template) {
        if input.reads_item()
            && let Some(node) = map.get_node("input")
        {
            self.error(
                node.span(),
                "step input reads `item`, which only a `for_each` step has: add `for_each: ${{ … }}` or read input or steps instead",
            );
        }
    }

    /// A step's `parallel:`: its `branches` (each one plugin call, written
    /// as a step with `name`, `plugin` and `input`), its `join` and
    /// `concurrency`.
    fn parallel(
        &mut self,
        node: &Node,
        step: &str,
        step_index: &dyn Fn(&str) -> Option<usize>,
        earlier: &[StepDef],
    ) -> Option<crate::Parallel> {
        let Some(map) = node.as_mapping() else {
            self.error(
                node.span(),
                "`parallel` is a mapping with `branches` (a list of steps with `name`, `plugin` and `input`) and `join` (all, any, or first: N)",
            );
            return None;
        };
        self.known_keys(map, PARALLEL_KEYS, "`parallel`");
        let Some(list) = map.get_node("branches").and_then(Node::as_sequence) else {
            self.error(
                map.span(),
                "`parallel` needs `branches`: a list of steps with `name`, `plugin` and `input`",
            );
            return None;
        };
        if !(2..=crate::MAX_BRANCHES).contains(&list.len()) {
            self.error(
                list.span(),
                format!(
                    "`branches` lists {} branches; a `parallel` step has 2 to {}",
                    list.len(),
                    crate::MAX_BRANCHES
                ),
            );
            return None;
        }
        let mut branches: Vec<crate::Branch> = Vec::new();
        for node in list.iter() {
            let Some(map) = node.as_mapping() else {
                self.error(
                    node.span(),
                    "a branch is a mapping with `name`, `plugin` and `input`",
                );
                continue;
            };
            self.known_keys(map, BRANCH_KEYS, "branch");
            let name = self.identifier(map, "name", "branch name");
            let plugin = self.identifier(map, "plugin", "plugin name");
            let input = self.step_input(map, step_index, earlier);
            self.no_item(map, &input);
            let (Some(name), Some(plugin)) = (name, plugin) else {
                continue;
            };
            if branches.iter().any(|b| b.name == name) {
                self.error(
                    map.get_node("name").map_or(map.span(), Node::span),
                    format!("branch name '{name}' is used twice in step '{step}'"),
                );
                continue;
            }
            let plugin_at = map
                .get_node("plugin")
                .map(|n| location(n.span()))
                .unwrap_or_default();
            let call = StepDef {
                name: format!("{step}.{name}"),
                plugin,
                input,
                retry: Default::default(),
                timeout: None,
                compensate: true,
                on_exhausted: Default::default(),
                retry_explicit: true,
                plugin_at,
                input_at: map
                    .get_node("input")
                    .map_or(plugin_at, |n| location(n.span())),
                wait: None,
                signal: None,
                approval: None,
                condition: None,
                for_each: None,
                parallel: None,
            };
            branches.push(crate::Branch { name, call });
        }
        let join = match map.get_node("join") {
            None => Some(crate::Join::All),
            Some(node) => self.join(node, list.len()),
        };
        let concurrency = match map.get_node("concurrency") {
            None => list.len() as u32,
            Some(c) => match c.as_scalar().and_then(|s| s.as_str().parse::<u32>().ok()) {
                Some(n) if (1..=list.len() as u32).contains(&n) => n,
                _ => {
                    self.error(
                        c.span(),
                        format!(
                            "`concurrency` of a `parallel` step is a whole number from 1 to its {} branches",
                            list.len()
                        ),
                    );
                    return None;
                }
            },
        };
        let join = join?;
        (branches.len() == list.len()).then_some(crate::Parallel {
            join,
            concurrency,
            branches,
        })
    }

    /// `join: all`, `join: any` or `join: {first: N}` (N at most the count of branches).
    fn join(&mut self, node: &Node, branches: usize) -> Option<crate::Join> {
        let how = "`join` is `all` (every branch gives an output), `any` (at least one does) or `first: N` (at least N do)";
        if let Some(s) = node.as_scalar() {
            return match s.as_str() {
                "all" => Some(crate::Join::All),
                "any" => Some(crate::Join::First(1)),
                other => {
                    self.error(s.span(), format!("{how}, not '{}'", shown(other, 40)));
                    None
                }
            };
        }
        let first = node
            .as_mapping()
            .filter(|m| m.len() == 1)
            .and_then(|m| m.get_node("first"));
        match first
            .and_then(Node::as_scalar)
            .map(|s| s.as_str().parse::<u32>())
        {
            Some(Ok(n)) if n >= 1 && (n as usize) <= branches => Some(crate::Join::First(n)),
            Some(_) => {
                self.error(
                    node.span(),
                    format!("`join: first: N` takes N from 1 to the {branches} branches"),
                );
                None
            }
            None => {
                self.error(node.span(), how);
                None
            }
        }
    }

    /// A step's `for_each:` (one expression giving a list) and `concurrency:`.
    fn for_each(
        &mut self,
        map: &MarkedMappingNode,
        builtin: bool,
        step_index: &dyn Fn(&str) -> Option<usize>,
    ) -> Option<crate::ForEach> {
        let concurrency_node = map.get_node("concurrency");
        let Some(node) = map.get_node("for_each") else {
            if let Some(c) = concurrency_node {
                self.error(c.span(), "`concurrency` goes with `for_each`");
            }
            return None;
        };
        if builtin {
            self.error(
                node.span(),
                "a `wait`, `signal` or `approval` step cannot have `for_each`: only a plugin step runs per item",
            );
            return None;
        }
        let list = match Template::parse(&to_json(node), step_index) {
            Ok(Template::Ref(r)) => crate::template::program(&r.text, step_index)
                .map(Template::Program)
                .map_err(|e| format!("`for_each`: {e}")),
            Ok(t @ Template::Program(_)) => Ok(t),
            Ok(Template::Literal(Value::Array(items)))
                if items.len() > settle_types::summary::MAX_ITEMS =>
            {
                Err(format!(
                    "`for_each` lists {} items; a step may have at most {}",
                    items.len(),
                    settle_types::summary::MAX_ITEMS
                ))
            }
            Ok(Template::Literal(v @ Value::Array(_))) => Ok(Template::Literal(v)),
            Ok(_) => Err(
                "`for_each` is one expression giving a list, like ${{ input.items }}".to_string(),
            ),
            Err(e) => Err(format!("`for_each`: {e}")),
        };
        let list = match list {
            Ok(l) => l,
            Err(e) => {
                self.error(node.span(), e);
                return None;
            }
        };
        let concurrency = match concurrency_node {
            None => 1,
            Some(c) => match c.as_scalar().and_then(|s| s.as_str().parse::<u32>().ok()) {
                Some(n) if (1..=crate::MAX_CONCURRENCY).contains(&n) => n,
                _ => {
                    self.error(
                        c.span(),
                        format!(
                            "`concurrency` is a whole number from 1 to {}",
                            crate::MAX_CONCURRENCY
                        ),
                    );
                    return None;
                }
            },
        };
        Some(crate::ForEach { list, concurrency })
    }

    /// A step's `if:`: one expression (or `true`/`false`), read against the
    /// run's input and earlier steps' outputs.
    fn condition(
        &mut self,
        node: &Node,
        step_index: &dyn Fn(&str) -> Option<usize>,
        earlier: &[StepDef],
    ) -> Option<crate::Condition> {
        let value = to_json(node);
        let text = match &value {
            Value::Bool(b) => b.to_string(),
            Value::String(s) => s.trim().to_string(),
            _ => String::new(),
        };
        let template = match &value {
            Value::Bool(_) => Ok(Template::Literal(value.clone())),
            Value::String(_) => Template::parse(&value, step_index),
            _ => Err("is not an expression".into()),
        };
        // A condition is jq through and through: a field that is not there
        // is null (false), not a failure of the step.
        let template = match template {
            Ok(Template::Ref(r)) => {
                crate::template::program(&r.text, step_index).map(Template::Program)
            }
            other => other,
        };
        match template {
            Ok(t @ (Template::Program(_) | Template::Literal(Value::Bool(_)))) => {
                Some(crate::Condition {
                    template: t,
                    text: shown(&text, 200),
                })
            }
            Ok(_) => {
                self.error(
                    node.span(),
                    "`if` must be one expression, like ${{ input.amount > 100 }}, or true or false",
                );
                None
            }
            Err(e) => {
                let hint = crate::template::unknown_step_in(&e)
                    .and_then(|name| crate::closest(name, earlier.iter().map(|s| s.name.as_str())))
                    .map(|n| format!(" (did you mean '{n}'?)"))
                    .unwrap_or_default();
                self.error(node.span(), format!("`if`: {e}{hint}"));
                None
            }
        }
    }
}

/// The text as JSON, within the same limits as a flow; `None` otherwise.
pub(super) fn as_json(text: &str) -> Option<Value> {
    limits::check_text(text).ok()?;
    let options = LoaderOptions::default().error_on_duplicate_keys(true);
    let root = marked_yaml::parse_yaml_with_options(0, text, options).ok()?;
    if limits::tree_depth(&root).is_some() {
        limits::dismantle(root);
        return None;
    }
    Some(to_json(&root))
}

/// YAML node → JSON. Plain (unquoted) scalars become numbers, booleans or
/// null when they read as such; quoted scalars stay strings.
fn to_json(node: &Node) -> Value {
    match node {
        Node::Scalar(s) => {
            let text = s.as_str();
            if s.may_coerce() {
                if let Some(b) = s.as_bool() {
                    return Value::Bool(b);
                }
                if text == "null" || text == "~" {
                    return Value::Null;
                }
                if let Ok(i) = text.parse::<i64>() {
                    return Value::from(i);
                }
                if let Ok(f) = text.parse::<f64>()
                    && let Some(n) = serde_json::Number::from_f64(f)
                {
                    return Value::Number(n);
                }
            }
            Value::String(text.to_string())
        }
        Node::Sequence(seq) => Value::Array(seq.iter().map(to_json).collect()),
        Node::Mapping(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.as_str().to_string(), to_json(v)))
                .collect(),
        ),
    }
}
