//! The flows a host offers by name: every version registered, which one new
//! runs get (the newest registered), and which versions runs still use.
//!
//! Flows come from flow files (`settle serve --flows DIR`) and from
//! `PUT /v1/flows/{name}`; the latter are written to the catalog's own
//! directory (one file per version, `fsync`ed before the call returns) and
//! read back at start. A version counts as registered when its file was
//! last written, so a restart offers the same current version as before.
//! Runs never depend on the catalog: each run keeps the exact text it was
//! accepted under in the store, by digest.

use settle_flow::Flow;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// Largest flow file the catalog accepts, bytes.
pub const MAX_FLOW_BYTES: usize = 256 * 1024;

/// One registered version of a flow.
#[derive(Clone, Debug)]
pub struct FlowVersion {
    pub flow: Arc<Flow>,
    /// When it was registered: for a version read from a file, when the
    /// file was last written.
    pub registered_at_ms: u64,
    /// The order this process learnt of it, for versions registered in
    /// the same millisecond.
    pub seq: u64,
    /// `file` (a flow file at start) or `api`.
    pub origin: &'static str,
}

impl FlowVersion {
    /// Registration order: the greatest is current.
    fn order(&self) -> (u64, u64) {
        (self.registered_at_ms, self.seq)
    }
}

/// Why a flow could not be registered or removed. Nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("the flow is named '{inside}' inside, not '{asked}'")]
    NameMismatch { asked: String, inside: String },
    #[error(
        "flow {name} version {version} is already registered with different content; give the new text a new version"
    )]
    VersionTaken { name: String, version: String },
    #[error("no flow {name} version {version}")]
    NoSuchVersion { name: String, version: String },
    #[error(
        "flow {name} version {version} is still used by {runs} unfinished run(s); wait until they finish"
    )]
    InUse {
        name: String,
        version: String,
        runs: usize,
    },
    #[error("cannot write the flow to {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// Every flow the host offers, by name and version.
#[derive(Debug, Default)]
pub struct FlowCatalog {
    /// name → version → entry.
    flows: RwLock<BTreeMap<String, BTreeMap<String, FlowVersion>>>,
    /// Where versions registered over the API are kept.
    dir: Option<PathBuf>,
    next_seq: std::sync::atomic::AtomicU64,
}

impl FlowCatalog {
    /// A catalog that keeps API-registered versions under `dir`.
    pub fn new(dir: Option<PathBuf>) -> Self {
        FlowCatalog {
            flows: RwLock::default(),
            dir,
            next_seq: Default::default(),
        }
    }

