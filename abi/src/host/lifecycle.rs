//! Context lifecycle and foreign functions: `proxy_set_effective_context`, `proxy_done`,
//! `proxy_call_foreign_function`.
//!
//! Not implemented yet: every call answers Unimplemented.

use wasmtime::Linker;

use crate::host::unimplemented_fn;
use crate::state::HostState;

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    unimplemented_fn!(linker, "proxy_set_effective_context", (u32));
    unimplemented_fn!(linker, "proxy_done", ());
    unimplemented_fn!(
        linker,
        "proxy_call_foreign_function",
        (u32, u32, u32, u32, u32, u32)
    );
    Ok(())
}
