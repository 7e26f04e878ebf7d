//! The harness driving real filters (`add_header.wasm` and the scriptable `testkit.wasm`, built
//! from ../filters by the build script) through the real wasmgate host.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;
use wasmgate_sdk::testing::{
    CalloutError, Error, FaultKind, Filter, Harness, Limits, LoadError, LogLevel, Outcome, Response,
};

fn wasm(file: &str) -> PathBuf {
    PathBuf::from(env!("WASMGATE_FILTERS_DIR")).join(file)
}

fn add_header() -> PathBuf {
    wasm("add_header.wasm")
}

fn testkit() -> PathBuf {
    wasm("testkit.wasm")
}

#[tokio::test]
async fn add_header_edits_reach_the_upstream_and_the_client() {
    let harness = Harness::load(
        add_header(),
        json!({
            "request": {"remove": ["x-internal"], "set": {"x-env": "test"}, "add": {"x-via": "wasmgate"}},
            "response": {"remove": ["server"], "add": [["set-cookie", "a=1"], ["set-cookie", "b=2"]]}
        }),
    )
    .unwrap();

    let exchange = harness
        .get("/hello?x=1")
        .header("x-internal", "secret")
        .header("x-via", "client")
        .send()
        .await;
    assert!(matches!(exchange.outcome(), Outcome::Forwarded));
    let upstream = exchange.upstream_request();
    assert_eq!(upstream.header("x-env"), Some("test"));
    assert_eq!(upstream.header_all("x-via"), ["client", "wasmgate"]);
    assert_eq!(upstream.header("x-internal"), None);
    assert_eq!(upstream.path(), "/hello?x=1");
    assert_eq!(upstream.header("host"), Some("example.com"));

    let done = exchange
        .respond(200)
        .header("server", "origin")
        .header("content-type", "text/plain")
        .body("hi")
        .finish()
        .await;
    assert!(matches!(done.outcome(), Outcome::Proxied));
    let response = done.response();
    assert_eq!(response.status(), 200);
    assert_eq!(response.header("server"), None);
    assert_eq!(response.header_all("set-cookie"), ["a=1", "b=2"]);
    assert_eq!(response.text(), "hi");
    assert!(done.failures().is_empty());
}

#[test]
fn a_rejected_configuration_is_a_load_error_with_the_filters_reason() {
    let err = Harness::load(add_header(), json!({"request": {"append": {}}})).unwrap_err();
    let Error::Load { filter, error, log } = &err else {
        panic!("expected a load error, got {err:?}");
    };
    assert_eq!(filter, "add_header");
    assert!(matches!(error, LoadError::ConfigureFailed), "{error:?}");
    assert!(log.contains("unknown field `append`"), "{log}");
    let message = err.to_string();
    assert!(
        message.starts_with("filter add_header: proxy_on_configure returned false"),
        "{message}"
    );
    assert!(message.contains("invalid configuration"), "{message}");
}

