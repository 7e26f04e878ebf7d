//! HTTP clients for tests: reqwest for ordinary requests, and raw TCP for exact bytes.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A reqwest client that never uses a proxy from the environment and gives up after 10 s.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("reqwest client")
}

/// A response's values of one header, in order.
pub fn header_all(resp: &reqwest::Response, name: &str) -> Vec<String> {
    resp.headers()
        .get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect()
}

/// Sends raw bytes and reads until the server closes or `timeout` passes.
pub async fn raw(addr: std::net::SocketAddr, request: &[u8], timeout: Duration) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(timeout, stream.read_to_end(&mut out)).await;
    out
}
