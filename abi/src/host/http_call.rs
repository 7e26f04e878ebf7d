//! HTTP and gRPC callouts: proxy-wasm ABI v0.2.1 §HTTP calls and §gRPC calls.
//!
//! Not implemented yet: every call answers Unimplemented.

use wasmtime::Linker;

use crate::host::unimplemented_fn;
use crate::state::HostState;

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    unimplemented_fn!(
        linker,
        "proxy_http_call",
        (u32, u32, u32, u32, u32, u32, u32, u32, u32, u32)
    );
    unimplemented_fn!(
        linker,
        "proxy_grpc_call",
        (u32, u32, u32, u32, u32, u32, u32, u32, u32, u32, u32, u32)
    );
    unimplemented_fn!(
        linker,
        "proxy_grpc_stream",
        (u32, u32, u32, u32, u32, u32, u32, u32, u32)
    );
    unimplemented_fn!(linker, "proxy_grpc_send", (u32, u32, u32, u32));
    unimplemented_fn!(linker, "proxy_grpc_cancel", (u32));
    unimplemented_fn!(linker, "proxy_grpc_close", (u32));
    unimplemented_fn!(linker, "proxy_get_status", (u32, u32, u32));
    Ok(())
}
