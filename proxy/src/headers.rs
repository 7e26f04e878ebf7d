//! Between Pingora's headers and the ABI host's header maps: capture before the filters run,
//! and apply what they changed afterwards, keeping framing in the proxy's hands.

use http::{HeaderName, HeaderValue, Method};
use pingora::http::{RequestHeader, ResponseHeader};
use wasmgate_abi::{Edit, HeaderMap, Pseudo};

/// Headers that define message framing or the connection. Filters may read them and the ABI
/// lets them "change" them, but the proxy never forwards such an edit: a filter must not be
/// able to desynchronise a connection (request smuggling) by editing framing.
const PROTECTED: [&str; 8] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

fn is_protected(name: &HeaderName) -> bool {
    PROTECTED.contains(&name.as_str())
}

/// The request's headers as filters see them: `:authority`, `:path`, `:method`, `:scheme`, then
/// every header except Host (which is `:authority`).
pub(crate) fn capture_request(req: &RequestHeader, tls: bool) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(req.headers.len() + 4);
    let authority = req
        .uri
        .authority()
        .map(|a| HeaderValue::from_str(a.as_str()))
        .or_else(|| req.headers.get(http::header::HOST).cloned().map(Ok));
    if let Some(Ok(authority)) = authority {
        map.push_pseudo(Pseudo::Authority, authority);
    }
    let path = HeaderValue::from_bytes(req.raw_path()).or_else(|_| {
        let lossy = req.uri.path_and_query().map_or("/", |p| p.as_str());
        HeaderValue::from_str(lossy)
    });
    if let Ok(path) = path {
        map.push_pseudo(Pseudo::Path, path);
    }
    if let Ok(method) = HeaderValue::from_str(req.method.as_str()) {
        map.push_pseudo(Pseudo::Method, method);
    }
    let scheme = if tls { "https" } else { "http" };
    map.push_pseudo(Pseudo::Scheme, HeaderValue::from_static(scheme));
    for (name, value) in &req.headers {
        if name != http::header::HOST {
            map.push(name.clone(), value.clone());
        }
    }
    map
}

/// The response's headers as filters see them: `:status`, then every header.
pub(crate) fn capture_response(resp: &ResponseHeader) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(resp.headers.len() + 1);
    map.push_pseudo(Pseudo::Status, HeaderValue::from(resp.status.as_u16()));
    for (name, value) in &resp.headers {
        map.push(name.clone(), value.clone());
    }
    map
}

/// The header names of a request or response, whichever it is.
trait Headers {
    fn names(&self) -> Vec<HeaderName>;
    fn append(&mut self, name: HeaderName, value: HeaderValue);
    fn insert(&mut self, name: HeaderName, value: HeaderValue);
    fn remove(&mut self, name: &HeaderName);
}

macro_rules! impl_headers {
    ($ty:ty) => {
        impl Headers for $ty {
            fn names(&self) -> Vec<HeaderName> {
                self.headers.keys().cloned().collect()
            }
            // Names and values were validated by the ABI host, so these cannot fail.
            fn append(&mut self, name: HeaderName, value: HeaderValue) {
                let _ = self.append_header(name, value);
            }
            fn insert(&mut self, name: HeaderName, value: HeaderValue) {
                let _ = self.insert_header(name, value);
            }
            fn remove(&mut self, name: &HeaderName) {
                self.remove_header(name);
            }
        }
    };
}
impl_headers!(RequestHeader);
impl_headers!(ResponseHeader);

/// What the filters' edits mean beyond the headers themselves.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Applied {
    /// A filter removed `content-length` (or `transfer-encoding`): as in Envoy, that is how a
    /// filter says it will change the body's length, so the proxy frames the body itself
    /// (chunked, or HTTP/2 frames) instead of forwarding a length that may become wrong.
    pub reframe_body: bool,
}

fn is_framing(name: &HeaderName) -> bool {
    name == http::header::CONTENT_LENGTH || name == http::header::TRANSFER_ENCODING
}

