//! Properties: proxy-wasm ABI v0.2.1 §Properties (`proxy_get_property`, `proxy_set_property`),
//! with Envoy's attribute names and binary encodings.

use std::time::UNIX_EPOCH;

use http::HeaderName;
use wasmtime::{Caller, Linker};

use crate::header_map::{HeaderMap, Pseudo};
use crate::host::{check_allowed, code};
use crate::memory::{return_bytes, slice, split};
use crate::pairs;
use crate::state::HostState;
use crate::stream::{HttpStream, MapState};
use crate::types::{MapType, Status};

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap("env", "proxy_get_property", get_property)?;
    linker.func_wrap("env", "proxy_set_property", set_property)?;
    Ok(())
}

/// A property value before encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    Bytes(Vec<u8>),
    Int(i64),
    Bool(bool),
    /// Encoded in the pairs format, as Envoy encodes maps.
    Map(Vec<(Vec<u8>, Vec<u8>)>),
}

impl Value {
    /// Envoy's encoding: raw bytes for strings, 8-byte little-endian integers (timestamps in
    /// nanoseconds), one byte for booleans, the pairs format for maps.
    pub(crate) fn encode(self) -> Vec<u8> {
        match self {
            Value::Bytes(b) => b,
            Value::Int(i) => i.to_le_bytes().to_vec(),
            Value::Bool(b) => vec![u8::from(b)],
            Value::Map(entries) => {
                pairs::encode(entries.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))
            }
        }
    }
}

fn text(s: &str) -> Option<Value> {
    Some(Value::Bytes(s.as_bytes().to_vec()))
}

/// Splits a property path: segments joined by NUL, one trailing NUL tolerated.
pub(crate) fn split_path(path: &[u8]) -> Vec<&[u8]> {
    let path = path.strip_suffix(&[0]).unwrap_or(path);
    path.split(|&b| b == 0).collect()
}

/// Top-level names Envoy answers itself (its attributes and property tokens). Any other
/// top-level name is looked up in the stream's filter state (`proxy_set_property`), as Envoy
/// looks up `wasm.<name>`.
const RESERVED: &[&[u8]] = &[
    b"request",
    b"response",
    b"connection",
    b"upstream",
    b"source",
    b"destination",
    b"metadata",
    b"filter_state",
    b"upstream_filter_state",
    b"xds",
    b"node",
    b"plugin_name",
    b"plugin_root_id",
    b"plugin_vm_id",
    b"connection_id",
];

/// The prefix Envoy gives filter state written by `proxy_set_property`, as seen through the
/// `filter_state` attribute.
const FILTER_STATE_PREFIX: &[u8] = b"wasm.";

/// Resolves a property path against the plugin and the current stream.
pub(crate) fn lookup(state: &HostState, path: &[&[u8]]) -> Option<Value> {
    let plugin = &state.plugin;
    match path {
        [b"plugin_name"] => return text(&plugin.name),
        [b"plugin_root_id"] => return text(&plugin.root_id),
        [b"plugin_vm_id"] => return text(&plugin.vm_id),
        _ => {}
    }
    let stream = state.stream()?;
    match path {
        // A value set by a filter is bytes: nothing to descend into.
        [name] if !RESERVED.contains(name) => {
            Some(Value::Bytes(stream.filter_state.get(name)?.to_vec()))
        }
        _ => stream_property(stream, path),
    }
}

fn stream_property(stream: &HttpStream, path: &[&[u8]]) -> Option<Value> {
    let info = &stream.info;
    let facts = &stream.facts;
    match path {
        [b"request", rest @ ..] => request_property(stream, rest),
        [b"response", rest @ ..] => response_property(stream, rest),
        [b"source", b"address"] => text(&info.source?.to_string()),
        [b"source", b"port"] => Some(Value::Int(i64::from(info.source?.port()))),
        [b"destination", b"address"] => text(&info.destination?.to_string()),
        [b"destination", b"port"] => Some(Value::Int(i64::from(info.destination?.port()))),
        [b"connection", b"id"] | [b"connection_id"] => Some(Value::Int(info.id as i64)),
        [b"connection", b"mtls"] => Some(Value::Bool(false)),
        [b"upstream", b"address"] => text(&facts.upstream_address?.to_string()),
        [b"upstream", b"port"] => Some(Value::Int(i64::from(facts.upstream_address?.port()))),
        [b"xds", b"cluster_name"] => text(facts.cluster_name.as_deref()?),
        [b"filter_state"] => Some(Value::Map(
            stream
                .filter_state
                .iter()
                .map(|(k, v)| ([FILTER_STATE_PREFIX, k].concat(), v.to_vec()))
                .collect(),
        )),
        [b"filter_state", key] => {
            let name = key.strip_prefix(FILTER_STATE_PREFIX)?;
            Some(Value::Bytes(stream.filter_state.get(name)?.to_vec()))
        }
        _ => None,
    }
}

