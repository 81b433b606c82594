//! Flow files are bounded: size, nesting, steps, names, durations and
//! templates. Hostile files (100 000 brackets deep, block nesting a few
//! thousand levels deep, a file of a gigabyte) get an error that names the
//! file, the place and the limit, never a stack overflow. The messages of
//! ordinary-sized mistakes are in `tests/ui/`.

use settle::flow::limits::{MAX_FLOW_BYTES, MAX_NESTING, MAX_STEPS};
use settle::flow::{Flow, FlowErrors, Location};

/// The single error a text gives.
fn error(text: &str) -> settle::flow::FlowError {
    let FlowErrors(errors) = Flow::parse(text, "hostile.yaml").expect_err("must be refused");
    assert_eq!(errors.len(), 1, "{errors:?}");
    errors.into_iter().next().unwrap_or_else(|| unreachable!())
}

fn assert_too_deep(text: &str, at: Location) {
    let e = error(text);
    assert_eq!(
        e.to_string(),
        format!(
            "flow hostile.yaml:{}:{}: nesting is deeper than {MAX_NESTING} levels (the limit for a flow file)",
            at.line, at.column
        )
    );
}

#[test]
fn deep_flow_sequences_are_an_error_not_a_crash() {
    let n = 100_000;
    let head = "name: x\nsteps: ";
    // `name`'s mapping is level 1: the 32nd bracket is level 33.
    let at = Location {
        line: 2,
        column: "steps: ".len() + MAX_NESTING,
    };
    assert_too_deep(&format!("{head}{}{}", "[".repeat(n), "]".repeat(n)), at);
    assert_too_deep(&format!("{head}{}", "[".repeat(n)), at);
}

#[test]
fn deep_flow_mappings_are_an_error_not_a_crash() {
    let n = 50_000;
    let text = format!("name: x\nsteps: {}1{}", "{a: ".repeat(n), "}".repeat(n));
    assert!(text.len() < MAX_FLOW_BYTES);
    assert_too_deep(
        &text,
        Location {
            line: 2,
            column: "steps: ".len() + 1 + (MAX_NESTING - 1) * "{a: ".len(),
        },
    );
}

/// Before the limits, this overflowed the stack and aborted the process.
#[test]
fn deep_block_nesting_is_an_error_not_a_crash() {
    let mut text = String::from("name: x\nsteps:\n");
    for n in 1..=700 {
        text.push_str(&" ".repeat(n));
        text.push_str("a:\n");
    }
    assert!(text.len() < MAX_FLOW_BYTES);
    // Line 2 (`steps`) is level 1; line 2 + 32 is level 33.
    assert_too_deep(
        &text,
        Location {
            line: 2 + MAX_NESTING,
            column: MAX_NESTING + 1,
        },
    );
}

/// Before the limits, this overflowed the stack and aborted the process.
#[test]
fn deep_compact_lists_are_an_error_not_a_crash() {
    let text = format!("name: x\nsteps:\n{}x\n", "- ".repeat(100_000));
    // `steps` is level 1 and the first `- ` level 2 (a list under a key may
    // stand in the key's column); the `- ` at column 2k + 1 is level k + 2.
    assert_too_deep(
        &text,
        Location {
            line: 3,
            column: 2 * (MAX_NESTING - 1) + 1,
        },
    );
}

#[test]
fn long_files_are_refused_before_parsing() {
    let text = format!("name: x\n# {}\n", "x".repeat(10 * 1024 * 1024));
    let e = error(&text);
    assert_eq!(
        e.to_string(),
        format!(
            "flow hostile.yaml:2:{}: the file is {} bytes; a flow file may have at most {MAX_FLOW_BYTES} bytes (256 KiB)",
            MAX_FLOW_BYTES - "name: x\n".len() + 1,
            text.len()
        )
    );
}

/// `Flow::load` reads no more than the limit: a sparse file of a gigabyte
/// is refused at once.
#[test]
fn load_reads_at_most_the_limit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("huge.yaml");
    let file = std::fs::File::create(&path).expect("create");
    file.set_len(1 << 30).expect("set_len");
    let started = std::time::Instant::now();
    let FlowErrors(errors) = Flow::load(&path).expect_err("must be refused");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0]
            .message
            .contains(&format!("larger than {MAX_FLOW_BYTES} bytes")),
        "{}",
        errors[0]
    );
    assert_eq!(
        errors[0].at,
        Location {
            line: 1,
            column: MAX_FLOW_BYTES + 1
        }
    );
}

