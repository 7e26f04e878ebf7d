//! The Pingora proxy service: routes each request, runs its filter chain at each phase, and
//! turns the chain's verdicts into Pingora actions.
//!
//! Phase mapping: `request_filter` runs the request-headers callbacks (in chain order),
//! `request_body_filter` the request-body callbacks, `response_filter` the response-headers
//! callbacks (in reverse), `response_body_filter` and `response_trailer_filter` the
//! response-body and -trailers callbacks, and `logging` ends the contexts (`proxy_on_log`,
//! `proxy_on_done`, `proxy_on_delete`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use wasmgate_abi::{ChainStream, HttpStream, LocalReply, StreamInfo, Verdict};

use crate::generation::Generation;
use crate::headers;
use crate::metrics::{self, RequestCounters};
use crate::pause::{PausedStreams, Stall, settle, settle_watching};

/// Shared by every request: the current generation and the request counters.
#[derive(Debug)]
pub struct State {
    pub current: ArcSwap<Generation>,
    pub counters: RequestCounters,
    /// Streams filters hold paused, bounded by `max_paused_streams`.
    pub paused: PausedStreams,
    next_stream_id: AtomicU64,
}

impl State {
    pub fn new(generation: Generation) -> Arc<State> {
        Arc::new(State {
            current: ArcSwap::from_pointee(generation),
            counters: RequestCounters::new(),
            paused: PausedStreams::new(),
            next_stream_id: AtomicU64::new(1),
        })
    }
}

/// The proxy.
#[derive(Debug, Clone)]
pub struct WasmGate {
    pub state: Arc<State>,
}

/// A response the proxy sends instead of the upstream's.
#[derive(Debug)]
struct Replacement {
    header: ResponseHeader,
    body: Bytes,
}

/// How a body is framed on the wire, and how much of it went out.
#[derive(Debug, Default)]
struct Framing {
    /// The length announced by `content-length`, when the body is sent with one: the proxy
    /// then refuses to send a different number of bytes (a desynchronised connection).
    announced: Option<u64>,
    /// Bytes forwarded so far.
    sent: u64,
    /// The body ended with the headers: no body callbacks run.
    ended: bool,
    /// A filter removed the length header: the proxy frames the body itself.
    reframe: bool,
}

impl Framing {
    /// Accounts for `n` more bytes, `last` if the body ends with them; an error if that breaks
    /// the announced length.
    fn send(&mut self, n: usize, last: bool) -> std::result::Result<(), String> {
        self.sent += n as u64;
        match self.announced {
            Some(len) if self.sent > len || (last && self.sent != len) => Err(format!(
                "a filter changed the body length ({} bytes instead of the {len} announced); \
                 a filter that changes a body must remove content-length in its headers callback",
                self.sent
            )),
            _ => Ok(()),
        }
    }
}

/// Per-request state.
#[derive(Debug)]
pub struct RequestCtx {
    generation: Arc<Generation>,
    route: Option<usize>,
    /// The upstream picked for the request (one of a weighted split), none before routing and
    /// for a route that answers itself.
    upstream: Option<Arc<crate::generation::Upstream>>,
    chain: Option<ChainStream>,
    /// Set when a filter replaced the response or failed after the request went upstream.
    replacement: Option<Replacement>,
    /// A filter asked to reset the stream, or it must be aborted: no response at all.
    reset: bool,
    request: Framing,
    response: Framing,
    /// The status sent downstream, for metrics.
    status: u16,
    started: Instant,
    /// The request body's rate, for `client.body_min_rate`.
    body_clock: crate::client::BodyClock,
    /// When the upstream's response must be complete (`response_timeout_ms`), if ever.
    deadline: Option<Instant>,
    /// A filter saw the request body, or the response: a retry would show it to them twice.
    filtered: bool,
    /// The tries made at the upstream.
    attempts: crate::upstream::attempt::Attempts,
    /// Forwarding decisions and upstream timing, for the response and the access log.
    facts: crate::access_log::Facts,
}

