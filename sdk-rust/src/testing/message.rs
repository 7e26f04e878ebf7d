//! Requests and responses as a test sees them: what the client sends, what the upstream
//! receives, what the upstream answers and what the client gets.

use std::fmt;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

/// An HTTP request: the client's (built with [`RequestBuilder`](super::RequestBuilder)) or the
/// one the upstream receives after the filters ([`Exchange::upstream_request`]).
///
/// The Host header is the authority: [`Request::authority`], also answered by
/// `header("host")` and `header(":authority")`. [`Request::headers`] holds the other
/// headers. [`Request::header`] also answers the pseudo-headers `:method`, `:path` and
/// `:scheme`.
///
/// [`Exchange::upstream_request`]: super::Exchange::upstream_request
#[derive(Debug, Clone)]
pub struct Request {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) authority: Option<String>,
    pub(crate) scheme: String,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) trailers: HeaderMap,
}

impl Request {
    pub(crate) fn new(method: Method, path: &str) -> Request {
        Request {
            method,
            path: path.to_owned(),
            authority: Some("example.com".to_owned()),
            scheme: "http".to_owned(),
            headers: HeaderMap::new(),
            body: Bytes::new(),
            trailers: HeaderMap::new(),
        }
    }

    /// The method (`:method`).
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The path and query (`:path`), as sent.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The authority (`:authority`, the Host header), if the request has one.
    pub fn authority(&self) -> Option<&str> {
        self.authority.as_deref()
    }

    /// `http` or `https` (`:scheme`).
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// The first value of `name` as text; `None` if absent or not visible ASCII. Names are
    /// case-insensitive; `host` and the pseudo-headers `:authority`, `:path`, `:method` and
    /// `:scheme` are answered too.
    pub fn header(&self, name: &str) -> Option<&str> {
        match name.to_ascii_lowercase().as_str() {
            ":authority" | "host" => self.authority(),
            ":path" => Some(self.path()),
            ":method" => Some(self.method.as_str()),
            ":scheme" => Some(self.scheme()),
            _ => first_str(&self.headers, name),
        }
    }

    /// Every value of the regular header `name`, as text (values that are not visible ASCII
    /// are left out).
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        all_str(&self.headers, name)
    }

    /// The headers, without Host and pseudo-headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The trailers.
    pub fn trailers(&self) -> &HeaderMap {
        &self.trailers
    }

    /// The request as an `http::Request` (for handing to a `tower` service playing the
    /// upstream, say), with the authority as its Host header. Trailers are left out.
    ///
    /// # Panics
    ///
    /// If the path or authority cannot be part of a URI (a filter could set such a `:path`).
    pub fn to_http(&self) -> http::Request<Bytes> {
        let mut builder = http::Request::builder()
            .method(self.method.clone())
            .uri(self.path.as_str());
        if let Some(authority) = &self.authority {
            builder = builder.header(http::header::HOST, authority.as_str());
        }
        let mut request = builder
            .body(self.body.clone())
            .expect("a path and authority the host accepted");
        request.headers_mut().extend(self.headers.clone());
        request
    }
}

/// An HTTP response: the synthetic upstream response a test gives, or the one the client
/// receives after the filters ([`Exchange::response`](super::Exchange::response)).
#[derive(Debug, Clone)]
pub struct Response {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) trailers: HeaderMap,
}

impl Response {
    /// A response with this status and nothing else, to build an upstream's answer to a
    /// filter's callout ([`Filter::upstream`](super::Filter::upstream)).
    ///
    /// # Panics
    ///
    /// If `status` is not a valid status code (100 to 999).
    pub fn new(status: u16) -> Response {
        let status = StatusCode::from_u16(status)
            .unwrap_or_else(|e| panic!("invalid status code {status}: {e}"));
        Response::with_status(status)
    }

    pub(crate) fn with_status(status: StatusCode) -> Response {
        Response {
            status,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            trailers: HeaderMap::new(),
        }
    }

