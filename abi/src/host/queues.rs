//! Shared queues: proxy-wasm ABI v0.2.1 §Shared Queues.
//!
//! Not implemented yet: every call answers Unimplemented.

use wasmtime::Linker;

use crate::host::unimplemented_fn;
use crate::state::HostState;

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    unimplemented_fn!(linker, "proxy_register_shared_queue", (u32, u32, u32));
    unimplemented_fn!(
        linker,
        "proxy_resolve_shared_queue",
        (u32, u32, u32, u32, u32)
    );
    unimplemented_fn!(linker, "proxy_enqueue_shared_queue", (u32, u32, u32));
    unimplemented_fn!(linker, "proxy_dequeue_shared_queue", (u32, u32, u32));
    Ok(())
}
