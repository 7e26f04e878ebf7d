//! gRPC callouts: proxy-wasm ABI v0.2.1 §gRPC calls (`proxy_grpc_call`, `proxy_grpc_stream`,
//! `proxy_grpc_send`, `proxy_grpc_cancel`, `proxy_grpc_close`).
//!
//! A filter names an upstream of the configuration (Envoy's cluster name); the embedder's
//! [`CalloutHandler::grpc`] talks to it. What comes back reaches the root context, in order:
//! for a stream `proxy_on_grpc_receive_initial_metadata`, `proxy_on_grpc_receive` per message,
//! `proxy_on_grpc_receive_trailing_metadata`, then `proxy_on_grpc_close`; for a unary call
//! either one `proxy_on_grpc_receive` (success) or one `proxy_on_grpc_close` (failure), never
//! both, as Envoy does and the Rust SDK requires.
//!
//! Tokens: calls are 1 and streams 2 modulo 4 (HTTP callouts use 0), never 0. Calls and
//! streams in flight sit in `HostState::callouts` beside the HTTP callouts, so they share the
//! in-flight cap, and a context that ends cancels them like its HTTP callouts.
//!
//! [`CalloutHandler::grpc`]: crate::callout::CalloutHandler::grpc

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use wasmtime::{Caller, Linker};

use crate::callout::{
    GrpcEvent, GrpcFuture, GrpcOutbound, GrpcOutboundSender, GrpcRequest, GrpcSend, grpc_status,
};
use crate::header_map::HeaderMap;
use crate::home::VmHome;
use crate::host::check_allowed;
use crate::host::http_call::MAX_CALLOUTS_IN_FLIGHT;
use crate::memory::{slice, split, write_u32};
use crate::pairs;
use crate::state::HostState;
use crate::types::{HostResult, Status};

/// Events the embedder may send ahead of their delivery to the filter: the rest waits (and the
/// embedder's reads with it, which gives the upstream HTTP/2 flow control).
const EVENTS_AHEAD: usize = 8;

/// Streams the upstream closed and the filter has not closed yet (Envoy keeps them until the
/// filter does, so that `proxy_grpc_close` still answers Ok); past this many the oldest goes.
const MAX_REMOTE_CLOSED: usize = MAX_CALLOUTS_IN_FLIGHT;

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap("env", "proxy_grpc_call", grpc_call)?;
    linker.func_wrap("env", "proxy_grpc_stream", grpc_stream)?;
    linker.func_wrap("env", "proxy_grpc_send", grpc_send)?;
    linker.func_wrap("env", "proxy_grpc_cancel", grpc_cancel)?;
    linker.func_wrap("env", "proxy_grpc_close", grpc_close)?;
    Ok(())
}

/// Whether `token` names a unary call (1 modulo 4).
pub(crate) fn is_call(token: u32) -> bool {
    token & 3 == 1
}

/// Whether `token` names a stream (2 modulo 4).
pub(crate) fn is_stream(token: u32) -> bool {
    token & 3 == 2
}

/// Whether `token` names a call or a stream (HTTP callouts are 0 modulo 4).
pub(crate) fn is_grpc(token: u32) -> bool {
    is_call(token) || is_stream(token)
}

/// What the host keeps of an open stream besides its entry in `callouts`.
#[derive(Debug)]
pub(crate) struct GrpcStream {
    /// The context that opened it; its end cancels the stream.
    pub(crate) owner: u32,
    /// Where the filter's messages go; `None` once the filter half-closed.
    sender: Option<GrpcOutboundSender>,
    /// The filter called `proxy_grpc_close`.
    local_closed: bool,
    /// `proxy_on_grpc_close` was delivered.
    remote_closed: bool,
}

/// Most message bytes a filter may send in one message, and queue on one stream.
fn max_message(state: &HostState) -> usize {
    state.plugin.limits.max_body_bytes
}

fn max_queued(state: &HostState) -> usize {
    state.plugin.limits.max_body_bytes.saturating_mul(4)
}

