//! Routing on the request path: which route a request takes and which upstream it goes to,
//! what the upstream is sent instead (`rewrite`), and the answers a route gives itself
//! (`redirect`, `respond`). The matching itself is the configuration's
//! ([`wasmgate_config::Route::matches`]); regexes were compiled when it was loaded.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use rand::Rng;
use wasmgate_abi::{ChainStream, HeaderMap, LocalReply, Pseudo, Verdict};
use wasmgate_config::{Redirect, RequestHead, Respond, Route, RouteAction, UpstreamTimeouts};

use crate::generation::{Generation, RouteEntry, Upstream};
use crate::headers;
use crate::pause::Stall;

/// The Host header or authority of a request, as sent (port included).
fn request_host(req: &RequestHeader) -> Option<&str> {
    req.uri
        .authority()
        .map(http::uri::Authority::as_str)
        .or_else(|| req.headers.get(http::header::HOST)?.to_str().ok())
}

/// The index of the first route `req` takes.
pub(crate) fn route_for(generation: &Generation, req: &RequestHeader) -> Option<usize> {
    let head = RequestHead {
        method: req.method.as_str(),
        host: request_host(req),
        path: req.uri.path(),
        query: req.uri.query(),
        headers: &req.headers,
    };
    let (index, route) = generation.config.route_for(&head)?;
    tracing::debug!(route = %route.name, "routed");
    Some(index)
}

/// The upstream a request on `entry` goes to: its one upstream, or one of a weighted split,
/// at random in proportion to the weights. `None` for a route that answers itself.
pub(crate) fn pick_upstream(entry: &RouteEntry) -> Option<Arc<Upstream>> {
    match entry.upstreams.as_slice() {
        [] => None,
        [(upstream, _)] => Some(upstream.clone()),
        split => {
            let total: u32 = split.iter().map(|(_, w)| w).sum();
            let mut ticket = rand::thread_rng().gen_range(0..total.max(1));
            for (upstream, weight) in split {
                if ticket < *weight {
                    return Some(upstream.clone());
                }
                ticket -= weight;
            }
            split.last().map(|(u, _)| u.clone())
        }
    }
}

/// What `upstream_peer` needs of the routing decision: the upstream picked for the request,
/// and its timeouts with the route's `timeout_ms` in place of `response_timeout_ms`.
#[derive(Debug)]
pub(crate) struct Chosen {
    pub(crate) upstream: Arc<Upstream>,
    pub(crate) timeouts: UpstreamTimeouts,
}

impl Chosen {
    pub(crate) fn new(
        generation: &Generation,
        route: Option<usize>,
        upstream: Option<&Arc<Upstream>>,
    ) -> Result<Chosen> {
        let upstream = upstream
            .cloned()
            .ok_or_else(|| Error::explain(ErrorType::HTTPStatus(404), "no route"))?;
        let mut timeouts = upstream.config.timeouts;
        if let Some(timeout) = route
            .and_then(|i| generation.config.routes.get(i))
            .and_then(|r| r.timeout)
        {
            timeouts.response = Some(timeout);
        }
        Ok(Chosen { upstream, timeouts })
    }
}

/// Applies the route's `rewrite` to the request sent upstream: the matched part of the path
/// (query kept), and the Host.
pub(crate) fn rewrite(
    generation: &Generation,
    route: Option<usize>,
    req: &mut RequestHeader,
) -> Result<()> {
    let Some(route) = route.and_then(|i| generation.config.routes.get(i)) else {
        return Ok(());
    };
    let path = route.rewrite_path(req.uri.path());
    let host = route.rewrite.host.as_deref();
    if path.is_none() && host.is_none() {
        return Ok(());
    }
    let mut parts = req.uri.clone().into_parts();
    if let Some(path) = path {
        let target = match req.uri.query() {
            Some(query) => format!("{path}?{query}"),
            None => path,
        };
        parts.path_and_query = Some(target.parse().map_err(|e| {
            Error::because(ErrorType::InternalError, "the rewritten path is invalid", e)
        })?);
    }
    if let Some(host) = host {
        if parts.authority.is_some() {
            parts.authority = host.parse().ok();
        }
        req.insert_header(http::header::HOST, host)?;
    }
    let uri = http::Uri::from_parts(parts)
        .map_err(|e| Error::because(ErrorType::InternalError, "the rewritten URI is invalid", e))?;
    req.set_uri(uri);
    Ok(())
}

