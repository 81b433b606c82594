//! The demo service's journal: one JSON line per request that reached the
//! world, in order. A line is written and `fsync`ed **before** the world
//! changes, so an answer the service gave is never lost in a crash, and
//! replaying the lines in order rebuilds the same world.
//!
//! A crash while a line is written leaves a torn last line. Nobody was
//! answered for it, so replay cuts it off the file: the next line then
//! starts at a line boundary instead of being glued to the torn bytes (which
//! would make both unreadable on the following replay). A bad line anywhere
//! else means the file was damaged, and opening it fails instead of silently
//! rebuilding a different world.
//!
//! After a failed write or sync the journal refuses every further append
//! (fail-stop): the page cache may already have dropped the data, so a later
//! successful sync would prove nothing. Restarting the service replays what
//! is really on disk.

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// One request that reached the world, as journaled.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub path: String,
    pub key: String,
    pub body: Value,
}

/// The open journal file, positioned at its end.
#[derive(Debug)]
pub struct Journal {
    file: File,
    path: PathBuf,
    /// Bytes of whole, synced lines.
    len: u64,
    /// Why an earlier append failed; set, the journal takes no more lines.
    failed: Option<String>,
}

impl Journal {
    /// Opens (or creates) the journal and returns every entry in it, after
    /// cutting a torn last line off the file.
    pub fn open(path: &Path) -> anyhow::Result<(Journal, Vec<Entry>)> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let (entries, good) = read_entries(path, &bytes)?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {} for appending", path.display()))?;
        if good < bytes.len() {
            tracing::warn!(
                journal = %path.display(),
                "cutting off a torn last line ({} bytes) left by a crash",
                bytes.len() - good
            );
            file.set_len(good as u64)
                .and_then(|()| file.sync_data())
                .with_context(|| format!("cannot cut the torn last line of {}", path.display()))?;
        }
        let journal = Journal {
            file,
            path: path.to_path_buf(),
            len: good as u64,
            failed: None,
        };
        Ok((journal, entries))
    }

    /// Appends one line and waits until it is on disk. On an error nothing
    /// may be applied, and the journal takes no further line.
    pub fn append(&mut self, entry: &Entry) -> anyhow::Result<()> {
        if let Some(why) = &self.failed {
            bail!(
                "journal {} failed earlier ({why}); restart the demo service",
                self.path.display()
            );
        }
        let mut line = serde_json::to_vec(entry).context("cannot encode a journal line")?;
        line.push(b'\n');
        match self
            .file
            .write_all(&line)
            .and_then(|()| self.file.sync_data())
        {
            Ok(()) => {
                self.len += line.len() as u64;
                Ok(())
            }
            Err(e) => {
                self.failed = Some(e.to_string());
                // Best effort: do not leave half a line for the next start.
                let _ = self.file.set_len(self.len);
                Err(e).with_context(|| format!("cannot write to {}", self.path.display()))
            }
        }
    }

    /// A journal over an already open file, for tests that make writes fail.
    #[cfg(test)]
    pub(super) fn over(file: File, path: &Path) -> Journal {
        Journal {
            file,
            path: path.to_path_buf(),
            len: 0,
            failed: None,
        }
    }
}

/// Parses the journal's bytes: every entry, and how many leading bytes hold
/// whole lines. Only the last line may be torn (no newline, or unreadable).
fn read_entries(path: &Path, bytes: &[u8]) -> anyhow::Result<(Vec<Entry>, usize)> {
    let mut entries = Vec::new();
    let mut start = 0;
    let mut line_number = 0;
    while start < bytes.len() {
        line_number += 1;
        let end = bytes[start..].iter().position(|&b| b == b'\n');
        let Some(end) = end.map(|e| start + e) else {
            // No newline: the write of this line never finished.
            return Ok((entries, start));
        };
        match serde_json::from_slice::<Entry>(&bytes[start..end]) {
            Ok(entry) => entries.push(entry),
            // The last line, unreadable: torn too (e.g. zeros after a crash).
            Err(_) if end + 1 == bytes.len() => return Ok((entries, start)),
            Err(e) => bail!(
                "{}:{line_number}: unreadable entry before the end of the journal ({e}); \
                 the file is damaged: move it away to start the demo world afresh",
                path.display()
            ),
        }
        start = end + 1;
    }
    Ok((entries, start))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(key: &str) -> String {
        format!(
            "{}\n",
            serde_json::json!({"path": "/p", "key": key, "body": {}})
        )
    }

    #[test]
    fn whole_lines_are_read_and_a_torn_tail_is_left_out() {
        let path = Path::new("journal.jsonl");
        let whole = format!("{}{}", line("a"), line("b"));
        let (entries, good) = read_entries(path, whole.as_bytes()).unwrap();
        assert_eq!((entries.len(), good), (2, whole.len()));

        for torn in [r#"{"path":"/p","ke"#, "\0\0\0\0\n", "{\"path\"\n"] {
            let text = format!("{whole}{torn}");
            let (entries, good) = read_entries(path, text.as_bytes()).unwrap();
            assert_eq!((entries.len(), good), (2, whole.len()), "{torn:?}");
        }
    }

    #[test]
    fn a_bad_line_before_the_end_is_an_error_naming_it() {
        let text = format!("{}garbage\n{}", line("a"), line("b"));
        let err = read_entries(Path::new("j.jsonl"), text.as_bytes()).unwrap_err();
        assert!(
            err.to_string().starts_with("j.jsonl:2: unreadable entry"),
            "{err}"
        );
    }

    #[test]
    fn opening_cuts_the_torn_line_off_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        std::fs::write(&path, format!("{}{{\"pa", line("a"))).unwrap();
        let (mut journal, entries) = Journal::open(&path).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), line("a"));
        let b = Entry {
            path: "/p".into(),
            key: "b".into(),
            body: serde_json::json!({}),
        };
        journal.append(&b).unwrap();
        drop(journal);
        let (_, entries) = Journal::open(&path).unwrap();
        assert_eq!(entries.last(), Some(&b));
        assert_eq!(entries.len(), 2);
    }
}