/// The upstream a `svc` argument names: a plain upstream name (printable ASCII), or (as Envoy
/// also accepts) a serialized `envoy.config.core.v3.GrpcService` whose `envoy_grpc.cluster_name`
/// is one. A serialized message never looks like a name: its first byte is a field key below
/// 0x20 (0x0a for `envoy_grpc`, 0x12 for `google_grpc`).
fn upstream_name(svc: &[u8]) -> Option<String> {
    let printable = |s: &[u8]| !s.is_empty() && s.iter().all(|b| (0x20..0x7f).contains(b));
    let name = if printable(svc) {
        svc
    } else {
        envoy_grpc_cluster(svc).filter(|n| printable(n))?
    };
    Some(String::from_utf8_lossy(name).into_owned())
}

/// `cluster_name` (field 1) of `envoy_grpc` (field 1) in a serialized `GrpcService`. Other
/// fields are skipped; any malformed field, or `google_grpc`, gives `None`.
fn envoy_grpc_cluster(proto: &[u8]) -> Option<&[u8]> {
    let envoy_grpc = proto_field(proto, 1)?;
    proto_field(envoy_grpc, 1)
}

/// The last length-delimited field `number` of a protobuf message (later fields win, as in
/// protobuf); `None` if the message is malformed or lacks it.
fn proto_field(mut msg: &[u8], number: u64) -> Option<&[u8]> {
    fn varint(buf: &mut &[u8]) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = buf.split_first()?;
            *buf = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }
    let mut found = None;
    // Every field consumes at least one byte, so this ends.
    while !msg.is_empty() {
        let key = varint(&mut msg)?;
        let skip = match key & 7 {
            0 => {
                varint(&mut msg)?;
                0
            }
            1 => 8,
            2 => {
                let len = usize::try_from(varint(&mut msg)?).ok()?;
                if len > msg.len() {
                    return None;
                }
                if key >> 3 == number {
                    found = Some(&msg[..len]);
                }
                len
            }
            5 => 4,
            _ => return None,
        };
        msg = msg.get(skip..)?;
    }
    found
}

/// A service or method name: one path segment of printable ASCII.
fn path_segment(bytes: &[u8]) -> HostResult<String> {
    let ok = !bytes.is_empty()
        && bytes
            .iter()
            .all(|&b| b.is_ascii_graphic() && !matches!(b, b'/' | b'?' | b'#' | b'%'));
    if !ok {
        return Err(Status::BadArgument);
    }
    Ok(String::from_utf8_lossy(bytes).into_owned())
}

/// The filter's initial metadata: regular headers only, each name and value valid.
fn read_metadata(buf: &[u8], state: &HostState) -> HostResult<HeaderMap> {
    let limits = &state.plugin.limits;
    let entries = pairs::decode(buf, limits.max_pairs, limits.max_pairs_bytes)
        .map_err(|_| Status::BadArgument)?;
    let mut map = HeaderMap::with_capacity(entries.len());
    for (k, v) in entries {
        if k.first() == Some(&b':') {
            return Err(Status::BadArgument);
        }
        map.add(k, v, limits.max_header_bytes)?;
    }
    // `add` logs edits for embedders that replay them; metadata is read whole.
    map.take_edits();
    Ok(map)
}

/// The next token of the kind (`residue` 1 for calls, 2 for streams), never one in use.
fn next_token(state: &mut HostState, residue: u32) -> u32 {
    // At most `callouts.len() + grpc_streams.len() + 1` tries: the sequence has 2^30 values.
    loop {
        state.grpc_seq = state.grpc_seq.wrapping_add(1) & 0x3fff_ffff;
        let token = (state.grpc_seq << 2) | residue;
        if !state.callouts.contains_key(&token) && !state.grpc_streams.contains_key(&token) {
            return token;
        }
    }
}

/// What `proxy_grpc_call` and `proxy_grpc_stream` read from the guest.
struct Open {
    svc: (u32, u32),
    service: (u32, u32),
    method: (u32, u32),
    metadata: (u32, u32),
    /// The unary call's message; `None` for a stream.
    message: Option<(u32, u32)>,
    timeout_ms: u32,
    ret_token: u32,
}

