//! gRPC callouts over HTTP/2 cleartext (prior knowledge), with the `h2` crate directly:
//! Pingora's HTTP session cannot read a stream while it writes it, and a gRPC stream needs
//! both at once.
//!
//! One connection per endpoint is kept and shared by every call to it (HTTP/2 multiplexes);
//! a connection that failed or was closed is replaced on the next call. Each call is one
//! HTTP/2 stream: `POST /<service>/<method>` with `content-type: application/grpc`,
//! `te: trailers`, `grpc-timeout` for a call with a deadline, and the filter's metadata.
//! Messages are framed with the 5-byte gRPC prefix (uncompressed; compressed answers are
//! refused since none is offered). The answer becomes events: the headers, each message, the
//! trailers (or the headers of a trailers-only answer), then the close with `grpc-status` and
//! `grpc-message`.

use std::collections::HashMap;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use h2::client::SendRequest;
use h2::{Reason, RecvStream, SendStream};
use http::{HeaderValue, Request, StatusCode};
use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::sync::mpsc::Sender;
use wasmgate_abi::{GrpcEvent, GrpcOutbound, GrpcRequest, GrpcSend, HeaderMap, grpc_status};

use super::IO_TIMEOUT;
use crate::generation::Upstream;

/// Largest message accepted from an upstream (gRPC's usual default) or sent to one.
pub(crate) const MAX_MESSAGE: usize = 4 << 20;
/// Largest header or trailer block accepted from an upstream.
const MAX_HEADER_LIST: u32 = 256 << 10;
/// Headers the proxy sets itself, or that HTTP/2 forbids: a filter's metadata cannot set them.
const RESERVED: &[&str] = &[
    "content-type",
    "te",
    "grpc-timeout",
    "grpc-encoding",
    "grpc-accept-encoding",
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// The HTTP/2 connections of one generation's gRPC callouts, by endpoint.
#[derive(Default)]
pub(crate) struct Connections {
    by_endpoint: Mutex<HashMap<SocketAddr, SendRequest<Bytes>>>,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections")
            .field("endpoints", &self.by_endpoint.lock().len())
            .finish()
    }
}

impl Connections {
    /// A connection to `addr` ready for a new stream: the shared one, or a new one if there is
    /// none or it has failed.
    async fn ready(&self, addr: SocketAddr, wait: Duration) -> Result<SendRequest<Bytes>, Close> {
        let shared = self.by_endpoint.lock().get(&addr).cloned();
        if let Some(shared) = shared {
            match tokio::time::timeout(wait, shared.ready()).await {
                Ok(Ok(ready)) => return Ok(ready),
                Ok(Err(e)) => {
                    tracing::debug!(%addr, "gRPC connection unusable, reconnecting: {e}");
                    self.by_endpoint.lock().remove(&addr);
                }
                Err(_) => return Err(unavailable("no stream available on the connection")),
            }
        }
        let tcp = tokio::time::timeout(wait, TcpStream::connect(addr))
            .await
            .map_err(|_| unavailable("connect: timed out"))?
            .map_err(|e| unavailable(format!("connect: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let handshake = h2::client::Builder::new()
            .max_header_list_size(MAX_HEADER_LIST)
            .enable_push(false)
            .handshake::<_, Bytes>(tcp);
        let (send, connection) = tokio::time::timeout(wait, handshake)
            .await
            .map_err(|_| unavailable("HTTP/2 handshake: timed out"))?
            .map_err(|e| unavailable(format!("HTTP/2 handshake: {e}")))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%addr, "gRPC connection ended: {e}");
            }
        });
        self.by_endpoint.lock().insert(addr, send.clone());
        tokio::time::timeout(wait, send.ready())
            .await
            .map_err(|_| unavailable("no stream available on the connection"))?
            .map_err(|e| unavailable(format!("HTTP/2: {e}")))
    }
}

