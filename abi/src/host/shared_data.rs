//! Shared key-value store: proxy-wasm ABI v0.2.1 §Shared Key-Value Store.
//!
//! Not implemented yet: every call answers Unimplemented.

use wasmtime::Linker;

use crate::host::unimplemented_fn;
use crate::state::HostState;

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    unimplemented_fn!(linker, "proxy_get_shared_data", (u32, u32, u32, u32, u32));
    unimplemented_fn!(linker, "proxy_set_shared_data", (u32, u32, u32, u32, u32));
    Ok(())
}