fn plain(status: u16, body: &'static str) -> Replacement {
    let mut header = ResponseHeader::build(status, Some(2)).expect("a valid status");
    let _ = header.insert_header(http::header::CONTENT_TYPE, "text/plain");
    let _ = header.insert_header(http::header::CONTENT_LENGTH, body.len());
    Replacement {
        header,
        body: Bytes::from_static(body.as_bytes()),
    }
}

fn filter_failed() -> Replacement {
    plain(503, "503 Service Unavailable: a filter failed\n")
}

fn filter_timed_out() -> Replacement {
    plain(
        504,
        "504 Gateway Timeout: a filter paused the request too long\n",
    )
}

fn stalled(stall: Stall) -> Replacement {
    match stall {
        // `Left` has no one to answer; only `request_filter` watches for it.
        Stall::TimedOut | Stall::Left => filter_timed_out(),
        Stall::Overloaded => plain(
            503,
            "503 Service Unavailable: too many requests held by filters\n",
        ),
    }
}

fn upstream_timed_out() -> Replacement {
    plain(504, "504 Gateway Timeout\n")
}

fn too_large() -> Replacement {
    plain(
        413,
        "413 Content Too Large: the body is over a filter's buffer limit\n",
    )
}

fn internal_error() -> Replacement {
    plain(500, "500 Internal Server Error\n")
}

fn local_reply(chain: &ChainStream, reply: LocalReply) -> Replacement {
    Replacement {
        header: headers::build_response(&chain.stream().response_headers, reply.body.len()),
        body: reply.body,
    }
}

fn closed() -> Box<Error> {
    Error::explain(
        ErrorType::Custom("wasm_close_stream"),
        "a filter closed the stream",
    )
}

fn replaced() -> Box<Error> {
    Error::explain(
        ErrorType::Custom("wasm_replaced_response"),
        "a filter answered instead of the upstream",
    )
}

/// Sends a whole response downstream.
async fn send(session: &mut Session, ctx: &RequestCtx, mut reply: Replacement) -> Result<u16> {
    let forwarding = &ctx.generation.config.forwarding;
    crate::forwarding::echo(forwarding, &ctx.facts.forwarded, &mut reply.header);
    let status = reply.header.status.as_u16();
    let head = session.req_header().method == http::Method::HEAD;
    let no_body = reply.body.is_empty() || head;
    session
        .write_response_header(Box::new(reply.header), no_body)
        .await?;
    if !no_body {
        session.write_response_body(Some(reply.body), true).await?;
    }
    crate::linger::discard_request_body(session).await;
    Ok(status)
}

/// Logs and counts the failures a chain saw.
fn report(chain: &mut ChainStream) {
    for f in chain.take_failures() {
        let kind = f
            .fault
            .as_ref()
            .map_or("unavailable", |fault| fault.kind.as_str());
        metrics::filter_failure(&f.filter, kind, f.failed_open);
        let policy = if f.failed_open {
            "skipped (fail_open)"
        } else {
            "request failed"
        };
        if f.fault.is_some() {
            tracing::error!(filter = %f.filter, kind, "filter failed, {policy}: {}", f.reason);
        } else if let Some(left_out) = UNAVAILABLE_LOG.admit(&f.filter) {
            tracing::error!(
                filter = %f.filter,
                kind,
                left_out,
                "filter failed, {policy}: {}",
                f.reason
            );
        }
    }
}

/// How often a filter's refusals without a fault of their own (its VM backs off, or died
/// with the stream's context) are logged.
const UNAVAILABLE_LOG_EVERY: Duration = Duration::from_secs(1);

/// Rate limit of the `unavailable` log lines. A filter in backoff refuses requests as fast as
/// they come (tens of thousands a second), and a line for each would flood the log; the
/// metric still counts every one.
static UNAVAILABLE_LOG: LogLimit = LogLimit::new(UNAVAILABLE_LOG_EVERY);

/// At most one log line per key per period.
#[derive(Debug)]
struct LogLimit {
    every: Duration,
    /// Per key: when a line was last let through, and how many were left out since.
    last: parking_lot::Mutex<Option<std::collections::HashMap<String, (Instant, u64)>>>,
}

