//! Filters' outbound HTTP calls (`proxy_http_call`), sent to the configured upstreams with
//! Pingora's connector (pooled connections), and gRPC calls and streams (`proxy_grpc_call`,
//! `proxy_grpc_stream`) over HTTP/2 (see [`grpc`]). A filter can only name an upstream of its
//! own generation's configuration; nothing else is reachable.

mod grpc;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::HeaderValue;
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use wasmgate_abi::{
    CalloutError, CalloutFuture, CalloutHandler, CalloutRequest, CalloutResponse, FieldName,
    GrpcEvent, GrpcFuture, GrpcOutbound, GrpcRequest, HeaderMap, Pseudo,
};

use crate::generation::Upstream;

/// Largest callout response body kept; a larger one fails the call.
const MAX_RESPONSE_BODY: usize = 8 << 20;
/// Bound for a call with no timeout of its own (connecting is bounded by the upstream's
/// `connect_timeout_ms`).
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an idle callout connection stays pooled.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Performs the callouts of one generation's filters.
pub struct Callouts {
    upstreams: HashMap<String, Arc<Upstream>>,
    connector: Arc<Connector>,
    /// One HTTP/2 connection per endpoint for gRPC, shared by every call to it.
    grpc: Arc<grpc::Connections>,
}

impl std::fmt::Debug for Callouts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Callouts")
            .field("upstreams", &self.upstreams.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Callouts {
    pub fn new(upstreams: HashMap<String, Arc<Upstream>>) -> Callouts {
        Callouts {
            upstreams,
            connector: Arc::new(Connector::new(None)),
            grpc: Arc::default(),
        }
    }
}

fn failed(what: &str, e: impl std::fmt::Display) -> CalloutError {
    CalloutError::Failed(format!("{what}: {e}"))
}

/// The request line and headers of a callout, with framing set by the proxy.
fn request_header(req: &CalloutRequest) -> Result<RequestHeader, CalloutError> {
    let get = |p| req.headers.pseudo(p).map(|v: &HeaderValue| v.as_bytes());
    let (Some(method), Some(path), Some(authority)) = (
        get(Pseudo::Method),
        get(Pseudo::Path),
        get(Pseudo::Authority),
    ) else {
        return Err(CalloutError::Failed("missing pseudo-headers".into()));
    };
    let method = std::str::from_utf8(method).map_err(|e| failed("method", e))?;
    let mut header = RequestHeader::build(method, path, Some(req.headers.len() + 2))
        .map_err(|e| failed("request line", e))?;
    header
        .insert_header(http::header::HOST, authority)
        .map_err(|e| failed("authority", e))?;
    for (name, value) in req.headers.iter() {
        if let FieldName::Header(name) = name {
            // Framing is the proxy's, whatever the filter set.
            if name == http::header::CONTENT_LENGTH
                || name == http::header::TRANSFER_ENCODING
                || name == http::header::CONNECTION
            {
                continue;
            }
            let _ = header.append_header(name.clone(), value.clone());
        }
    }
    if !req.body.is_empty() || method != "GET" && method != "HEAD" {
        let _ = header.insert_header(http::header::CONTENT_LENGTH, req.body.len());
    }
    Ok(header)
}

impl CalloutHandler for Callouts {
    fn has_upstream(&self, name: &str) -> bool {
        self.upstreams.contains_key(name)
    }

    fn grpc(
        &self,
        request: GrpcRequest,
        outbound: GrpcOutbound,
        events: tokio::sync::mpsc::Sender<GrpcEvent>,
    ) -> GrpcFuture {
        let upstream = self.upstreams.get(&request.upstream).cloned();
        let connections = self.grpc.clone();
        Box::pin(grpc::run(upstream, connections, request, outbound, events))
    }

    fn call(&self, request: CalloutRequest) -> CalloutFuture {
        let upstream = self.upstreams.get(&request.upstream).cloned();
        let connector = self.connector.clone();
        Box::pin(async move {
            let upstream =
                upstream.ok_or_else(|| CalloutError::Failed("unknown upstream".into()))?;
            let pick = upstream
                .pick_for_callout()
                .ok_or_else(|| CalloutError::Failed("the upstream has no endpoint".into()))?;
            let mut peer = upstream.peer(&pick);
            let io = request.timeout.unwrap_or(IO_TIMEOUT);
            peer.options.connection_timeout = Some(upstream.config.timeouts.connect.min(io));
            peer.options.read_timeout = Some(io);
            peer.options.write_timeout = Some(io);
            let header = request_header(&request)?;
            let (mut session, _reused) = connector
                .get_http_session(&peer)
                .await
                .map_err(|e| failed("connect", e))?;
            session
                .write_request_header(Box::new(header))
                .await
                .map_err(|e| failed("send", e))?;
            if !request.body.is_empty() {
                session
                    .write_request_body(request.body.clone(), true)
                    .await
                    .map_err(|e| failed("send body", e))?;
            }
            session
                .finish_request_body()
                .await
                .map_err(|e| failed("send", e))?;
            session
                .read_response_header()
                .await
                .map_err(|e| failed("read", e))?;
            let mut body = BytesMut::new();
            while let Some(chunk) = session
                .read_response_body()
                .await
                .map_err(|e| failed("read body", e))?
            {
                if body.len() + chunk.len() > MAX_RESPONSE_BODY {
                    return Err(CalloutError::Failed("response body too large".into()));
                }
                body.extend_from_slice(&chunk);
            }
            let Some(resp) = session.response_header() else {
                return Err(CalloutError::Failed("no response".into()));
            };
            let mut headers = HeaderMap::with_capacity(resp.headers.len() + 1);
            headers.push_pseudo(Pseudo::Status, HeaderValue::from(resp.status.as_u16()));
            for (name, value) in &resp.headers {
                headers.push(name.clone(), value.clone());
            }
            connector
                .release_http_session(session, &peer, Some(IDLE_TIMEOUT))
                .await;
            Ok(CalloutResponse {
                headers,
                body: Bytes::from(body),
                trailers: HeaderMap::default(),
            })
        })
    }
}
