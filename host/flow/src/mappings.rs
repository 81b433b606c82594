//! What a step gives its plugin, checked against the plugin's declared
//! input schema before any run starts: a required field left out, a field
//! the plugin does not take, a literal of the wrong type, or an earlier
//! step's output field of the wrong type (or that it does not return, by
//! its output schema). What comes from the run's input cannot be known
//! before a run; it is checked when the run is submitted.
//!
//! Only the top level of a step's input is checked field by field (the
//! schemas of the plugins in this repository are flat); literals are
//! checked against the plugin's whole input schema (so `$ref`s into its
//! `$defs` resolve), keeping the problems under their own field. Where a
//! schema leaves room (no `type`, `patternProperties`, combinators, extra
//! fields allowed), nothing is claimed. Texts from a plugin's schema are
//! cut and stripped of control characters, and a step gets at most
//! [`MAX_PROBLEMS_PER_STEP`] messages.

/// Most problems reported for one step's input.
const MAX_PROBLEMS_PER_STEP: usize = 10;

/// Plugin-supplied text as a message may quote it: control characters
/// dropped, at most `max` characters.
fn quoted(text: &str, max: usize) -> String {
    let clean: String = text.chars().filter(|c| !c.is_control()).collect();
    crate::template::shown(&clean, max)
}

use crate::template::{Reference, Root, Template};
use crate::{Flow, FlowError, PluginFacts, StepDef, closest};
use serde_json::{Map, Value};

/// Every problem of `flow`'s step inputs against the plugins' schemas.
pub(crate) fn check(flow: &Flow, file: &str, installed: &[PluginFacts]) -> Vec<FlowError> {
    let plugin = |name: &str| installed.iter().find(|p| p.name == name);
    let mut errors = Vec::new();
    for step in flow.steps.iter().flat_map(StepDef::calls) {
        let Some(schema) = plugin(&step.plugin)
            .map(|p| &p.input_schema)
            .and_then(Value::as_object)
        else {
            continue;
        };
        let fields: Vec<(String, Given)> = match &step.input {
            Template::Object(fields) => fields
                .iter()
                .map(|(k, t)| (k.clone(), Given::of(t)))
                .collect(),
            Template::Literal(Value::Object(map)) => map
                .iter()
                .map(|(k, v)| (k.clone(), Given::Literal(v.clone())))
                .collect(),
            // The whole input from a reference or text: not knowable here.
            _ => continue,
        };
        let mut problems: Vec<String> = Vec::new();
        let mut say = |message: String| problems.push(message);
        let properties = schema.get("properties").and_then(Value::as_object);
        let given: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
        for required in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !given.contains(&required) {
                let hint = closest(required, given.iter().copied())
                    .map(|g| format!(" (is '{g}' meant to be '{}'?)", quoted(required, 64)))
                    .unwrap_or_default();
                say(format!(
                    "step '{}' does not give plugin '{}' its required field '{}'{hint}",
                    step.name,
                    step.plugin,
                    quoted(required, 64)
                ));
            }
        }
        // Literals against the whole schema, once: `$ref`s resolve.
        let literals: Map<String, Value> = fields
            .iter()
            .filter_map(|(k, g)| match g {
                Given::Literal(v) => Some((k.clone(), v.clone())),
                _ => None,
            })
            .collect();
        let literal_problems = literal_problems(&step.input_schema_of(installed), &literals);
        let open = schema.contains_key("patternProperties")
            || ["allOf", "anyOf", "oneOf", "$ref"]
                .iter()
                .any(|k| schema.contains_key(*k));
        for (key, given) in &fields {
            if let Given::Literal(value) = given
                && let Some(problem) = literal_problems.get(key)
            {
                say(format!(
                    "field '{key}' of step '{}': {} does not fit plugin '{}': {}",
                    step.name,
                    quoted(&value.to_string(), 80),
                    step.plugin,
                    quoted(problem, 200)
                ));
                continue;
            }
            let field = properties.and_then(|p| p.get(key));
            let Some(field) = field else {
                if !open && schema.get("additionalProperties") == Some(&Value::Bool(false)) {
                    let names =
                        properties.map(|p| p.keys().map(String::as_str).collect::<Vec<_>>());
                    let hint = names
                        .as_ref()
                        .and_then(|n| closest(key, n.iter().copied()))
                        .map(|n| format!(" (did you mean '{n}'?)"))
                        .unwrap_or_default();
                    say(format!(
                        "step '{}': plugin '{}' takes no field '{key}'{hint}",
                        step.name, step.plugin
                    ));
                }
                continue;
            };
            if let Some(problem) = mismatch(flow, step, key, given, field, installed) {
                say(problem);
            }
        }
        let more = problems.len().saturating_sub(MAX_PROBLEMS_PER_STEP);
        problems.truncate(MAX_PROBLEMS_PER_STEP);
        if more > 0 {
            problems.push(format!(
                "step '{}': {more} more problem(s) with its input",
                step.name
            ));
        }
        errors.extend(problems.into_iter().map(|message| FlowError {
            file: file.into(),
            at: step.input_at,
            message,
        }));
    }
    errors
}

