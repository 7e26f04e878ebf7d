//! Host functions: every import a proxy-wasm guest may have, one file per ABI group.
//!
//! Linking never fails for a name in [`ENV_FUNCTIONS`] or [`WASI_FUNCTIONS`].

mod buffers;
mod compat;
pub(crate) mod grpc;
mod headers;
mod http_call;
mod lifecycle;
mod logging;
mod metrics;
pub(crate) mod properties;
mod queues;
mod shared_data;
mod stream;
mod timers;
mod wasi;

use wasmtime::{Caller, Linker};

use crate::fault::{Fault, FaultKind};
use crate::state::{HostState, Restriction};
use crate::types::{HostResult, Status};

/// Every `env` function the official SDKs (Rust, Go, C++, AssemblyScript) import, across ABI
/// versions 0.1.0 to 0.2.1, plus the runtime shims some toolchains add.
pub const ENV_FUNCTIONS: &[&str] = &[
    // General (0.2.x)
    "proxy_log",
    "proxy_get_log_level",
    "proxy_get_current_time_nanoseconds",
    "proxy_set_tick_period_milliseconds",
    "proxy_set_effective_context",
    "proxy_done",
    "proxy_call_foreign_function",
    // Buffers
    "proxy_get_buffer_bytes",
    "proxy_set_buffer_bytes",
    "proxy_get_buffer_status",
    // Header maps
    "proxy_get_header_map_size",
    "proxy_get_header_map_pairs",
    "proxy_set_header_map_pairs",
    "proxy_get_header_map_value",
    "proxy_add_header_map_value",
    "proxy_replace_header_map_value",
    "proxy_remove_header_map_value",
    // Streams
    "proxy_continue_stream",
    "proxy_close_stream",
    "proxy_send_local_response",
    // Callouts
    "proxy_http_call",
    "proxy_grpc_call",
    "proxy_grpc_stream",
    "proxy_grpc_send",
    "proxy_grpc_cancel",
    "proxy_grpc_close",
    "proxy_get_status",
    // Shared data and queues
    "proxy_get_shared_data",
    "proxy_set_shared_data",
    "proxy_register_shared_queue",
    "proxy_resolve_shared_queue",
    "proxy_enqueue_shared_queue",
    "proxy_dequeue_shared_queue",
    // Metrics
    "proxy_define_metric",
    "proxy_increment_metric",
    "proxy_record_metric",
    "proxy_get_metric",
    // Properties
    "proxy_get_property",
    "proxy_set_property",
    // ABI 0.1.0 only
    "proxy_get_configuration",
    "proxy_continue_request",
    "proxy_continue_response",
    "proxy_clear_route_cache",
    // Toolchain shims: AssemblyScript's abort and seed, Emscripten's.
    "abort",
    "seed",
    "emscripten_notify_memory_growth",
    "pthread_equal",
];

/// The WASI preview 1 functions, linked under both `wasi_snapshot_preview1` and `wasi_unstable`.
pub const WASI_FUNCTIONS: &[&str] = wasi::NAMES;

/// The module names WASI functions are linked under.
pub const WASI_MODULES: &[&str] = &["wasi_snapshot_preview1", "wasi_unstable"];

/// Defines every host function in `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    logging::add_to_linker(linker)?;
    timers::add_to_linker(linker)?;
    buffers::add_to_linker(linker)?;
    headers::add_to_linker(linker)?;
    stream::add_to_linker(linker)?;
    properties::add_to_linker(linker)?;
    http_call::add_to_linker(linker)?;
    grpc::add_to_linker(linker)?;
    shared_data::add_to_linker(linker)?;
    queues::add_to_linker(linker)?;
    metrics::add_to_linker(linker)?;
    lifecycle::add_to_linker(linker)?;
    compat::add_to_linker(linker)?;
    for module in WASI_MODULES {
        wasi::add_to_linker(linker, module)?;
    }
    Ok(())
}

/// Turns a host-call outcome into the status code the guest receives.
pub(crate) fn code(result: HostResult) -> u32 {
    match result {
        Ok(()) => Status::Ok.code(),
        Err(status) => status.code(),
    }
}

/// Fails the VM if `name` is called where it is not allowed: inside the guest allocator, or
/// during `_initialize` for anything but logging, clocks and WASI.
pub(crate) fn check_allowed(
    caller: &Caller<'_, HostState>,
    name: &'static str,
) -> Result<(), Fault> {
    match caller.data().restriction {
        Restriction::None => Ok(()),
        Restriction::Initializing => Err(Fault::new(
            FaultKind::Restricted,
            name,
            format!("{name} called during module initialization, before any context exists"),
        )),
        Restriction::Allocating => Err(Fault::new(
            FaultKind::Restricted,
            name,
            format!("{name} called from inside the guest allocator"),
        )),
    }
}

#[cfg(test)]
mod tests;
