//! Buffers: proxy-wasm ABI v0.2.1 §Buffers (`proxy_{get,set}_buffer_bytes`,
//! `proxy_get_buffer_status`).

use bytes::Bytes;
use wasmtime::{Caller, Linker};

use crate::host::{check_allowed, code};
use crate::memory::{return_bytes, split, write_u32};
use crate::state::{HostState, RootPhase};
use crate::types::{BufferType, HostResult, Status};

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap("env", "proxy_get_buffer_bytes", get_buffer_bytes)?;
    linker.func_wrap("env", "proxy_set_buffer_bytes", set_buffer_bytes)?;
    linker.func_wrap("env", "proxy_get_buffer_status", get_buffer_status)?;
    linker.func_wrap("env", "proxy_get_configuration", get_configuration)?;
    Ok(())
}

/// The current content of a buffer, shared (no copy) when it is immutable.
fn buffer(state: &HostState, ty: BufferType) -> HostResult<Bytes> {
    match ty {
        BufferType::VmConfiguration => Ok(state.plugin.vm_configuration.clone()),
        BufferType::PluginConfiguration => Ok(state.plugin.configuration.clone()),
        _ => Err(Status::NotFound),
    }
}

/// Copies up to `max_size` bytes from `start` of the buffer to the guest.
///
/// ABI: `proxy_get_buffer_bytes`. BadArgument for an unknown type; NotFound when the buffer
/// does not exist here; a range past the end is clamped (an empty result is ptr=0,size=0).
fn get_buffer_bytes(
    mut caller: Caller<'_, HostState>,
    buffer_type: u32,
    start: u32,
    max_size: u32,
    ret_ptr: u32,
    ret_size: u32,
) -> wasmtime::Result<u32> {
    check_allowed(&caller, "proxy_get_buffer_bytes")?;
    let Some(ty) = BufferType::from_u32(buffer_type) else {
        return Ok(Status::BadArgument.code());
    };
    let data = match buffer(caller.data(), ty) {
        Ok(data) => data,
        Err(status) => return Ok(status.code()),
    };
    let start = (start as usize).min(data.len());
    let end = start.saturating_add(max_size as usize).min(data.len());
    Ok(code(return_bytes(
        &mut caller,
        &data[start..end],
        ret_ptr,
        ret_size,
    )?))
}

/// Replaces bytes of a buffer.
///
/// ABI: `proxy_set_buffer_bytes`. BadArgument for an unknown type or an immutable buffer
/// (the configuration buffers); NotFound when the buffer does not exist here.
fn set_buffer_bytes(
    caller: Caller<'_, HostState>,
    buffer_type: u32,
    _start: u32,
    _size: u32,
    _data_ptr: u32,
    _data_size: u32,
) -> wasmtime::Result<u32> {
    check_allowed(&caller, "proxy_set_buffer_bytes")?;
    Ok(match BufferType::from_u32(buffer_type) {
        None | Some(BufferType::VmConfiguration | BufferType::PluginConfiguration) => {
            Status::BadArgument.code()
        }
        Some(_) => Status::NotFound.code(),
    })
}

/// Writes a buffer's length and flags (always 0, as in cpp-host).
///
/// ABI: `proxy_get_buffer_status`. BadArgument for an unknown type; NotFound when the buffer
/// does not exist here.
fn get_buffer_status(
    mut caller: Caller<'_, HostState>,
    buffer_type: u32,
    ret_size: u32,
    ret_flags: u32,
) -> wasmtime::Result<u32> {
    check_allowed(&caller, "proxy_get_buffer_status")?;
    let Some(ty) = BufferType::from_u32(buffer_type) else {
        return Ok(Status::BadArgument.code());
    };
    let (mem, state) = split(&mut caller);
    let len = match buffer(state, ty) {
        Ok(data) => data.len() as u32,
        Err(status) => return Ok(status.code()),
    };
    Ok(code(
        write_u32(mem, ret_size, len).and_then(|()| write_u32(mem, ret_flags, 0)),
    ))
}

/// ABI 0.1.0: the VM configuration during `proxy_on_vm_start`, the plugin configuration during
/// `proxy_on_configure`, nothing elsewhere.
fn get_configuration(
    mut caller: Caller<'_, HostState>,
    ret_ptr: u32,
    ret_size: u32,
) -> wasmtime::Result<u32> {
    check_allowed(&caller, "proxy_get_configuration")?;
    let state = caller.data();
    let data = match state.root_phase {
        RootPhase::VmStart => state.plugin.vm_configuration.clone(),
        RootPhase::Configure => state.plugin.configuration.clone(),
        RootPhase::Other => return Ok(Status::NotFound.code()),
    };
    Ok(code(return_bytes(&mut caller, &data, ret_ptr, ret_size)?))
}
