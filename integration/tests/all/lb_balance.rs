//! Issue 11, balancing: weighted round robin, random and least requests over every endpoint,
//! consistent hashing (Ketama) across a hot reload that adds an endpoint, hashing on the
//! source address, and a host name endpoint that is resolved and re-resolved.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use wasmgate_integration::client;
use wasmgate_integration::proxy::Proxy;

use crate::lb_support::{
    Backend, config, endpoint, endpoints, metric, metrics, reload, spread,
    upstream as find_upstream, upstreams, who_answers,
};

/// `share` of `total`, in percent.
fn percent(share: usize, total: usize) -> f64 {
    share as f64 * 100.0 / total.max(1) as f64
}

#[tokio::test(flavor = "multi_thread")]
async fn weighted_round_robin_follows_the_weights() {
    let light = Backend::start("light").await;
    let heavy = Backend::start("heavy").await;
    let upstream = format!(
        "    endpoints:\n      - \"{}\"\n      - {{address: \"{}\", weight: 3}}\n    balance: round_robin\n",
        light.endpoint(),
        heavy.endpoint()
    );
    let proxy = Proxy::start(&config(&upstream, "", ""));
    let seen = spread(&proxy, "/w", &[], 1000, 4).await;
    let total: usize = seen.values().sum();
    assert_eq!(total, 1000);
    assert_eq!(
        seen.get("light").copied().unwrap_or(0) + seen.get("heavy").copied().unwrap_or(0),
        1000,
        "every request answered by a backend: {seen:?}"
    );
    eprintln!("weighted 1:3 over 1000: {seen:?}");
    let light_share = percent(seen["light"], total);
    let heavy_share = percent(seen["heavy"], total);
    assert!(
        (light_share - 25.0).abs() <= 5.0 && (heavy_share - 75.0).abs() <= 5.0,
        "weights 1 and 3 should give 25% and 75% (±5): {seen:?}"
    );

    let all = upstreams(&proxy).await;
    let api = find_upstream(&all, "api").unwrap_or_else(|| panic!("no api in /upstreams: {all}"));
    assert_eq!(api["balance"], "round_robin", "{all}");
    let light_entry = endpoint(&all, "api", &light.endpoint()).expect("light in /upstreams");
    let heavy_entry = endpoint(&all, "api", &heavy.endpoint()).expect("heavy in /upstreams");
    assert_eq!(light_entry["weight"], 1, "{all}");
    assert_eq!(heavy_entry["weight"], 3, "{all}");
    assert_eq!(heavy_entry["endpoint"], heavy.endpoint(), "{all}");
    assert_eq!(
        heavy_entry["healthy"], true,
        "no health_check: healthy: {all}"
    );
    assert_eq!(heavy_entry["ejected"], false, "{all}");
    assert!(heavy_entry["ejected_until_unix_ms"].is_null(), "{all}");
    assert_eq!(
        heavy_entry["active_requests"], 0,
        "nothing in flight: {all}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn random_and_least_requests_use_every_endpoint() {
    for balance in ["random", "least_requests"] {
        let a = Backend::start("a").await;
        let b = Backend::start("b").await;
        let upstream = format!(
            "{}    balance: {balance}\n",
            endpoints(&[a.endpoint(), b.endpoint()])
        );
        let proxy = Proxy::start(&config(&upstream, "", ""));
        let seen = spread(&proxy, "/r", &[], 200, 4).await;
        assert_eq!(
            seen.get("a").copied().unwrap_or(0) + seen.get("b").copied().unwrap_or(0),
            200,
            "{balance}: every request answered: {seen:?}"
        );
        for name in ["a", "b"] {
            let share = percent(seen.get(name).copied().unwrap_or(0), 200);
            assert!(
                share >= 15.0,
                "{balance}: {name} got {share}% of the requests: {seen:?}"
            );
        }
        let all = upstreams(&proxy).await;
        assert_eq!(
            find_upstream(&all, "api").map(|u| u["balance"].clone()),
            Some(balance.into()),
            "{all}"
        );
    }
}

/// Which backend answers each key (header `x-user`), asking each key twice (the answers must
/// agree).
async fn placement(proxy: &Proxy, keys: &[String]) -> BTreeMap<String, String> {
    let http = client::http();
    let url = proxy.url("/h");
    let mut out = BTreeMap::new();
    for key in keys {
        let headers = [("x-user".to_string(), key.clone())];
        let first = who_answers(&http, &url, &headers).await;
        let second = who_answers(&http, &url, &headers).await;
        assert_eq!(first, second, "key {key} moved between two requests");
        out.insert(key.clone(), first);
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn consistent_hashing_keeps_keys_on_their_endpoint_when_one_is_added() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let c = Backend::start("c").await;
    let hashed = "    balance: hash\n    hash: {header: x-user}\n";
    let two = config(
        &format!("{}{hashed}", endpoints(&[a.endpoint(), b.endpoint()])),
        "",
        "",
    );
    let three = config(
        &format!(
            "{}{hashed}",
            endpoints(&[a.endpoint(), b.endpoint(), c.endpoint()])
        ),
        "",
        "",
    );
    let proxy = Proxy::start_with(&two, &["--no-watch"]);
    let keys: Vec<String> = (0..300).map(|i| format!("user-{i}")).collect();
    let before = placement(&proxy, &keys).await;
    let on_a = before.values().filter(|w| *w == "a").count();
    let on_b = before.values().filter(|w| *w == "b").count();
    assert_eq!(on_a + on_b, keys.len(), "{before:?}");
    assert!(
        percent(on_a, keys.len()) >= 20.0 && percent(on_b, keys.len()) >= 20.0,
        "both endpoints get keys: a {on_a}, b {on_b}"
    );

    proxy.write_config(&three);
    let outcome = reload(&proxy).await;
    assert_eq!(outcome["result"], "ok", "{outcome}");
    let all = upstreams(&proxy).await;
    assert!(
        endpoint(&all, "api", &c.endpoint()).is_some(),
        "c is in /upstreams after the reload: {all}"
    );

    let after = placement(&proxy, &keys).await;
    let mut moved_to_c = 0;
    let mut wrong = Vec::new();
    for key in &keys {
        match after[key].as_str() {
            "c" => moved_to_c += 1,
            now if now == before[key] => {}
            now => wrong.push(format!("{key}: {} -> {now}", before[key])),
        }
    }
    assert!(
        wrong.is_empty(),
        "keys that did not go to the new endpoint must stay where they were: {wrong:?}"
    );
    let moved = percent(moved_to_c, keys.len());
    eprintln!("hash: a {on_a}, b {on_b} of 300; {moved_to_c} moved to c");
    assert!(
        moved > 5.0 && moved <= 50.0,
        "about a third of the keys should move to c, {moved}% did"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hashing_on_the_source_address_sticks_to_one_endpoint() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let upstream = format!(
        "{}    balance: hash\n    hash: {{source_ip: true}}\n",
        endpoints(&[a.endpoint(), b.endpoint()])
    );
    let proxy = Proxy::start(&config(&upstream, "", ""));
    // Every request comes from 127.0.0.1, over new and reused connections alike.
    let seen = spread(&proxy, "/s", &[], 60, 3).await;
    assert_eq!(seen.len(), 1, "one source, one endpoint: {seen:?}");
    assert!(
        seen.keys().all(|k| k == "a" || k == "b"),
        "answered by a backend: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_name_endpoint_is_resolved_and_re_resolved() {
    let backend = Backend::start("named").await;
    let name = format!("localhost:{}", backend.addr.port());
    let upstream = format!(
        "    endpoints: [\"{name}\"]\n    resolve_interval_ms: 100\n    retries: {{attempts: 0}}\n"
    );
    let proxy = Proxy::start(&config(&upstream, "", ""));
    let all = upstreams(&proxy).await;
    let entry = endpoint(&all, "api", &backend.endpoint())
        .unwrap_or_else(|| panic!("localhost resolved to 127.0.0.1: {all}"));
    assert_eq!(entry["endpoint"], name, "{all}");

    // Requests keep working across many resolve intervals (about 20 in 2 s).
    let http = client::http();
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut sent = 0;
    while started.elapsed() < Duration::from_secs(2) && sent < 2000 {
        sent += 1;
        let who = who_answers(&http, &proxy.url("/dns"), &[]).await;
        if who != "named" {
            failures.push(who);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(sent >= 20, "only {sent} requests in 2 s");
    assert!(
        failures.is_empty(),
        "{} of {sent} failed across re-resolutions: {:?}\n{}",
        failures.len(),
        &failures[..failures.len().min(5)],
        proxy.log()
    );
    let all = upstreams(&proxy).await;
    let entry = endpoint(&all, "api", &backend.endpoint())
        .unwrap_or_else(|| panic!("the endpoint is still there after re-resolution: {all}"));
    assert_eq!(entry["endpoint"], name, "{all}");
    let text = metrics(&proxy).await;
    assert_eq!(
        metric(
            &text,
            "wasmgate_upstream_endpoint_healthy",
            &[("upstream", "api"), ("endpoint", &name)]
        ),
        Some(1.0),
        "the health gauge is labelled with the configured endpoint"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hashed_keys_leave_an_unhealthy_endpoint_and_come_back_to_it() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let c = Backend::start("c").await;
    let upstream = format!(
        "{}    balance: hash\n    hash: {{header: x-user}}\n    health_check:\n      path: {}\n      interval_ms: 100\n      unhealthy_threshold: 1\n      healthy_threshold: 1\n",
        endpoints(&[a.endpoint(), b.endpoint(), c.endpoint()]),
        crate::lb_support::HEALTH_PATH
    );
    let proxy = Proxy::start(&config(&upstream, "", ""));
    let keys: Vec<String> = (0..150).map(|i| format!("key-{i}")).collect();
    let before = placement(&proxy, &keys).await;
    let on_c = before.values().filter(|w| *w == "c").count();
    assert!(on_c >= 10, "c has keys: {on_c} of 150");

    c.set_health(503);
    let down =
        crate::lb_support::wait_endpoint(&proxy, &c.endpoint(), Duration::from_secs(10), |e| {
            e["healthy"] == false
        })
        .await;
    assert!(
        down.is_some(),
        "c never unhealthy: {}",
        upstreams(&proxy).await
    );
    let during = placement(&proxy, &keys).await;
    let mut wrong = Vec::new();
    for key in &keys {
        let (then, now) = (&before[key], &during[key]);
        let ok = if then == "c" {
            now == "a" || now == "b"
        } else {
            now == then
        };
        if !ok {
            wrong.push(format!("{key}: {then} -> {now}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "only c's keys move while c is unhealthy, to a live endpoint: {wrong:?}"
    );

    c.set_health(200);
    let up =
        crate::lb_support::wait_endpoint(&proxy, &c.endpoint(), Duration::from_secs(10), |e| {
            e["healthy"] == true
        })
        .await;
    assert!(
        up.is_some(),
        "c never healthy again: {}",
        upstreams(&proxy).await
    );
    let after = placement(&proxy, &keys).await;
    assert_eq!(after, before, "every key is back where it was");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_that_removes_an_endpoint_stops_its_traffic() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let both = config(&endpoints(&[a.endpoint(), b.endpoint()]), "", "");
    let one = config(&endpoints(&[a.endpoint()]), "", "");
    let proxy = Proxy::start_with(&both, &["--no-watch"]);
    let seen = spread(&proxy, "/r", &[], 20, 1).await;
    assert_eq!(seen.get("b"), Some(&10), "{seen:?}");
    proxy.write_config(&one);
    let outcome = reload(&proxy).await;
    assert_eq!(outcome["result"], "ok", "{outcome}");
    let all = upstreams(&proxy).await;
    assert!(
        endpoint(&all, "api", &b.endpoint()).is_none(),
        "b is gone: {all}"
    );
    let served = b.requests();
    let seen = spread(&proxy, "/r", &[], 20, 2).await;
    assert_eq!(seen.get("a"), Some(&20), "{seen:?}");
    assert_eq!(b.requests(), served);
}

#[tokio::test(flavor = "multi_thread")]
async fn h2c_endpoints_are_balanced_and_health_checked() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let upstream = format!(
        "{}    protocol: http2\n    health_check:\n      path: {}\n      interval_ms: 100\n      unhealthy_threshold: 1\n      healthy_threshold: 1\n",
        endpoints(&[a.endpoint(), b.endpoint()]),
        crate::lb_support::HEALTH_PATH
    );
    let proxy = Proxy::start(&config(&upstream, "", ""));
    let deadline = Instant::now() + Duration::from_secs(10);
    while (a.health_checks() < 2 || b.health_checks() < 2) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        a.health_checks() >= 2 && b.health_checks() >= 2,
        "checks ran"
    );
    let all = upstreams(&proxy).await;
    for backend in [&a, &b] {
        let entry = endpoint(&all, "api", &backend.endpoint()).expect("in /upstreams");
        assert_eq!(entry["healthy"], true, "{all}\n{}", proxy.log());
    }
    let seen = spread(&proxy, "/h2", &[], 40, 2).await;
    assert_eq!(seen.get("a"), Some(&20), "{seen:?}");
    assert_eq!(seen.get("b"), Some(&20), "{seen:?}");
}
