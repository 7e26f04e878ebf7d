//! A filter that traps fails its request (503) or is skipped (fail_open), its VM is replaced,
//! and the proxy keeps serving.

use serde_json::json;
use wasmgate_integration::client;
use wasmgate_integration::origin::Origin;
use wasmgate_integration::proxy::Proxy;

use crate::support::{add_header, config, testkit};

fn trapper(extra: &str) -> String {
    testkit(
        "trapper",
        json!({
            "on_request_headers": [
                {"op": "add", "map": "request", "key": "x-trapper", "value": "ran"},
                {"op": "panic", "when": {"request_header": "x-trap"}}
            ]
        }),
        extra,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trap_gives_503_then_the_next_request_succeeds() {
    let origin = Origin::start().await;
    let mut proxy = Proxy::start(&config(&origin, &trapper("")));
    let http = client::http();

    let resp = http
        .get(proxy.url("/"))
        .header("x-trap", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert!(origin.received().is_empty());

    for _ in 0..3 {
        let resp = http.get(proxy.url("/")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(origin.last().header("x-trapper"), Some("ran"));
    assert!(proxy.is_alive());
    assert!(
        proxy.wait_for_log("testkit panic", std::time::Duration::from_secs(2)),
        "the guest's panic message is logged:\n{}",
        proxy.log()
    );
    assert!(proxy.log().contains("filter failed, request failed"));

    let metrics = http
        .get(proxy.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            "wasmgate_filter_failures_total{filter=\"trapper\",kind=\"trap\",policy=\"closed\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("wasmgate_vm_faults_total{filter=\"trapper\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn fail_open_skips_a_trapping_filter() {
    let origin = Origin::start().await;
    let after = add_header("after", json!({"request": {"add": {"x-after": "yes"}}}));
    let filters = format!("{}{after}", trapper("    fail_open: true\n"));
    let proxy = Proxy::start(&config(&origin, &filters));
    let resp = client::http()
        .get(proxy.url("/"))
        .header("x-trap", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = origin.last();
    assert_eq!(
        seen.header("x-after"),
        Some("yes"),
        "later filters still run"
    );
    assert!(proxy.log().contains("skipped (fail_open)"));
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_requests_survive_a_trap_in_one_of_them() {
    let origin = Origin::start().await;
    let mut proxy = Proxy::start(&config(&origin, &trapper("")));
    let http = client::http();
    let mut tasks = Vec::new();
    for i in 0..40 {
        let http = http.clone();
        let url = proxy.url("/");
        tasks.push(tokio::spawn(async move {
            let mut req = http.get(url);
            if i % 10 == 0 {
                req = req.header("x-trap", "1");
            }
            (i % 10 == 0, req.send().await.map(|r| r.status().as_u16()))
        }));
    }
    for task in tasks {
        let (trap, status) = task.await.unwrap();
        let status = status.expect("every request gets a response");
        if trap {
            assert_eq!(status, 503);
        } else {
            // A request whose context lived in the VM that trapped loses it: fail-closed too.
            assert!(status == 200 || status == 503, "status {status}");
        }
    }
    for _ in 0..5 {
        assert_eq!(http.get(proxy.url("/")).send().await.unwrap().status(), 200);
    }
    assert!(proxy.is_alive());
}