#[test]
fn too_many_steps_are_named_at_the_first_one_too_many() {
    let mut text = String::from("name: x\nsteps:\n");
    for n in 0..MAX_STEPS + 10 {
        text.push_str(&format!("  - {{ name: s{n}, plugin: noop }}\n"));
    }
    let e = error(&text);
    assert_eq!(
        e.to_string(),
        format!(
            "flow hostile.yaml:{}:5: the flow has {} steps; a flow may have at most {MAX_STEPS}",
            3 + MAX_STEPS,
            MAX_STEPS + 10
        )
    );
    // The limit itself is allowed.
    let mut text = String::from("name: x\nsteps:\n");
    for n in 0..MAX_STEPS {
        text.push_str(&format!("  - {{ name: s{n}, plugin: noop }}\n"));
    }
    let flow = Flow::parse(&text, "ok.yaml").expect("256 steps are allowed");
    assert_eq!(flow.steps.len(), MAX_STEPS);
}

/// A name of 100 KiB is refused, and the message quotes only its start.
#[test]
fn huge_names_are_refused_and_not_echoed() {
    let name = "n".repeat(100 * 1024);
    for text in [
        format!("name: {name}\nsteps: [{{name: a, plugin: noop}}]\n"),
        format!("name: x\nversion: {name}\nsteps: [{{name: a, plugin: noop}}]\n"),
        format!("name: x\nsteps: [{{name: {name}, plugin: noop}}]\n"),
        format!("name: x\nsteps: [{{name: a, plugin: {name}}}]\n"),
        format!("name: x\n{name}: 1\nsteps: [{{name: a, plugin: noop}}]\n"),
        format!("name: x\nsteps: [{{name: a, plugin: noop, timeout: {name}}}]\n"),
        format!("name: x\nsteps: [{{name: a, plugin: noop, compensate: {name}}}]\n"),
        format!("name: x\nsteps: [{{name: a, plugin: noop, retry: {{jitter: {name}}}}}]\n"),
        format!(
            "name: x\nsteps: [{{name: a, plugin: noop, retry: {{non_retryable: [{name}]}}}}]\n"
        ),
        format!("name: x\nsteps: [{{name: a, plugin: noop, input: {{a: \"${{{{ {name}\"}}}}]\n"),
        format!(
            "name: x\nsteps: [{{name: a, plugin: noop, input: {{a: \"${{{{ input.{name} }}}}\"}}}}]\n"
        ),
    ] {
        let e = error(&text).to_string();
        assert!(
            e.len() < 400,
            "message of {} bytes: {}...",
            e.len(),
            &e[..200]
        );
    }
}

/// `Instant::now() + timeout` panics on overflow; the parser refuses such
/// durations (the largest humantime accepts is about 584 billion years).
#[test]
fn durations_that_would_overflow_are_refused() {
    let huge = "500000000000years";
    for key in [
        "timeout",
        "retry: { initial_interval",
        "retry: { max_interval",
    ] {
        let close = if key.starts_with("retry") { " }" } else { "" };
        let text =
            format!("name: x\nsteps:\n  - {{ name: a, plugin: noop, {key}: {huge}{close} }}\n");
        let e = error(&text).to_string();
        assert!(e.contains("is longer than"), "{e}");
    }
    let text = format!("name: x\nidempotency_window: {huge}\nsteps: [{{name: a, plugin: noop}}]\n");
    assert!(error(&text).to_string().contains("365 days"));
}

