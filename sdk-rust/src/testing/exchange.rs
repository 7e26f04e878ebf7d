//! One request's trip through the chain: the client's request, what the filters decided, the
//! upstream's response, and what the client gets.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::{Method, StatusCode};
use wasmgate_abi::{ChainStream, FilterFailure, HttpStream, LocalReply, StreamInfo, Verdict};

use super::harness::Inner;
use super::message::{Request, Response, parse_header};
use super::wire;

/// What the chain decided, so far, for one exchange.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Outcome {
    /// Every request callback let the request through: it goes upstream
    /// ([`Exchange::upstream_request`]). Next: [`Exchange::respond`].
    Forwarded,
    /// The upstream's response went through every response callback to the client.
    Proxied,
    /// A filter answered with `proxy_send_local_response`, in a request callback or a
    /// response-headers callback. The response callbacks ran on the reply (they may have
    /// changed it); [`Exchange::response`] is what the client gets.
    LocalReply(LocalReply),
    /// A fail-closed filter failed (trapped, ran past its deadline or memory limit, …) before
    /// the response started: the client gets 503 and no more filter callbacks run, except the
    /// end-of-stream ones.
    Failed(FilterFailure),
    /// A filter kept the stream paused past the harness's pause timeout
    /// ([`HarnessBuilder::pause_timeout`](super::HarnessBuilder::pause_timeout)); the proxy
    /// waits 60 s, then answers 504.
    Paused {
        /// The filter's name.
        filter: String,
    },
    /// A body was over a buffering filter's limit (`Limits::max_body_bytes`): 413 for a
    /// request body, 500 for a response.
    TooLarge {
        /// The filter's name.
        filter: String,
    },
    /// The proxy refused what the filters did: a filter changed a request body's length
    /// without removing `content-length` in its headers callback. The client gets 500.
    ProxyError {
        /// Why.
        reason: String,
    },
    /// The response had started when the chain could not go on (a fail-closed filter failed
    /// in a body or trailers callback, a body was over a limit, a filter changed the body's
    /// length without removing `content-length`): the proxy aborts the client's connection.
    /// [`Exchange::try_response`] shows what the client received before the abort.
    Aborted {
        /// Why.
        reason: String,
    },
    /// A filter closed the stream (`proxy_close_stream`, or a local reply once the response
    /// had started): the client's connection is reset. If the response had started,
    /// [`Exchange::try_response`] shows what the client received before the reset.
    Reset,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Forwarded => f.write_str("forwarded upstream"),
            Self::Proxied => f.write_str("proxied the upstream response"),
            Self::LocalReply(reply) => write!(f, "local reply {}", reply.status),
            Self::Failed(failure) => write!(
                f,
                "filter {} failed: {}",
                failure.filter,
                failure.reason.lines().next().unwrap_or_default()
            ),
            Self::Paused { filter } => write!(f, "filter {filter} kept the stream paused"),
            Self::TooLarge { filter } => write!(f, "a body is over filter {filter}'s limit"),
            Self::ProxyError { reason } => write!(f, "the proxy refused the request: {reason}"),
            Self::Aborted { reason } => write!(f, "the response was aborted: {reason}"),
            Self::Reset => f.write_str("a filter reset the stream"),
        }
    }
}

/// Builds the client's request; [`RequestBuilder::send`] runs it through the chain.
#[derive(Debug)]
#[must_use = "call .send().await to run the request through the chain"]
pub struct RequestBuilder {
    harness: Arc<Inner>,
    request: Request,
    chunks: Vec<Bytes>,
    info: StreamInfo,
}

