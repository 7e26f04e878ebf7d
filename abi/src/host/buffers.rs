//! Buffers: proxy-wasm ABI v0.2.1 §Buffers (`proxy_{get,set}_buffer_bytes`,
//! `proxy_get_buffer_status`).

use bytes::Bytes;
use wasmtime::{Caller, Linker};

use crate::host::{check_allowed, code};
use crate::memory::{return_bytes, return_with, slice, split, write_u32};
use crate::state::{HostState, RootPhase};
use crate::types::{BufferType, HostResult, Status};

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap("env", "proxy_get_buffer_bytes", get_buffer_bytes)?;
    linker.func_wrap("env", "proxy_set_buffer_bytes", set_buffer_bytes)?;
    linker.func_wrap("env", "proxy_get_buffer_status", get_buffer_status)?;
    linker.func_wrap("env", "proxy_get_configuration", get_configuration)?;
    Ok(())
}

/// The content of an immutable buffer, shared (no copy): the configurations, and a callout's
/// response body or a gRPC message while it is delivered.
fn config_buffer(state: &HostState, ty: BufferType) -> Option<Bytes> {
    match ty {
        BufferType::VmConfiguration => Some(state.plugin.vm_configuration.clone()),
        BufferType::PluginConfiguration => Some(state.plugin.configuration.clone()),
        BufferType::HttpCallResponseBody => state.call_response.as_ref().map(|r| r.body.clone()),
        // A gRPC message, during `proxy_on_grpc_receive` only.
        BufferType::GrpcReceiveBuffer => state.grpc_message.clone(),
        _ => None,
    }
}

/// Whether `ty` is a body of the HTTP stream, and which one.
fn stream_body(ty: BufferType) -> Option<bool> {
    match ty {
        BufferType::HttpRequestBody => Some(true),
        BufferType::HttpResponseBody => Some(false),
        _ => None,
    }
}

/// The length of a buffer, if it exists here.
fn buffer_len(state: &HostState, ty: BufferType) -> HostResult<usize> {
    if let Some(data) = config_buffer(state, ty) {
        return Ok(data.len());
    }
    if ty == BufferType::HttpCallResponseBody {
        return state
            .call_response
            .as_ref()
            .map(|r| r.body.len())
            .ok_or(Status::NotFound);
    }
    let request = stream_body(ty).ok_or(Status::NotFound)?;
    let stream = state.stream().ok_or(Status::NotFound)?;
    let body = if request {
        stream.request_body()
    } else {
        stream.response_body()
    };
    body.map(|b| b.len()).ok_or(Status::NotFound)
}

/// Copies up to `max_size` bytes from `start` of the buffer to the guest.
///
/// ABI: `proxy_get_buffer_bytes`. BadArgument for an unknown type; NotFound when the buffer
/// does not exist here (a body outside its callbacks, unless a filter holds it); a range past
/// the end is clamped (an empty result is ptr=0,size=0).
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
    let clamp = |len: usize| {
        let start = (start as usize).min(len);
        (start, start.saturating_add(max_size as usize).min(len))
    };
    if let Some(data) = config_buffer(caller.data(), ty) {
        let (from, to) = clamp(data.len());
        return Ok(code(return_bytes(
            &mut caller,
            &data[from..to],
            ret_ptr,
            ret_size,
        )?));
    }
    let Some(request) = stream_body(ty) else {
        return Ok(Status::NotFound.code());
    };
    // Lend the stream out while the guest allocator runs; the body is copied straight from
    // its chunks into guest memory.
    let stream = caller.data_mut().take_stream();
    let body = stream.as_deref().and_then(|s| {
        if request {
            s.request_body()
        } else {
            s.response_body()
        }
    });
    let result = match body {
        None => Ok(Err(Status::NotFound)),
        Some(body) => {
            let (from, to) = clamp(body.len());
            return_with(&mut caller, to - from, ret_ptr, ret_size, |dst| {
                body.copy_to(from, dst)
            })
        }
    };
    caller.data_mut().put_stream(stream);
    Ok(code(result?))
}

/// Replaces bytes of a body, with Envoy's three accepted forms: prepend (start=0, size=0),
/// replace everything (start=0, size>=length) and append (start>=length).
///
/// ABI: `proxy_set_buffer_bytes`. BadArgument for an unknown type, an immutable buffer (the
/// configuration buffers, callout responses, gRPC messages), another form, or a result over the filter's body limit; NotFound when
/// the body does not exist here.
fn set_buffer_bytes(
    mut caller: Caller<'_, HostState>,
    buffer_type: u32,
    start: u32,
    size: u32,
    data_ptr: u32,
    data_size: u32,
) -> wasmtime::Result<u32> {
    check_allowed(&caller, "proxy_set_buffer_bytes")?;
    let (mem, state) = split(&mut caller);
    Ok(code((|| {
        let ty = BufferType::from_u32(buffer_type).ok_or(Status::BadArgument)?;
        let Some(request) = stream_body(ty) else {
            return Err(match ty {
                BufferType::VmConfiguration
                | BufferType::PluginConfiguration
                | BufferType::HttpCallResponseBody
                | BufferType::GrpcReceiveBuffer => Status::BadArgument,
                _ => Status::NotFound,
            });
        };
        let data = slice(mem, data_ptr, data_size)?;
        let limit = state.plugin.limits.max_body_bytes;
        let stream = state.stream_mut().ok_or(Status::NotFound)?;
        let body = stream.body_mut(request).as_mut().ok_or(Status::NotFound)?;
        body.set(start as usize, size as usize, data, limit)
    })()))
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
    let len = match buffer_len(state, ty) {
        Ok(len) => len as u32,
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
