//! What the runtime knows of one plugin: the operator's settings for it,
//! the installed plugin (its descriptor and what a call needs), and why a
//! file could not be installed.

use crate::bindings::StepPre;
use crate::grants::Grants;
use crate::host_imports::CallState;
use crate::limits::Limits;
use serde::{Deserialize, Serialize};
use settle_types::executor::PluginDescriptor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Per-plugin operator settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PluginSettings {
    #[serde(flatten)]
    pub grants: Grants,
    /// Overrides of the default limits for this plugin.
    pub limits: Option<Limits>,
    /// Pins the name to one component file (its file name, or a path ending
    /// in it): when two components claim this name, this one is installed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Pins the name to one component by its SHA-256 (`sha256:` optional;
    /// at least 16 hex digits of it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Record the plugin's HTTP exchanges (bounded) in the runs' logs, so
    /// `settle plugin replay` can give a new build the same answers. Off
    /// by default: answers may hold what should not be kept.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub record_exchanges: bool,
}

impl PluginSettings {
    /// How a pin reads in a message.
    pub fn pin_text(&self) -> String {
        match (&self.file, &self.digest) {
            (Some(f), Some(d)) => format!("file '{f}' with digest {d}"),
            (Some(f), None) => format!("file '{f}'"),
            (None, Some(d)) => format!("digest {d}"),
            (None, None) => "nothing".into(),
        }
    }

    /// Whether the operator pinned this name to a file or digest.
    pub fn is_pinned(&self) -> bool {
        self.file.is_some() || self.digest.is_some()
    }

    /// Whether the component at `path` with `digest` is the one pinned.
    pub fn pin_matches(&self, path: &Path, digest: &str) -> bool {
        let file_ok = self.file.as_deref().is_none_or(|f| path.ends_with(f));
        let digest_ok = self.digest.as_deref().is_none_or(|d| {
            let d = d.strip_prefix("sha256:").unwrap_or(d).to_ascii_lowercase();
            d.len() >= 16 && digest.starts_with(&d)
        });
        file_ok && digest_ok
    }
}

/// An installed plugin: what everyone may know of it ([`PluginDescriptor`],
/// reached through `Deref`), and what only the runtime needs to call it.
pub struct PluginInfo {
    pub descriptor: Arc<PluginDescriptor>,
    pub grants: Arc<Grants>,
    pub limits: Limits,
    /// Whether its calls' HTTP exchanges are recorded.
    pub record_exchanges: bool,
    pub(crate) pre: StepPre<CallState>,
}

impl std::ops::Deref for PluginInfo {
    type Target = PluginDescriptor;
    fn deref(&self) -> &PluginDescriptor {
        &self.descriptor
    }
}

impl std::fmt::Debug for PluginInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.descriptor.fmt(f)
    }
}

/// Why a plugin file could not be installed. Each message is one line that
/// names the file and the problem.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file cannot be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The bytes are not a WebAssembly component this host can compile.
    #[error("{path}: not a valid WebAssembly component: {reason}")]
    NotAComponent { path: PathBuf, reason: String },
    /// The component has no handler export of this host's contract.
    #[error("{path}: does not export {wanted} (is it a Settle plugin built with settle-sdk?)")]
    MissingHandler { path: PathBuf, wanted: String },
    /// The component was built against another version of the contract.
    #[error(
        "{path}: was built for settle:plugin@{found}; this host needs {needed} — rebuild it against this repository's wit/ (or its settle-sdk)"
    )]
    ContractVersion {
        path: PathBuf,
        found: String,
        needed: String,
    },
    /// The component imports something the host does not provide.
    #[error("{path}: imports {import}, which this host does not provide")]
    UnknownImport { path: PathBuf, import: String },
    /// The component cannot be linked for another reason.
    #[error("{path}: cannot be linked: {reason}")]
    Link { path: PathBuf, reason: String },
    /// `describe` trapped, ran out of time or memory, or returned a manifest
    /// that breaks the bounds of [`crate::manifest`].
    #[error("{path}: describe() failed: {reason}")]
    Describe { path: PathBuf, reason: String },
    /// Two files claim the same plugin name and the operator pinned neither:
    /// none of them is installed under that name.
    #[error(
        "plugin '{name}' is claimed by {first} and {second}; neither is installed until settle.toml pins one ([plugins.{name}] file = \"…\" or digest = \"sha256:…\")"
    )]
    NameClash {
        name: String,
        first: PathBuf,
        second: PathBuf,
    },
    /// The operator pinned the name to another file or digest.
    #[error("{path}: claims plugin '{name}', which settle.toml pins to {pin}; not installed")]
    NotPinned {
        path: PathBuf,
        name: String,
        pin: String,
    },
}
