//! The access log through the real proxy: every format's lines parsed and every field
//! checked, a filter's local reply and failure named, reopening on SIGUSR1 and on reload,
//! and a client that leaves logged as 499 rather than as an error.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use wasmgate_integration::client;
use wasmgate_integration::origin::Origin;
use wasmgate_integration::proxy::Proxy;

use crate::forwarding::with_forwarding;
use crate::reload::{metrics, post_reload};
use crate::support::testkit;

/// A config whose access log is `access_log` (YAML at column 0), through a testkit filter
/// `gate` that answers 403 to `x-deny` and traps on `x-panic`.
fn logged(origin: &Origin, access_log: &str) -> String {
    let gate = testkit(
        "gate",
        json!({
            "on_request_headers": [
                {"op": "local_reply", "status": 403, "body": "denied\n",
                 "when": {"request_header": "x-deny"}},
                {"op": "panic", "when": {"request_header": "x-panic"}}
            ]
        }),
        "",
    );
    with_forwarding(origin, access_log, &gate)
}

/// The lines of `path` once it has at least `n` (the writer is asynchronous), within 5 s.
fn lines(path: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= n || Instant::now() > deadline {
            assert_eq!(lines.len(), n, "lines of {}:\n{text}", path.display());
            return lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn json_lines(path: &Path, n: usize) -> Vec<Value> {
    lines(path, n)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Checks `time` is RFC 3339 UTC with milliseconds and within the last minute.
fn assert_recent(time: &Value) {
    let t = time.as_str().expect("time is a string");
    assert!(
        t.len() == 24 && t.ends_with('Z') && t.as_bytes()[10] == b'T',
        "{t}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn json_lines_carry_every_field_and_name_the_filter_that_answered_or_failed() {
    let origin = Origin::start().await;
    let proxy = Proxy::start(&logged(&origin, "access_log: {path: access.log}"));
    let log = proxy.dir.path().join("access.log");
    let http = client::http();
    let ok = http
        .post(proxy.url("/ok?x=1"))
        .header("user-agent", "probe/1.0")
        .header("referer", "http://ref.example/")
        .header("x-request-id", "rid-1")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let ok_body = ok.bytes().await.unwrap();
    let denied = http
        .get(proxy.url("/deny"))
        .header("x-deny", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);
    let denied_id = client::header_all(&denied, "x-request-id").remove(0);
    let failed = http
        .get(proxy.url("/fail"))
        .header("x-panic", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(failed.status(), 503);

    let all = json_lines(&log, 3);
    let line = &all[0];
    let fields: Vec<&str> = line
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut expected = vec![
        "time",
        "time_local",
        "remote_addr",
        "remote_port",
        "client_addr",
        "method",
        "host",
        "path",
        "protocol",
        "status",
        "bytes_in",
        "bytes_out",
        "duration_ms",
        "upstream",
        "upstream_ms",
        "route",
        "request_id",
        "user_agent",
        "referer",
        "filter",
        "filter_action",
    ];
    let mut sorted = fields.clone();
    sorted.sort_unstable();
    expected.sort_unstable();
    assert_eq!(sorted, expected, "every field, none more");
    assert_recent(&line["time"]);
    assert!(line["time_local"].as_str().unwrap().ends_with(" +0000"));
    assert_eq!(line["remote_addr"], "127.0.0.1");
    assert!(line["remote_port"].as_u64().unwrap() > 0);
    assert_eq!(line["client_addr"], "127.0.0.1");
    assert_eq!(line["method"], "POST");
    assert_eq!(line["host"], proxy.addr.to_string());
    assert_eq!(line["path"], "/ok?x=1");
    assert_eq!(line["protocol"], "HTTP/1.1");
    assert_eq!(line["status"], 200);
    assert_eq!(line["bytes_in"], 5);
    assert_eq!(line["bytes_out"], ok_body.len());
    let duration = line["duration_ms"].as_f64().unwrap();
    let upstream_ms = line["upstream_ms"].as_f64().unwrap();
    assert!(upstream_ms > 0.0 && upstream_ms <= duration, "{line}");
    assert_eq!(line["upstream"], origin.endpoint());
    assert_eq!(line["route"], "route-0");
    assert_eq!(line["request_id"], "rid-1");
    assert_eq!(line["user_agent"], "probe/1.0");
    assert_eq!(line["referer"], "http://ref.example/");
    assert_eq!(line["filter"], Value::Null);
    assert_eq!(line["filter_action"], Value::Null);

    let line = &all[1];
    assert_eq!(line["status"], 403);
    assert_eq!(line["path"], "/deny");
    assert_eq!(line["filter"], "gate");
    assert_eq!(line["filter_action"], "local_reply");
    assert_eq!(line["upstream"], Value::Null, "never went upstream");
    assert_eq!(line["upstream_ms"], Value::Null);
    assert_eq!(line["bytes_out"], "denied\n".len());
    assert_eq!(line["request_id"], denied_id.as_str());
    assert_eq!(line["referer"], Value::Null);

    let line = &all[2];
    assert_eq!(line["status"], 503);
    assert_eq!(line["filter"], "gate");
    assert_eq!(line["filter_action"], "failed");
}

#[tokio::test(flavor = "multi_thread")]
async fn combined_then_a_template_after_a_reload_that_moves_the_file() {
    let origin = Origin::start().await;
    let proxy = Proxy::start(&logged(
        &origin,
        "access_log: {path: combined.log, format: combined}",
    ));
    let http = client::http();
    let resp = http
        .get(proxy.url("/c?q=\"x\""))
        .header("user-agent", "agent \"quoted\"")
        .send()
        .await
        .unwrap();
    let body_len = resp.bytes().await.unwrap().len();
    let combined = proxy.dir.path().join("combined.log");
    let line = lines(&combined, 1).remove(0);
    // 127.0.0.1 - - [08/Dec/2026:00:18:25 +0000] "GET /c?q=%22x%22 HTTP/1.1" 200 N "-" "..."
    let (head, rest) = line.split_once(" [").unwrap();
    assert_eq!(head, "127.0.0.1 - -");
    let (time, rest) = rest.split_once("] ").unwrap();
    assert_eq!(time.len(), 26, "{time}");
    assert!(time.ends_with(" +0000"), "{time}");
    assert_eq!(
        rest,
        format!("\"GET /c?q=%22x%22 HTTP/1.1\" 200 {body_len} \"-\" \"agent \\x22quoted\\x22\"")
    );

    let template = "access_log:\n  path: template.log\n  format: \
                    '$status|$method|$path|$request_id|$filter|$upstream|$$'";
    proxy.write_config(&logged(&origin, template));
    let (status, outcome) = post_reload(&proxy).await;
    assert_eq!(status, 200, "{outcome}");
    http.get(proxy.url("/t"))
        .header("x-request-id", "tid")
        .send()
        .await
        .unwrap();
    http.get(proxy.url("/t2"))
        .header("x-request-id", "tid2")
        .header("x-deny", "1")
        .send()
        .await
        .unwrap();
    let templated = lines(&proxy.dir.path().join("template.log"), 2);
    assert_eq!(
        templated,
        [
            format!("200|GET|/t|tid|-|{}|$", origin.endpoint()),
            "403|GET|/t2|tid2|gate|-|$".to_owned(),
        ]
    );
    assert_eq!(
        lines(&combined, 1).len(),
        1,
        "the old file gets no more lines"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigusr1_reopens_the_file_after_it_was_rotated() {
    let origin = Origin::start().await;
    let mut proxy = Proxy::start(&logged(&origin, "access_log: {path: access.log}"));
    let log = proxy.dir.path().join("access.log");
    let rotated = proxy.dir.path().join("access.log.1");
    let http = client::http();
    http.get(proxy.url("/before")).send().await.unwrap();
    lines(&log, 1);
    std::fs::rename(&log, &rotated).unwrap();
    proxy.signal(libc::SIGUSR1);
    assert!(
        proxy.wait_for_log("SIGUSR1: reopening the access log", Duration::from_secs(5)),
        "{}",
        proxy.log()
    );
    // The writer notices the request at its next line at the latest.
    http.get(proxy.url("/after")).send().await.unwrap();
    let after = json_lines(&log, 1);
    assert_eq!(after[0]["path"], "/after");
    let before = json_lines(&rotated, 1);
    assert_eq!(before[0]["path"], "/before");
    assert!(proxy.is_alive(), "SIGUSR1 does not end the process");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_leaves_is_logged_as_499_and_not_as_an_error() {
    let origin = Origin::start().await;
    let proxy = Proxy::start(&logged(&origin, "access_log: {path: access.log}"));
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"GET /slow/2000 HTTP/1.1\r\nhost: x\r\nx-request-id: gone-1\r\n\r\n")
        .await
        .unwrap();
    // Wait until the request is upstream, then leave.
    let deadline = Instant::now() + Duration::from_secs(5);
    while origin.received().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !origin.received().is_empty(),
        "the request reached the origin"
    );
    drop(stream);
    let line = &json_lines(&proxy.dir.path().join("access.log"), 1)[0];
    assert_eq!(line["status"], 499, "{line}");
    assert_eq!(line["request_id"], "gone-1");
    assert_eq!(line["bytes_out"], 0);
    let log = proxy.log();
    assert!(!log.contains("Fail to proxy"), "{log}");
    assert!(!log.contains("ERROR"), "{log}");
    let metrics = metrics(&proxy).await;
    assert!(
        metrics.contains("wasmgate_requests_total{status=\"4xx\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn json_log_format_makes_wasmgate_s_own_lines_json() {
    let origin = Origin::start().await;
    let proxy = Proxy::start_with(&logged(&origin, ""), &["--log-format", "json"]);
    let log = proxy.log();
    let first = log.lines().next().expect("a log line");
    let line: Value = serde_json::from_str(first).unwrap_or_else(|e| panic!("{e}: {log}"));
    assert!(line["level"].is_string(), "{line}");
    assert!(line["fields"]["message"].is_string(), "{line}");
    assert!(line["timestamp"].is_string(), "{line}");
    for l in log.lines() {
        assert!(serde_json::from_str::<Value>(l).is_ok(), "not JSON: {l}");
    }
}
