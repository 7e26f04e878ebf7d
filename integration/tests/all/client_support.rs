//! What the client-input tests (catalogue B-1 to B-16) share: a proxy with one capture
//! upstream per case (so each case's exact upstream bytes can be compared), a `client:`
//! section, an optional testkit filter on `/kit/`, and raw HTTP/1 and HTTP/2 helpers.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wasmgate_integration::capture::Capture;
use wasmgate_integration::filter;
use wasmgate_integration::proxy::Proxy;

/// A proxy in front of `cases` capture upstreams: requests for `/cN/...` go to capture `N`,
/// `/kit/...` to capture 0 through the testkit filter (when a script is given), anything else
/// to capture 0.
#[derive(Debug)]
pub struct ClientEnv {
    pub proxy: Proxy,
    pub captures: Vec<Capture>,
}

impl ClientEnv {
    /// `client` is the body of the `client:` section (lines indented by two spaces), or empty.
    pub async fn start(cases: usize, client: &str, kit: Option<serde_json::Value>) -> ClientEnv {
        let mut captures = Vec::new();
        for _ in 0..cases.max(1) {
            captures.push(Capture::start().await);
        }
        let mut text = String::from("listen: \"{listen}\"\nadmin: \"{admin}\"\nthreads: 2\n");
        if !client.is_empty() {
            let _ = writeln!(text, "client:\n{client}");
        }
        text.push_str("upstreams:\n");
        for (i, c) in captures.iter().enumerate() {
            let _ = writeln!(text, "  c{i}:\n    endpoints: [\"{}\"]", c.endpoint());
        }
        if let Some(script) = &kit {
            let _ = writeln!(
                text,
                "filters:\n  - name: kit\n    wasm: {}\n    configuration: '{}'",
                filter("testkit"),
                script.to_string().replace('\'', "''")
            );
        }
        // These tests compare the exact bytes forwarded: no forwarding headers.
        text.push_str("forwarding: {x_forwarded: off, request_id: {generate: false}}\n");
        text.push_str("routes:\n");
        if kit.is_some() {
            text.push_str(
                "  - match: {path_prefix: /kit/}\n    upstream: c0\n    filters: [kit]\n",
            );
        }
        for i in 0..captures.len() {
            let _ = writeln!(
                text,
                "  - match: {{path_prefix: /c{i}/}}\n    upstream: c{i}\n    filters: []"
            );
        }
        text.push_str("  - upstream: c0\n    filters: []\n");
        let proxy = Proxy::start_with(&text, &["--no-watch"]);
        ClientEnv { proxy, captures }
    }

    pub fn addr(&self) -> SocketAddr {
        self.proxy.addr
    }

    /// Every byte capture `i` received, over all its connections in accept order.
    pub fn upstream_bytes(&self, i: usize) -> Vec<u8> {
        (0..self.captures[i].connections())
            .flat_map(|conn| self.captures[i].raw(conn))
            .collect()
    }

    /// The catalogue's "stays healthy" check: the process lives, a benign request gets 200
    /// within 1 s, no capture upstream saw a framing error or a request for `/smuggled`, and
    /// nothing panicked.
    pub async fn assert_healthy(&mut self) {
        assert!(
            self.proxy.is_alive(),
            "the proxy died:\n{}",
            self.proxy.log()
        );
        let started = Instant::now();
        let resp = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(1))
            .build()
            .expect("client")
            .get(self.proxy.url("/benign"))
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "a benign request failed after {:?}: {e}\n{}",
                    started.elapsed(),
                    self.proxy.log()
                )
            });
        assert_eq!(resp.status(), 200, "a benign request");
        for (i, c) in self.captures.iter().enumerate() {
            assert!(c.errors().is_empty(), "capture {i}: {:?}", c.errors());
            for r in c.requests() {
                assert!(
                    !r.line.contains("smuggled"),
                    "capture {i} got a smuggled request: {r:?}"
                );
            }
        }
        let log = self.proxy.log();
        assert!(!log.contains("panicked"), "a panic in the proxy:\n{log}");
    }
}

/// Sends `request` on a new connection and reads until the proxy closes or `timeout` passes;
/// the bytes and whether the proxy closed.
pub async fn exchange(addr: SocketAddr, request: &[u8], timeout: Duration) -> (Vec<u8>, bool) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    read_until_close(&mut stream, timeout).await
}

/// Reads until the peer closes (true) or `timeout` passes (false).
pub async fn read_until_close(stream: &mut TcpStream, timeout: Duration) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut chunk = [0u8; 16384];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&chunk[..n]),
            Err(_) => return (out, false),
        }
    }
}

/// The status codes of every HTTP/1.x response in `raw`, in order.
pub fn statuses(raw: &[u8]) -> Vec<u16> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(at) = find(&raw[i..], b"HTTP/1.") {
        let start = i + at;
        if let Some(code) = raw
            .get(start + 9..start + 12)
            .and_then(|c| std::str::from_utf8(c).ok())
            .and_then(|c| c.parse().ok())
        {
            out.push(code);
        }
        i = start + 8;
    }
    out
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Whether `raw` (one or more responses) has a header line `name: value`, case-insensitively.
pub fn has_header(raw: &[u8], name: &str, value: &str) -> bool {
    let text = String::from_utf8_lossy(raw).to_ascii_lowercase();
    text.contains(&format!("\r\n{}: {}\r\n", name, value).to_ascii_lowercase())
}
