//! What a flow file may hold, and the pre-scan that enforces the size and
//! nesting limits before the YAML parser sees the text.
//!
//! | limit | value | why |
//! | --- | --- | --- |
//! | file size | [`MAX_FLOW_BYTES`] (256 KiB) | the text is parsed into a tree and kept with every run accepted under it |
//! | nesting | [`MAX_NESTING`] (32 levels of indentation and brackets) | the YAML tree, its JSON form and the step templates are walked recursively: a file 100 000 brackets deep would overflow the stack |
//! | steps | [`MAX_STEPS`] | every step is scheduled, called and possibly compensated; summaries hold one slot per step |
//! | `${{ … }}` expressions | [`MAX_EXPRESSIONS`] | each is parsed and compiled (jq) when the flow is read |
//! | names | [`MAX_NAME_CHARS`] characters | flow, step and plugin names and the version are copied into events, keys and messages |
//! | `timeout` | [`MAX_TIMEOUT`] (1 day) | the engine computes `now + timeout`, which must not overflow |
//! | `initial_interval`, `max_interval` | [`MAX_RETRY_INTERVAL`] (7 days) | retry delays are computed in floating point and added to `now` |
//! | `idempotency_window` | [`MAX_IDEMPOTENCY_WINDOW`] (365 days) | stored as milliseconds and added to the acceptance time |
//! | `reconcile: every` | [`MIN_RECHECK_EVERY`] (1 s) to [`MAX_RECHECK_EVERY`] (30 days) | each check calls every reconciling step of the run: more often than once a second per run is load, not assurance |
//! | `reconcile: after`, `for` | [`MAX_RECHECK_WINDOW`] (365 days), `after` ≤ `for` | added to the settle time |
//! | `reconcile: for` / `every` | [`MAX_RECHECKS`] (1,000 checks) | each check appends two events to the run's log |
//!
//! The pre-scan is one linear pass over the text. It follows YAML's rules
//! for quotes, comments, block scalars (`|`, `>`), anchors and tags closely
//! enough that brackets inside a string are not counted; where it is unsure
//! it counts a level too many. It is not a YAML parser, so the parsed tree
//! is measured again (`tree_depth`, without recursion) and a tree that is
//! too deep anyway is taken apart iteratively (`dismantle`): dropping it
//! the ordinary way would recurse once per level. `tests/all/fuzz.rs`
//! holds the pre-scan to the parser on YAML written in every style.

use crate::Location;
use marked_yaml::Node;
use std::time::Duration;

/// The largest flow file, in bytes.
pub const MAX_FLOW_BYTES: usize = 256 * 1024;
/// The deepest nesting of mappings and lists in a flow file.
pub const MAX_NESTING: usize = 32;
/// The most steps a flow may have.
pub const MAX_STEPS: usize = 256;
/// The most `${{ … }}` expressions in one flow file: each is parsed and
/// compiled when the flow is read (about half a millisecond for a jq
/// program), so this bounds what reading a flow costs.
pub const MAX_EXPRESSIONS: usize = 512;
/// The longest flow name, step name, plugin name or version.
pub const MAX_NAME_CHARS: usize = 64;
/// The longest per-attempt `timeout`.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// The longest `initial_interval` or `max_interval` between retries.
pub const MAX_RETRY_INTERVAL: Duration = Duration::from_secs(7 * 24 * 3600);
/// The longest `wait:` of a step.
pub const MAX_WAIT: Duration = Duration::from_secs(365 * 24 * 3600);
/// The longest `idempotency_window`.
pub const MAX_IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(365 * 24 * 3600);

/// The shortest `reconcile: every`.
pub const MIN_RECHECK_EVERY: Duration = Duration::from_secs(1);
/// The longest `reconcile: every`.
pub const MAX_RECHECK_EVERY: Duration = Duration::from_secs(30 * 24 * 3600);
/// Most checks of one run a `reconcile:` window may imply (`for` /
/// `every`): each appends events to the run's log.
pub const MAX_RECHECKS: u32 = 1_000;
/// The longest `reconcile: after` or `for`.
pub const MAX_RECHECK_WINDOW: Duration = Duration::from_secs(365 * 24 * 3600);

/// A limit the text breaks, and where.
#[derive(Debug, PartialEq, Eq)]
pub struct Exceeded {
    pub at: Location,
    pub message: String,
}

