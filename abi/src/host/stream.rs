//! Stream control: proxy-wasm ABI v0.2.1 §HTTP streams (`proxy_continue_stream`,
//! `proxy_close_stream`, `proxy_send_local_response`) and their 0.1.0 forms.
//!
//! As in Envoy, nothing happens during the call: the request is recorded on the stream and the
//! embedder acts on it after the callback returns.

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use wasmtime::{Caller, Linker};

use crate::host::{check_allowed, code};
use crate::memory::{slice, split};
use crate::pairs;
use crate::state::HostState;
use crate::stream::LocalReply;
use crate::types::{HostResult, Status, StreamType};

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap("env", "proxy_continue_stream", continue_stream)?;
    linker.func_wrap("env", "proxy_close_stream", close_stream)?;
    linker.func_wrap("env", "proxy_send_local_response", send_local_response)?;
    linker.func_wrap(
        "env",
        "proxy_continue_request",
        |caller: Caller<'_, HostState>| continue_stream(caller, 0),
    )?;
    linker.func_wrap(
        "env",
        "proxy_continue_response",
        |caller: Caller<'_, HostState>| continue_stream(caller, 1),
    )?;
    linker.func_wrap(
        "env",
        "proxy_clear_route_cache",
        |caller: Caller<'_, HostState>| -> wasmtime::Result<u32> {
            check_allowed(&caller, "proxy_clear_route_cache")?;
            // Routes are chosen once per request, before filters run: nothing is cached.
            Ok(Status::Ok.code())
        },
    )?;
    Ok(())
}

/// Resumes a paused request or response once the callback returns.
///
/// ABI: `proxy_continue_stream`. BadArgument for an unknown stream type or outside a stream;
/// Unimplemented for the L4 streams (Envoy does the same for Upstream).
fn continue_stream(mut caller: Caller<'_, HostState>, stream_type: u32) -> wasmtime::Result<u32> {
    check_allowed(&caller, "proxy_continue_stream")?;
    let Some(ty) = StreamType::from_u32(stream_type) else {
        return Ok(Status::BadArgument.code());
    };
    let Some(stream) = caller.data_mut().stream_mut() else {
        return Ok(Status::BadArgument.code());
    };
    let status = match ty {
        StreamType::HttpRequest => {
            stream.actions.continue_request = true;
            Status::Ok
        }
        StreamType::HttpResponse => {
            stream.actions.continue_response = true;
            Status::Ok
        }
        StreamType::Downstream | StreamType::Upstream => Status::Unimplemented,
    };
    stream.wake();
    Ok(status.code())
}

/// Resets the stream once the callback returns.
///
/// ABI: `proxy_close_stream`. BadArgument for an unknown stream type or outside a stream.
fn close_stream(mut caller: Caller<'_, HostState>, stream_type: u32) -> wasmtime::Result<u32> {
    check_allowed(&caller, "proxy_close_stream")?;
    if StreamType::from_u32(stream_type).is_none() {
        return Ok(Status::BadArgument.code());
    }
    let Some(stream) = caller.data_mut().stream_mut() else {
        return Ok(Status::BadArgument.code());
    };
    stream.actions.close = true;
    stream.wake();
    Ok(Status::Ok.code())
}

/// Answers the client with a synthetic response once the callback returns; the callback's own
/// return value is then treated as Pause. Only the first local reply of a stream counts (a
/// second one is accepted and ignored, so the client never hangs on two replies).
///
/// ABI: `proxy_send_local_response`. BadArgument for a status outside 200..=599, a body over the
/// plugin's cap, malformed or invalid headers, or outside a stream; InvalidMemoryAccess for a
/// bad range.
#[allow(clippy::too_many_arguments, reason = "the ABI's signature")]
fn send_local_response(
    mut caller: Caller<'_, HostState>,
    status: u32,
    details_ptr: u32,
    details_size: u32,
    body_ptr: u32,
    body_size: u32,
    headers_ptr: u32,
    headers_size: u32,
    grpc_status: i32,
) -> wasmtime::Result<u32> {
    check_allowed(&caller, "proxy_send_local_response")?;
    let (mem, state) = split(&mut caller);
    Ok(code((|| -> HostResult {
        let details = slice(mem, details_ptr, details_size)?;
        let body = slice(mem, body_ptr, body_size)?;
        let headers = slice(mem, headers_ptr, headers_size)?;
        let limits = &state.plugin.limits;
        if !crate::types::is_final_status(status) || body.len() > limits.max_local_reply_body {
            return Err(Status::BadArgument);
        }
        let entries = pairs::decode(headers, limits.max_pairs, limits.max_pairs_bytes)
            .map_err(|_| Status::BadArgument)?;
        let mut parsed = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            let name = HeaderName::from_bytes(k).map_err(|_| Status::BadArgument)?;
            let value = HeaderValue::from_bytes(v).map_err(|_| Status::BadArgument)?;
            parsed.push((name, value));
        }
        let reply = LocalReply {
            status: status as u16,
            details: String::from_utf8_lossy(&details[..details.len().min(256)]).into_owned(),
            body: Bytes::copy_from_slice(body),
            headers: parsed,
            grpc_status: u32::try_from(grpc_status).ok().filter(|s| *s <= 16),
        };
        let stream = state.stream_mut().ok_or(Status::BadArgument)?;
        if stream.actions.local_reply.is_none() && !stream.replied_locally {
            stream.actions.local_reply = Some(reply);
            stream.wake();
        }
        Ok(())
    })()))
}
