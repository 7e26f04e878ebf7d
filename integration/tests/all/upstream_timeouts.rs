//! C-2: an upstream that accepts and never answers gets 504 at the configured read timeout
//! (Pingora's default is no timeout at all); a connection that cannot be established gets 504
//! at the connect timeout; `response_timeout_ms` bounds the whole response, its head (504) and
//! its body (the response is cut).

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

use crate::upstream_support::{
    Scripted, assert_alive, closed_by_peer, get, read_head, recorder, start_proxy, wait_logged,
};

/// Timing bounds: the timeouts are 300 ms; a loaded 2-core box may be slow to notice.
const MIN: Duration = Duration::from_millis(250);
const MAX: Duration = Duration::from_secs(4);

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_upstream_gives_504_at_the_read_timeout() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let up = Scripted::start(move |_, mut s| {
        let tx = tx.clone();
        async move {
            if read_head(&mut s).await.is_some() {
                // Never answers; reports whether the proxy gave up on the connection.
                let _ = tx.send(closed_by_peer(&mut s, Duration::from_secs(5)).await);
            }
        }
    })
    .await;
    let rec = recorder(false);
    let (mut proxy, _dir) = start_proxy(
        &up.endpoint(),
        &[("read_timeout_ms", 300)],
        "",
        &[("rec", &rec)],
    );
    for path in ["/plain", "/rec/filtered"] {
        let got = get(&proxy, path, Duration::from_secs(10)).await;
        assert_eq!(got.status(), 504, "{path}: {}", got.text());
        assert!(
            (MIN..MAX).contains(&got.elapsed),
            "{path}: 504 after {:?}",
            got.elapsed
        );
        assert!(got.closed);
        assert_eq!(
            rx.recv().await,
            Some(true),
            "the upstream connection is closed"
        );
    }
    let lines = wait_logged(&proxy, 1).await;
    assert_eq!(lines, ["log"], "no response callback without a response");
    assert_eq!(up.connections(), 2, "a timed-out request is not retried");
    assert_alive(&mut proxy);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_that_cannot_be_reached_gives_504_at_the_connect_timeout() {
    // A listener that never accepts, with the smallest backlog, filled by connections of our
    // own: the kernel then drops the proxy's SYNs and its connect hangs.
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind("127.0.0.1:0".parse().unwrap()).expect("bind");
    let listener = socket.listen(0).expect("listen");
    let addr = listener.local_addr().expect("addr");
    let mut fillers = Vec::new();
    for _ in 0..8 {
        let connect = tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr));
        if let Ok(Ok(s)) = connect.await {
            fillers.push(s);
        }
    }
    let (mut proxy, _dir) = start_proxy(&addr.to_string(), &[("connect_timeout_ms", 300)], "", &[]);
    let got = get(&proxy, "/plain", Duration::from_secs(10)).await;
    assert_eq!(got.status(), 504, "{}", got.text());
    assert!(
        (MIN..MAX).contains(&got.elapsed),
        "504 after {:?}",
        got.elapsed
    );
    assert_alive(&mut proxy);
    drop(listener);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_response_timeout_bounds_the_head_and_the_body() {
    // `/head`: the head comes after 3 s. `/drip`: a byte every 100 ms of 100 (under the read
    // timeout, so only the response timeout stops it).
    let up = Scripted::start(|_, mut s| async move {
        let Some(head) = read_head(&mut s).await else {
            return;
        };
        if head.contains("/head") {
            tokio::time::sleep(Duration::from_secs(3)).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .await;
        } else {
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n")
                .await;
            for _ in 0..100 {
                if s.write_all(b"x").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    })
    .await;
    let rec = recorder(false);
    let (mut proxy, _dir) = start_proxy(
        &up.endpoint(),
        &[("read_timeout_ms", 2000), ("response_timeout_ms", 600)],
        "",
        &[("rec", &rec)],
    );
    let got = get(&proxy, "/rec/head", Duration::from_secs(10)).await;
    assert_eq!(got.status(), 504, "{}", got.text());
    assert!(
        got.elapsed < Duration::from_millis(2500),
        "after {:?}",
        got.elapsed
    );

    for path in ["/drip", "/rec/drip"] {
        let got = get(&proxy, path, Duration::from_secs(10)).await;
        assert_eq!(got.status(), 200, "{path}: {}", got.text());
        assert!(got.closed, "{path}: the response is cut");
        assert!(got.body().len() < 100, "{path}: {} bytes", got.body().len());
        assert!(got.elapsed < MAX, "{path}: cut after {:?}", got.elapsed);
    }
    let lines = wait_logged(&proxy, 2).await;
    assert!(!crate::upstream_support::saw_body_end(&lines), "{lines:?}");
    assert_alive(&mut proxy);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_that_stops_reading_the_request_gives_504_at_the_write_timeout() {
    // Reads the head, then nothing: the request body fills the socket buffers. After the write
    // timeout Pingora still reads the upstream for an early answer (a 413, say), up to the
    // read timeout.
    let up = Scripted::start(|_, mut s| async move {
        if read_head(&mut s).await.is_some() {
            let _ = closed_by_peer_without_reading(&mut s).await;
        }
    })
    .await;
    let (mut proxy, _dir) = start_proxy(
        &up.endpoint(),
        &[("write_timeout_ms", 300), ("read_timeout_ms", 1000)],
        "",
        &[],
    );
    const LENGTH: usize = 64 << 20;
    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    let head = format!("POST /upload HTTP/1.1\r\nHost: x\r\ncontent-length: {LENGTH}\r\n\r\n");
    stream.write_all(head.as_bytes()).await.expect("head");
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        let chunk = vec![b'u'; 1 << 20];
        for _ in 0..LENGTH >> 20 {
            if write.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    let started = std::time::Instant::now();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::io::AsyncReadExt::read_to_end(&mut read, &mut got),
    )
    .await;
    let text = String::from_utf8_lossy(&got);
    let log = proxy.log();
    let tail = &log[log.len().saturating_sub(3000)..];
    assert!(text.starts_with("HTTP/1.1 504"), "{text}\n{tail}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "after {:?}",
        started.elapsed()
    );
    writer.abort();
    assert_alive(&mut proxy);
}

/// Waits (up to 20 s) without reading until the peer closes; true if it did.
async fn closed_by_peer_without_reading(s: &mut TcpStream) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        let mut probe = [0u8; 1];
        // A peek of one byte reads nothing and sees a reset; a full buffer is not a close.
        match tokio::time::timeout(Duration::from_millis(100), s.peek(&mut probe)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    false
}
