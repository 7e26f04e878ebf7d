//! What the upstream-fault tests (catalogue section C, and E-4) share: a scripted raw TCP
//! upstream, a proxy in front of it with small timeouts, filters in WAT that record the
//! callbacks they get, and a raw client that tells a closed connection from a complete
//! response.

use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use wasmgate_integration::proxy::Proxy;

use crate::hostile_support::{RET_LEN, RET_PTR, SCRATCH, Wat};

/// An upstream whose every connection is handed to a script.
#[derive(Debug)]
pub struct Scripted {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Scripted {
    /// Runs `script(index, stream)` on each connection accepted (index 0, 1, ... in order).
    pub async fn start<F, Fut>(script: F) -> Scripted
    where
        F: Fn(usize, TcpStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Self::serve(listener, script)
    }

    /// As [`Scripted::start`] on a listener of the caller's.
    pub fn serve<F, Fut>(listener: TcpListener, script: F) -> Scripted
    where
        F: Fn(usize, TcpStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let index = count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(script(index, stream));
            }
        });
        Scripted {
            addr,
            accepted,
            task,
        }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one request head (through the empty line); `None` at end of stream or after 10 s.
/// A body is not read: the tests send none.
pub async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    let deadline = Instant::now() + Duration::from_secs(10);
    while !head.ends_with(b"\r\n\r\n") {
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, stream.read(&mut byte)).await {
            Ok(Ok(1)) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// Closes with a TCP reset (SO_LINGER 0) instead of a FIN.
pub fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// Waits up to `timeout` for the peer (the proxy) to close: true on end of stream or a reset,
/// false if the connection is still open (or sends more) by then.
pub async fn closed_by_peer(stream: &mut TcpStream, timeout: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + timeout;
    loop {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            return false;
        };
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

/// What a raw client got.
#[derive(Debug)]
pub struct Got {
    pub bytes: Vec<u8>,
    /// The proxy closed (or reset) the connection before the timeout.
    pub closed: bool,
    pub elapsed: Duration,
}

impl Got {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// The status code of the first status line, 0 if none.
    pub fn status(&self) -> u16 {
        self.bytes
            .strip_prefix(b"HTTP/1.1 ")
            .and_then(|rest| std::str::from_utf8(rest.get(..3)?).ok()?.parse().ok())
            .unwrap_or(0)
    }

    /// The body after de-chunking, if the response is chunked; `None` if a chunk is cut.
    pub fn decoded_body(&self) -> Option<Vec<u8>> {
        let body = self.body();
        let head = &self.bytes[..self.bytes.len() - body.len()];
        let head = String::from_utf8_lossy(head).to_ascii_lowercase();
        if !head.contains("transfer-encoding: chunked") {
            return Some(body.to_vec());
        }
        let mut rest = body;
        let mut out = Vec::new();
        loop {
            let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
            let size = std::str::from_utf8(&rest[..line_end]).ok()?;
            let size = usize::from_str_radix(size.trim(), 16).ok()?;
            rest = &rest[line_end + 2..];
            if size == 0 {
                return Some(out);
            }
            out.extend_from_slice(rest.get(..size)?);
            rest = rest.get(size + 2..)?;
        }
    }

    /// The bytes after the response head.
    pub fn body(&self) -> &[u8] {
        let at = self.bytes.windows(4).position(|w| w == b"\r\n\r\n");
        at.map_or(&[][..], |i| &self.bytes[i + 4..])
    }
}

/// Sends `GET path` on a new keep-alive connection and reads until the proxy closes it or
/// `timeout` passes.
pub async fn get(proxy: &Proxy, path: &str, timeout: Duration) -> Got {
    let request = format!("GET {path} HTTP/1.1\r\nHost: upstream.test\r\n\r\n");
    send(proxy.addr, request.as_bytes(), timeout).await
}

/// Sends `GET path` with `Connection: close`: the read ends when the response does.
pub async fn get_once(proxy: &Proxy, path: &str) -> Got {
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: upstream.test\r\nConnection: close\r\n\r\n");
    send(proxy.addr, request.as_bytes(), Duration::from_secs(10)).await
}

/// Sends `request` on a new connection and reads until the proxy closes it or `timeout` passes.
pub async fn send(addr: SocketAddr, request: &[u8], timeout: Duration) -> Got {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut bytes = Vec::new();
    let mut buf = vec![0u8; 65536];
    let mut closed = false;
    let deadline = started + timeout;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => bytes.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    Got {
        bytes,
        closed,
        elapsed: started.elapsed(),
    }
}

/// A proxy in front of `endpoint` (upstream `up`, with `upstream_keys` added to its
/// mapping, e.g. `read_timeout_ms: 300`), with `top_keys` added at the top level, and these
/// WAT filters, each alone on the route `/<name>/`; every other path has no filter.
pub fn start_proxy(
    endpoint: &str,
    upstream_keys: &[(&str, u64)],
    top_keys: &str,
    filters: &[(&str, &Wat)],
) -> (Proxy, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut text = format!(
        "listen: \"{{listen}}\"\nadmin: \"{{admin}}\"\nthreads: 2\n{top_keys}upstreams:\n  up:\n    endpoints: [\"{endpoint}\"]\n"
    );
    for (key, value) in upstream_keys {
        let _ = writeln!(text, "    {key}: {value}");
    }
    if !filters.is_empty() {
        text.push_str("filters:\n");
    }
    let mut routes = String::new();
    for (name, wat) in filters {
        let path = dir.path().join(format!("{name}.wat"));
        std::fs::write(&path, wat.build()).expect("write the filter");
        let _ = writeln!(text, "  - name: {name}\n    wasm: {}", path.display());
        let _ = writeln!(
            routes,
            "  - match: {{path_prefix: /{name}/}}\n    upstream: up\n    filters: [{name}]"
        );
    }
    let _ = write!(text, "routes:\n{routes}  - upstream: up\n    filters: []\n");
    (Proxy::start_with(&text, &["--no-watch"]), dir)
}

/// A filter that logs, at info level, `rec rh=<status>` for each `proxy_on_response_headers`,
/// `rec rb=<size>,<end_of_stream>` for each `proxy_on_response_body` and `rec log` for
/// `proxy_on_log`, and lets everything through. With `strip_length`, it also removes the
/// response's `content-length` (so the proxy frames the body itself, chunked).
pub fn recorder(strip_length: bool) -> Wat {
    let mut w = Wat::new();
    let status = w.data(b":status");
    let rh = w.data(b"rec rh=");
    let rb = w.data(b"rec rb");
    let log = w.data(b"rec log");
    let length = w.data(b"content-length");
    let strip = if strip_length {
        format!("(drop (call $remove (i32.const 2) {length}))")
    } else {
        String::new()
    };
    let headers = format!(
        "(i32.store (i32.const {RET_LEN}) (i32.const 0))
    (drop (call $get (i32.const 2) {status} (i32.const {RET_PTR}) (i32.const {RET_LEN})))
    (memory.copy (i32.const {SCRATCH}) (i32.const {rh_ptr}) (i32.const {rh_len}))
    (memory.copy (i32.const {at}) (i32.load (i32.const {RET_PTR})) (i32.load (i32.const {RET_LEN})))
    (drop (call $log (i32.const 2) (i32.const {SCRATCH})
      (i32.add (i32.const {rh_len}) (i32.load (i32.const {RET_LEN})))))
    {strip}
    (i32.const 0)",
        rh_ptr = rh.ptr,
        rh_len = rh.len,
        at = SCRATCH + rh.len,
    );
    w.on("response_headers", &headers)
        .on(
            "response_body",
            &format!(
                "(call $rec_reset) (call $rec (local.get $size)) (call $rec (local.get $eos))
    (call $emit_log {rb}) (i32.const 0)"
            ),
        )
        .on("log", &format!("(drop (call $log (i32.const 2) {log}))"))
}

/// A filter that holds the whole response body (`StopIterationAndBuffer` until the end) and
/// logs `rec rb=<size>,<end_of_stream>` for each body callback.
pub fn buffering() -> Wat {
    let mut w = Wat::new();
    let rb = w.data(b"rec rb");
    w.on(
        "response_body",
        &format!(
            "(call $rec_reset) (call $rec (local.get $size)) (call $rec (local.get $eos))
    (call $emit_log {rb})
    (if (result i32) (local.get $eos) (then (i32.const 0)) (else (i32.const 1)))"
        ),
    )
}

/// The `rec ...` records a filter logged so far, in order (`rh=200`, `rb=10,0`, `log`).
pub fn recorded(proxy: &Proxy) -> Vec<String> {
    proxy
        .log()
        .lines()
        .filter_map(|l| {
            let rest = l.split_once(" wasm: rec ")?.1;
            Some(rest.split_whitespace().next()?.to_string())
        })
        .collect()
}

/// Whether a recorder saw a body callback with `end_of_stream` set.
pub fn saw_body_end(lines: &[String]) -> bool {
    lines
        .iter()
        .any(|l| l.starts_with("rb=") && l.ends_with(",1"))
}

/// Waits up to 5 s for the recorder's `rec log` line count to reach `n`.
pub async fn wait_logged(proxy: &Proxy, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let lines = recorded(proxy);
        if lines.iter().filter(|l| *l == "log").count() >= n || Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A 200 with `body`, framed by content-length.
pub fn ok_response(body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// The proxy is alive and nothing in it panicked.
pub fn assert_alive(proxy: &mut Proxy) {
    assert!(proxy.is_alive(), "the proxy died:\n{}", proxy.log());
    let log = proxy.log();
    assert!(!log.contains("panicked"), "a panic in the proxy:\n{log}");
}
