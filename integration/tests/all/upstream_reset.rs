//! C-3 and C-4: the upstream resets (or closes) the connection in the middle of the response
//! head, or in the middle of the body after the head went out. The first gets 502; the second
//! aborts the client connection: never a complete-looking response (no terminating chunk, no
//! reuse of the client connection), and no body callback with a false end of stream.

use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::upstream_support::{
    Scripted, assert_alive, get, get_once, read_head, recorder, reset, saw_body_end, start_proxy,
    wait_logged,
};

#[tokio::test(flavor = "multi_thread")]
async fn a_reset_in_the_response_head_gives_502() {
    // Connection 2k answers with a cut head (reset or FIN by the path); 2k+1 answers whole.
    let up = Scripted::start(|conn, mut s| async move {
        let Some(head) = read_head(&mut s).await else {
            return;
        };
        if conn % 2 == 1 {
            // `connection: close`, so the proxy keeps no connection for the next case.
            let whole = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nwhole";
            let _ = s.write_all(whole).await;
            return;
        }
        let partial: &[u8] = if head.contains("/status-line") {
            b"HTTP/1.1 200 O"
        } else {
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-len"
        };
        let _ = s.write_all(partial).await;
        let _ = s.flush().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        if head.contains("/fin") {
            drop(s);
        } else {
            reset(s);
        }
    })
    .await;
    let rec = recorder(false);
    let (mut proxy, _dir) = start_proxy(&up.endpoint(), &[], "", &[("rec", &rec)]);
    let cases = ["/reset", "/fin", "/status-line", "/rec/reset", "/rec/fin"];
    for path in cases {
        let got = get(&proxy, path, Duration::from_secs(5)).await;
        assert_eq!(got.status(), 502, "{path}: {}", got.text());
        assert!(got.closed, "{path}");
        assert!(
            got.elapsed < Duration::from_secs(3),
            "{path}: {:?}",
            got.elapsed
        );
        // A new connection, answered whole: the broken one was not kept.
        let got = get_once(&proxy, path).await;
        assert_eq!(got.status(), 200, "{path} again: {}", got.text());
        assert_eq!(got.body(), b"whole");
    }
    assert_eq!(
        up.connections(),
        2 * cases.len(),
        "one connection per request"
    );
    let lines = wait_logged(&proxy, 4).await;
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("rh="))
            .collect::<Vec<_>>(),
        ["rh=200", "rh=200"],
        "response callbacks only for the whole responses: {lines:?}"
    );
    assert_alive(&mut proxy);
}

