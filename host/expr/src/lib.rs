//! Settle's expression language: jq, through the `jaq` crates.
//!
//! A flow writes `${{ … }}` wherever a value is computed: step inputs,
//! conditions. Inside is a jq program whose input (`.`) is the run's context:
//!
//! ```json
//! { "input": { … }, "steps": { "NAME": { "output": { … } } }, "run": { "id": "…" } }
//! ```
//!
//! and the filters `input`, `steps` and `run` name its three parts, so
//! `input.amount * 100` and `steps.reserve.output.items | length` read as
//! they would in any jq. (In jq, `input` reads the next input document;
//! a flow has only one, so the name is taken for the run's input.)
//!
//! Evaluation must be deterministic and must not reach outside: filters
//! that read the clock, the environment or further inputs, or write to
//! stderr, are left out ([`UNAVAILABLE`]), so a step's input is the same
//! every time it is rendered.
//!
//! This crate is built twice. Natively, the host only *checks* programs
//! ([`check`], [`reads`]): parsing and compiling are bounded by the
//! program's length ([`MAX_PROGRAM_CHARS`]). Programs are *run* only inside
//! the evaluator component (`guest/`), in the wasm sandbox under memory and
//! time limits, because jq can loop (`def f: f; f`, `repeat(1)`) and grow
//! values without bound (`"x" * 1e9`): a program that does that fails its
//! step, never the host.

#![forbid(unsafe_code)]

use jaq_core::load::{self, Arena, File, Loader};
use jaq_core::{Compiler, data};
#[cfg(any(test, feature = "evaluate"))]
use jaq_core::{Ctx, Vars};
use jaq_json::Val;

/// The longest program between `${{` and `}}`, in characters. Parsing
/// recurses once per nesting level, so this also bounds the parser's stack.
pub const MAX_PROGRAM_CHARS: usize = 1024;

/// How the context's three parts are named inside a program: through a
/// global variable, so they mean the run wherever they are used, inside
/// `map(…)` and `select(…)` too, not whatever `.` is there.
pub const PRELUDE: &str = "def input: $__run.input; def steps: $__run.steps; def run: $__run.run; \
     def item: $__run.item; def item_index: $__run.item_index;";

/// The global variable that holds the run's context.
const CONTEXT_VAR: &str = "$__run";

/// jq filters a flow cannot use, and why: they would make a step's input
/// depend on when or where it was rendered, or reach outside the sandbox.
pub const UNAVAILABLE: &[(&str, &str)] = &[
    ("now", "it reads the clock"),
    ("localtime", "it reads the clock's time zone"),
    ("strflocaltime", "it reads the clock's time zone"),
    ("mktime", "it depends on the time zone"),
    ("env", "it reads the host's environment"),
    ("input", "a flow has one input; `input` names it"),
    ("inputs", "a flow has one input"),
    ("halt", "it would stop the evaluator"),
    ("halt_error", "it would stop the evaluator"),
    ("debug", "it writes to the host's log"),
    ("stderr", "it writes to the host's log"),
    ("debug_empty", "it writes to the host's log"),
    ("stderr_empty", "it writes to the host's log"),
    ("input_filename", "there is no input file"),
];

fn unavailable(name: &str) -> bool {
    UNAVAILABLE.iter().any(|(n, _)| *n == name)
}

/// What a program reads from the context, found without running it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reads {
    /// Step names read as `steps.NAME` or `steps["NAME"]`.
    pub steps: Vec<String>,
    /// Whether `steps` is used whole (`steps | keys`): every earlier step.
    pub all_steps: bool,
    /// Whether it reads `item` or `item_index` (a `for_each` step's item).
    pub item: bool,
}

