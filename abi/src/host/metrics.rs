//! Metrics: proxy-wasm ABI v0.2.1 §Metrics.
//!
//! Not implemented yet: every call answers Unimplemented.

use wasmtime::Linker;

use crate::host::unimplemented_fn;
use crate::state::HostState;

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    unimplemented_fn!(linker, "proxy_define_metric", (u32, u32, u32, u32));
    unimplemented_fn!(linker, "proxy_increment_metric", (u32, i64));
    unimplemented_fn!(linker, "proxy_record_metric", (u32, i64));
    unimplemented_fn!(linker, "proxy_get_metric", (u32, u32));
    Ok(())
}
