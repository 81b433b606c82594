//! What a plugin may say about itself in `describe`, checked before the host
//! believes any of it.
//!
//! A name and version end up in every event's source (`name@version#digest`),
//! a schema is parsed and compiled at load: an 8 MiB name, a 1 MiB version or a
//! 16 MiB schema would cost every run and every load. So each field is
//! bounded, and schemas are measured (size, nesting depth) before they are
//! parsed.

use crate::bindings::settle::plugin::types as wit;
use crate::budget::{cut, escape};

/// Longest plugin name, characters (`[a-z0-9_-]`).
pub const MAX_NAME_CHARS: usize = 64;
/// Longest version, characters (`[0-9A-Za-z.+-]`, starting with a digit).
pub const MAX_VERSION_CHARS: usize = 64;
/// Longest summary, bytes.
pub const MAX_SUMMARY_BYTES: usize = 1024;
/// Largest JSON Schema text, bytes.
pub const MAX_SCHEMA_BYTES: usize = 64 * 1024;
/// Deepest nesting of a JSON Schema (objects and arrays).
pub const MAX_SCHEMA_DEPTH: usize = 32;

pub use settle_types::executor::{Manifest, SuggestedRetry};

/// Quotes a value a plugin gave, short and on one line, for a message.
fn quote(text: &str) -> String {
    escape(&cut(text, 40))
}

/// Checks every field of `m` against its bound, then parses the schemas.
/// The error is one line naming the field and the bound.
pub fn check(m: wit::Manifest) -> Result<Manifest, String> {
    let name_ok = !m.name.is_empty()
        && m.name.len() <= MAX_NAME_CHARS
        && m.name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !name_ok {
        return Err(format!(
            "plugin name '{}' ({} bytes) must be 1 to {MAX_NAME_CHARS} characters of a-z, 0-9, '-' or '_'",
            quote(&m.name),
            m.name.len()
        ));
    }
    let version_ok = m.version.len() <= MAX_VERSION_CHARS
        && m.version.starts_with(|c: char| c.is_ascii_digit())
        && m.version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '-'));
    if !version_ok {
        return Err(format!(
            "version '{}' ({} bytes) of plugin '{}' must be 1 to {MAX_VERSION_CHARS} characters of 0-9, a-z, A-Z, '.', '+' or '-', starting with a digit (like 1.2.0)",
            quote(&m.version),
            m.version.len(),
            m.name
        ));
    }
    if m.summary.len() > MAX_SUMMARY_BYTES || m.summary.chars().any(char::is_control) {
        return Err(format!(
            "summary of plugin '{}' ({} bytes) must be at most {MAX_SUMMARY_BYTES} bytes of text without control characters",
            m.name,
            m.summary.len()
        ));
    }
    let input_schema = schema(&m.name, "input", &m.input_schema)?;
    let output_schema = schema(&m.name, "output", &m.output_schema)?;
    Ok(Manifest {
        name: m.name,
        version: m.version,
        summary: m.summary,
        input_schema,
        output_schema,
        supports_compensate: m.supports_compensate,
        supports_reconcile: m.supports_reconcile,
        retry: m.retry.map(|r| SuggestedRetry {
            max_attempts: r.max_attempts,
            initial_interval_ms: r.initial_interval_ms,
            backoff_coefficient: r.backoff_coefficient,
            max_interval_ms: r.max_interval_ms,
        }),
    })
}

/// Parses a schema once its size and depth are known to be within bounds.
fn schema(plugin: &str, what: &str, text: &str) -> Result<serde_json::Value, String> {
    if text.len() > MAX_SCHEMA_BYTES {
        return Err(format!(
            "{what} schema of plugin '{plugin}' is {} KiB; at most {} KiB are allowed",
            text.len().div_ceil(1024),
            MAX_SCHEMA_BYTES / 1024
        ));
    }
    let depth = json_depth(text);
    if depth > MAX_SCHEMA_DEPTH {
        return Err(format!(
            "{what} schema of plugin '{plugin}' nests {depth} levels deep; at most {MAX_SCHEMA_DEPTH} are allowed"
        ));
    }
    serde_json::from_str(text)
        .map_err(|e| format!("{what} schema of plugin '{plugin}' is not JSON: {e}"))
}

/// The deepest nesting of objects and arrays in JSON text, counted without
/// parsing it (brackets inside strings are skipped).
pub fn json_depth(text: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    for (_, b) in settle_types::bounds::outside_strings(text) {
        match b {
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_skips_brackets_in_strings() {
        assert_eq!(json_depth(r#"{"a": "[[[{{{", "b": [1, {"c": []}]}"#), 4);
        assert_eq!(json_depth("1"), 0);
    }
}
