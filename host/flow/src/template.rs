//! Input mappings: `${{ input.amount }}`, `${{ steps.reserve.output.id }}`,
//! `${{ run.id }}`, and any jq program over the run (`${{ input.amount *
//! 100 }}`, `${{ [input.items[].sku] }}`; see `settle-expr`).
//!
//! A string that is exactly one expression takes the computed JSON value
//! as it is (a number stays a number); an expression inside other text is
//! spliced in as text. A plain reference (fields below `input`,
//! `steps.NAME.output` or `run.id`) is resolved here, by path; anything
//! else is a jq program, checked when the flow is read and run in the
//! sandbox when the step is called ([`Template::programs`], then
//! [`Template::render_with`]). A missing value, or a program that fails,
//! is an `invalid-input` failure of that step.
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
pub const MAX_EXPRESSION_CHARS: usize = settle_expr::MAX_PROGRAM_CHARS;
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

/// A jq program, checked, with the earlier steps it reads.
#[derive(Clone, Debug, PartialEq)]
pub struct Program {
    pub code: String,
    /// Indexes of the steps it reads; `None`: all earlier steps.
    pub steps: Option<Vec<usize>>,
    /// Whether it reads a `for_each` step's `item` or `item_index`.
    pub item: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Part {
    Text(String),
    Ref(Reference),
    Program(Program),
}

/// A step's input mapping, parsed.
#[derive(Clone, Debug, PartialEq)]
pub enum Template {
    Literal(Value),
    /// Exactly one expression: the referenced value, any JSON type.
    Ref(Reference),
    /// Exactly one jq program: its value, any JSON type.
    Program(Program),
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

impl Scope<'_> {
    /// The input of jq programs: `{input, steps: {NAME: {output}}, run: {id}}`,
    /// with the outputs of the steps before `before` only, so a step's
    /// input renders the same whether it runs, is compensated or is checked.
    /// `reads`: the indexes of the steps to include (`None`: all before).
    pub fn context(&self, names: &[&str], before: usize, reads: Option<&[usize]>) -> Value {
        let steps: serde_json::Map<String, Value> = names
            .iter()
            .zip(self.outputs)
            .take(before)
            .enumerate()
            .filter(|(i, _)| reads.is_none_or(|r| r.contains(i)))
            .filter_map(|(_, (name, output))| {
                let output = output.as_ref()?;
                Some((name.to_string(), serde_json::json!({ "output": output })))
            })
            .collect();
        serde_json::json!({
            "input": self.input,
            "steps": steps,
            "run": { "id": self.run_id },
        })
    }
}

/// Why a template could not be rendered.
#[derive(Debug)]
pub enum RenderError {
    /// The sandbox could not run the programs at all (a limit of the
    /// batch, no free instance slot).
    Sandbox(settle_types::executor::EvalFailure),
    /// A value is missing, or a program failed.
    Value(String),
}

impl std::fmt::Display for RenderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RenderError::Sandbox(e) => write!(f, "{e}"),
            RenderError::Value(e) => f.write_str(e),
        }
    }
}

/// What the sandbox answered for each program of a template.
#[derive(Debug, Default)]
pub struct Evaluated(Vec<(String, Result<Value, String>)>);

impl Evaluated {
    pub fn new(programs: Vec<String>, answers: Vec<Result<Value, String>>) -> Self {
        Evaluated(programs.into_iter().zip(answers).collect())
    }

    fn get(&self, program: &Program) -> Result<Value, String> {
        match self.0.iter().find(|(code, _)| *code == program.code) {
            Some((_, Ok(value))) => Ok(value.clone()),
            Some((_, Err(why))) => Err(format!("'{}' {why}", shown(&program.code, 60))),
            None => Err(format!("'{}' was not evaluated", shown(&program.code, 60))),
        }
    }
}

impl Template {
    /// Parses a YAML-derived JSON value. `step_index` resolves step names to
    /// earlier steps only: a step cannot read its own or a later output.
    pub fn parse(
        value: &Value,
        step_index: &dyn Fn(&str) -> Option<usize>,
    ) -> Result<Template, String> {
        Template::parse_all(value, step_index).map_err(|mut problems| problems.swap_remove(0))
    }

