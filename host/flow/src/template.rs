//! Input mappings: `${{ input.amount }}`, `${{ steps.reserve.output.id }}`,
//! `${{ run.id }}`.
//!
//! A string that is exactly one expression takes the referenced JSON value
//! as it is (a number stays a number); an expression inside other text is
//! spliced in as text. References are resolved by path when the step is
//! called; a missing value is an `invalid-input` failure of that step.
//!
//! Templates come from flow files, so they are bounded like the rest of the
//! file: at most [`MAX_DEPTH`] levels of mappings and lists, expressions of
//! at most [`MAX_EXPRESSION_CHARS`] with at most [`MAX_PATH_SEGMENTS`]
//! fields, and at most [`MAX_REFERENCES`] expressions in one step input, so
//! that rendering costs at most that many copies of the values it reads.
//! Parsing and rendering never panic: every problem is an `Err` naming it.

use serde_json::Value;

/// The deepest nesting of mappings and lists in a step input.
pub const MAX_DEPTH: usize = crate::limits::MAX_NESTING;
/// The longest expression between `${{` and `}}`, in characters.
pub const MAX_EXPRESSION_CHARS: usize = 256;
/// The most fields in one reference (`input.a.b.c` has three).
pub const MAX_PATH_SEGMENTS: usize = 32;
/// The most expressions in one step input.
pub const MAX_REFERENCES: usize = 64;

/// Where a reference starts.
#[derive(Clone, Debug, PartialEq)]
pub enum Root {
    /// The run's input.
    Input,
    /// The output of an earlier step, by index.
    StepOutput { index: usize, name: String },
    /// The run's id.
    RunId,
}

/// A reference: a root and a path of fields or array indexes below it.
#[derive(Clone, Debug, PartialEq)]
pub struct Reference {
    pub root: Root,
    pub path: Vec<String>,
    /// The expression as written, for error messages.
    pub text: String,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Part {
    Text(String),
    Ref(Reference),
}

/// A step's input mapping, parsed.
#[derive(Clone, Debug, PartialEq)]
pub enum Template {
    Literal(Value),
    /// Exactly one expression: the referenced value, any JSON type.
    Ref(Reference),
    /// Text with expressions in it: always a string.
    Interpolated(Vec<Part>),
    Object(Vec<(String, Template)>),
    Array(Vec<Template>),
}

/// What references resolve against.
pub struct Scope<'a> {
    pub input: &'a Value,
    pub outputs: &'a [Option<Value>],
    pub run_id: &'a str,
}

impl Template {
    /// Parses a YAML-derived JSON value. `step_index` resolves step names to
    /// earlier steps only: a step cannot read its own or a later output.
    pub fn parse(
        value: &Value,
        step_index: &dyn Fn(&str) -> Option<usize>,
    ) -> Result<Template, String> {
        let mut references = 0;
        parse_value(value, step_index, 1, &mut references)
    }

    /// Whether every reference is to the run's input or id (so the value can
    /// be computed, and checked, when the run is accepted).
    pub fn depends_only_on_input(&self) -> bool {
        match self {
            Template::Literal(_) => true,
            Template::Ref(r) => !matches!(r.root, Root::StepOutput { .. }),
            Template::Interpolated(parts) => parts.iter().all(|p| {
                !matches!(
                    p,
                    Part::Ref(Reference {
                        root: Root::StepOutput { .. },
                        ..
                    })
                )
            }),
            Template::Object(fields) => fields.iter().all(|(_, t)| t.depends_only_on_input()),
            Template::Array(items) => items.iter().all(Template::depends_only_on_input),
        }
    }

    pub fn render(&self, scope: &Scope<'_>) -> Result<Value, String> {
        Ok(match self {
            Template::Literal(v) => v.clone(),
            Template::Ref(r) => resolve(r, scope)?,
            Template::Interpolated(parts) => {
                let mut out = String::new();
                for part in parts {
                    match part {
                        Part::Text(t) => out.push_str(t),
                        Part::Ref(r) => match resolve(r, scope)? {
                            Value::String(s) => out.push_str(&s),
                            other => out.push_str(&other.to_string()),
                        },
                    }
                }
                Value::String(out)
            }
            Template::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, t)| Ok((k.clone(), t.render(scope)?)))
                    .collect::<Result<_, String>>()?,
            ),
            Template::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|t| t.render(scope))
                    .collect::<Result<_, _>>()?,
            ),
        })
    }
}

