//! `settle:plugin/log`: a plugin's own log lines, bounded per call and
//! escaped, attributed to the plugin, run and step.

use super::CallState;
use crate::bindings::settle::plugin::log;

impl log::Host for CallState {
    fn write(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        self.enter()?;
        let Some(message) = self.log.admit(&message) else {
            return Ok(());
        };
        if let Some(s) = &self.stand_in {
            let name = match level {
                log::Level::Trace => "trace",
                log::Level::Debug => "debug",
                log::Level::Info => "info",
                log::Level::Warn => "warn",
                log::Level::Error => "error",
            };
            s.log(name, &message);
        }
        let c = &self.caller;
        match level {
            log::Level::Trace => {
                tracing::trace!(plugin = %c.plugin, run_id = %c.run_id, step = %c.step, attempt = c.attempt, operation_id = %c.operation_id, "{message}")
            }
            log::Level::Debug => {
                tracing::debug!(plugin = %c.plugin, run_id = %c.run_id, step = %c.step, attempt = c.attempt, operation_id = %c.operation_id, "{message}")
            }
            log::Level::Info => {
                tracing::info!(plugin = %c.plugin, run_id = %c.run_id, step = %c.step, attempt = c.attempt, operation_id = %c.operation_id, "{message}")
            }
            log::Level::Warn => {
                tracing::warn!(plugin = %c.plugin, run_id = %c.run_id, step = %c.step, attempt = c.attempt, operation_id = %c.operation_id, "{message}")
            }
            log::Level::Error => {
                tracing::error!(plugin = %c.plugin, run_id = %c.run_id, step = %c.step, attempt = c.attempt, operation_id = %c.operation_id, "{message}")
            }
        }
        Ok(())
    }
}
