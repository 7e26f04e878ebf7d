//! Requests through a proxy with no filters: nothing is changed on the way.

use wasmgate_integration::client;
use wasmgate_integration::origin::Origin;
use wasmgate_integration::proxy::Proxy;

#[tokio::test(flavor = "multi_thread")]
async fn get_and_post_pass_through_unchanged() {
    let origin = Origin::start().await;
    let proxy = Proxy::start(&crate::support::config(&origin, "  []"));
    let http = client::http();

    let resp = http
        .get(proxy.url("/plain?x=1"))
        .header("x-client", "c")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(client::header_all(&resp, "x-origin"), ["1"]);
    assert_eq!(client::header_all(&resp, "server"), ["test-origin"]);
    let seen = origin.last();
    assert_eq!(
        (seen.method.as_str(), seen.path.as_str()),
        ("GET", "/plain?x=1")
    );
    assert_eq!(seen.header("x-client"), Some("c"));

    let body = vec![b'z'; 100_000];
    let resp = http
        .post(proxy.url("/upload"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(origin.last().body, body);
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_status_codes_pass_through() {
    let origin = Origin::start().await;
    let proxy = Proxy::start(&crate::support::config(&origin, "  []"));
    let resp = client::http()
        .get(proxy.url("/status/418"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 418);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_upstream_gives_502_and_the_proxy_keeps_serving() {
    let dead = wasmgate_integration::proxy::free_port();
    let config = format!(
        r#"listen: "{{listen}}"
admin: "{{admin}}"
upstreams:
  dead:
    endpoints: ["127.0.0.1:{dead}"]
routes:
  - upstream: dead
"#
    );
    let mut proxy = Proxy::start(&config);
    for _ in 0..3 {
        let resp = client::http().get(proxy.url("/")).send().await.unwrap();
        assert_eq!(resp.status(), 502);
    }
    assert!(proxy.is_alive());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_matching_no_route_gets_404() {
    let origin = Origin::start().await;
    let config = format!(
        r#"listen: "{{listen}}"
admin: "{{admin}}"
upstreams:
  origin:
    endpoints: ["{}"]
routes:
  - match: {{path_prefix: /api}}
    upstream: origin
"#,
        origin.endpoint()
    );
    let proxy = Proxy::start(&config);
    let http = client::http();
    assert_eq!(
        http.get(proxy.url("/other")).send().await.unwrap().status(),
        404
    );
    assert_eq!(
        http.get(proxy.url("/api/x")).send().await.unwrap().status(),
        200
    );
    assert!(origin.received().iter().all(|r| r.path.starts_with("/api")));
}