impl RequestBuilder {
    pub(crate) fn new(harness: Arc<Inner>, method: Method, path: &str) -> RequestBuilder {
        let info = StreamInfo {
            source: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 50_000))),
            destination: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 8080))),
            ..StreamInfo::default()
        };
        RequestBuilder {
            harness,
            request: Request::new(method, &checked_path(path)),
            chunks: Vec::new(),
            info,
        }
    }

    /// Appends a header. `host` (or `:authority`) sets the authority instead, and `:path`,
    /// `:method` and `:scheme` set those.
    ///
    /// # Panics
    ///
    /// If the name or value is invalid.
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        let value = value.as_ref();
        let text = || {
            std::str::from_utf8(value)
                .unwrap_or_else(|_| panic!("{name} must be UTF-8"))
                .to_owned()
        };
        match name.to_ascii_lowercase().as_str() {
            "host" | ":authority" => return self.authority(&text()),
            ":path" => self.request.path = checked_path(&text()),
            ":method" => {
                self.request.method = Method::from_bytes(value)
                    .unwrap_or_else(|e| panic!("invalid :method {:?}: {e}", text()));
            }
            ":scheme" => return self.scheme(&text()),
            _ => {
                let (name, value) = parse_header(name, value);
                self.request.headers.append(name, value);
            }
        }
        self
    }

    /// Sets the authority (the Host header; `:authority`). By default this is `example.com`.
    ///
    /// # Panics
    ///
    /// If it is not a valid authority.
    pub fn authority(mut self, authority: &str) -> Self {
        if let Err(e) = authority.parse::<http::uri::Authority>() {
            panic!("invalid authority {authority:?}: {e}");
        }
        self.request.authority = Some(authority.to_owned());
        self
    }

    /// Sets the scheme: `http` (the default) or `https`, which also marks the client
    /// connection as TLS.
    ///
    /// # Panics
    ///
    /// For any other scheme.
    pub fn scheme(mut self, scheme: &str) -> Self {
        assert!(
            scheme == "http" || scheme == "https",
            "the scheme must be http or https, not {scheme:?}"
        );
        self.request.scheme = scheme.to_owned();
        self.info.tls = scheme == "https";
        self
    }

    /// Sets the body, delivered in one chunk. Unless the test sets `content-length` or
    /// `transfer-encoding`, the request gets a `content-length`, as a client would send.
    pub fn body(self, body: impl Into<Bytes>) -> Self {
        self.body_chunks([body])
    }

    /// Sets the body, delivered to the body callbacks in these chunks (one
    /// `on_http_request_body` per chunk until a filter buffers), as it would arrive from the
    /// network.
    pub fn body_chunks<B: Into<Bytes>>(mut self, chunks: impl IntoIterator<Item = B>) -> Self {
        self.chunks = chunks
            .into_iter()
            .map(Into::into)
            .filter(|c: &Bytes| !c.is_empty())
            .collect();
        self.request.body = concat(&self.chunks);
        self
    }

    /// Appends a trailer. The request gets `transfer-encoding: chunked` unless the test frames
    /// it. Trailers reach the upstream; the proxy does not show request trailers to filters.
    ///
    /// # Panics
    ///
    /// If the name or value is invalid.
    pub fn trailer(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        let (name, value) = parse_header(name, value.as_ref());
        self.request.trailers.append(name, value);
        self
    }

    /// The client's address (`source.address`, `source.port`). By default this is
    /// `127.0.0.1:50000`.
    pub fn source(mut self, address: SocketAddr) -> Self {
        self.info.source = Some(address);
        self
    }

    /// The address the client connected to (`destination.*`). By default this is
    /// `127.0.0.1:8080`.
    pub fn destination(mut self, address: SocketAddr) -> Self {
        self.info.destination = Some(address);
        self
    }

    /// The protocol (`request.protocol`): `"HTTP/1.0"`, `"HTTP/1.1"` (the default) or
    /// `"HTTP/2"`. It decides how the proxy frames a body a filter reframes, and whether a
    /// replaced response closes the connection.
    ///
    /// # Panics
    ///
    /// For any other value.
    pub fn protocol(mut self, protocol: &'static str) -> Self {
        assert!(
            ["HTTP/1.0", "HTTP/1.1", "HTTP/2"].contains(&protocol),
            "the protocol must be HTTP/1.0, HTTP/1.1 or HTTP/2, not {protocol:?}"
        );
        self.info.protocol = protocol;
        self
    }

    /// Runs the request through the chain as the proxy does: the request headers
    /// (`on_http_request_headers`, in chain order), then, if they are forwarded, the body
    /// (`on_http_request_body`, chunk by chunk). If a filter answers locally, the response
    /// callbacks run on its reply. A pause waits for the filter to resume the stream, up to
    /// the harness's pause timeout.
    pub async fn send(self) -> Exchange {
        let RequestBuilder {
            harness,
            mut request,
            chunks,
            mut info,
        } = self;
        info.id = harness.next_stream_id();
        info.start_time = SystemTime::now();
        if !request.body.is_empty() || !request.trailers.is_empty() {
            wire::frame(
                &mut request.headers,
                request.body.len(),
                !request.trailers.is_empty(),
            );
        }
        let protocol = info.protocol;
        let mut stream = HttpStream::new(info);
        stream.request_headers = wire::capture_request(&request);
        let chain = ChainStream::new(harness.chain.clone(), stream);
        let mut record = Record {
            harness,
            chain,
            protocol,
            client: request,
            upstream: None,
            upstream_response: None,
            response: None,
            outcome: Outcome::Forwarded,
            failures: Vec::new(),
        };
        record.run_request(chunks).await;
        Exchange(record)
    }
}