fn request_property(stream: &HttpStream, path: &[&[u8]]) -> Option<Value> {
    let info = &stream.info;
    if path == [b"protocol"] {
        return text(info.protocol);
    }
    if path == [b"time"] {
        let nanos = info.start_time.duration_since(UNIX_EPOCH).ok()?.as_nanos();
        return Some(Value::Int(i64::try_from(nanos).ok()?));
    }
    if path == [b"duration"] {
        let nanos = stream.facts.duration?.as_nanos();
        return Some(Value::Int(i64::try_from(nanos).ok()?));
    }
    if stream.map_state(MapType::RequestHeaders) == MapState::Absent {
        return None;
    }
    let headers = &stream.request_headers;
    let pseudo = |p| Some(Value::Bytes(headers.pseudo(p)?.as_bytes().to_vec()));
    let header = |name: &str| Some(Value::Bytes(joined(headers, name.as_bytes())?));
    match path {
        [b"path"] => pseudo(Pseudo::Path),
        [b"url_path"] => {
            let path = headers.pseudo(Pseudo::Path)?.as_bytes();
            let end = path.iter().position(|&b| b == b'?').unwrap_or(path.len());
            Some(Value::Bytes(path[..end].to_vec()))
        }
        [b"query"] => {
            let path = headers.pseudo(Pseudo::Path)?.as_bytes();
            let start = path
                .iter()
                .position(|&b| b == b'?')
                .map_or(path.len(), |i| i + 1);
            Some(Value::Bytes(path[start..].to_vec()))
        }
        [b"host"] => pseudo(Pseudo::Authority),
        [b"scheme"] => pseudo(Pseudo::Scheme),
        [b"method"] => pseudo(Pseudo::Method),
        [b"referer"] => header("referer"),
        [b"useragent"] => header("user-agent"),
        [b"id"] => header(
            stream
                .info
                .request_id_header
                .as_ref()
                .map_or("x-request-id", HeaderName::as_str),
        ),
        [b"headers"] => Some(as_map(headers)),
        [b"headers", name] => Some(Value::Bytes(joined(headers, name)?)),
        [b"headers_bytes"] => Some(Value::Int(i64::try_from(headers.byte_size()).ok()?)),
        // Envoy: the content-length when there is one, else the bytes received.
        [b"size"] => match headers.get(b"content-length") {
            Some(length) => Some(Value::Int(length.to_str().ok()?.trim().parse().ok()?)),
            None => Some(Value::Int(
                i64::try_from(stream.facts.request_body_bytes?).ok()?,
            )),
        },
        [b"total_size"] => {
            let trailers = match stream.map_state(MapType::RequestTrailers) {
                MapState::Absent => 0,
                _ => stream.request_trailers.byte_size(),
            };
            let total = stream
                .facts
                .request_body_bytes?
                .checked_add(u64::try_from(headers.byte_size() + trailers).ok()?)?;
            Some(Value::Int(i64::try_from(total).ok()?))
        }
        _ => None,
    }
}

fn response_property(stream: &HttpStream, path: &[&[u8]]) -> Option<Value> {
    if path == [b"code_details"] {
        return code_details(stream).map(|d| Value::Bytes(d.into_bytes()));
    }
    if stream.map_state(MapType::ResponseHeaders) == MapState::Absent {
        return None;
    }
    let headers = &stream.response_headers;
    let trailers = (stream.map_state(MapType::ResponseTrailers) != MapState::Absent)
        .then_some(&stream.response_trailers);
    match path {
        [b"code"] => Some(Value::Int(i64::from(stream.response_status()?))),
        [b"headers"] => Some(as_map(headers)),
        [b"headers", name] => Some(Value::Bytes(joined(headers, name)?)),
        [b"headers_bytes"] => Some(Value::Int(i64::try_from(headers.byte_size()).ok()?)),
        [b"trailers"] => Some(as_map(trailers?)),
        [b"trailers", name] => Some(Value::Bytes(joined(trailers?, name)?)),
        // From the trailers, or the headers of a trailers-only response.
        [b"grpc_status"] => {
            let value = trailers
                .and_then(|t| t.get(b"grpc-status"))
                .or_else(|| headers.get(b"grpc-status"))?;
            Some(Value::Int(value.to_str().ok()?.trim().parse().ok()?))
        }
        [b"size"] => Some(Value::Int(
            i64::try_from(stream.facts.response_body_bytes?).ok()?,
        )),
        [b"total_size"] => {
            let framing = headers.byte_size() + trailers.map_or(0, HeaderMap::byte_size);
            let total = stream
                .facts
                .response_body_bytes?
                .checked_add(u64::try_from(framing).ok()?)?;
            Some(Value::Int(i64::try_from(total).ok()?))
        }
        _ => None,
    }
}

