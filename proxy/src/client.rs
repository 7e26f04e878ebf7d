//! Client limits (`client:`): a total deadline for each request header, caps on its bytes and
//! fields, a body read timeout and minimum rate, and the keep-alive idle time.
//!
//! Pingora 0.9.1 times each read of a request header separately (60 s), checks its 1 MiB
//! header cap only from the second read on, and offers no total header deadline. So every
//! accepted connection is wrapped ([`Guarded`]) in a [`GuardedStream`], which sits under
//! Pingora's HTTP/1 parser and enforces, while a header is being read:
//!
//! - the total deadline (`header_timeout_ms`), counted from the accept for a connection's first
//!   request and from the first byte of each later one: past it the client gets `408` and the
//!   connection closes (or it just closes, if the client sent nothing);
//! - the byte cap (`max_header_bytes`), request line included: reads are cut so that no more
//!   than the cap is ever handed to the parser, and asking for more means the header is too
//!   large: `431`, then close;
//! - the keep-alive idle time (`keepalive_timeout_ms`) before the first byte of a later request:
//!   past it the connection closes quietly.
//!
//! The service's `early_request_filter` ([`on_request_header`]) tells the stream where each
//! header ended, counts the header fields (`max_headers`, `431`), and sets Pingora's per-read
//! body timeout (`body_timeout_ms`, `408`); `request_body_filter` ([`on_body_chunk`]) checks the
//! body's average rate (`body_min_rate`). HTTP/2 connections are left to the `h2` crate's own
//! limits, set from the same values in `server.rs`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use pingora::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream, ServerApp};
use pingora::prelude::*;
use pingora::protocols::http::ServerSession;
use pingora::protocols::http::v2::server::H2Options;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{
    ALPN, GetProxyDigest, GetSocketDigest, GetTimingDigest, IO, Peek, Shutdown, SocketDigest, Ssl,
    Stream, TimingDigest, UniqueID, UniqueIDType,
};
use pingora::proxy::Session;
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::time::Sleep;
use wasmgate_config::ClientLimits;

use crate::service::State;

/// What starts an HTTP/2 connection with prior knowledge (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Sent when a header takes longer than `header_timeout_ms`.
const TIMED_OUT: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// Sent when a header is over `max_header_bytes`.
const TOO_LARGE: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// The proxy app with every accepted connection wrapped in a [`GuardedStream`].
#[derive(Debug)]
pub struct Guarded<A> {
    inner: Arc<PerRequest<A>>,
    state: Arc<State>,
}

impl<A> Guarded<A> {
    pub fn new(app: A, state: Arc<State>) -> Guarded<A> {
        Guarded {
            inner: Arc::new(PerRequest { app: Arc::new(app) }),
            state,
        }
    }
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for Guarded<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // A reload changes the limits of connections accepted after it.
        let limits = self.state.current.load().config.client;
        let stream: Stream = Box::new(GuardedStream::new(stream, limits));
        self.inner.process_new(stream, shutdown).await
    }

    async fn cleanup(&self) {
        self.inner.app.http_cleanup().await;
    }
}

/// Pingora's HTTP server loop (the blanket `ServerApp` of an `HttpServerApp`) around the proxy,
/// so that each request on a kept-alive connection is seen before its header is read.
#[derive(Debug)]
struct PerRequest<A> {
    app: Arc<A>,
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> HttpServerApp for PerRequest<A> {
    async fn process_new_http(
        self: &Arc<Self>,
        session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        if let Some(guard) = session.stream().and_then(|s| guarded(s)) {
            guard.next_request();
        }
        self.app.process_new_http(session, shutdown).await
    }

    fn h2_options(&self) -> Option<H2Options> {
        self.app.h2_options()
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        self.app.server_options()
    }

    async fn http_cleanup(&self) {
        self.app.http_cleanup().await;
    }
}

/// The guard under a Pingora HTTP/1 stream, if it has one.
fn guarded(stream: &Stream) -> Option<&GuardedStream> {
    let io: &dyn IO = stream.as_ref();
    io.as_any().downcast_ref::<GuardedStream>()
}

/// Where a connection is, as far as the limits care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading a request header: since its first byte (for a connection's first request,
    /// since the accept), with the bytes handed to the parser so far. `since` is `None`
    /// while a kept-alive connection waits for its next request.
    Header {
        since: Option<Instant>,
        bytes: usize,
    },
    /// The header is in; the service's timeouts apply.
    Request,
    /// HTTP/2 (or anything else not read by Pingora's HTTP/1 parser): not ours to limit.
    Off,
    /// Timed out or too large: every later read fails.
    Rejected,
}