/// Per top-level field, the first problem of the step's literal fields
/// against the plugin's whole input schema (`required` is left to the
/// check above: only the literals are given here).
fn literal_problems(
    schema: &Value,
    literals: &Map<String, Value>,
) -> std::collections::BTreeMap<String, String> {
    let mut found = std::collections::BTreeMap::new();
    if literals.is_empty() {
        return found;
    }
    let Ok(validator) = jsonschema::validator_for(schema) else {
        return found;
    };
    let instance = Value::Object(literals.clone());
    for e in validator.iter_errors(&instance).take(100) {
        let path = e.instance_path().to_string();
        let Some(key) = path
            .strip_prefix('/')
            .map(|p| p.split('/').next().unwrap_or(p))
        else {
            continue;
        };
        // JSON Pointer escapes: ~1 is '/', ~0 is '~'.
        let key = key.replace("~1", "/").replace("~0", "~");
        if literals.contains_key(&key) {
            found.entry(key).or_insert_with(|| e.to_string());
        }
    }
    found
}

impl StepDef {
    /// The input schema of this step's plugin, as installed (null if none).
    fn input_schema_of(&self, installed: &[PluginFacts]) -> Value {
        installed
            .iter()
            .find(|p| p.name == self.plugin)
            .map_or(Value::Null, |p| p.input_schema.clone())
    }
}

