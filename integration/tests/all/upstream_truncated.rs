//! C-5: the upstream sends part of the body it announced and then keeps the connection open
//! and silent. At the read timeout the client connection is aborted (as for a reset, C-4), the
//! upstream connection is closed, never pooled, and no filter sees an end of stream.

use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::upstream_support::{
    Scripted, assert_alive, closed_by_peer, get, read_head, recorder, saw_body_end, start_proxy,
    wait_logged,
};

#[tokio::test(flavor = "multi_thread")]
async fn a_truncated_body_then_silence_aborts_at_the_read_timeout() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let up = Scripted::start(move |_, mut s| {
        let tx = tx.clone();
        async move {
            let Some(head) = read_head(&mut s).await else {
                return;
            };
            let wire: &[u8] = if head.contains("chunked") {
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n64\r\n0123456789"
            } else {
                b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789"
            };
            let _ = s.write_all(wire).await;
            let _ = tx.send(closed_by_peer(&mut s, Duration::from_secs(5)).await);
        }
    })
    .await;
    let rec = recorder(false);
    let strip = recorder(true);
    let (mut proxy, _dir) = start_proxy(
        &up.endpoint(),
        &[("read_timeout_ms", 300)],
        "",
        &[("rec", &rec), ("strip", &strip)],
    );
    let cases = [
        "/length",
        "/chunked",
        "/rec/length",
        "/rec/chunked",
        "/strip/length",
    ];
    for path in cases {
        let got = get(&proxy, path, Duration::from_secs(10)).await;
        assert_eq!(got.status(), 200, "{path}: {}", got.text());
        assert!(got.closed, "{path}: the client connection is aborted");
        assert!(
            (Duration::from_millis(250)..Duration::from_secs(4)).contains(&got.elapsed),
            "{path}: aborted after {:?}",
            got.elapsed
        );
        let text = got.text();
        assert!(text.contains("0123456789"), "{path}: {text}");
        assert!(
            !text.ends_with("0\r\n\r\n"),
            "{path}: a terminating chunk: {text:?}"
        );
        assert_eq!(
            rx.recv().await,
            Some(true),
            "{path}: the proxy closed the upstream connection"
        );
    }
    assert_eq!(
        up.connections(),
        cases.len(),
        "no upstream connection reused"
    );
    let lines = wait_logged(&proxy, 3).await;
    assert!(lines.iter().any(|l| l.starts_with("rb=")), "{lines:?}");
    assert!(!saw_body_end(&lines), "a false end of stream: {lines:?}");
    assert_alive(&mut proxy);
}