/// Replays the filters' edits of regular headers, skipping protected ones. Returns the
/// pseudo-headers that changed, for the caller to apply.
fn replay(
    edits: Vec<Edit>,
    target: &mut impl Headers,
    keep: &[HeaderName],
    applied: &mut Applied,
) -> Vec<Pseudo> {
    let mut pseudo = Vec::new();
    for edit in edits {
        match edit {
            Edit::Remove(name) if is_framing(&name) => applied.reframe_body = true,
            Edit::Append(name, _) | Edit::Replace(name, _) | Edit::Remove(name)
                if is_protected(&name) =>
            {
                tracing::debug!(header = %name, "filter edit of a framing header ignored");
            }
            Edit::Append(name, value) => target.append(name, value),
            Edit::Replace(name, value) => target.insert(name, value),
            Edit::Remove(name) => target.remove(&name),
            Edit::Clear => {
                for name in target.names() {
                    if !is_protected(&name) && !keep.contains(&name) {
                        target.remove(&name);
                    }
                }
            }
            Edit::Pseudo(p) => {
                if !pseudo.contains(&p) {
                    pseudo.push(p);
                }
            }
        }
    }
    pseudo
}

/// Applies the filters' edits to the request that goes upstream.
pub(crate) fn apply_request(map: &mut HeaderMap, req: &mut RequestHeader) -> Applied {
    let mut applied = Applied::default();
    if !map.is_modified() {
        return applied;
    }
    let edits = map.take_edits();
    for p in replay(edits, req, &[http::header::HOST], &mut applied) {
        let Some(value) = map.pseudo(p) else { continue };
        match p {
            Pseudo::Path => {
                if let Err(e) = req.set_raw_path(value.as_bytes()) {
                    tracing::warn!("filter set an unusable :path: {e}");
                }
            }
            Pseudo::Method => {
                if let Ok(method) = Method::from_bytes(value.as_bytes()) {
                    req.set_method(method);
                }
            }
            Pseudo::Authority => {
                let _ = req.insert_header(http::header::HOST, value.clone());
            }
            // The upstream's scheme is the upstream's configuration; a status has no place in
            // a request.
            Pseudo::Scheme | Pseudo::Status => {}
        }
    }
    applied
}

/// Applies the filters' edits to the response that goes downstream.
pub(crate) fn apply_response(map: &mut HeaderMap, resp: &mut ResponseHeader) -> Applied {
    let mut applied = Applied::default();
    if !map.is_modified() {
        return applied;
    }
    let edits = map.take_edits();
    for p in replay(edits, resp, &[], &mut applied) {
        if p == Pseudo::Status
            && let Some(code) = map
                .pseudo(p)
                .and_then(|v| v.to_str().ok()?.parse::<u16>().ok())
        {
            let _ = resp.set_status(code);
        }
    }
    applied
}

/// Frames a request body whose length filters may change: no `content-length`, chunked (or
/// HTTP/2 frames, which forbid `transfer-encoding`). Through Pingora's API, which keeps its
/// header-case map consistent.
pub(crate) fn reframe_request(req: &mut RequestHeader, chunked: bool) {
    req.remove_header(&http::header::CONTENT_LENGTH);
    req.remove_header(&http::header::TRANSFER_ENCODING);
    if chunked {
        let _ = req.insert_header(http::header::TRANSFER_ENCODING, "chunked");
    }
}

/// Frames a response body whose length filters may change: no `content-length`; chunked for
/// HTTP/1.1, frames for HTTP/2, close-delimited for a HTTP/1.0 client.
pub(crate) fn reframe_response(resp: &mut ResponseHeader, chunked: bool) {
    resp.remove_header(&http::header::CONTENT_LENGTH);
    resp.remove_header(&http::header::TRANSFER_ENCODING);
    if chunked {
        let _ = resp.insert_header(http::header::TRANSFER_ENCODING, "chunked");
    }
}

/// Trailers as filters see them (no pseudo-headers).
pub(crate) fn capture_trailers(trailers: &http::HeaderMap) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(trailers.len());
    for (name, value) in trailers {
        map.push(name.clone(), value.clone());
    }
    map
}

/// Applies the filters' edits to trailers.
pub(crate) fn apply_trailers(map: &mut HeaderMap, trailers: &mut http::HeaderMap) {
    if !map.is_modified() {
        return;
    }
    for edit in map.take_edits() {
        match edit {
            Edit::Append(name, value) => {
                trailers.append(name, value);
            }
            Edit::Replace(name, value) => {
                trailers.insert(name, value);
            }
            Edit::Remove(name) => {
                trailers.remove(name);
            }
            Edit::Clear => trailers.clear(),
            Edit::Pseudo(_) => {}
        }
    }
}

