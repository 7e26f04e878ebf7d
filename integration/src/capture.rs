//! A raw HTTP/1.1 upstream that records the exact bytes it receives on each connection and
//! parses them strictly (Content-Length or chunked framing, keep-alive), so a test can see
//! whether a request was framed right and where the next one started.
//!
//! Every request gets `200 OK` with body `ok` and `x-capture-conn: <connection index>`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request as parsed from the wire.
#[derive(Debug, Clone)]
pub struct RawRequest {
    /// Which connection it came on (0, 1, ... in accept order).
    pub conn: usize,
    /// The request line.
    pub line: String,
    /// Header lines as received (name case kept).
    pub headers: Vec<(String, String)>,
    /// The body after de-chunking.
    pub body: Vec<u8>,
    /// Whether the body came chunked.
    pub chunked: bool,
}

impl RawRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Default)]
struct Seen {
    requests: Vec<RawRequest>,
    /// Every byte received, per connection.
    raw: Vec<Vec<u8>>,
    /// Framing errors, per connection: a desynchronised stream shows up here.
    errors: Vec<String>,
}

/// A running capture upstream; stops when dropped.
#[derive(Debug)]
pub struct Capture {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Capture {
    pub async fn start() -> Capture {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind capture");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let shared = seen.clone();
        let task = tokio::spawn(async move {
            let mut conn = 0;
            while let Ok((stream, _)) = listener.accept().await {
                let seen = shared.clone();
                let index = conn;
                conn += 1;
                if let Ok(mut s) = seen.lock() {
                    s.raw.push(Vec::new());
                }
                tokio::spawn(serve(stream, index, seen));
            }
        });
        Capture { addr, seen, task }
    }

    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    pub fn requests(&self) -> Vec<RawRequest> {
        self.seen
            .lock()
            .map(|s| s.requests.clone())
            .unwrap_or_default()
    }

    pub fn errors(&self) -> Vec<String> {
        self.seen
            .lock()
            .map(|s| s.errors.clone())
            .unwrap_or_default()
    }

    /// How many connections it accepted.
    pub fn connections(&self) -> usize {
        self.seen.lock().map(|s| s.raw.len()).unwrap_or(0)
    }

    /// Every byte received on connection `conn`.
    pub fn raw(&self, conn: usize) -> Vec<u8> {
        self.seen
            .lock()
            .ok()
            .and_then(|s| s.raw.get(conn).cloned())
            .unwrap_or_default()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Bytes buffered from a connection, consumed as requests are parsed.
struct Reader {
    stream: TcpStream,
    buf: Vec<u8>,
    conn: usize,
    seen: Arc<Mutex<Seen>>,
}

impl Reader {
    /// Reads more bytes; false at end of stream.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16384];
        match self.stream.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                if let Ok(mut s) = self.seen.lock() {
                    s.raw[self.conn].extend_from_slice(&chunk[..n]);
                }
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    async fn line(&mut self) -> Option<String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return Some(line);
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    async fn exact(&mut self, n: usize) -> Option<Vec<u8>> {
        while self.buf.len() < n {
            if !self.fill().await {
                return None;
            }
        }
        Some(self.buf.drain(..n).collect())
    }
}

async fn serve(stream: TcpStream, conn: usize, seen: Arc<Mutex<Seen>>) {
    let mut r = Reader {
        stream,
        buf: Vec::new(),
        conn,
        seen: seen.clone(),
    };
    let fail = |why: String| {
        if let Ok(mut s) = seen.lock() {
            s.errors.push(format!("connection {conn}: {why}"));
        }
    };
    loop {
        let Some(line) = r.line().await else { return };
        if line.is_empty() {
            fail("empty line where a request line was expected".into());
            return;
        }
        let mut headers = Vec::new();
        loop {
            let Some(h) = r.line().await else { return };
            if h.is_empty() {
                break;
            }
            let Some((k, v)) = h.split_once(':') else {
                fail(format!("bad header line {h:?}"));
                return;
            };
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
        let get = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let chunked = get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        let mut body = Vec::new();
        if chunked {
            loop {
                let Some(size_line) = r.line().await else {
                    return;
                };
                let size_text = size_line.split(';').next().unwrap_or("").trim();
                let Ok(size) = usize::from_str_radix(size_text, 16) else {
                    fail(format!("bad chunk size {size_line:?}"));
                    return;
                };
                if size == 0 {
                    // Trailers, then an empty line.
                    loop {
                        let Some(t) = r.line().await else { return };
                        if t.is_empty() {
                            break;
                        }
                    }
                    break;
                }
                let Some(data) = r.exact(size).await else {
                    return;
                };
                body.extend_from_slice(&data);
                match r.line().await {
                    Some(l) if l.is_empty() => {}
                    other => {
                        fail(format!("no CRLF after a chunk: {other:?}"));
                        return;
                    }
                }
            }
        } else if let Some(len) = get("content-length") {
            let Ok(len) = len.parse::<usize>() else {
                fail(format!("bad content-length {len:?}"));
                return;
            };
            let Some(data) = r.exact(len).await else {
                return;
            };
            body = data;
        }
        if let Ok(mut s) = seen.lock() {
            s.requests.push(RawRequest {
                conn,
                line,
                headers,
                body,
                chunked,
            });
        }
        let response =
            format!("HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-capture-conn: {conn}\r\n\r\nok");
        if r.stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}