/// `depth` counts the mappings and lists around `value`, itself included;
/// `references` counts the expressions seen so far in this input.
fn parse_value(
    value: &Value,
    step_index: &dyn Fn(&str) -> Option<usize>,
    depth: usize,
    references: &mut usize,
) -> Result<Template, String> {
    let nested = matches!(value, Value::Array(_) | Value::Object(_));
    if nested && depth > MAX_DEPTH {
        return Err(format!(
            "nested deeper than {MAX_DEPTH} levels of mappings and lists"
        ));
    }
    Ok(match value {
        Value::String(s) => parse_string(s, step_index, references)?,
        Value::Array(items) => Template::Array(
            items
                .iter()
                .map(|v| parse_value(v, step_index, depth + 1, references))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Template::Object(
            map.iter()
                .map(|(k, v)| {
                    Ok((
                        k.clone(),
                        parse_value(v, step_index, depth + 1, references)?,
                    ))
                })
                .collect::<Result<_, String>>()?,
        ),
        other => Template::Literal(other.clone()),
    })
}

/// At most `max` characters of `text`, for messages about it.
pub(crate) fn shown(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_string(),
        Some((cut, _)) => format!("{}...", &text[..cut]),
    }
}

fn parse_string(
    s: &str,
    step_index: &dyn Fn(&str) -> Option<usize>,
    references: &mut usize,
) -> Result<Template, String> {
    let mut parts = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find("${{") {
        if start > 0 {
            parts.push(Part::Text(rest[..start].to_string()));
        }
        let after = &rest[start + 3..];
        let end = after.find("}}").ok_or_else(|| {
            format!(
                "'{}': '${{{{' has no closing '}}}}'",
                shown(&rest[start..], 40)
            )
        })?;
        let expr = &after[..end];
        if expr.contains("${{") {
            return Err(format!(
                "'{}': expressions cannot be nested inside '${{{{ }}}}'",
                shown(expr.trim(), 40)
            ));
        }
        if expr.chars().count() > MAX_EXPRESSION_CHARS {
            return Err(format!(
                "'{}': an expression may have at most {MAX_EXPRESSION_CHARS} characters",
                shown(expr.trim(), 40)
            ));
        }
        *references += 1;
        if *references > MAX_REFERENCES {
            return Err(format!(
                "more than {MAX_REFERENCES} '${{{{ }}}}' expressions in one step input"
            ));
        }
        parts.push(Part::Ref(parse_reference(expr.trim(), step_index)?));
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_string()));
    }
    Ok(match parts.as_slice() {
        [] => Template::Literal(Value::String(String::new())),
        [Part::Text(t)] => Template::Literal(Value::String(t.clone())),
        [Part::Ref(r)] => Template::Ref(r.clone()),
        _ => Template::Interpolated(parts),
    })
}

/// The step name an "is not an earlier step" message is about.
pub(crate) fn unknown_step_in(message: &str) -> Option<&str> {
    let (_, rest) = message.split_once("refers to step '")?;
    let (name, tail) = rest.split_once('\'')?;
    tail.starts_with(", which is not an earlier step")
        .then_some(name)
}

fn parse_reference(
    expr: &str,
    step_index: &dyn Fn(&str) -> Option<usize>,
) -> Result<Reference, String> {
    let segments: Vec<&str> = expr.split('.').map(str::trim).collect();
    if segments.iter().any(|s| s.is_empty()) {
        return Err(format!(
            "'{expr}' is not a reference like input.field or steps.NAME.output.field"
        ));
    }
    let text = expr.to_string();
    let path = |fields: &[&str]| {
        if fields.len() > MAX_PATH_SEGMENTS {
            return Err(format!(
                "'{}': a reference may have at most {MAX_PATH_SEGMENTS} fields",
                shown(expr, 40)
            ));
        }
        Ok(fields.iter().map(|s| s.to_string()).collect())
    };
    match segments.as_slice() {
        ["input", fields @ ..] => Ok(Reference {
            root: Root::Input,
            path: path(fields)?,
            text,
        }),
        ["run", "id"] => Ok(Reference {
            root: Root::RunId,
            path: vec![],
            text,
        }),
        ["steps", name, "output", fields @ ..] => {
            let index = step_index(name).ok_or_else(|| {
                format!("'{expr}' refers to step '{name}', which is not an earlier step")
            })?;
            Ok(Reference {
                root: Root::StepOutput {
                    index,
                    name: name.to_string(),
                },
                path: path(fields)?,
                text,
            })
        }
        ["steps", name, ..] => Err(format!("'{expr}': write steps.{name}.output.FIELD")),
        _ => Err(format!(
            "'{expr}' is not a reference: use input.FIELD, steps.NAME.output.FIELD or run.id"
        )),
    }
}

