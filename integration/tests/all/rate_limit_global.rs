//! Scale-out: two wasmgate replicas share one rate limit through Redis (via Webdis, reached by
//! the rate-limit filter's HTTP callout). A limit of N per window holds across both replicas
//! together, resets after the window, and with Redis gone each filter does what its
//! `on_store_error` says, with a log line and a metric.
//!
//! Needs `redis-server` and `webdis` (Debian packages of those names; `.ci/run` installs them;
//! elsewhere the test is skipped, with a message, if they are missing).

use std::time::{Duration, Instant};

use serde_json::json;
use wasmgate_integration::client;
use wasmgate_integration::filter;
use wasmgate_integration::origin::Origin;
use wasmgate_integration::proxy::Proxy;
use wasmgate_integration::redis::{missing, start_redis, start_webdis};

const LIMIT: usize = 5;
const WINDOW_MS: u64 = 3000;

/// The rate-limit filter named `name` in global mode with `on_store_error`.
fn filter_item(name: &str, on_store_error: &str) -> String {
    let configuration = json!({
        "mode": "global",
        "limit": LIMIT,
        "window_ms": WINDOW_MS,
        "key": {"header": "x-client"},
        "upstream": "webdis",
        "timeout_ms": 1000,
        "on_store_error": on_store_error,
    });
    format!(
        "  - name: {name}\n    wasm: {}\n    configuration: '{configuration}'\n",
        filter("rate_limit")
    )
}

/// Both replicas' configuration: `/open/…` limited by a filter that fails open, anything else
/// by one that fails closed.
fn replica_config(origin: &Origin, webdis_port: u16) -> String {
    format!(
        r#"listen: "{{listen}}"
admin: "{{admin}}"
threads: 2
upstreams:
  origin:
    endpoints: ["{}"]
  webdis:
    endpoints: ["127.0.0.1:{webdis_port}"]
filters:
{}{}
routes:
  - match: {{path_prefix: /open}}
    upstream: origin
    filters: [rl-open]
  - upstream: origin
    filters: [rl-closed]
"#,
        origin.endpoint(),
        filter_item("rl-open", "allow"),
        filter_item("rl-closed", "deny"),
    )
}

/// Sends `count` requests from `who`, alternating between the replicas; their statuses.
async fn alternate(replicas: &[&Proxy], path: &str, who: &str, count: usize) -> Vec<u16> {
    let http = client::http();
    let mut statuses = Vec::new();
    for i in 0..count {
        let resp = http
            .get(replicas[i % replicas.len()].url(path))
            .header("x-client", who)
            .send()
            .await
            .unwrap();
        statuses.push(resp.status().as_u16());
    }
    statuses
}

fn allowed(statuses: &[u16]) -> usize {
    statuses.iter().filter(|s| **s == 200).count()
}

/// The value of the sample line `series` of `proxy`'s `/metrics`.
async fn sample(proxy: &Proxy, series: &str) -> f64 {
    let text = client::http()
        .get(proxy.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_global_limit_holds_across_two_replicas_and_fails_as_configured_without_redis() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut redis) = start_redis(dir.path()) else {
        return missing("redis-server", "redis-server");
    };
    let Some(webdis) = start_webdis(dir.path(), redis.port) else {
        return missing("webdis", "webdis");
    };
    let origin = Origin::start().await;
    let config = replica_config(&origin, webdis.port);
    let (a, b) = (Proxy::start(&config), Proxy::start(&config));
    let replicas = [&a, &b];

    // A window: exactly LIMIT requests pass, whichever replica they reach.
    let started = Instant::now();
    let first = alternate(&replicas, "/x", "alice", LIMIT * 2 + 2).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_millis(WINDOW_MS),
        "the requests took {elapsed:?}, longer than one window: the test cannot judge"
    );
    assert_eq!(allowed(&first), LIMIT, "{first:?}");
    assert!(first[..LIMIT].iter().all(|s| *s == 200), "{first:?}");
    assert!(first[LIMIT..].iter().all(|s| *s == 429), "{first:?}");
    // Another key has its own window.
    assert_eq!(alternate(&replicas, "/x", "bob", 1).await, [200]);
    let limited_total: f64 = sample(
        &a,
        "wasmgate_filter_rate_limit_limited_total{filter=\"rl-closed\"}",
    )
    .await
        + sample(
            &b,
            "wasmgate_filter_rate_limit_limited_total{filter=\"rl-closed\"}",
        )
        .await;
    assert_eq!(limited_total as usize, LIMIT + 2);

    // The window ends: LIMIT more pass.
    tokio::time::sleep(Duration::from_millis(WINDOW_MS + 300).saturating_sub(started.elapsed()))
        .await;
    let second = alternate(&replicas, "/x", "alice", LIMIT + 3).await;
    assert_eq!(allowed(&second), LIMIT, "{second:?}");

    // Redis goes away (Webdis stays, and answers 503): fail closed and fail open.
    redis.stop();
    let closed = alternate(&replicas, "/x", "carol", 4).await;
    assert_eq!(closed, [503; 4], "on_store_error: deny");
    let open = alternate(&replicas, "/open", "carol", 4).await;
    assert_eq!(open, [200; 4], "on_store_error: allow");
    let logged = "the global store (upstream webdis) is unreachable";
    for replica in replicas {
        assert!(
            replica.wait_for_log(logged, Duration::from_secs(5)),
            "{}",
            replica.log()
        );
        for filter in ["rl-closed", "rl-open"] {
            let errors = sample(
                replica,
                &format!("wasmgate_filter_rate_limit_store_errors_total{{filter=\"{filter}\"}}"),
            )
            .await;
            assert!(errors >= 2.0, "{filter}: {errors}");
        }
    }
    drop(webdis);
}
