//! What a step gives its plugin, checked against the plugin's declared
//! input schema before any run starts: a required field left out, a field
//! the plugin does not take, a literal of the wrong type, or an earlier
//! step's output field of the wrong type (or that it does not return, by
//! its output schema). What comes from the run's input cannot be known
//! before a run; it is checked when the run is submitted.
//!
//! Only the top level of a step's input is checked field by field (the
//! schemas of the plugins in this repository are flat); literals are
//! checked whole against their field's schema.

use crate::template::{Reference, Root, Template};
use crate::{Flow, FlowError, PluginFacts, StepDef, closest};
use serde_json::{Map, Value};

/// Every problem of `flow`'s step inputs against the plugins' schemas.
pub(crate) fn check(flow: &Flow, file: &str, installed: &[PluginFacts]) -> Vec<FlowError> {
    let plugin = |name: &str| installed.iter().find(|p| p.name == name);
    let mut errors = Vec::new();
    for step in &flow.steps {
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
        let mut say = |message: String| {
            errors.push(FlowError {
                file: file.into(),
                at: step.input_at,
                message,
            })
        };
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
                    .map(|g| format!(" (is '{g}' meant to be '{required}'?)"))
                    .unwrap_or_default();
                say(format!(
                    "step '{}' does not give plugin '{}' its required field '{required}'{hint}",
                    step.name, step.plugin
                ));
            }
        }
        for (key, given) in &fields {
            let field = properties.and_then(|p| p.get(key));
            let Some(field) = field else {
                if schema.get("additionalProperties") == Some(&Value::Bool(false)) {
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
    }
    errors
}

/// What a step gives one field.
enum Given {
    Literal(Value),
    Ref(Reference),
    /// Text with expressions in it: a string.
    Text,
    /// A mapping or list with expressions inside: its own shape.
    Composite(&'static str),
}

impl Given {
    fn of(t: &Template) -> Given {
        match t {
            Template::Literal(v) => Given::Literal(v.clone()),
            Template::Ref(r) => Given::Ref(r.clone()),
            Template::Interpolated(_) => Given::Text,
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
        Given::Literal(value) => {
            let validator = jsonschema::validator_for(field).ok()?;
            let problem = validator.iter_errors(value).next()?;
            Some(format!(
                "{what}: {value} does not fit plugin '{}': {problem}",
                step.plugin
            ))
        }
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
            let producer = &flow.steps.get(*index)?.plugin;
            let schema = &installed
                .iter()
                .find(|p| &p.name == producer)?
                .output_schema;
            let produced = match walk(schema, &r.path) {
                Walk::Found(s) => s,
                Walk::Undeclared { field, declared } => {
                    let hint = closest(field, declared.iter().map(String::as_str))
                        .map(|n| format!(" (did you mean '{n}'?)"))
                        .unwrap_or_default();
                    return Some(format!(
                        "{what} reads '{}', but plugin '{producer}' of step '{name}' returns no field '{field}'{hint}; it returns: {}",
                        r.text,
                        declared.join(", ")
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
            None => {
                return Walk::Undeclared {
                    field,
                    declared: declared(props),
                };
            }
        }
    }
    Walk::Found(at)
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
    wants.is_empty() || wants.contains(&has) || (has == "integer" && wants.contains(&"number"))
}