/// Checks and starts a call or stream; the status the guest gets.
fn open(caller: &mut Caller<'_, HostState>, args: Open) -> HostResult {
    let (mem, state) = split(caller);
    // The token's address first, so a bad one costs nothing.
    write_u32(mem, args.ret_token, 0)?;
    let svc = slice(mem, args.svc.0, args.svc.1)?;
    let service = slice(mem, args.service.0, args.service.1)?;
    let method = slice(mem, args.method.0, args.method.1)?;
    let metadata = slice(mem, args.metadata.0, args.metadata.1)?;
    let message = match args.message {
        Some((ptr, len)) => Some(slice(mem, ptr, len)?),
        None => None,
    };
    // As Envoy: an upstream that cannot be resolved is ParseFailure.
    let upstream = upstream_name(svc).ok_or(Status::ParseFailure)?;
    let handler = state.plugin.callouts.clone().ok_or(Status::ParseFailure)?;
    if !handler.has_upstream(&upstream) {
        return Err(Status::ParseFailure);
    }
    let service = path_segment(service)?;
    let method = path_segment(method)?;
    let metadata = read_metadata(metadata, state)?;
    if message.is_some_and(|m| m.len() > max_message(state)) {
        return Err(Status::BadArgument);
    }
    let message = message.map(Bytes::copy_from_slice);
    if state.callouts.len() >= MAX_CALLOUTS_IN_FLIGHT {
        return Err(Status::InternalFailure);
    }
    // A VM outside any pool can never be called back: refuse rather than lose the answer.
    let home = state.home.clone().ok_or(Status::InternalFailure)?;
    let token = next_token(state, if message.is_some() { 1 } else { 2 });
    write_u32(mem, args.ret_token, token)?;

    let timeout = (message.is_some() && args.timeout_ms > 0)
        .then(|| Duration::from_millis(u64::from(args.timeout_ms)));
    let request = GrpcRequest {
        unary: message.is_some(),
        upstream,
        service,
        method,
        metadata,
        timeout,
    };
    let (sender, outbound) = GrpcOutbound::channel();
    if let Some(message) = message {
        // A fresh queue always takes these two.
        sender.send(GrpcSend::Message(message), usize::MAX);
        sender.send(GrpcSend::HalfClose, usize::MAX);
    }
    let (events_tx, events_rx) = mpsc::channel(EVENTS_AHEAD);
    let work = handler.grpc(request, outbound, events_tx);
    let call = is_call(token);
    let task = state
        .runtime
        .background()
        .spawn(pump(call, token, home, work, events_rx, timeout));
    let owner = state.context_id;
    state.callouts.insert(token, (owner, task.abort_handle()));
    if !call {
        state.grpc_streams.insert(
            token,
            GrpcStream {
                owner,
                sender: Some(sender),
                local_closed: false,
                remote_closed: false,
            },
        );
    }
    Ok(())
}

