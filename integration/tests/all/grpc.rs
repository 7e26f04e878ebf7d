//! gRPC callouts through the real proxy: the grpc-probe filter calls a real HTTP/2 gRPC server
//! (unary, error status, timeout, a stream of several messages, an unknown or unreachable
//! upstream) and reports the answer on the request, or answers 502. (That a request's end
//! cancels its calls is covered by the ABI host's unit tests: the proxy does not end a paused
//! request when its client goes away.)

use std::time::{Duration, Instant};

use serde_json::json;
use wasmgate_integration::client;
use wasmgate_integration::filter;
use wasmgate_integration::grpc::GrpcServer;
use wasmgate_integration::origin::Origin;
use wasmgate_integration::proxy::{Proxy, free_port};

fn probe(name: &str, config: serde_json::Value) -> String {
    format!(
        "  - name: {name}\n    wasm: {}\n    configuration: '{config}'\n",
        filter("grpc_probe")
    )
}

fn unary(method: &str, timeout_ms: u64) -> serde_json::Value {
    json!({"upstream": "grpc", "service": "test.Echo", "method": method,
           "timeout_ms": timeout_ms, "metadata": [["x-probe", "1"], ["x-delay-ms", "3000"]]})
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_calls_and_streams_through_the_proxy() {
    let origin = Origin::start().await;
    let server = GrpcServer::start().await;
    let down = free_port();
    let filters = [
        probe("unary", unary("Unary", 2000)),
        probe("error", unary("Error", 2000)),
        probe("slow", unary("Slow", 200)),
        probe("unimplemented", unary("Nope", 2000)),
        probe(
            "stream",
            json!({"upstream": "grpc", "service": "test.Echo", "method": "Stream",
                   "mode": "stream", "messages": 3}),
        ),
        probe(
            "unknown",
            json!({"upstream": "no-such-upstream", "service": "test.Echo", "method": "Unary"}),
        ),
        probe(
            "down",
            json!({"upstream": "down", "service": "test.Echo", "method": "Unary"}),
        ),
    ]
    .concat();
    let routes: String = [
        "unary",
        "error",
        "slow",
        "unimplemented",
        "stream",
        "unknown",
        "down",
    ]
    .iter()
    .map(|name| {
        format!(
            "  - match: {{path_prefix: /{name}}}\n    upstream: origin\n    filters: [{name}]\n"
        )
    })
    .collect();
    let config = format!(
        r#"listen: "{{listen}}"
admin: "{{admin}}"
threads: 2
upstreams:
  origin:
    endpoints: ["{}"]
  grpc:
    endpoints: ["{}"]
  down:
    endpoints: ["127.0.0.1:{down}"]
filters:
{filters}
routes:
{routes}"#,
        origin.endpoint(),
        server.endpoint()
    );
    let proxy = Proxy::start(&config);
    let http = client::http();

    // Unary: the request waits for the answer, then goes on carrying it.
    let resp = http.get(proxy.url("/unary/x")).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{}", proxy.log());
    let seen = origin.last();
    assert_eq!(seen.path, "/unary/x");
    assert_eq!(seen.header("x-grpc-status"), Some("0"));
    assert_eq!(seen.header("x-grpc-messages"), Some("echo:/unary/x"));
    assert_eq!(
        seen.header("x-grpc-initial"),
        None,
        "a unary call shows no metadata"
    );
    let call = server.received().pop().expect("the server got the call");
    assert_eq!(call.path, "/test.Echo/Unary");
    assert_eq!(call.messages, [&b"/unary/x"[..]]);
    assert!(call.half_closed);
    assert_eq!(call.header("content-type"), Some("application/grpc"));
    assert_eq!(call.header("te"), Some("trailers"));
    assert_eq!(call.header("grpc-timeout"), Some("2000m"));
    assert_eq!(call.header("x-probe"), Some("1"));

    // A few more calls share one HTTP/2 connection.
    for i in 0..5 {
        let resp = http
            .get(proxy.url(&format!("/unary/{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            origin.last().header("x-grpc-messages"),
            Some(&*format!("echo:/unary/{i}"))
        );
    }
    assert_eq!(
        server.connections(),
        1,
        "one connection per endpoint, reused"
    );

    // An error status (trailers-only answer): the client gets 502 with the status and the
    // percent-decoded message.
    let resp = http.get(proxy.url("/error")).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(client::header_all(&resp, "x-grpc-status"), ["7"]);
    assert_eq!(
        client::header_all(&resp, "x-grpc-message"),
        ["go away, 100%"]
    );
    let resp = http.get(proxy.url("/unimplemented")).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(client::header_all(&resp, "x-grpc-status"), ["12"]);

    // Timeout: the filter's 200 ms, not the server's 3 s; the call is reset.
    let started = Instant::now();
    let resp = http.get(proxy.url("/slow")).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(client::header_all(&resp, "x-grpc-status"), ["4"]);
    assert_eq!(
        client::header_all(&resp, "x-grpc-message"),
        ["deadline exceeded"]
    );
    let mut reset = false;
    for _ in 0..200 {
        reset = server
            .received()
            .iter()
            .any(|r| r.path == "/test.Echo/Slow" && r.reset);
        if reset {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        reset,
        "the timed-out call was reset: {:?}",
        server.received()
    );

    // A stream: three messages each way, metadata both ends, the filter's half-close.
    let resp = http.get(proxy.url("/stream/abc")).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{}", proxy.log());
    let seen = origin.last();
    assert_eq!(
        seen.header("x-grpc-messages"),
        Some("echo:/stream/abc#0|echo:/stream/abc#1|echo:/stream/abc#2")
    );
    assert_eq!(seen.header("x-grpc-status"), Some("0"));
    assert_eq!(seen.header("x-grpc-initial"), Some("x-echo-initial=hello"));
    assert_eq!(seen.header("x-grpc-trailing"), Some("x-echo-trailer=bye"));
    let stream = server
        .received()
        .into_iter()
        .find(|r| r.path == "/test.Echo/Stream")
        .expect("the server got the stream");
    assert_eq!(stream.messages.len(), 3);
    assert_eq!(stream.messages[2], &b"/stream/abc#2"[..]);
    assert!(stream.half_closed && !stream.reset);
    assert_eq!(
        stream.header("grpc-timeout"),
        None,
        "a stream has no deadline"
    );

    // An upstream that is not in the configuration: refused at once (ParseFailure, as Envoy).
    let before = server.received().len();
    let resp = http.get(proxy.url("/unknown")).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(client::header_all(&resp, "x-grpc-error"), ["ParseFailure"]);
    assert_eq!(server.received().len(), before, "nothing was sent");

    // An upstream that is down: UNAVAILABLE.
    let resp = http.get(proxy.url("/down")).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(client::header_all(&resp, "x-grpc-status"), ["14"]);
}
