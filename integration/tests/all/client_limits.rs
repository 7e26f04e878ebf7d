//! Client limits (`client:`; reliability catalogue B-12, B-13): oversize headers, slowloris
//! headers and bodies, and the keep-alive idle time, through the real proxy.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::client_support::{ClientEnv, exchange, has_header, read_until_close, statuses};

/// Sends `request` while reading the answer (a proxy that refuses early may stop reading, and
/// the write then fails); the statuses seen and whether the connection ended within 10 s.
async fn oversize(addr: std::net::SocketAddr, request: Vec<u8>, chunk: usize) -> (Vec<u16>, bool) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        for part in request.chunks(chunk) {
            if wr.write_all(part).await.is_err() {
                return;
            }
        }
        // Keep the write side open: a closed one would end the request for other reasons.
        tokio::time::sleep(Duration::from_secs(10)).await;
    });
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let closed = loop {
        match tokio::time::timeout_at(deadline, rd.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    writer.abort();
    (statuses(&out), closed)
}

fn with_headers(path: &str, extra: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n").into_bytes()
}

/// B-12: with the default limits (64 KiB of header, 100 fields), a 2 MiB header block (in one
/// write and in many), a 1 MiB field, a 64 KiB URI and 101 fields are refused with 431 (or,
/// for a block so large that the client is still writing when the proxy closes, a reset
/// without any other status); 257 fields hit Pingora's parser cap (400). Nothing reaches the
/// upstream, memory stays bounded, and requests just under the limits pass whole.
#[tokio::test(flavor = "multi_thread")]
async fn oversize_headers_stop_at_the_configured_limits() {
    let mut env = ClientEnv::start(1, "", None).await;
    let baseline = env.proxy.rss_kib();
    let big = |n: usize| format!("X-Big: {}\r\n", "a".repeat(n));
    let fields = |n: usize| (0..n).map(|i| format!("X-F{i}: v\r\n")).collect::<String>();
    let cases: Vec<(&str, Vec<u8>, usize, &[u16])> = vec![
        (
            "2 MiB block, one write",
            with_headers("/c0/a", &big(2 << 20)),
            4 << 20,
            &[431],
        ),
        (
            "2 MiB block, 1 KiB writes",
            with_headers("/c0/b", &big(2 << 20)),
            1024,
            &[431],
        ),
        (
            "1 MiB field",
            with_headers("/c0/c", &big(1 << 20)),
            64 << 10,
            &[431],
        ),
        (
            "64 KiB URI",
            with_headers(&format!("/c0/{}", "u".repeat(64 << 10)), ""),
            4 << 20,
            &[431],
        ),
        (
            "101 fields",
            with_headers("/c0/e", &fields(100)),
            4 << 20,
            &[431],
        ),
        (
            "257 fields",
            with_headers("/c0/f", &fields(256)),
            4 << 20,
            &[400],
        ),
    ];
    for (what, request, chunk, want) in cases {
        let (got, closed) = oversize(env.addr(), request, chunk).await;
        assert!(closed, "{what}: the connection stays open");
        assert!(
            got.len() <= 1 && got.iter().all(|s| want.contains(s)),
            "{what}: want {want:?} (or a reset), got {got:?}"
        );
    }
    // One of them at least must have been answered (not only reset).
    let (got, _) = oversize(env.addr(), with_headers("/c0/g", &fields(150)), 1 << 20).await;
    assert_eq!(got, [431], "150 fields");
    assert!(
        env.captures[0].requests().is_empty(),
        "nothing went upstream"
    );
    assert_eq!(env.upstream_bytes(0), b"", "not a byte went upstream");

    // Just under the limits: 99 fields besides Host, a 60 KiB field.
    let request = with_headers("/c0/ok1", &fields(99));
    let (raw, _) = exchange(env.addr(), &request, Duration::from_secs(2)).await;
    assert_eq!(statuses(&raw), [200], "100 fields pass");
    let request = with_headers("/c0/ok2", &big(60 << 10));
    let (raw, _) = exchange(env.addr(), &request, Duration::from_secs(2)).await;
    assert_eq!(statuses(&raw), [200], "a 60 KiB field passes");
    let seen = env.captures[0].requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].header("x-big").map(str::len), Some(60 << 10));
    let rss = env.proxy.rss_kib();
    assert!(
        rss < baseline + 64 * 1024,
        "RSS {rss} KiB against a baseline of {baseline} KiB"
    );
    env.assert_healthy().await;
}