    /// [`Template::parse`], with every problem found (at least one when
    /// `Err`), so a flow author sees them all at once.
    pub fn parse_all(
        value: &Value,
        step_index: &dyn Fn(&str) -> Option<usize>,
    ) -> Result<Template, Vec<String>> {
        let mut references = 0;
        let mut problems = Vec::new();
        let template = parse_value(value, step_index, 1, &mut references, &mut problems);
        match template {
            Ok(t) if problems.is_empty() => Ok(t),
            Ok(_) => Err(problems),
            Err(e) => {
                problems.push(e);
                Err(problems)
            }
        }
    }

    /// Whether every reference is to the run's input or id, and no jq
    /// program is in it (so the value can be computed here, and checked,
    /// when the run is accepted).
    pub fn depends_only_on_input(&self) -> bool {
        match self {
            Template::Literal(_) => true,
            Template::Ref(r) => !matches!(r.root, Root::StepOutput { .. }),
            Template::Program(_) => false,
            Template::Interpolated(parts) => parts.iter().all(|p| match p {
                Part::Text(_) => true,
                Part::Ref(r) => !matches!(r.root, Root::StepOutput { .. }),
                Part::Program(_) => false,
            }),
            Template::Object(fields) => fields.iter().all(|(_, t)| t.depends_only_on_input()),
            Template::Array(items) => items.iter().all(Template::depends_only_on_input),
        }
    }

    /// The plain references in the template (not those inside jq), in order.
    pub fn references(&self) -> Vec<&Reference> {
        match self {
            Template::Ref(r) => vec![r],
            Template::Interpolated(parts) => parts
                .iter()
                .filter_map(|p| match p {
                    Part::Ref(r) => Some(r),
                    _ => None,
                })
                .collect(),
            Template::Object(fields) => fields.iter().flat_map(|(_, t)| t.references()).collect(),
            Template::Array(items) => items.iter().flat_map(Template::references).collect(),
            Template::Literal(_) | Template::Program(_) => Vec::new(),
        }
    }

    /// Calls `f` with each jq program in the template, in order.
    fn each_program(&self, f: &mut impl FnMut(&Program)) {
        match self {
            Template::Program(p) => f(p),
            Template::Interpolated(parts) => parts.iter().for_each(|part| {
                if let Part::Program(p) = part {
                    f(p)
                }
            }),
            Template::Object(fields) => fields.iter().for_each(|(_, t)| t.each_program(f)),
            Template::Array(items) => items.iter().for_each(|t| t.each_program(f)),
            Template::Literal(_) | Template::Ref(_) => {}
        }
    }

    /// Whether a program in it reads `item` or `item_index`.
    pub fn reads_item(&self) -> bool {
        let mut item = false;
        self.each_program(&mut |p| item |= p.item);
        item
    }

    /// The jq programs in this template, each once: what the sandbox must
    /// evaluate before [`Template::render_with`].
    pub fn programs(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        self.each_program(&mut |p| {
            if !out.contains(&p.code) {
                out.push(p.code.clone());
            }
        });
        out
    }

    /// Renders with the sandbox at hand: its jq programs evaluated by
    /// `executor` over the run's context (the outputs of the steps before
    /// `before`, named by `names`), then the rest here.
    pub async fn render_in<E: settle_types::executor::Executor>(
        &self,
        scope: &Scope<'_>,
        names: &[&str],
        before: usize,
        executor: &E,
    ) -> Result<Value, RenderError> {
        self.render_item_in(scope, names, before, executor, None)
            .await
    }

    /// [`Template::render_in`] for one item of a `for_each` step: `item`
    /// and `item_index` name it in jq.
    pub async fn render_item_in<E: settle_types::executor::Executor>(
        &self,
        scope: &Scope<'_>,
        names: &[&str],
        before: usize,
        executor: &E,
        item: Option<(&Value, usize)>,
    ) -> Result<Value, RenderError> {
        let programs = self.programs();
        let evaluated = if programs.is_empty() {
            Evaluated::default()
        } else {
            // Only the outputs the programs read go into the sandbox.
            let reads = self.steps_read();
            let mut context = scope.context(names, before, reads.as_deref());
            if let (Some((item, position)), Value::Object(map)) = (item, &mut context) {
                map.insert("item".into(), item.clone());
                map.insert("item_index".into(), Value::from(position));
            }
            let answers = executor
                .evaluate(programs.clone(), context)
                .await
                .map_err(RenderError::Sandbox)?;
            Evaluated::new(programs, answers)
        };
        self.render_with(scope, &evaluated)
            .map_err(RenderError::Value)
    }

