//! `settle run --inputs FILE`: one run request per line, either a JSON
//! object that is the run's input, or an envelope
//! `{"input": ..., "idempotency_key": "..."}`.
//!
//! Pure functions of the text, kept apart from the command so they can be
//! tested and fuzzed on their own (`tests/all/fuzz.rs`).

use serde_json::Value;

/// One run to start.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub input: Value,
    pub key: Option<String>,
}

/// What is wrong with one line.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    /// The line does not parse as JSON.
    #[error("not JSON: {0}")]
    NotJson(#[from] serde_json::Error),
    /// The line is JSON, but an array, a string, a number...
    #[error("a line must be a JSON object")]
    NotAnObject,
    /// An envelope whose `idempotency_key` is neither a string nor null.
    #[error("idempotency_key must be a string")]
    KeyNotAString,
}

/// Parses one line; `Ok(None)` for a blank one.
///
/// An object whose keys are `input` and, optionally, `idempotency_key` is
/// an envelope; any other object is the input itself.
pub fn parse_line(line: &str) -> Result<Option<Request>, LineError> {
    if line.trim().is_empty() {
        return Ok(None);
    }
    let Value::Object(mut map) = serde_json::from_str::<Value>(line)? else {
        return Err(LineError::NotAnObject);
    };
    let envelope =
        map.contains_key("input") && map.keys().all(|k| k == "input" || k == "idempotency_key");
    if !envelope {
        return Ok(Some(Request {
            input: Value::Object(map),
            key: None,
        }));
    }
    let key = match map.remove("idempotency_key") {
        None | Some(Value::Null) => None,
        Some(Value::String(k)) => Some(k),
        Some(_) => return Err(LineError::KeyNotAString),
    };
    let input = map.remove("input").unwrap_or(Value::Null);
    Ok(Some(Request { input, key }))
}

/// Parses every line of `text`. Either every line is good, or the answer is
/// every problem, each as `FILE:LINE: problem`.
pub fn parse_lines(text: &str, file: &str) -> Result<Vec<Request>, Vec<String>> {
    let mut requests = Vec::new();
    let mut problems = Vec::new();
    for (n, line) in text.lines().enumerate() {
        match parse_line(line) {
            Ok(Some(request)) => requests.push(request),
            Ok(None) => {}
            Err(e) => problems.push(format!("{file}:{}: {e}", n + 1)),
        }
    }
    if problems.is_empty() {
        Ok(requests)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn objects_envelopes_and_blank_lines() {
        let text = "{\"a\":1}\n\n  \n{\"input\":[1],\"idempotency_key\":\"k\"}\n{\"input\":2,\"idempotency_key\":null}\n{\"input\":3,\"other\":4}\n";
        let requests = parse_lines(text, "in.jsonl").unwrap();
        assert_eq!(
            requests,
            vec![
                Request {
                    input: json!({"a": 1}),
                    key: None
                },
                Request {
                    input: json!([1]),
                    key: Some("k".into())
                },
                Request {
                    input: json!(2),
                    key: None
                },
                Request {
                    input: json!({"input": 3, "other": 4}),
                    key: None
                },
            ]
        );
    }

    #[test]
    fn every_bad_line_is_named() {
        let text = "[1]\n{\"input\":1,\"idempotency_key\":5}\n{oops\n{\"ok\":true}\n";
        let problems = parse_lines(text, "in.jsonl").unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert_eq!(problems[0], "in.jsonl:1: a line must be a JSON object");
        assert_eq!(problems[1], "in.jsonl:2: idempotency_key must be a string");
        assert!(
            problems[2].starts_with("in.jsonl:3: not JSON: "),
            "{}",
            problems[2]
        );
    }
}
