//! `settle:plugin/kv`: durable key-value state, if granted; writes are
//! buffered per call (see [`crate::kv`]) and refusals recorded.

use super::{CallState, QUOTE_BYTES};
use crate::bindings::settle::plugin::kv;
use crate::budget::cut;
use crate::kv::KvRefusal;

impl CallState {
    fn deny_kv(&mut self, op: &str, key: &str) -> kv::KvError {
        let detail = format!(
            "{op} '{}': key-value state is not granted to plugin '{}'",
            cut(key, QUOTE_BYTES),
            self.caller.plugin
        );
        self.denials.push("kv", detail);
        kv::KvError::Denied
    }

    fn kv_refused(&mut self, refusal: KvRefusal) -> kv::KvError {
        match refusal {
            KvRefusal::Store(m) => kv::KvError::Store(m),
            KvRefusal::Quota { .. } => {
                // The operator can raise a quota: record it, so a failed
                // attempt is held for them rather than undone.
                let text = refusal.to_string();
                self.denials.push("kv-quota", text.clone());
                kv::KvError::TooLarge(text)
            }
            other => kv::KvError::TooLarge(other.to_string()),
        }
    }
}

impl kv::Host for CallState {
    fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, kv::KvError>> {
        self.enter()?;
        if !self.grants.kv {
            return Ok(Err(self.deny_kv("get", &key)));
        }
        let got = self.kv.get(&*self.kv_store, &self.caller.plugin, &key);
        Ok(got.map_err(|r| self.kv_refused(r)))
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<Result<(), kv::KvError>> {
        self.enter()?;
        if !self.grants.kv {
            return Ok(Err(self.deny_kv("set", &key)));
        }
        let done = self.kv.write(
            &*self.kv_store,
            &self.caller.plugin,
            &self.limits,
            key,
            Some(value),
        );
        Ok(done.map_err(|r| self.kv_refused(r)))
    }

    fn delete(&mut self, key: String) -> wasmtime::Result<Result<(), kv::KvError>> {
        self.enter()?;
        if !self.grants.kv {
            return Ok(Err(self.deny_kv("delete", &key)));
        }
        let done = self.kv.write(
            &*self.kv_store,
            &self.caller.plugin,
            &self.limits,
            key,
            None,
        );
        Ok(done.map_err(|r| self.kv_refused(r)))
    }
}
