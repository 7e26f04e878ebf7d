//! The state of one HTTP stream that filters read and change: the small interface between the
//! host and the embedding proxy. The proxy fills it from its own request, lends it to each VM
//! for a callback, and applies what the filters changed and asked for.

use std::net::SocketAddr;
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};

use crate::header_map::HeaderMap;
use crate::types::MapType;

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
    pub(crate) actions: Actions,
    /// Set when a filter's local reply replaced the upstream response.
    pub(crate) replied_locally: bool,
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