/// The end of a call: a gRPC status and its message.
#[derive(Debug)]
struct Close {
    status: u32,
    message: String,
}

fn close(status: u32, message: impl Into<String>) -> Close {
    Close {
        status,
        message: message.into(),
    }
}

fn unavailable(message: impl Into<String>) -> Close {
    close(grpc_status::UNAVAILABLE, message)
}

/// Runs one call or stream to its end and reports it through `events`, always ending with a
/// close. Dropping the future resets the stream (h2 sends RST_STREAM for a dropped stream).
pub(crate) async fn run(
    upstream: Option<Arc<Upstream>>,
    connections: Arc<Connections>,
    request: GrpcRequest,
    outbound: GrpcOutbound,
    events: Sender<GrpcEvent>,
) {
    // A unary call without a deadline of its own still ends; a stream may live long.
    let limit = match (request.unary, request.timeout) {
        (true, timeout) => Some(timeout.unwrap_or(IO_TIMEOUT)),
        (false, _) => None,
    };
    let exchange = exchange(upstream, &connections, request, outbound, &events);
    let end = match limit {
        Some(limit) => tokio::time::timeout(limit, exchange)
            .await
            .unwrap_or_else(|_| Err(close(grpc_status::DEADLINE_EXCEEDED, "deadline exceeded"))),
        None => exchange.await,
    };
    let end = end.unwrap_or_else(|e| e);
    let _ = events
        .send(GrpcEvent::Close {
            status: end.status,
            message: end.message,
        })
        .await;
}

/// Opens the stream, then writes the filter's messages while it reads the answer.
async fn exchange(
    upstream: Option<Arc<Upstream>>,
    connections: &Connections,
    request: GrpcRequest,
    outbound: GrpcOutbound,
    events: &Sender<GrpcEvent>,
) -> Result<Close, Close> {
    let upstream = upstream.ok_or_else(|| unavailable("unknown upstream"))?;
    let addr = upstream
        .pick_for_callout()
        .ok_or_else(|| unavailable("the upstream has no endpoint"))?
        .state
        .addr;
    let connect = upstream.config.timeouts.connect;
    let wait = request.timeout.map_or(connect, |t| t.min(connect));
    let mut connection = connections.ready(addr, wait).await?;
    let head = request_head(&upstream.name, addr, &request)?;
    let (response, send) = match connection.send_request(head, false) {
        Ok(pair) => pair,
        Err(e) => {
            // The shared connection is broken: the next call makes a new one.
            connections.by_endpoint.lock().remove(&addr);
            return Err(h2_close(&e));
        }
    };
    let write = write(outbound, send);
    let read = read(response, events);
    tokio::pin!(write, read);
    tokio::select! {
        end = &mut read => Ok(end),
        never = &mut write => match never {},
    }
}

/// The request headers of a call.
fn request_head(
    upstream: &str,
    addr: SocketAddr,
    request: &GrpcRequest,
) -> Result<Request<()>, Close> {
    // As Envoy: the upstream's name is the authority, if it can be one.
    let authority = match http::uri::Authority::try_from(upstream) {
        Ok(a) => a.to_string(),
        Err(_) => addr.to_string(),
    };
    let uri = format!("http://{authority}/{}/{}", request.service, request.method);
    let mut head = Request::post(uri)
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .body(())
        .map_err(|e| close(grpc_status::INTERNAL, format!("request: {e}")))?;
    let headers = head.headers_mut();
    if let Some(timeout) = request.timeout {
        headers.insert("grpc-timeout", grpc_timeout(timeout));
    }
    for (name, value) in request.metadata.iter() {
        if let wasmgate_abi::FieldName::Header(name) = name
            && !RESERVED.contains(&name.as_str())
        {
            headers.append(name.clone(), value.clone());
        }
    }
    // The filter's own user-agent, if it set one, else ours.
    if !headers.contains_key(http::header::USER_AGENT) {
        headers.insert(
            http::header::USER_AGENT,
            HeaderValue::from_static("wasmgate"),
        );
    }
    Ok(head)
}

