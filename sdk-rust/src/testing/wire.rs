//! The proxy's rules between HTTP messages and the host's header maps, as the proxy applies
//! them (`proxy/src/headers.rs` and `proxy/src/service.rs`): what the filters see, and what
//! reaches the upstream and the client after their edits.
//!
//! These rules live in the proxy crate, which the SDK does not depend on (it would pull in
//! Pingora); they are restated here from its documented behaviour and must follow it.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use wasmgate_abi::{Edit, FieldName, Pseudo};

use super::message::{Request, Response};

/// Headers that define framing or the connection. Filters may read and "edit" them, but the
/// proxy never forwards such an edit.
const FRAMING: [&str; 8] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

pub(crate) fn is_framing(name: &HeaderName) -> bool {
    FRAMING.contains(&name.as_str())
}

/// The client's request as filters see it: `:authority`, `:path`, `:method`, `:scheme`, then
/// every header (Host is `:authority`).
pub(crate) fn capture_request(request: &Request) -> wasmgate_abi::HeaderMap {
    let mut map = wasmgate_abi::HeaderMap::with_capacity(request.headers.len() + 4);
    if let Some(authority) = request
        .authority
        .as_deref()
        .and_then(|a| HeaderValue::from_str(a).ok())
    {
        map.push_pseudo(Pseudo::Authority, authority);
    }
    if let Ok(path) = HeaderValue::from_str(&request.path) {
        map.push_pseudo(Pseudo::Path, path);
    }
    if let Ok(method) = HeaderValue::from_str(request.method.as_str()) {
        map.push_pseudo(Pseudo::Method, method);
    }
    if let Ok(scheme) = HeaderValue::from_str(&request.scheme) {
        map.push_pseudo(Pseudo::Scheme, scheme);
    }
    for (name, value) in &request.headers {
        map.push(name.clone(), value.clone());
    }
    map
}

/// An upstream response as filters see it: `:status`, then every header.
pub(crate) fn capture_response(response: &Response) -> wasmgate_abi::HeaderMap {
    let mut map = wasmgate_abi::HeaderMap::with_capacity(response.headers.len() + 1);
    map.push_pseudo(Pseudo::Status, HeaderValue::from(response.status.as_u16()));
    for (name, value) in &response.headers {
        map.push(name.clone(), value.clone());
    }
    map
}

fn pseudo_text(map: &wasmgate_abi::HeaderMap, pseudo: Pseudo) -> Option<String> {
    let value = map.pseudo(pseudo)?;
    Some(String::from_utf8_lossy(value.as_bytes()).into_owned())
}

fn status_of(map: &wasmgate_abi::HeaderMap) -> Option<StatusCode> {
    StatusCode::from_bytes(map.pseudo(Pseudo::Status)?.as_bytes()).ok()
}

