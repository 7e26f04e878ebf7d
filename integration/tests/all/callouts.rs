//! HTTP callouts through the real proxy: the ext-auth filter asks an authorization service for
//! every request (ok, denied, timeout, service down), pausing the request until the answer.

use std::time::{Duration, Instant};

use serde_json::json;
use wasmgate_integration::client;
use wasmgate_integration::filter;
use wasmgate_integration::origin::Origin;
use wasmgate_integration::proxy::{Proxy, free_port};

fn ext_auth(name: &str, config: serde_json::Value) -> String {
    format!(
        "  - name: {name}\n    wasm: {}\n    configuration: '{config}'\n",
        filter("ext_auth")
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn ext_auth_allows_denies_and_fails_closed() {
    let origin = Origin::start().await;
    let auth = Origin::start_named("auth").await;
    let down = free_port();
    let filters = [
        ext_auth(
            "allow",
            json!({"upstream": "auth", "path": "/status/200", "copy_headers": ["x-origin-name"],
                   "forward_headers": ["authorization"]}),
        ),
        ext_auth("deny", json!({"upstream": "auth", "path": "/status/403"})),
        ext_auth(
            "slow",
            json!({"upstream": "auth", "path": "/slow/3000", "timeout_ms": 200}),
        ),
        ext_auth("down", json!({"upstream": "down", "path": "/status/200"})),
        ext_auth("unknown", json!({"upstream": "no-such-upstream"})),
        ext_auth("open", json!({"upstream": "down", "fail_open": true})),
    ]
    .concat();
    let config = format!(
        r#"listen: "{{listen}}"
admin: "{{admin}}"
threads: 2
upstreams:
  origin:
    endpoints: ["{}"]
  auth:
    endpoints: ["{}"]
  down:
    endpoints: ["127.0.0.1:{down}"]
filters:
{filters}
routes:
  - match: {{path_prefix: /allow}}
    upstream: origin
    filters: [allow]
  - match: {{path_prefix: /deny}}
    upstream: origin
    filters: [deny]
  - match: {{path_prefix: /slow}}
    upstream: origin
    filters: [slow]
  - match: {{path_prefix: /down}}
    upstream: origin
    filters: [down]
  - match: {{path_prefix: /unknown}}
    upstream: origin
    filters: [unknown]
  - match: {{path_prefix: /open}}
    upstream: origin
    filters: [open]
"#,
        origin.endpoint(),
        auth.endpoint()
    );
    let mut proxy = Proxy::start(&config);
    let http = client::http();

    // Allowed: the request waits for the check, then goes on with the copied header.
    let resp = http
        .get(proxy.url("/allow/x"))
        .header("authorization", "Bearer t")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = origin.last();
    assert_eq!(seen.path, "/allow/x");
    assert_eq!(seen.header("x-origin-name"), Some("auth"));
    let check = auth.last();
    assert_eq!(check.path, "/status/200");
    assert_eq!(check.header("x-original-path"), Some("/allow/x"));
    assert_eq!(check.header("authorization"), Some("Bearer t"));
    assert_eq!(check.header("host"), Some("ext-auth"));

    // Denied: the service's status goes to the client; the origin never sees the request.
    let before = origin.received().len();
    let resp = http.get(proxy.url("/deny")).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(client::header_all(&resp, "x-ext-auth"), ["denied"]);
    assert_eq!(resp.text().await.unwrap(), "access denied\n");
    assert_eq!(origin.received().len(), before);

    // Timeout: the filter's 200 ms timeout, not the service's 3 s.
    let started = Instant::now();
    let resp = http.get(proxy.url("/slow")).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(
        proxy.log().contains("authorization call failed: timeout"),
        "{}",
        proxy.log()
    );

    // The service is down: the call fails, the filter answers its failure status.
    let resp = http.get(proxy.url("/down")).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.text().await.unwrap(), "authorization unavailable\n");

    // An upstream that is not in the configuration cannot be called.
    let resp = http.get(proxy.url("/unknown")).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert!(
        proxy
            .log()
            .contains("cannot call no-such-upstream: BadArgument"),
        "{}",
        proxy.log()
    );

    // fail_open in the filter's own configuration lets the request through.
    let resp = http.get(proxy.url("/open")).send().await.unwrap();
    assert_eq!(resp.status(), 200);

    // Many concurrent checks.
    let mut tasks = Vec::new();
    for i in 0..30 {
        let http = http.clone();
        let url = proxy.url(&format!("/allow/{i}"));
        tasks.push(tokio::spawn(async move {
            http.get(url).send().await.map(|r| r.status())
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), 200);
    }
    assert!(proxy.is_alive());
}