/// A `grpc-timeout` value: at most 8 digits and a unit.
fn grpc_timeout(timeout: Duration) -> HeaderValue {
    let ms = timeout.as_millis();
    let value = if ms < 100_000_000 {
        format!("{ms}m")
    } else {
        format!("{}S", timeout.as_secs().min(99_999_999))
    };
    HeaderValue::try_from(value).unwrap_or(HeaderValue::from_static("99999999S"))
}

/// Writes what the filter sends, framed, until it half-closes; then waits (the read decides
/// when the call is over). A write that fails stops writing: the read sees the same failure.
async fn write(
    mut outbound: GrpcOutbound,
    mut send: SendStream<Bytes>,
) -> std::convert::Infallible {
    loop {
        let done = match outbound.recv().await {
            Some(GrpcSend::Message(message)) => match frame(&message) {
                Some(framed) => send_all(&mut send, framed).await.is_err(),
                None => {
                    // The host bounds messages well below this; never send a bad frame.
                    send.send_reset(Reason::INTERNAL_ERROR);
                    true
                }
            },
            Some(GrpcSend::HalfClose) | None => {
                let _ = send.send_data(Bytes::new(), true);
                true
            }
        };
        if done {
            break;
        }
    }
    std::future::pending().await
}

/// A message with its gRPC prefix: uncompressed, 4-byte big-endian length.
fn frame(message: &[u8]) -> Option<Bytes> {
    if message.len() > MAX_MESSAGE {
        return None;
    }
    let len = u32::try_from(message.len()).ok()?;
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.extend_from_slice(&[0]);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(message);
    Some(framed.freeze())
}

/// Sends `data` as HTTP/2 flow control allows.
async fn send_all(send: &mut SendStream<Bytes>, mut data: Bytes) -> Result<(), h2::Error> {
    // Each turn sends at least one byte, or waits for the peer; a peer that keeps granting
    // nothing ends it.
    let mut idle = 0;
    while !data.is_empty() {
        send.reserve_capacity(data.len());
        let granted = match poll_fn(|cx| send.poll_capacity(cx)).await {
            Some(granted) => granted?,
            None => return Err(Reason::CANCEL.into()),
        };
        let n = granted.min(data.len());
        if n == 0 {
            idle += 1;
            if idle > 1000 {
                return Err(Reason::FLOW_CONTROL_ERROR.into());
            }
            tokio::task::yield_now().await;
            continue;
        }
        idle = 0;
        send.send_data(data.split_to(n), false)?;
    }
    Ok(())
}

/// Reads the answer and reports it; returns how the call ended.
async fn read(response: h2::client::ResponseFuture, events: &Sender<GrpcEvent>) -> Close {
    match read_events(response, events).await {
        Ok(end) | Err(end) => end,
    }
}

async fn read_events(
    response: h2::client::ResponseFuture,
    events: &Sender<GrpcEvent>,
) -> Result<Close, Close> {
    let emit = |event| async move {
        // The host gone means the call was cancelled: nothing more to do.
        events
            .send(event)
            .await
            .map_err(|_| close(grpc_status::CANCELLED, "cancelled"))
    };
    let response = response.await.map_err(|e| h2_close(&e))?;
    let (head, mut body) = response.into_parts();
    if head.status != StatusCode::OK {
        return Err(close(
            http_status_to_grpc(head.status),
            format!("upstream answered HTTP {}", head.status.as_u16()),
        ));
    }
    if body.is_end_stream() {
        // Trailers-only: the headers are the trailers.
        emit(GrpcEvent::InitialMetadata(HeaderMap::default())).await?;
        emit(GrpcEvent::TrailingMetadata(metadata(&head.headers))).await?;
        return Ok(status_of(&head.headers));
    }
    let content_type = head
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/grpc") {
        return Err(close(
            grpc_status::UNKNOWN,
            format!("not a gRPC answer (content-type {content_type:?})"),
        ));
    }
    emit(GrpcEvent::InitialMetadata(metadata(&head.headers))).await?;
    let mut pending = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| h2_close(&e))?;
        let _ = body.flow_control().release_capacity(chunk.len());
        pending.extend_from_slice(&chunk);
        while let Some(message) = next_message(&mut pending)? {
            emit(GrpcEvent::Message(message)).await?;
        }
    }
    if !pending.is_empty() {
        return Err(close(
            grpc_status::INTERNAL,
            "the answer ended inside a message",
        ));
    }
    match trailers(&mut body).await? {
        Some(trailers) => {
            emit(GrpcEvent::TrailingMetadata(metadata(&trailers))).await?;
            Ok(status_of(&trailers))
        }
        None => Err(close(grpc_status::UNKNOWN, "the answer has no grpc-status")),
    }
}