    /// The steps its programs read, each once; `None` when one reads them
    /// all (`steps | keys`).
    fn steps_read(&self) -> Option<Vec<usize>> {
        let mut out = Some(Vec::new());
        self.each_program(&mut |p| match (&p.steps, out.as_mut()) {
            (None, _) => out = None,
            (Some(read), Some(all)) => all.extend(read),
            (Some(_), None) => {}
        });
        if let Some(v) = out.as_mut() {
            v.sort_unstable();
            v.dedup();
        }
        out
    }

    /// Renders a template that has no jq program in it (see
    /// [`Template::programs`]); a program renders as an error.
    pub fn render(&self, scope: &Scope<'_>) -> Result<Value, String> {
        self.render_with(scope, &Evaluated::default())
    }

    /// Renders with the programs' values the sandbox gave.
    pub fn render_with(&self, scope: &Scope<'_>, evaluated: &Evaluated) -> Result<Value, String> {
        Ok(match self {
            Template::Literal(v) => v.clone(),
            Template::Ref(r) => resolve(r, scope)?,
            Template::Program(p) => evaluated.get(p)?,
            Template::Interpolated(parts) => {
                let mut out = String::new();
                for part in parts {
                    let value = match part {
                        Part::Text(t) => {
                            out.push_str(t);
                            continue;
                        }
                        Part::Ref(r) => resolve(r, scope)?,
                        Part::Program(p) => evaluated.get(p)?,
                    };
                    match value {
                        Value::String(s) => out.push_str(&s),
                        other => out.push_str(&other.to_string()),
                    }
                }
                Value::String(out)
            }
            Template::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, t)| Ok((k.clone(), t.render_with(scope, evaluated)?)))
                    .collect::<Result<_, String>>()?,
            ),
            Template::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|t| t.render_with(scope, evaluated))
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
    problems: &mut Vec<String>,
) -> Result<Template, String> {
    let nested = matches!(value, Value::Array(_) | Value::Object(_));
    if nested && depth > MAX_DEPTH {
        return Err(format!(
            "nested deeper than {MAX_DEPTH} levels of mappings and lists"
        ));
    }
    // A problem in one field is noted and the others are read on, up to
    // a few: the author sees them together. Bounds stop the reading.
    let mut field = |v: &Value, problems: &mut Vec<String>| match parse_value(
        v,
        step_index,
        depth + 1,
        references,
        problems,
    ) {
        Ok(t) => Ok(t),
        Err(e) if problems.len() < MAX_PROBLEMS && !is_bound(&e) => {
            problems.push(e);
            Ok(Template::Literal(Value::Null))
        }
        Err(e) => Err(e),
    };
    Ok(match value {
        Value::String(s) => parse_string(s, step_index, references)?,
        Value::Array(items) => Template::Array(
            items
                .iter()
                .map(|v| field(v, problems))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Template::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), field(v, problems)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => Template::Literal(other.clone()),
    })
}

/// Problems reported from one template before the rest is left unread.
const MAX_PROBLEMS: usize = 10;

/// Whether a problem is one of the bounds, which end the reading.
fn is_bound(problem: &str) -> bool {
    problem.starts_with("nested deeper") || problem.starts_with("more than")
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
        let end = closing_braces(after).ok_or_else(|| {
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
        parts.push(parse_expression(expr.trim(), step_index)?);
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_string()));
    }
    Ok(match parts.as_slice() {
        [] => Template::Literal(Value::String(String::new())),
        [Part::Text(t)] => Template::Literal(Value::String(t.clone())),
        [Part::Ref(r)] => Template::Ref(r.clone()),
        [Part::Program(p)] => Template::Program(p.clone()),
        _ => Template::Interpolated(parts),
    })
}

/// Where the `}}` that closes an expression is: the first one outside
/// jq's braces and strings, so `${{ {a: {b: 1}} }}` reads whole.
fn closing_braces(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    for (i, b) in settle_types::bounds::outside_strings(text) {
        match b {
            b'{' => depth += 1,
            b'}' if depth > 0 => depth -= 1,
            b'}' if bytes.get(i + 1) == Some(&b'}') => return Some(i),
            _ => {}
        }
    }
    // Unbalanced: the first `}}`, so the error is about the expression.
    text.find("}}")
}