/// Checks that `code` is a program this host can run and says what it
/// reads: it parses, and every filter and variable it names exists and is
/// allowed. The error names the first problems and the column (1-based, in
/// characters) where each is.
///
/// jaq's parser and compiler recurse once per nesting level: a program of
/// [`MAX_PROGRAM_CHARS`] can nest deep enough to overflow a 2 MiB stack
/// (a tokio worker's), so the check runs on a thread of its own with
/// [`CHECK_STACK_BYTES`].
pub fn inspect(code: &str) -> Result<Reads, String> {
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("settle-expr-check".into())
            .stack_size(CHECK_STACK_BYTES)
            .spawn_scoped(scope, || with_filter(code, |_| reads(code)))
            .map_err(|e| format!("could not be checked: {e}"))?
            .join()
            .unwrap_or_else(|_| Err("could not be checked: the checker failed".into()))
    })
}

/// The stack a check runs on: ample for the deepest program allowed
/// (a test checks the worst nestings on it).
pub const CHECK_STACK_BYTES: usize = 16 * 1024 * 1024;

/// Runs `code` on `context` and returns its one output. Zero outputs, more
/// than one, or an error are each an `Err` saying so.
///
/// Only the evaluator component calls this (feature `evaluate`, which the
/// host never enables): see the module docs.
#[cfg(any(test, feature = "evaluate"))]
pub fn evaluate(code: &str, context: Val) -> Result<Val, String> {
    with_filter(code, |filter| {
        let ctx = Ctx::<data::JustLut<Val>>::new(&filter.lut, Vars::new([context.clone()]));
        let mut outputs = filter.id.run((ctx, context));
        let first = match outputs.next() {
            None => return Err(NO_VALUE.into()),
            Some(r) => r.map_err(failure)?,
        };
        match outputs.next() {
            None => Ok(first),
            Some(Err(e)) => Err(failure(e)),
            Some(Ok(_)) => Err(MANY_VALUES.into()),
        }
    })?
}

/// Runs each program on the context (JSON text) and returns, for each, its
/// one output as JSON text or why it has none: the evaluator component's
/// whole job.
///
/// Loading and compiling jq's standard definitions is most of the cost of
/// a program, so a batch is compiled as one program that runs each in its
/// own `try` and collects its outputs; should that not compile, each
/// program runs alone.
#[cfg(any(test, feature = "evaluate"))]
pub fn evaluate_batch(programs: &[String], context: &str) -> Vec<Result<String, String>> {
    let context = match jaq_json::read::parse_single(context.as_bytes()) {
        Ok(c) => c,
        Err(e) => return vec![Err(format!("the context is not JSON: {e}")); programs.len()],
    };
    if programs.len() > 1
        && let Some(answers) = evaluate_together(programs, context.clone())
    {
        return answers;
    }
    programs
        .iter()
        .map(|code| evaluate(code, context.clone()).map(|v| v.to_string()))
        .collect()
}

/// All programs as one: `[(try ([P1] | {ok: .}) catch {err: .}), …]`.
/// `None` when that does not compile or answers otherwise than expected.
#[cfg(any(test, feature = "evaluate"))]
fn evaluate_together(programs: &[String], context: Val) -> Option<Vec<Result<String, String>>> {
    let parts: Vec<String> = programs
        .iter()
        .map(|p| format!("(try ([({p}\n)] | {{ok: .}}) catch {{err: .}})"))
        .collect();
    let code = format!("[{}]", parts.join(",\n"));
    let answers = compile(&code, usize::MAX, |filter| {
        let ctx = Ctx::<data::JustLut<Val>>::new(&filter.lut, Vars::new([context.clone()]));
        let mut outputs = filter.id.run((ctx, context));
        match (outputs.next(), outputs.next()) {
            (Some(Ok(v)), None) => Some(v),
            _ => None,
        }
    })
    .ok()??;
    let Val::Arr(answers) = answers else {
        return None;
    };
    if answers.len() != programs.len() {
        return None;
    }
    answers
        .iter()
        .map(|answer| {
            let Val::Obj(fields) = answer else {
                return None;
            };
            if let Some(Val::Arr(values)) = fields.get(&Val::from("ok".to_string())) {
                return Some(match values.as_slice() {
                    [one] => Ok(one.to_string()),
                    [] => Err(NO_VALUE.to_string()),
                    _ => Err(MANY_VALUES.to_string()),
                });
            }
            let error = fields.get(&Val::from("err".to_string()))?;
            Some(Err(failed(error)))
        })
        .collect()
}