/// Checks size and nesting without parsing the YAML ([`Flow::parse`]
/// does this first; it is public so the fuzz tests can hold it to the
/// parser).
///
/// [`Flow::parse`]: crate::Flow::parse
pub fn check_text(text: &str) -> Result<(), Exceeded> {
    if text.len() > MAX_FLOW_BYTES {
        return Err(Exceeded {
            at: location_of_byte(text, MAX_FLOW_BYTES),
            message: format!(
                "the file is {} bytes; a flow file may have at most {MAX_FLOW_BYTES} bytes (256 KiB)",
                text.len()
            ),
        });
    }
    // YAML reads a lone CR as a line break; the scanner counts lines by LF.
    // Rather than disagree with the parser about nesting, refuse it.
    if let Some(i) = text
        .match_indices('\r')
        .map(|(i, _)| i)
        .find(|&i| text.as_bytes().get(i + 1) != Some(&b'\n'))
    {
        return Err(Exceeded {
            at: location_of_byte(text, i),
            message: "a carriage return without a line feed (old Mac line endings); \
                      save the file with LF or CRLF line endings"
                .into(),
        });
    }
    if let Some((i, _)) = text.match_indices("${{").nth(MAX_EXPRESSIONS) {
        return Err(Exceeded {
            at: location_of_byte(text, i),
            message: format!(
                "more than {MAX_EXPRESSIONS} '${{{{ … }}}}' expressions in one flow file"
            ),
        });
    }
    Scanner::default().scan(text)
}

/// The 1-based line and column (in characters) of byte `offset`, or of the
/// character that contains it.
pub(super) fn location_of_byte(text: &str, offset: usize) -> Location {
    let mut at = Location { line: 1, column: 1 };
    for (i, c) in text.char_indices() {
        if i + c.len_utf8() > offset {
            break;
        }
        if c == '\n' {
            at.line += 1;
            at.column = 1;
        } else {
            at.column += 1;
        }
    }
    at
}

/// Where the parsed tree first goes deeper than [`MAX_NESTING`]
/// collections, if it does. Walks with its own stack, not recursion.
pub(super) fn tree_depth(root: &Node) -> Option<Location> {
    let mut work = vec![(root, 1usize)];
    while let Some((node, depth)) = work.pop() {
        let children: Box<dyn Iterator<Item = &Node>> = match node {
            Node::Scalar(_) => continue,
            Node::Sequence(seq) => Box::new(seq.iter()),
            Node::Mapping(map) => Box::new(map.values()),
        };
        if depth > MAX_NESTING {
            return Some(crate::parse::location(node.span()));
        }
        work.extend(children.map(|child| (child, depth + 1)));
    }
    None
}

