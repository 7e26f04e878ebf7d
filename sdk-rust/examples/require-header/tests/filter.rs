// The filter, built for wasm32-wasip1, run in the real wasmgate host through the SDK's
// harness. Build the module first, then test natively:
//
// ```sh
// cargo build --release --target wasm32-wasip1
// cargo test
// ```

use std::path::PathBuf;

use serde_json::json;
use wasmgate_sdk::testing::{Error, Harness, LogLevel, Outcome};

/// The module `cargo build --release --target wasm32-wasip1` made. (wasmgate-sdk's own tests
/// run this file too, with the module its build script made.)
fn wasm() -> PathBuf {
    match option_env!("WASMGATE_SDK_EXAMPLE_WASM") {
        Some(path) => path.into(),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("target/wasm32-wasip1/release/require_header.wasm"),
    }
}

fn harness(config: serde_json::Value) -> Harness {
    Harness::load(wasm(), config).unwrap()
}

#[tokio::test]
async fn a_request_with_the_header_is_forwarded_under_the_new_name() {
    let harness =
        harness(json!({"header": "x-api-key", "forward_as": "x-client-key", "tag": "ok"}));
    let exchange = harness
        .get("/items")
        .header("x-api-key", "k-123")
        .source("192.0.2.1:40000".parse().unwrap())
        .send()
        .await;
    let upstream = exchange.upstream_request();
    assert_eq!(upstream.header("x-client-key"), Some("k-123"));
    assert_eq!(upstream.header("x-api-key"), None);
    // Properties, decoded by the SDK: an 8-byte integer, a 1-byte boolean, a string.
    assert_eq!(
        upstream.header("x-client"),
        Some("port=40000 mtls=false filter=require_header")
    );
    // Header pairs, decoded by the SDK: 4 pseudo-headers, then x-client-key and x-client.
    assert_eq!(upstream.header("x-request-fields"), Some("6"));

    let done = exchange.respond(200).finish().await;
    assert_eq!(done.response().header("x-require-header"), Some("ok"));
    assert!(
        harness.logs().at_least(LogLevel::Warn).is_empty(),
        "{}",
        harness.logs()
    );
}

#[tokio::test]
async fn a_request_without_the_header_gets_the_configured_reply() {
    let harness = harness(json!({"header": "x-api-key", "status": 403}));
    let exchange = harness.get("/items").send().await;
    assert!(matches!(exchange.outcome(), Outcome::LocalReply(_)));
    let response = exchange.response();
    assert_eq!(response.status(), 403);
    assert_eq!(response.text(), "x-api-key is required\n");
    // The response callback ran on the local reply too.
    assert_eq!(response.header("x-require-header"), Some("checked"));
}

#[tokio::test]
async fn a_value_that_is_not_utf8_is_refused_without_a_trap() {
    let harness = harness(json!({"header": "x-api-key"}));
    let exchange = harness.get("/").header("x-api-key", b"k\xff").send().await;
    assert_eq!(exchange.response().status(), 400);
    assert!(exchange.failures().is_empty());
}

#[tokio::test]
async fn a_write_the_host_refuses_is_an_error_not_a_trap() {
    // A header value with a newline: the host answers BadArgument, the filter logs it.
    let harness = harness(json!({"header": "x-api-key", "tag": "a\nb"}));
    let done = harness
        .get("/")
        .header("x-api-key", "k")
        .send()
        .await
        .respond(200)
        .finish()
        .await;
    assert!(matches!(done.outcome(), Outcome::Proxied));
    assert_eq!(done.response().header("x-require-header"), None);
    let warnings = harness.logs().at_least(LogLevel::Warn);
    assert!(
        warnings.contains("cannot tag the response: BadArgument (2)"),
        "{warnings}"
    );
}

#[test]
fn a_bad_configuration_is_rejected_with_the_reason_logged() {
    let err = Harness::load(wasm(), json!({"heder": "x"})).unwrap_err();
    let Error::Load { log, .. } = &err else {
        panic!("expected a load error, got {err}");
    };
    let line = &log.lines()[0];
    assert_eq!(line.level, LogLevel::Error);
    assert!(
        line.message
            .starts_with("invalid plugin configuration: unknown field `heder`"),
        "{}",
        line.message
    );
}