#[cfg(any(test, feature = "evaluate"))]
const NO_VALUE: &str = "gave no value (it ran `empty` or a `select` that failed)";
#[cfg(any(test, feature = "evaluate"))]
const MANY_VALUES: &str =
    "gave more than one value; collect them into a list with [ … ] or pick one with first(…)";

#[cfg(any(test, feature = "evaluate"))]
fn failure(e: jaq_core::Exn<'_, Val>) -> String {
    match e.get_err() {
        Ok(e) => failed(&e.into_val()),
        Err(_) => "stopped the evaluator".into(),
    }
}

/// "failed: " and the error: a string as its text, any other value as JSON.
#[cfg(any(test, feature = "evaluate"))]
fn failed(error: &Val) -> String {
    let text = match error {
        Val::TStr(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        other => other.to_string(),
    };
    format!("failed: {}", cut(&text, 300))
}

type Filter = jaq_core::Filter<data::JustLut<Val>>;

/// Parses and compiles `code`, then hands the compiled filter to `then`.
fn with_filter<T>(code: &str, then: impl FnOnce(&Filter) -> T) -> Result<T, String> {
    compile(code, MAX_PROGRAM_CHARS, then)
}

/// [`with_filter`] with a limit of `max_chars` on the program's length.
fn compile<T>(code: &str, max_chars: usize, then: impl FnOnce(&Filter) -> T) -> Result<T, String> {
    let chars = code.chars().count();
    if chars > max_chars {
        return Err(format!(
            "has {chars} characters; an expression may have at most {max_chars}"
        ));
    }
    // No module system: there is nothing to import, and the evaluator
    // could not read it.
    let first_word = code
        .trim_start()
        .split(|c: char| !c.is_alphanumeric())
        .next();
    if matches!(first_word, Some("import" | "include" | "module")) {
        return Err("is not valid jq here: modules (import, include) are not available".into());
    }
    let prelude = load::parse(PRELUDE, |p| p.defs()).unwrap_or_default();
    let defs = jaq_core::defs()
        .chain(jaq_std::defs())
        .chain(jaq_json::defs())
        .filter(|def| !unavailable(def.name))
        .chain(prelude);
    let funs = jaq_core::funs()
        .chain(jaq_std::funs())
        .chain(jaq_json::funs())
        .filter(|(name, _, _)| !unavailable(name));
    let arena = Arena::default();
    let modules = Loader::new(defs)
        .load(&arena, File { code, path: () })
        .map_err(|errors| {
            let problems: Vec<String> = errors
                .into_iter()
                .flat_map(|(_, e)| match e {
                    load::Error::Io(v) => v
                        .into_iter()
                        .map(|(_, msg)| format!("cannot import: {msg}"))
                        .collect::<Vec<_>>(),
                    load::Error::Lex(v) => v
                        .into_iter()
                        .map(|(expect, at)| {
                            format!("expected {} at {}", expect.as_str(), column(code, at))
                        })
                        .collect(),
                    load::Error::Parse(v) => v
                        .into_iter()
                        .map(|(expect, at)| {
                            if at.is_empty() {
                                format!("expected {} at the end", expect.as_str())
                            } else {
                                format!(
                                    "expected {} but found '{}' at {}",
                                    expect.as_str(),
                                    cut(at, 20),
                                    column(code, at)
                                )
                            }
                        })
                        .collect(),
                })
                .take(3)
                .collect();
            format!("is not valid jq: {}", problems.join("; "))
        })?;
    let filter = Compiler::default()
        .with_funs(funs)
        .with_global_vars([CONTEXT_VAR])
        .compile(modules)
        .map_err(|errors| {
            let problems: Vec<String> = errors
                .into_iter()
                .flat_map(|(_, v)| v)
                .take(3)
                .map(|(name, undefined)| {
                    let why = UNAVAILABLE
                        .iter()
                        .find(|(n, _)| *n == name)
                        .map(|(_, why)| format!(" (not available in Settle: {why})"))
                        .unwrap_or_default();
                    format!(
                        "unknown {} '{}' at {}{why}",
                        undefined.as_str(),
                        name,
                        column(code, name)
                    )
                })
                .collect();
            format!("is not valid jq: {}", problems.join("; "))
        })?;
    Ok(then(&filter))
}

/// "column N" of `part`, a slice of `whole` (or "the end" if it is not one).
fn column(whole: &str, part: &str) -> String {
    let (start, end) = (whole.as_ptr() as usize, part.as_ptr() as usize);
    if end < start || end > start + whole.len() {
        return "the end".into();
    }
    let offset = end - start;
    if offset >= whole.len() {
        return "the end".into();
    }
    match whole.get(..offset) {
        Some(before) => format!("column {}", before.chars().count() + 1),
        None => "the end".into(),
    }
}

/// At most `max` characters of `text`.
fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_string(),
        Some((at, _)) => format!("{}…", &text[..at]),
    }
}