async fn trailers(body: &mut RecvStream) -> Result<Option<http::HeaderMap>, Close> {
    body.trailers().await.map_err(|e| h2_close(&e))
}

/// Takes one whole message off the front of `pending`, if there is one.
fn next_message(pending: &mut BytesMut) -> Result<Option<Bytes>, Close> {
    if pending.len() < 5 {
        return Ok(None);
    }
    if pending[0] & 1 != 0 {
        return Err(close(
            grpc_status::INTERNAL,
            "compressed message, but no compression was offered",
        ));
    }
    let len = u32::from_be_bytes([pending[1], pending[2], pending[3], pending[4]]) as usize;
    if len > MAX_MESSAGE {
        return Err(close(
            grpc_status::RESOURCE_EXHAUSTED,
            format!("message of {len} bytes, over the limit of {MAX_MESSAGE}"),
        ));
    }
    if pending.len() < 5 + len {
        return Ok(None);
    }
    pending.advance(5);
    Ok(Some(pending.split_to(len).freeze()))
}

/// Headers or trailers as the filter sees them.
fn metadata(headers: &http::HeaderMap) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        map.push(name.clone(), value.clone());
    }
    map
}

/// `grpc-status` and `grpc-message` (percent-decoded) of trailers.
fn status_of(trailers: &http::HeaderMap) -> Close {
    let Some(status) = trailers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u32>().ok())
    else {
        return close(grpc_status::UNKNOWN, "the answer has no valid grpc-status");
    };
    let message = trailers
        .get("grpc-message")
        .map(|v| percent_decode(v.as_bytes()))
        .unwrap_or_default();
    close(status, message)
}

