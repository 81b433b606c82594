//! Host-side bindings of the `step` world in `wit/`.
//!
//! Host imports (log, progress, kv, config) are synchronous: they never wait
//! on I/O longer than a sled read. They are trappable: each checks the call's
//! deadline on entry, so a plugin that spends its time in host calls is
//! stopped at its time limit like one that computes. Exports are called
//! asynchronously so a guest can yield at epoch ticks and while it waits on
//! outbound HTTP.

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "step",
    imports: { default: trappable },
    exports: { default: async },
});
