//! HTTP callouts: proxy-wasm ABI v0.2.1 §HTTP calls (gRPC is in `grpc.rs`).
//!
//! `proxy_http_call` sends a request to an upstream named in the configuration (Envoy's
//! cluster name) through the embedder's [`CalloutHandler`]; the answer reaches the root
//! context as `proxy_on_http_call_response`.
//!
//! [`CalloutHandler`]: crate::callout::CalloutHandler

use std::time::Duration;

use bytes::Bytes;
use wasmtime::{Caller, Linker};

use crate::callout::{CalloutError, CalloutRequest};
use crate::header_map::{HeaderMap, Pseudo};
use crate::host::{check_allowed, code};
use crate::memory::{return_bytes, slice, split, write_u32};
use crate::pairs;
use crate::state::HostState;
use crate::types::{HostResult, Status};

/// Callouts one VM may have in flight; past it `proxy_http_call` answers InternalFailure
/// (which the SDKs report to the filter as an error, not a panic).
pub(crate) const MAX_CALLOUTS_IN_FLIGHT: usize = 256;

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap("env", "proxy_http_call", http_call)?;
    linker.func_wrap("env", "proxy_get_status", get_status)?;
    Ok(())
}

/// Reads a pairs buffer into a header map, refusing invalid names and values.
fn read_map(buf: &[u8], state: &HostState) -> HostResult<HeaderMap> {
    let limits = &state.plugin.limits;
    let entries = pairs::decode(buf, limits.max_pairs, limits.max_pairs_bytes)
        .map_err(|_| Status::BadArgument)?;
    let mut map = HeaderMap::with_capacity(entries.len());
    for (k, v) in entries {
        map.add(k, v, limits.max_header_bytes)?;
    }
    Ok(map)
}

/// Sends an HTTP request to a configured upstream; the response arrives later on the root
/// context. The request must have `:method`, `:path` and `:authority`.
///
/// ABI: `proxy_http_call`. BadArgument for an unknown upstream, a missing pseudo-header, an
/// invalid header (CR, LF, NUL...) or a malformed pairs buffer, in which case nothing is sent;
/// InternalFailure past the in-flight cap; InvalidMemoryAccess for a bad range.
#[allow(clippy::too_many_arguments, reason = "the ABI's signature")]
fn http_call(
    mut caller: Caller<'_, HostState>,
    upstream_ptr: u32,
    upstream_size: u32,
    headers_ptr: u32,
    headers_size: u32,
    body_ptr: u32,
    body_size: u32,
    trailers_ptr: u32,
    trailers_size: u32,
    timeout_ms: u32,
    ret_token: u32,
) -> wasmtime::Result<u32> {
    check_allowed(&caller, "proxy_http_call")?;
    let (mem, state) = split(&mut caller);
    let prepared = (|| -> HostResult<(CalloutRequest, u32)> {
        // The token's address is checked first, so a bad one costs nothing.
        write_u32(mem, ret_token, 0)?;
        let upstream = slice(mem, upstream_ptr, upstream_size)?;
        let headers = slice(mem, headers_ptr, headers_size)?;
        let body = slice(mem, body_ptr, body_size)?;
        let trailers = slice(mem, trailers_ptr, trailers_size)?;
        let upstream = std::str::from_utf8(upstream)
            .map_err(|_| Status::BadArgument)?
            .to_string();
        let handler = state.plugin.callouts.as_ref().ok_or(Status::BadArgument)?;
        if !handler.has_upstream(&upstream) {
            return Err(Status::BadArgument);
        }
        let headers = read_map(headers, state)?;
        for required in [Pseudo::Method, Pseudo::Path, Pseudo::Authority] {
            if headers.pseudo(required).is_none() {
                return Err(Status::BadArgument);
            }
        }
        let trailers = read_map(trailers, state)?;
        if body.len() > state.plugin.limits.max_body_bytes {
            return Err(Status::BadArgument);
        }
        let body = Bytes::copy_from_slice(body);
        if state.callouts.len() >= MAX_CALLOUTS_IN_FLIGHT {
            return Err(Status::InternalFailure);
        }
        // Tokens are never 0 and, as in cpp-host, 0 modulo 4 (gRPC uses the other residues).
        state.next_token = state.next_token.wrapping_add(4);
        if state.next_token == 0 {
            state.next_token = 4;
        }
        let token = state.next_token;
        write_u32(mem, ret_token, token)?;
        let request = CalloutRequest {
            upstream,
            headers,
            body,
            trailers,
            timeout: (timeout_ms > 0).then(|| Duration::from_millis(u64::from(timeout_ms))),
        };
        Ok((request, token))
    })();
    let (request, token) = match prepared {
        Ok(p) => p,
        Err(status) => return Ok(status.code()),
    };
    let state = caller.data_mut();
    let (Some(handler), Some(home)) = (state.plugin.callouts.clone(), state.home.clone()) else {
        // A VM outside any pool can never be called back: refuse rather than lose the answer.
        return Ok(Status::InternalFailure.code());
    };
    let timeout = request.timeout;
    let task = state.runtime.background().spawn(async move {
        let call = handler.call(request);
        let outcome = match timeout {
            Some(t) => tokio::time::timeout(t, call)
                .await
                .unwrap_or(Err(CalloutError::Timeout)),
            None => call.await,
        };
        home.with_vm(|vm| vm.deliver_http_call(token, outcome));
    });
    let context = state.context_id;
    state.callouts.insert(token, (context, task.abort_handle()));
    Ok(Status::Ok.code())
}

/// The status of the callout being delivered: 0 and "" after a response, BrokenConnection
/// (11) and "reset" or "timeout" after a failure.
///
/// ABI: `proxy_get_status`. InvalidMemoryAccess for a bad out-pointer.
fn get_status(
    mut caller: Caller<'_, HostState>,
    ret_code: u32,
    ret_ptr: u32,
    ret_size: u32,
) -> wasmtime::Result<u32> {
    check_allowed(&caller, "proxy_get_status")?;
    let (code_value, message) = caller.data().call_status.clone();
    {
        let (mem, _) = split(&mut caller);
        if let Err(status) = write_u32(mem, ret_code, code_value) {
            return Ok(status.code());
        }
    }
    Ok(code(return_bytes(
        &mut caller,
        message.as_bytes(),
        ret_ptr,
        ret_size,
    )?))
}