/// `reconcile:` windows are bounded and located like every other duration.
#[test]
fn reconcile_windows_are_checked_and_located() {
    let flow = |reconcile: &str| {
        format!(
            "name: x\nreconcile: {reconcile}\non_drift: compensate\nsteps: [{{name: a, plugin: noop}}]\n"
        )
    };
    let ok = Flow::parse(&flow("{ after: 2s, every: 1h, for: 7d }"), "ok.yaml").unwrap();
    let rechecks = ok.rechecks.expect("rechecks");
    assert_eq!(rechecks.after, std::time::Duration::from_secs(2));
    assert_eq!(rechecks.every, std::time::Duration::from_secs(3600));
    assert_eq!(
        rechecks.window,
        std::time::Duration::from_secs(7 * 24 * 3600)
    );
    assert_eq!(ok.on_drift, settle::flow::OnDrift::Compensate);
    let defaults = Flow::parse(&flow("{ every: 1h }"), "ok.yaml").unwrap();
    let rechecks = defaults.rechecks.unwrap();
    assert_eq!(rechecks.after, rechecks.every, "after defaults to every");
    assert_eq!(
        rechecks.window,
        std::time::Duration::from_secs(7 * 24 * 3600)
    );

    let e = error(&flow("{ every: 10ms }"));
    assert!(e.to_string().contains("at least 1s"), "{e}");
    assert_eq!(
        e.at,
        Location {
            line: 2,
            column: 21
        },
        "at the value"
    );
    let e = error(&flow("{ every: 1h, for: 500000000000years }"));
    assert!(e.to_string().contains("365 days"), "{e}");
    let e = error(&flow("{ every: 1h, forr: 7d }"));
    assert!(e.to_string().contains("forr"), "{e}");
    let e = error(&flow("{ for: 7d }"));
    assert!(e.to_string().contains("needs `every`"), "{e}");
    // `every` taken from `after` is held to the same bounds, and named.
    let e = error(&flow("{ after: 500ms }"));
    assert!(e.to_string().contains("`reconcile: after`"), "{e}");
    let e = error(&flow("{ after: 100d, for: 200d }"));
    assert!(e.to_string().contains("at most 30 days"), "{e}");
    let e = error(&flow("{ after: 8d, every: 1h, for: 7d }"));
    assert!(e.to_string().contains("longer than `for`"), "{e}");
    let e = error(&flow("{ every: 1s, for: 365d }"));
    assert!(e.to_string().contains("at most 1000"), "{e}");
    let e = error("name: x\non_drift: shrug\nsteps: [{name: a, plugin: noop}]\n");
    assert!(
        e.to_string()
            .contains("`on_drift` must be `alert`, `compensate` or `reapply`"),
        "{e}"
    );
}

/// `objective:` is checked and located like the rest of a flow.
#[test]
fn objectives_are_checked() {
    let flow = |objective: &str| {
        format!("name: x\nobjective: {objective}\nsteps: [{{name: a, plugin: noop}}]\n")
    };
    let ok = Flow::parse(&flow("{ settled_within: 30s, target: 99.5% }"), "ok.yaml").unwrap();
    let objective = ok.objective.unwrap();
    assert!((objective.target - 0.995).abs() < 1e-12);
    assert_eq!(
        objective.window,
        std::time::Duration::from_secs(7 * 24 * 3600)
    );
    let ok = Flow::parse(
        &flow("{ settled_within: 1m, target: 0.9, window: 1d }"),
        "ok.yaml",
    )
    .unwrap();
    assert!((ok.objective.unwrap().target - 0.9).abs() < 1e-12);
    for (bad, says) in [
        (
            "{ settled_within: 30s, target: 100% }",
            "between 0 and 100 %",
        ),
        (
            "{ settled_within: 30s, target: lots }",
            "between 0 and 100 %",
        ),
        ("{ settled_within: 30s }", "needs `target`"),
        ("{ target: 99% }", "needs `settled_within`"),
        (
            "{ settled_within: 2d, target: 99%, window: 1d }",
            "no longer than `window`",
        ),
        ("{ settled_within: 0s, target: 99% }", "must be more than 0"),
        (
            "{ settled_within: 30s, target: 99%, budget: 1 }",
            "unknown key 'budget'",
        ),
    ] {
        let e = error(&flow(bad)).to_string();
        assert!(e.contains(says), "{bad}: {e}");
    }
}

/// YAML takes a lone CR as a line break: a file nested with CR-only lines
/// must be refused, not overflow the stack (found by a review).
#[test]
fn carriage_return_line_breaks_are_refused_not_a_stack_overflow() {
    let text = format!("#x\r{}a", "- ".repeat(100_000));
    let err = settle::flow::Flow::parse(&text, "cr.yaml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("carriage return without a line feed"), "{err}");
    // CRLF files are fine.
    let crlf = "name: ok\r\nsteps:\r\n  - { name: a, plugin: noop }\r\n";
    assert!(settle::flow::Flow::parse(crlf, "crlf.yaml").is_ok());
}
