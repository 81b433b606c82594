//! A plugin's durable key-value state, as one call sees it.
//!
//! Writes are buffered per call and applied in one batch only when the call
//! returns `Ok`: a failed, trapped or timed-out attempt leaves the state as it
//! found it, so a retry starts from the same state as the first attempt.
//! Reads see the call's own writes first.
//!
//! Quotas per plugin (number of keys, bytes of keys and values) are checked
//! at each write against the committed usage plus this call's writes. Calls
//! of one plugin running at the same time are checked independently, so
//! together they may pass the quota by at most what each of them wrote.

use crate::limits::{Limits, MAX_KV_KEY_BYTES};
use settle_types::store::KvStore;
use std::collections::BTreeMap;

/// One write of a call: `None` deletes the key.
pub type KvWrite = (String, Option<Vec<u8>>);

/// What a plugin keeps in its key-value state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvUsage {
    pub keys: u64,
    /// Bytes of keys and values together.
    pub bytes: u64,
}

/// Durable plugin-scoped key-value state, as the runtime uses it.
pub trait PluginKv: Send + Sync {
    fn get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, String>;
    /// How much the plugin keeps now.
    fn usage(&self, plugin: &str) -> Result<KvUsage, String>;
    /// Applies one call's writes, all of them or none.
    fn apply(&self, plugin: &str, writes: &[KvWrite]) -> Result<(), String>;
}

/// Plugin state in memory, for tests and tools that run plugins without a
/// store (`settle bench --languages`): nothing is kept past the process.
#[derive(Default)]
pub struct MemoryKv(std::sync::Mutex<std::collections::HashMap<(String, String), Vec<u8>>>);

impl MemoryKv {
    fn map(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<(String, String), Vec<u8>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl PluginKv for MemoryKv {
    fn get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, String> {
        Ok(self.map().get(&(plugin.into(), key.into())).cloned())
    }
    fn apply(&self, plugin: &str, writes: &[KvWrite]) -> Result<(), String> {
        let mut map = self.map();
        for (key, value) in writes {
            match value {
                Some(v) => map.insert((plugin.into(), key.clone()), v.clone()),
                None => map.remove(&(plugin.into(), key.clone())),
            };
        }
        Ok(())
    }
    fn usage(&self, plugin: &str) -> Result<KvUsage, String> {
        let map = self.map();
        let mine = map.iter().filter(|((p, _), _)| p == plugin);
        Ok(KvUsage {
            keys: mine.clone().count() as u64,
            bytes: mine.map(|((_, k), v)| (k.len() + v.len()) as u64).sum(),
        })
    }
}

/// Every store's plugin state serves the runtime as it is.
impl<S: KvStore> PluginKv for S {
    fn get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, String> {
        self.kv_get(plugin, key).map_err(|e| e.to_string())
    }
    fn usage(&self, plugin: &str) -> Result<KvUsage, String> {
        let (keys, bytes) = self.kv_usage(plugin).map_err(|e| e.to_string())?;
        Ok(KvUsage { keys, bytes })
    }
    fn apply(&self, plugin: &str, writes: &[KvWrite]) -> Result<(), String> {
        self.kv_apply(plugin, writes).map_err(|e| e.to_string())
    }
}

/// Why a kv request was refused.
#[derive(Debug, thiserror::Error)]
pub enum KvRefusal {
    /// The key is longer than [`MAX_KV_KEY_BYTES`]; checked before any store access.
    #[error("key of {0} bytes is longer than the {MAX_KV_KEY_BYTES} bytes allowed")]
    KeyTooLong(usize),
    /// The value is larger than the plugin's `max_kv_value_kib`.
    #[error(
        "value of {got} bytes is larger than the {max} bytes allowed (limits.max_kv_value_kib)"
    )]
    ValueTooLarge { got: usize, max: usize },
    /// The write would pass the plugin's quota.
    #[error(
        "kv quota of plugin '{plugin}' reached: {keys} keys and {kib} KiB after this write, \
         {max_keys} keys and {max_kib} KiB allowed (limits.max_kv_keys, limits.max_kv_total_kib)"
    )]
    Quota {
        plugin: String,
        keys: u64,
        kib: u64,
        max_keys: u64,
        max_kib: u64,
    },
    /// The store failed.
    #[error("{0}")]
    Store(String),
}

/// The kv state of one call.
#[derive(Debug, Default)]
pub struct KvSession {
    writes: BTreeMap<String, Option<Vec<u8>>>,
    /// Committed usage plus this call's writes, once the first write needed it.
    usage: Option<KvUsage>,
}

fn entry_bytes(key: &str, value: &[u8]) -> u64 {
    (key.len() as u64).saturating_add(value.len() as u64)
}

