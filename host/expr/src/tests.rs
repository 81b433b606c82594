use super::*;

fn context() -> Val {
    jaq_json::read::parse_single(
        br#"{"input":{"amount":12,"items":[{"p":2},{"p":3}],"name":"ada"},
            "steps":{"reserve":{"output":{"id":"r1"}}},"run":{"id":"run-1"}}"#,
    )
    .unwrap()
}

fn eval(code: &str) -> Result<String, String> {
    evaluate(code, context()).map(|v| v.to_string())
}

#[test]
fn programs_read_the_run_as_jq_would() {
    assert_eq!(eval("input.amount * 100").unwrap(), "1200");
    assert_eq!(eval("steps.reserve.output.id").unwrap(), "\"r1\"");
    assert_eq!(eval("[input.items[].p] | add").unwrap(), "5");
    assert_eq!(
        eval(r#"if input.amount > 10 then "big" else "small" end"#).unwrap(),
        "\"big\""
    );
    assert_eq!(
        eval(r#""\(input.name | ascii_upcase)-\(run.id)""#).unwrap(),
        "\"ADA-run-1\""
    );
    assert_eq!(eval("input.missing // \"default\"").unwrap(), "\"default\"");
    // The names mean the run inside nested filters too.
    assert_eq!(
        eval("input.items | map(select(.p <= input.amount - 10)) | length").unwrap(),
        "1"
    );
    assert_eq!(
        eval("[input.items[] | .p + (steps.reserve.output.id | length)]").unwrap(),
        "[4,5]"
    );
}

#[test]
fn zero_or_many_outputs_and_errors_are_named() {
    assert!(eval("empty").unwrap_err().contains("no value"));
    assert!(
        eval("input.items[]")
            .unwrap_err()
            .contains("more than one value")
    );
    assert!(eval("input.name + 1").unwrap_err().starts_with("failed:"));
}

#[test]
fn bad_programs_say_what_and_where() {
    let e = inspect("input.amount +").unwrap_err();
    assert!(
        e.contains("is not valid jq") && e.contains("the end"),
        "{e}"
    );
    let e = inspect("input | nosuchfilter(1)").unwrap_err();
    assert!(
        e.contains("unknown filter 'nosuchfilter' at column 9"),
        "{e}"
    );
    let e = inspect("now").unwrap_err();
    assert!(e.contains("reads the clock"), "{e}");
    let e = inspect("env.HOME").unwrap_err();
    assert!(e.contains("environment"), "{e}");
    let e = inspect("$ENV").unwrap_err();
    assert!(e.contains("unknown variable '$ENV'"), "{e}");
    let e = inspect("import \"x\" as $d; $d").unwrap_err();
    assert!(e.contains("modules"), "{e}");
    let e = inspect("(1").unwrap_err();
    assert!(e.contains("is not valid jq"), "{e}");
    let e = inspect(&"1+".repeat(600)).unwrap_err();
    assert!(e.contains("at most 1024"), "{e}");
}

#[test]
fn inspect_finds_the_steps_a_program_uses() {
    let reads = |code: &str| inspect(code).unwrap();
    let r = reads(r#"steps.a.output.x + (steps["b"].output | length) + ([1] | map(steps.c))[0]"#);
    assert_eq!(r.steps, vec!["a", "b", "c"]);
    assert!(!r.all_steps);
    assert!(reads("steps | keys").all_steps);
    assert!(reads("input.a").steps.is_empty());
}

/// Parsing and compiling recurse per nesting level; at the longest program
/// allowed, no nesting may overflow the checker's stack, even when the
/// caller's is 2 MiB (a tokio worker's).
#[test]
fn deepest_programs_check_on_a_small_stack() {
    let n = MAX_PROGRAM_CHARS / 2 - 1;
    let programs = vec![
        format!("{}1{}", "(".repeat(n), ")".repeat(n)),
        format!("{}1{}", "[".repeat(n), "]".repeat(n)),
        format!("{}1", "-".repeat(MAX_PROGRAM_CHARS - 1)),
        "if ".repeat(MAX_PROGRAM_CHARS / 3),
        format!("{}1", "{a:".repeat(MAX_PROGRAM_CHARS / 3 - 1)),
        "\"\\(".repeat(MAX_PROGRAM_CHARS / 3),
        format!("{}1", "def f: ".repeat(MAX_PROGRAM_CHARS / 7 - 1)),
        format!("{}.", "reduce . as $x (".repeat(MAX_PROGRAM_CHARS / 17)),
        ".a".repeat(MAX_PROGRAM_CHARS / 2),
        "1|".repeat(MAX_PROGRAM_CHARS / 2 - 1) + "1",
    ];
    std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(move || {
            for p in &programs {
                let _ = inspect(p);
            }
        })
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn a_batch_answers_like_each_program_alone() {
    let programs: Vec<String> = [
        "input.amount * 100",
        "input.items[]",
        "empty",
        "error(\"no stock\")",
        "input.name + 1",
        "def f: .input.name; f | ascii_upcase",
        "# a comment\ninput.amount",
    ]
    .map(String::from)
    .to_vec();
    // The batch runs as one program (no fallback to one at a time).
    assert!(evaluate_together(&programs, context()).is_some());
    let context = context().to_string();
    let together = evaluate_batch(&programs, &context);
    let alone: Vec<_> = programs
        .iter()
        .map(|p| evaluate_batch(std::slice::from_ref(p), &context))
        .map(|mut v| v.remove(0))
        .collect();
    assert_eq!(together, alone);
    assert_eq!(together[0], Ok("1200".to_string()));
    assert_eq!(together[5], Ok("\"ADA\"".to_string()));
    assert_eq!(together[6], Ok("12".to_string()));
    assert!(together[3].as_ref().unwrap_err().contains("no stock"));
}
