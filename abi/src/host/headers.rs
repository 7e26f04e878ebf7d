//! Header maps: proxy-wasm ABI v0.2.1 §HTTP fields (`proxy_*_header_map_*`).
//!
//! Reads of a map that does not exist at this point of the stream find nothing (NotFound, or an
//! empty map for pairs); writes to it, or to a map already sent on, are BadArgument (Envoy).

use wasmtime::{Caller, Linker};

use crate::header_map::{HeaderMap, MapCaps};
use crate::host::{check_allowed, code};
use crate::memory::{return_with, slice, split, write_u32};
use crate::pairs;
use crate::state::HostState;
use crate::stream::MapState;
use crate::types::{AbiVersion, HostResult, MapType, Status};

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap("env", "proxy_get_header_map_size", get_header_map_size)?;
    linker.func_wrap("env", "proxy_get_header_map_pairs", get_header_map_pairs)?;
    linker.func_wrap("env", "proxy_set_header_map_pairs", set_header_map_pairs)?;
    linker.func_wrap("env", "proxy_get_header_map_value", get_header_map_value)?;
    linker.func_wrap("env", "proxy_add_header_map_value", add_header_map_value)?;
    linker.func_wrap(
        "env",
        "proxy_replace_header_map_value",
        replace_header_map_value,
    )?;
    linker.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        remove_header_map_value,
    )?;
    Ok(())
}

/// The map a read refers to, if it exists now.
fn readable(state: &HostState, map: MapType) -> Option<&HeaderMap> {
    match map {
        MapType::HttpCallResponseHeaders => {
            return state.call_response.as_ref().map(|r| &r.headers);
        }
        MapType::HttpCallResponseTrailers => {
            return state.call_response.as_ref().map(|r| &r.trailers);
        }
        // gRPC metadata exists only during its callback (Envoy).
        MapType::GrpcReceiveInitialMetadata => return state.grpc_initial_metadata.as_ref(),
        MapType::GrpcReceiveTrailingMetadata => return state.grpc_trailing_metadata.as_ref(),
        _ => {}
    }
    let stream = state.stream()?;
    match stream.map_state(map) {
        MapState::Absent => None,
        MapState::ReadOnly | MapState::Writable => stream.map(map),
    }
}

/// The map a write refers to, if it can still change.
fn writable(state: &mut HostState, map: MapType) -> HostResult<&mut HeaderMap> {
    let stream = state.stream_mut().ok_or(Status::BadArgument)?;
    if stream.map_state(map) != MapState::Writable {
        return Err(Status::BadArgument);
    }
    stream.map_mut(map).ok_or(Status::BadArgument)
}

/// Writes the map's byte size (Envoy's `byteSize()`: names plus values).
///
/// ABI: `proxy_get_header_map_size`. BadArgument for an unknown or absent map.
fn get_header_map_size(
    mut caller: Caller<'_, HostState>,
    map_type: u32,
    ret_size: u32,
) -> wasmtime::Result<u32> {
    check_allowed(&caller, "proxy_get_header_map_size")?;
    let (mem, state) = split(&mut caller);
    let Some(map) = MapType::from_u32(map_type) else {
        return Ok(Status::BadArgument.code());
    };
    let Some(map) = readable(state, map) else {
        return Ok(Status::BadArgument.code());
    };
    Ok(code(write_u32(mem, ret_size, map.byte_size() as u32)))
}

