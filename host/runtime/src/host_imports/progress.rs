//! `settle:plugin/progress`: progress reports, bounded in size and rate.

use super::CallState;
use crate::bindings::settle::plugin::progress;

impl progress::Host for CallState {
    fn report(&mut self, fraction: f32, message: String) -> wasmtime::Result<()> {
        self.enter()?;
        if let (Some(sink), Some((fraction, message))) =
            (&self.progress, self.progress_gate.admit(fraction, &message))
        {
            sink(fraction, message);
        }
        Ok(())
    }
}
