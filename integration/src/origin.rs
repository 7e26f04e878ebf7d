//! A real upstream HTTP server on loopback (hyper, HTTP/1.1 and h2c) that records what it
//! receives and answers with it.
//!
//! `GET /status/NNN` answers with status NNN. `GET /slow/MS` answers after MS milliseconds
//! (at most 10 s). Any other request gets 200 and a JSON body with the method, path and headers
//! received. Every response carries `x-origin: 1` and `server: test-origin`, and that of an
//! origin started with [`Origin::start_named`] also `x-origin-name: NAME`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
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
) -> Result<Response<Full<Bytes>>, Infallible> {
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
            .body(Full::new(Bytes::from(vec![b'x'; n])))
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
        .body(Full::new(Bytes::from(json.to_string())))
        .expect("valid response");
    Ok(response)
}
