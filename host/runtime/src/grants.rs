//! Capabilities an operator grants to one plugin, by name, in `settle.toml`.
//! A plugin gets nothing else: no file system, no sockets, no environment.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Grants {
    /// Hosts the plugin may reach over `wasi:http`: `host` (any port),
    /// `host:port`, `*.domain` (any subdomain) or `*` (anything).
    pub allowed_outbound_hosts: Vec<String>,
    /// Whether the plugin may keep durable key-value state.
    pub kv: bool,
    /// Settings the plugin reads with `config::get`.
    pub config: BTreeMap<String, String>,
}

impl Grants {
    /// Whether `host` (and `port`) is allowed.
    pub fn allows_host(&self, host: &str, port: u16) -> bool {
        let host = host.to_ascii_lowercase();
        self.allowed_outbound_hosts.iter().any(|pattern| {
            let pattern = pattern.to_ascii_lowercase();
            if pattern == "*" {
                return true;
            }
            let (p_host, p_port) = match pattern.rsplit_once(':') {
                Some((h, p)) if !h.is_empty() => (h.to_string(), Some(p.to_string())),
                _ => (pattern.clone(), None),
            };
            let port_ok = match p_port.as_deref() {
                None | Some("*") => true,
                Some(p) => p.parse::<u16>().is_ok_and(|p| p == port),
            };
            let host_ok = match p_host.strip_prefix("*.") {
                Some(domain) => host.ends_with(&format!(".{domain}")),
                None => p_host == host,
            };
            port_ok && host_ok
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(hosts: &[&str]) -> Grants {
        Grants {
            allowed_outbound_hosts: hosts.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn host_patterns() {
        let g = grants(&["127.0.0.1:7300", "api.example.com", "*.pay.example:443"]);
        assert!(g.allows_host("127.0.0.1", 7300));
        assert!(!g.allows_host("127.0.0.1", 7301));
        assert!(g.allows_host("API.example.com", 8443));
        assert!(g.allows_host("eu.pay.example", 443));
        assert!(!g.allows_host("pay.example", 443));
        assert!(!g.allows_host("eu.pay.example", 80));
        assert!(!grants(&[]).allows_host("localhost", 80));
        assert!(grants(&["*"]).allows_host("anything", 1));
    }
}
