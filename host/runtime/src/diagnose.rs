//! Why a component cannot be linked as a plugin, in one plain line.
//!
//! wasmtime's own link errors are accurate but long (a Debug form runs to
//! kilobytes). The component's type says what it imports and exports, so the
//! host can name the actual problem: no handler export, a handler of another
//! contract version, or an import this host does not provide.

use crate::call::plain_reason;
use crate::plugin::LoadError;
use std::path::Path;
use std::sync::LazyLock;
use wasmtime::Engine;
use wasmtime::component::Component;

/// The contract package this host implements, from `wit/plugin.wit`.
const WIT: &str = include_str!("../../../wit/plugin.wit");

/// `(package, version)` of the contract, e.g. `("settle:plugin", "0.1.0")`.
static CONTRACT: LazyLock<(String, String)> = LazyLock::new(|| {
    WIT.lines()
        .find_map(|l| l.trim().strip_prefix("package "))
        .and_then(|p| p.trim_end_matches(';').trim().split_once('@'))
        .map(|(p, v)| (p.to_string(), v.to_string()))
        .unwrap_or_else(|| ("settle:plugin".into(), "unknown".into()))
});

/// The contract version this host implements (`0.2.0` today).
pub fn contract_version() -> &'static str {
    &CONTRACT.1
}

/// The export every plugin must have, e.g. `settle:plugin/handler@0.2.0`.
pub fn handler_export() -> String {
    format!("{}/handler@{}", CONTRACT.0, CONTRACT.1)
}

/// The version in an interface name like `settle:plugin/kv@0.1.0`.
fn version_of(name: &str) -> &str {
    name.rsplit_once('@').map_or("", |(_, v)| v)
}

/// Names what is wrong with `component`, given that linking it failed with `error`.
pub fn link_failure(
    path: &Path,
    engine: &Engine,
    component: &Component,
    error: &wasmtime::Error,
) -> LoadError {
    let ty = component.component_type();
    let package = format!("{}/", CONTRACT.0);
    for (name, _) in ty.imports(engine) {
        if name.starts_with(&package) {
            if version_of(name) != contract_version() {
                return LoadError::ContractVersion {
                    path: path.into(),
                    found: version_of(name).to_string(),
                    needed: contract_version().to_string(),
                };
            }
        } else if !name.starts_with("wasi:") {
            return LoadError::UnknownImport {
                path: path.into(),
                import: name.to_string(),
            };
        }
    }
    let wanted = handler_export();
    if ty.get_export(engine, &wanted).is_none() {
        let other = ty
            .exports(engine)
            .map(|(name, _)| name)
            .find(|name| name.starts_with(&format!("{package}handler@")));
        return match other {
            Some(name) => LoadError::ContractVersion {
                path: path.into(),
                found: version_of(name).to_string(),
                needed: contract_version().to_string(),
            },
            None => LoadError::MissingHandler {
                path: path.into(),
                wanted,
            },
        };
    }
    LoadError::Link {
        path: path.into(),
        reason: plain_reason(error),
    }
}
