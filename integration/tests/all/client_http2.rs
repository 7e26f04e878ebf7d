//! HTTP/2 abuse and conformance (reliability catalogue B-15, B-16) against the h2c listener,
//! with frames written by hand so that the bytes are exactly the attack's.
//!
//! B-16 asks for h2spec or httpwg-cli: neither is packaged for Debian, npm or PyPI (h2spec is a
//! Go binary from GitHub releases; httpwg-cli is a crates.io binary not built here), so a
//! handful of RFC 9113 points are checked directly instead.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::client_support::ClientEnv;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const WINDOW_UPDATE: u8 = 8;
const CONTINUATION: u8 = 9;
const END_STREAM: u8 = 1;
const ACK: u8 = 1;
const END_HEADERS: u8 = 4;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A literal header field without indexing, new name (HPACK §6.2.2).
fn literal(name: &str, value: &str) -> Vec<u8> {
    let mut out = vec![0x00, name.len() as u8];
    out.extend_from_slice(name.as_bytes());
    out.push(value.len() as u8);
    out.extend_from_slice(value.as_bytes());
    out
}

/// The header block of a request: `:method` GET or POST, `:scheme` http, the path, authority.
fn request_block(post: bool, path: &str) -> Vec<u8> {
    let mut out = vec![if post { 0x83 } else { 0x82 }, 0x86];
    // :path, literal without indexing, indexed name 4.
    out.push(0x04);
    out.push(path.len() as u8);
    out.extend_from_slice(path.as_bytes());
    // :authority, literal without indexing, indexed name 1.
    out.extend_from_slice(&[0x01, 0x01, b't']);
    out
}

/// A new h2c connection that has sent its preface and an empty SETTINGS.
async fn connect(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &[]));
    s.write_all(&hello).await.expect("preface");
    s
}

/// One frame as received: type, flags, stream, payload.
type Frame = (u8, u8, u32, Vec<u8>);

/// Reads frames until the server closes (true) or `timeout` passes (false).
async fn frames(s: &mut TcpStream, timeout: Duration) -> (Vec<Frame>, bool) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 65536];
    let deadline = tokio::time::Instant::now() + timeout;
    let closed = loop {
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => break false,
        }
    };
    let mut out = Vec::new();
    let mut at = 0;
    while buf.len() >= at + 9 {
        let len = (usize::from(buf[at]) << 16)
            | (usize::from(buf[at + 1]) << 8)
            | usize::from(buf[at + 2]);
        if buf.len() < at + 9 + len {
            break;
        }
        let stream =
            u32::from_be_bytes([buf[at + 5], buf[at + 6], buf[at + 7], buf[at + 8]]) & 0x7fff_ffff;
        out.push((
            buf[at + 3],
            buf[at + 4],
            stream,
            buf[at + 9..at + 9 + len].to_vec(),
        ));
        at += 9 + len;
    }
    (out, closed)
}

/// The error code of the first GOAWAY, if any.
fn goaway(frames: &[Frame]) -> Option<u32> {
    frames
        .iter()
        .find(|f| f.0 == GOAWAY)
        .map(|f| u32::from_be_bytes([f.3[4], f.3[5], f.3[6], f.3[7]]))
}

/// Whether a response HEADERS frame came on `stream`.
fn answered(frames: &[Frame], stream: u32) -> bool {
    frames.iter().any(|f| f.0 == HEADERS && f.2 == stream)
}

/// A plain GET on its own new connection gets a response (the "other connections are
/// unaffected" check).
async fn benign_h2(addr: SocketAddr) {
    let mut s = connect(addr).await;
    s.write_all(&frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        &request_block(false, "/c0/ok"),
    ))
    .await
    .expect("write");
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut seen = Vec::new();
    while Instant::now() < deadline && !answered(&seen, 1) {
        let (more, closed) = frames(&mut s, Duration::from_millis(200)).await;
        seen.extend(more);
        if closed {
            break;
        }
    }
    assert!(
        answered(&seen, 1),
        "a benign HTTP/2 request got no response: {seen:?}"
    );
}

