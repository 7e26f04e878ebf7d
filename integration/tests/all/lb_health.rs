//! Issue 11, active health checks: an endpoint answering 503 to its checks is marked
//! unhealthy after `unhealthy_threshold` checks and healthy again after `healthy_threshold`,
//! traffic follows, the admin API, metrics and log say so; when every endpoint is unhealthy
//! all are tried (panic mode); health survives a reload for an unchanged endpoint.

use std::time::Duration;

use wasmgate_integration::proxy::Proxy;

use crate::lb_support::{
    Backend, HEALTH_PATH, config, endpoint, endpoints, log_lines_with, metric, metrics, reload,
    spread, upstreams, wait_endpoint,
};

/// A `health_check:` block.
fn health_check(interval_ms: u64, unhealthy: u32, healthy: u32) -> String {
    format!(
        "    health_check:\n      path: {HEALTH_PATH}\n      interval_ms: {interval_ms}\n      timeout_ms: 1000\n      unhealthy_threshold: {unhealthy}\n      healthy_threshold: {healthy}\n      expected_statuses: [\"200-299\"]\n"
    )
}

async fn healthy_gauge(proxy: &Proxy, endpoint: &str) -> Option<f64> {
    metric(
        &metrics(proxy).await,
        "wasmgate_upstream_endpoint_healthy",
        &[("upstream", "api"), ("endpoint", endpoint)],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_check_marks_an_endpoint_unhealthy_then_healthy_again() {
    let sick = Backend::start("sick").await;
    let well = Backend::start("well").await;
    let upstream = format!(
        "{}{}",
        endpoints(&[sick.endpoint(), well.endpoint()]),
        health_check(200, 3, 2)
    );
    let proxy = Proxy::start(&config(&upstream, "", ""));
    let healthy = |e: &serde_json::Value| e["healthy"] == true;
    let unhealthy = |e: &serde_json::Value| e["healthy"] == false;
    assert!(
        wait_endpoint(&proxy, &sick.endpoint(), Duration::from_secs(10), healthy)
            .await
            .is_some(),
        "starts healthy: {}",
        upstreams(&proxy).await
    );
    // Checks run on their own.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while sick.health_checks() < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(sick.health_checks() >= 2, "no health checks arrived");

    sick.set_health(503);
    let checks_at_flip = sick.health_checks();
    let took = wait_endpoint(&proxy, &sick.endpoint(), Duration::from_secs(15), unhealthy).await;
    let checks = sick.health_checks() - checks_at_flip;
    assert!(
        took.is_some(),
        "never marked unhealthy: {}",
        upstreams(&proxy).await
    );
    assert!(
        checks >= 3,
        "marked unhealthy after {checks} failed checks, before unhealthy_threshold (3)"
    );
    assert_eq!(healthy_gauge(&proxy, &sick.endpoint()).await, Some(0.0));
    assert_eq!(healthy_gauge(&proxy, &well.endpoint()).await, Some(1.0));
    let lines = log_lines_with(&proxy, &[&sick.endpoint()]);
    assert!(
        lines
            .iter()
            .any(|l| l.to_ascii_lowercase().contains("health")),
        "no log line about the endpoint's health:\n{}",
        proxy.log()
    );

    // No traffic to the unhealthy endpoint.
    let served_before = sick.requests();
    let seen = spread(&proxy, "/t", &[], 60, 2).await;
    assert_eq!(seen.get("well"), Some(&60), "{seen:?}");
    assert_eq!(sick.requests(), served_before);

    sick.set_health(200);
    let checks_at_flip = sick.health_checks();
    let took = wait_endpoint(&proxy, &sick.endpoint(), Duration::from_secs(15), healthy).await;
    let checks = sick.health_checks() - checks_at_flip;
    assert!(
        took.is_some(),
        "never healthy again: {}",
        upstreams(&proxy).await
    );
    assert!(
        checks >= 2,
        "healthy again after {checks} passed checks, before healthy_threshold (2)"
    );
    assert_eq!(healthy_gauge(&proxy, &sick.endpoint()).await, Some(1.0));
    let seen = spread(&proxy, "/t", &[], 60, 2).await;
    assert!(
        seen.get("sick").copied().unwrap_or(0) >= 10,
        "traffic is back on the recovered endpoint: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn when_every_endpoint_is_unhealthy_all_are_tried() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    a.set_health(503);
    b.set_health(500);
    let upstream = format!(
        "{}{}",
        endpoints(&[a.endpoint(), b.endpoint()]),
        health_check(100, 1, 1)
    );
    let proxy = Proxy::start(&config(&upstream, "", ""));
    let unhealthy = |e: &serde_json::Value| e["healthy"] == false;
    for backend in [&a, &b] {
        assert!(
            wait_endpoint(
                &proxy,
                &backend.endpoint(),
                Duration::from_secs(10),
                unhealthy
            )
            .await
            .is_some(),
            "{} never unhealthy: {}",
            backend.name(),
            upstreams(&proxy).await
        );
    }
    // Both are still up for real traffic (only their checks fail): panic mode serves.
    let seen = spread(&proxy, "/p", &[], 40, 2).await;
    let served = seen.get("a").copied().unwrap_or(0) + seen.get("b").copied().unwrap_or(0);
    assert_eq!(served, 40, "panic mode tries every endpoint: {seen:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn health_survives_a_reload_for_an_unchanged_endpoint() {
    let sick = Backend::start("sick").await;
    let well = Backend::start("well").await;
    sick.set_health(503);
    // Slow checks: after a reload that forgot the state, the endpoint would be back to its
    // initial state for several seconds.
    let upstream = format!(
        "{}{}",
        endpoints(&[sick.endpoint(), well.endpoint()]),
        health_check(1000, 2, 2)
    );
    let first = config(&upstream, "", "");
    let proxy = Proxy::start_with(&first, &["--no-watch"]);
    let unhealthy = |e: &serde_json::Value| e["healthy"] == false;
    assert!(
        wait_endpoint(&proxy, &sick.endpoint(), Duration::from_secs(15), unhealthy)
            .await
            .is_some(),
        "never unhealthy: {}",
        upstreams(&proxy).await
    );
    let other = Backend::start("other").await;
    let second = config(
        &upstream,
        &format!("  other:\n    endpoints: [\"{}\"]\n", other.endpoint()),
        "  - match: {path_prefix: /other/}\n    upstream: other\n    filters: []\n",
    );
    proxy.write_config(&second);
    let outcome = reload(&proxy).await;
    assert_eq!(outcome["result"], "ok", "{outcome}");
    // At once after the reload: still unhealthy, and no traffic to it.
    let all = upstreams(&proxy).await;
    let entry = endpoint(&all, "api", &sick.endpoint())
        .unwrap_or_else(|| panic!("sick in /upstreams: {all}"));
    assert_eq!(
        entry["healthy"], false,
        "health was reset by the reload: {all}"
    );
    let served_before = sick.requests();
    let seen = spread(&proxy, "/t", &[], 20, 1).await;
    assert_eq!(seen.get("well"), Some(&20), "{seen:?}");
    assert_eq!(sick.requests(), served_before);
    assert_eq!(
        who(&proxy, "/other/x").await,
        "other",
        "the reload took effect"
    );
}

async fn who(proxy: &Proxy, path: &str) -> String {
    crate::lb_support::who_answers(&wasmgate_integration::client::http(), &proxy.url(path), &[])
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn when_every_endpoint_is_ejected_all_are_still_tried() {
    // Both answer 503 to real traffic: one failure ejects each (for a minute). Panic mode
    // still sends requests to them, so the client gets their 503, not a proxy-made 502.
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    a.set_status(503);
    b.set_status(503);
    let upstream = format!(
        "{}    outlier:\n      consecutive_failures: 1\n      ejection_ms: 60000\n",
        endpoints(&[a.endpoint(), b.endpoint()])
    );
    let proxy = Proxy::start(&config(&upstream, "", ""));
    let http = wasmgate_integration::client::http();
    for _ in 0..4 {
        let _ = http.get(proxy.url("/e")).send().await;
    }
    let ejected = |e: &serde_json::Value| e["ejected"] == true;
    for backend in [&a, &b] {
        assert!(
            wait_endpoint(&proxy, &backend.endpoint(), Duration::from_secs(5), ejected)
                .await
                .is_some(),
            "{} not ejected: {}",
            backend.name(),
            upstreams(&proxy).await
        );
    }
    let served = a.requests() + b.requests();
    for _ in 0..10 {
        let resp = http.get(proxy.url("/e")).send().await.expect("answers");
        assert_eq!(resp.status(), 503);
        assert_eq!(
            wasmgate_integration::client::header_all(&resp, "x-origin-name").len(),
            1,
            "the endpoint's own 503, not the proxy's"
        );
    }
    assert_eq!(a.requests() + b.requests(), served + 10);
}