fn concat(chunks: &[Bytes]) -> Bytes {
    match chunks {
        [] => Bytes::new(),
        [one] => one.clone(),
        many => many.concat().into(),
    }
}

/// A path a test gives, checked as the proxy would receive it.
fn checked_path(path: &str) -> String {
    let valid = (path.starts_with('/') || path == "*")
        && path.bytes().all(|b| b.is_ascii_graphic() || b >= 0x80);
    assert!(
        valid,
        "invalid request path {path:?}: it must start with '/' (or be '*') and contain no spaces or control characters"
    );
    path.to_owned()
}

/// Everything known about one exchange.
#[derive(Debug)]
struct Record {
    harness: Arc<Inner>,
    chain: ChainStream,
    /// The client's protocol (`StreamInfo::protocol`), readable while the stream is parked.
    protocol: &'static str,
    client: Request,
    upstream: Option<Request>,
    upstream_response: Option<Response>,
    response: Option<Response>,
    outcome: Outcome,
    failures: Vec<FilterFailure>,
}

/// Whether a replacement response goes out directly, or on the proxy's error path (which
/// closes an HTTP/1 connection): the latter once anything went upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    Direct,
    ErrorPath,
}

impl Record {
    fn collect_failures(&mut self) {
        let failures = self.chain.take_failures();
        self.failures.extend(failures);
    }

    fn head(&self) -> bool {
        self.client.method == Method::HEAD
    }