/// B-15: rapid reset (2,000 streams opened and cancelled at once), MadeYouReset (2,000 streams
/// the client makes the server reset, by DATA after END_STREAM), a CONTINUATION flood (10,000
/// frames, no END_HEADERS) and 10,000 empty DATA frames. Each flood ends with GOAWAY and the
/// connection closed; the proxy lives, memory stays bounded, and a new connection works after
/// each.
#[tokio::test(flavor = "multi_thread")]
async fn http2_floods_are_bounded() {
    let mut env = ClientEnv::start(1, "", None).await;
    let addr = env.addr();
    let baseline = env.proxy.rss_kib();
    let mut report = Vec::new();

    // Rapid reset.
    let mut s = connect(addr).await;
    let mut burst = Vec::new();
    for i in 0..2000u32 {
        let id = 2 * i + 1;
        burst.extend(frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            id,
            &request_block(false, "/c0/rr"),
        ));
        burst.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes()));
    }
    let _ = s.write_all(&burst).await;
    let (got, closed) = frames(&mut s, Duration::from_secs(5)).await;
    report.push(format!(
        "rapid reset: closed {closed}, goaway {:?}",
        goaway(&got)
    ));
    assert!(closed, "rapid reset: the connection stays open");
    assert!(goaway(&got).is_some(), "rapid reset: no GOAWAY");
    benign_h2(addr).await;

    // MadeYouReset: DATA on a stream the client already ended (half-closed remote) is a
    // stream error (STREAM_CLOSED) the server must answer with RST_STREAM; 2,000 of them.
    let mut s = connect(addr).await;
    let mut burst = Vec::new();
    for i in 0..2000u32 {
        let id = 2 * i + 1;
        burst.extend(frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            id,
            &request_block(false, "/c0/myr"),
        ));
        burst.extend(frame(DATA, 0, id, b"x"));
    }
    let _ = s.write_all(&burst).await;
    let (got, closed) = frames(&mut s, Duration::from_secs(5)).await;
    let resets = got.iter().filter(|f| f.0 == RST_STREAM).count();
    report.push(format!(
        "MadeYouReset: closed {closed}, goaway {:?}, {resets} resets",
        goaway(&got)
    ));
    assert!(closed, "MadeYouReset: the connection stays open");
    assert!(goaway(&got).is_some(), "MadeYouReset: no GOAWAY");
    benign_h2(addr).await;

    // CONTINUATION flood: one header block that never ends.
    let mut s = connect(addr).await;
    let _ = s
        .write_all(&frame(
            HEADERS,
            END_STREAM,
            1,
            &request_block(false, "/c0/cont"),
        ))
        .await;
    let fragment = frame(CONTINUATION, 0, 1, &literal("x-flood", &"f".repeat(100)));
    let mut sent = 0;
    for _ in 0..100 {
        if s.write_all(&fragment.repeat(100)).await.is_err() {
            break;
        }
        sent += 100;
    }
    let (got, closed) = frames(&mut s, Duration::from_secs(5)).await;
    report.push(format!(
        "CONTINUATION flood: {sent} frames written, closed {closed}, goaway {:?}",
        goaway(&got)
    ));
    assert!(closed, "CONTINUATION flood: the connection stays open");
    assert!(goaway(&got).is_some(), "CONTINUATION flood: no GOAWAY");
    assert!(!answered(&got, 1), "the flooded request was answered");
    benign_h2(addr).await;

    // 10,000 empty DATA frames, then the end of the body.
    let mut s = connect(addr).await;
    let _ = s
        .write_all(&frame(
            HEADERS,
            END_HEADERS,
            1,
            &request_block(true, "/c0/empty"),
        ))
        .await;
    let mut burst = frame(DATA, 0, 1, &[]).repeat(10_000);
    burst.extend(frame(DATA, END_STREAM, 1, &[]));
    let _ = s.write_all(&burst).await;
    let (got, closed) = frames(&mut s, Duration::from_secs(3)).await;
    report.push(format!(
        "empty DATA flood: closed {closed}, goaway {:?}, answered {}",
        goaway(&got),
        answered(&got, 1)
    ));
    assert!(
        closed && goaway(&got).is_some(),
        "empty DATA flood: not closed with GOAWAY"
    );
    benign_h2(addr).await;

    let rss = env.proxy.rss_kib();
    eprintln!(
        "B-15: {}; RSS {} -> {} KiB",
        report.join("; "),
        baseline,
        rss
    );
    assert!(
        rss < baseline + 64 * 1024,
        "RSS {rss} KiB, baseline {baseline} KiB"
    );
    env.assert_healthy().await;
}

