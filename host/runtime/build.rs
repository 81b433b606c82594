//! Builds the evaluator component (`host/expr/guest`, Settle's jq
//! expressions) for wasm32-wasip2 and leaves it in `OUT_DIR` for
//! `include_bytes!`: the host carries its own sandboxed evaluator, nothing
//! to install beside it.
//!
//! The guest is its own workspace with its own lockfile, built by a nested
//! cargo into a target directory of its own (beside `CARGO_TARGET_DIR` when
//! that is set, so every build of the host shares one guest build).

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    let expr = manifest_dir.join("../expr");
    let guest = expr.join("guest");
    for input in [
        "src",
        "Cargo.toml",
        "wit",
        "guest/src",
        "guest/Cargo.toml",
        "guest/Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", expr.join(input).display());
    }
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");

    // A relative CARGO_TARGET_DIR is relative to where cargo was started,
    // which a build script cannot know: then the guest builds under OUT_DIR.
    let target_dir = match std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir.join("expr-guest"),
        _ => out_dir.join("expr-guest"),
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .args([
            "build",
            "--quiet",
            "--locked",
            "--release",
            "--target",
            "wasm32-wasip2",
        ])
        .arg("--manifest-path")
        .arg(guest.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    // What the outer build set for the host's own code must not reach the
    // guest: flags for another target, clippy's wrapper, the outer target.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        build.env_remove(var);
    }
    let status = build
        .status()
        .unwrap_or_else(|e| panic!("could not start cargo to build the expression evaluator: {e}"));
    if !status.success() {
        panic!(
            "building the expression evaluator ({}) for wasm32-wasip2 failed (cargo's \
             message is above): the target must be installed (`rustup target add \
             wasm32-wasip2`) and the guest's crates fetchable or already fetched",
            guest.display()
        );
    }
    let built = target_dir.join("wasm32-wasip2/release/settle_expr_guest.wasm");
    copy(&built, &out_dir.join("evaluator.wasm"));
}

fn copy(from: &Path, to: &Path) {
    std::fs::copy(from, to)
        .unwrap_or_else(|e| panic!("copying {} to {}: {e}", from.display(), to.display()));
}
