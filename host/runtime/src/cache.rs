//! The compiled-plugin cache: native code, so it is trusted only when it is
//! provably this host's own work.
//!
//! - The directory must belong to the current user and not be writable by
//!   group or others; otherwise it is not used at all (plugins are compiled
//!   on every start, with a warning).
//! - An artifact is named after the component's SHA-256 and the engine's
//!   compatibility hash, and comes with a sidecar holding both plus the
//!   SHA-256 of the artifact itself, written after the artifact. Before
//!   deserializing, the host reads the artifact into memory, checks it against
//!   the sidecar, and deserializes exactly the bytes it checked. Anything that
//!   does not match is recompiled and rewritten.
//! - Writes are atomic and durable: a temporary file, fsync, rename, fsync of
//!   the directory.

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Why the cache directory is not used.
#[derive(Debug, thiserror::Error)]
pub enum UnsafeCacheDir {
    /// The directory cannot be created or inspected.
    #[error("cache directory {path} cannot be used: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Someone else owns it: their native code would run as ours.
    #[error("cache directory {path} belongs to uid {owner}, not to this user (uid {me})")]
    Owner { path: PathBuf, owner: u32, me: u32 },
    /// Others may write into it.
    #[error(
        "cache directory {path} is writable by group or others (mode {mode:o}); run chmod go-w on it"
    )]
    Writable { path: PathBuf, mode: u32 },
}

/// A usable cache directory.
#[derive(Clone, Debug)]
pub struct CompiledCache {
    dir: PathBuf,
}

/// The effective user id of this process, read from `/proc/self`, which the
/// kernel gives to it.
#[cfg(unix)]
fn current_uid() -> std::io::Result<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|m| m.uid())
}

impl CompiledCache {
    /// Opens (creating it private if absent) and checks `dir`.
    pub fn open(dir: &Path) -> Result<CompiledCache, UnsafeCacheDir> {
        let io = |source| UnsafeCacheDir::Io {
            path: dir.into(),
            source,
        };
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(io)?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                    .map_err(io)?;
            }
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let meta = std::fs::symlink_metadata(dir).map_err(io)?;
            let me = current_uid().map_err(io)?;
            if meta.uid() != me {
                return Err(UnsafeCacheDir::Owner {
                    path: dir.into(),
                    owner: meta.uid(),
                    me,
                });
            }
            let mode = meta.mode() & 0o7777;
            if mode & 0o022 != 0 {
                return Err(UnsafeCacheDir::Writable {
                    path: dir.into(),
                    mode,
                });
            }
        }
        Ok(CompiledCache { dir: dir.into() })
    }

    fn engine_hash(engine: &Engine) -> String {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        format!("{:016x}", h.finish())
    }

    fn paths(&self, engine: &Engine, digest: &str) -> (PathBuf, PathBuf, String) {
        let engine_hash = Self::engine_hash(engine);
        let artifact = self.dir.join(format!("{digest}-{engine_hash}.cwasm"));
        let sidecar = artifact.with_extension("cwasm.sha256");
        (artifact, sidecar, engine_hash)
    }

    fn sidecar_text(digest: &str, engine_hash: &str, artifact: &[u8]) -> String {
        format!(
            "component={digest}\nengine={engine_hash}\nartifact={}\n",
            hex::encode(Sha256::digest(artifact))
        )
    }

    /// The compiled component for `digest`, if the cache holds a verified
    /// artifact for it; `Err` says why a present artifact was not used.
    pub fn load(&self, engine: &Engine, digest: &str) -> Result<Option<Component>, String> {
        let (artifact, sidecar, engine_hash) = self.paths(engine, digest);
        let Ok(bytes) = std::fs::read(&artifact) else {
            return Ok(None);
        };
        let expected = std::fs::read_to_string(&sidecar).map_err(|e| {
            format!(
                "{}: no readable checksum beside it: {e}",
                artifact.display()
            )
        })?;
        if expected != Self::sidecar_text(digest, &engine_hash, &bytes) {
            return Err(format!(
                "{}: does not match its checksum (changed after it was written)",
                artifact.display()
            ));
        }
        // SAFETY: these exact bytes were written by `Component::serialize` of
        // a host with this engine configuration, for the component of this
        // digest: the sidecar, written after them into a directory only this
        // user may write, says so, and they were checked against it above.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(engine, &bytes) };
        component
            .map(Some)
            .map_err(|e| format!("{}: {}", artifact.display(), crate::call::plain_reason(&e)))
    }

    /// Stores `component`, compiled from the component of `digest`.
    pub fn store(
        &self,
        engine: &Engine,
        digest: &str,
        component: &Component,
    ) -> std::io::Result<()> {
        let bytes = component
            .serialize()
            .map_err(|e| std::io::Error::other(crate::call::plain_reason(&e)))?;
        let (artifact, sidecar, engine_hash) = self.paths(engine, digest);
        // The sidecar goes first away and last back: a reader never pairs a
        // new artifact with an old checksum that happens to exist.
        let _ = std::fs::remove_file(&sidecar);
        write_durably(&artifact, &bytes)?;
        write_durably(
            &sidecar,
            Self::sidecar_text(digest, &engine_hash, &bytes).as_bytes(),
        )
    }
}

/// Writes `bytes` to `file` atomically and durably: temporary file, fsync,
/// rename, fsync of the directory.
fn write_durably(file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = file.parent().unwrap_or(Path::new("."));
    // Unique per process and per write: runtimes of one process share a cache.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = file.with_extension(format!("tmp{}-{n}", std::process::id()));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, file)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}