fn resolve(r: &Reference, scope: &Scope<'_>) -> Result<Value, String> {
    let mut value = match &r.root {
        Root::Input => scope.input,
        Root::RunId => return Ok(Value::String(scope.run_id.to_string())),
        Root::StepOutput { index, name } => scope
            .outputs
            .get(*index)
            .and_then(Option::as_ref)
            .ok_or_else(|| format!("'{}': step '{name}' has no recorded output", r.text))?,
    };
    for field in &r.path {
        value = match value {
            Value::Object(map) => map.get(field),
            Value::Array(items) => field.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        }
        .ok_or_else(|| format!("'{}': no value at '{field}'", r.text))?;
    }
    Ok(value.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn steps(name: &str) -> Option<usize> {
        (name == "charge").then_some(0)
    }

    #[test]
    fn whole_reference_keeps_its_type_and_text_splices() {
        let t = Template::parse(
            &json!({"amount": "${{ input.amount }}", "note": "order ${{input.id}} paid by ${{ steps.charge.output.tx }}", "n": 3}),
            &steps,
        )
        .unwrap();
        let outputs = vec![Some(json!({"tx": "t-9"}))];
        let v = t
            .render(&Scope {
                input: &json!({"amount": 250, "id": "o1"}),
                outputs: &outputs,
                run_id: "r",
            })
            .unwrap();
        assert_eq!(
            v,
            json!({"amount": 250, "note": "order o1 paid by t-9", "n": 3})
        );
        assert!(!t.depends_only_on_input());
    }

    #[test]
    fn bad_references_are_named() {
        let e = Template::parse(&json!("${{ steps.later.output.x }}"), &steps).unwrap_err();
        assert!(e.contains("'later'"), "{e}");
        let e = Template::parse(&json!("${{ secrets.key }}"), &steps).unwrap_err();
        assert!(e.contains("not a reference"), "{e}");
        let e = Template::parse(&json!("${{ input.x"), &steps).unwrap_err();
        assert!(e.contains("closing"), "{e}");
    }

    #[test]
    fn bounds_are_errors() {
        let mut deep = json!(1);
        for _ in 0..1000 {
            deep = json!([deep]);
        }
        let e = Template::parse(&deep, &steps).unwrap_err();
        assert!(e.contains("nested deeper than 32"), "{e}");
        let at_limit = (1..MAX_DEPTH).fold(json!("${{ input.a }}"), |v, _| json!({ "k": v }));
        assert!(Template::parse(&json!({ "k": at_limit }), &steps).is_ok());
        let e = Template::parse(
            &json!(format!("${{{{ input.{} }}}}", "x".repeat(300))),
            &steps,
        )
        .unwrap_err();
        assert!(e.contains("at most 256 characters") && e.len() < 200, "{e}");
        let many = "${{ input.a }}".repeat(MAX_REFERENCES + 1);
        let e = Template::parse(&json!(many), &steps).unwrap_err();
        assert!(e.contains("more than 64"), "{e}");
        let e = Template::parse(&json!("${{ input.${{ input.a }} }}"), &steps).unwrap_err();
        assert!(e.contains("cannot be nested"), "{e}");
        let fields = vec!["f"; MAX_PATH_SEGMENTS + 1].join(".");
        let e = Template::parse(&json!(format!("${{{{ input.{fields} }}}}")), &steps).unwrap_err();
        assert!(e.contains("at most 32 fields"), "{e}");
    }

    #[test]
    fn missing_values_fail_at_render() {
        let t = Template::parse(&json!("${{ input.customer.id }}"), &steps).unwrap();
        let e = t
            .render(&Scope {
                input: &json!({}),
                outputs: &[],
                run_id: "r",
            })
            .unwrap_err();
        assert!(e.contains("customer"), "{e}");
    }
}