/// Returns the whole map in the pairs format; an empty or absent map is ptr=0,size=0.
///
/// ABI: `proxy_get_header_map_pairs`. BadArgument for an unknown map type.
fn get_header_map_pairs(
    mut caller: Caller<'_, HostState>,
    map_type: u32,
    ret_ptr: u32,
    ret_size: u32,
) -> wasmtime::Result<u32> {
    check_allowed(&caller, "proxy_get_header_map_pairs")?;
    let Some(map) = MapType::from_u32(map_type) else {
        return Ok(Status::BadArgument.code());
    };
    // Lend the stream out of the state while the guest allocator runs, so the map can be
    // encoded straight into guest memory without an intermediate copy.
    let stream = caller.data_mut().take_stream();
    let response = match map {
        MapType::HttpCallResponseHeaders | MapType::HttpCallResponseTrailers => {
            caller.data_mut().call_response.take()
        }
        _ => None,
    };
    let grpc = match map {
        MapType::GrpcReceiveInitialMetadata => caller.data_mut().grpc_initial_metadata.take(),
        MapType::GrpcReceiveTrailingMetadata => caller.data_mut().grpc_trailing_metadata.take(),
        _ => None,
    };
    let empty = HeaderMap::default();
    let source = match (map, &response, stream.as_deref()) {
        (MapType::GrpcReceiveInitialMetadata | MapType::GrpcReceiveTrailingMetadata, _, _) => {
            grpc.as_ref().unwrap_or(&empty)
        }
        (MapType::HttpCallResponseHeaders, Some(r), _) => &r.headers,
        (MapType::HttpCallResponseTrailers, Some(r), _) => &r.trailers,
        (_, _, Some(s)) if s.map_state(map) != MapState::Absent => s.map(map).unwrap_or(&empty),
        _ => &empty,
    };
    let len = if source.is_empty() {
        0
    } else {
        pairs::encoded_len(source.pairs())
    };
    let result = return_with(&mut caller, len, ret_ptr, ret_size, |dst| {
        pairs::encode_into(source.pairs(), dst)
    });
    let state = caller.data_mut();
    state.put_stream(stream);
    if response.is_some() {
        state.call_response = response;
    }
    match (map, grpc) {
        (MapType::GrpcReceiveInitialMetadata, Some(m)) => state.grpc_initial_metadata = Some(m),
        (MapType::GrpcReceiveTrailingMetadata, Some(m)) => state.grpc_trailing_metadata = Some(m),
        _ => {}
    }
    Ok(code(result?))
}

/// Replaces every header of the map with the given pairs (pseudo-headers left out keep their
/// value). All-or-nothing: a malformed buffer or one bad name or value changes nothing.
///
/// ABI: `proxy_set_header_map_pairs`. BadArgument for an unknown, absent or sent map, a
/// malformed pairs buffer, or an invalid name or value.
fn set_header_map_pairs(
    mut caller: Caller<'_, HostState>,
    map_type: u32,
    ptr: u32,
    size: u32,
) -> wasmtime::Result<u32> {
    check_allowed(&caller, "proxy_set_header_map_pairs")?;
    let (mem, state) = split(&mut caller);
    Ok(code((|| {
        let map = MapType::from_u32(map_type).ok_or(Status::BadArgument)?;
        let buf = slice(mem, ptr, size)?;
        let limits = &state.plugin.limits;
        let (max_pairs, max_bytes, max_header) = (
            limits.max_pairs,
            limits.max_pairs_bytes,
            limits.max_header_bytes,
        );
        let entries = pairs::decode(buf, max_pairs, max_bytes).map_err(|_| Status::BadArgument)?;
        writable(state, map)?.set_all(entries, max_header)
    })()))
}

/// Returns the first value of `key` (Envoy returns only the first of several).
///
/// ABI: `proxy_get_header_map_value`. NotFound for a missing key or an absent map (ABI 0.1.0
/// modules get Ok and an empty value instead); BadArgument for an unknown map type.
fn get_header_map_value(
    mut caller: Caller<'_, HostState>,
    map_type: u32,
    key_ptr: u32,
    key_size: u32,
    ret_ptr: u32,
    ret_size: u32,
) -> wasmtime::Result<u32> {
    check_allowed(&caller, "proxy_get_header_map_value")?;
    let Some(map) = MapType::from_u32(map_type) else {
        return Ok(Status::BadArgument.code());
    };
    let value = {
        let (mem, state) = split(&mut caller);
        let key = match slice(mem, key_ptr, key_size) {
            Ok(key) => key,
            Err(status) => return Ok(status.code()),
        };
        match readable(state, map).and_then(|m| m.get(key)) {
            Some(value) => value.clone(),
            None if state.abi == AbiVersion::V0_1_0 => http::HeaderValue::from_static(""),
            None => return Ok(Status::NotFound.code()),
        }
    };
    Ok(code(return_with(
        &mut caller,
        value.len(),
        ret_ptr,
        ret_size,
        |dst| dst.copy_from_slice(value.as_bytes()),
    )?))
}

