//! One handle on a running demo service, shared by `settle demo` and the
//! tests: it starts the service as its own process (so a crash test can kill
//! the host and the service apart), reads its state, and stops it by PID
//! when dropped.

use anyhow::{Context, bail};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The plugins of the demo flows that call the service.
pub const CALLERS: [&str; 3] = ["transfer", "reserve-stock", "notify"];

/// How to start the service: a program and the arguments that come before
/// `--listen ADDR --data DIR` (`settle demo-service`, or this crate's own
/// `settle-demo-service` binary with none).
#[derive(Clone, Debug)]
pub struct Launcher {
    pub program: PathBuf,
    pub args: Vec<String>,
}

impl Launcher {
    /// `settle demo-service` from the `settle` binary at `program`.
    pub fn settle(program: impl Into<PathBuf>) -> Self {
        Launcher {
            program: program.into(),
            args: vec!["demo-service".into()],
        }
    }
}

/// A demo service process.
pub struct DemoService {
    launcher: Launcher,
    child: Child,
    data: PathBuf,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
}

impl DemoService {
    /// Starts the service on a free loopback port, its journal under `data`.
    pub fn start(launcher: Launcher, data: &Path) -> anyhow::Result<DemoService> {
        let (child, addr) = spawn(&launcher, data, "127.0.0.1:0")?;
        Ok(DemoService {
            launcher,
            child,
            data: data.to_path_buf(),
            base_url: format!("http://{addr}"),
            addr,
        })
    }

    /// Kills the service with SIGKILL, waits `down`, and starts it again on
    /// the same address from its journal.
    pub fn crash_and_restart(&mut self, down: std::time::Duration) -> anyhow::Result<()> {
        self.child.kill().context("SIGKILL the demo service")?;
        self.child.wait().context("reap the demo service")?;
        std::thread::sleep(down);
        let (child, addr) = spawn(&self.launcher, &self.data, &self.addr)?;
        self.child = child;
        if addr != self.addr {
            bail!(
                "the restarted demo service moved from {} to {addr}",
                self.addr
            );
        }
        Ok(())
    }

    /// `GET /state`: the world as the service sees it.
    pub fn state(&self) -> anyhow::Result<Value> {
        self.get("/state")
    }

    /// `GET /requests`: per (path, idempotency key), requests received and applied.
    pub fn requests(&self) -> anyhow::Result<Value> {
        self.get("/requests")
    }

    fn get(&self, path: &str) -> anyhow::Result<Value> {
        let mut response = ureq::get(&format!("{}{path}", self.base_url))
            .call()
            .with_context(|| format!("GET {path}"))?;
        response
            .body_mut()
            .read_json()
            .with_context(|| format!("GET {path}: not JSON"))
    }
}

impl Drop for DemoService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the process and reads the address from its first line.
fn spawn(launcher: &Launcher, data: &Path, listen: &str) -> anyhow::Result<(Child, String)> {
    let mut child = Command::new(&launcher.program)
        .args(&launcher.args)
        .args(["--listen", listen, "--data"])
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| {
            format!(
                "cannot start the demo service ({})",
                launcher.program.display()
            )
        })?;
    let stdout = child
        .stdout
        .take()
        .context("no stdout from the demo service")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let Some(addr) = line.trim().strip_prefix("listening on ") else {
        let _ = child.kill();
        let _ = child.wait();
        bail!("the demo service did not start on {listen} (it said: {line:?})");
    };
    Ok((child, addr.to_string()))
}
