//! The evaluator component. The host calls `evaluate` in a fresh sandboxed
//! instance, under memory and time limits, so that a program that loops or
//! grows without bound fails its own step and nothing else.

wit_bindgen::generate!({
    path: "../wit",
    world: "evaluator",
});

struct Evaluator;

impl Guest for Evaluator {
    fn evaluate(programs: Vec<String>, context: String) -> Vec<Result<String, String>> {
        settle_expr::evaluate_batch(&programs, &context)
    }
}

export!(Evaluator);
