//! `settle:plugin/config`: settings the operator granted; a setting that is
//! not configured is a recorded refusal (the host's setup, not the plugin).

use super::{CallState, QUOTE_BYTES};
use crate::bindings::settle::plugin::config;
use crate::budget::cut;

impl config::Host for CallState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        self.enter()?;
        let value = self.grants.config.get(&key).cloned();
        if value.is_none() {
            // A setting the operator forgot is the host's setup, not the
            // plugin's fault: recorded, so a failed attempt is held for an
            // operator rather than undone.
            let plugin = self.caller.plugin.clone();
            self.denials.push(
                "config",
                format!(
                    "setting '{}' is not configured for plugin '{plugin}' (add it to [plugins.{plugin}.config] in settle.toml)",
                    cut(&key, QUOTE_BYTES)
                ),
            );
        }
        Ok(value)
    }
}