    fn protocol(&self) -> &'static str {
        self.protocol
    }

    fn filter_name(&self, index: usize) -> String {
        self.chain.chain().filters()[index]
            .plugin()
            .info()
            .name
            .clone()
    }

    /// Waits out pauses, as the proxy does: while a filter holds the stream, wait until
    /// something resumes it. A `Paused` verdict comes back only past the pause timeout.
    async fn settle(&mut self, mut verdict: Verdict, mut data: Bytes) -> (Verdict, Bytes) {
        while let Verdict::Paused { .. } = verdict {
            if !self.chain.wait(self.harness.pause_timeout).await {
                break;
            }
            let (next, more) = self.chain.resume();
            verdict = next;
            if !more.is_empty() {
                data = more;
            }
        }
        self.collect_failures();
        (verdict, data)
    }

    /// Sets the client's response to one the proxy makes itself.
    fn replace(&mut self, response: Response, path: Path) {
        self.response = Some(match path {
            Path::Direct => response,
            Path::ErrorPath => wire::closing(response, self.protocol()),
        });
    }

    /// Applies a verdict that stops the stream before the response started: everything but
    /// `Continue` and `LocalReply`, which the callers handle.
    fn stop(&mut self, verdict: Verdict, path: Path) {
        let head = self.head();
        match verdict {
            Verdict::Failed { filter } => {
                let failure = self.failure_of(&filter);
                self.replace(wire::failed_response(head), path);
                self.outcome = Outcome::Failed(failure);
            }
            Verdict::Paused { filter } => {
                self.replace(wire::timed_out_response(head), path);
                self.outcome = Outcome::Paused {
                    filter: self.filter_name(filter),
                };
            }
            Verdict::TooLarge { filter } => {
                self.replace(wire::too_large_response(head), path);
                self.outcome = Outcome::TooLarge { filter };
            }
            Verdict::Close => {
                self.response = None;
                self.outcome = Outcome::Reset;
            }
            Verdict::Continue | Verdict::LocalReply(_) => {}
        }
    }

    /// The failure that made filter `filter` fail the stream.
    fn failure_of(&self, filter: &str) -> FilterFailure {
        self.failures
            .iter()
            .rev()
            .find(|f| f.filter == filter && !f.failed_open)
            .cloned()
            .unwrap_or_else(|| FilterFailure {
                filter: filter.to_owned(),
                fault: None,
                reason: "the filter failed".to_owned(),
                failed_open: false,
            })
    }

    /// A filter replied locally before the response started: the response callbacks run on
    /// the reply (as in Envoy), then the client gets it.
    async fn local_reply(&mut self, reply: LocalReply, path: Path) {
        let verdict = self.chain.on_response_headers(reply.body.is_empty());
        let (verdict, _) = self.settle(verdict, Bytes::new()).await;
        match verdict {
            Verdict::Close | Verdict::Failed { .. } | Verdict::Paused { .. } => {
                self.stop(verdict, path);
            }
            // The proxy sends the reply whatever else the response callbacks asked.
            _ => {
                let map = &self.chain.stream().response_headers;
                let response = wire::local_response(map, reply.body.clone(), self.head());
                self.replace(response, path);
                self.outcome = Outcome::LocalReply(reply);
            }
        }
    }

    /// The request phase: headers, then the body, as the proxy's request filters run them.
    async fn run_request(&mut self, chunks: Vec<Bytes>) {
        let ended = self.client.body.is_empty();
        let verdict = self.chain.on_request_headers(ended);
        let (verdict, _) = self.settle(verdict, Bytes::new()).await;
        match verdict {
            Verdict::Continue => {}
            Verdict::LocalReply(reply) => return self.local_reply(reply, Path::Direct).await,
            other => return self.stop(other, Path::Direct),
        }
        let map = &self.chain.stream().request_headers;
        let mut upstream = wire::upstream_request(&self.client, map);
        if !ended && wire::removed_length(map) {
            // The upstream connection is HTTP/1.1: chunked framing.
            wire::reframe(&mut upstream.headers, true);
        }
        let announced = wire::announced_length(&upstream.headers);
        self.upstream = Some(upstream);
        if ended {
            return;
        }

        let mut sent = Vec::new();
        let last = chunks.len().saturating_sub(1);
        for (i, chunk) in chunks.into_iter().enumerate() {
            let (verdict, data) = self.chain.on_request_body(chunk, i == last);
            let (verdict, data) = self.settle(verdict, data).await;
            match verdict {
                Verdict::Continue => {
                    sent.extend_from_slice(&data);
                    if let Some(upstream) = &mut self.upstream {
                        upstream.body = Bytes::from(sent.clone());
                    }
                    if let Err(reason) = check_length(announced, sent.len(), i == last) {
                        self.replace(wire::internal_error_response(self.head()), Path::ErrorPath);
                        self.outcome = Outcome::ProxyError { reason };
                        return;
                    }
                }
                Verdict::LocalReply(reply) => {
                    return self.local_reply(reply, Path::ErrorPath).await;
                }
                other => return self.stop(other, Path::ErrorPath),
            }
        }
    }

    /// The response phase: headers, body and trailers, as the proxy's response filters run
    /// them.
    async fn run_response(&mut self, upstream: Response, chunks: Vec<Bytes>) {
        let head = self.head();
        let status = upstream.status;
        let ended = head
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
            || wire::announced_length(&upstream.headers) == Some(0);
        self.chain.stream_mut().response_headers = wire::capture_response(&upstream);
        let verdict = self.chain.on_response_headers(ended);
        let (verdict, _) = self.settle(verdict, Bytes::new()).await;
        let trailers = upstream.trailers.clone();
        self.upstream_response = Some(upstream);
        match verdict {
            Verdict::Continue => {}
            Verdict::LocalReply(reply) => {
                let map = &self.chain.stream().response_headers;
                let response = wire::local_response(map, reply.body.clone(), head);
                self.replace(response, Path::ErrorPath);
                self.outcome = Outcome::LocalReply(reply);
                return;
            }
            Verdict::TooLarge { filter } => {
                self.replace(wire::internal_error_response(head), Path::ErrorPath);
                self.outcome = Outcome::TooLarge { filter };
                return;
            }
            other => return self.stop(other, Path::ErrorPath),
        }
        let map = &self.chain.stream().response_headers;
        let reframe = !ended && wire::removed_length(map);
        let mut response = match &self.upstream_response {
            Some(upstream) => wire::proxied_response(upstream, map),
            None => return,
        };
        if reframe {
            let chunked = self.protocol == "HTTP/1.1";
            wire::reframe(&mut response.headers, chunked);
        }
        let announced = wire::announced_length(&response.headers);
        self.outcome = Outcome::Proxied;
        self.response = Some(response);
        if ended {
            return;
        }

        let mut sent = Vec::new();
        let last = chunks.len().saturating_sub(1);
        let ends_with_body = trailers.is_empty();
        // An empty body still ends the stream with a last (empty) body callback.
        let chunks = if chunks.is_empty() {
            vec![Bytes::new()]
        } else {
            chunks
        };
        for (i, chunk) in chunks.into_iter().enumerate() {
            let end = i == last && ends_with_body;
            // No pause can be waited on once the response has started; the chain says so.
            let (verdict, data) = self.chain.on_response_body(chunk, end);
            self.collect_failures();
            match verdict {
                Verdict::Continue => {
                    sent.extend_from_slice(&data);
                    if let Some(response) = &mut self.response {
                        response.body = Bytes::from(sent.clone());
                    }
                    if let Err(reason) = check_length(announced, sent.len(), i == last) {
                        self.outcome = Outcome::Aborted { reason };
                        return;
                    }
                }
                Verdict::Close => {
                    self.outcome = Outcome::Reset;
                    return;
                }
                other => {
                    self.outcome = Outcome::Aborted {
                        reason: self.abort_reason(&other),
                    };
                    return;
                }
            }
        }
        if trailers.is_empty() {
            return;
        }

        self.chain.stream_mut().response_trailers = wire::capture_trailers(&trailers);
        let verdict = self.chain.on_response_trailers();
        let (verdict, _) = self.settle(verdict, Bytes::new()).await;
        match verdict {
            Verdict::Continue => {
                let edited = wire::edited_trailers(&self.chain.stream().response_trailers);
                if let Some(response) = &mut self.response {
                    response.trailers = edited;
                }
            }
            Verdict::Close => self.outcome = Outcome::Reset,
            other => {
                self.outcome = Outcome::Aborted {
                    reason: self.abort_reason(&other),
                }
            }
        }
    }

    /// Why the proxy aborted a response that had started.
    fn abort_reason(&self, verdict: &Verdict) -> String {
        match verdict {
            Verdict::Failed { filter } => {
                format!("filter {filter} failed: {}", self.failure_of(filter).reason)
            }
            Verdict::TooLarge { filter } => {
                format!("the response body is over filter {filter}'s buffer limit")
            }
            Verdict::Paused { filter } => format!(
                "filter {} paused where the stream cannot wait",
                self.filter_name(*filter)
            ),
            other => format!("{other:?}"),
        }
    }

    fn finish(&mut self) {
        self.chain.finish();
        self.collect_failures();
    }
}

