//! Shared data, queues, metrics, filter state and the rate-limit filter, through the real
//! proxy with two workers (so two VMs of each filter race).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::json;
use wasmgate_integration::client;
use wasmgate_integration::filter;
use wasmgate_integration::origin::Origin;
use wasmgate_integration::proxy::Proxy;

use crate::support::{config, testkit};

/// The `/metrics` text of the admin listener.
async fn metrics(proxy: &Proxy) -> String {
    client::http()
        .get(proxy.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of the sample line `series` (name and labels exactly as rendered).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cas_counter_counts_every_request_across_vms() {
    let origin = Origin::start().await;
    let script = json!({
        "on_configure": [{"op": "shared_set", "key": "hits", "value": "0"}],
        "on_request_headers": [{"op": "cas_increment", "key": "hits", "to": "x-hits"}]
    });
    let proxy = Proxy::start(&config(&origin, &testkit("counter", script, "")));
    let tasks = 8;
    let per_task = 25;
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let url = proxy.url("/count");
        // One client (one connection) per task, so requests spread over both workers.
        handles.push(tokio::spawn(async move {
            let http = client::http();
            for _ in 0..per_task {
                let resp = http.get(&url).send().await.unwrap();
                assert_eq!(resp.status(), 200);
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let mut seen: Vec<u64> = origin
        .received()
        .iter()
        .map(|r| r.header("x-hits").unwrap().parse().unwrap())
        .collect();
    seen.sort_unstable();
    let expected: Vec<u64> = (1..=(tasks * per_task) as u64).collect();
    assert_eq!(seen, expected, "every increment landed exactly once");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_queue_carries_items_from_http_contexts_to_the_root_context() {
    let origin = Origin::start().await;
    let script = json!({
        "on_configure": [{"op": "queue_register", "name": "events"}],
        "on_request_headers": [
            {"op": "queue_enqueue", "name": "events", "value_header": "x-item", "to": "x-enqueued"}
        ]
    });
    let proxy = Proxy::start(&config(&origin, &testkit("events", script, "")));
    let http = client::http();
    for i in 1..=5 {
        let resp = http
            .get(proxy.url("/"))
            .header("x-item", format!("item-{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(origin.last().header("x-enqueued"), Some("ok"));
    }
    for i in 1..=5 {
        let line = format!("item=item-{i}");
        assert!(
            proxy.wait_for_log(&line, Duration::from_secs(10)),
            "{line} not dequeued by on_queue_ready:\n{}",
            proxy.log()
        );
    }
    std::thread::sleep(Duration::from_millis(100));
    let log = proxy.log();
    for i in 1..=5 {
        let item = format!("item=item-{i}");
        let count = log
            .lines()
            .filter(|l| l.contains("testkit: queue_ready qid=") && l.contains(&item))
            .count();
        assert_eq!(count, 1, "item-{i} delivered once:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn filter_metrics_are_exported_on_the_admin_endpoint() {
    let origin = Origin::start().await;
    let tagged = "custom_header_value_counts_value=foo_reporter=wasmgate";
    let first = json!({
        "on_request_headers": [
            {"op": "metric_increment", "name": "testkit_requests_total"},
            {"op": "metric_increment", "name": "in.flight", "kind": "gauge", "delta": 2},
            {"op": "metric_record", "name": "latency_ms", "kind": "histogram", "value": 7},
            {"op": "metric_increment", "name": tagged},
            {"op": "metric_get", "name": "testkit_requests_total", "to": "x-count"}
        ]
    });
    // A second filter defining the same name has its own metric.
    let second = json!({
        "on_request_headers": [
            {"op": "metric_increment", "name": "testkit_requests_total", "delta": 5}
        ]
    });
    let filters = format!(
        "{}{}",
        testkit("meter", first, ""),
        testkit("meter2", second, "")
    );
    let proxy = Proxy::start(&config(&origin, &filters));
    let http = client::http();
    for _ in 0..3 {
        let resp = http.get(proxy.url("/")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(
        origin.last().header("x-count"),
        Some("3"),
        "proxy_get_metric"
    );
    let text = metrics(&proxy).await;
    let series = |s: &str| sample(&text, s).unwrap_or_else(|| panic!("{s} missing:\n{text}"));
    assert_eq!(
        series(r#"wasmgate_filter_testkit_requests_total{filter="meter"}"#),
        3.0
    );
    assert_eq!(
        series(r#"wasmgate_filter_testkit_requests_total{filter="meter2"}"#),
        15.0
    );
    assert_eq!(series(r#"wasmgate_filter_in_flight{filter="meter"}"#), 6.0);
    assert_eq!(
        series(
            r#"wasmgate_filter_custom_header_value_counts_value_foo_reporter_wasmgate{filter="meter"}"#
        ),
        3.0
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("wasmgate_filter_latency_ms") && l.contains(r#"filter="meter""#)),
        "histogram missing:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn set_property_is_read_by_a_later_filter() {
    let origin = Origin::start().await;
    let writer = json!({
        "on_request_headers": [
            {"op": "set_property", "path": ["tenant"], "value_header": "x-tenant",
             "when": {"request_header": "x-tenant"}}
        ]
    });
    let reader = json!({
        "on_request_headers": [
            {"op": "property", "path": ["tenant"], "to": "x-seen-tenant"},
            {"op": "property", "path": ["filter_state", "wasm.tenant"], "to": "x-seen-state"}
        ],
        "on_response_headers": [
            {"op": "property", "path": ["tenant"], "to": "x-seen-later"}
        ]
    });
    let filters = format!(
        "{}{}",
        testkit("writer", writer, ""),
        testkit("reader", reader, "")
    );
    let proxy = Proxy::start(&config(&origin, &filters));
    let resp = client::http()
        .get(proxy.url("/"))
        .header("x-tenant", "acme")
        .send()
        .await
        .unwrap();
    let seen = origin.last();
    assert_eq!(seen.header("x-seen-tenant"), Some("acme"));
    assert_eq!(seen.header("x-seen-state"), Some("acme"));
    assert_eq!(client::header_all(&resp, "x-seen-later"), ["acme"]);
    // Filter state belongs to the stream: the next request starts without it.
    client::http().get(proxy.url("/")).send().await.unwrap();
    assert_eq!(origin.last().header("x-seen-tenant"), Some("<none>"));
}

#[tokio::test(flavor = "multi_thread")]
async fn shared_data_and_queues_are_isolated_between_vm_ids() {
    let origin = Origin::start().await;
    let a = json!({
        "on_configure": [
            {"op": "shared_set", "key": "secret", "value": "a-only"},
            {"op": "queue_register", "name": "q"}
        ],
        "on_request_headers": [
            {"op": "queue_enqueue", "name": "q", "value": "for-a", "to": "x-a-enqueued"},
            {"op": "queue_resolve", "name": "q", "to": "x-a-qid"}
        ]
    });
    let b = json!({
        "on_request_headers": [
            {"op": "shared_get", "key": "secret", "to": "x-b-secret"},
            {"op": "queue_resolve", "name": "q", "vm_id": "tenant-a", "to": "x-b-resolve-a"},
            {"op": "queue_resolve", "name": "q", "to": "x-b-resolve-own"},
            {"op": "queue_dequeue", "qid": 1, "to": "x-b-dequeue-1"},
            {"op": "queue_dequeue", "qid": 2, "to": "x-b-dequeue-2"},
            {"op": "queue_enqueue", "qid": 1, "value": "spam", "to": "x-b-enqueue-1"}
        ]
    });
    // Another filter with tenant A's vm_id shares A's data (Envoy's model).
    let a2 = json!({
        "on_request_headers": [{"op": "shared_get", "key": "secret", "to": "x-a2-secret"}]
    });
    let filters = format!(
        "{}{}{}",
        testkit("a", a, "    vm_id: tenant-a\n"),
        testkit("b", b, "    vm_id: tenant-b\n"),
        testkit("a2", a2, "    vm_id: tenant-a\n"),
    );
    let proxy = Proxy::start(&config(&origin, &filters));
    let resp = client::http().get(proxy.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let seen = origin.last();
    assert_eq!(seen.header("x-a-enqueued"), Some("ok"));
    let a_qid = seen.header("x-a-qid").unwrap();
    assert!(a_qid == "1" || a_qid == "2", "a's queue: {a_qid}");
    assert_eq!(seen.header("x-b-secret"), Some("<none>"), "F-1");
    assert_eq!(seen.header("x-b-resolve-a"), Some("<none>"), "F-2");
    assert_eq!(seen.header("x-b-resolve-own"), Some("<none>"));
    assert_eq!(seen.header("x-b-dequeue-1"), Some("<error:NotFound>"));
    assert_eq!(seen.header("x-b-dequeue-2"), Some("<error:NotFound>"));
    assert_eq!(seen.header("x-b-enqueue-1"), Some("<error:NotFound>"));
    assert_eq!(seen.header("x-a2-secret"), Some("a-only"));
    // A's item reached A's root context, not B.
    assert!(
        proxy.wait_for_log("item=for-a", Duration::from_secs(10)),
        "{}",
        proxy.log()
    );
    assert!(!proxy.log().contains("item=spam"));
}

/// A `filters:` item running the rate-limit filter.
fn rate_limit(name: &str, configuration: serde_json::Value) -> String {
    format!(
        "  - name: {name}\n    wasm: {}\n    configuration: '{}'\n",
        filter("rate_limit"),
        configuration
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limit_allows_a_burst_then_429_until_refilled() {
    let origin = Origin::start().await;
    // A tenth of a token per 100 ms tick: the burst is over long before a token comes back.
    let conf = json!({"rate": 1, "burst": 3, "key": {"header": "x-api-key"}, "tick_ms": 100});
    let proxy = Proxy::start(&config(&origin, &rate_limit("rl", conf)));
    let http = client::http();
    let mut statuses: BTreeMap<u16, u32> = BTreeMap::new();
    let send = |key: &'static str| {
        let req = http.get(proxy.url("/")).header("x-api-key", key);
        async move { req.send().await.unwrap() }
    };

    // The burst goes through, then 429 (on a slow machine a token may come back meanwhile).
    let mut allowed = 0;
    let limited = loop {
        let resp = send("k1").await;
        *statuses.entry(resp.status().as_u16()).or_default() += 1;
        if resp.status() == 429 {
            break resp;
        }
        assert_eq!(resp.status(), 200);
        allowed += 1;
        assert!(allowed <= 5, "never limited");
    };
    assert!((3..=5).contains(&allowed), "burst of 3, got {allowed}");
    let retry: u64 = client::header_all(&limited, "retry-after")[0]
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "retry-after {retry}");
    assert_eq!(limited.text().await.unwrap(), "rate limited\n");

    // Another key has its own bucket.
    let other = send("k2").await;
    *statuses.entry(other.status().as_u16()).or_default() += 1;
    assert_eq!(other.status(), 200);

    // After a refill (a token a second) k1 gets through again.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let resp = send("k1").await;
        let status = resp.status().as_u16();
        *statuses.entry(status).or_default() += 1;
        if status == 200 {
            break;
        }
        assert_eq!(status, 429);
        assert!(Instant::now() < deadline, "never refilled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let text = metrics(&proxy).await;
    let series = |s: &str| sample(&text, s).unwrap_or_else(|| panic!("{s} missing:\n{text}"));
    assert_eq!(
        series(r#"wasmgate_filter_rate_limit_allowed_total{filter="rl"}"#),
        f64::from(statuses[&200])
    );
    assert_eq!(
        series(r#"wasmgate_filter_rate_limit_limited_total{filter="rl"}"#),
        f64::from(statuses[&429])
    );
}
