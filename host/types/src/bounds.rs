//! What the host accepts from clients and plugins, checked where a value
//! enters (submit, plugin return), so that whatever the store accepted it can
//! always read back.
//!
//! The limits are fixed, not configured: a store written under one setting
//! must stay readable under any other. JSON is read back with serde_json's
//! recursion limit of 128 levels; a value sits at most four levels deep
//! inside an event or a summary, so 64 leaves ample room.
//!
//! | what | limit |
//! | --- | --- |
//! | nesting depth of any JSON value (run input, plugin output) | [`MAX_JSON_DEPTH`] = 64 |
//! | run input, as JSON text | [`MAX_INPUT_BYTES`] = 1 MiB |
//! | plugin output | the plugin's `limits.max_output_kib` (default 1 MiB), and depth 64 |
//! | idempotency key | [`MAX_IDEMPOTENCY_KEY_BYTES`] = 512 bytes |
//! | drift detail, hold reason, failure message | [`MAX_DETAIL_BYTES`] = 4 KiB (cut, not refused) |
//! | restarts of one run | [`MAX_RESTARTS`] = 100 |

use serde_json::Value;

/// Deepest nesting of arrays and objects accepted in any JSON value.
pub const MAX_JSON_DEPTH: usize = 64;
/// Largest run input, as JSON text.
pub const MAX_INPUT_BYTES: usize = 1024 * 1024;
/// Longest idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 512;
/// Longest free text kept from a plugin or an error (drift details, reasons).
pub const MAX_DETAIL_BYTES: usize = 4096;
/// Most times one run is restarted: each restart re-runs steps and grows
/// the run's log, which must stay readable in one piece.
pub const MAX_RESTARTS: u32 = 100;

/// A value over one of the limits.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BoundError {
    /// Arrays and objects nested deeper than [`MAX_JSON_DEPTH`].
    #[error("nested {depth}+ levels deep; the limit is {MAX_JSON_DEPTH}")]
    TooDeep { depth: usize },
    /// Larger than the limit, as JSON text.
    #[error("{bytes} bytes as JSON; the limit is {limit} bytes")]
    TooLarge { bytes: usize, limit: usize },
}

/// The nesting depth of `value`, counted without recursion (so a deep value
/// cannot overflow the stack here), stopping once past `MAX_JSON_DEPTH`.
pub fn json_depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack: Vec<(&Value, usize)> = vec![(value, 0)];
    while let Some((v, depth)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match v {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(map) => Box::new(map.values()),
            _ => continue,
        };
        let depth = depth + 1;
        deepest = deepest.max(depth);
        if deepest > MAX_JSON_DEPTH {
            return deepest;
        }
        stack.extend(children.map(|c| (c, depth)));
    }
    deepest
}

/// The bytes of `text` that stand outside double-quoted strings (with
/// backslash escapes), with their positions: what a bracket counter over
/// JSON or jq text reads. The quotes themselves are left out.
pub fn outside_strings(text: &str) -> impl Iterator<Item = (usize, u8)> + '_ {
    let (mut in_string, mut escaped) = (false, false);
    text.bytes().enumerate().filter(move |&(_, b)| {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            return false;
        }
        in_string = b == b'"';
        !in_string
    })
}

/// Checks the nesting depth against [`MAX_JSON_DEPTH`].
pub fn check_depth(value: &Value) -> Result<(), BoundError> {
    let depth = json_depth(value);
    if depth > MAX_JSON_DEPTH {
        return Err(BoundError::TooDeep { depth });
    }
    Ok(())
}

/// Checks depth, then size as JSON text, against `max_bytes`.
pub fn check_json(value: &Value, max_bytes: usize) -> Result<(), BoundError> {
    check_depth(value)?;
    let bytes = json_len(value);
    if bytes > max_bytes {
        return Err(BoundError::TooLarge {
            bytes,
            limit: max_bytes,
        });
    }
    Ok(())
}

/// Length of `value` as compact JSON text, without building the text.
pub fn json_len(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing a `Value` to a counter cannot fail.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// Cuts free text to [`MAX_DETAIL_BYTES`] on a character boundary, marking the cut.
pub fn cut_detail(text: &str) -> String {
    cut(text, MAX_DETAIL_BYTES)
}

/// Cuts `text` to at most `max` bytes on a character boundary, marking the cut.
pub fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nested(levels: usize) -> Value {
        let mut v = json!(1);
        for _ in 0..levels {
            v = json!([v]);
        }
        v
    }

    #[test]
    fn depth_is_counted_and_bounded() {
        assert_eq!(json_depth(&json!(1)), 0);
        assert_eq!(json_depth(&json!({"a": [1, {"b": 2}]})), 3);
        assert!(check_json(&nested(MAX_JSON_DEPTH), 1 << 20).is_ok());
        assert_eq!(
            check_json(&nested(MAX_JSON_DEPTH + 1), 1 << 20),
            Err(BoundError::TooDeep {
                depth: MAX_JSON_DEPTH + 1
            })
        );
    }

    #[test]
    fn size_is_counted_as_json_text() {
        let v = json!({"a": "xyz"});
        assert_eq!(json_len(&v), v.to_string().len());
        assert!(matches!(
            check_json(&v, 5),
            Err(BoundError::TooLarge {
                bytes: 11,
                limit: 5
            })
        ));
    }

    #[test]
    fn cuts_on_char_boundaries() {
        assert_eq!(cut("héllo", 2), "h…");
        assert_eq!(cut("hi", 2), "hi");
    }
}
