//! The state of one HTTP stream that filters read and change: the small interface between the
//! host and the embedding proxy. The proxy fills it from its own request, lends it to each VM
//! for a callback, and applies what the filters changed and asked for.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use tokio::sync::Notify;

use crate::body::Body;
use crate::header_map::HeaderMap;
use crate::types::{HostResult, MapType, Status};

/// Whether guests can see or change a header map at this point of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MapState {
    /// Not received yet (or never will be): reads find nothing, writes are BadArgument.
    #[default]
    Absent,
    /// Already sent on: readable, writes are BadArgument (Envoy's behaviour).
    ReadOnly,
    /// Can still be changed.
    Writable,
}

/// Facts about the stream that filters read as properties.
#[derive(Debug, Clone)]
pub struct StreamInfo {
    /// Unique per process; `connection.id`-like.
    pub id: u64,
    /// The client's address (`source.address`, `source.port`).
    pub source: Option<SocketAddr>,
    /// The address the client connected to (`destination.*`).
    pub destination: Option<SocketAddr>,
    /// `request.protocol`: "HTTP/1.0", "HTTP/1.1" or "HTTP/2".
    pub protocol: &'static str,
    /// When the request started (`request.time`).
    pub start_time: SystemTime,
    /// Whether the client connection uses TLS (`connection.mtls` is false either way).
    pub tls: bool,
    /// The request header that carries the request id (`request.id`); `None` is
    /// `x-request-id`, Envoy's.
    pub request_id_header: Option<HeaderName>,
}

impl Default for StreamInfo {
    fn default() -> Self {
        StreamInfo {
            id: 0,
            source: None,
            destination: None,
            protocol: "HTTP/1.1",
            start_time: SystemTime::UNIX_EPOCH,
            tls: false,
            request_id_header: None,
        }
    }
}

/// A synthetic response a filter asked for with `proxy_send_local_response`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u16,
    /// Why, for logs (Envoy's response code details).
    pub details: String,
    pub body: Bytes,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// `grpc-status` to send, if the filter gave one in 0..=16.
    pub grpc_status: Option<u32>,
}

/// What filters asked for during their callbacks; Envoy defers all of these until the callback
/// returns, and so do we: the embedder reads them afterwards.
#[derive(Debug, Clone, Default)]
pub struct Actions {
    pub(crate) local_reply: Option<LocalReply>,
    pub(crate) continue_request: bool,
    pub(crate) continue_response: bool,
    pub(crate) close: bool,
}

/// One HTTP stream's headers, trailers and facts, as filters see them.
#[derive(Debug, Clone, Default)]
pub struct HttpStream {
    pub request_headers: HeaderMap,
    pub request_trailers: HeaderMap,
    pub response_headers: HeaderMap,
    pub response_trailers: HeaderMap,
    pub info: StreamInfo,
    states: [MapState; 4],
    /// The request body data the current body callback is shown, or that a pausing filter
    /// holds (`proxy_{get,set}_buffer_bytes(HttpRequestBody)`).
    pub(crate) request_body: Option<Body>,
    pub(crate) response_body: Option<Body>,
    pub(crate) actions: Actions,
    /// Set when a filter's local reply replaced the upstream response.
    pub(crate) replied_locally: bool,
    /// Set while the stream is paused and parked in a VM: wakes the task waiting to resume it
    /// when a filter asks for something (continue, local reply, close).
    pub(crate) waker: Option<Arc<Notify>>,
    /// What filters stored with `proxy_set_property`, readable by later filters.
    pub(crate) filter_state: FilterState,
    /// Facts the embedder learns as the stream goes (upstream, sizes, duration).
    pub(crate) facts: StreamFacts,
}

impl HttpStream {
    pub fn new(info: StreamInfo) -> Self {
        HttpStream {
            info,
            ..Default::default()
        }
    }

