//! Every header host call, observed where it lands: at the upstream for request headers, at
//! the client for response headers.

use serde_json::json;
use wasmgate_integration::client;
use wasmgate_integration::origin::Origin;
use wasmgate_integration::proxy::Proxy;

use crate::support::{config, testkit};

#[tokio::test(flavor = "multi_thread")]
async fn request_and_response_header_calls_reach_upstream_and_client() {
    let origin = Origin::start().await;
    let script = json!({
        "on_request_headers": [
            {"op": "add", "map": "request", "key": "x-added", "value": "one"},
            {"op": "add", "map": "request", "key": "X-Added", "value": "two"},
            {"op": "replace", "map": "request", "key": "x-replaced", "value": "new"},
            {"op": "remove", "map": "request", "key": "x-remove-me"},
            {"op": "get", "map": "request", "key": "User-Agent", "to": "x-got-ua"},
            {"op": "get", "map": "request", "key": "x-missing", "to": "x-got-missing"},
            {"op": "get_pairs", "map": "request", "to": "x-pairs"},
            {"op": "replace", "map": "request", "key": ":path", "value": "/rewritten?q=1"}
        ],
        "on_response_headers": [
            {"op": "add", "map": "response", "key": "x-resp-added", "value": "1"},
            {"op": "replace", "map": "response", "key": "server", "value": "wasmgate-test"},
            {"op": "remove", "map": "response", "key": "x-origin"},
            {"op": "get", "map": "response", "key": "content-type", "to": "x-got-ct"},
            {"op": "get", "map": "request", "key": "x-replaced", "to": "x-req-in-resp"},
            {"op": "get", "map": "response", "key": ":status", "to": "x-got-status"},
            {"op": "replace", "map": "response", "key": ":status", "value": "201"}
        ]
    });
    let proxy = Proxy::start(&config(&origin, &testkit("kit", script, "")));
    let resp = client::http()
        .get(proxy.url("/original"))
        .header("user-agent", "test-agent")
        .header("x-replaced", "old")
        .header("x-remove-me", "gone")
        .send()
        .await
        .unwrap();

    let seen = origin.last();
    assert_eq!(seen.path, "/rewritten?q=1");
    assert_eq!(seen.header_all("x-added"), ["one", "two"]);
    assert_eq!(seen.header_all("x-replaced"), ["new"]);
    assert_eq!(seen.header("x-remove-me"), None);
    assert_eq!(seen.header("x-got-ua"), Some("test-agent"));
    assert_eq!(seen.header("x-got-missing"), Some("<none>"));
    let pairs = seen.header("x-pairs").unwrap();
    assert!(
        pairs.starts_with(&format!(
            ":authority={};:path=/original;:method=GET;:scheme=http;",
            proxy.addr
        )),
        "{pairs}"
    );
    assert!(pairs.contains(";x-added=one;x-added=two;"), "{pairs}");
    assert!(
        !pairs.contains("x-remove-me"),
        "pairs show the earlier removal: {pairs}"
    );

    assert_eq!(resp.status(), 201);
    assert_eq!(client::header_all(&resp, "x-resp-added"), ["1"]);
    assert_eq!(client::header_all(&resp, "server"), ["wasmgate-test"]);
    assert!(client::header_all(&resp, "x-origin").is_empty());
    assert_eq!(client::header_all(&resp, "x-got-ct"), ["application/json"]);
    assert_eq!(client::header_all(&resp, "x-req-in-resp"), ["new"]);
    assert_eq!(client::header_all(&resp, "x-got-status"), ["200"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn set_pairs_replaces_every_request_header() {
    let origin = Origin::start().await;
    let script = json!({
        "on_request_headers": [
            {"op": "set_pairs", "map": "request", "pairs": [["a", "1"], ["b", "2"], ["a", "3"]]}
        ]
    });
    let proxy = Proxy::start(&config(&origin, &testkit("kit", script, "")));
    let resp = client::http()
        .get(proxy.url("/"))
        .header("x-before", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = origin.last();
    assert_eq!(seen.header_all("a"), ["1", "3"]);
    assert_eq!(seen.header_all("b"), ["2"]);
    assert_eq!(seen.header("x-before"), None);
    assert_eq!(seen.header("user-agent"), None);
    assert!(seen.header("host").is_some(), "the host header stays");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_header_injection_attempt_fails_the_filter_and_nothing_is_forwarded() {
    let origin = Origin::start().await;
    let script = json!({
        "on_request_headers": [
            {"op": "add", "map": "request", "key": "x-evil", "value": "a\r\nx-injected: 1"}
        ]
    });
    let proxy = Proxy::start(&config(&origin, &testkit("kit", script, "")));
    let resp = client::http().get(proxy.url("/")).send().await.unwrap();
    // The host answers BadArgument; the Rust SDK panics on it, which traps: fail-closed, 503.
    assert_eq!(resp.status(), 503);
    assert!(origin.received().is_empty(), "nothing reached the upstream");
}

#[tokio::test(flavor = "multi_thread")]
async fn framing_headers_set_by_a_filter_are_not_forwarded() {
    let origin = Origin::start().await;
    let script = json!({
        "on_request_headers": [
            {"op": "replace", "map": "request", "key": "content-length", "value": "5"},
            {"op": "add", "map": "request", "key": "transfer-encoding", "value": "chunked"},
            {"op": "get", "map": "request", "key": "transfer-encoding", "to": "x-filter-saw-te"}
        ]
    });
    let proxy = Proxy::start(&config(&origin, &testkit("kit", script, "")));
    let body = "0123456789";
    let resp = client::http()
        .post(proxy.url("/"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = origin.last();
    assert_eq!(
        seen.header("x-filter-saw-te"),
        Some("chunked"),
        "the filter sees its own edit"
    );
    assert_eq!(seen.header("content-length"), Some("10"));
    assert_eq!(seen.header("transfer-encoding"), None);
    assert_eq!(seen.body, body.as_bytes());
}