/// The proxy's check that a body keeps the length its headers announce.
fn check_length(announced: Option<u64>, sent: usize, last: bool) -> Result<(), String> {
    let Some(len) = announced else {
        return Ok(());
    };
    let sent = sent as u64;
    if sent > len || (last && sent != len) {
        return Err(format!(
            "a filter changed the body length ({sent} bytes instead of the {len} announced); \
             a filter that changes a body must remove content-length in its headers callback"
        ));
    }
    Ok(())
}

/// Accessors shared by [`Exchange`] and [`Completed`].
macro_rules! accessors {
    ($ty:ident) => {
        impl $ty {
            /// What the chain decided.
            pub fn outcome(&self) -> &Outcome {
                &self.0.outcome
            }

            /// The request as the client sent it (with the framing the harness added).
            pub fn client_request(&self) -> &Request {
                &self.0.client
            }

            /// The request the upstream receives, after the filters' edits: its headers, and
            /// the body the request body callbacks let through.
            ///
            /// # Panics
            ///
            /// If the request was not forwarded (the panic message says what happened
            /// instead); see [`Self::try_upstream_request`].
            pub fn upstream_request(&self) -> &Request {
                match &self.0.upstream {
                    Some(request) => request,
                    None => panic!(
                        "the request was not forwarded upstream: {}{}",
                        self.0.outcome,
                        self.0.response_note()
                    ),
                }
            }

            /// The request the upstream receives, if the request was forwarded.
            pub fn try_upstream_request(&self) -> Option<&Request> {
                self.0.upstream.as_ref()
            }

            /// The upstream response the test gave, before the filters (with the framing the
            /// harness added).
            pub fn upstream_response(&self) -> Option<&Response> {
                self.0.upstream_response.as_ref()
            }

            /// The response the client gets: the upstream's after the response callbacks, a
            /// local reply, or the proxy's own (503, 504, 413, 500).
            ///
            /// # Panics
            ///
            /// If there is none (yet): the request was forwarded and [`Exchange::respond`]
            /// not called, or a filter reset the stream before the response started. See
            /// [`Self::try_response`].
            pub fn response(&self) -> &Response {
                match &self.0.response {
                    Some(response) => response,
                    None if matches!(self.0.outcome, Outcome::Forwarded) => panic!(
                        "no response yet: the request was forwarded; give the upstream's response with respond()"
                    ),
                    None => panic!("the client gets no response: {}", self.0.outcome),
                }
            }

            /// The response the client gets (or got before an abort or reset), if any.
            pub fn try_response(&self) -> Option<&Response> {
                self.0.response.as_ref()
            }

            /// Every filter failure seen so far, fail-open ones included (a fault in an
            /// end-of-stream callback too).
            pub fn failures(&self) -> &[FilterFailure] {
                &self.0.failures
            }

            /// The failure that failed the stream, when the outcome is
            /// [`Outcome::Failed`].
            pub fn failure(&self) -> Option<&FilterFailure> {
                match &self.0.outcome {
                    Outcome::Failed(failure) => Some(failure),
                    _ => None,
                }
            }

            /// The host's view of the stream: the header maps exactly as the filters left
            /// them (before the proxy's rules), and the stream's facts. `None` while a filter
            /// holds the stream paused.
            pub fn stream(&self) -> Option<&HttpStream> {
                (!self.0.chain.is_paused()).then(|| self.0.chain.stream())
            }
        }
    };
}

