//! Issue 11, failover under load: one of two endpoints is killed while clients send requests
//! continuously. With retries and ejection configured the clients see 0 failed requests, the
//! admin API shows the dead endpoint ejected (passive) or unhealthy (active) within the
//! thresholds, and it gets traffic again once it listens again on the same port.

use std::time::{Duration, Instant};

use wasmgate_integration::load::{Load, LoadOptions};
use wasmgate_integration::proxy::Proxy;

use crate::lb_support::{
    Backend, HEALTH_PATH, config, endpoints, metric, metrics, upstreams, wait_endpoint,
};

const RETRIES: &str = "    retries:\n      attempts: 1\n      on: [connect_failure, reset_before_response, \"502\", \"503\", \"504\"]\n    connect_timeout_ms: 1000\n";

fn load(proxy: &Proxy) -> Load {
    Load::start(
        proxy.url("/load"),
        LoadOptions {
            clients: 4,
            pause: Duration::from_millis(5),
            max_time: Duration::from_secs(60),
            max_requests: 200_000,
            keep_alive: true,
            check_version: false,
        },
    )
}

/// Waits up to `timeout` for `backend` to serve more than `than` requests.
async fn wait_traffic(backend: &Backend, than: usize, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if backend.requests() > than {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_endpoint_is_ejected_passively_and_comes_back() {
    let mut victim = Backend::start("victim").await;
    let other = Backend::start("other").await;
    let upstream = format!(
        "{}    outlier:\n      consecutive_failures: 3\n      ejection_ms: 1500\n{RETRIES}",
        endpoints(&[victim.endpoint(), other.endpoint()])
    );
    let proxy = Proxy::start(&config(&upstream, "", ""));
    let load = load(&proxy);
    assert!(
        wait_traffic(&victim, 20, Duration::from_secs(10)).await,
        "the load reaches both endpoints"
    );

    victim.kill();
    let ejected =
        |e: &serde_json::Value| e["ejected"] == true && e["ejected_until_unix_ms"].is_u64();
    let took = wait_endpoint(&proxy, &victim.endpoint(), Duration::from_secs(10), ejected).await;
    assert!(
        took.is_some(),
        "the dead endpoint was never shown ejected: {}\n{}",
        upstreams(&proxy).await,
        proxy.log()
    );
    eprintln!("ejected after {took:?}");
    let text = metrics(&proxy).await;
    let ejections = metric(
        &text,
        "wasmgate_upstream_ejections_total",
        &[("upstream", "api"), ("endpoint", &victim.endpoint())],
    );
    assert!(
        ejections.is_some_and(|n| n >= 1.0),
        "ejections: {ejections:?}"
    );

    tokio::time::sleep(Duration::from_millis(500)).await;
    victim.revive().await;
    let served = victim.requests();
    assert!(
        wait_traffic(&victim, served, Duration::from_secs(15)).await,
        "no traffic to the endpoint after it came back: {}",
        upstreams(&proxy).await
    );
    let back = wait_endpoint(&proxy, &victim.endpoint(), Duration::from_secs(10), |e| {
        e["ejected"] == false
    })
    .await;
    assert!(back.is_some(), "still ejected: {}", upstreams(&proxy).await);

    let report = load.stop().await;
    eprintln!(
        "load: {} requests, {} failed",
        report.requests, report.failures
    );
    assert!(report.requests > 100, "{report:?}");
    assert_eq!(
        report.failures,
        0,
        "failed requests while an endpoint died: {:?}\n{}",
        report.failure_samples,
        proxy.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_endpoint_is_marked_unhealthy_within_the_thresholds_and_comes_back() {
    let mut victim = Backend::start("victim").await;
    let other = Backend::start("other").await;
    // Unhealthy after 2 failed checks 200 ms apart (each up to 500 ms): about a second.
    let upstream = format!(
        "{}    health_check:\n      path: {HEALTH_PATH}\n      interval_ms: 200\n      timeout_ms: 500\n      unhealthy_threshold: 2\n      healthy_threshold: 2\n    outlier:\n      consecutive_failures: 3\n      ejection_ms: 1000\n{RETRIES}",
        endpoints(&[victim.endpoint(), other.endpoint()])
    );
    let proxy = Proxy::start(&config(&upstream, "", ""));
    let healthy = |e: &serde_json::Value| e["healthy"] == true && e["ejected"] == false;
    assert!(
        wait_endpoint(&proxy, &victim.endpoint(), Duration::from_secs(10), healthy)
            .await
            .is_some(),
        "healthy at first: {}",
        upstreams(&proxy).await
    );
    let load = load(&proxy);
    assert!(
        wait_traffic(&victim, 20, Duration::from_secs(10)).await,
        "the load reaches both endpoints"
    );

    victim.kill();
    let took = wait_endpoint(&proxy, &victim.endpoint(), Duration::from_secs(15), |e| {
        e["healthy"] == false
    })
    .await;
    let Some(took) = took else {
        panic!(
            "the dead endpoint was never shown unhealthy: {}\n{}",
            upstreams(&proxy).await,
            proxy.log()
        );
    };
    eprintln!("unhealthy after {took:?}");
    // The thresholds allow about 1 s; a shared, noisy machine gets a generous margin.
    assert!(
        took <= Duration::from_secs(6),
        "unhealthy only after {took:?} (2 checks at 200 ms, 500 ms timeout)"
    );
    let text = metrics(&proxy).await;
    assert_eq!(
        metric(
            &text,
            "wasmgate_upstream_endpoint_healthy",
            &[("upstream", "api"), ("endpoint", &victim.endpoint())]
        ),
        Some(0.0)
    );
    let retries = metric(
        &text,
        "wasmgate_upstream_retries_total",
        &[("upstream", "api")],
    );
    assert!(
        retries.is_some_and(|n| n >= 1.0),
        "requests to the dead endpoint were retried: {retries:?}"
    );

    tokio::time::sleep(Duration::from_millis(500)).await;
    victim.revive().await;
    let served = victim.requests();
    assert!(
        wait_endpoint(&proxy, &victim.endpoint(), Duration::from_secs(15), healthy)
            .await
            .is_some(),
        "never healthy again: {}",
        upstreams(&proxy).await
    );
    assert!(
        wait_traffic(&victim, served, Duration::from_secs(10)).await,
        "no traffic to the endpoint after it came back"
    );

    let report = load.stop().await;
    eprintln!(
        "load: {} requests, {} failed",
        report.requests, report.failures
    );
    assert!(report.requests > 100, "{report:?}");
    assert_eq!(
        report.failures,
        0,
        "failed requests while an endpoint died: {:?}\n{}",
        report.failure_samples,
        proxy.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_test_backend_can_be_killed_and_revived_on_its_port() {
    // A check of the harness: a killed backend refuses, a revived one answers on its port.
    let mut backend = Backend::start("b").await;
    let http = wasmgate_integration::client::http();
    let url = format!("http://{}/x", backend.addr);
    let resp = http.get(&url).send().await.expect("answers");
    assert_eq!(client_name(&resp), "b");
    backend.set_health(503);
    let health = format!("http://{}{HEALTH_PATH}", backend.addr);
    let resp = http.get(&health).send().await.expect("answers");
    assert_eq!(resp.status(), 503);
    assert_eq!((backend.requests(), backend.health_checks()), (1, 1));
    backend.kill();
    // A new client: the old one's kept-alive connection was closed by the kill.
    let fresh = wasmgate_integration::client::http();
    assert!(
        fresh.get(&url).send().await.is_err(),
        "a killed backend refuses"
    );
    backend.revive().await;
    let resp = fresh.get(&url).send().await.expect("answers again");
    assert_eq!(resp.status(), 200);
    assert_eq!(backend.requests(), 2);
}

fn client_name(resp: &reqwest::Response) -> String {
    wasmgate_integration::client::header_all(resp, "x-origin-name").join(",")
}