/// The regular headers of `map` that the proxy forwards, then the framing headers of the
/// original message, which no filter can change.
fn forwarded_headers(map: &wasmgate_abi::HeaderMap, original: &HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(map.len());
    for (name, value) in map.iter() {
        if let FieldName::Header(name) = name
            && !is_framing(name)
        {
            headers.append(name.clone(), value.clone());
        }
    }
    for (name, value) in original {
        if is_framing(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    headers
}

/// Whether a filter removed `content-length` or `transfer-encoding`: as in Envoy, that is how
/// a filter says it will change the body's length, and the proxy then frames the body itself.
pub(crate) fn removed_length(map: &wasmgate_abi::HeaderMap) -> bool {
    map.edits().iter().any(|edit| {
        matches!(edit, Edit::Remove(name)
            if name == http::header::CONTENT_LENGTH || name == http::header::TRANSFER_ENCODING)
    })
}

/// Frames a body whose length filters may change: no `content-length`, and chunked when
/// `chunked` (HTTP/1.1; HTTP/2 uses frames and an HTTP/1.0 client a closed connection).
pub(crate) fn reframe(headers: &mut HeaderMap, chunked: bool) {
    headers.remove(http::header::CONTENT_LENGTH);
    headers.remove(http::header::TRANSFER_ENCODING);
    if chunked {
        headers.insert(
            http::header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
    }
}

/// The `content-length` of a message, when it has one and no `transfer-encoding`.
pub(crate) fn announced_length(headers: &HeaderMap) -> Option<u64> {
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

/// Gives a message that a test left unframed the framing a real client or origin would:
/// `content-length` for its body, or `transfer-encoding: chunked` when it has trailers.
pub(crate) fn frame(headers: &mut HeaderMap, body_len: usize, has_trailers: bool) {
    if headers.contains_key(http::header::CONTENT_LENGTH)
        || headers.contains_key(http::header::TRANSFER_ENCODING)
    {
        return;
    }
    if has_trailers {
        headers.insert(
            http::header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
    } else {
        headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(body_len));
    }
}

/// The request headers the upstream receives after the filters edited `map`: their header
/// edits, `:path`, `:method`, and `:authority` (as Host); never their framing edits nor
/// `:scheme` (the upstream's scheme is the upstream's configuration). The body is left empty,
/// for the body callbacks to fill; trailers pass through.
pub(crate) fn upstream_request(client: &Request, map: &wasmgate_abi::HeaderMap) -> Request {
    let method = map
        .pseudo(Pseudo::Method)
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
        .unwrap_or_else(|| client.method.clone());
    Request {
        method,
        path: pseudo_text(map, Pseudo::Path).unwrap_or_else(|| client.path.clone()),
        authority: pseudo_text(map, Pseudo::Authority).or_else(|| client.authority.clone()),
        scheme: client.scheme.clone(),
        headers: forwarded_headers(map, &client.headers),
        body: Bytes::new(),
        trailers: client.trailers.clone(),
    }
}

/// The upstream's response headers as the client receives them after the filters edited
/// `map`: their header edits and `:status`, never their framing edits. The body is left
/// empty, for the body callbacks to fill; trailers are the upstream's until the trailer
/// callbacks run.
pub(crate) fn proxied_response(upstream: &Response, map: &wasmgate_abi::HeaderMap) -> Response {
    Response {
        status: status_of(map).unwrap_or(upstream.status),
        headers: forwarded_headers(map, &upstream.headers),
        body: Bytes::new(),
        trailers: upstream.trailers.clone(),
    }
}

/// Trailers as filters see them (no pseudo-headers).
pub(crate) fn capture_trailers(trailers: &HeaderMap) -> wasmgate_abi::HeaderMap {
    let mut map = wasmgate_abi::HeaderMap::with_capacity(trailers.len());
    for (name, value) in trailers {
        map.push(name.clone(), value.clone());
    }
    map
}

/// Trailers after the filters edited them (every edit applies: trailers carry no framing).
pub(crate) fn edited_trailers(map: &wasmgate_abi::HeaderMap) -> HeaderMap {
    let mut trailers = HeaderMap::with_capacity(map.len());
    for (name, value) in map.iter() {
        if let FieldName::Header(name) = name {
            trailers.append(name.clone(), value.clone());
        }
    }
    trailers
}

/// A local reply as the client receives it: the response map after the response callbacks
/// ran on it (500 if a filter broke `:status`), without framing headers, with a
/// `content-length` for the body. A HEAD request gets no body.
pub(crate) fn local_response(map: &wasmgate_abi::HeaderMap, body: Bytes, head: bool) -> Response {
    let mut headers = forwarded_headers(map, &HeaderMap::new());
    headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    Response {
        status: status_of(map).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        headers,
        body: if head { Bytes::new() } else { body },
        trailers: HeaderMap::new(),
    }
}

/// The proxy's own plain-text answer (a failed or paused filter).
pub(crate) fn plain_response(status: StatusCode, body: &'static str, head: bool) -> Response {
    let mut headers = HeaderMap::with_capacity(2);
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain"),
    );
    headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    Response {
        status,
        headers,
        body: if head {
            Bytes::new()
        } else {
            Bytes::from_static(body.as_bytes())
        },
        trailers: HeaderMap::new(),
    }
}

/// What the client gets when a fail-closed filter failed.
pub(crate) fn failed_response(head: bool) -> Response {
    plain_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "503 Service Unavailable: a filter failed\n",
        head,
    )
}

/// What the client gets when a filter kept the stream paused too long (the proxy waits 60 s).
pub(crate) fn timed_out_response(head: bool) -> Response {
    plain_response(
        StatusCode::GATEWAY_TIMEOUT,
        "504 Gateway Timeout: a filter paused the request too long\n",
        head,
    )
}

/// What the client gets when a request body is over a buffering filter's limit.
pub(crate) fn too_large_response(head: bool) -> Response {
    plain_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        "413 Content Too Large: the body is over a filter's buffer limit\n",
        head,
    )
}

/// What the client gets when the proxy refuses what the filters did.
pub(crate) fn internal_error_response(head: bool) -> Response {
    plain_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        "500 Internal Server Error\n",
        head,
    )
}

