//! A real upstream HTTP server on loopback (hyper, HTTP/1.1 and h2c) that records what it
//! receives and answers with it.
//!
//! `GET /status/NNN` answers with status NNN; a path ending in `/trailers` answers a body then
//! trailers (`x-trailer: origin`, `grpc-status: 0`), which HTTP/2 carries. `GET /slow/MS` answers after MS milliseconds
//! (at most 10 s). Any other request gets 200 and a JSON body with the method, path and headers
//! received. Every response carries `x-origin: 1` and `server: test-origin`, and that of an
//! origin started with [`Origin::start_named`] also `x-origin-name: NAME`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// One request as the origin received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// Names are lower-case; order and duplicates as received.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
}

impl Received {
    /// All values of a header, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_all(name).into_iter().next()
    }
}

/// A running origin; stops when dropped.
#[derive(Debug)]
pub struct Origin {
    pub addr: SocketAddr,
    received: Arc<Log>,
    task: tokio::task::JoinHandle<()>,
}

/// The requests an origin received.
type Log = std::sync::Mutex<Vec<Received>>;

impl Origin {
    /// Starts an origin on a free loopback port.
    pub async fn start() -> Origin {
        Self::start_inner(None).await
    }

    /// Starts an origin whose responses say its name (`x-origin-name`).
    pub async fn start_named(name: &str) -> Origin {
        Self::start_inner(Some(Arc::from(name))).await
    }

    async fn start_inner(name: Option<Arc<str>>) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let addr = listener.local_addr().expect("origin addr");
        let received = Arc::new(Log::default());
        let log = received.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let log = log.clone();
                let name = name.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        handle(req, log.clone(), name.clone())
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Origin {
            addr,
            received,
            task,
        }
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// The last request received.
    pub fn last(&self) -> Received {
        self.received()
            .pop()
            .expect("the origin received a request")
    }

    /// The `endpoints:` value for a config.
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The longest `/slow/MS` delay.
const MAX_SLOW_MS: u64 = 10_000;

async fn handle(
    req: Request<Incoming>,
    log: Arc<Log>,
    name: Option<Arc<str>>,
) -> Result<Response<Reply>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let received = Received {
        method: parts.method.to_string(),
        path: path.clone(),
        headers: headers.clone(),
        body: body.clone(),
        version: format!("{:?}", parts.version),
    };
    if let Ok(mut v) = log.lock() {
        v.push(received);
    }
    if let Some(ms) = path
        .strip_prefix("/slow/")
        .and_then(|s| s.parse::<u64>().ok())
    {
        tokio::time::sleep(std::time::Duration::from_millis(ms.min(MAX_SLOW_MS))).await;
    }
    if let Some(n) = path
        .strip_prefix("/big/")
        .and_then(|s| s.parse::<usize>().ok())
    {
        let response = Response::builder()
            .status(200)
            .header("x-origin", "1")
            .header("content-type", "text/plain")
            .body(Reply::full(Bytes::from(vec![b'x'; n])))
            .expect("valid response");
        return Ok(response);
    }
    if path.ends_with("/trailers") {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-trailer", http::HeaderValue::from_static("origin"));
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        let response = Response::builder()
            .status(200)
            .header("x-origin", "1")
            .body(Reply {
                data: Some(Bytes::from_static(b"body before trailers")),
                trailers: Some(trailers),
            })
            .expect("valid response");
        return Ok(response);
    }
    let status = path
        .strip_prefix("/status/")
        .and_then(|s| s.parse::<u16>().ok())
        .unwrap_or(200);
    let json = serde_json::json!({
        "method": parts.method.as_str(),
        "path": path,
        "headers": headers,
        "body_len": body.len(),
    });
    let mut response = Response::builder().status(status);
    if let Some(name) = &name {
        response = response.header("x-origin-name", name.as_ref());
    }
    let response = response
        .header("x-origin", "1")
        .header("server", "test-origin")
        .header("content-type", "application/json")
        .body(Reply::full(Bytes::from(json.to_string())))
        .expect("valid response");
    Ok(response)
}

/// A response body: data, then trailers if any (HTTP/2 carries them).
#[derive(Debug)]
pub struct Reply {
    data: Option<Bytes>,
    trailers: Option<http::HeaderMap>,
}

impl Reply {
    fn full(data: Bytes) -> Reply {
        Reply {
            data: Some(data),
            trailers: None,
        }
    }
}

impl hyper::body::Body for Reply {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        let frame = match (this.data.take(), this.trailers.take()) {
            (Some(data), trailers) => {
                this.trailers = trailers;
                Some(hyper::body::Frame::data(data))
            }
            (None, Some(trailers)) => Some(hyper::body::Frame::trailers(trailers)),
            (None, None) => None,
        };
        std::task::Poll::Ready(frame.map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match (&self.data, &self.trailers) {
            (Some(d), None) => hyper::body::SizeHint::with_exact(d.len() as u64),
            _ => hyper::body::SizeHint::default(),
        }
    }
}
