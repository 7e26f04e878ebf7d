//! Upgrades, bytes that are not UTF-8, and pipelining behind a local reply (reliability
//! catalogue B-7, B-8, B-11, B-14), through a testkit filter that marks every request it sees
//! (`x-filtered: yes`), so a request that reached the upstream past the filters shows.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use wasmgate_integration::filter;
use wasmgate_integration::proxy::Proxy;

use crate::client_support::{ClientEnv, exchange, find, read_until_close, statuses};

fn kit() -> serde_json::Value {
    json!({
        "on_request_headers": [
            {"op": "add", "map": "request", "key": "x-filtered", "value": "yes"},
            {"op": "get", "map": "request", "key": "x-echo", "to": "x-echoed"},
            {"when": {"request_header": "x-deny"},
             "op": "local_reply", "status": 403, "body": "denied\n"}
        ]
    })
}

/// B-7: an `Upgrade: websocket` request the upstream answers with 200 (not 101), with a second
/// request pipelined behind it: the second is never tunnelled raw; whatever of it reaches the
/// upstream went through the filter.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_upgrade_never_tunnels_the_next_request() {
    let mut env = ClientEnv::start(1, "", Some(kit())).await;
    let request = b"GET /kit/up HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nGET /kit/second HTTP/1.1\r\nHost: t\r\n\r\n";
    let (raw, _) = exchange(env.addr(), request, Duration::from_secs(2)).await;
    let got = statuses(&raw);
    assert_eq!(
        got.first(),
        Some(&200),
        "{:?}",
        String::from_utf8_lossy(&raw)
    );
    assert!(got.iter().all(|s| *s == 200 || *s == 400), "{got:?}");
    let seen = env.captures[0].requests();
    assert!(!seen.is_empty());
    for r in &seen {
        assert_eq!(
            r.header("x-filtered"),
            Some("yes"),
            "a request reached the upstream past the filter: {r:?}"
        );
    }
    assert!(env.captures[0].errors().is_empty());
    env.assert_healthy().await;
}

