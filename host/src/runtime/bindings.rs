//! Host-side bindings of the `step` world in `wit/`.
//!
//! Host imports (log, progress, kv, config) are synchronous: they never wait
//! on I/O longer than a sled read. Exports are called asynchronously so a
//! guest can yield at epoch ticks and while it waits on outbound HTTP.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "step",
    exports: { default: async },
});