/// A complete response built from a header map (a local reply after the response callbacks
/// ran on it), with framing set by the proxy for a body of `body_len` bytes.
pub(crate) fn build_response(map: &HeaderMap, body_len: usize) -> ResponseHeader {
    let status = map
        .pseudo(Pseudo::Status)
        .and_then(|v| v.to_str().ok()?.parse::<u16>().ok())
        .unwrap_or(500);
    let mut resp = ResponseHeader::build(status, Some(map.len() + 1))
        .unwrap_or_else(|_| ResponseHeader::build(500, None).expect("500 is a valid status"));
    for (name, value) in map.iter() {
        if let wasmgate_abi::FieldName::Header(name) = name
            && !is_protected(name)
        {
            let _ = resp.append_header(name.clone(), value.clone());
        }
    }
    let _ = resp.insert_header(http::header::CONTENT_LENGTH, body_len);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/a?b=1", None).unwrap();
        req.insert_header("Host", "example.com").unwrap();
        req.insert_header("X-Keep", "1").unwrap();
        req.insert_header("Content-Length", "0").unwrap();
        req
    }

    #[test]
    fn capture_puts_pseudo_headers_first_and_host_as_authority() {
        let map = capture_request(&request(), false);
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
        assert_eq!(map.get(b":authority").unwrap(), "example.com");
        assert_eq!(map.get(b":path").unwrap(), "/a?b=1");
    }

    #[test]
    fn edits_are_replayed_but_framing_is_protected() {
        let mut req = request();
        let mut map = capture_request(&req, false);
        map.add(b"x-new", b"v", 1024).unwrap();
        map.replace(b"x-keep", b"2", 1024).unwrap();
        map.replace(b"content-length", b"99", 1024).unwrap();
        map.add(b"transfer-encoding", b"chunked", 1024).unwrap();
        map.replace(b":path", b"/rewritten", 1024).unwrap();
        map.replace(b":authority", b"other.example", 1024).unwrap();
        let applied = apply_request(&mut map, &mut req);
        assert!(!applied.reframe_body);
        assert_eq!(req.headers["x-new"], "v");
        assert_eq!(req.headers["x-keep"], "2");
        assert_eq!(req.headers["content-length"], "0");
        assert!(req.headers.get("transfer-encoding").is_none());
        assert_eq!(req.raw_path(), b"/rewritten");
        assert_eq!(req.headers["host"], "other.example");
        assert!(!map.is_modified(), "edits are applied once");
    }

    #[test]
    fn removing_content_length_asks_for_reframing() {
        let mut req = request();
        let mut map = capture_request(&req, false);
        map.remove(b"content-length").unwrap();
        assert!(apply_request(&mut map, &mut req).reframe_body);
        assert_eq!(
            req.headers["content-length"], "0",
            "the proxy reframes, not the edit"
        );
        reframe_request(&mut req, true);
        assert!(req.headers.get("content-length").is_none());
        assert_eq!(req.headers["transfer-encoding"], "chunked");
    }

    #[test]
    fn trailer_edits_apply() {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let mut map = capture_trailers(&trailers);
        map.add(b"x-t", b"1", 1024).unwrap();
        map.replace(b"grpc-status", b"2", 1024).unwrap();
        apply_trailers(&mut map, &mut trailers);
        assert_eq!(trailers["x-t"], "1");
        assert_eq!(trailers["grpc-status"], "2");
    }

    #[test]
    fn set_all_clears_regular_headers_but_not_host_or_framing() {
        let mut req = request();
        let mut map = capture_request(&req, false);
        map.set_all([(&b"only"[..], &b"1"[..])], 1024).unwrap();
        apply_request(&mut map, &mut req);
        let mut names: Vec<&str> = req.headers.keys().map(|k| k.as_str()).collect();
        names.sort();
        assert_eq!(names, ["content-length", "host", "only"]);
    }

    #[test]
    fn response_status_and_headers_are_applied() {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.insert_header("Server", "up").unwrap();
        let mut map = capture_response(&resp);
        map.replace(b":status", b"418", 1024).unwrap();
        map.remove(b"server").unwrap();
        apply_response(&mut map, &mut resp);
        assert_eq!(resp.status.as_u16(), 418);
        assert!(resp.headers.get("server").is_none());
    }

    #[test]
    fn built_responses_carry_the_body_length() {
        let mut map = HeaderMap::default();
        map.add(b":status", b"403", 1024).unwrap();
        map.add(b"x-why", b"denied", 1024).unwrap();
        map.add(b"content-length", b"1", 1024).unwrap();
        let resp = build_response(&map, 6);
        assert_eq!(resp.status.as_u16(), 403);
        assert_eq!(resp.headers["x-why"], "denied");
        assert_eq!(resp.headers["content-length"], "6");
    }
}
