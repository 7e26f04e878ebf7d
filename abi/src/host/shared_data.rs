//! Shared key-value store: proxy-wasm ABI v0.2.1 §Shared Key-Value Store.
//!
//! Process-wide, in the VM's namespace (its `vm_id`, or its filter's name when the `vm_id` is
//! empty), with Envoy's CAS rules; see [`crate::shared`].

use wasmtime::{Caller, Linker};

use crate::host::{check_allowed, code};
use crate::memory::{return_bytes, slice, split, write_u32};
use crate::state::HostState;
use crate::types::Status;

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap("env", "proxy_get_shared_data", get_shared_data)?;
    linker.func_wrap("env", "proxy_set_shared_data", set_shared_data)?;
    Ok(())
}

/// Returns the value stored under a key and its CAS.
///
/// ABI: `proxy_get_shared_data`. NotFound for a key never set; InvalidMemoryAccess for a bad
/// range or out-pointer. An empty value comes back as ptr=0, size=0.
fn get_shared_data(
    mut caller: Caller<'_, HostState>,
    key_ptr: u32,
    key_size: u32,
    ret_ptr: u32,
    ret_size: u32,
    ret_cas: u32,
) -> wasmtime::Result<u32> {
    check_allowed(&caller, "proxy_get_shared_data")?;
    let (value, cas) = {
        let (mem, state) = split(&mut caller);
        let key = match slice(mem, key_ptr, key_size) {
            Ok(key) => key,
            Err(status) => return Ok(status.code()),
        };
        // Checked before the value is copied into guest memory.
        if let Err(status) = slice(mem, ret_cas, 4) {
            return Ok(status.code());
        }
        let space = state.shared.data(state.runtime.shared(), &state.plugin);
        match space.get(key) {
            Some(found) => found,
            None => return Ok(Status::NotFound.code()),
        }
    };
    if let Err(status) = return_bytes(&mut caller, &value, ret_ptr, ret_size)? {
        return Ok(status.code());
    }
    let (mem, _) = split(&mut caller);
    Ok(code(write_u32(mem, ret_cas, cas)))
}

/// Stores a value under a key. `cas` 0 is unconditional; otherwise it must be the key's
/// current CAS (a key's first set ignores it). Every write gives the key a new CAS.
///
/// ABI: `proxy_set_shared_data`. CasMismatch for a stale CAS; InternalFailure when the
/// namespace's byte or key cap would be passed (the Rust SDK panics on it); InvalidMemoryAccess
/// for a bad range.
fn set_shared_data(
    mut caller: Caller<'_, HostState>,
    key_ptr: u32,
    key_size: u32,
    value_ptr: u32,
    value_size: u32,
    cas: u32,
) -> wasmtime::Result<u32> {
    check_allowed(&caller, "proxy_set_shared_data")?;
    let (mem, state) = split(&mut caller);
    let (key, value) = match (
        slice(mem, key_ptr, key_size),
        slice(mem, value_ptr, value_size),
    ) {
        (Ok(key), Ok(value)) => (key, value),
        (Err(status), _) | (_, Err(status)) => return Ok(status.code()),
    };
    let space = state.shared.data(state.runtime.shared(), &state.plugin);
    Ok(code(space.set(key, value, cas)))
}

#[cfg(test)]
mod tests;