#[test]
fn modules_the_host_refuses_are_typed_errors() {
    let err = Harness::load(b"not wasm".as_slice(), "").unwrap_err();
    assert!(
        matches!(&err, Error::Load { error: LoadError::NotWasm, filter, .. } if filter == "filter-1"),
        "{err:?}"
    );
    let err = Harness::load(wasm("no_such_filter.wasm"), "").unwrap_err();
    assert!(matches!(err, Error::Read { .. }), "{err:?}");
    assert!(matches!(Harness::builder().build(), Err(Error::NoFilters)));
    let minimal = "(module (memory (export \"memory\") 1))";
    let err = Harness::load(minimal.as_bytes(), "").unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Load {
                error: LoadError::NotProxyWasm,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_local_reply_is_seen_by_the_response_callbacks() {
    let harness = Harness::builder()
        .add_filter(Filter::new(testkit()).name("outer").configuration(json!({
            "on_response_headers": [
                {"op": "add", "map": "response", "key": "x-seen-by", "value": "outer"},
                {"op": "get", "map": "response", "key": "x-why", "to": "x-outer-saw-why"}
            ]
        })))
        .add_filter(Filter::new(testkit()).name("deny").configuration(json!({
            "on_request_headers": [
                {"op": "local_reply", "status": 403, "body": "denied\n", "headers": [["x-why", "no token"]],
                 "when": {"request_header": "x-deny"}}
            ]
        })))
        .build()
        .unwrap();

    let exchange = harness.get("/secret").header("x-deny", "1").send().await;
    let Outcome::LocalReply(reply) = exchange.outcome() else {
        panic!("expected a local reply, got {}", exchange.outcome());
    };
    assert_eq!(reply.status, 403);
    assert!(exchange.try_upstream_request().is_none());
    let response = exchange.response();
    assert_eq!(response.status(), 403);
    assert_eq!(response.text(), "denied\n");
    assert_eq!(response.header("x-why"), Some("no token"));
    assert_eq!(response.header("x-seen-by"), Some("outer"));
    assert_eq!(response.header("x-outer-saw-why"), Some("no token"));
    assert_eq!(response.header("content-length"), Some("7"));
    assert_eq!(response.header("content-type"), Some("text/plain"));
    let done = exchange.finish().await;
    assert_eq!(done.response().status(), 403);

    // Without the trigger header the same chain forwards the request.
    let exchange = harness.get("/secret").send().await;
    assert!(matches!(exchange.outcome(), Outcome::Forwarded));
}

#[tokio::test]
async fn a_local_reply_in_the_response_phase_replaces_the_upstream_response() {
    let harness = Harness::load(
        testkit(),
        json!({"on_response_headers": [{"op": "local_reply", "status": 502, "body": "bad upstream"}]}),
    )
    .unwrap();
    let done = harness
        .get("/")
        .send()
        .await
        .respond(200)
        .body("upstream body")
        .finish()
        .await;
    assert!(matches!(done.outcome(), Outcome::LocalReply(_)));
    assert_eq!(done.response().status(), 502);
    assert_eq!(done.response().text(), "bad upstream");
    // It goes out on the proxy's error path, which closes an HTTP/1 connection.
    assert_eq!(done.response().header("connection"), Some("close"));
    assert_eq!(done.upstream_response().unwrap().text(), "upstream body");
}

#[tokio::test]
async fn a_trap_fails_the_request_with_503_and_the_fault() {
    let harness = Harness::load(
        testkit(),
        json!({"on_request_headers": [{"op": "panic", "when": {"request_header": "x-boom"}}]}),
    )
    .unwrap();

    let exchange = harness.get("/").header("x-boom", "1").send().await;
    let failure = exchange.failure().expect("the filter failed");
    assert_eq!(failure.filter, "testkit");
    assert!(!failure.failed_open);
    let fault = failure.fault.as_ref().expect("a fault in this stream");
    assert_eq!(fault.kind, FaultKind::Trap);
    assert_eq!(fault.during, "proxy_on_request_headers");
    let response = exchange.response();
    assert_eq!(response.status(), 503);
    assert_eq!(
        response.text(),
        "503 Service Unavailable: a filter failed\n"
    );
    exchange.finish().await;

    // The SDK's panic hook logged the message before the trap.
    let critical = harness.logs().at_least(LogLevel::Critical);
    assert!(critical.contains("testkit panic"), "{}", harness.logs());

    // The faulted VM was thrown away; the next request gets a fresh one.
    let exchange = harness.get("/").send().await;
    assert!(matches!(exchange.outcome(), Outcome::Forwarded));
    let stats = harness.chain().filters()[0].stats();
    assert_eq!(stats.faults.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_callback_past_its_deadline_is_a_deadline_fault() {
    let limits = Limits {
        callback_deadline: Duration::from_millis(20),
        ..Limits::default()
    };
    let harness = Harness::builder()
        .add_filter(
            Filter::new(testkit())
                .configuration(json!({"on_request_headers": [{"op": "loop"}]}))
                .limits(limits),
        )
        .build()
        .unwrap();
    let exchange = harness.get("/").send().await;
    let fault = exchange.failure().and_then(|f| f.fault.as_ref()).unwrap();
    assert_eq!(fault.kind, FaultKind::Deadline);
    assert_eq!(exchange.response().status(), 503);
}

#[tokio::test]
async fn fail_open_skips_the_failing_filter() {
    let harness = Harness::builder()
        .add_filter(
            Filter::new(testkit())
                .name("flaky")
                .configuration(json!({"on_request_headers": [{"op": "panic"}]}))
                .fail_open(true),
        )
        .filter(
            add_header(),
            json!({"request": {"set": {"x-after": "yes"}}}),
        )
        .build()
        .unwrap();
    let exchange = harness.get("/").send().await;
    assert!(matches!(exchange.outcome(), Outcome::Forwarded));
    assert_eq!(exchange.upstream_request().header("x-after"), Some("yes"));
    let [failure] = exchange.failures() else {
        panic!("expected one failure, got {:?}", exchange.failures());
    };
    assert_eq!(failure.filter, "flaky");
    assert!(failure.failed_open);
    assert_eq!(failure.fault.as_ref().unwrap().kind, FaultKind::Trap);

    // The skipped filter is not called again in this stream, not even at its end.
    let done = exchange.respond(204).finish().await;
    assert!(matches!(done.outcome(), Outcome::Proxied));
    assert_eq!(done.failures().len(), 1);
}

fn tag(name: &str) -> Filter {
    Filter::new(testkit()).name(name).configuration(json!({
        "on_request_headers": [{"op": "add", "map": "request", "key": "x-order", "value": name}],
        "on_response_headers": [{"op": "add", "map": "response", "key": "x-order", "value": name}]
    }))
}

#[tokio::test]
async fn requests_run_in_chain_order_and_responses_in_reverse() {
    let harness = Harness::builder()
        .add_filter(tag("first"))
        .add_filter(tag("second"))
        .add_filter(tag("third"))
        .build()
        .unwrap();
    assert_eq!(harness.filter_names(), ["first", "second", "third"]);
    let exchange = harness.get("/").send().await;
    assert_eq!(
        exchange.upstream_request().header_all("x-order"),
        ["first", "second", "third"]
    );
    let done = exchange.respond(200).finish().await;
    assert_eq!(
        done.response().header_all("x-order"),
        ["third", "second", "first"]
    );
}

#[tokio::test]
async fn a_filter_sees_the_edits_of_the_filters_before_it() {
    let harness = Harness::builder()
        .filter(add_header(), json!({"request": {"set": {"x-token": "added"}}}))
        .filter(
            testkit(),
            json!({"on_request_headers": [{"op": "get", "map": "request", "key": "x-token", "to": "x-seen"}]}),
        )
        .build()
        .unwrap();
    let exchange = harness.get("/").send().await;
    assert_eq!(exchange.upstream_request().header("x-seen"), Some("added"));
}

#[tokio::test]
async fn log_lines_are_captured_with_level_and_filter() {
    let harness = Harness::builder()
        .add_filter(Filter::new(testkit()).name("quiet"))
        .add_filter(Filter::new(testkit()).name("chatty").configuration(json!({
            "on_request_headers": [{"op": "log", "level": "warn", "message": "request seen"}],
            "on_log": [{"op": "get", "map": "response", "key": "x-up", "to": "up"}]
        })))
        .build()
        .unwrap();

    let startup = harness.logs();
    assert_eq!(
        startup.of_filter("quiet").messages(),
        ["testkit: on_vm_start", "testkit: on_configure"]
    );
    harness.clear_logs();

    let exchange = harness.get("/").send().await;
    let warnings = harness.logs().at_least(LogLevel::Warn);
    assert_eq!(warnings.len(), 1, "{warnings}");
    let line = &warnings.lines()[0];
    assert_eq!(
        (line.filter.as_str(), line.level, line.message.as_str()),
        ("chatty", LogLevel::Warn, "request seen")
    );

    // on_log runs only when the stream ends, once per filter.
    assert!(!harness.logs().contains("on_log"));
    exchange.respond(200).header("x-up", "7").finish().await;
    let logs = harness.logs();
    assert_eq!(
        logs.iter()
            .filter(|l| l.message.starts_with("testkit: on_log ctx="))
            .count(),
        2,
        "{logs}"
    );
    assert!(logs.of_filter("chatty").contains("testkit: up=7"), "{logs}");
}

#[tokio::test]
async fn framing_edits_are_not_forwarded_but_authority_edits_are() {
    let harness = Harness::load(
        testkit(),
        json!({"on_request_headers": [
            {"op": "replace", "map": "request", "key": "content-length", "value": "999"},
            {"op": "add", "map": "request", "key": "transfer-encoding", "value": "chunked"},
            {"op": "replace", "map": "request", "key": ":authority", "value": "internal.example"},
            {"op": "replace", "map": "request", "key": ":path", "value": "/v2/items"}
        ]}),
    )
    .unwrap();
    let exchange = harness
        .post("/items")
        .header("content-length", "5")
        .body("hello")
        .send()
        .await;
    let upstream = exchange.upstream_request();
    assert_eq!(upstream.header_all("content-length"), ["5"]);
    assert_eq!(upstream.header("transfer-encoding"), None);
    assert_eq!(upstream.header("host"), Some("internal.example"));
    assert_eq!(upstream.path(), "/v2/items");
    assert_eq!(upstream.body().as_ref(), b"hello");
    // The host's own maps still show what the filter wrote.
    let stream = exchange.stream().unwrap();
    assert_eq!(
        stream.request_headers.get(b"content-length").unwrap(),
        "999"
    );
}

#[tokio::test]
async fn filters_see_pseudo_headers_and_properties_like_in_the_proxy() {
    let harness = Harness::load(
        testkit(),
        json!({
            "on_request_headers": [
                {"op": "get_pairs", "map": "request", "to": "x-pairs"},
                {"op": "property", "path": ["request", "url_path"], "to": "x-url-path"},
                {"op": "property", "path": ["source", "port"], "to": "x-port", "format": "u64le"},
                {"op": "property", "path": ["plugin_name"], "to": "x-plugin"}
            ],
            "on_response_headers": [
                {"op": "property", "path": ["response", "code"], "to": "x-code", "format": "u64le"}
            ]
        }),
    )
    .unwrap();
    let exchange = harness
        .get("/p?q=1")
        .header("Host", "api.example")
        .header("x-a", "1")
        .source("10.0.0.7:4242".parse().unwrap())
        .send()
        .await;
    let upstream = exchange.upstream_request();
    assert_eq!(
        upstream.header("x-pairs"),
        Some(":authority=api.example;:path=/p?q=1;:method=GET;:scheme=http;x-a=1")
    );
    assert_eq!(upstream.header("x-url-path"), Some("/p"));
    assert_eq!(upstream.header("x-port"), Some("4242"));
    assert_eq!(upstream.header("x-plugin"), Some("testkit"));
    let done = exchange.respond(404).finish().await;
    assert_eq!(done.response().header("x-code"), Some("404"));
}

#[tokio::test]
async fn a_pause_nothing_resumes_times_out_with_504() {
    let harness = Harness::builder()
        .filter(testkit(), json!({"request_action": "pause"}))
        .pause_timeout(Duration::from_millis(20))
        .build()
        .unwrap();
    let exchange = harness.get("/").send().await;
    assert!(
        matches!(exchange.outcome(), Outcome::Paused { filter } if filter == "testkit"),
        "{}",
        exchange.outcome()
    );
    assert!(
        exchange.stream().is_none(),
        "the stream is parked in the VM"
    );
    assert_eq!(exchange.response().status(), 504);
    // Ending the stream takes it back from the VM and runs on_log.
    exchange.finish().await;
    assert!(harness.logs().contains("testkit: on_log"));
}

#[tokio::test]
async fn bodies_and_trailers_pass_through_filters_that_ignore_them() {
    let harness = Harness::load(add_header(), json!({"response": {"set": {"x-r": "1"}}})).unwrap();
    let exchange = harness
        .post("/upload")
        .body_chunks(["da", "ta"])
        .send()
        .await;
    let upstream = exchange.upstream_request();
    assert_eq!(upstream.body().as_ref(), b"data");
    // The harness framed the client's body as a client would, and the proxy kept it.
    assert_eq!(upstream.header("content-length"), Some("4"));

    let done = exchange
        .respond(200)
        .body_chunks(["o", "k"])
        .trailer("grpc-status", "0")
        .finish()
        .await;
    let response = done.response();
    assert!(matches!(done.outcome(), Outcome::Proxied));
    assert_eq!(response.header("x-r"), Some("1"));
    assert_eq!(response.text(), "ok");
    assert_eq!(response.header("transfer-encoding"), Some("chunked"));
    assert_eq!(response.trailers()["grpc-status"], "0");
}

fn body_rewrite() -> PathBuf {
    wasm("bench_body_rewrite.wasm")
}

#[tokio::test]
async fn a_buffering_filter_rewrites_the_response_body() {
    let harness = Harness::load(body_rewrite(), "").unwrap();
    let done = harness
        .get("/")
        .send()
        .await
        .respond(200)
        .header("content-type", "text/plain")
        .body_chunks(["hello ", "wor", "ld"])
        .finish()
        .await;
    let response = done.response();
    assert!(
        matches!(done.outcome(), Outcome::Proxied),
        "{}",
        done.outcome()
    );
    assert_eq!(
        response.text(),
        "HELLO WORLD\n-- rewritten by bench-body-rewrite\n"
    );
    // The filter removed content-length: the proxy frames the new body itself.
    assert_eq!(response.header("content-length"), None);
    assert_eq!(response.header("transfer-encoding"), Some("chunked"));
    assert_eq!(
        done.upstream_response().unwrap().header("content-length"),
        Some("11")
    );

    // An HTTP/2 client gets frames rather than chunked encoding.
    let done = harness
        .get("/")
        .protocol("HTTP/2")
        .send()
        .await
        .respond(200)
        .body("x")
        .finish()
        .await;
    assert_eq!(done.response().header("transfer-encoding"), None);
    assert!(done.response().text().starts_with("X\n--"));
}

#[tokio::test]
async fn a_body_over_the_buffer_limit_aborts_the_response() {
    let limits = Limits {
        max_body_bytes: 8,
        ..Limits::default()
    };
    let harness = Harness::builder()
        .add_filter(Filter::new(body_rewrite()).limits(limits))
        .build()
        .unwrap();
    let done = harness
        .get("/")
        .send()
        .await
        .respond(200)
        .body_chunks(["0123456789", "abcdef"])
        .finish()
        .await;
    let Outcome::Aborted { reason } = done.outcome() else {
        panic!("expected an abort, got {}", done.outcome());
    };
    assert!(reason.contains("buffer limit"), "{reason}");
    // The client got the headers, then nothing: the filter held the body.
    let partial = done.try_response().unwrap();
    assert_eq!(partial.status(), 200);
    assert!(partial.body().is_empty());
}

#[tokio::test]
async fn exchanges_on_one_harness_can_overlap() {
    let harness = Harness::load(
        testkit(),
        json!({"on_log": [{"op": "log", "message": "done"}]}),
    )
    .unwrap();
    let first = harness.get("/1").send().await;
    let second = harness.get("/2").send().await;
    let second = second.respond(201).finish().await;
    let first = first.respond(200).finish().await;
    assert_eq!(first.response().status(), 200);
    assert_eq!(second.response().status(), 201);
    assert_eq!(
        harness
            .logs()
            .iter()
            .filter(|l| l.message == "done")
            .count(),
        2
    );

    // And from several tasks at once.
    let tasks: Vec<_> = (0..4)
        .map(|i| {
            let harness = harness.clone();
            tokio::spawn(async move {
                let exchange = harness.get(&format!("/{i}")).send().await;
                exchange.respond(200).finish().await.response().status()
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
}

#[tokio::test]
async fn upstream_responses_can_come_from_http_types() {
    let harness = Harness::load(add_header(), "").unwrap();
    let exchange = harness.get("/").send().await;
    let request = exchange.upstream_request().to_http();
    assert_eq!(request.headers()["host"], "example.com");
    let response = http::Response::builder()
        .status(418)
        .header("x-teapot", "1")
        .body(bytes::Bytes::from_static(b"short and stout"))
        .unwrap();
    let done = exchange.respond_with(response).finish().await;
    assert_eq!(done.response().status(), 418);
    assert_eq!(done.response().header("x-teapot"), Some("1"));
    assert!(harness.logs().contains("empty configuration"));
}

#[tokio::test]
#[should_panic(expected = "the request was not forwarded upstream: local reply 401")]
async fn asking_for_the_upstream_request_of_a_local_reply_says_what_happened() {
    let harness = Harness::load(
        testkit(),
        json!({"on_request_headers": [{"op": "local_reply", "status": 401}]}),
    )
    .unwrap();
    let exchange = harness.get("/").send().await;
    let _ = exchange.upstream_request();
}

#[test]
fn each_harness_is_a_host_of_its_own() {
    // Shared data, queues and metrics live in the runtime: two tests must not share them.
    let first = Harness::load(add_header(), "").unwrap();
    let second = Harness::load(add_header(), "").unwrap();
    assert!(!std::sync::Arc::ptr_eq(
        first.runtime().shared(),
        second.runtime().shared()
    ));
    // Clones are the same host.
    let clone = first.clone();
    assert!(std::sync::Arc::ptr_eq(
        first.runtime().shared(),
        clone.runtime().shared()
    ));
    assert!(second.logs().contains("empty configuration"));
}

fn ext_auth(upstream: Filter) -> Harness {
    Harness::builder().add_filter(upstream).build().unwrap()
}

fn ext_auth_filter(config: serde_json::Value) -> Filter {
    Filter::new(wasm("ext_auth.wasm"))
        .name("auth")
        .configuration(config)
}

#[tokio::test]
async fn a_callout_answered_by_the_test_resumes_the_request() {
    let harness = ext_auth(
        ext_auth_filter(json!({
            "upstream": "authz",
            "forward_headers": ["authorization"],
            "copy_headers": ["x-user"]
        }))
        .upstream("authz", |request| {
            let allowed = request.header("authorization") == Some("Bearer good");
            Ok(match allowed {
                true => Response::new(200).with_header("x-user", "alice"),
                false => Response::new(401).with_body("no"),
            })
        }),
    );

    let exchange = harness
        .get("/private")
        .header("authorization", "Bearer good")
        .send()
        .await;
    assert!(
        matches!(exchange.outcome(), Outcome::Forwarded),
        "{}",
        exchange.outcome()
    );
    assert_eq!(exchange.upstream_request().header("x-user"), Some("alice"));
    let [call] = harness.callouts().try_into().unwrap();
    assert_eq!(
        (call.filter.as_str(), call.upstream.as_str()),
        ("auth", "authz")
    );
    assert_eq!(call.request.path(), "/check");
    assert_eq!(call.request.authority(), Some("ext-auth"));
    assert_eq!(call.request.header("x-original-path"), Some("/private"));
    assert_eq!(call.timeout, Some(Duration::from_secs(1)));

    let exchange = harness
        .get("/private")
        .header("authorization", "Bearer bad")
        .send()
        .await;
    assert!(matches!(exchange.outcome(), Outcome::LocalReply(_)));
    assert_eq!(exchange.response().status(), 401);
    assert_eq!(exchange.response().header("x-ext-auth"), Some("denied"));
}

#[tokio::test]
async fn a_failed_callout_reaches_the_filter_as_a_failure() {
    let harness = ext_auth(
        ext_auth_filter(json!({"upstream": "authz", "failure_status": 502}))
            .upstream("authz", |_| Err(CalloutError::Failed("refused".into()))),
    );
    let exchange = harness.get("/").send().await;
    assert_eq!(exchange.response().status(), 502);
    assert_eq!(exchange.response().text(), "authorization unavailable\n");
    assert!(
        harness.logs().contains("authorization call failed: reset"),
        "{}",
        harness.logs()
    );

    // With fail_open in its own configuration, the filter lets the request through.
    let harness = ext_auth(
        ext_auth_filter(json!({"upstream": "authz", "fail_open": true}))
            .upstream("authz", |_| Err(CalloutError::Timeout)),
    );
    let exchange = harness.get("/").send().await;
    assert!(
        matches!(exchange.outcome(), Outcome::Forwarded),
        "{}",
        exchange.outcome()
    );
}