/// The arguments of the add and replace calls, read in place from guest memory.
fn with_key_value(
    caller: &mut Caller<'_, HostState>,
    map_type: u32,
    key: (u32, u32),
    value: (u32, u32),
    apply: impl FnOnce(&mut HeaderMap, &[u8], &[u8], usize, MapCaps) -> HostResult,
) -> u32 {
    let (mem, state) = split(caller);
    code((|| {
        let map = MapType::from_u32(map_type).ok_or(Status::BadArgument)?;
        let key = slice(mem, key.0, key.1)?;
        let value = slice(mem, value.0, value.1)?;
        let limits = &state.plugin.limits;
        let max = limits.max_header_bytes;
        // The same caps as a whole map set at once (`proxy_set_header_map_pairs`).
        let caps = MapCaps {
            max_entries: limits.max_pairs,
            max_bytes: limits.max_pairs_bytes,
        };
        apply(writable(state, map)?, key, value, max, caps)
    })())
}

/// Appends a value; duplicates are allowed. The name is lower-cased.
///
/// ABI: `proxy_add_header_map_value`. BadArgument for an unknown, absent or sent map, an
/// invalid name or value (CR, LF, NUL and other control bytes are refused), or a map that
/// would pass `max_pairs` entries or `max_pairs_bytes` bytes.
fn add_header_map_value(
    mut caller: Caller<'_, HostState>,
    map_type: u32,
    key_ptr: u32,
    key_size: u32,
    value_ptr: u32,
    value_size: u32,
) -> wasmtime::Result<u32> {
    check_allowed(&caller, "proxy_add_header_map_value")?;
    Ok(with_key_value(
        &mut caller,
        map_type,
        (key_ptr, key_size),
        (value_ptr, value_size),
        |map, k, v, max, caps| map.add_capped(k, v, max, caps),
    ))
}

/// Sets the name to exactly one value, adding it if missing.
///
/// ABI: `proxy_replace_header_map_value`. Statuses as for add.
fn replace_header_map_value(
    mut caller: Caller<'_, HostState>,
    map_type: u32,
    key_ptr: u32,
    key_size: u32,
    value_ptr: u32,
    value_size: u32,
) -> wasmtime::Result<u32> {
    check_allowed(&caller, "proxy_replace_header_map_value")?;
    Ok(with_key_value(
        &mut caller,
        map_type,
        (key_ptr, key_size),
        (value_ptr, value_size),
        |map, k, v, max, caps| map.replace_capped(k, v, max, caps),
    ))
}

/// Removes every value of the name; a missing name is Ok.
///
/// ABI: `proxy_remove_header_map_value`. BadArgument for an unknown, absent or sent map, or a
/// pseudo-header (a request cannot be forwarded without one).
fn remove_header_map_value(
    mut caller: Caller<'_, HostState>,
    map_type: u32,
    key_ptr: u32,
    key_size: u32,
) -> wasmtime::Result<u32> {
    check_allowed(&caller, "proxy_remove_header_map_value")?;
    let (mem, state) = split(&mut caller);
    Ok(code((|| {
        let map = MapType::from_u32(map_type).ok_or(Status::BadArgument)?;
        let key = slice(mem, key_ptr, key_size)?;
        writable(state, map)?.remove(key)
    })()))
}