/// What `code` reads from the context; `code` has parsed.
fn reads(code: &str) -> Reads {
    let mut reads = Reads::default();
    if let Some(term) = load::parse(code, |p| p.term()) {
        visit(&term, &mut reads);
    }
    reads.steps.sort();
    reads.steps.dedup();
    reads
}

use load::parse::Term;

/// Records `steps.NAME` paths; any other use of `steps` reads them all.
fn visit(term: &Term<&str>, reads: &mut Reads) {
    match term {
        Term::Path(head, path) => {
            if let Term::Call("steps", args) = head.as_ref()
                && args.is_empty()
            {
                match path.0.first() {
                    Some((jaq_core::path::Part::Index(Term::Str(None, parts)), _))
                        if parts.len() == 1 =>
                    {
                        if let load::lex::StrPart::Str(name) = &parts[0] {
                            reads.steps.push(name.to_string());
                        } else {
                            reads.all_steps = true;
                        }
                    }
                    _ => reads.all_steps = true,
                }
            } else {
                visit(head, reads);
            }
            for (part, _) in &path.0 {
                match part {
                    jaq_core::path::Part::Index(i) => visit(i, reads),
                    jaq_core::path::Part::Range(from, to) => {
                        from.iter().chain(to.iter()).for_each(|t| visit(t, reads))
                    }
                }
            }
        }
        Term::Call("steps", _) => reads.all_steps = true,
        Term::Call("item" | "item_index", args) if args.is_empty() => reads.item = true,
        Term::Call(_, args) => args.iter().for_each(|a| visit(a, reads)),
        Term::Id | Term::Recurse | Term::Num(_) | Term::Var(_) | Term::Break(_) => {}
        Term::Str(_, parts) => {
            for part in parts {
                if let load::lex::StrPart::Term(t) = part {
                    visit(t, reads);
                }
            }
        }
        Term::Arr(inner) => inner.iter().for_each(|t| visit(t, reads)),
        Term::Obj(fields) => {
            for (k, v) in fields {
                visit(k, reads);
                v.iter().for_each(|t| visit(t, reads));
            }
        }
        Term::Neg(t) | Term::Label(_, t) => visit(t, reads),
        Term::BinOp(l, _, r) => {
            visit(l, reads);
            visit(r, reads);
        }
        Term::Fold(_, xs, _, fs) => {
            visit(xs, reads);
            fs.iter().for_each(|t| visit(t, reads));
        }
        Term::TryCatch(t, c) => {
            visit(t, reads);
            c.iter().for_each(|t| visit(t, reads));
        }
        Term::IfThenElse(branches, otherwise) => {
            for (c, t) in branches {
                visit(c, reads);
                visit(t, reads);
            }
            otherwise.iter().for_each(|t| visit(t, reads));
        }
        Term::Def(defs, body) => {
            defs.iter().for_each(|d| visit(&d.body, reads));
            visit(body, reads);
        }
    }
}

#[cfg(test)]
mod tests;