/// A plain reference when the text is one (`input.a.0`, `steps.x.output.y`,
/// `run.id`); else a jq program, checked now.
fn parse_expression(
    expr: &str,
    step_index: &dyn Fn(&str) -> Option<usize>,
) -> Result<Part, String> {
    let plain = expr.split('.').all(|s| {
        !s.trim().is_empty()
            && s.trim()
                .chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
    }) && matches!(
        expr.split('.').next().map(str::trim),
        Some("input" | "steps" | "run")
    );
    if plain {
        return parse_reference(expr, step_index).map(Part::Ref);
    }
    program(expr, step_index).map(Part::Program)
}

/// `expr` as a jq program, checked now, with the earlier steps it reads.
pub fn program(expr: &str, step_index: &dyn Fn(&str) -> Option<usize>) -> Result<Program, String> {
    let reads = settle_expr::inspect(expr).map_err(|e| {
        let hint = if e.contains("unknown filter") && !e.contains("not available") {
            " (a flow reads input, steps.NAME.output and run.id)"
        } else {
            ""
        };
        format!("'{}' {e}{hint}", shown(expr, 60))
    })?;
    let steps = if reads.all_steps {
        None
    } else {
        let mut indexes = Vec::new();
        for name in &reads.steps {
            let index = step_index(name).ok_or_else(|| {
                format!(
                    "'{}' refers to step '{name}', which is not an earlier step",
                    shown(expr, 60)
                )
            })?;
            indexes.push(index);
        }
        Some(indexes)
    };
    Ok(Program {
        code: expr.to_string(),
        steps,
        item: reads.item,
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
        assert!(
            e.contains("unknown filter 'secrets'") && e.contains("steps.NAME.output"),
            "{e}"
        );
        let e = Template::parse(&json!("${{ steps.later.output.x + 1 }}"), &steps).unwrap_err();
        assert!(e.contains("'later', which is not an earlier step"), "{e}");
        let e = Template::parse(&json!("${{ input.amount + }}"), &steps).unwrap_err();
        assert!(e.contains("not valid jq"), "{e}");
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
            &json!(format!("${{{{ input.{} }}}}", "x".repeat(1100))),
            &steps,
        )
        .unwrap_err();
        assert!(
            e.contains("at most 1024 characters") && e.len() < 200,
            "{e}"
        );
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
    fn programs_are_checked_now_and_rendered_from_the_sandbox_answers() {
        let t = Template::parse(
            &json!({"cents": "${{ input.amount * 100 }}", "obj": "${{ {a: {b: steps.charge.output.tx}} }}",
                    "note": "total ${{ input.amount * 100 }} cents", "id": "${{ input.id }}"}),
            &steps,
        )
        .unwrap();
        assert_eq!(
            t.programs(),
            vec!["input.amount * 100", "{a: {b: steps.charge.output.tx}}"]
        );
        let Template::Object(fields) = &t else {
            panic!("{t:?}")
        };
        let obj = &fields.iter().find(|(k, _)| k == "obj").unwrap().1;
        assert!(matches!(obj, Template::Program(Program { steps: Some(s), .. }) if s == &[0]));
        let evaluated = Evaluated::new(
            t.programs(),
            vec![Ok(json!(250)), Err("failed: no tx".into())],
        );
        let scope = Scope {
            input: &json!({"id": "o1"}),
            outputs: &[],
            run_id: "r",
        };
        let e = t.render_with(&scope, &evaluated).unwrap_err();
        assert!(e.contains("no tx"), "{e}");
        let evaluated = Evaluated::new(t.programs(), vec![Ok(json!(250)), Ok(json!({"a": 1}))]);
        assert_eq!(
            t.render_with(&scope, &evaluated).unwrap(),
            json!({"cents": 250, "obj": {"a": 1}, "note": "total 250 cents", "id": "o1"})
        );
        // Without the sandbox's answers, a program is an error, never a guess.
        assert!(t.render(&scope).unwrap_err().contains("not evaluated"));
        assert!(!t.depends_only_on_input());
    }

    #[test]
    fn the_context_holds_earlier_outputs_only() {
        let outputs = vec![Some(json!({"tx": 1})), None, Some(json!({"late": true}))];
        let scope = Scope {
            input: &json!({"a": 1}),
            outputs: &outputs,
            run_id: "r",
        };
        assert_eq!(
            scope.context(&["charge", "skip", "ship"], 2, None),
            json!({"input": {"a": 1}, "steps": {"charge": {"output": {"tx": 1}}}, "run": {"id": "r"}})
        );
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
