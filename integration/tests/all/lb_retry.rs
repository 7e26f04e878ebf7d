//! Issue 11, retries: a refused connection and a 503 are retried on the other endpoint (0
//! failed requests) when configured, and not otherwise; a small body the proxy holds whole is
//! replayed after a reset; a streamed body larger than the retry buffer is never retried once
//! part of it went to an endpoint that then reset.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wasmgate_integration::proxy::{Proxy, free_port};

use crate::lb_support::{Backend, config, endpoints, metric, metrics, spread};
use crate::upstream_support::{Scripted, ok_response, read_head, reset};

fn route(prefix: &str, upstream: &str) -> String {
    format!("  - match: {{path_prefix: {prefix}}}\n    upstream: {upstream}\n    filters: []\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_connection_is_retried_on_the_other_endpoint() {
    let good = Backend::start("good").await;
    let dead = format!("127.0.0.1:{}", free_port());
    let both = endpoints(&[good.endpoint(), dead.clone()]);
    let upstream = format!("{both}    retries:\n      attempts: 1\n      on: [connect_failure]\n");
    let noretry = format!("  noretry:\n{both}    retries: {{attempts: 0}}\n");
    let proxy = Proxy::start(&config(&upstream, &noretry, &route("/noretry/", "noretry")));

    let seen = spread(&proxy, "/r", &[], 200, 2).await;
    assert_eq!(
        seen.get("good"),
        Some(&200),
        "0 failed requests with one retry: {seen:?}\n{}",
        proxy.log()
    );
    let text = metrics(&proxy).await;
    let retries = metric(
        &text,
        "wasmgate_upstream_retries_total",
        &[("upstream", "api")],
    );
    assert!(retries.is_some_and(|n| n >= 1.0), "retries: {retries:?}");
    let refused = metric(
        &text,
        "wasmgate_upstream_connect_failures_total",
        &[("upstream", "api"), ("endpoint", &dead)],
    );
    assert!(
        refused.is_some_and(|n| n >= 1.0),
        "connect failures: {refused:?}"
    );

    // Without retries the dead endpoint shows (this test can fail).
    let seen = spread(&proxy, "/noretry/r", &[], 20, 1).await;
    assert!(
        seen.get("status 502").copied().unwrap_or(0) >= 1,
        "attempts: 0 gives 502 for the dead endpoint's share: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_503_is_retried_only_when_listed() {
    let busy = Backend::start("busy").await;
    busy.set_status(503);
    let good = Backend::start("good").await;
    let both = endpoints(&[busy.endpoint(), good.endpoint()]);
    let upstream = format!("{both}    retries:\n      attempts: 1\n      on: [\"503\"]\n");
    let default_on = format!("  plain:\n{both}    retries: {{attempts: 1}}\n");
    let proxy = Proxy::start(&config(&upstream, &default_on, &route("/plain/", "plain")));

    let seen = spread(&proxy, "/x", &[], 60, 2).await;
    assert_eq!(seen.get("good"), Some(&60), "{seen:?}");
    assert!(busy.requests() >= 1, "the busy endpoint was tried");
    let seen = spread(&proxy, "/plain/x", &[], 20, 1).await;
    assert!(
        seen.get("status 503").copied().unwrap_or(0) >= 1,
        "on: defaults to [connect_failure]: a 503 reaches the client: {seen:?}"
    );
}

/// An upstream that answers a GET with 200 (`resetter`), and for a POST reads the head and at
/// least `read_before_reset` bytes after it (or the whole request, if shorter and
/// content-length framed), then resets the connection. Counts the POSTs it saw.
async fn resetter(
    read_before_reset: usize,
) -> (Scripted, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let posts = Arc::new(AtomicUsize::new(0));
    let count = posts.clone();
    let scripted = Scripted::start(move |_, mut stream| {
        let count = count.clone();
        async move {
            while let Some(head) = read_head(&mut stream).await {
                if !head.starts_with("POST") {
                    let _ = stream.write_all(ok_response("resetter").as_bytes()).await;
                    continue;
                }
                count.fetch_add(1, Ordering::SeqCst);
                let length = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(usize::MAX);
                let want = read_before_reset.min(length);
                let mut got = 0;
                let mut buf = vec![0u8; 16384];
                while got < want {
                    match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await
                    {
                        Ok(Ok(n)) if n > 0 => got += n,
                        _ => break,
                    }
                }
                reset(stream);
                return;
            }
        }
    })
    .await;
    (scripted, posts)
}

/// Sends a POST whose chunked body (`chunks` × 16 KiB) is written slowly, while reading the
/// answer; what came back, and whether the connection ended before the timeout.
async fn slow_post(proxy: &Proxy, chunks: usize) -> (String, bool) {
    let stream = TcpStream::connect(proxy.addr).await.expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        let head = "POST /upload HTTP/1.1\r\nHost: lb.test\r\nTransfer-Encoding: chunked\r\n\r\n";
        if wr.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let chunk = vec![b'p'; 16384];
        for _ in 0..chunks {
            let mut piece = format!("{:x}\r\n", chunk.len()).into_bytes();
            piece.extend_from_slice(&chunk);
            piece.extend_from_slice(b"\r\n");
            if wr.write_all(&piece).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        let _ = wr.write_all(b"0\r\n\r\n").await;
        // Keep the write side open (dropping it sends a FIN, which Pingora takes for a
        // client gone before the response) until the reader is done and aborts this task.
        std::future::pending::<()>().await;
    });
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65536];
    let mut closed = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match tokio::time::timeout(left, rd.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => {
                out.extend_from_slice(&buf[..n]);
                // A complete response with a body: stop there.
                if String::from_utf8_lossy(&out).contains("\r\n\r\n") && out.len() > 12 {
                    let text = String::from_utf8_lossy(&out).to_string();
                    if response_complete(&text) {
                        break;
                    }
                }
            }
            Err(_) => break,
        }
    }
    writer.abort();
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