#[derive(Debug)]
struct Shared {
    phase: Phase,
    /// When the connection became idle (the last request ended; the accept for the first).
    idle_since: Instant,
}

/// An accepted connection, limited while a request header is being read (see the module).
#[derive(Debug)]
pub struct GuardedStream {
    inner: Stream,
    limits: ClientLimits,
    shared: Mutex<Shared>,
    /// Bytes read ahead by [`Peek::try_peek`], handed out before the stream's own.
    rewind: Vec<u8>,
    /// Wakes the reader at the header deadline.
    timer: Option<Pin<Box<Sleep>>>,
    /// Where a header read goes when it must be cut shorter than the caller's buffer.
    scratch: Vec<u8>,
}

impl GuardedStream {
    fn new(inner: Stream, limits: ClientLimits) -> GuardedStream {
        let now = Instant::now();
        let phase = if matches!(inner.selected_alpn_proto(), Some(ALPN::H2)) {
            Phase::Off
        } else {
            Phase::Header {
                since: Some(now),
                bytes: 0,
            }
        };
        GuardedStream {
            inner,
            limits,
            shared: Mutex::new(Shared {
                phase,
                idle_since: now,
            }),
            rewind: Vec::new(),
            timer: None,
            scratch: Vec::new(),
        }
    }

    /// The header of the current request is in.
    fn header_done(&self) {
        let mut shared = self.shared.lock();
        if matches!(shared.phase, Phase::Header { .. }) {
            shared.phase = Phase::Request;
        }
    }

    /// A new request may start on this connection (the previous one is over, body drained).
    fn next_request(&self) {
        let mut shared = self.shared.lock();
        if shared.phase == Phase::Request {
            shared.phase = Phase::Header {
                since: None,
                bytes: 0,
            };
            shared.idle_since = Instant::now();
        }
    }

    /// When the header being read (or the idle wait for it) runs out.
    fn deadline(&self, since: Option<Instant>, idle_since: Instant) -> Instant {
        match since {
            Some(t) => t + Duration::from_millis(self.limits.header_timeout_ms),
            None => idle_since + Duration::from_millis(self.limits.keepalive_timeout_ms),
        }
    }

