//! The Pingora proxy service: routes each request, runs its filter chain at each phase, and
//! turns the chain's verdicts into Pingora actions.
//!
//! Phase mapping: `request_filter` runs the request-headers callbacks (in chain order),
//! `response_filter` the response-headers callbacks (in reverse), `logging` ends the contexts
//! (`proxy_on_log`, `proxy_on_done`, `proxy_on_delete`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use wasmgate_abi::{ChainStream, HttpStream, StreamInfo, Verdict};

use crate::generation::Generation;
use crate::headers;
use crate::metrics::{self, RequestCounters};

/// Shared by every request: the current generation and the request counters.
#[derive(Debug)]
pub struct State {
    pub current: ArcSwap<Generation>,
    pub counters: RequestCounters,
    next_stream_id: AtomicU64,
}

impl State {
    pub fn new(generation: Generation) -> Arc<State> {
        Arc::new(State {
            current: ArcSwap::from_pointee(generation),
            counters: RequestCounters::new(),
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

/// Per-request state.
#[derive(Debug)]
pub struct RequestCtx {
    generation: Arc<Generation>,
    route: Option<usize>,
    chain: Option<ChainStream>,
    /// Set in the response phase when a filter replaced the response or failed.
    replacement: Option<Replacement>,
    /// A filter asked to reset the stream: no response at all.
    reset: bool,
    /// The status sent downstream, for metrics.
    status: u16,
}

/// Upstream timeouts. Pingora's default is none at all, which lets a silent upstream hold a
/// request forever.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const UPSTREAM_IO_TIMEOUT: Duration = Duration::from_secs(60);

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

fn filter_paused() -> Replacement {
    plain(
        500,
        "500 Internal Server Error: a filter paused the request\n",
    )
}

/// Sends a whole response downstream.
async fn send(session: &mut Session, reply: Replacement) -> Result<u16> {
    let status = reply.header.status.as_u16();
    let head = session.req_header().method == http::Method::HEAD;
    let no_body = reply.body.is_empty() || head;
    session
        .write_response_header(Box::new(reply.header), no_body)
        .await?;
    if !no_body {
        session.write_response_body(Some(reply.body), true).await?;
    }
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
        tracing::error!(filter = %f.filter, kind, "filter failed, {policy}: {}", f.reason);
    }
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
            tls: false,
        }
    }
}

fn request_host(session: &Session) -> Option<&str> {
    let req = session.req_header();
    req.uri
        .host()
        .or_else(|| req.headers.get(http::header::HOST)?.to_str().ok())
}

#[async_trait]
impl ProxyHttp for WasmGate {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            generation: self.state.current.load_full(),
            route: None,
            chain: None,
            replacement: None,
            reset: false,
            status: 0,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let generation = ctx.generation.clone();
        let path = session.req_header().uri.path().to_string();
        let Some((index, _)) = generation.config.route_for(request_host(session), &path) else {
            ctx.status = send(session, plain(404, "404 Not Found: no route\n")).await?;
            return Ok(true);
        };
        ctx.route = Some(index);
        let chain = generation.routes[index].chain.clone();
        if chain.is_empty() {
            return Ok(false);
        }