    /// Loads every `*.yaml` / `*.yml` file of `dir`; the problems of files
    /// that do not parse, one per file.
    pub fn load_dir(&self, dir: &Path, origin: &'static str) -> Vec<String> {
        let mut problems = Vec::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && origin == "api" => {
                return problems;
            }
            Err(e) => return vec![format!("{}: cannot read: {e}", dir.display())],
        };
        // Oldest written first: the order they were registered in.
        let mut paths: Vec<(std::time::SystemTime, PathBuf)> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .map(|p| {
                let written = std::fs::metadata(&p)
                    .and_then(|m| m.modified())
                    .unwrap_or_else(|_| std::time::SystemTime::now());
                (written, p)
            })
            .collect();
        paths.sort();
        for (written, path) in paths {
            let written_ms = written
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            match Flow::load(&path) {
                Ok(flow) => {
                    if let Err(e) = self.insert(Arc::new(flow), origin, written_ms) {
                        problems.push(format!("{}: {e}", path.display()));
                    }
                }
                Err(e) => problems.push(e.to_string()),
            }
        }
        problems
    }

    /// Adds a version; the same text again is a no-op. Returns whether it was new.
    fn insert(
        &self,
        flow: Arc<Flow>,
        origin: &'static str,
        registered_at_ms: u64,
    ) -> Result<bool, CatalogError> {
        let mut flows = self.flows.write().unwrap_or_else(|p| p.into_inner());
        let versions = flows.entry(flow.name.clone()).or_default();
        if let Some(known) = versions.get(&flow.version) {
            if known.flow.digest == flow.digest {
                return Ok(false);
            }
            return Err(CatalogError::VersionTaken {
                name: flow.name.clone(),
                version: flow.version.clone(),
            });
        }
        versions.insert(
            flow.version.clone(),
            FlowVersion {
                flow,
                registered_at_ms,
                seq: self
                    .next_seq
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                origin,
            },
        );
        Ok(true)
    }

    /// Registers a version given over the API under `name`: checked,
    /// written durably to the catalog's directory, then offered. Returns
    /// whether it was new (false: the same text was registered before).
    pub fn register(&self, name: &str, flow: Flow) -> Result<bool, CatalogError> {
        if flow.name != name {
            return Err(CatalogError::NameMismatch {
                asked: name.to_string(),
                inside: flow.name,
            });
        }
        if let Some(known) = self.version(name, &flow.version) {
            if known.flow.digest == flow.digest {
                return Ok(false);
            }
            return Err(CatalogError::VersionTaken {
                name: flow.name,
                version: flow.version,
            });
        }
        if let Some(dir) = &self.dir {
            write_durably(
                &dir.join(file_name(&flow.name, &flow.version)),
                &flow.source,
            )?;
        }
        self.insert(Arc::new(flow), "api", settle_types::now_ms())
    }

    /// Removes a version that no unfinished run uses (`in_use` counts them).
    pub fn remove(&self, name: &str, version: &str, in_use: usize) -> Result<(), CatalogError> {
        if self.version(name, version).is_none() {
            return Err(CatalogError::NoSuchVersion {
                name: name.into(),
                version: version.into(),
            });
        }
        if in_use > 0 {
            return Err(CatalogError::InUse {
                name: name.into(),
                version: version.into(),
                runs: in_use,
            });
        }
        if let Some(dir) = &self.dir {
            let path = dir.join(file_name(name, version));
            match std::fs::remove_file(&path) {
                Ok(()) => sync_dir(dir).map_err(|source| CatalogError::Write {
                    path: dir.display().to_string(),
                    source,
                })?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(CatalogError::Write {
                        path: path.display().to_string(),
                        source,
                    });
                }
            }
        }
        let mut flows = self.flows.write().unwrap_or_else(|p| p.into_inner());
        if let Some(versions) = flows.get_mut(name) {
            versions.remove(version);
            if versions.is_empty() {
                flows.remove(name);
            }
        }
        Ok(())
    }

    /// The version new runs of `name` get: the one registered last.
    pub fn current(&self, name: &str) -> Option<Arc<Flow>> {
        let flows = self.flows.read().unwrap_or_else(|p| p.into_inner());
        flows
            .get(name)?
            .values()
            .max_by_key(|v| v.order())
            .map(|v| v.flow.clone())
    }

    pub fn version(&self, name: &str, version: &str) -> Option<FlowVersion> {
        let flows = self.flows.read().unwrap_or_else(|p| p.into_inner());
        flows.get(name)?.get(version).cloned()
    }

    /// Every version of `name`, oldest registration first.
    pub fn versions(&self, name: &str) -> Vec<FlowVersion> {
        let flows = self.flows.read().unwrap_or_else(|p| p.into_inner());
        let mut list: Vec<FlowVersion> = flows
            .get(name)
            .map(|v| v.values().cloned().collect())
            .unwrap_or_default();
        list.sort_by_key(FlowVersion::order);
        list
    }

    /// Every flow name with its current version.
    pub fn all(&self) -> Vec<Arc<Flow>> {
        let names: Vec<String> = {
            let flows = self.flows.read().unwrap_or_else(|p| p.into_inner());
            flows.keys().cloned().collect()
        };
        names.iter().filter_map(|n| self.current(n)).collect()
    }
}

/// `name@version.yaml`, with anything outside `[A-Za-z0-9._-]` replaced, so
/// a version can never name a path outside the directory.
fn file_name(name: &str, version: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    format!(
        "{}@{}.yaml",
        clean(name),
        clean(version).trim_start_matches('.')
    )
}

/// Writes `text` to `path` through a temporary file, `fsync`ing the file
/// and its directory, so the version is on disk when the call returns.
fn write_durably(path: &Path, text: &str) -> Result<(), CatalogError> {
    let err = |source| CatalogError::Write {
        path: path.display().to_string(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(err)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut file = std::fs::File::create(&tmp).map_err(err)?;
    file.write_all(text.as_bytes()).map_err(err)?;
    file.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)?;
    sync_dir(dir).map_err(err)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_stay_inside_the_directory() {
        assert_eq!(file_name("order", "1"), "order@1.yaml");
        assert_eq!(
            file_name("order", "../../etc/passwd"),
            "order@_.._etc_passwd.yaml"
        );
        assert!(!file_name("a/b", "..").contains('/'));
    }
}