/// `response.code_details`: what the embedder said, else a pending local reply's details,
/// else `via_upstream` for a response that came from upstream.
fn code_details(stream: &HttpStream) -> Option<String> {
    if let Some(details) = &stream.facts.response_code_details {
        return Some(details.clone());
    }
    if let Some(reply) = &stream.actions.local_reply {
        return Some(reply.details.clone());
    }
    let from_upstream =
        stream.map_state(MapType::ResponseHeaders) != MapState::Absent && !stream.replied_locally();
    from_upstream.then(|| "via_upstream".to_string())
}

/// Every value of `name`, joined with commas as Envoy's attribute maps do.
fn joined(headers: &HeaderMap, name: &[u8]) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    for (k, v) in headers.pairs() {
        if k.eq_ignore_ascii_case(name) {
            match &mut out {
                None => out = Some(v.to_vec()),
                Some(acc) => {
                    acc.push(b',');
                    acc.extend_from_slice(v);
                }
            }
        }
    }
    out
}

fn as_map(headers: &HeaderMap) -> Value {
    let mut entries: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for (k, v) in headers.pairs() {
        match entries.iter_mut().find(|(key, _)| key.as_slice() == k) {
            Some((_, acc)) => {
                acc.push(b',');
                acc.extend_from_slice(v);
            }
            None => entries.push((k.to_vec(), v.to_vec())),
        }
    }
    Value::Map(entries)
}

/// Returns the encoded value of a property.
///
/// ABI: `proxy_get_property`. NotFound for an unknown path or one without a value here;
/// InvalidMemoryAccess for a bad range.
fn get_property(
    mut caller: Caller<'_, HostState>,
    path_ptr: u32,
    path_size: u32,
    ret_ptr: u32,
    ret_size: u32,
) -> wasmtime::Result<u32> {
    check_allowed(&caller, "proxy_get_property")?;
    let value = {
        let (mem, state) = split(&mut caller);
        let path = match slice(mem, path_ptr, path_size) {
            Ok(path) => path,
            Err(status) => return Ok(status.code()),
        };
        match lookup(state, &split_path(path)) {
            Some(value) => value.encode(),
            None => return Ok(Status::NotFound.code()),
        }
    };
    Ok(code(return_bytes(&mut caller, &value, ret_ptr, ret_size)?))
}

/// Stores `value` as filter state `path` of the current stream (Envoy's `wasm.<path>`), where
/// this and later filters read it with `proxy_get_property(path)` or
/// `proxy_get_property("filter_state", "wasm.<path>")`. Setting it again replaces it.
///
/// ABI: `proxy_set_property`. NotFound without a stream (a root context that has not chosen a
/// stream with `proxy_set_effective_context`); InternalFailure past the stream's filter-state
/// caps (the Rust SDK panics on it); InvalidMemoryAccess for a bad range.
fn set_property(
    mut caller: Caller<'_, HostState>,
    path_ptr: u32,
    path_size: u32,
    value_ptr: u32,
    value_size: u32,
) -> wasmtime::Result<u32> {
    check_allowed(&caller, "proxy_set_property")?;
    let (mem, state) = split(&mut caller);
    let (path, value) = match (
        slice(mem, path_ptr, path_size),
        slice(mem, value_ptr, value_size),
    ) {
        (Ok(path), Ok(value)) => (path, value),
        (Err(status), _) | (_, Err(status)) => return Ok(status.code()),
    };
    // The SDKs join segments with NUL; one trailing NUL is tolerated, as in get.
    let path = path.strip_suffix(&[0]).unwrap_or(path);
    let Some(stream) = state.stream_mut() else {
        return Ok(Status::NotFound.code());
    };
    Ok(code(stream.filter_state.set(path, value)))
}

#[cfg(test)]
mod tests;