/// Runs the embedder's work for one call or stream and delivers its events to the VM, in
/// order, until the close. Aborting the task drops the work, which resets the call.
async fn pump(
    call: bool,
    token: u32,
    home: VmHome,
    work: GrpcFuture,
    mut events: mpsc::Receiver<GrpcEvent>,
    timeout: Option<Duration>,
) {
    let mut work = work;
    let mut working = true;
    let deadline = async move {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let mut reply = None;
    loop {
        let event = tokio::select! {
            event = events.recv() => event.unwrap_or_else(|| {
                GrpcEvent::close(grpc_status::UNKNOWN, "the call ended without a status")
            }),
            () = &mut work, if working => {
                // Its events stay queued; once they are read, `recv` gives None.
                working = false;
                continue;
            }
            () = &mut deadline => GrpcEvent::close(grpc_status::DEADLINE_EXCEEDED, "deadline exceeded"),
        };
        let (deliver, last) = if call {
            unary_step(&mut reply, event)
        } else {
            let last = matches!(event, GrpcEvent::Close { .. });
            (Some(event), last)
        };
        if let Some(event) = deliver {
            // The VM is gone (replaced, or its pool dropped): nobody is left to tell.
            if home.with_vm(|vm| vm.deliver_grpc(token, event)).is_none() {
                return;
            }
        }
        if last {
            return;
        }
    }
}

/// A unary call shows the filter only its outcome, as Envoy does: the one message after a
/// close with status OK, or the close. Returns what to deliver and whether the call is over.
fn unary_step(reply: &mut Option<Bytes>, event: GrpcEvent) -> (Option<GrpcEvent>, bool) {
    match event {
        GrpcEvent::InitialMetadata(_) | GrpcEvent::TrailingMetadata(_) => (None, false),
        GrpcEvent::Message(m) => {
            if reply.is_some() {
                let close = GrpcEvent::close(
                    grpc_status::INTERNAL,
                    "a unary call got more than one response message",
                );
                return (Some(close), true);
            }
            *reply = Some(m);
            (None, false)
        }
        GrpcEvent::Close { status, message } => {
            let outcome = match (status, reply.take()) {
                (grpc_status::OK, Some(m)) => GrpcEvent::Message(m),
                (grpc_status::OK, None) => GrpcEvent::close(
                    grpc_status::INTERNAL,
                    "a unary call ended without a response message",
                ),
                _ => GrpcEvent::Close { status, message },
            };
            (Some(outcome), true)
        }
    }
}

/// Bookkeeping after the last callback of `token` (a call's answer, a stream's close): the
/// call is no longer in flight; a stream stays known until the filter closes it too.
pub(crate) fn finished(state: &mut HostState, token: u32) {
    state.callouts.remove(&token);
    let Some(stream) = state.grpc_streams.get_mut(&token) else {
        return;
    };
    if stream.local_closed {
        state.grpc_streams.remove(&token);
        return;
    }
    stream.remote_closed = true;
    stream.sender = None;
    let closed = state
        .grpc_streams
        .values()
        .filter(|s| s.remote_closed)
        .count();
    if closed > MAX_REMOTE_CLOSED {
        // Drop the one opened first (tokens grow with each stream, until they wrap).
        let oldest = state
            .grpc_streams
            .iter()
            .filter(|(_, s)| s.remote_closed)
            .map(|(t, _)| *t)
            .min();
        if let Some(oldest) = oldest {
            state.grpc_streams.remove(&oldest);
        }
    }
}

/// Cancels the calls and streams context `ctx` opened: its end, as Envoy's `~Context`.
pub(crate) fn forget_context(state: &mut HostState, ctx: u32) {
    state.callouts.retain(|token, (owner, task)| {
        let cancel = *owner == ctx && is_grpc(*token);
        if cancel {
            task.abort();
        }
        !cancel
    });
    state.grpc_streams.retain(|_, s| s.owner != ctx);
}

/// Starts a unary gRPC call to `/service/method` on a configured upstream, with `message` as
/// the request and `timeout_ms` as its deadline (0: none); the outcome arrives later on the
/// root context as `proxy_on_grpc_receive` or `proxy_on_grpc_close`.
///
/// ABI: `proxy_grpc_call`. ParseFailure for an unknown upstream (Envoy); BadArgument for an
/// invalid service or method name, malformed or invalid metadata (pseudo-headers included) or
/// a message over the filter's body limit; InternalFailure past the in-flight cap;
/// InvalidMemoryAccess for a bad range. Nothing is sent unless the status is Ok.
#[allow(clippy::too_many_arguments, reason = "the ABI's signature")]
fn grpc_call(
    mut caller: Caller<'_, HostState>,
    svc_ptr: u32,
    svc_size: u32,
    service_ptr: u32,
    service_size: u32,
    method_ptr: u32,
    method_size: u32,
    metadata_ptr: u32,
    metadata_size: u32,
    message_ptr: u32,
    message_size: u32,
    timeout_ms: u32,
    ret_token: u32,
) -> wasmtime::Result<u32> {
    check_allowed(&caller, "proxy_grpc_call")?;
    let args = Open {
        svc: (svc_ptr, svc_size),
        service: (service_ptr, service_size),
        method: (method_ptr, method_size),
        metadata: (metadata_ptr, metadata_size),
        message: Some((message_ptr, message_size)),
        timeout_ms,
        ret_token,
    };
    Ok(crate::host::code(open(&mut caller, args)))
}

/// Opens a gRPC stream to `/service/method` on a configured upstream. Messages go out with
/// `proxy_grpc_send`; what comes back arrives on the root context.
///
/// ABI: `proxy_grpc_stream`. Statuses as for `proxy_grpc_call`.
#[allow(clippy::too_many_arguments, reason = "the ABI's signature")]
fn grpc_stream(
    mut caller: Caller<'_, HostState>,
    svc_ptr: u32,
    svc_size: u32,
    service_ptr: u32,
    service_size: u32,
    method_ptr: u32,
    method_size: u32,
    metadata_ptr: u32,
    metadata_size: u32,
    ret_token: u32,
) -> wasmtime::Result<u32> {
    check_allowed(&caller, "proxy_grpc_stream")?;
    let args = Open {
        svc: (svc_ptr, svc_size),
        service: (service_ptr, service_size),
        method: (method_ptr, method_size),
        metadata: (metadata_ptr, metadata_size),
        message: None,
        timeout_ms: 0,
        ret_token,
    };
    Ok(crate::host::code(open(&mut caller, args)))
}

/// Sends one message on a stream, then half-closes it if `end_stream` is non-zero. On a
/// stream the upstream already closed the message is dropped (Ok), as in Envoy.
///
/// ABI: `proxy_grpc_send`. BadArgument for a token that is not a stream's, a stream the filter
/// half-closed, or a message over the filter's body limit; NotFound for an unknown stream;
/// InternalFailure when the stream already has four times that limit queued;
/// InvalidMemoryAccess for a bad range.
fn grpc_send(
    mut caller: Caller<'_, HostState>,
    token: u32,
    message_ptr: u32,
    message_size: u32,
    end_stream: u32,
) -> wasmtime::Result<u32> {
    check_allowed(&caller, "proxy_grpc_send")?;
    let (mem, state) = split(&mut caller);
    let (max_message, max_queued) = (max_message(state), max_queued(state));
    Ok(crate::host::code((|| {
        if !is_stream(token) {
            return Err(Status::BadArgument);
        }
        let stream = state.grpc_streams.get_mut(&token).ok_or(Status::NotFound)?;
        let message = slice(mem, message_ptr, message_size)?;
        if stream.remote_closed {
            return Ok(());
        }
        let sender = stream.sender.as_ref().ok_or(Status::BadArgument)?;
        if message.len() > max_message {
            return Err(Status::BadArgument);
        }
        let message = GrpcSend::Message(Bytes::copy_from_slice(message));
        if !sender.send(message, max_queued) {
            return Err(Status::InternalFailure);
        }
        if end_stream != 0 {
            sender.send(GrpcSend::HalfClose, usize::MAX);
            stream.sender = None;
        }
        Ok(())
    })()))
}

/// Cancels a call or resets a stream: nothing more is delivered for it.
///
/// ABI: `proxy_grpc_cancel`. BadArgument for a token that is neither a call's nor a stream's;
/// NotFound for an unknown (or finished) one.
fn grpc_cancel(mut caller: Caller<'_, HostState>, token: u32) -> wasmtime::Result<u32> {
    check_allowed(&caller, "proxy_grpc_cancel")?;
    Ok(crate::host::code(cancel(caller.data_mut(), token)))
}

fn cancel(state: &mut HostState, token: u32) -> HostResult {
    if !is_call(token) && !is_stream(token) {
        return Err(Status::BadArgument);
    }
    let live = state.callouts.remove(&token);
    let stream = state.grpc_streams.remove(&token);
    if let Some((_, task)) = &live {
        task.abort();
    }
    if live.is_none() && stream.is_none() {
        return Err(Status::NotFound);
    }
    Ok(())
}

/// Half-closes a stream: the filter sends nothing more, and still gets what the upstream
/// sends. On a call it cancels, as in Envoy.
///
/// ABI: `proxy_grpc_close`. BadArgument for a token that is neither a call's nor a stream's;
/// NotFound for an unknown one.
fn grpc_close(mut caller: Caller<'_, HostState>, token: u32) -> wasmtime::Result<u32> {
    check_allowed(&caller, "proxy_grpc_close")?;
    let state = caller.data_mut();
    if !is_stream(token) {
        return Ok(crate::host::code(cancel(state, token)));
    }
    let Some(stream) = state.grpc_streams.get_mut(&token) else {
        return Ok(Status::NotFound.code());
    };
    if stream.remote_closed {
        state.grpc_streams.remove(&token);
        return Ok(Status::Ok.code());
    }
    if let Some(sender) = stream.sender.take() {
        sender.send(GrpcSend::HalfClose, usize::MAX);
    }
    stream.local_closed = true;
    Ok(Status::Ok.code())
}

#[cfg(test)]
mod tests;
