//! `upstreams:` keys: values, defaults, and each error at its key.

use std::time::Duration;

use super::status_range;
use crate::testing::{errors, ok};
use crate::{Balance, HashKey};

fn with_upstream(body: &str) -> String {
    format!("listen: 127.0.0.1:8080\nupstreams:\n  api:\n{body}routes:\n  - upstream: api\n")
}

#[test]
fn status_ranges_are_codes_or_inclusive_ranges() {
    assert_eq!(status_range("200"), Some((200, 200)));
    assert_eq!(status_range("200-399"), Some((200, 399)));
    for bad in ["", "20", "2000", "399-200", "600", "abc", "200-", "-200"] {
        assert_eq!(status_range(bad), None, "{bad}");
    }
}

#[test]
fn defaults_when_only_endpoints_are_given() {
    let c = ok(&with_upstream("    endpoints: [\"127.0.0.1:9000\"]\n"));
    let u = &c.upstreams[0];
    assert_eq!(u.endpoints[0].weight, 1);
    assert_eq!(u.balance, Balance::RoundRobin);
    assert!(u.tls.is_none() && u.health_check.is_none() && u.outlier.is_none());
    assert_eq!(u.retries.attempts, 0);
    assert!(u.retries.connect_failure && !u.retries.reset_before_response);
    assert_eq!(u.resolve_interval, Duration::from_secs(30));
    assert_eq!(u.keepalive.max_idle, 128);
    assert_eq!(u.keepalive.idle_timeout, Duration::from_secs(60));
}