    /// Reads, the bytes read ahead by a peek first.
    fn read_plain(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.rewind.is_empty() {
            let n = self.rewind.len().min(buf.remaining());
            buf.put_slice(&self.rewind[..n]);
            self.rewind.drain(..n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }

    /// Refuses the request being read: a best-effort response (one write attempt: the client
    /// may not be reading), then an error for every read.
    fn reject(
        &mut self,
        cx: &mut Context<'_>,
        response: Option<&'static [u8]>,
        why: String,
    ) -> Poll<io::Result<()>> {
        self.shared.lock().phase = Phase::Rejected;
        self.timer = None;
        if let Some(response) = response {
            let _ = Pin::new(&mut self.inner).poll_write(cx, response);
            let _ = Pin::new(&mut self.inner).poll_flush(cx);
        }
        tracing::debug!("client connection refused: {why}");
        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, why)))
    }

    /// A read while a header is expected.
    fn read_header(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
        since: Option<Instant>,
        bytes: usize,
        idle_since: Instant,
    ) -> Poll<io::Result<()>> {
        let deadline = self.deadline(since, idle_since);
        let expired = |this: &mut Self, cx: &mut Context<'_>| match since {
            // An idle kept-alive connection just ends.
            None => {
                this.shared.lock().phase = Phase::Rejected;
                this.timer = None;
                Poll::Ready(Ok(()))
            }
            Some(_) if bytes == 0 => this.reject(cx, None, "no request before the deadline".into()),
            Some(_) => this.reject(
                cx,
                Some(TIMED_OUT),
                format!(
                    "request header not complete after {} ms",
                    this.limits.header_timeout_ms
                ),
            ),
        };
        if Instant::now() >= deadline {
            return expired(self, cx);
        }
        let cap = usize::try_from(self.limits.max_header_bytes).unwrap_or(usize::MAX);
        let room = cap.saturating_sub(bytes);
        if room == 0 {
            return self.reject(
                cx,
                Some(TOO_LARGE),
                format!("request header over {cap} bytes"),
            );
        }
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let want = room.min(buf.remaining());
        let polled = if want == buf.remaining() {
            let before = buf.filled().len();
            match self.read_plain(cx, buf) {
                Poll::Ready(Ok(())) => Poll::Ready(Ok(buf.filled().len() - before)),
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        } else {
            let mut scratch = std::mem::take(&mut self.scratch);
            scratch.resize(want, 0);
            let mut short = ReadBuf::new(&mut scratch);
            let polled = match self.read_plain(cx, &mut short) {
                Poll::Ready(Ok(())) => {
                    buf.put_slice(short.filled());
                    Poll::Ready(Ok(short.filled().len()))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            };
            self.scratch = scratch;
            polled
        };
        match polled {
            Poll::Ready(Ok(0)) => Poll::Ready(Ok(())),
            Poll::Ready(Ok(n)) => {
                let mut shared = self.shared.lock();
                if let Phase::Header { since, bytes } = &mut shared.phase {
                    since.get_or_insert_with(Instant::now);
                    *bytes += n;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                // One timer per connection, moved to each new deadline.
                let timer = match self.timer.as_mut() {
                    Some(t) => {
                        if t.deadline() != deadline.into() {
                            t.as_mut().reset(deadline.into());
                        }
                        t
                    }
                    None => self
                        .timer
                        .insert(Box::pin(tokio::time::sleep_until(deadline.into()))),
                };
                if timer.as_mut().poll(cx).is_ready() {
                    return expired(self, cx);
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let (phase, idle_since) = {
            let shared = this.shared.lock();
            (shared.phase, shared.idle_since)
        };
        match phase {
            Phase::Request | Phase::Off => this.read_plain(cx, buf),
            Phase::Rejected => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the request was refused",
            ))),
            Phase::Header { since, bytes } => this.read_header(cx, buf, since, bytes, idle_since),
        }
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for GuardedStream {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await;
    }
}

impl UniqueID for GuardedStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for GuardedStream {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for GuardedStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for GuardedStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest);
    }
}

impl GetSocketDigest for GuardedStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest);
    }
}

#[async_trait]
impl Peek for GuardedStream {
    /// Pingora peeks at the first bytes of a plaintext connection for the HTTP/2 preface, with
    /// a `read_exact` of its length and no timeout: a request shorter than the preface would
    /// wait forever, and a client that sends nothing would hold the connection. This peek
    /// answers under the header deadline, and as soon as the bytes so far cannot be the
    /// preface (then `buf` holds them, padded with zeros).
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        let (phase, idle_since) = {
            let shared = self.shared.lock();
            (shared.phase, shared.idle_since)
        };
        let Phase::Header { since, .. } = phase else {
            return self.inner.try_peek(buf).await;
        };
        let deadline = self.deadline(since, idle_since);
        let wanted = buf.len();
        let read_ahead = async {
            while self.rewind.len() < wanted && H2_PREFACE.starts_with(&self.rewind) {
                let mut chunk = [0u8; 64];
                let n = (wanted - self.rewind.len()).min(chunk.len());
                let read = self.inner.read(&mut chunk[..n]).await?;
                if read == 0 {
                    break;
                }
                self.rewind.extend_from_slice(&chunk[..read]);
            }
            Ok::<(), io::Error>(())
        };
        match tokio::time::timeout_at(deadline.into(), read_ahead).await {
            Ok(result) => result?,
            Err(_) => {
                self.shared.lock().phase = Phase::Rejected;
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no request before the deadline",
                ));
            }
        }
        let n = self.rewind.len().min(wanted);
        buf[..n].copy_from_slice(&self.rewind[..n]);
        buf[n..].fill(0);
        if self.rewind.starts_with(H2_PREFACE) {
            self.shared.lock().phase = Phase::Off;
        }
        Ok(true)
    }
}