impl Record {
    /// A short description of the client's response, for panic messages.
    fn response_note(&self) -> String {
        match &self.response {
            Some(response) => format!(" (the client gets {})", response.status),
            None => String::new(),
        }
    }
}

/// A request that went through the request callbacks. Give the upstream's response with
/// [`Exchange::respond`], or end the stream with [`Exchange::finish`].
///
/// Dropping an exchange without finishing it ends the stream the way a cancelled request
/// does.
#[derive(Debug)]
#[must_use = "respond() or finish() the exchange to run the rest of the stream"]
pub struct Exchange(Record);

accessors!(Exchange);

impl Exchange {
    /// Starts the upstream's response with this status. Add headers and a body, then
    /// `.finish().await` (response callbacks and end of stream) or `.send().await` (response
    /// callbacks only).
    ///
    /// # Panics
    ///
    /// If the request was not forwarded (the panic message says what happened instead), the
    /// upstream already responded, or `status` is not a valid status code.
    pub fn respond(self, status: u16) -> UpstreamResponse {
        self.respond_with(Response::new(status))
    }

    /// Starts the upstream's response from a complete response (an `http::Response<Bytes>`
    /// from a `tower` service standing in for the upstream, say).
    ///
    /// # Panics
    ///
    /// As [`Exchange::respond`].
    pub fn respond_with(self, response: impl Into<Response>) -> UpstreamResponse {
        if !matches!(self.0.outcome, Outcome::Forwarded) || self.0.upstream_response.is_some() {
            panic!(
                "respond(): the upstream cannot respond: {}{}; call finish() instead",
                self.0.outcome,
                self.0.response_note()
            );
        }
        let response: Response = response.into();
        let chunks = if response.body.is_empty() {
            Vec::new()
        } else {
            vec![response.body.clone()]
        };
        UpstreamResponse {
            exchange: self,
            response,
            chunks,
        }
    }