        let mut stream = HttpStream::new(self.stream_info(session));
        stream.request_headers = headers::capture_request(session.req_header(), false);
        let end_of_stream = session.is_body_empty();
        let mut chain = ChainStream::new(chain, stream);
        let verdict = chain.on_request_headers(end_of_stream).await;
        report(&mut chain);
        let reply = match verdict {
            Verdict::Continue => {
                headers::apply_request(
                    &mut chain.stream_mut().request_headers,
                    session.req_header_mut(),
                );
                ctx.chain = Some(chain);
                return Ok(false);
            }
            Verdict::LocalReply(reply) => {
                // The response callbacks see the local reply, as in Envoy.
                let verdict = chain.on_response_headers(reply.body.is_empty()).await;
                report(&mut chain);
                match verdict {
                    Verdict::Failed { .. } => filter_failed(),
                    Verdict::Close => {
                        ctx.chain = Some(chain);
                        ctx.reset = true;
                        return Err(Error::explain(
                            ErrorType::Custom("wasm_close_stream"),
                            "a filter closed the stream",
                        ));
                    }
                    _ => Replacement {
                        header: headers::build_response(
                            &chain.stream().response_headers,
                            reply.body.len(),
                        ),
                        body: reply.body,
                    },
                }
            }
            Verdict::Failed { .. } => filter_failed(),
            Verdict::Paused { filter } => {
                let name = &chain.chain().filters()[filter].plugin().info().name;
                tracing::warn!(filter = %name, "filter paused the request and nothing can resume it");
                filter_paused()
            }
            Verdict::Close => {
                ctx.chain = Some(chain);
                ctx.reset = true;
                return Err(Error::explain(
                    ErrorType::Custom("wasm_close_stream"),
                    "a filter closed the stream",
                ));
            }
        };
        ctx.chain = Some(chain);
        ctx.status = send(session, reply).await?;
        Ok(true)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let route = ctx
            .route
            .and_then(|i| ctx.generation.routes.get(i))
            .ok_or_else(|| Error::explain(ErrorType::HTTPStatus(404), "no route"))?;
        let backend = route.upstream.balancer.select(b"", 256).ok_or_else(|| {
            Error::explain(
                ErrorType::HTTPStatus(502),
                format!("upstream {} has no endpoint", route.upstream.name),
            )
        })?;
        let mut peer = HttpPeer::new(backend, false, String::new());
        peer.options.connection_timeout = Some(CONNECT_TIMEOUT);
        peer.options.read_timeout = Some(UPSTREAM_IO_TIMEOUT);
        peer.options.write_timeout = Some(UPSTREAM_IO_TIMEOUT);
        Ok(Box::new(peer))
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(chain) = ctx.chain.as_mut() else {
            return Ok(());
        };
        chain.stream_mut().response_headers = headers::capture_response(upstream_response);
        let status = upstream_response.status.as_u16();
        let end_of_stream = session.req_header().method == http::Method::HEAD
            || status == 204
            || status == 304
            || upstream_response
                .headers
                .get(http::header::CONTENT_LENGTH)
                .is_some_and(|v| v.as_bytes() == b"0");
        let verdict = chain.on_response_headers(end_of_stream).await;
        report(chain);
        let replacement = match verdict {
            Verdict::Continue => {
                headers::apply_response(
                    &mut chain.stream_mut().response_headers,
                    upstream_response,
                );
                return Ok(());
            }
            Verdict::LocalReply(reply) => Replacement {
                header: headers::build_response(&chain.stream().response_headers, reply.body.len()),
                body: reply.body,
            },
            Verdict::Failed { .. } => filter_failed(),
            Verdict::Paused { .. } => filter_paused(),
            Verdict::Close => {
                ctx.reset = true;
                return Err(Error::explain(
                    ErrorType::Custom("wasm_close_stream"),
                    "a filter closed the stream",
                ));
            }
        };
        // The upstream's response is dropped: Pingora's error path sends ours instead and
        // does not reuse the upstream connection, whose body was never read.
        ctx.replacement = Some(replacement);
        Err(Error::explain(
            ErrorType::Custom("wasm_replaced_response"),
            "a filter replaced the upstream response",
        ))
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &RequestCtx, _error: &Error) -> bool {
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
                    _ => plain(500, "500 Internal Server Error\n"),
                },
            },
        };
        let code = reply.header.status.as_u16();
        let mut reply = reply;
        if !session.is_http2() {
            // Past this point Pingora closes the client connection: say so, so that the client
            // does not send its next request on it.
            let _ = reply
                .header
                .insert_header(http::header::CONNECTION, "close");
        }
        ctx.status = match send(session, reply).await {
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

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        if let Some(chain) = ctx.chain.as_mut() {
            chain.finish().await;
            report(chain);
        }
        let status = session
            .response_written()
            .map_or(ctx.status, |r| r.status.as_u16());
        self.state.counters.record(status);
    }
}
