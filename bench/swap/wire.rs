//! The benchmark's HTTP/1.1 ends: an origin that says which version the proxy's filter put on
//! the request, and a minimal keep-alive client that reads exactly what it needs.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Starts the origin on a free loopback port: every response is 200 with a short body and
/// `x-origin-saw: V`, V being the request's `x-version` (or `none`).
pub async fn start_origin() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| {
                    let saw = req
                        .headers()
                        .get("x-version")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("none")
                        .to_owned();
                    async move {
                        let resp = Response::builder()
                            .status(200)
                            .header("x-origin-saw", saw)
                            .header("content-type", "text/plain")
                            .body(Full::new(Bytes::from_static(b"swap bench origin\n")))
                            .expect("static response");
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// What one response said.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    /// Every `x-version` value, in order.
    pub versions: Vec<String>,
    pub origin_saw: Option<String>,
    pub body: Vec<u8>,
}

/// One keep-alive HTTP/1.1 connection.
#[derive(Debug)]
pub struct Conn {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

impl Conn {
    pub fn new(addr: SocketAddr) -> Conn {
        Conn {
            addr,
            stream: None,
            buf: Vec::new(),
        }
    }

    /// Sends one request and reads its response, connecting first if needed. Any error
    /// drops the connection (the next request opens a new one).
    pub async fn request(&mut self, method: &str, path: &str) -> Result<Answer, String> {
        let result = tokio::time::timeout(Duration::from_secs(10), self.exchange(method, path))
            .await
            .unwrap_or_else(|_| Err("timed out after 10 s".into()));
        if result.is_err() {
            self.stream = None;
            self.buf.clear();
        }
        result
    }

    async fn exchange(&mut self, method: &str, path: &str) -> Result<Answer, String> {
        if self.stream.is_none() {
            let s = TcpStream::connect(self.addr)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let _ = s.set_nodelay(true);
            self.stream = Some(s);
            self.buf.clear();
        }
        let stream = self.stream.as_mut().ok_or("no connection")?;
        let request =
            format!("{method} {path} HTTP/1.1\r\nhost: swapbench\r\ncontent-length: 0\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            read_more(stream, &mut self.buf).await?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line: {head}"))?;
        let mut answer = Answer {
            status,
            versions: Vec::new(),
            origin_saw: None,
            body: Vec::new(),
        };
        let mut length = None;
        let mut close = false;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match name.to_ascii_lowercase().as_str() {
                "x-version" => answer.versions.push(value.to_owned()),
                "x-origin-saw" => answer.origin_saw = Some(value.to_owned()),
                "content-length" => length = value.parse::<usize>().ok(),
                "connection" => close = value.eq_ignore_ascii_case("close"),
                "transfer-encoding" => return Err("chunked responses are not expected".into()),
                _ => {}
            }
        }
        let length = length.ok_or_else(|| format!("no content-length: {head}"))?;
        while self.buf.len() < head_end + length {
            read_more(stream, &mut self.buf).await?;
        }
        answer.body = self.buf[head_end..head_end + length].to_vec();
        self.buf.drain(..head_end + length);
        if close {
            self.stream = None;
        }
        Ok(answer)
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), String> {
    let mut chunk = [0u8; 16 * 1024];
    let n = stream
        .read(&mut chunk)
        .await
        .map_err(|e| format!("read: {e}"))?;
    if n == 0 {
        return Err("connection closed by the proxy".into());
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