/// The response a route gives itself (`redirect` or `respond`), if it does.
pub(crate) fn direct(route: &Route, req: &RequestHeader, tls: bool) -> Option<LocalReply> {
    match &route.action {
        RouteAction::Redirect(r) => Some(redirect(r, req, tls)),
        RouteAction::Respond(r) => Some(respond(r)),
        RouteAction::Upstream(_) | RouteAction::Split(_) => None,
    }
}

fn respond(r: &Respond) -> LocalReply {
    LocalReply {
        status: r.status,
        details: "route_direct_response".to_owned(),
        body: Bytes::from(r.body.clone()),
        headers: r.headers.clone(),
        grpc_status: None,
    }
}

fn redirect(r: &Redirect, req: &RequestHeader, tls: bool) -> LocalReply {
    let location = location(r, req, tls);
    let mut headers = Vec::with_capacity(1);
    let status = match HeaderValue::from_str(&location) {
        Ok(value) => {
            headers.push((http::header::LOCATION, value));
            r.status
        }
        // Every part comes from a valid header or URI, or from the configuration: not seen.
        Err(_) => 500,
    };
    LocalReply {
        status,
        details: "route_redirect".to_owned(),
        body: Bytes::new(),
        headers,
        grpc_status: None,
    }
}

/// The `Location` of a redirect: each part from the route, or else from the request; the
/// query string always from the request.
fn location(r: &Redirect, req: &RequestHeader, tls: bool) -> String {
    let requested = if tls { "https" } else { "http" };
    let scheme = r.scheme.as_deref().unwrap_or(requested);
    let host = match r.host.as_deref() {
        Some(host) => host,
        // The port belongs to the scheme it was reached with.
        None if scheme != requested => request_host(req).map_or("", strip_port),
        None => request_host(req).unwrap_or(""),
    };
    let path = r.path.as_deref().unwrap_or(req.uri.path());
    let mut location = if host.is_empty() {
        // Nowhere to send an absolute URL: a relative one keeps the client on this host.
        String::with_capacity(path.len() + 32)
    } else {
        format!("{scheme}://{host}")
    };
    location.push_str(path);
    if let Some(query) = req.uri.query() {
        location.push('?');
        location.push_str(query);
    }
    location
}

/// `example.com:8080` -> `example.com`, `[::1]:80` -> `[::1]`.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    match host.split_once(':') {
        Some((name, port)) if !port.contains(':') => name,
        _ => host,
    }
}

/// The response headers of `reply` as filters see them (and as a filter's own local reply
/// gets them): `:status`, the headers, and `content-type: text/plain` for a body without one.
fn reply_headers(reply: &LocalReply) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(reply.headers.len() + 2);
    map.push_pseudo(Pseudo::Status, HeaderValue::from(reply.status));
    for (name, value) in &reply.headers {
        map.push(name.clone(), value.clone());
    }
    let typed = reply
        .headers
        .iter()
        .any(|(n, _)| n == http::header::CONTENT_TYPE);
    if !reply.body.is_empty() && !typed {
        map.push(
            HeaderName::from_static("content-type"),
            HeaderValue::from_static("text/plain"),
        );
    }
    map
}

/// The route's own response for a request no filter sees.
pub(crate) fn response(reply: &LocalReply) -> ResponseHeader {
    headers::build_response(&reply_headers(reply), reply.body.len())
}

/// After the request-headers callbacks: when they let the request through and the route answers
/// itself, its answer becomes the chain's local reply, so that the response callbacks see it
/// as they see a filter's (Envoy runs a direct response through the encoder filters too).
pub(crate) fn answer(
    settled: std::result::Result<(Verdict, Bytes), Stall>,
    route: Option<&Route>,
    req: &RequestHeader,
    tls: bool,
    chain: &mut ChainStream,
) -> std::result::Result<(Verdict, Bytes), Stall> {
    match settled {
        Ok((Verdict::Continue, data)) => match route.and_then(|r| direct(r, req, tls)) {
            Some(reply) => {
                chain.stream_mut().response_headers = reply_headers(&reply);
                Ok((Verdict::LocalReply(reply), data))
            }
            None => Ok((Verdict::Continue, data)),
        },
        other => other,
    }
}

#[cfg(test)]
mod tests;