    fn index(map: MapType) -> Option<usize> {
        Some(match map {
            MapType::RequestHeaders => 0,
            MapType::RequestTrailers => 1,
            MapType::ResponseHeaders => 2,
            MapType::ResponseTrailers => 3,
            _ => return None,
        })
    }

    /// Whether guests can read or change `map` now.
    pub fn map_state(&self, map: MapType) -> MapState {
        Self::index(map).map_or(MapState::Absent, |i| self.states[i])
    }

    /// Sets what guests may do with `map` from now on.
    pub fn set_map_state(&mut self, map: MapType, state: MapState) {
        if let Some(i) = Self::index(map) {
            self.states[i] = state;
        }
    }

    pub(crate) fn map(&self, map: MapType) -> Option<&HeaderMap> {
        Some(match map {
            MapType::RequestHeaders => &self.request_headers,
            MapType::RequestTrailers => &self.request_trailers,
            MapType::ResponseHeaders => &self.response_headers,
            MapType::ResponseTrailers => &self.response_trailers,
            _ => return None,
        })
    }

    pub(crate) fn map_mut(&mut self, map: MapType) -> Option<&mut HeaderMap> {
        Some(match map {
            MapType::RequestHeaders => &mut self.request_headers,
            MapType::RequestTrailers => &mut self.request_trailers,
            MapType::ResponseHeaders => &mut self.response_headers,
            MapType::ResponseTrailers => &mut self.response_trailers,
            _ => return None,
        })
    }

    /// Wakes the task waiting on this stream, if it is paused.
    pub(crate) fn wake(&self) {
        if let Some(waker) = &self.waker {
            waker.notify_one();
        }
    }

    /// The request body a body callback is shown (or a filter holds).
    pub fn request_body(&self) -> Option<&Body> {
        self.request_body.as_ref()
    }

    /// The response body a body callback is shown (or a filter holds).
    pub fn response_body(&self) -> Option<&Body> {
        self.response_body.as_ref()
    }

    pub(crate) fn body_mut(&mut self, request: bool) -> &mut Option<Body> {
        if request {
            &mut self.request_body
        } else {
            &mut self.response_body
        }
    }

    /// Takes the local reply a filter asked for, if any.
    pub fn take_local_reply(&mut self) -> Option<LocalReply> {
        self.actions.local_reply.take()
    }

    /// Whether a local reply is pending.
    pub fn has_local_reply(&self) -> bool {
        self.actions.local_reply.is_some()
    }

    /// Takes a `proxy_continue_stream(HttpRequest)` request.
    pub fn take_continue_request(&mut self) -> bool {
        std::mem::take(&mut self.actions.continue_request)
    }

    /// Takes a `proxy_continue_stream(HttpResponse)` request.
    pub fn take_continue_response(&mut self) -> bool {
        std::mem::take(&mut self.actions.continue_response)
    }

    /// Whether a filter asked to reset the stream (`proxy_close_stream`).
    pub fn close_requested(&self) -> bool {
        self.actions.close
    }

    /// Marks that the response is a local reply, so that a second one is refused.
    pub fn set_replied_locally(&mut self) {
        self.replied_locally = true;
    }

    /// Whether the response is a filter's local reply.
    pub fn replied_locally(&self) -> bool {
        self.replied_locally
    }

    /// The `:status` of the response headers, once there are some.
    pub fn response_status(&self) -> Option<u16> {
        self.response_headers
            .pseudo(crate::header_map::Pseudo::Status)
            .and_then(|v| v.to_str().ok()?.parse().ok())
    }
}

/// Most bytes (names plus values) of filter state one stream holds (`proxy_set_property`).
pub const MAX_FILTER_STATE_BYTES: usize = 64 << 10;
/// Most filter state entries one stream holds.
pub const MAX_FILTER_STATE_ENTRIES: usize = 256;

