//! Outbound calls a filter makes (`proxy_http_call`, `proxy_grpc_call`, `proxy_grpc_stream`):
//! what the host hands the embedder, and what comes back. The embedder knows the upstreams; a
//! filter can only name them.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;

use crate::header_map::HeaderMap;

/// A request a filter wants sent. The headers include `:method`, `:path` and `:authority`
/// (checked by the host) and maybe `:scheme`.
#[derive(Debug, Clone)]
pub struct CalloutRequest {
    /// The upstream's name in the configuration.
    pub upstream: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: HeaderMap,
    /// `None`: no timeout of the filter's own (the embedder's limits still apply).
    pub timeout: Option<Duration>,
}

/// The answer to a callout: headers with `:status`, body, trailers.
#[derive(Debug, Clone, Default)]
pub struct CalloutResponse {
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: HeaderMap,
}

/// Why a callout got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CalloutError {
    /// The filter's timeout passed.
    Timeout,
    /// The upstream could not be reached, reset the stream, or answered garbage.
    Failed(String),
}

impl CalloutError {
    /// The message `proxy_get_status` gives the filter (Envoy's wording).
    pub fn message(&self) -> &str {
        match self {
            CalloutError::Timeout => "timeout",
            CalloutError::Failed(_) => "reset",
        }
    }
}

/// A boxed future, as the embedder's callout implementation returns.
pub type CalloutFuture =
    Pin<Box<dyn Future<Output = Result<CalloutResponse, CalloutError>> + Send>>;

/// How the embedder performs callouts. Implemented by the proxy over its upstreams.
pub trait CalloutHandler: Send + Sync + 'static {
    /// Whether `name` is an upstream a filter may call.
    fn has_upstream(&self, name: &str) -> bool;

    /// Sends the request and returns the response.
    fn call(&self, request: CalloutRequest) -> CalloutFuture;

    /// Runs a gRPC call or stream: writes what `outbound` yields (for a unary call, one message
    /// then a half-close), and reports what the upstream sends through `events`, ending with
    /// exactly one [`GrpcEvent::Close`]. The host drops the future to cancel (reset) the call.
    /// The default has no gRPC: every call closes at once with UNAVAILABLE.
    fn grpc(
        &self,
        request: GrpcRequest,
        outbound: GrpcOutbound,
        events: tokio::sync::mpsc::Sender<GrpcEvent>,
    ) -> GrpcFuture {
        let _ = (request, outbound);
        Box::pin(async move {
            let _ = events
                .send(GrpcEvent::close(
                    grpc_status::UNAVAILABLE,
                    "gRPC callouts are not supported here",
                ))
                .await;
        })
    }
}

// ---- gRPC -----------------------------------------------------------------------------------

/// gRPC status codes the host and embedders produce themselves (the upstream's own codes pass
/// through unchanged).
pub mod grpc_status {
    pub const OK: u32 = 0;
    pub const CANCELLED: u32 = 1;
    pub const UNKNOWN: u32 = 2;
    pub const DEADLINE_EXCEEDED: u32 = 4;
    pub const PERMISSION_DENIED: u32 = 7;
    pub const RESOURCE_EXHAUSTED: u32 = 8;
    pub const UNIMPLEMENTED: u32 = 12;
    pub const INTERNAL: u32 = 13;
    pub const UNAVAILABLE: u32 = 14;
    pub const UNAUTHENTICATED: u32 = 16;
}

/// A gRPC call (`proxy_grpc_call`) or stream (`proxy_grpc_stream`) a filter opens.
#[derive(Debug, Clone)]
pub struct GrpcRequest {
    /// A unary call (one message each way) rather than a stream.
    pub unary: bool,
    /// The upstream's name in the configuration.
    pub upstream: String,
    /// The fully qualified service, e.g. `pkg.Echo`; the request path is `/service/method`.
    pub service: String,
    pub method: String,
    /// The filter's initial metadata: regular headers only (no pseudo-headers).
    pub metadata: HeaderMap,
    /// The call's deadline, for `grpc-timeout`; the host enforces it too. `None`: the filter
    /// gave none (a stream never has one).
    pub timeout: Option<Duration>,
}

/// What the filter sends on a call or stream, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrpcSend {
    /// One message, unframed (the embedder adds the 5-byte gRPC prefix).
    Message(Bytes),
    /// The filter will send nothing more (END_STREAM).
    HalfClose,
}

/// What the upstream sent, in order. `Close` is always the last event the embedder sends.
#[derive(Debug, Clone)]
pub enum GrpcEvent {
    /// The response headers.
    InitialMetadata(HeaderMap),
    /// One message, without its 5-byte prefix.
    Message(Bytes),
    /// The trailers (or the headers of a trailers-only response).
    TrailingMetadata(HeaderMap),
    /// The end of the call: a gRPC status code and its message.
    Close { status: u32, message: String },
}

impl GrpcEvent {
    pub fn close(status: u32, message: impl Into<String>) -> GrpcEvent {
        GrpcEvent::Close {
            status,
            message: message.into(),
        }
    }
}

/// Messages and half-close from the filter, for the embedder to write. The host bounds the
/// bytes queued here; `None` from [`GrpcOutbound::recv`] means nothing more will come (treat it
/// as a half-close).
#[derive(Debug)]
pub struct GrpcOutbound {
    rx: tokio::sync::mpsc::UnboundedReceiver<GrpcSend>,
    queued: Arc<AtomicUsize>,
}

impl GrpcOutbound {
    /// A pair for tests and embedders that drive a handler themselves: the sender side and the
    /// outbound stream.
    pub fn channel() -> (GrpcOutboundSender, GrpcOutbound) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        (
            GrpcOutboundSender {
                tx,
                queued: queued.clone(),
            },
            GrpcOutbound { rx, queued },
        )
    }

    /// The next thing to send, waiting for the filter.
    pub async fn recv(&mut self) -> Option<GrpcSend> {
        let item = self.rx.recv().await?;
        if let GrpcSend::Message(m) = &item {
            self.queued.fetch_sub(m.len(), Ordering::Relaxed);
        }
        Some(item)
    }
}

/// The filter's side of [`GrpcOutbound`].
#[derive(Debug, Clone)]
pub struct GrpcOutboundSender {
    tx: tokio::sync::mpsc::UnboundedSender<GrpcSend>,
    queued: Arc<AtomicUsize>,
}

impl GrpcOutboundSender {
    /// Queues `item` unless it is a message that would put more than `max_queued` bytes in the
    /// queue, or the embedder is gone; `false` when refused.
    pub fn send(&self, item: GrpcSend, max_queued: usize) -> bool {
        let len = match &item {
            GrpcSend::Message(m) => m.len(),
            GrpcSend::HalfClose => 0,
        };
        let before = self.queued.fetch_add(len, Ordering::Relaxed);
        let over = len > 0 && before.saturating_add(len) > max_queued;
        if over || self.tx.send(item).is_err() {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Message bytes queued and not yet taken by the embedder.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }
}

/// The embedder's gRPC work for one call or stream; it ends when the call is over.
pub type GrpcFuture = Pin<Box<dyn Future<Output = ()> + Send>>;
