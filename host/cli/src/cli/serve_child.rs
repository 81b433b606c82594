//! `settle serve` as a child process of this one (`settle drill`, `settle
//! bench --http`): started with arguments, its address read from the first
//! line it prints, killed by its PID (through the kept `Child`) when dropped.

use anyhow::{Context, bail};
use std::ffi::OsString;
use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long a server may take to say where it listens.
const START_TIMEOUT: Duration = Duration::from_secs(60);

pub struct ServeChild {
    child: Child,
    /// `127.0.0.1:PORT`, as it printed it.
    pub addr: String,
}

impl ServeChild {
    /// `settle serve ARGS…`, its stderr appended to `log`.
    pub fn start(args: &[OsString], log: &Path) -> anyhow::Result<ServeChild> {
        let exe = std::env::current_exe().context("cannot find this settle binary")?;
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot open {}", log.display()))?;
        let mut child = Command::new(exe)
            .arg("serve")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .context("cannot start settle serve")?;
        let stdout = child.stdout.take().context("settle serve's stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads the address, then drains stdout to its end so the server
        // never finds it closed.
        std::thread::spawn(move || {
            let mut lines = std::io::BufReader::new(stdout).lines();
            let _ = tx.send(lines.next().and_then(Result::ok).unwrap_or_default());
            for _ in lines {}
        });
        let line = rx.recv_timeout(START_TIMEOUT).unwrap_or_default();
        let Some(addr) = line.strip_prefix("listening on ") else {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "settle serve did not say where it listens (it said '{line}'); its log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        };
        Ok(ServeChild {
            addr: addr.trim().to_string(),
            child,
        })
    }

    /// SIGKILL, and wait for it to be gone.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServeChild {
    fn drop(&mut self) {
        self.kill9();
    }
}