/// What a step gives one field.
enum Given {
    Literal(Value),
    Ref(Reference),
    /// Text with expressions in it: a string.
    Text,
    /// A mapping or list with expressions inside: its own shape.
    Composite(&'static str),
    /// A jq program's value.
    Computed,
}

impl Given {
    fn of(t: &Template) -> Given {
        match t {
            Template::Literal(v) => Given::Literal(v.clone()),
            Template::Ref(r) => Given::Ref(r.clone()),
            Template::Interpolated(_) => Given::Text,
            // Its type is known only when it runs.
            Template::Program(_) => Given::Computed,
            Template::Object(_) => Given::Composite("object"),
            Template::Array(_) => Given::Composite("array"),
        }
    }
}

/// Why `given` does not fit `field`'s schema, if it does not.
fn mismatch(
    flow: &Flow,
    step: &StepDef,
    key: &str,
    given: &Given,
    field: &Value,
    installed: &[PluginFacts],
) -> Option<String> {
    let wants = types_of(field);
    let what = format!("field '{key}' of step '{}'", step.name);
    match given {
        // Checked against the whole schema, before.
        Given::Literal(_) | Given::Computed => None,
        Given::Text => (!fits(&wants, "string")).then(|| {
            format!(
                "{what} is text with expressions in it, a string, but plugin '{}' wants {}",
                step.plugin,
                wants.join(" or ")
            )
        }),
        Given::Composite(shape) => (!fits(&wants, shape)).then(|| {
            format!(
                "{what} is an {shape}, but plugin '{}' wants {}",
                step.plugin,
                wants.join(" or ")
            )
        }),
        Given::Ref(r) => {
            let Root::StepOutput { index, name } = &r.root else {
                return None;
            };
            let producing = flow.steps.get(*index)?;
            // A `for_each` step's output is a list; a `parallel` step's
            // has a field per branch, holding that branch's output.
            let (producer, path) = match &producing.parallel {
                _ if producing.for_each.is_some() => return None,
                None => (&producing.plugin, &r.path[..]),
                Some(p) => {
                    let (branch, rest) = r.path.split_first()?;
                    let Some(b) = p.branches.iter().find(|b| &b.name == branch) else {
                        let names = p.branches.iter().map(|b| b.name.as_str());
                        let hint = closest(branch, names.clone())
                            .map(|n| format!(" (did you mean '{n}'?)"))
                            .unwrap_or_default();
                        return Some(format!(
                            "{what} reads '{}', but step '{name}' has no branch '{branch}'{hint}; its branches: {}",
                            r.text,
                            names.collect::<Vec<_>>().join(", ")
                        ));
                    };
                    (&b.call.plugin, rest)
                }
            };
            let schema = &installed
                .iter()
                .find(|p| &p.name == producer)?
                .output_schema;
            let produced = match walk(schema, path) {
                Walk::Found(s) => s,
                Walk::Undeclared { field, declared } => {
                    let hint = closest(field, declared.iter().map(String::as_str))
                        .map(|n| format!(" (did you mean '{n}'?)"))
                        .unwrap_or_default();
                    return Some(format!(
                        "{what} reads '{}', but plugin '{producer}' of step '{name}' returns no field '{field}'{hint}; it returns: {}",
                        r.text,
                        quoted(&declared.join(", "), 200)
                    ));
                }
                Walk::Unknown => return None,
            };
            let has = types_of(produced);
            if wants.is_empty() || has.is_empty() || has.iter().any(|t| fits(&wants, t)) {
                return None;
            }
            Some(format!(
                "{what} gets '{}', which plugin '{producer}' returns as {}, but plugin '{}' wants {}",
                r.text,
                has.join(" or "),
                step.plugin,
                wants.join(" or ")
            ))
        }
    }
}

/// Where a path leads in a schema of objects.
enum Walk<'a> {
    Found(&'a Value),
    /// An object that declares its fields, without this one.
    Undeclared {
        field: &'a str,
        declared: Vec<String>,
    },
    /// The schema does not say.
    Unknown,
}

fn walk<'a>(schema: &'a Value, path: &'a [String]) -> Walk<'a> {
    let mut at = schema;
    for field in path {
        let Some(props) = at.get("properties").and_then(Value::as_object) else {
            return Walk::Unknown;
        };
        match props.get(field) {
            Some(next) => at = next,
            // Only an object closed to other fields says it has no such one.
            None if closed(at) => {
                return Walk::Undeclared {
                    field,
                    declared: declared(props),
                };
            }
            None => return Walk::Unknown,
        }
    }
    Walk::Found(at)
}

/// Whether an object schema allows no fields but those it lists.
fn closed(schema: &Value) -> bool {
    schema.get("additionalProperties") == Some(&Value::Bool(false))
        && !["patternProperties", "allOf", "anyOf", "oneOf", "$ref"]
            .iter()
            .any(|k| schema.get(*k).is_some())
}

fn declared(props: &Map<String, Value>) -> Vec<String> {
    props.keys().cloned().collect()
}

/// The JSON types a schema allows (`type`), empty when it does not say.
fn types_of(schema: &Value) -> Vec<&str> {
    match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// Whether a value of JSON type `has` is one of `wants` (an integer is a
/// number too); anything fits when `wants` says nothing.
fn fits(wants: &[&str], has: &str) -> bool {
    wants.is_empty()
        || wants.contains(&has)
        || (has == "integer" && wants.contains(&"number"))
        // A number may well be whole: the run finds out.
        || (has == "number" && wants.contains(&"integer"))
}