/// An upstream that switches to h2c when asked (`101`), and records every byte it gets.
async fn switching_upstream() -> (SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let mut switched = false;
                loop {
                    let n = match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    let text = {
                        let mut all = record.lock().unwrap();
                        all.extend_from_slice(&buf[..n]);
                        String::from_utf8_lossy(&all).to_ascii_lowercase()
                    };
                    if switched || !text.contains("\r\n\r\n") {
                        continue;
                    }
                    let reply: &[u8] = if text.contains("upgrade: h2c") {
                        switched = true;
                        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
                    } else {
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                    };
                    if s.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// B-8: h2c smuggling. `Upgrade: h2c` with `HTTP2-Settings` through a filtered route, to an
/// upstream that would switch: the proxy drops the upgrade (Pingora forwards only WebSocket
/// upgrades), the upstream answers 200, and the HTTP/2 preface the client sends next never
/// reaches it.
#[tokio::test(flavor = "multi_thread")]
async fn h2c_upgrade_is_not_forwarded() {
    let (upstream, seen) = switching_upstream().await;
    let config = format!(
        "listen: \"{{listen}}\"\nadmin: \"{{admin}}\"\nthreads: 2\nupstreams:\n  up:\n    endpoints: [\"{upstream}\"]\nfilters:\n  - name: kit\n    wasm: {}\n    configuration: '{}'\nroutes:\n  - upstream: up\n    filters: [kit]\n",
        filter("testkit"),
        kit()
    );
    let mut proxy = Proxy::start_with(&config, &["--no-watch"]);
    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    stream
        .write_all(b"GET /h2c HTTP/1.1\r\nHost: t\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\nConnection: Upgrade, HTTP2-Settings\r\n\r\n")
        .await
        .expect("write");
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf))
        .await
        .expect("an answer")
        .expect("read");
    assert_eq!(
        statuses(&buf[..n]),
        [200],
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    // What an h2c client sends after a 101.
    let _ = stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await;
    let _ = read_until_close(&mut stream, Duration::from_millis(500)).await;
    let all = seen.lock().unwrap().clone();
    let text = String::from_utf8_lossy(&all).to_ascii_lowercase();
    assert!(
        !text.contains("upgrade: h2c"),
        "the upgrade went upstream: {text:?}"
    );
    assert!(!text.contains("http2-settings:"), "{text:?}");
    assert!(
        find(&all, b"PRI * HTTP/2.0").is_none(),
        "h2 frames went upstream: {text:?}"
    );
    assert!(text.contains("x-filtered: yes"), "{text:?}");
    assert!(proxy.is_alive());
}

/// B-11: bytes that are not UTF-8. In a header value they reach the filter as bytes (it echoes
/// them into another request header) and the upstream unchanged; in the request line Pingora
/// refuses them (400) before any filter runs.
#[tokio::test(flavor = "multi_thread")]
async fn non_utf8_bytes_pass_as_bytes_or_are_refused() {
    let mut env = ClientEnv::start(1, "", Some(kit())).await;
    let (raw, _) = exchange(
        env.addr(),
        b"GET /kit/bytes HTTP/1.1\r\nHost: t\r\nX-Echo: caf\xe9\xff\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(statuses(&raw), [200], "{:?}", String::from_utf8_lossy(&raw));
    let upstream = env.upstream_bytes(0);
    assert!(
        find(&upstream, b"X-Echo: caf\xe9\xff\r\n").is_some(),
        "the upstream got {:?}",
        String::from_utf8_lossy(&upstream)
    );
    // The filter got the bytes (testkit itself makes them lossy UTF-8 before echoing them
    // into a request header).
    assert!(
        find(&upstream, b"x-echoed: caf\xef\xbf\xbd\xef\xbf\xbd\r\n").is_some(),
        "the filter's echo: {:?}",
        String::from_utf8_lossy(&upstream)
    );
    for line in [
        &b"GET /kit/\xff\xfe HTTP/1.1\r\nHost: t\r\n\r\n"[..],
        b"GET /kit/q?x=\xc3\x28 HTTP/1.1\r\nHost: t\r\n\r\n",
    ] {
        let before = env.captures[0].requests().len();
        let (raw, _) = exchange(env.addr(), line, Duration::from_secs(2)).await;
        let got = statuses(&raw);
        assert!(
            got == [400] || got == [200],
            "{:?}: {got:?}",
            String::from_utf8_lossy(line)
        );
        if got == [200] {
            // Passed on: then as the same bytes, through the filter.
            let r = &env.captures[0].requests()[before];
            assert_eq!(r.header("x-filtered"), Some("yes"));
        }
    }
    env.assert_healthy().await;
}

/// B-14: a filter answers (403) a request whose body is still unread, with a request pipelined
/// after that body, and the body itself shaped like a request: the body is drained (or the
/// connection closed), never parsed as a request, and the next request is parsed at the right
/// boundary.
#[tokio::test(flavor = "multi_thread")]
async fn an_early_local_reply_drains_the_body_before_the_next_request() {
    let mut env = ClientEnv::start(2, "", Some(kit())).await;
    let body = "GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n";
    let request = format!(
        "POST /kit/deny HTTP/1.1\r\nHost: t\r\nx-deny: 1\r\nContent-Length: {}\r\n\r\n{body}GET /c1/next HTTP/1.1\r\nHost: t\r\n\r\n",
        body.len()
    );
    let (raw, _) = exchange(env.addr(), request.as_bytes(), Duration::from_secs(2)).await;
    let got = statuses(&raw);
    assert_eq!(
        got.first(),
        Some(&403),
        "{:?}",
        String::from_utf8_lossy(&raw)
    );
    assert!(got == [403] || got == [403, 200], "{got:?}");
    assert!(
        env.captures[0].requests().is_empty(),
        "the denied request went upstream"
    );
    if got == [403, 200] {
        assert_eq!(
            env.upstream_bytes(1),
            b"GET /c1/next HTTP/1.1\r\nHost: t\r\n\r\n",
            "the pipelined request"
        );
    } else {
        assert_eq!(env.upstream_bytes(1), b"");
    }
    env.assert_healthy().await;
}