/// Drops a tree of any depth without recursing (the derived drop of
/// `Node` recurses once per level and would overflow the stack).
pub(super) fn dismantle(root: Node) {
    let mut work = vec![root];
    while let Some(mut node) = work.pop() {
        match &mut node {
            Node::Scalar(_) => {}
            Node::Sequence(seq) => work.append(&mut **seq),
            Node::Mapping(map) => {
                work.extend(std::mem::take(&mut **map).into_iter().map(|(_, v)| v))
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Quote {
    Single,
    Double,
}

/// Whether a block node is a list entry (`- `) or anything else (a
/// mapping key, `? `, `: `). A list may sit at the same column as the key
/// that holds it, so both count there.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Seq,
    Other,
}

#[derive(Default)]
struct Scanner {
    /// Open block nodes, by column (0-based), innermost last.
    block: Vec<(usize, Kind)>,
    /// Open `[` and `{`.
    flow: usize,
    /// A quoted scalar that continues on the next line.
    quote: Option<Quote>,
    /// Inside a block scalar: lines indented more than this are its text.
    literal_above: Option<usize>,
    /// Inside `[` or `{`: whether the next line starts where a node may
    /// start (the previous line ended after `,`, `[`, `:`...).
    flow_node_start: bool,
}

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t' || c == '\r'
}

impl Scanner {
    fn scan(mut self, text: &str) -> Result<(), Exceeded> {
        for (n, line) in text.split('\n').enumerate() {
            let chars: Vec<char> = line.chars().collect();
            self.line(n + 1, &chars)?;
        }
        Ok(())
    }

    fn depth(&self) -> usize {
        self.block.len() + self.flow
    }

    fn check(&self, line: usize, col: usize) -> Result<(), Exceeded> {
        if self.depth() > MAX_NESTING {
            return Err(Exceeded {
                at: Location {
                    line,
                    column: col + 1,
                },
                message: format!(
                    "nesting is deeper than {MAX_NESTING} levels (the limit for a flow file)"
                ),
            });
        }
        Ok(())
    }

    fn push(&mut self, entry: (usize, Kind), line: usize) -> Result<(), Exceeded> {
        self.block.push(entry);
        self.check(line, entry.0)
    }

    fn line(&mut self, ln: usize, chars: &[char]) -> Result<(), Exceeded> {
        let indent = chars.iter().take_while(|&&c| c == ' ').count();
        let rest_blank = chars[indent..].iter().all(|&c| is_blank(c));
        if let Some(above) = self.literal_above {
            if rest_blank || indent > above {
                return Ok(());
            }
            self.literal_above = None;
        }
        // Where scanning starts, and whether a node may start there.
        let mut i = 0;
        let mut node_start = false;
        // Column of the node that began on this line after an indicator,
        // which becomes a block mapping if a `key: ` follows.
        let mut pending: Option<usize> = None;
        if self.flow > 0 {
            node_start = self.flow_node_start;
        }
        if self.quote.is_none() && self.flow == 0 {
            let first = chars.get(indent).copied();
            if rest_blank || first == Some('#') {
                return Ok(());
            }
            let starts = |s: &str| {
                let s: Vec<char> = s.chars().collect();
                chars.starts_with(&s) && chars.get(s.len()).is_none_or(|&c| is_blank(c))
            };
            if starts("...") || first == Some('%') && indent == 0 {
                self.block.clear();
                return Ok(());
            }
            if starts("---") {
                self.block.clear();
                i = 3;
                node_start = true;
            } else {
                let kind =
                    if first == Some('-') && chars.get(indent + 1).is_none_or(|&c| is_blank(c)) {
                        Kind::Seq
                    } else {
                        Kind::Other
                    };
                while let Some(&(col, k)) = self.block.last() {
                    let keep =
                        col < indent || (col == indent && k == Kind::Other && kind == Kind::Seq);
                    if keep {
                        break;
                    }
                    self.block.pop();
                }
                self.push((indent, kind), ln)?;
                i = indent;
                node_start = true;
                // The line's first indicator is the entry just pushed.
                if matches!(first, Some('-' | '?' | ':'))
                    && chars.get(indent + 1).is_none_or(|&c| is_blank(c))
                {
                    i = indent + 1;
                    pending = next_node(chars, i);
                }
            }
        }
        while i < chars.len() {
            let c = chars[i];
            if let Some(q) = self.quote {
                match (q, c) {
                    (Quote::Double, '\\') => i += 1,
                    (Quote::Double, '"') => self.quote = None,
                    (Quote::Single, '\'') if chars.get(i + 1) == Some(&'\'') => i += 1,
                    (Quote::Single, '\'') => self.quote = None,
                    _ => {}
                }
                i += 1;
                continue;
            }
            if is_blank(c) {
                i += 1;
                continue;
            }
            let preceded_by_blank = i == 0 || is_blank(chars[i - 1]);
            if c == '#' && preceded_by_blank {
                break;
            }
            let followed_by_blank = chars.get(i + 1).is_none_or(|&n| is_blank(n));
            if node_start {
                match c {
                    '"' => self.quote = Some(Quote::Double),
                    '\'' => self.quote = Some(Quote::Single),
                    '[' | '{' => {
                        // A node may start right inside the bracket.
                        self.flow += 1;
                        self.check(ln, i)?;
                        i += 1;
                        continue;
                    }
                    '&' | '!' => {
                        // An anchor or a tag: the node itself follows it.
                        while i < chars.len() && !is_blank(chars[i]) {
                            if self.flow > 0 && matches!(chars[i], ',' | '[' | ']' | '{' | '}') {
                                break;
                            }
                            i += 1;
                        }
                        continue;
                    }
                    '-' | '?' | ':' if followed_by_blank && self.flow == 0 => {
                        let kind = if c == '-' { Kind::Seq } else { Kind::Other };
                        self.push((i, kind), ln)?;
                        pending = next_node(chars, i + 1);
                        i += 1;
                        continue;
                    }
                    '?' if followed_by_blank => {
                        i += 1;
                        continue;
                    }
                    '|' | '>' if self.flow == 0 => {
                        self.literal_above = Some(self.block.last().map_or(0, |&(col, _)| col));
                        return Ok(());
                    }
                    _ if self.flow > 0 && matches!(c, ']' | '}' | ',' | ':') => {
                        node_start = false;
                        continue;
                    }
                    _ => {}
                }
                node_start = false;
                i += 1;
                continue;
            }
            if self.flow > 0 {
                match c {
                    '[' | '{' => {
                        self.flow += 1;
                        self.check(ln, i)?;
                        node_start = true;
                    }
                    ']' | '}' => self.flow -= 1,
                    ',' => node_start = true,
                    // `a: b`, and `"a":b` in the JSON style.
                    ':' if followed_by_blank
                        || matches!(chars.get(i + 1), Some(',' | '[' | ']' | '{' | '}'))
                        || matches!(chars.get(i.wrapping_sub(1)), Some('"' | '\'')) =>
                    {
                        node_start = true
                    }
                    _ => {}
                }
            } else if c == ':' && followed_by_blank {
                // A block mapping key ends here; its value may follow.
                if let Some(col) = pending.take()
                    && self.block.last().is_none_or(|&(top, _)| top < col)
                {
                    self.push((col, Kind::Other), ln)?;
                }
                node_start = true;
            }
            i += 1;
        }
        self.flow_node_start = node_start;
        Ok(())
    }
}

/// The column of the next non-blank character at or after `from`, if any
/// (a comment does not count).
fn next_node(chars: &[char], from: usize) -> Option<usize> {
    let at = (from..chars.len()).find(|&j| !is_blank(chars[j]))?;
    (chars[at] != '#').then_some(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth_error(text: &str) -> Option<Location> {
        check_text(text).err().map(|e| e.at)
    }

    #[test]
    fn deep_flow_brackets_are_refused_where_they_cross_the_limit() {
        let text = format!("a: {}", "[".repeat(100_000));
        // `a` is level 1; the 32nd bracket is level 33.
        assert_eq!(
            depth_error(&text),
            Some(Location {
                line: 1,
                column: 4 + MAX_NESTING - 1
            })
        );
        let text = format!("{}1{}", "{a: ".repeat(40), "}".repeat(40));
        assert!(depth_error(&text).is_some());
    }

    #[test]
    fn brackets_in_strings_comments_and_block_scalars_do_not_count() {
        let deep = "[".repeat(100);
        for text in [
            format!("a: \"{deep}\"\n"),
            format!("a: '{deep}'\n"),
            format!("a: \"x\\\"{deep}\"\n"),
            format!("a: 'it''s {deep}'\n"),
            format!("a: \"multi\n  line {deep}\n  end\"\nb: 1\n"),
            format!("a: x{deep}\n"),
            format!("a: 1 # {deep}\n"),
            format!("# {deep}\na: 1\n"),
            format!("a: |\n  {deep}\n  more\nb: 1\n"),
            format!("a: >-\n\n  {deep}\nb: 1\n"),
            format!("- k: |\n   {deep}\n"),
            format!("a: ${{{{ input.x }}}} {deep}\n"),
            // Found by fuzz::pre_scan_agrees_with_the_parser: a quote right
            // after a bracket starts a string.
            format!("a: [{{\"{deep}\": 1}}, [\"{deep}\"], ['{deep}']]\n"),
        ] {
            assert_eq!(check_text(&text), Ok(()), "{text}");
        }
    }

    #[test]
    fn brackets_after_anchors_tags_and_indicators_do_count() {
        let deep = "[".repeat(100);
        for text in [
            format!("a: &x {deep}"),
            format!("a: !!seq {deep}"),
            format!("- {deep}"),
            format!("? {deep}"),
            format!("a: |\nb: {deep}"),
            format!("a: 'x'\nb: {deep}"),
            format!("a: [\"x\", {deep}"),
            format!("a: {{\"k\":{deep}"),
        ] {
            assert!(depth_error(&text).is_some(), "{text}");
        }
    }

    #[test]
    fn block_nesting_counts_indentation_and_compact_lists() {
        let mut text = String::new();
        for n in 0..40 {
            text.push_str(&format!("{}a:\n", " ".repeat(n)));
        }
        assert_eq!(depth_error(&text).map(|l| l.line), Some(MAX_NESTING + 1));
        let text = format!("{}x\n", "- ".repeat(40));
        assert!(depth_error(&text).is_some());
        // A list at the same column as its key is a level of its own.
        let mut text = String::new();
        for n in 0..20 {
            text.push_str(&format!("{0}- a:\n", "  ".repeat(n)));
        }
        assert!(depth_error(&text).is_some());
    }

    #[test]
    fn a_typical_flow_is_shallow() {
        let text = "name: order\nsteps:\n  - name: charge\n    plugin: transfer\n    input:\n      amount: ${{ input.amount }}\n      meta: { a: [1, 2, {b: c}] }\n    retry: { max_attempts: 3 }\n";
        assert_eq!(check_text(text), Ok(()));
        let mut s = Scanner::default();
        for (n, line) in text.split('\n').enumerate() {
            let chars: Vec<char> = line.chars().collect();
            s.line(n + 1, &chars).unwrap();
        }
    }

    #[test]
    fn size_is_checked_first_and_located() {
        let text = format!("a: 1\n{}", "x".repeat(MAX_FLOW_BYTES));
        let e = check_text(&text).unwrap_err();
        assert_eq!(
            e.at,
            Location {
                line: 2,
                column: MAX_FLOW_BYTES - 5 + 1
            }
        );
        assert!(e.message.contains("262144"), "{}", e.message);
    }
}