impl LogLimit {
    const fn new(every: Duration) -> Self {
        LogLimit {
            every,
            last: parking_lot::Mutex::new(None),
        }
    }

    /// `Some(lines left out since the last one)` if a line for `key` may be logged now.
    fn admit(&self, key: &str) -> Option<u64> {
        let now = Instant::now();
        let mut last = self.last.lock();
        let map = last.get_or_insert_with(Default::default);
        match map.get_mut(key) {
            Some((at, left_out)) if now.duration_since(*at) < self.every => {
                *left_out += 1;
                None
            }
            Some((at, left_out)) => {
                *at = now;
                Some(std::mem::take(left_out))
            }
            None => {
                map.insert(key.to_string(), (now, 0));
                Some(0)
            }
        }
    }
}

/// The `content-length` of a message, when it has one and no `transfer-encoding`.
fn announced_length(headers: &http::HeaderMap) -> Option<u64> {
    if headers.contains_key(http::header::TRANSFER_ENCODING) {
        return None;
    }
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Whether the client connection uses TLS.
fn is_tls(session: &Session) -> bool {
    session.digest().is_some_and(|d| d.ssl_digest.is_some())
}

impl WasmGate {
    fn stream_info(&self, session: &Session) -> StreamInfo {
        let req = session.req_header();
        let protocol = if session.is_http2() {
            "HTTP/2"
        } else if req.version == http::Version::HTTP_10 {
            "HTTP/1.0"
        } else {
            "HTTP/1.1"
        };
        StreamInfo {
            id: self.state.next_stream_id.fetch_add(1, Ordering::Relaxed),
            source: session.client_addr().and_then(|a| a.as_inet()).copied(),
            destination: session.server_addr().and_then(|a| a.as_inet()).copied(),
            protocol,
            start_time: SystemTime::now(),
            tls: is_tls(session),
            // Set by `request_filter`, from the generation's `forwarding:`.
            request_id_header: None,
        }
    }
}

/// Whether a response to this request may use chunked framing (HTTP/1.1 downstream).
fn downstream_chunked(session: &Session) -> bool {
    !session.is_http2() && session.req_header().version == http::Version::HTTP_11
}

#[async_trait]
impl ProxyHttp for WasmGate {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            generation: self.state.current.load_full(),
            route: None,
            upstream: None,
            chain: None,
            replacement: None,
            reset: false,
            request: Framing::default(),
            response: Framing::default(),
            status: 0,
            started: Instant::now(),
            body_clock: Default::default(),
            deadline: None,
            filtered: false,
            attempts: Default::default(),
            facts: Default::default(),
        }
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        crate::client::on_request_header(session, &ctx.generation.config.client)
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let generation = ctx.generation.clone();
        let forwarding = &generation.config.forwarding;
        ctx.facts.forwarded = crate::forwarding::on_request(forwarding, session, is_tls(session));
        let Some(index) = crate::routing::route_for(&generation, session.req_header()) else {
            ctx.status = send(session, ctx, plain(404, "404 Not Found: no route\n")).await?;
            return Ok(true);
        };
        ctx.route = Some(index);
        ctx.upstream = crate::routing::pick_upstream(&generation.routes[index]);
        let route = &generation.config.routes[index];
        let chain = generation.routes[index].chain.clone();
        if chain.is_empty() {
            let Some(reply) = crate::routing::direct(route, session.req_header(), is_tls(session))
            else {
                return Ok(false);
            };
            let header = crate::routing::response(&reply);
            ctx.status = send(
                session,
                ctx,
                Replacement {
                    header,
                    body: reply.body,
                },
            )
            .await?;
            return Ok(true);
        }

        let mut stream = HttpStream::new(self.stream_info(session));
        stream.info.request_id_header = crate::forwarding::id_header(forwarding);
        stream.request_headers = headers::capture_request(session.req_header(), is_tls(session));
        if let Some(upstream) = &ctx.upstream {
            stream.set_cluster_name(upstream.name.clone());
        }
        ctx.request.ended = session.is_body_empty();
        let mut chain = ChainStream::new(chain, stream);
        let limit = generation.config.max_paused_streams;
        let paused = &self.state.paused;
        let verdict = chain.on_request_headers(ctx.request.ended);
        let settled = if ctx.request.ended {
            settle_watching(session, &mut chain, verdict, paused, limit).await
        } else {
            settle(&mut chain, verdict, Bytes::new(), paused, limit).await
        };
        report(&mut chain);
        let (req, tls) = (session.req_header(), is_tls(session));
        let settled = crate::routing::answer(settled, Some(route), req, tls, &mut chain);
        let reply = match settled {
            Err(Stall::Left) => {
                ctx.chain = Some(chain);
                ctx.reset = true;
                return Err(Error::explain(
                    ErrorType::ConnectionClosed,
                    "the client left while a filter held its request",
                )
                .into_down());
            }
            Err(stall) => stalled(stall),
            Ok((Verdict::Continue, _)) => {
                let applied = headers::apply_request(
                    &mut chain.stream_mut().request_headers,
                    session.req_header_mut(),
                );
                ctx.request.reframe = applied.reframe_body && !ctx.request.ended;
                ctx.chain = Some(chain);
                return Ok(false);
            }
            Ok((Verdict::LocalReply(reply), _)) => {
                chain
                    .stream_mut()
                    .set_response_code_details(reply.details.clone());
                // The response callbacks see the local reply, as in Envoy.
                let verdict = chain.on_response_headers(reply.body.is_empty());
                let settled = settle(&mut chain, verdict, Bytes::new(), paused, limit).await;
                report(&mut chain);
                match settled {
                    Err(stall) => stalled(stall),
                    Ok((Verdict::Close, _)) => {
                        ctx.chain = Some(chain);
                        ctx.reset = true;
                        return Err(closed());
                    }
                    Ok((Verdict::Failed { .. }, _)) => filter_failed(),
                    Ok(_) => local_reply(&chain, reply),
                }
            }
            Ok((Verdict::Failed { .. }, _)) => filter_failed(),
            Ok((Verdict::TooLarge { .. }, _)) => too_large(),
            Ok((Verdict::Paused { .. }, _)) => filter_timed_out(),
            Ok((Verdict::Close, _)) => {
                ctx.chain = Some(chain);
                ctx.reset = true;
                return Err(closed());
            }
        };
        ctx.chain = Some(chain);
        ctx.status = send(session, ctx, reply).await?;
        Ok(true)
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let route = crate::routing::Chosen::new(&ctx.generation, ctx.route, ctx.upstream.as_ref())?;
        let mut peer = crate::upstream::hooks::peer(&route.upstream, session, &mut ctx.attempts)?;
        // The route's `timeout_ms` stands for the upstream's `response_timeout_ms`.
        let timeouts = route.timeouts;
        peer.options.read_timeout = Some(
            timeouts
                .response
                .map_or(timeouts.read, |r| r.min(timeouts.read)),
        );
        ctx.facts.upstream_chosen();
        // A retry picks a peer again: the deadline counts from the first pick.
        if ctx.deadline.is_none() {
            ctx.deadline = timeouts.response.map(|d| Instant::now() + d);
        }
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some(upstream) = &ctx.upstream {
            crate::upstream::hooks::connect_failed(upstream, &mut ctx.attempts, &mut e);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        crate::routing::rewrite(&ctx.generation, ctx.route, upstream_request)?;
        if ctx.chain.is_none() {
            return Ok(());
        }
        if ctx.request.reframe {
            // Chunked for HTTP/1.1; HTTP/2 frames the body itself (and forbids the header).
            let http2 = ctx.upstream.as_ref().is_some_and(|u| u.http2());
            headers::reframe_request(upstream_request, !http2);
        }
        ctx.request.announced = announced_length(&upstream_request.headers);
        Ok(())
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let n = body.as_ref().map_or(0, Bytes::len);
        crate::client::on_body_chunk(&mut ctx.body_clock, n, &ctx.generation.config.client)?;
        let Some(chain) = ctx.chain.as_mut() else {
            return Ok(());
        };
        if ctx.request.ended {
            return Ok(());
        }
        let limit = ctx.generation.config.max_paused_streams;
        let paused = &self.state.paused;
        let chunk = body.take().unwrap_or_default();
        ctx.filtered = true;
        let (verdict, data) = chain.on_request_body(chunk, end_of_stream);
        let settled = settle(chain, verdict, data, paused, limit).await;
        report(chain);
        let replacement = match settled {
            Ok((Verdict::Continue, data)) => {
                if let Err(why) = ctx.request.send(data.len(), end_of_stream) {
                    tracing::error!("request failed: {why}");
                    ctx.replacement = Some(internal_error());
                    return Err(replaced());
                }
                if end_of_stream {
                    chain.stream_mut().set_request_body_bytes(ctx.request.sent);
                }
                // `None` would end the upstream body: an empty chunk sends nothing.
                *body = Some(data);
                return Ok(());
            }
            Ok((Verdict::LocalReply(reply), _)) => {
                let verdict = chain.on_response_headers(reply.body.is_empty());
                let settled = settle(chain, verdict, Bytes::new(), paused, limit).await;
                report(chain);
                match settled {
                    Err(stall) => stalled(stall),
                    Ok((Verdict::Close, _)) => {
                        ctx.reset = true;
                        return Err(closed());
                    }
                    Ok((Verdict::Failed { .. }, _)) => filter_failed(),
                    Ok(_) => local_reply(chain, reply),
                }
            }
            Ok((Verdict::Close, _)) => {
                ctx.reset = true;
                return Err(closed());
            }
            Ok((Verdict::TooLarge { filter }, _)) => {
                tracing::warn!(filter = %filter, "request body over the filter's buffer limit");
                too_large()
            }
            Ok((Verdict::Failed { .. }, _)) => filter_failed(),
            Err(stall) => stalled(stall),
            Ok((Verdict::Paused { .. }, _)) => filter_timed_out(),
        };
        // The upstream has part of the request: Pingora's error path answers the client with
        // our response and never reuses that upstream connection.
        ctx.replacement = Some(replacement);
        Err(replaced())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.facts.upstream_answered();
        if let Some(upstream) = &ctx.upstream {
            let replayable = !ctx.filtered && !session.as_ref().retry_buffer_truncated();
            let status = upstream_response.status.as_u16();
            crate::upstream::hooks::response(upstream, &mut ctx.attempts, status, replayable)?;
        }
        // Pingora 0.9.1 refuses a 101 only when the client and the upstream request disagree
        // on the upgrade; a 101 to a request that asked for none would open a tunnel that
        // bypasses the filters, and make the client read what follows as another protocol.
        if upstream_response.status == http::StatusCode::SWITCHING_PROTOCOLS
            && !session.is_upgrade_req()
        {
            return Err(Error::explain(
                ErrorType::InvalidHTTPHeader,
                "the upstream answered 101 to a request that asked for no upgrade",
            )
            .into_up());
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if ctx.deadline.is_some_and(|d| Instant::now() >= d) {
            ctx.replacement = Some(upstream_timed_out());
            return Err(replaced());
        }
        let forwarding = &ctx.generation.config.forwarding;
        crate::forwarding::on_response(forwarding, &ctx.facts.forwarded, upstream_response);
        let limit = ctx.generation.config.max_paused_streams;
        let paused = &self.state.paused;
        let Some(chain) = ctx.chain.as_mut() else {
            return Ok(());
        };
        ctx.filtered = true;
        chain.stream_mut().response_headers = headers::capture_response(upstream_response);
        let status = upstream_response.status.as_u16();
        ctx.response.ended = session.req_header().method == http::Method::HEAD
            || status == 204
            || status == 304
            || announced_length(&upstream_response.headers) == Some(0);
        let verdict = chain.on_response_headers(ctx.response.ended);
        let settled = settle(chain, verdict, Bytes::new(), paused, limit).await;
        report(chain);
        let replacement = match settled {
            Ok((Verdict::Continue, _)) => {
                let applied = headers::apply_response(
                    &mut chain.stream_mut().response_headers,
                    upstream_response,
                );
                if applied.reframe_body && !ctx.response.ended {
                    ctx.response.reframe = true;
                    headers::reframe_response(upstream_response, downstream_chunked(session));
                }
                ctx.response.announced = announced_length(&upstream_response.headers);
                return Ok(());
            }
            Ok((Verdict::LocalReply(reply), _)) => local_reply(chain, reply),
            Ok((Verdict::Failed { .. }, _)) => filter_failed(),
            Ok((Verdict::TooLarge { .. }, _)) => internal_error(),
            Err(stall) => stalled(stall),
            Ok((Verdict::Paused { .. }, _)) => filter_timed_out(),
            Ok((Verdict::Close, _)) => {
                ctx.reset = true;
                return Err(closed());
            }
        };
        // The upstream's response is dropped: Pingora's error path sends ours instead and
        // does not reuse the upstream connection, whose body was never read.
        ctx.replacement = Some(replacement);
        Err(replaced())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        if !end_of_stream && ctx.deadline.is_some_and(|d| Instant::now() >= d) {
            // The response head is on its way: cut it rather than let it run past its time.
            tracing::warn!("upstream response past response_timeout_ms: aborted");
            ctx.reset = true;
            return Err(Error::explain(
                ErrorType::ReadTimedout,
                "the upstream response ran past response_timeout_ms",
            ));
        }
        let Some(chain) = ctx.chain.as_mut() else {
            return Ok(None);
        };
        if ctx.response.ended {
            return Ok(None);
        }
        let chunk = body.take().unwrap_or_default();
        let (verdict, data) = chain.on_response_body(chunk, end_of_stream);
        report(chain);
        match verdict {
            Verdict::Continue => {
                if let Err(why) = ctx.response.send(data.len(), end_of_stream) {
                    tracing::error!("response aborted: {why}");
                    ctx.reset = true;
                    return Err(closed());
                }
                if end_of_stream {
                    chain
                        .stream_mut()
                        .set_response_body_bytes(ctx.response.sent);
                }
                *body = Some(data);
                Ok(None)
            }
            other => {
                // The response headers are on their way: the only safe answer is to abort the
                // downstream connection (a truncated response, never a wrong one).
                tracing::warn!("response aborted by its filter chain: {other:?}");
                ctx.reset = true;
                Err(closed())
            }
        }
    }

    async fn response_trailer_filter(
        &self,
        _session: &mut Session,
        upstream_trailers: &mut http::HeaderMap,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Bytes>> {
        let Some(chain) = ctx.chain.as_mut() else {
            return Ok(None);
        };
        chain.stream_mut().response_trailers = headers::capture_trailers(upstream_trailers);
        let limit = ctx.generation.config.max_paused_streams;
        let verdict = chain.on_response_trailers();
        let settled = settle(chain, verdict, Bytes::new(), &self.state.paused, limit).await;
        report(chain);
        match settled {
            Ok((Verdict::Continue, _)) => {
                headers::apply_trailers(
                    &mut chain.stream_mut().response_trailers,
                    upstream_trailers,
                );
                Ok(None)
            }
            _ => {
                // Pingora 0.9.1 logs an error from this hook and then forwards the upstream's
                // trailers unfiltered: drop them here, so that a failed filter never lets
                // through what it would have removed (a gRPC client then sees no status).
                upstream_trailers.clear();
                ctx.reset = true;
                Err(closed())
            }
        }
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        let replayable = !ctx.filtered
            && !session.as_ref().retry_buffer_truncated()
            && session.response_written().is_none();
        if let Some(upstream) = &ctx.upstream
            && let Some(retry) = crate::upstream::hooks::proxy_failed(
                upstream,
                &mut ctx.attempts,
                &e,
                client_reused,
                replayable,
            )
        {
            e.set_retry(retry);
            return e;
        }
        // Pingora's default, plus: no retry once a filter saw the request body or the response,
        // which a retry would show it a second time.
        if ctx.filtered
            || !session.req_header().method.is_idempotent()
            || session.as_ref().retry_buffer_truncated()
        {
            e.set_retry(false);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        e
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &RequestCtx, error: &Error) -> bool {
        if crate::access_log::client_left(error) {
            // Not a fault: counted as 499 (see `logging`).
            tracing::debug!("client left: {error}");
            return true;
        }
        ctx.replacement.is_some() || ctx.reset
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        if ctx.reset {
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        }
        let reply = match ctx.replacement.take() {
            Some(reply) => reply,
            None => match e.etype() {
                ErrorType::HTTPStatus(404) => plain(404, "404 Not Found\n"),
                ErrorType::HTTPStatus(502) => plain(502, "502 Bad Gateway\n"),
                ErrorType::HTTPStatus(code) if *code >= 400 => {
                    let mut r = plain(500, "");
                    let _ = r.header.set_status(*code);
                    r
                }
                _ => match e.esource() {
                    ErrorSource::Upstream => match e.etype() {
                        ErrorType::ConnectTimedout
                        | ErrorType::ReadTimedout
                        | ErrorType::WriteTimedout => plain(504, "504 Gateway Timeout\n"),
                        _ => plain(502, "502 Bad Gateway\n"),
                    },
                    ErrorSource::Downstream => match e.etype() {
                        // `client.body_timeout_ms`, Pingora's per-read body timeout.
                        ErrorType::ReadTimedout => plain(408, "408 Request Timeout\n"),
                        ErrorType::WriteError
                        | ErrorType::ReadError
                        | ErrorType::ConnectionClosed => {
                            return FailToProxy {
                                error_code: 0,
                                can_reuse_downstream: false,
                            };
                        }
                        _ => plain(400, "400 Bad Request\n"),
                    },
                    _ => internal_error(),
                },
            },
        };
        if session.response_written().is_some() {
            // Too late for a response: the client connection is dropped.
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        }
        let code = reply.header.status.as_u16();
        // Past this point Pingora closes the client connection: say so (Pingora writes the
        // `Connection` header from the session's keep-alive state, not from ours), so that
        // the client does not send its next request on it.
        session.set_keepalive(None);
        ctx.status = match send(session, ctx, reply).await {
            Ok(code) => code,
            Err(err) => {
                tracing::debug!("could not send the error response downstream: {err}");
                0
            }
        };
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        _digest: Option<&pingora::protocols::Digest>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.facts.upstream = pingora::upstreams::peer::Peer::address(peer)
            .as_inet()
            .copied();
        if let Some(chain) = ctx.chain.as_mut()
            && !chain.is_paused()
            && let Some(addr) = pingora::upstreams::peer::Peer::address(peer).as_inet()
        {
            chain.stream_mut().set_upstream_address(*addr);
        }
        Ok(())
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        if let Some(chain) = ctx.chain.as_mut() {
            if !chain.is_paused() {
                chain.stream_mut().set_duration(ctx.started.elapsed());
            }
            chain.finish();
            report(chain);
        }
        let status = match session.response_written() {
            Some(r) => r.status.as_u16(),
            // nginx's 499: the client left before it got a response.
            None if ctx.status == 0 && e.is_some_and(crate::access_log::client_left) => 499,
            None => ctx.status,
        };
        self.state.counters.record(status);
        let (chain, facts) = (ctx.chain.as_ref(), &ctx.facts);
        crate::access_log::log(
            session,
            &ctx.generation,
            ctx.route,
            chain,
            status,
            ctx.started,
            facts,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_limit_lets_one_line_per_key_and_period_through() {
        let limit = LogLimit::new(Duration::from_millis(50));
        assert_eq!(limit.admit("a"), Some(0));
        assert_eq!(limit.admit("a"), None);
        assert_eq!(limit.admit("a"), None);
        assert_eq!(limit.admit("b"), Some(0));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(limit.admit("a"), Some(2));
        assert_eq!(limit.admit("b"), Some(0));
    }
}