/// A response that replaces the upstream's in the response phase goes out on the proxy's
/// error path, which closes an HTTP/1 client connection and says so.
pub(crate) fn closing(mut response: Response, protocol: &str) -> Response {
    if protocol != "HTTP/2" {
        response
            .headers
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> Request {
        let mut request = Request::new(Method::GET, "/a?b=1");
        for (name, value) in [("x-keep", "1"), ("content-length", "0")] {
            request.headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        request
    }

    #[test]
    fn capture_puts_pseudo_headers_first() {
        let map = capture_request(&client());
        let names: Vec<&[u8]> = map.pairs().map(|(k, _)| k).collect();
        assert_eq!(
            names,
            [
                &b":authority"[..],
                b":path",
                b":method",
                b":scheme",
                b"x-keep",
                b"content-length"
            ]
        );
    }

    #[test]
    fn edits_are_forwarded_but_framing_and_scheme_are_not() {
        let client = client();
        let mut map = capture_request(&client);
        map.add(b"x-new", b"v", 1024).unwrap();
        map.replace(b"x-keep", b"2", 1024).unwrap();
        map.replace(b"content-length", b"99", 1024).unwrap();
        map.add(b"transfer-encoding", b"chunked", 1024).unwrap();
        map.replace(b":path", b"/rewritten", 1024).unwrap();
        map.replace(b":authority", b"other.example", 1024).unwrap();
        map.replace(b":method", b"POST", 1024).unwrap();
        map.replace(b":scheme", b"https", 1024).unwrap();
        let up = upstream_request(&client, &map);
        assert_eq!(up.header("x-new"), Some("v"));
        assert_eq!(up.header_all("x-keep"), ["2"]);
        assert_eq!(up.header("content-length"), Some("0"));
        assert_eq!(up.header("transfer-encoding"), None);
        assert_eq!(up.path(), "/rewritten");
        assert_eq!(up.header("host"), Some("other.example"));
        assert_eq!(up.method(), Method::POST);
        assert_eq!(up.scheme(), "http");
    }

    #[test]
    fn set_all_keeps_framing_headers() {
        let client = client();
        let mut map = capture_request(&client);
        map.set_all([(&b"only"[..], &b"1"[..])], 1024).unwrap();
        let up = upstream_request(&client, &map);
        let mut names: Vec<&str> = up.headers().keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["content-length", "only"]);
        assert_eq!(up.authority(), Some("example.com"));
    }

    #[test]
    fn local_responses_carry_the_body_length_and_no_framing_edits() {
        let mut map = wasmgate_abi::HeaderMap::default();
        map.add(b":status", b"403", 1024).unwrap();
        map.add(b"x-why", b"denied", 1024).unwrap();
        map.add(b"content-length", b"1", 1024).unwrap();
        let resp = local_response(&map, Bytes::from_static(b"denied"), false);
        assert_eq!(resp.status(), 403);
        assert_eq!(resp.header("x-why"), Some("denied"));
        assert_eq!(resp.header_all("content-length"), ["6"]);
        assert_eq!(resp.text(), "denied");
        let head = local_response(&map, Bytes::from_static(b"denied"), true);
        assert!(head.body().is_empty());
        assert_eq!(head.header("content-length"), Some("6"));
    }
}
