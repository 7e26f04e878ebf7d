//! C-8: a slow upstream body through a filter that buffers the whole body. The filter's buffer
//! cap (`max_body_bytes`) holds however slowly the body comes: past it the response is cut and
//! the upstream connection closed; memory stays flat. Under the cap the body arrives whole. A
//! client that leaves mid-body releases the upstream connection.

use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::upstream_support::{
    Scripted, assert_alive, buffering, closed_by_peer, get, get_once, read_head, recorded,
    saw_body_end, start_proxy,
};

/// The upstream: `/big`: 1 MiB announced, 4 KiB every 50 ms (13 s in all); `/small`: 32 KiB
/// the same way. Reports on `tx` whether the proxy closed the connection before the end.
async fn slow_upstream() -> (Scripted, tokio::sync::mpsc::UnboundedReceiver<bool>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let up = Scripted::start(move |_, mut s| {
        let tx = tx.clone();
        async move {
            let Some(head) = read_head(&mut s).await else {
                return;
            };
            let total = if head.contains("/big") {
                1 << 20
            } else {
                32 << 10
            };
            let wire = format!("HTTP/1.1 200 OK\r\ncontent-length: {total}\r\n\r\n");
            let _ = s.write_all(wire.as_bytes()).await;
            let chunk = vec![b'b'; 4096];
            for _ in 0..total / 4096 {
                if s.write_all(&chunk).await.is_err() {
                    let _ = tx.send(true);
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = tx.send(closed_by_peer(&mut s, Duration::from_secs(1)).await);
        }
    })
    .await;
    (up, rx)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_body_over_the_buffer_cap_is_cut_and_memory_stays_flat() {
    let (up, mut closed) = slow_upstream().await;
    let buffer = buffering();
    let (mut proxy, _dir) = start_proxy(
        &up.endpoint(),
        &[("read_timeout_ms", 2000)],
        "limits:\n  max_body_bytes: 65536\n",
        &[("buffer", &buffer)],
    );
    let baseline = proxy.rss_kib();
    let streams: Vec<_> = (0..6)
        .map(|i| {
            let addr = proxy.addr;
            tokio::spawn(async move {
                let request = format!("GET /buffer/big/{i} HTTP/1.1\r\nHost: x\r\n\r\n");
                crate::upstream_support::send(addr, request.as_bytes(), Duration::from_secs(10))
                    .await
            })
        })
        .collect();
    for stream in streams {
        let got = stream.await.expect("client task");
        assert_eq!(got.status(), 200, "{}", got.text());
        assert!(got.closed, "the response is cut");
        assert!(got.body().is_empty(), "nothing of a held body went out");
        // 64 KiB at 80 KiB/s: cut after about 0.8 s, far before the 13 s of the whole body.
        assert!(
            got.elapsed < Duration::from_secs(6),
            "cut after {:?}",
            got.elapsed
        );
    }
    for _ in 0..6 {
        let early = tokio::time::timeout(Duration::from_secs(5), closed.recv()).await;
        assert_eq!(
            early.ok().flatten(),
            Some(true),
            "the upstream connection is closed"
        );
    }
    let rss = proxy.rss_kib();
    assert!(
        rss < baseline + 32 * 1024,
        "RSS grew from {} to {} MiB",
        baseline / 1024,
        rss / 1024
    );
    assert!(proxy.log().contains("response aborted by its filter chain"));

    // Under the cap, the same slow body arrives whole, and the filter sees it end.
    let got = get_once(&proxy, "/buffer/small").await;
    assert_eq!(got.status(), 200, "{}", got.text());
    assert_eq!(got.body().len(), 32 << 10);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !saw_body_end(&recorded(&proxy)) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(saw_body_end(&recorded(&proxy)), "{:?}", recorded(&proxy));
    assert_alive(&mut proxy);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_leaves_a_slow_body_releases_the_upstream() {
    let (up, mut closed) = slow_upstream().await;
    let buffer = buffering();
    let (mut proxy, _dir) = start_proxy(&up.endpoint(), &[], "", &[("buffer", &buffer)]);
    for path in ["/big", "/buffer/big"] {
        // The client gives up after 300 ms.
        let got = get(&proxy, path, Duration::from_millis(300)).await;
        assert!(
            !got.closed,
            "{path}: still streaming when the client leaves"
        );
        let early = tokio::time::timeout(Duration::from_secs(5), closed.recv()).await;
        assert_eq!(
            early.ok().flatten(),
            Some(true),
            "{path}: the upstream connection is closed soon after the client left"
        );
    }
    assert_eq!(up.connections(), 2);
    assert_alive(&mut proxy);
}