/// `early_request_filter`: the request's header is in. Tells the connection's guard; refuses a
/// request with more than one `content-length` field, or one that is not digits only (`400`) or more than `max_headers` fields
/// (`431`); sets the body read timeout and the keep-alive time.
pub fn on_request_header(session: &mut Session, limits: &ClientLimits) -> Result<()> {
    if let Some(guard) = session.as_downstream().stream().and_then(guarded) {
        guard.header_done();
    }
    let headers = &session.req_header().headers;
    // Pingora accepts equal duplicates, and passes a list (`5, 5`) on as it came; RFC 9112
    // §6.3 lets a recipient refuse both, and an upstream that reads them another way is the
    // smuggling risk. One field of digits only.
    let mut lengths = headers.get_all(http::header::CONTENT_LENGTH).iter();
    let plain =
        |v: &http::HeaderValue| !v.is_empty() && v.as_bytes().iter().all(u8::is_ascii_digit);
    if let Some(first) = lengths.next()
        && (!plain(first) || lengths.next().is_some())
    {
        return Err(Error::explain(
            ErrorType::HTTPStatus(400),
            "content-length repeated or not a plain number",
        ));
    }
    let fields = headers.len();
    if fields as u64 > limits.max_headers {
        return Err(Error::explain(
            ErrorType::HTTPStatus(431),
            format!(
                "{fields} header fields, over the limit of {}",
                limits.max_headers
            ),
        ));
    }
    session.set_read_timeout(Some(Duration::from_millis(limits.body_timeout_ms)));
    if limits.keepalive_timeout_ms == 0 {
        session.set_keepalive(None);
    } else if session.get_keepalive().is_some() {
        // Pingora counts in whole seconds; the guard enforces the exact time.
        session.set_keepalive(Some(limits.keepalive_timeout_ms.div_ceil(1000)));
    }
    Ok(())
}

/// The average rate of a request body so far.
#[derive(Debug, Default)]
pub struct BodyClock {
    /// When its first bytes were read.
    first: Option<Instant>,
    bytes: u64,
}

/// `request_body_filter`: `n` more body bytes arrived. Once `body_timeout_ms` has passed since
/// the first ones, a body arriving slower than `body_min_rate` on average is refused (`408`).
pub fn on_body_chunk(clock: &mut BodyClock, n: usize, limits: &ClientLimits) -> Result<()> {
    let first = *clock.first.get_or_insert_with(Instant::now);
    clock.bytes += n as u64;
    if limits.body_min_rate == 0 {
        return Ok(());
    }
    let elapsed = first.elapsed();
    if elapsed <= Duration::from_millis(limits.body_timeout_ms) {
        return Ok(());
    }
    let least = limits.body_min_rate as f64 * elapsed.as_secs_f64();
    if (clock.bytes as f64) < least {
        return Err(Error::explain(
            ErrorType::HTTPStatus(408),
            format!(
                "request body at {:.0} B/s after {elapsed:?}, under the minimum {} B/s",
                clock.bytes as f64 / elapsed.as_secs_f64(),
                limits.body_min_rate
            ),
        ));
    }
    Ok(())
}

/// The HTTP/2 settings from the client limits: the header list size (the h2 crate's default
/// is 16 MiB; Pingora's 64 KiB).
pub fn h2_options(limits: &ClientLimits) -> H2Options {
    let mut options = pingora::protocols::http::v2::server::default_h2_options();
    options.max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    options
}

#[cfg(test)]
mod tests;