/// One C-4 case: how the upstream frames its body, and the route (filter) it goes through.
struct Cut {
    path: &'static str,
    /// The upstream sends `transfer-encoding: chunked` instead of a content-length.
    chunked: bool,
    /// The client sees a chunked body (the upstream's, or the proxy's framing after a filter
    /// removed the length).
    chunked_downstream: bool,
    /// FIN instead of a reset.
    fin: bool,
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reset_in_the_body_aborts_the_client_connection() {
    const LENGTH: usize = 1 << 20;
    const SENT: usize = 10 << 10;
    let up = Scripted::start(|_, mut s| async move {
        let Some(head) = read_head(&mut s).await else {
            return;
        };
        let chunk = vec![b'a'; SENT];
        let wire = if head.contains("chunked") {
            let mut w = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
            w.extend_from_slice(format!("{:x}\r\n", LENGTH).as_bytes());
            w.extend_from_slice(&chunk);
            w
        } else {
            let mut w = format!("HTTP/1.1 200 OK\r\ncontent-length: {LENGTH}\r\n\r\n").into_bytes();
            w.extend_from_slice(&chunk);
            w
        };
        let _ = s.write_all(&wire).await;
        let _ = s.flush().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        if head.contains("fin") {
            drop(s);
        } else {
            reset(s);
        }
    })
    .await;
    let rec = recorder(false);
    let strip = recorder(true);
    let (mut proxy, _dir) =
        start_proxy(&up.endpoint(), &[], "", &[("rec", &rec), ("strip", &strip)]);
    let cases = [
        Cut {
            path: "/length",
            chunked: false,
            chunked_downstream: false,
            fin: false,
        },
        Cut {
            path: "/length-fin",
            chunked: false,
            chunked_downstream: false,
            fin: true,
        },
        Cut {
            path: "/chunked",
            chunked: true,
            chunked_downstream: true,
            fin: false,
        },
        Cut {
            path: "/chunked-fin",
            chunked: true,
            chunked_downstream: true,
            fin: true,
        },
        Cut {
            path: "/rec/length",
            chunked: false,
            chunked_downstream: false,
            fin: false,
        },
        Cut {
            path: "/rec/chunked-fin",
            chunked: true,
            chunked_downstream: true,
            fin: true,
        },
        Cut {
            path: "/strip/length",
            chunked: false,
            chunked_downstream: true,
            fin: false,
        },
        Cut {
            path: "/strip/length-fin",
            chunked: false,
            chunked_downstream: true,
            fin: true,
        },
    ];
    for case in &cases {
        let path = case.path;
        assert_eq!(path.contains("chunked"), case.chunked);
        assert_eq!(path.contains("fin"), case.fin);
        let got = get(&proxy, path, Duration::from_secs(10)).await;
        let head = String::from_utf8_lossy(&got.bytes[..got.bytes.len().min(300)]).into_owned();
        assert_eq!(got.status(), 200, "{path}: {head}");
        assert!(got.closed, "{path}: the client connection is closed");
        assert!(
            got.elapsed < Duration::from_secs(5),
            "{path}: {:?}",
            got.elapsed
        );
        let body = got.body();
        assert!(!body.is_empty(), "{path}: some of the body went out");
        if case.chunked_downstream {
            let lower = head.to_ascii_lowercase();
            assert!(
                lower.contains("transfer-encoding: chunked"),
                "{path}: {head}"
            );
            assert!(
                !body.ends_with(b"0\r\n\r\n"),
                "{path}: a terminating chunk made the cut body look whole"
            );
        } else {
            let lower = head.to_ascii_lowercase();
            assert!(
                lower.contains(&format!("content-length: {LENGTH}")),
                "{path}: {head}"
            );
            assert!(body.len() < LENGTH, "{path}: {} bytes", body.len());
        }
    }
    let lines = wait_logged(&proxy, 4).await;
    assert!(lines.iter().any(|l| l.starts_with("rb=")), "{lines:?}");
    assert!(!saw_body_end(&lines), "a false end of stream: {lines:?}");
    assert_alive(&mut proxy);
}

/// Reads one response with a content-length from a keep-alive connection: (status, body).
async fn read_response(stream: &mut tokio::net::TcpStream) -> (u16, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let head = read_head(stream).await.unwrap_or_default();
    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let length = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0; length];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut body)).await;
    assert!(matches!(read, Ok(Ok(_))), "a whole body: {head}");
    (status, body)
}

/// A reset on a reused upstream connection: Pingora retries on a new one, unless a filter
/// already saw the request body (a retry would replay it through the filter a second time).
#[tokio::test(flavor = "multi_thread")]
async fn a_reset_reused_connection_is_retried_unless_a_filter_saw_the_body() {
    // `/warm` is always answered; any other request is answered on a fresh connection and
    // reset on one that already served a request.
    let up = Scripted::start(|_, mut s| async move {
        use tokio::io::AsyncReadExt;
        let mut served = 0;
        while let Some(head) = read_head(&mut s).await {
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: ")?.trim().parse().ok())
                .unwrap_or(0usize);
            let mut body = vec![0; length];
            if s.read_exact(&mut body).await.is_err() {
                return;
            }
            if !head.contains("/warm") && served > 0 {
                reset(s);
                return;
            }
            served += 1;
            let reply = if head.contains("/warm") {
                "warm"
            } else {
                "retried"
            };
            let wire = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{reply}",
                reply.len()
            );
            let _ = s.write_all(wire.as_bytes()).await;
        }
    })
    .await;
    let rec = recorder(false);
    let (mut proxy, _dir) = start_proxy(&up.endpoint(), &[], "", &[("rec", &rec)]);
    // (method, path, body, expected status)
    let cases = [
        ("GET", "/plain", "", 200),
        ("PUT", "/plain", "hello", 200),
        ("GET", "/rec/get", "", 200),
        ("PUT", "/rec/put", "hello", 502),
    ];
    for (method, path, body, expected) in cases {
        // One client connection, so that the same worker's pooled connection is reused.
        let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        let warm = "GET /warm HTTP/1.1\r\nHost: x\r\n\r\n";
        stream.write_all(warm.as_bytes()).await.unwrap();
        assert_eq!(read_response(&mut stream).await, (200, b"warm".to_vec()));
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let (status, reply) = read_response(&mut stream).await;
        assert_eq!(
            status,
            expected,
            "{method} {path}: {}",
            String::from_utf8_lossy(&reply)
        );
        if expected == 200 {
            assert_eq!(reply, b"retried", "{method} {path}");
        }
    }
    let lines = wait_logged(&proxy, 2).await;
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("rh=")).count(),
        1,
        "the filter saw one response: {lines:?}"
    );
    assert_alive(&mut proxy);
}