    /// Ends the stream: every filter's `on_log`, `on_done` and `on_delete`, once, in chain
    /// order, whatever happened to the stream (as at the end of every proxied request).
    pub async fn finish(mut self) -> Completed {
        self.0.finish();
        Completed(self.0)
    }
}

/// The upstream's response, being built; [`UpstreamResponse::finish`] runs it through the
/// chain and ends the stream.
#[derive(Debug)]
#[must_use = "call .finish().await or .send().await to run the response through the chain"]
pub struct UpstreamResponse {
    exchange: Exchange,
    response: Response,
    chunks: Vec<Bytes>,
}

impl UpstreamResponse {
    /// Appends a header.
    ///
    /// # Panics
    ///
    /// If the name or value is invalid.
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        let (name, value) = parse_header(name, value.as_ref());
        self.response.headers.append(name, value);
        self
    }

    /// Sets the body, delivered in one chunk. Unless the test sets `content-length` or
    /// `transfer-encoding`, the response gets a `content-length`, as an origin would send.
    pub fn body(self, body: impl Into<Bytes>) -> Self {
        self.body_chunks([body])
    }

    /// Sets the body, delivered to the body callbacks in these chunks (one
    /// `on_http_response_body` per chunk until a filter buffers).
    pub fn body_chunks<B: Into<Bytes>>(mut self, chunks: impl IntoIterator<Item = B>) -> Self {
        self.chunks = chunks
            .into_iter()
            .map(Into::into)
            .filter(|c: &Bytes| !c.is_empty())
            .collect();
        self.response.body = concat(&self.chunks);
        self
    }

    /// Appends a trailer (`on_http_response_trailers` runs on them after the body). The
    /// response gets `transfer-encoding: chunked` unless the test frames it.
    ///
    /// # Panics
    ///
    /// If the name or value is invalid.
    pub fn trailer(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        let (name, value) = parse_header(name, value.as_ref());
        self.response.trailers.append(name, value);
        self
    }

    /// Runs the response through the chain without ending the stream: the response headers
    /// (`on_http_response_headers`, in reverse chain order), then, if they are forwarded, the
    /// body (`on_http_response_body`, chunk by chunk) and the trailers
    /// (`on_http_response_trailers`).
    pub async fn send(self) -> Exchange {
        let UpstreamResponse {
            mut exchange,
            mut response,
            chunks,
        } = self;
        let bodiless = exchange.0.head()
            || response.status.is_informational()
            || response.status == StatusCode::NO_CONTENT
            || response.status == StatusCode::NOT_MODIFIED;
        if !bodiless {
            wire::frame(
                &mut response.headers,
                response.body.len(),
                !response.trailers.is_empty(),
            );
        }
        exchange.0.run_response(response, chunks).await;
        exchange
    }

    /// Runs the response through the chain, then ends the stream ([`Exchange::finish`]).
    pub async fn finish(self) -> Completed {
        self.send().await.finish().await
    }
}

/// An exchange whose stream has ended: every filter's `on_log`, `on_done` and `on_delete`
/// have run.
#[derive(Debug)]
pub struct Completed(Record);

accessors!(Completed);