    /// Appends a header.
    ///
    /// # Panics
    ///
    /// If the name or value is invalid.
    pub fn with_header(mut self, name: &str, value: impl AsRef<[u8]>) -> Response {
        let (name, value) = parse_header(name, value.as_ref());
        self.headers.append(name, value);
        self
    }

    /// Sets the body.
    pub fn with_body(mut self, body: impl Into<Bytes>) -> Response {
        self.body = body.into();
        self
    }

    /// Appends a trailer.
    ///
    /// # Panics
    ///
    /// If the name or value is invalid.
    pub fn with_trailer(mut self, name: &str, value: impl AsRef<[u8]>) -> Response {
        let (name, value) = parse_header(name, value.as_ref());
        self.trailers.append(name, value);
        self
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status.as_u16()
    }

    /// The first value of `name` as text; `None` if absent or not visible ASCII. Names are
    /// case-insensitive; `:status` is answered too.
    pub fn header(&self, name: &str) -> Option<&str> {
        if name == ":status" {
            return Some(self.status.as_str());
        }
        first_str(&self.headers, name)
    }

    /// Every value of `name`, as text (values that are not visible ASCII are left out).
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        all_str(&self.headers, name)
    }

    /// The headers, without `:status`.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The body as text (lossy UTF-8), for assertions.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The trailers.
    pub fn trailers(&self) -> &HeaderMap {
        &self.trailers
    }

    /// The response as an `http::Response`. Trailers are left out.
    pub fn to_http(&self) -> http::Response<Bytes> {
        let mut response = http::Response::new(self.body.clone());
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers.clone();
        response
    }
}

impl From<http::Response<Bytes>> for Response {
    fn from(response: http::Response<Bytes>) -> Response {
        let (parts, body) = response.into_parts();
        Response {
            status: parts.status,
            headers: parts.headers,
            body,
            trailers: HeaderMap::new(),
        }
    }
}

fn first_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name)?.to_str().ok()
}

fn all_str<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect()
}

/// Parses a header a test gives.
///
/// # Panics
///
/// If the name or value is invalid: a test's own mistake, reported where it is made.
pub(crate) fn parse_header(name: &str, value: &[u8]) -> (HeaderName, HeaderValue) {
    let parsed_name = HeaderName::from_bytes(name.as_bytes())
        .unwrap_or_else(|e| panic!("invalid header name {name:?}: {e}"));
    let parsed_value = HeaderValue::from_bytes(value).unwrap_or_else(|e| {
        panic!(
            "invalid value for header {name}: {:?}: {e}",
            String::from_utf8_lossy(value)
        )
    });
    (parsed_name, parsed_value)
}

/// How many body bytes a rendering shows.
const BODY_PREVIEW: usize = 512;

fn render_body(f: &mut fmt::Formatter<'_>, body: &Bytes) -> fmt::Result {
    if body.is_empty() {
        return Ok(());
    }
    let shown = &body[..body.len().min(BODY_PREVIEW)];
    write!(f, "\n\n{}", String::from_utf8_lossy(shown))?;
    if body.len() > BODY_PREVIEW {
        write!(f, "… ({} bytes)", body.len())?;
    }
    Ok(())
}

fn render_headers(f: &mut fmt::Formatter<'_>, headers: &HeaderMap) -> fmt::Result {
    for (name, value) in headers {
        write!(f, "\n{name}: {}", String::from_utf8_lossy(value.as_bytes()))?;
    }
    Ok(())
}

impl fmt::Display for Request {
    /// HTTP/1-style text: request line, headers (Host first), body preview.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.path)?;
        if let Some(authority) = &self.authority {
            write!(f, "\nhost: {authority}")?;
        }
        render_headers(f, &self.headers)?;
        render_body(f, &self.body)
    }
}

impl fmt::Display for Response {
    /// HTTP/1-style text: status line, headers, body preview.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.status)?;
        render_headers(f, &self.headers)?;
        render_body(f, &self.body)
    }
}