/// Filter state written with `proxy_set_property`: what Envoy keeps as `wasm.<path>` in the
/// stream's filter state, shared by the filters of the chain. Few entries, so a list.
#[derive(Debug, Clone, Default)]
pub(crate) struct FilterState {
    entries: Vec<(Box<[u8]>, Bytes)>,
    bytes: usize,
}

impl FilterState {
    pub(crate) fn get(&self, name: &[u8]) -> Option<&Bytes> {
        self.entries
            .iter()
            .find(|(k, _)| &**k == name)
            .map(|(_, v)| v)
    }

    /// Sets (or replaces) entry `name`. InternalFailure when the stream's caps would be
    /// passed; nothing is changed then.
    pub(crate) fn set(&mut self, name: &[u8], value: &[u8]) -> HostResult {
        let existing = self.entries.iter().position(|(k, _)| &**k == name);
        let freed = existing.map_or(0, |i| self.entries[i].0.len() + self.entries[i].1.len());
        let bytes = (self.bytes - freed)
            .checked_add(name.len() + value.len())
            .filter(|&b| b <= MAX_FILTER_STATE_BYTES)
            .ok_or(Status::InternalFailure)?;
        let value = Bytes::copy_from_slice(value);
        match existing {
            Some(i) => self.entries[i].1 = value,
            None if self.entries.len() >= MAX_FILTER_STATE_ENTRIES => {
                return Err(Status::InternalFailure);
            }
            None => self.entries.push((name.into(), value)),
        }
        self.bytes = bytes;
        Ok(())
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&[u8], &Bytes)> {
        self.entries.iter().map(|(k, v)| (&**k, v))
    }
}

/// Facts about the stream that only the embedder knows, and learns as the stream goes. Each
/// is a property once set (and NotFound before): nothing is guessed.
#[derive(Debug, Clone, Default)]
pub(crate) struct StreamFacts {
    pub(crate) upstream_address: Option<SocketAddr>,
    pub(crate) cluster_name: Option<String>,
    pub(crate) request_body_bytes: Option<u64>,
    pub(crate) response_body_bytes: Option<u64>,
    pub(crate) duration: Option<Duration>,
    pub(crate) response_code_details: Option<String>,
}

/// What the embedder tells filters as the stream goes, and what filters left for it.
impl HttpStream {
    /// The upstream endpoint the request was sent to: `upstream.address`, `upstream.port`.
    pub fn set_upstream_address(&mut self, address: SocketAddr) {
        self.facts.upstream_address = Some(address);
    }

    /// The upstream's configured name: `xds.cluster_name` (Envoy's cluster).
    pub fn set_cluster_name(&mut self, name: impl Into<String>) {
        self.facts.cluster_name = Some(name.into());
    }

    /// Request body bytes received from the client, once the body is complete:
    /// `request.size` (when there is no `content-length`) and `request.total_size`.
    pub fn set_request_body_bytes(&mut self, bytes: u64) {
        self.facts.request_body_bytes = Some(bytes);
    }

    /// Response body bytes sent to the client, once the body is complete: `response.size`
    /// and `response.total_size`.
    pub fn set_response_body_bytes(&mut self, bytes: u64) {
        self.facts.response_body_bytes = Some(bytes);
    }

    /// The stream's total duration, once it is complete (before `proxy_on_log`):
    /// `request.duration`.
    pub fn set_duration(&mut self, duration: Duration) {
        self.facts.duration = Some(duration);
    }

    /// Why the response has its status (`response.code_details`), e.g. a local reply's details
    /// or the proxy's own reason for a 502. Without it, a response from upstream reads
    /// `via_upstream` and a pending local reply its details.
    pub fn set_response_code_details(&mut self, details: impl Into<String>) {
        self.facts.response_code_details = Some(details.into());
    }

    /// A value a filter stored with `proxy_set_property(name, value)`.
    pub fn filter_state(&self, name: &[u8]) -> Option<&[u8]> {
        self.filter_state.get(name).map(|v| &v[..])
    }
}