/// gRPC's percent-encoding of `grpc-message`; a malformed escape stays as it is.
fn percent_decode(value: &[u8]) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        let decoded = (value[i] == b'%')
            .then(|| Some(hex(*value.get(i + 1)?)? * 16 + hex(*value.get(i + 2)?)?))
            .flatten();
        match decoded {
            Some(byte) => {
                out.push(byte as u8);
                i += 3;
            }
            None => {
                out.push(value[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// gRPC's mapping of an HTTP status that is not 200.
fn http_status_to_grpc(status: StatusCode) -> u32 {
    match status.as_u16() {
        400 => grpc_status::INTERNAL,
        401 => grpc_status::UNAUTHENTICATED,
        403 => grpc_status::PERMISSION_DENIED,
        404 => grpc_status::UNIMPLEMENTED,
        429 | 502..=504 => grpc_status::UNAVAILABLE,
        _ => grpc_status::UNKNOWN,
    }
}

/// gRPC's mapping of an HTTP/2 failure.
fn h2_close(e: &h2::Error) -> Close {
    let status = match e.reason() {
        _ if e.is_io() || e.is_go_away() => grpc_status::UNAVAILABLE,
        Some(Reason::REFUSED_STREAM) => grpc_status::UNAVAILABLE,
        Some(Reason::CANCEL) => grpc_status::CANCELLED,
        Some(Reason::ENHANCE_YOUR_CALM) => grpc_status::RESOURCE_EXHAUSTED,
        Some(Reason::INADEQUATE_SECURITY) => grpc_status::PERMISSION_DENIED,
        Some(_) => grpc_status::INTERNAL,
        None => grpc_status::UNAVAILABLE,
    };
    close(status, format!("HTTP/2: {e}"))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn messages_are_framed_and_unframed() {
        let framed = frame(b"hello").unwrap();
        assert_eq!(&framed[..], b"\x00\x00\x00\x00\x05hello");
        let mut pending = BytesMut::from(&framed[..3]);
        assert!(next_message(&mut pending).unwrap().is_none());
        pending.extend_from_slice(&framed[3..]);
        pending.extend_from_slice(&frame(b"").unwrap());
        pending.extend_from_slice(b"\x00\x00");
        assert_eq!(&next_message(&mut pending).unwrap().unwrap()[..], b"hello");
        assert_eq!(&next_message(&mut pending).unwrap().unwrap()[..], b"");
        assert!(next_message(&mut pending).unwrap().is_none());
        assert_eq!(&pending[..], b"\x00\x00");
    }

    #[test]
    fn compressed_and_oversized_messages_are_refused() {
        let mut compressed = BytesMut::from(&b"\x01\x00\x00\x00\x01x"[..]);
        assert_eq!(
            next_message(&mut compressed).unwrap_err().status,
            grpc_status::INTERNAL
        );
        let mut huge = BytesMut::from(&b"\x00\xff\xff\xff\xff"[..]);
        assert_eq!(
            next_message(&mut huge).unwrap_err().status,
            grpc_status::RESOURCE_EXHAUSTED
        );
        assert!(frame(&vec![0; MAX_MESSAGE + 1]).is_none());
    }

    #[test]
    fn status_and_message_come_from_the_trailers() {
        let mut t = http::HeaderMap::new();
        assert_eq!(status_of(&t).status, grpc_status::UNKNOWN);
        t.insert("grpc-status", HeaderValue::from_static("7"));
        t.insert("grpc-message", HeaderValue::from_static("no%20way%2"));
        let c = status_of(&t);
        assert_eq!((c.status, c.message.as_str()), (7, "no way%2"));
        t.insert("grpc-status", HeaderValue::from_static("seven"));
        assert_eq!(status_of(&t).status, grpc_status::UNKNOWN);
    }

    #[test]
    fn timeouts_fit_in_eight_digits() {
        assert_eq!(grpc_timeout(Duration::from_millis(250)), "250m");
        assert_eq!(grpc_timeout(Duration::from_secs(200_000)), "200000S");
    }

    #[test]
    fn the_request_carries_grpc_headers_and_the_filters_metadata() {
        let mut metadata = HeaderMap::default();
        metadata.add(b"x-a", b"1", 1024).unwrap();
        metadata.add(b"content-type", b"text/plain", 1024).unwrap();
        metadata.add(b"connection", b"close", 1024).unwrap();
        let request = GrpcRequest {
            unary: true,
            upstream: "grpc".into(),
            service: "pkg.Echo".into(),
            method: "Say".into(),
            metadata,
            timeout: Some(Duration::from_secs(1)),
        };
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let head = request_head("grpc", addr, &request).unwrap();
        assert_eq!(head.method(), http::Method::POST);
        assert_eq!(head.uri().to_string(), "http://grpc/pkg.Echo/Say");
        let h = head.headers();
        assert_eq!(h["content-type"], "application/grpc");
        assert_eq!(h["te"], "trailers");
        assert_eq!(h["grpc-timeout"], "1000m");
        assert_eq!(h["x-a"], "1");
        assert_eq!(h.get_all("content-type").iter().count(), 1);
        assert!(h.get("connection").is_none());
        assert_eq!(h["user-agent"], "wasmgate");
        let odd = request_head("not an authority", addr, &request).unwrap();
        assert_eq!(odd.uri().authority().unwrap().as_str(), "127.0.0.1:9");
    }

    /// An h2c server that echoes each request's data back as it comes (the framing stays
    /// intact, so every message comes back as it was), then answers status 0 with trailing
    /// metadata; `/s/Fail` gets a trailers-only status 7, `/s/Hang` never answers. It counts
    /// connections and the streams the client reset.
    async fn echo_server() -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let resets = Arc::new(AtomicUsize::new(0));
        let (count, reset_count) = (connections.clone(), resets.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let resets = reset_count.clone();
                tokio::spawn(async move {
                    let Ok(mut conn) = h2::server::handshake(tcp).await else {
                        return;
                    };
                    while let Some(Ok((req, mut respond))) = conn.accept().await {
                        let resets = resets.clone();
                        tokio::spawn(async move {
                            let path = req.uri().path().to_string();
                            let mut body = req.into_body();
                            let head = |end| {
                                let mut r = http::Response::builder()
                                    .header("content-type", "application/grpc")
                                    .header("x-initial", "1");
                                if end {
                                    r = r.header("grpc-status", "7").header("grpc-message", "no");
                                }
                                r.body(()).unwrap()
                            };
                            if path == "/s/Fail" {
                                let _ = respond.send_response(head(true), true);
                                return;
                            }
                            let mut send = respond.send_response(head(false), false).unwrap();
                            if path == "/s/Hang" {
                                let _ = poll_fn(|cx| send.poll_reset(cx)).await;
                                resets.fetch_add(1, Ordering::SeqCst);
                                return;
                            }
                            while let Some(Ok(chunk)) = body.data().await {
                                let _ = body.flow_control().release_capacity(chunk.len());
                                send.send_data(chunk, false).unwrap();
                            }
                            let mut t = http::HeaderMap::new();
                            t.insert("grpc-status", HeaderValue::from_static("0"));
                            t.insert("x-trailing", HeaderValue::from_static("2"));
                            let _ = send.send_trailers(t);
                        });
                    }
                });
            }
        });
        (addr, connections, resets)
    }

    fn callouts(addr: SocketAddr) -> Arc<super::super::Callouts> {
        let endpoint = addr.to_string();
        let upstream = Upstream::for_test("g", &endpoint, true);
        let upstreams = HashMap::from([("g".to_string(), Arc::new(upstream))]);
        Arc::new(super::super::Callouts::new(upstreams))
    }

    /// Runs a call of `method` sending `messages` then a half-close; every event, in order.
    async fn exchange(
        handler: &super::super::Callouts,
        upstream: &str,
        method: &str,
        messages: &[&'static [u8]],
        unary: bool,
    ) -> Vec<GrpcEvent> {
        use wasmgate_abi::CalloutHandler;
        let (tx, outbound) = GrpcOutbound::channel();
        for m in messages {
            tx.send(GrpcSend::Message(Bytes::from_static(m)), usize::MAX);
        }
        tx.send(GrpcSend::HalfClose, usize::MAX);
        let (events_tx, mut events) = tokio::sync::mpsc::channel(8);
        let request = GrpcRequest {
            unary,
            upstream: upstream.into(),
            service: "s".into(),
            method: method.into(),
            metadata: HeaderMap::default(),
            timeout: Some(Duration::from_secs(5)),
        };
        tokio::spawn(handler.grpc(request, outbound, events_tx));
        let mut got = Vec::new();
        while let Some(event) = events.recv().await {
            got.push(event);
        }
        got
    }

    /// (kind, text) of events, for comparing.
    fn shape(events: &[GrpcEvent]) -> Vec<(&'static str, String)> {
        let pairs = |m: &HeaderMap| {
            m.pairs()
                .filter(|(k, _)| k.starts_with(b"x-") || k.starts_with(b"grpc-"))
                .map(|(k, v)| {
                    format!(
                        "{}={}",
                        String::from_utf8_lossy(k),
                        String::from_utf8_lossy(v)
                    )
                })
                .collect::<Vec<_>>()
                .join(";")
        };
        events
            .iter()
            .map(|e| match e {
                GrpcEvent::InitialMetadata(m) => ("initial", pairs(m)),
                GrpcEvent::Message(m) => ("message", String::from_utf8_lossy(m).into_owned()),
                GrpcEvent::TrailingMetadata(m) => ("trailing", pairs(m)),
                GrpcEvent::Close { status, message } => ("close", format!("{status} {message}")),
            })
            .collect()
    }

    fn owned(v: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
        v.iter().map(|(k, s)| (*k, s.to_string())).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_and_streams_speak_grpc_over_one_h2_connection() {
        let (addr, connections, resets) = echo_server().await;
        let handler = callouts(addr);
        let unary = exchange(&handler, "g", "Echo", &[b"hi"], true).await;
        assert_eq!(
            shape(&unary),
            owned(&[
                ("initial", "x-initial=1"),
                ("message", "hi"),
                ("trailing", "grpc-status=0;x-trailing=2"),
                ("close", "0 "),
            ])
        );
        let stream = exchange(&handler, "g", "Echo", &[b"a", b"", b"ccc"], false).await;
        assert_eq!(
            shape(&stream),
            owned(&[
                ("initial", "x-initial=1"),
                ("message", "a"),
                ("message", ""),
                ("message", "ccc"),
                ("trailing", "grpc-status=0;x-trailing=2"),
                ("close", "0 "),
            ])
        );
        let failed = exchange(&handler, "g", "Fail", &[b"x"], true).await;
        assert_eq!(
            shape(&failed),
            owned(&[
                ("initial", ""),
                ("trailing", "x-initial=1;grpc-status=7;grpc-message=no"),
                ("close", "7 no"),
            ])
        );
        assert_eq!(
            connections.load(Ordering::SeqCst),
            1,
            "one shared connection"
        );

        let unknown = exchange(&handler, "nope", "Echo", &[b"x"], true).await;
        assert_eq!(shape(&unknown), owned(&[("close", "14 unknown upstream")]));

        // Dropping the work resets the stream.
        use wasmgate_abi::CalloutHandler;
        let (_tx, outbound) = GrpcOutbound::channel();
        let (events_tx, mut events) = tokio::sync::mpsc::channel(8);
        let request = GrpcRequest {
            unary: false,
            upstream: "g".into(),
            service: "s".into(),
            method: "Hang".into(),
            metadata: HeaderMap::default(),
            timeout: None,
        };
        let work = tokio::spawn(handler.grpc(request, outbound, events_tx));
        assert!(matches!(
            events.recv().await,
            Some(GrpcEvent::InitialMetadata(_))
        ));
        work.abort();
        for _ in 0..500 {
            if resets.load(Ordering::SeqCst) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(resets.load(Ordering::SeqCst), 1, "the server saw the reset");
    }

    #[tokio::test]
    async fn an_unreachable_endpoint_is_unavailable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let handler = callouts(addr);
        let events = exchange(&handler, "g", "Echo", &[b"x"], true).await;
        let shaped = shape(&events);
        assert_eq!(shaped.len(), 1);
        assert!(shaped[0].1.starts_with("14 connect:"), "{shaped:?}");
    }

    #[test]
    fn http_failures_map_to_grpc_statuses() {
        assert_eq!(
            http_status_to_grpc(StatusCode::NOT_FOUND),
            grpc_status::UNIMPLEMENTED
        );
        assert_eq!(
            http_status_to_grpc(StatusCode::BAD_GATEWAY),
            grpc_status::UNAVAILABLE
        );
        assert_eq!(
            http_status_to_grpc(StatusCode::IM_A_TEAPOT),
            grpc_status::UNKNOWN
        );
        assert_eq!(percent_decode(b"%E2%9C%93 ok"), "\u{2713} ok");
    }
}