/// B-16: a handful of RFC 9113 conformance points (see the module note on h2spec).
#[tokio::test(flavor = "multi_thread")]
async fn http2_conformance_points() {
    let mut env = ClientEnv::start(1, "", None).await;
    let addr = env.addr();
    // Connection errors, each on a new connection: (what, frames, GOAWAY codes accepted).
    // 1 is PROTOCOL_ERROR, 6 FRAME_SIZE_ERROR. The h2 crate answers frames of a wrong length
    // (SETTINGS ACK with a payload, SETTINGS not a multiple of 6, PING not 8 bytes) with
    // PROTOCOL_ERROR where RFC 9113 §6.5 and §6.7 say FRAME_SIZE_ERROR: a deviation in the
    // code only (the connection is still closed).
    let connection_errors: Vec<(&str, Vec<u8>, &[u32])> = vec![
        ("§6.1 DATA on stream 0", frame(DATA, 0, 0, b"x"), &[1]),
        (
            "§6.5 SETTINGS ACK with a payload",
            frame(SETTINGS, ACK, 0, &[0, 3, 0, 0, 0, 1]),
            &[6, 1],
        ),
        (
            "§6.5 SETTINGS of a bad length",
            frame(SETTINGS, 0, 0, &[0, 3, 0]),
            &[6, 1],
        ),
        ("§6.7 PING of 9 bytes", frame(PING, 0, 0, &[0; 9]), &[6, 1]),
        (
            "§5.1.1 HEADERS on an even stream",
            frame(
                HEADERS,
                END_HEADERS | END_STREAM,
                2,
                &request_block(false, "/c0/even"),
            ),
            &[1],
        ),
        (
            "§6.9 WINDOW_UPDATE of 0 on the connection",
            frame(WINDOW_UPDATE, 0, 0, &0u32.to_be_bytes()),
            &[1],
        ),
    ];
    let mut wrong = Vec::new();
    for (what, bytes, codes) in connection_errors {
        let mut s = connect(addr).await;
        s.write_all(&bytes).await.expect("write");
        let (got, closed) = frames(&mut s, Duration::from_secs(3)).await;
        if !closed || !goaway(&got).is_some_and(|c| codes.contains(&c)) {
            wrong.push(format!(
                "{what}: want GOAWAY {codes:?} and close; closed {closed}, {got:?}"
            ));
        }
    }

    // Malformed requests (§8.1.1): the stream is reset (PROTOCOL_ERROR) and the connection
    // lives on, or, as §5.4.2 allows, the whole connection ends (GOAWAY PROTOCOL_ERROR; the h2
    // crate does that for an uppercase name, which HPACK decoding already refuses). Never an
    // answer.
    let mut upper = request_block(false, "/c0/upper");
    upper.extend(literal("X-Upper", "1"));
    let mut connection = request_block(false, "/c0/conn");
    connection.extend(literal("connection", "keep-alive"));
    let mut te = request_block(false, "/c0/te");
    te.extend(literal("te", "gzip"));
    for (what, block) in [
        ("§8.2 an uppercase field name", upper),
        ("§8.2.2 a connection-specific field", connection),
        ("§8.2.2 TE other than trailers", te),
    ] {
        let mut s = connect(addr).await;
        let mut bytes = frame(HEADERS, END_HEADERS | END_STREAM, 1, &block);
        bytes.extend(frame(PING, 0, 0, b"pingpong"));
        s.write_all(&bytes).await.expect("write");
        let (got, _) = frames(&mut s, Duration::from_millis(700)).await;
        let reset = got
            .iter()
            .find(|f| f.0 == RST_STREAM && f.2 == 1)
            .map(|f| u32::from_be_bytes([f.3[0], f.3[1], f.3[2], f.3[3]]));
        let alive = got
            .iter()
            .any(|f| f.0 == PING && f.1 == ACK && f.3 == b"pingpong");
        let stream_error = reset == Some(1) && alive;
        let connection_error = goaway(&got) == Some(1);
        if answered(&got, 1) || !(stream_error || connection_error) {
            wrong.push(format!(
                "{what}: want RST_STREAM or GOAWAY PROTOCOL_ERROR, no answer; {got:?}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // §6.7 PING is answered with the same payload; §5.5 an unknown frame type is ignored.
    let mut s = connect(addr).await;
    let mut bytes = frame(0xfa, 0, 0, b"ignore me");
    bytes.extend(frame(PING, 0, 0, b"12345678"));
    s.write_all(&bytes).await.expect("write");
    let (got, _) = frames(&mut s, Duration::from_millis(500)).await;
    assert!(
        got.iter()
            .any(|f| f.0 == PING && f.1 == ACK && f.3 == b"12345678"),
        "{got:?}"
    );
    assert_eq!(goaway(&got), None);
    env.assert_healthy().await;
}