#[test]
fn every_key_is_read() {
    let c = ok(&with_upstream(
        "    endpoints:
      - 127.0.0.1:9000
      - {address: \"localhost:9001\", weight: 3}
    balance: hash
    hash: {header: X-User}
    health_check:
      path: /healthz
      interval_ms: 500
      timeout_ms: 200
      healthy_threshold: 1
      unhealthy_threshold: 4
      expected_statuses: [200, \"300-302\"]
    outlier: {consecutive_failures: 2, ejection_ms: 1000}
    retries: {attempts: 3, on: [reset_before_response, 502, \"503\"]}
    resolve_interval_ms: 100
    keepalive: {max_idle: 0, idle_timeout_ms: 5}
",
    ));
    let u = &c.upstreams[0];
    assert_eq!(u.endpoints[1].address, "localhost:9001");
    assert_eq!(u.endpoints[1].weight, 3);
    assert!(u.endpoints[1].is_name() && !u.endpoints[0].is_name());
    assert_eq!(u.endpoints[1].host(), "localhost");
    assert_eq!(u.balance, Balance::Hash(HashKey::Header("x-user".into())));
    let hc = u.health_check.as_ref().expect("health_check");
    assert_eq!(hc.interval, Duration::from_millis(500));
    assert_eq!(hc.timeout, Duration::from_millis(200));
    assert_eq!((hc.healthy_threshold, hc.unhealthy_threshold), (1, 4));
    assert!(hc.expects(200) && hc.expects(301) && !hc.expects(204));
    let o = u.outlier.expect("outlier");
    assert_eq!(o.consecutive_failures, 2);
    assert_eq!(o.ejection, Duration::from_secs(1));
    assert_eq!(u.retries.attempts, 3);
    assert!(!u.retries.connect_failure && u.retries.reset_before_response);
    assert_eq!(u.retries.statuses, [502, 503]);
    assert_eq!(u.resolve_interval, Duration::from_millis(100));
    assert_eq!(u.keepalive.max_idle, 0);
}

#[test]
fn source_ip_hashing_and_ipv6_hosts() {
    let c = ok(&with_upstream(
        "    endpoints: [\"[::1]:80\"]\n    balance: hash\n    hash: {source_ip: true}\n",
    ));
    assert_eq!(c.upstreams[0].balance, Balance::Hash(HashKey::SourceIp));
    assert_eq!(c.upstreams[0].endpoints[0].host(), "::1");
    assert!(!c.upstreams[0].endpoints[0].is_name());
}

#[test]
fn each_error_is_placed_at_its_key() {
    let all = errors(&with_upstream(
        "    endpoints:
      - {address: \"a:1\", weight: 0}
      - {address: \"b:1\", wieght: 2}
    balance: fastest
    hash: {header: x}
",
    ));
    assert_eq!(
        all,
        [
            "wasmgate.yaml:6:26: upstreams.api.endpoints[1].wieght: unknown field `wieght`, expected `address` or `weight`",
        ],
        "serde stops at the first shape error"
    );
    let all = errors(&with_upstream(
        "    endpoints:
      - {address: \"a:1\", weight: 0}
    balance: fastest
    hash: {header: x}
    tls: {ca: nope.pem, client_cert: c.pem}
    health_check: {path: healthz, interval_ms: 10, expected_statuses: [\"500-200\"]}
    outlier: {consecutive_failures: 0}
    retries: {attempts: 11, on: [timeout]}
    resolve_interval_ms: 99
    keepalive: {max_idle: -1}
",
    ));
    let expected = [
        "wasmgate.yaml:5:26: upstreams.api.endpoints[0].weight: weight must be between 1 and 1000, got 0",
        r#"wasmgate.yaml:6:5: upstreams.api.balance: unknown balance "fastest" (known: round_robin, random, least_requests, hash)"#,
        "wasmgate.yaml:7:5: upstreams.api.hash: hash: applies only to balance: hash",
        "wasmgate.yaml:8:5: upstreams.api.tls: client_cert and client_key go together: give both or neither",
        "wasmgate.yaml:8:11: upstreams.api.tls.ca: ca file not found: nope.pem",
        "wasmgate.yaml:8:25: upstreams.api.tls.client_cert: client_cert file not found: c.pem",
        r#"wasmgate.yaml:9:20: upstreams.api.health_check.path: health check path must start with "/" and contain no spaces or control bytes, got "healthz""#,
        "wasmgate.yaml:9:35: upstreams.api.health_check.interval_ms: interval_ms must be between 100 and 3600000, got 10",
        r#"wasmgate.yaml:9:72: upstreams.api.health_check.expected_statuses[0]: invalid status "500-200": expected a code from 100 to 599 or a range such as "200-399""#,
        "wasmgate.yaml:10:15: upstreams.api.outlier.consecutive_failures: consecutive_failures must be between 1 and 1000, got 0",
        "wasmgate.yaml:11:15: upstreams.api.retries.attempts: attempts must be between 0 and 10, got 11",
        r#"wasmgate.yaml:11:34: upstreams.api.retries.on[0]: unknown retry condition "timeout" (known: connect_failure, reset_before_response, "502", "503", "504")"#,
        "wasmgate.yaml:12:5: upstreams.api.resolve_interval_ms: resolve_interval_ms must be between 100 and 86400000, got 99",
        "wasmgate.yaml:13:17: upstreams.api.keepalive.max_idle: max_idle must be between 0 and 100000, got -1",
    ];
    assert_eq!(all, expected);
}

#[test]
fn hash_balance_needs_exactly_one_key() {
    let missing = errors(&with_upstream(
        "    endpoints: [\"a:1\"]\n    balance: hash\n",
    ));
    assert_eq!(
        missing,
        [
            "wasmgate.yaml:5:5: upstreams.api.balance: balance: hash needs a hash: mapping ({header: NAME} or {source_ip: true})"
        ]
    );
    let both = errors(&with_upstream(
        "    endpoints: [\"a:1\"]\n    balance: hash\n    hash: {header: x, source_ip: true}\n",
    ));
    assert_eq!(
        both,
        [
            "wasmgate.yaml:6:5: upstreams.api.hash: hash: give exactly one of header: NAME or source_ip: true"
        ]
    );
}
