//! Properties read through the real proxy, with Envoy's encodings.

use serde_json::json;
use wasmgate_integration::client;
use wasmgate_integration::origin::Origin;
use wasmgate_integration::proxy::Proxy;

use crate::support::{config, testkit};

#[tokio::test(flavor = "multi_thread")]
async fn properties_describe_the_request_the_connection_and_the_plugin() {
    let origin = Origin::start().await;
    let prop = |path: &[&str], to: &str, format: &str| json!({"op": "property", "path": path, "to": to, "format": format});
    let script = json!({
        "on_request_headers": [
            prop(&["plugin_name"], "x-p-name", "string"),
            prop(&["plugin_root_id"], "x-p-root", "string"),
            prop(&["plugin_vm_id"], "x-p-vm", "string"),
            prop(&["request", "path"], "x-p-path", "string"),
            prop(&["request", "method"], "x-p-method", "string"),
            prop(&["request", "host"], "x-p-host", "string"),
            prop(&["request", "scheme"], "x-p-scheme", "string"),
            prop(&["request", "headers", "x-probe"], "x-p-probe", "string"),
            prop(&["source", "address"], "x-p-source", "string"),
            prop(&["source", "port"], "x-p-port", "u64le"),
            prop(&["destination", "port"], "x-p-dport", "u64le"),
            prop(&["response", "code"], "x-p-early-code", "u64le"),
            prop(&["no", "such"], "x-p-unknown", "string")
        ],
        "on_response_headers": [
            prop(&["response", "code"], "x-p-code", "u64le")
        ]
    });
    let extra = "    root_id: my-root\n    vm_id: my-vm\n";
    let proxy = Proxy::start(&config(&origin, &testkit("props", script, extra)));
    let resp = client::http()
        .get(proxy.url("/some/path?q=1"))
        .header("x-probe", "probe-value")
        .send()
        .await
        .unwrap();
    let seen = origin.last();
    assert_eq!(seen.header("x-p-name"), Some("props"));
    assert_eq!(seen.header("x-p-root"), Some("my-root"));
    assert_eq!(seen.header("x-p-vm"), Some("my-vm"));
    assert_eq!(seen.header("x-p-path"), Some("/some/path?q=1"));
    assert_eq!(seen.header("x-p-method"), Some("GET"));
    assert_eq!(
        seen.header("x-p-host"),
        Some(proxy.addr.to_string().as_str())
    );
    assert_eq!(seen.header("x-p-scheme"), Some("http"));
    assert_eq!(seen.header("x-p-probe"), Some("probe-value"));
    let source = seen.header("x-p-source").unwrap();
    assert!(source.starts_with("127.0.0.1:"), "{source}");
    let port: u16 = seen.header("x-p-port").unwrap().parse().unwrap();
    assert_eq!(source, format!("127.0.0.1:{port}"));
    assert_eq!(
        seen.header("x-p-dport"),
        Some(proxy.addr.port().to_string().as_str())
    );
    assert_eq!(
        seen.header("x-p-early-code"),
        Some("<none>"),
        "no response yet"
    );
    assert_eq!(seen.header("x-p-unknown"), Some("<none>"));
    assert_eq!(client::header_all(&resp, "x-p-code"), ["200"]);
}