impl KvSession {
    pub fn check_key(key: &str) -> Result<(), KvRefusal> {
        if key.len() > MAX_KV_KEY_BYTES {
            return Err(KvRefusal::KeyTooLong(key.len()));
        }
        Ok(())
    }

    pub fn get(
        &self,
        store: &dyn PluginKv,
        plugin: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, KvRefusal> {
        Self::check_key(key)?;
        match self.writes.get(key) {
            Some(buffered) => Ok(buffered.clone()),
            None => store.get(plugin, key).map_err(KvRefusal::Store),
        }
    }

    /// Buffers a write (`None`: delete) after checking sizes and quota.
    pub fn write(
        &mut self,
        store: &dyn PluginKv,
        plugin: &str,
        limits: &Limits,
        key: String,
        value: Option<Vec<u8>>,
    ) -> Result<(), KvRefusal> {
        Self::check_key(&key)?;
        if let Some(v) = &value
            && v.len() > limits.max_kv_value_bytes()
        {
            return Err(KvRefusal::ValueTooLarge {
                got: v.len(),
                max: limits.max_kv_value_bytes(),
            });
        }
        let mut usage = match self.usage {
            Some(u) => u,
            None => store.usage(plugin).map_err(KvRefusal::Store)?,
        };
        let before = self.get(store, plugin, &key)?;
        // Deleting what is not there changes nothing: not buffered, so a
        // delete flood cannot grow this call's buffer.
        if value.is_none() && before.is_none() {
            return Ok(());
        }
        // However the quota counts, one call buffers at most `max_kv_keys`
        // distinct writes.
        let buffered = u64::try_from(self.writes.len()).unwrap_or(u64::MAX);
        if buffered >= limits.max_kv_keys && !self.writes.contains_key(&key) {
            return Err(KvRefusal::Quota {
                plugin: plugin.into(),
                keys: buffered.saturating_add(1),
                kib: usage.bytes.div_ceil(1024),
                max_keys: limits.max_kv_keys,
                max_kib: limits.max_kv_total_kib,
            });
        }
        if let Some(old) = &before {
            usage.keys = usage.keys.saturating_sub(1);
            usage.bytes = usage.bytes.saturating_sub(entry_bytes(&key, old));
        }
        if let Some(new) = &value {
            usage.keys = usage.keys.saturating_add(1);
            usage.bytes = usage.bytes.saturating_add(entry_bytes(&key, new));
            let grows = before.as_ref().is_none_or(|old| new.len() > old.len());
            if grows
                && (usage.keys > limits.max_kv_keys || usage.bytes > limits.max_kv_total_bytes())
            {
                return Err(KvRefusal::Quota {
                    plugin: plugin.into(),
                    keys: usage.keys,
                    kib: usage.bytes.div_ceil(1024),
                    max_keys: limits.max_kv_keys,
                    max_kib: limits.max_kv_total_kib,
                });
            }
        }
        self.usage = Some(usage);
        self.writes.insert(key, value);
        Ok(())
    }

    /// The writes to apply when the call succeeded.
    pub fn into_writes(self) -> Vec<KvWrite> {
        self.writes.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store that holds nothing.
    struct Empty;
    impl PluginKv for Empty {
        fn get(&self, _: &str, _: &str) -> Result<Option<Vec<u8>>, String> {
            Ok(None)
        }
        fn apply(&self, _: &str, _: &[KvWrite]) -> Result<(), String> {
            Ok(())
        }
        fn usage(&self, _: &str) -> Result<KvUsage, String> {
            Ok(KvUsage::default())
        }
    }

    /// A flood of deletes of keys that do not exist buffers nothing, and no
    /// call buffers more distinct writes than the plugin may keep keys.
    #[test]
    fn a_call_buffers_a_bounded_number_of_writes() {
        let limits = Limits {
            max_kv_keys: 10,
            ..Limits::default()
        };
        let mut session = KvSession::default();
        for i in 0..10_000 {
            session
                .write(&Empty, "p", &limits, format!("gone-{i}"), None)
                .unwrap();
        }
        assert!(
            session.writes.is_empty(),
            "deleting nothing buffers nothing"
        );
        for i in 0..10 {
            session
                .write(&Empty, "p", &limits, format!("k{i}"), Some(vec![1]))
                .unwrap();
        }
        for i in 0..10 {
            session
                .write(&Empty, "p", &limits, format!("k{i}"), None)
                .unwrap();
        }
        assert!(matches!(
            session.write(&Empty, "p", &limits, "eleventh".into(), None),
            Ok(())
        ));
        assert!(matches!(
            session.write(&Empty, "p", &limits, "eleventh".into(), Some(vec![1])),
            Err(KvRefusal::Quota { .. })
        ));
        assert_eq!(session.writes.len(), 10);
    }
}