/// Whether `text` holds a whole response framed by content-length.
fn response_complete(text: &str) -> bool {
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    head.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .is_some_and(|n| body.len() >= n)
}

fn status_of(text: &str) -> u16 {
    text.strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3)?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_streamed_body_is_not_retried_once_part_of_it_was_sent() {
    // The resetter reads 80 KiB of the body (more than Pingora's 64 KiB retry buffer), then
    // resets; the body is 160 KiB, sent slowly.
    let (bad, posts) = resetter(80 * 1024).await;
    let good = Backend::start("good").await;
    let upstream = format!(
        "{}    retries:\n      attempts: 2\n      on: [connect_failure, reset_before_response, \"502\", \"503\", \"504\"]\n",
        endpoints(&[bad.endpoint(), good.endpoint()])
    );
    let proxy = Proxy::start(&config(&upstream, "", ""));
    let posts_to_good = |good: &Backend| {
        good.request_log()
            .iter()
            .filter(|(m, _, _)| m == "POST")
            .count()
    };
    // Round robin: send until one POST goes to the resetter first (at most 4).
    let mut checked = false;
    for _ in 0..4 {
        let (bad_before, good_before) = (
            posts.load(std::sync::atomic::Ordering::SeqCst),
            posts_to_good(&good),
        );
        let (text, closed) = slow_post(&proxy, 10).await;
        let to_bad = posts.load(std::sync::atomic::Ordering::SeqCst) > bad_before;
        if !to_bad {
            assert_eq!(
                status_of(&text),
                200,
                "went to the good endpoint ({:?}): {text:?} (closed: {closed})\n{}",
                good.request_log(),
                proxy.log()
            );
            continue;
        }
        checked = true;
        let head = text.split("\r\n\r\n").next().unwrap_or("");
        assert_eq!(
            posts_to_good(&good),
            good_before,
            "the streamed POST was retried on the other endpoint; client got: {head}\n{}",
            proxy.log()
        );
        assert_eq!(
            status_of(&text),
            502,
            "the client gets 502: {head:?} (connection closed: {closed})"
        );
        break;
    }
    assert!(checked, "no POST went to the resetting endpoint first");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_small_body_the_proxy_holds_is_replayed_after_a_reset() {
    let (bad, posts) = resetter(usize::MAX).await;
    let good = Backend::start("good").await;
    let upstream = format!(
        "{}    retries:\n      attempts: 1\n      on: [connect_failure, reset_before_response]\n",
        endpoints(&[bad.endpoint(), good.endpoint()])
    );
    let proxy = Proxy::start(&config(&upstream, "", ""));
    let http = wasmgate_integration::client::http();
    let body = vec![b'q'; 1000];
    for i in 0..4 {
        let resp = http
            .post(proxy.url(&format!("/small/{i}")))
            .body(body.clone())
            .send()
            .await
            .expect("the proxy answers");
        assert_eq!(
            resp.status(),
            200,
            "request {i}: a reset before the response, with the body held, is retried\n{}",
            proxy.log()
        );
        assert_eq!(resp.text().await.unwrap_or_default(), "good");
    }
    assert!(
        posts.load(std::sync::atomic::Ordering::SeqCst) >= 1,
        "the resetting endpoint was tried"
    );
    let log = good.request_log();
    assert!(
        log.iter()
            .all(|(m, _, len)| m == "POST" && *len == body.len()),
        "the replayed body arrived whole: {log:?}"
    );
    assert_eq!(log.len(), 4, "{log:?}");
}

/// A filter that logs `lbseen headers` on each request-headers callback and `lbseen body` on
/// each request-body callback, and lets everything through; written to `dir/seen.wat`.
fn seen_filter(dir: &std::path::Path) -> String {
    let mut w = crate::hostile_support::Wat::new();
    let headers = w.data(b"lbseen headers");
    let body = w.data(b"lbseen body");
    let w = w
        .on(
            "request_headers",
            &format!("(drop (call $log (i32.const 2) {headers})) (i32.const 0)"),
        )
        .on(
            "request_body",
            &format!("(drop (call $log (i32.const 2) {body})) (i32.const 0)"),
        );
    let path = dir.join("seen.wat");
    std::fs::write(&path, w.build()).expect("write the filter");
    format!("filters:\n  - name: seen\n    wasm: {}\n", path.display())
}

/// How many times the proxy logged `needle` from the filter.
fn logged(proxy: &Proxy, needle: &str) -> usize {
    proxy.log().lines().filter(|l| l.contains(needle)).count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_runs_no_request_callback_twice() {
    let good = Backend::start("good").await;
    let dead = format!("127.0.0.1:{}", free_port());
    let dir = tempfile::tempdir().expect("temp dir");
    let upstream = format!(
        "{}    retries:\n      attempts: 1\n      on: [connect_failure]\n{}",
        endpoints(&[dead.clone(), good.endpoint()]),
        seen_filter(dir.path())
    );
    let proxy = Proxy::start(&config(
        &upstream,
        "",
        "  - match: {path_prefix: /f/}\n    upstream: api\n    filters: [seen]\n",
    ));
    let seen = spread(&proxy, "/f/x", &[], 20, 1).await;
    assert_eq!(seen.get("good"), Some(&20), "{seen:?}\n{}", proxy.log());
    let text = metrics(&proxy).await;
    let retries = metric(
        &text,
        "wasmgate_upstream_retries_total",
        &[("upstream", "api")],
    );
    assert!(retries.is_some_and(|n| n >= 1.0), "retries: {retries:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while logged(&proxy, "lbseen headers") < 20 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        logged(&proxy, "lbseen headers"),
        20,
        "one request-headers callback per request, retried or not"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_a_filter_saw_is_not_retried() {
    // The resetter reads the whole (small) body, then resets before answering: without the
    // filter this is retried (see above); with a filter that saw the body it must not be.
    let (bad, posts) = resetter(usize::MAX).await;
    let good = Backend::start("good").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let upstream = format!(
        "{}    retries:\n      attempts: 1\n      on: [connect_failure, reset_before_response]\n{}",
        endpoints(&[bad.endpoint(), good.endpoint()]),
        seen_filter(dir.path())
    );
    let proxy = Proxy::start(&config(
        &upstream,
        "",
        "  - match: {path_prefix: /f/}\n    upstream: api\n    filters: [seen]\n",
    ));
    let http = wasmgate_integration::client::http();
    let mut checked = false;
    for i in 0..4 {
        let before = posts.load(std::sync::atomic::Ordering::SeqCst);
        let good_before = good.requests();
        let resp = http
            .post(proxy.url(&format!("/f/{i}")))
            .body(vec![b'z'; 1000])
            .send()
            .await
            .expect("the proxy answers");
        if posts.load(std::sync::atomic::Ordering::SeqCst) == before {
            assert_eq!(resp.status(), 200, "went to the good endpoint");
            continue;
        }
        checked = true;
        assert_eq!(
            good.requests(),
            good_before,
            "the body a filter saw was sent again to the other endpoint\n{}",
            proxy.log()
        );
        assert_eq!(resp.status(), 502);
        break;
    }
    assert!(checked, "no POST went to the resetting endpoint first");
    assert!(logged(&proxy, "lbseen body") >= 1, "the filter saw a body");
}

#[tokio::test(flavor = "multi_thread")]
async fn each_retry_goes_to_an_endpoint_not_tried_yet() {
    // Two dead endpoints of three and two retries: every request succeeds only if no retry
    // goes back to an endpoint already tried, whatever the random balancer picks.
    let good = Backend::start("good").await;
    let dead: Vec<String> = (0..2)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let upstream = format!(
        "{}    balance: random\n    retries:\n      attempts: 2\n      on: [connect_failure]\n",
        endpoints(&[dead[0].clone(), dead[1].clone(), good.endpoint()])
    );
    let proxy = Proxy::start(&config(&upstream, "", ""));
    let seen = spread(&proxy, "/d", &[], 100, 2).await;
    assert_eq!(seen.get("good"), Some(&100), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_post_answered_503_is_retried_with_its_whole_body() {
    let busy = Backend::start("busy").await;
    busy.set_status(503);
    let good = Backend::start("good").await;
    let upstream = format!(
        "{}    retries:\n      attempts: 1\n      on: [\"503\"]\n",
        endpoints(&[busy.endpoint(), good.endpoint()])
    );
    let proxy = Proxy::start(&config(&upstream, "", ""));
    let http = wasmgate_integration::client::http();
    let body = vec![b'b'; 5000];
    for i in 0..4 {
        let resp = http
            .post(proxy.url(&format!("/p/{i}")))
            .body(body.clone())
            .send()
            .await
            .expect("the proxy answers");
        assert_eq!(resp.status(), 200, "request {i}");
        assert_eq!(resp.text().await.unwrap_or_default(), "good");
    }
    assert!(busy.requests() >= 1, "the busy endpoint was tried");
    let log = good.request_log();
    assert_eq!(log.len(), 4, "{log:?}");
    assert!(
        log.iter()
            .all(|(m, _, len)| m == "POST" && *len == body.len()),
        "the body arrived whole on the retry: {log:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn no_retry_once_the_response_began() {
    // The endpoint sends a response head and 10 of 100 body bytes, then resets: the head
    // reached the client, so there is no retry; the client sees a cut response.
    let trunc = Scripted::start(|_, mut stream| async move {
        if read_head(&mut stream).await.is_some() {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789")
                .await;
            let _ = stream.flush().await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            reset(stream);
        }
    })
    .await;
    let good = Backend::start("good").await;
    let upstream = format!(
        "{}    retries:\n      attempts: 1\n      on: [connect_failure, reset_before_response, \"502\", \"503\", \"504\"]\n",
        endpoints(&[trunc.endpoint(), good.endpoint()])
    );
    let proxy = Proxy::start(&config(&upstream, "", ""));
    let mut checked = false;
    for i in 0..4 {
        let (before, good_before) = (trunc.connections(), good.requests());
        let got = crate::upstream_support::get_once(&proxy, &format!("/cut/{i}")).await;
        if trunc.connections() == before {
            assert_eq!(got.status(), 200, "{}", got.text());
            continue;
        }
        checked = true;
        assert_eq!(
            good.requests(),
            good_before,
            "retried after the response began; the client got {:?}",
            got.text()
        );
        assert_eq!(got.status(), 200, "the head went out: {}", got.text());
        assert!(
            got.body().len() < 100,
            "the client must see a cut body, not a whole one: {}",
            got.text()
        );
        break;
    }
    assert!(checked, "no request went to the truncating endpoint first");
}
