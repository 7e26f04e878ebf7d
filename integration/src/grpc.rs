//! A real gRPC server on loopback for the callout tests: HTTP/2 cleartext with prior knowledge
//! (the `h2` crate's server side), gRPC framing, and an echo service `test.Echo` that treats
//! messages as opaque bytes:
//!
//! - `Unary`: answers the first message as `echo:<message>`, with initial metadata
//!   `x-echo-initial: hello` and trailing metadata `x-echo-trailer: bye`, status 0;
//! - `Stream`: echoes each message as it arrives (`echo:<message>`), and after the client's
//!   half-close sends trailers with status 0 (same metadata as `Unary`);
//! - `Error`: a trailers-only answer with status 7 and the message "go away, 100%";
//! - `Slow`: waits `x-delay-ms` milliseconds (default 3000, at most 10 s), then answers as
//!   `Unary` (a reset while it waits is recorded);
//! - any other method: trailers-only, status 12 (UNIMPLEMENTED).
//!
//! Every request is recorded: path, headers, the messages received, whether the client
//! half-closed, and whether it reset the stream.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use http::{HeaderMap, HeaderValue, Request, Response};
use tokio::net::TcpListener;

/// Largest message the server takes.
const MAX_MESSAGE: usize = 4 << 20;

/// One call as the server received it.
#[derive(Debug, Clone, Default)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub messages: Vec<Bytes>,
    /// The client ended its side (END_STREAM).
    pub half_closed: bool,
    /// The client reset the stream (or the connection went away) before the answer.
    pub reset: bool,
}

impl Received {
    /// The first value of a header, as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

type Log = Mutex<Vec<Received>>;

/// A running gRPC server; stops when dropped.
#[derive(Debug)]
pub struct GrpcServer {
    pub addr: SocketAddr,
    received: Arc<Log>,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl GrpcServer {
    /// Starts a server on a free loopback port.
    pub async fn start() -> GrpcServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind grpc server");
        let addr = listener.local_addr().expect("grpc server addr");
        let received = Arc::new(Log::default());
        let connections = Arc::new(AtomicUsize::new(0));
        let (log, count) = (received.clone(), connections.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let log = log.clone();
                tokio::spawn(async move {
                    let Ok(mut connection) = h2::server::handshake(tcp).await else {
                        return;
                    };
                    while let Some(Ok((request, respond))) = connection.accept().await {
                        tokio::spawn(handle(request, respond, log.clone()));
                    }
                });
            }
        });
        GrpcServer {
            addr,
            received,
            connections,
            task,
        }
    }

    /// The `endpoints:` value for a config.
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    /// Every call received so far (a call still open shows what came until now).
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn update(log: &Log, index: usize, f: impl FnOnce(&mut Received)) {
    if let Ok(mut log) = log.lock()
        && let Some(r) = log.get_mut(index)
    {
        f(r);
    }
}

/// Reads the next whole message of the request, `None` at its end (or a reset, recorded).
async fn next_message(
    body: &mut RecvStream,
    pending: &mut BytesMut,
    log: &Log,
    index: usize,
) -> Option<Bytes> {
    loop {
        if pending.len() >= 5 {
            let len = u32::from_be_bytes([pending[1], pending[2], pending[3], pending[4]]) as usize;
            if len > MAX_MESSAGE {
                update(log, index, |r| r.reset = true);
                return None;
            }
            if pending.len() >= 5 + len {
                pending.advance(5);
                let message = pending.split_to(len).freeze();
                update(log, index, |r| r.messages.push(message.clone()));
                return Some(message);
            }
        }
        match body.data().await {
            Some(Ok(chunk)) => {
                let _ = body.flow_control().release_capacity(chunk.len());
                pending.extend_from_slice(&chunk);
            }
            Some(Err(_)) => {
                update(log, index, |r| r.reset = true);
                return None;
            }
            None => {
                update(log, index, |r| r.half_closed = true);
                return None;
            }
        }
    }
}

fn frame(message: &[u8]) -> Bytes {
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.extend_from_slice(&[0]);
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message);
    framed.freeze()
}

fn echo(message: &[u8]) -> Bytes {
    frame(&[&b"echo:"[..], message].concat())
}

/// The trailers of a successful call.
fn ok_trailers() -> HeaderMap {
    let mut t = HeaderMap::new();
    t.insert("grpc-status", HeaderValue::from_static("0"));
    t.insert("x-echo-trailer", HeaderValue::from_static("bye"));
    t
}

fn response_head(end: bool, status: Option<(u32, &'static str)>) -> Response<()> {
    let mut response = Response::builder()
        .status(200)
        .header("content-type", "application/grpc");
    if !end {
        response = response.header("x-echo-initial", "hello");
    }
    if let Some((code, message)) = status {
        response = response
            .header("grpc-status", code)
            .header("grpc-message", message);
    }
    response.body(()).unwrap_or_default()
}

/// Sends the response headers; `None` if the client is gone.
fn start(respond: &mut SendResponse<Bytes>) -> Option<SendStream<Bytes>> {
    respond
        .send_response(response_head(false, None), false)
        .ok()
}

async fn handle(request: Request<RecvStream>, mut respond: SendResponse<Bytes>, log: Arc<Log>) {
    let path = request.uri().path().to_string();
    let (head, mut body) = request.into_parts();
    let index = {
        let Ok(mut log) = log.lock() else { return };
        log.push(Received {
            path: path.clone(),
            headers: head.headers.clone(),
            ..Default::default()
        });
        log.len() - 1
    };
    let mut pending = BytesMut::new();
    match path.as_str() {
        "/test.Echo/Unary" | "/test.Echo/Slow" => {
            let first = next_message(&mut body, &mut pending, &log, index).await;
            // Read to the client's half-close.
            while next_message(&mut body, &mut pending, &log, index)
                .await
                .is_some()
            {}
            if path.ends_with("Slow") {
                let delay = head
                    .headers
                    .get("x-delay-ms")
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                    .unwrap_or(3000)
                    .min(10_000);
                // A client that resets the stream meanwhile (a timeout, a cancel) is recorded.
                let reset = std::future::poll_fn(|cx| respond.poll_reset(cx));
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(delay)) => {}
                    _ = reset => {
                        update(&log, index, |r| r.reset = true);
                        return;
                    }
                }
            }
            let Some(mut send) = start(&mut respond) else {
                return;
            };
            if let Some(first) = first {
                let _ = send.send_data(echo(&first), false);
            }
            let _ = send.send_trailers(ok_trailers());
        }
        "/test.Echo/Stream" => {
            let Some(mut send) = start(&mut respond) else {
                return;
            };
            while let Some(message) = next_message(&mut body, &mut pending, &log, index).await {
                if send.send_data(echo(&message), false).is_err() {
                    return;
                }
            }
            let _ = send.send_trailers(ok_trailers());
        }
        "/test.Echo/Error" => {
            while next_message(&mut body, &mut pending, &log, index)
                .await
                .is_some()
            {}
            let _ =
                respond.send_response(response_head(true, Some((7, "go%20away,%20100%25"))), true);
        }
        _ => {
            let _ = respond.send_response(response_head(true, Some((12, "unknown method"))), true);
        }
    }
}
