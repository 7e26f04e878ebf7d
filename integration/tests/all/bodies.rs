//! Bodies through the real proxy: rewrites by a filter that buffers (as Envoy body filters
//! do), streaming when no filter buffers, framing kept consistent on reused connections,
//! buffer limits, local replies from body callbacks, client aborts.

use std::time::Duration;

use serde_json::json;
use wasmgate_integration::capture::Capture;
use wasmgate_integration::client;
use wasmgate_integration::origin::Origin;
use wasmgate_integration::proxy::Proxy;

use crate::support::{add_header, body_rewrite, config, config_for, testkit};

fn rewriter() -> String {
    body_rewrite(
        "rewrite",
        json!({
            "request": {"replace": [["world", "wasm"]], "deny_if_contains": "forbidden"},
            "response": {"replace": [["\"method\"", "\"the_method\""]]},
            "log_sizes": true
        }),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_filter_rewrites_request_and_response_bodies() {
    let origin = Origin::start().await;
    let proxy = Proxy::start(&config(&origin, &rewriter()));
    let resp = client::http()
        .post(proxy.url("/"))
        .body("hello world, world")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        client::header_all(&resp, "content-length").is_empty(),
        "the rewritten response is framed by the proxy"
    );
    let body = resp.text().await.unwrap();
    assert!(body.contains("\"the_method\":\"POST\""), "{body}");
    let seen = origin.last();
    assert_eq!(seen.body, "hello wasm, wasm");
    assert_eq!(seen.header("transfer-encoding"), Some("chunked"));
    assert_eq!(seen.header("content-length"), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn large_and_chunked_request_bodies_are_buffered_and_rewritten() {
    let origin = Origin::start().await;
    let proxy = Proxy::start(&config(&origin, &rewriter()));
    // Close to the 1 MiB buffer limit, arriving in many reads.
    let mut big = vec![b'.'; 900 * 1024];
    big[..5].copy_from_slice(b"world");
    let n = big.len();
    big[n - 5..].copy_from_slice(b"world");
    let resp = client::http()
        .post(proxy.url("/big"))
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = origin.last();
    assert_eq!(seen.body.len(), 900 * 1024 - 2);
    assert!(seen.body.starts_with(b"wasm.") && seen.body.ends_with(b".wasm"));
    assert!(
        proxy
            .log()
            .contains("body-rewrite: request body_size=921600 end_of_stream=true"),
        "the end-of-stream call sees the whole body"
    );

    // A chunked request from the client.
    let raw = b"POST /chunked HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n\
        5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    let reply = client::raw(proxy.addr, raw, Duration::from_secs(5)).await;
    assert!(
        reply.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    assert_eq!(origin.last().body, "hello wasm");
}

#[tokio::test(flavor = "multi_thread")]
async fn empty_bodies_and_gets_pass() {
    let origin = Origin::start().await;
    let proxy = Proxy::start(&config(&origin, &rewriter()));
    let http = client::http();
    let resp = http
        .post(proxy.url("/empty"))
        .body("")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(origin.last().body.is_empty());
    let resp = http.get(proxy.url("/get")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("\"the_method\":\"GET\"")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_stream_untouched_when_no_filter_buffers() {
    let capture = Capture::start().await;
    let headers_only = add_header("hdr", json!({"request": {"add": {"x-a": "1"}}}));
    let proxy = Proxy::start(&config_for(&capture.endpoint(), &headers_only));
    let body: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    let resp = client::http()
        .post(proxy.url("/stream"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let req = capture.requests().pop().unwrap();
    assert_eq!(req.header("x-a"), Some("1"));
    assert_eq!(
        req.header("content-length"),
        Some("1048576"),
        "framing is the client's"
    );
    assert!(!req.chunked);
    assert!(req.body == body, "the bytes arrive unchanged");
}

#[tokio::test(flavor = "multi_thread")]
async fn framing_stays_correct_on_a_reused_upstream_connection() {
    let capture = Capture::start().await;
    let proxy = Proxy::start(&config_for(&capture.endpoint(), &rewriter()));
    let http = client::http();
    for i in 0..6 {
        let resp = http
            .post(proxy.url(&format!("/r{i}")))
            .body(format!("world {i} world"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        // The proxy returns the upstream connection to its pool just after answering: give it
        // the moment, so that the next request can reuse it even on a loaded machine.
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    }
    assert!(capture.errors().is_empty(), "{:?}", capture.errors());
    let requests = capture.requests();
    assert_eq!(requests.len(), 6);
    for (i, req) in requests.iter().enumerate() {
        assert_eq!(req.body, format!("wasm {i} wasm").as_bytes());
        assert!(req.chunked);
        assert_eq!(req.header("content-length"), None);
    }
    // Each worker thread keeps its own upstream connections; some connection must have
    // carried a second request, parsed right after the first's rewritten body.
    let conns: Vec<usize> = requests.iter().map(|r| r.conn).collect();
    assert!(
        conns
            .iter()
            .any(|c| conns.iter().filter(|d| *d == c).count() > 1),
        "an upstream connection was reused: {conns:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_over_the_buffer_limit_gets_413() {
    let origin = Origin::start().await;
    let mut proxy = Proxy::start(&config(&origin, &rewriter()));
    let resp = client::http()
        .post(proxy.url("/"))
        .body(vec![b'a'; 2 * 1024 * 1024])
        .send()
        .await;
    match resp {
        Ok(resp) => assert_eq!(resp.status(), 413),
        // The proxy may answer and close before the client finished sending.
        Err(e) => assert!(e.is_request() || e.is_body(), "{e}"),
    }
    let resp = client::http()
        .post(proxy.url("/"))
        .body("ok")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(proxy.is_alive());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_response_body_over_the_limit_aborts_the_response() {
    let origin = Origin::start().await;
    let mut proxy = Proxy::start(&config(&origin, &rewriter()));
    let http = client::http();
    let resp = http.get(proxy.url("/big/2000000")).send().await.unwrap();
    assert_eq!(resp.status(), 200, "the headers were already sent");
    assert!(resp.bytes().await.is_err(), "the body is cut, never wrong");
    let resp = http.get(proxy.url("/big/1000")).send().await.unwrap();
    assert_eq!(resp.bytes().await.unwrap().len(), 1000);
    assert!(proxy.is_alive());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_local_reply_from_the_request_body_callback() {
    let origin = Origin::start().await;
    let proxy = Proxy::start(&config(&origin, &rewriter()));
    let http = client::http();
    let resp = http
        .post(proxy.url("/"))
        .body("this is forbidden content")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(resp.text().await.unwrap(), "refused by body-rewrite\n");
    let resp = http.post(proxy.url("/")).body("fine").send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_abort_mid_body_ends_the_filter_context_once() {
    let origin = Origin::start().await;
    let kit = testkit("kit", json!({}), "");
    let proxy = Proxy::start(&config(&origin, &kit));
    let partial = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nonly ten b";
    let _ = client::raw(proxy.addr, partial, Duration::from_millis(300)).await;
    assert!(
        proxy.wait_for_log("testkit: on_log ctx=", Duration::from_secs(5)),
        "on_log ran:\n{}",
        proxy.log()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(proxy.log().matches("testkit: on_log ctx=").count(), 1);
    let resp = client::http().get(proxy.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}