const SLOW: &str = "  header_timeout_ms: 300\n  keepalive_timeout_ms: 1000\n  body_timeout_ms: 500\n  body_min_rate: 100\n";

/// What happened to one slow client.
#[derive(Debug)]
struct Cut {
    after: Duration,
    statuses: Vec<u16>,
}

/// Sends `head` and then `drip` one byte every `every`, until the proxy closes the connection
/// or `limit` passes; when and how it was cut.
async fn drip(
    addr: std::net::SocketAddr,
    head: &[u8],
    drip: u8,
    every: Duration,
    limit: Duration,
) -> Option<Cut> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).await.ok()?;
    stream.write_all(head).await.ok()?;
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    while started.elapsed() < limit {
        if stream.write_all(&[drip]).await.is_err() {
            break;
        }
        match tokio::time::timeout(every, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    // Whatever else the proxy sends before it closes.
    let (rest, closed) = read_until_close(&mut stream, Duration::from_millis(500)).await;
    out.extend_from_slice(&rest);
    closed.then(|| Cut {
        after: started.elapsed(),
        statuses: statuses(&out),
    })
}

/// B-13: 50 connections each sending a header one byte every 50 ms, and 10 that send nothing,
/// against a 300 ms header deadline: each is cut after roughly the deadline (not per read: the
/// bytes keep coming) with a 408 (or quietly, for those that sent nothing); a benign request
/// meanwhile gets 200, and a request shorter than the HTTP/2 preface is answered (Pingora's
/// own h2c check would wait for 24 bytes forever). The file descriptors come back.
#[tokio::test(flavor = "multi_thread")]
async fn slowloris_headers_are_cut_at_the_total_deadline() {
    let mut env = ClientEnv::start(1, SLOW, None).await;
    let addr = env.addr();
    let fds = env.proxy.open_fds();
    let mut dripping = Vec::new();
    for i in 0..50 {
        let head = format!("GET /c0/slow{i} HTTP/1.1\r\nHost: t\r\nX-A: ").into_bytes();
        dripping.push(tokio::spawn(async move {
            drip(
                addr,
                &head,
                b'a',
                Duration::from_millis(50),
                Duration::from_secs(10),
            )
            .await
        }));
    }
    let mut silent = Vec::new();
    for _ in 0..10 {
        silent.push(tokio::spawn(async move {
            let started = Instant::now();
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            let (raw, closed) = read_until_close(&mut stream, Duration::from_secs(10)).await;
            (started.elapsed(), raw, closed)
        }));
    }
    // Benign requests while they hang on.
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    for i in 0..5 {
        let resp = http
            .get(env.proxy.url(&format!("/c0/benign{i}")))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .expect("a benign request during the attack");
        assert_eq!(resp.status(), 200);
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    // Shorter than the 24-byte HTTP/2 preface, and complete.
    let (raw, _) = exchange(addr, b"GET / HTTP/1.0\r\n\r\n", Duration::from_secs(2)).await;
    assert_eq!(
        statuses(&raw),
        [200],
        "a request shorter than the h2 preface"
    );

    for task in dripping {
        let cut = task
            .await
            .expect("task")
            .expect("the proxy cut the connection");
        assert!(
            cut.after >= Duration::from_millis(250) && cut.after < Duration::from_secs(3),
            "cut after {:?}, for a 300 ms deadline",
            cut.after
        );
        assert_eq!(cut.statuses, [408], "{cut:?}");
    }
    for task in silent {
        let (after, raw, closed) = task.await.expect("task");
        assert!(closed, "a silent connection stays open");
        assert!(raw.is_empty(), "a silent connection gets {raw:?}");
        assert!(
            after >= Duration::from_millis(250) && after < Duration::from_secs(3),
            "a silent connection cut after {after:?}"
        );
    }
    let seen: Vec<String> = env.captures[0]
        .requests()
        .into_iter()
        .map(|r| r.line)
        .collect();
    assert!(
        seen.iter().all(|l| !l.contains("/slow")),
        "a slow header went upstream: {seen:?}"
    );
    let back = {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let now = env.proxy.open_fds();
            if now <= fds + 4 || Instant::now() > deadline {
                break now;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    assert!(back <= fds + 4, "open fds {back}, {fds} before the attack");
    env.assert_healthy().await;
}

/// B-13 (bodies): a body sent one byte every 100 ms is under the 100 B/s minimum and is cut
/// (408) once the 500 ms grace has passed; a body that stops is cut by the 500 ms read timeout
/// (408). The upstream never gets a whole request.
#[tokio::test(flavor = "multi_thread")]
async fn slow_and_stalled_bodies_get_408() {
    let mut env = ClientEnv::start(1, SLOW, None).await;
    let addr = env.addr();
    let head = b"POST /c0/slowbody HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n";
    let cut = drip(
        addr,
        head,
        b'b',
        Duration::from_millis(100),
        Duration::from_secs(10),
    )
    .await
    .expect("the proxy cut the slow body");
    assert_eq!(cut.statuses, [408], "{cut:?}");
    assert!(
        cut.after >= Duration::from_millis(400) && cut.after < Duration::from_secs(4),
        "slow body cut after {:?}",
        cut.after
    );

    let started = Instant::now();
    let (raw, closed) = exchange(
        addr,
        b"POST /c0/stalled HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\nonly this",
        Duration::from_secs(5),
    )
    .await;
    let after = started.elapsed();
    assert_eq!(statuses(&raw), [408], "{:?}", String::from_utf8_lossy(&raw));
    assert!(closed);
    assert!(
        after >= Duration::from_millis(400) && after < Duration::from_secs(4),
        "stalled body cut after {after:?}"
    );
    assert!(
        env.captures[0].requests().is_empty(),
        "a whole request went upstream"
    );
    env.assert_healthy().await;
}

/// Keep-alive: an idle connection closes after `keepalive_timeout_ms` (1 s here), and the
/// header deadline of a later request counts from its first byte, not from the end of the
/// previous one. With `keepalive_timeout_ms: 0` every response says `Connection: close`.
#[tokio::test(flavor = "multi_thread")]
async fn idle_connections_close_after_the_keepalive_time() {
    let env = ClientEnv::start(1, SLOW, None).await;
    let mut stream = TcpStream::connect(env.addr()).await.expect("connect");
    stream
        .write_all(b"GET /c0/ka1 HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .expect("write");
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf).await.expect("read");
    assert_eq!(statuses(&buf[..n]), [200]);
    let started = Instant::now();
    let (rest, closed) = read_until_close(&mut stream, Duration::from_secs(5)).await;
    assert!(
        closed && rest.is_empty(),
        "the idle connection was not closed"
    );
    let idle = started.elapsed();
    assert!(
        idle >= Duration::from_millis(800) && idle < Duration::from_secs(3),
        "closed after {idle:?} idle, for 1 s"
    );

    // A second request that starts 600 ms into the idle time (past the 300 ms header deadline,
    // counted wrongly from the end of the first) still gets its own 300 ms.
    let mut stream = TcpStream::connect(env.addr()).await.expect("connect");
    stream
        .write_all(b"GET /c0/ka2 HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .expect("write");
    let n = stream.read(&mut buf).await.expect("read");
    assert_eq!(statuses(&buf[..n]), [200]);
    tokio::time::sleep(Duration::from_millis(600)).await;
    stream
        .write_all(b"GET /c0/ka3 HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .expect("write");
    let n = stream.read(&mut buf).await.expect("read");
    assert_eq!(statuses(&buf[..n]), [200], "the second request");
    assert_eq!(env.captures[0].requests().len(), 3);

    let closing = ClientEnv::start(1, "  keepalive_timeout_ms: 0\n", None).await;
    let (raw, closed) = exchange(
        closing.addr(),
        b"GET /c0/ka4 HTTP/1.1\r\nHost: t\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(statuses(&raw), [200]);
    assert!(closed && has_header(&raw, "connection", "close"));
}
